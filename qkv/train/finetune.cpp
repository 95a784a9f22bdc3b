#include "qkv/train/finetune.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/rng.h"
#include "qkv/data/labelled.h"
#include "qkv/io/safetensors.h"
#include "qkv/tokenizer/tokenizer.h"
#include "qkv/train/lora.h"
#include "qkv/train/optimizer.h"

namespace qkv {

namespace {

// x (B, T) of the examples order[begin, end), padded with token 0 to the longest rounded up to a
// multiple of 16 (fewer distinct shapes to plan for), at most max_len; lens and labels beside.
int pad_batch(const LabelledIds& d, const std::vector<size_t>& order, size_t begin, size_t end,
              int max_len, std::vector<int32_t>* x, std::vector<int32_t>* lens,
              std::vector<int32_t>* labels) {
  int T = 1;
  for (size_t k = begin; k < end; ++k) T = std::max(T, int(d.ids[order[k]].size()));
  T = std::min(max_len, (T + 15) / 16 * 16);
  const size_t B = end - begin;
  x->assign(B * size_t(T), 0);
  lens->resize(B);
  labels->resize(B);
  for (size_t k = begin; k < end; ++k) {
    const auto& ids = d.ids[order[k]];
    std::copy(ids.begin(), ids.end(), x->begin() + ptrdiff_t((k - begin) * size_t(T)));
    (*lens)[k - begin] = int32_t(ids.size());
    (*labels)[k - begin] = d.labels[order[k]];
  }
  return T;
}

// Labels in a stable order: numerically if every label is an integer, else lexicographically.
std::vector<std::string> sorted_labels(std::vector<std::string> labels) {
  std::sort(labels.begin(), labels.end());
  labels.erase(std::unique(labels.begin(), labels.end()), labels.end());
  auto is_int = [](const std::string& s) {
    return !s.empty() && s.find_first_not_of("-0123456789") == std::string::npos && s.size() < 18;
  };
  if (std::all_of(labels.begin(), labels.end(), is_int))
    std::sort(labels.begin(), labels.end(), [](const std::string& a, const std::string& b) {
      return std::stoll(a) < std::stoll(b);
    });
  return labels;
}

std::string label_list(const std::vector<std::string>& labels) {
  std::string s;
  for (size_t i = 0; i < labels.size() && i < 10; ++i) s += (i ? ", " : "") + labels[i];
  if (labels.size() > 10) s += ", ...";
  return s;
}

}  // namespace

LabelledIds load_labelled(const std::string& path, const Tokenizer& tok,
                          const std::vector<std::string>& labels, int max_len, bool skip_bad,
                          int64_t* skipped) {
  BadLines bad;
  const auto rows = read_labelled_jsonl(path, &bad);
  LabelledIds out;
  for (const auto& r : rows) {
    const auto it = std::find(labels.begin(), labels.end(), r.label);
    if (it == labels.end()) {
      bad.add(path, r.line,
              fmt::format("label '{}' is not one of the model's labels ({})", r.label,
                          label_list(labels)));
      continue;
    }
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(r.text);
    } catch (const Error& e) {
      bad.add(path, r.line, fmt::format("cannot tokenise the text: {}", e.what()));
      continue;
    }
    if (ids.empty()) {
      bad.add(path, r.line, "the text has no tokens");
      continue;
    }
    if (int(ids.size()) > max_len) {
      ids.resize(size_t(max_len));
      ++out.truncated;
    }
    out.ids.push_back(std::move(ids));
    out.labels.push_back(int32_t(it - labels.begin()));
  }
  if (!skip_bad) bad.throw_if_any();
  if (skipped) *skipped += bad.count;
  QKV_CHECK(!out.ids.empty(), "{}: no usable examples", path);
  return out;
}

ClassifierEval evaluate_classifier(GPT& m, const LabelledIds& d, int batch_size) {
  const int K = m.config().num_labels();
  ClassifierEval r;
  r.per_label.assign(size_t(K), 0);
  r.per_label_correct.assign(size_t(K), 0);
  std::vector<size_t> order(d.ids.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::vector<int32_t> x, lens, labels;
  double loss_sum = 0;
  for (size_t b0 = 0; b0 < order.size(); b0 += size_t(batch_size)) {
    const size_t b1 = std::min(order.size(), b0 + size_t(batch_size));
    const int T = pad_batch(d, order, b0, b1, m.config().block_size, &x, &lens, &labels);
    const int B = int(b1 - b0);
    loss_sum += double(m.forward_classify(x.data(), lens.data(), labels.data(), B, T)) * B;
    for (int b = 0; b < B; ++b) {
      const float* z = m.class_logits() + size_t(b) * K;
      const int pred = int(std::max_element(z, z + K) - z);
      const int y = labels[size_t(b)];
      ++r.per_label[size_t(y)];
      if (pred == y) {
        ++r.correct;
        ++r.per_label_correct[size_t(y)];
      }
    }
    r.examples += B;
  }
  r.loss = r.examples ? loss_sum / double(r.examples) : 0.0;
  return r;
}

FinetuneResult finetune(const FinetuneOptions& o) {
  QKV_CHECK(!o.model.empty(), "--model is required");
  QKV_CHECK(!o.data.empty(), "--data is required");
  QKV_CHECK(!o.out.empty(), "--out is required");
  QKV_CHECK(o.batch_size >= 1, "--batch-size must be >= 1, got {}", o.batch_size);
  QKV_CHECK(o.epochs >= 1, "--epochs must be >= 1, got {}", o.epochs);
  QKV_CHECK(o.max_iters >= 0, "--max-iters must be >= 0");
  QKV_CHECK(o.learning_rate > 0 && std::isfinite(o.learning_rate), "--learning-rate must be > 0");
  QKV_CHECK(o.min_lr >= 0 && o.min_lr <= o.learning_rate, "--min-lr must be in [0, learning rate]");
  QKV_CHECK(o.weight_decay >= 0, "--weight-decay must be >= 0");
  QKV_CHECK(o.grad_clip >= 0, "--grad-clip must be >= 0");
  QKV_CHECK(o.eval_interval >= 0, "--eval-interval must be >= 0");
  QKV_CHECK(o.lora_save == "merged" || o.lora_save == "adapter",
            "--lora-save must be merged or adapter, got '{}'", o.lora_save);
  QKV_CHECK(o.lora_save == "merged" || o.lora_rank > 0, "--lora-save adapter needs --lora-rank");
  QKV_CHECK(o.lora_rank >= 0, "--lora-rank must be >= 0");
  QKV_CHECK(o.dtype == "fp32" || o.dtype == "bf16", "--dtype must be fp32 or bf16");
  QKV_CHECK(!(o.lora_save == "adapter" && !adapter_base(o.model).empty()),
            "{} is itself an adapter; save this fine-tune merged (--lora-save merged)", o.model);
  const auto t0 = std::chrono::steady_clock::now();

  GPT base = GPT::from_dir(o.model);
  QKV_CHECK(base.has_fp32_weights(), "{}: int8 weights cannot be fine-tuned", o.model);
  const auto tok = load_tokenizer(o.model);
  GPTConfig cfg = base.config();
  // The model's labels (a classifier fine-tuned again), or the training file's.
  if (cfg.labels.empty()) {
    BadLines ignore;
    std::vector<std::string> seen;
    for (const auto& r : read_labelled_jsonl(o.data, &ignore)) seen.push_back(r.label);
    cfg.labels = sorted_labels(seen);
    QKV_CHECK(cfg.labels.size() >= 2, "{}: a classifier needs at least 2 distinct labels, found {}",
              o.data, cfg.labels.size());
  }
  FinetuneResult res;
  const int max_len = cfg.block_size;
  const LabelledIds train =
      load_labelled(o.data, *tok, cfg.labels, max_len, o.skip_bad_lines, &res.skipped_lines);
  LabelledIds eval;
  if (!o.eval.empty())
    eval = load_labelled(o.eval, *tok, cfg.labels, max_len, o.skip_bad_lines, &res.skipped_lines);
  res.train_examples = int64_t(train.ids.size());
  res.truncated = train.truncated + eval.truncated;

  GPT m(cfg);
  m.init_weights(o.seed);  // the head; the rest comes from the base
  for (const auto& p : m.params())
    for (const auto& q : base.params())
      if (q.name == p.name) {
        QKV_CHECK(q.numel == p.numel, "[finetune] '{}' changed shape", p.name);
        std::copy(base.param_data() + q.offset, base.param_data() + q.offset + q.numel,
                  m.param_data() + p.offset);
      }
  m.set_matmul_precision(o.dtype == "bf16" ? nn::Precision::BF16 : nn::Precision::F32);
  m.zero_grad();

  // What trains: everything not frozen; with LoRA the base is frozen and the adapters train.
  Trainable tr = make_trainable(m, o.freeze, o.lora_rank, o.lora_alpha, o.lora_targets, o.seed);
  const std::vector<bool>& frozen = tr.frozen;
  const std::unique_ptr<Lora>& lora = tr.lora;
  const std::vector<ParamRef>& refs = tr.refs;
  const int64_t n_train = tr.numel;
  AdamW adam(refs, {0.9f, 0.999f, 1e-8f, o.weight_decay});

  const int B = o.batch_size;
  const int64_t per_epoch = (int64_t(train.ids.size()) + B - 1) / B;
  const int64_t total = o.max_iters > 0 ? o.max_iters : per_epoch * o.epochs;
  const int64_t warmup = o.warmup_iters >= 0 ? o.warmup_iters : total / 20;
  const int64_t eval_every = o.eval_interval > 0 ? o.eval_interval : per_epoch;
  make_dirs(o.out);
  const std::string log_path = o.out + "/log.jsonl";
  std::string log;
  const bool tty = !o.quiet && ::isatty(STDOUT_FILENO);
  if (!o.quiet)
    std::printf(
        "fine-tuning %s to classify %zu labels (%s): %zu training examples%s, %lld of %zu "
        "parameters train%s; %lld steps\n",
        o.model.c_str(), cfg.labels.size(), label_list(cfg.labels).c_str(), train.ids.size(),
        eval.ids.empty() ? "" : fmt::format(", {} for evaluation", eval.ids.size()).c_str(),
        static_cast<long long>(n_train), m.num_params(),
        lora ? fmt::format(" (LoRA rank {})", o.lora_rank).c_str() : "",
        static_cast<long long>(total));

  auto run_eval = [&](int64_t step) {
    if (eval.ids.empty()) return;
    if (lora) lora->apply();
    res.eval = evaluate_classifier(m, eval, B);
    log += fmt::format("{{\"step\": {}, \"eval_accuracy\": {:.6f}, \"eval_loss\": {:.6f}}}\n", step,
                       res.eval.accuracy(), res.eval.loss);
    if (!o.quiet)
      std::printf("%sstep %lld/%lld: eval accuracy %.2f%% (%lld/%lld), loss %.4f\n",
                  tty ? "\r\033[K" : "", static_cast<long long>(step),
                  static_cast<long long>(total), 100 * res.eval.accuracy(),
                  static_cast<long long>(res.eval.correct),
                  static_cast<long long>(res.eval.examples), res.eval.loss);
  };

  std::vector<size_t> order(train.ids.size());
  std::vector<int32_t> x, lens, labels;
  for (int64_t step = 0; step < total; ++step) {
    const int64_t e = step / per_epoch, k = step % per_epoch;
    if (k == 0) {  // a fresh seeded shuffle per epoch
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      Rng rng(o.seed, 100 + uint64_t(e));
      for (size_t i = order.size(); i > 1; --i)
        std::swap(order[i - 1], order[size_t(rng.below(uint64_t(i)))]);
    }
    const size_t b0 = size_t(k) * size_t(B), b1 = std::min(order.size(), b0 + size_t(B));
    const int T = pad_batch(train, order, b0, b1, max_len, &x, &lens, &labels);
    const float lr = lr_schedule(step, o.learning_rate, o.min_lr, warmup, total);
    if (lora) {
      lora->apply();
      lora->zero_grad();
    }
    m.zero_grad();
    const float loss = m.forward_classify(x.data(), lens.data(), labels.data(), int(b1 - b0), T);
    QKV_CHECK(std::isfinite(loss),
              "fine-tuning diverged at step {}: loss is {} (lower --learning-rate?)", step, loss);
    m.backward();
    if (lora) lora->accumulate_grads();
    adam.step(lr, grad_clip_factor(refs, o.grad_clip));
    res.last_loss = loss;
    res.steps = step + 1;
    log += fmt::format("{{\"step\": {}, \"loss\": {:.6f}, \"lr\": {:.6g}}}\n", step, loss, lr);
    if (!o.quiet && (tty || (step + 1) % 10 == 0 || step + 1 == total)) {
      std::printf("%sstep %lld/%lld | loss %.4f | lr %.2e%s", tty ? "\r\033[K" : "",
                  static_cast<long long>(step + 1), static_cast<long long>(total), loss, lr,
                  tty ? "" : "\n");
      std::fflush(stdout);
    }
    if ((step + 1) % eval_every == 0 && step + 1 < total) run_eval(step + 1);
  }
  run_eval(total);
  if (lora) lora->apply();
  if (tty) std::printf("\n");

  // The fine-tuned directory: config (with the labels), tokenizer, and the weights, in full or
  // as an adapter over the base.
  tok->save(o.out);
  write_file_atomic(o.out + "/config.json", cfg.to_json().dump(2) + "\n");
  save_finetuned_weights(o.out, m, frozen, lora.get(), o.model, o.lora_save == "adapter");
  write_file_atomic(log_path, log);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace qkv

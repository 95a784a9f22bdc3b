#include "qkv/train/seq2seq_train.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/rng.h"
#include "qkv/data/labelled.h"
#include "qkv/infer/seq2seq_decode.h"
#include "qkv/io/safetensors.h"
#include "qkv/tokenizer/tokenizer.h"
#include "qkv/train/optimizer.h"
#include "qkv/train/trainer.h"

namespace qkv {

namespace {

struct Pairs {
  std::vector<std::vector<int32_t>> src, tgt;
  int64_t truncated = 0;
};

// Token ids of the pairs: a source longer than block_size, or a target longer than
// block_size - 1 (room for BOS / EOS), is cut and counted; text the tokenizer cannot encode is a
// bad line.
Pairs tokenize_pairs(const std::vector<TextPair>& rows, const std::string& path,
                     const Tokenizer& tok, int block, BadLines* bad) {
  Pairs p;
  for (const TextPair& r : rows) {
    std::vector<int32_t> s, t;
    try {
      s = tok.encode(r.source);
      t = tok.encode(r.target);
    } catch (const Error& e) {
      bad->add(path, r.line, fmt::format("cannot tokenise: {}", e.what()));
      continue;
    }
    if (s.empty() || t.empty()) {
      bad->add(path, r.line, "a side has no tokens");
      continue;
    }
    bool cut = false;
    if (int(s.size()) > block) {
      s.resize(size_t(block));
      cut = true;
    }
    if (int(t.size()) > block - 1) {
      t.resize(size_t(block - 1));
      cut = true;
    }
    p.truncated += cut;
    p.src.push_back(std::move(s));
    p.tgt.push_back(std::move(t));
  }
  return p;
}

int64_t exact_matches(Seq2Seq& m, const Pairs& p, int beam, int max_examples, int64_t* n) {
  Seq2SeqDecodeOptions o;
  o.beam = beam;
  int64_t exact = 0;
  const size_t count =
      max_examples > 0 ? std::min(p.src.size(), size_t(max_examples)) : p.src.size();
  for (size_t i = 0; i < count; ++i) {
    o.max_len = int(p.tgt[i].size()) + 8;
    exact += seq2seq_decode(m, p.src[i], o).tokens == p.tgt[i];
  }
  *n = int64_t(count);
  return exact;
}

}  // namespace

Seq2SeqEval evaluate_seq2seq(Seq2Seq& m, const Tokenizer& tok, const std::string& tsv, int beam,
                             int max_examples, bool skip_bad) {
  BadLines bad;
  const auto rows = read_tsv_pairs(tsv, &bad);
  const Pairs p = tokenize_pairs(rows, tsv, tok, m.config().base.block_size, &bad);
  if (!skip_bad) bad.throw_if_any();
  QKV_CHECK(!p.src.empty(), "{}: no usable pairs", tsv);
  Seq2SeqEval r;
  r.skipped_lines = bad.count;
  r.truncated = p.truncated;
  r.exact = exact_matches(m, p, beam, max_examples, &r.examples);
  return r;
}

Seq2SeqTrainResult train_seq2seq(const Seq2SeqTrainOptions& o) {
  QKV_CHECK(!o.data.empty(), "--data is required");
  QKV_CHECK(!o.out.empty(), "--out is required");
  QKV_CHECK(o.batch_size >= 1, "--batch-size must be >= 1");
  QKV_CHECK(o.max_iters >= 0, "--max-iters must be >= 0");
  QKV_CHECK(o.learning_rate > 0 && o.min_lr >= 0 && o.min_lr <= o.learning_rate,
            "--learning-rate must be > 0 and --min-lr in [0, it]");
  QKV_CHECK(o.label_smoothing >= 0 && o.label_smoothing < 1, "--label-smoothing must be in [0, 1)");
  QKV_CHECK(o.eval_interval >= 1, "--eval-interval must be >= 1");
  QKV_CHECK(o.eval_examples >= 0, "--eval-examples must be >= 0");
  QKV_CHECK(o.dtype == "fp32" || o.dtype == "bf16", "--dtype must be fp32 or bf16");
  const auto t0 = std::chrono::steady_clock::now();
  Seq2SeqTrainResult res;

  // Pairs, all checked before any training.
  BadLines bad;
  std::vector<TextPair> rows = read_tsv_pairs(o.data, &bad), held;
  if (!o.eval.empty()) {
    held = read_tsv_pairs(o.eval, &bad);
  } else {
    const size_t cut = rows.size() - rows.size() / 10;
    held.assign(rows.begin() + ptrdiff_t(cut), rows.end());
    rows.resize(cut);
  }
  if (!o.skip_bad_lines) bad.throw_if_any();
  QKV_CHECK(!rows.empty() && !held.empty(), "{}: needs training and held-out pairs ({} / {})",
            o.data, rows.size(), held.size());
  std::string text;
  for (const auto& r : rows) text += r.source + r.target;
  const auto tok = make_tokenizer("char", text);
  Seq2SeqConfig cfg = o.model;
  const int V0 = tok->vocab_size();
  cfg.base.vocab_size = V0 + 2;
  cfg.bos_token_id = V0;
  cfg.eos_token_id = V0 + 1;
  cfg.validate("model config");
  const int block = cfg.base.block_size;
  const Pairs train = tokenize_pairs(rows, o.data, *tok, block, &bad);
  const Pairs valid = tokenize_pairs(held, o.eval.empty() ? o.data : o.eval, *tok, block, &bad);
  if (!o.skip_bad_lines) bad.throw_if_any();
  QKV_CHECK(!train.src.empty() && !valid.src.empty(), "{}: no usable pairs", o.data);
  res.skipped_lines = bad.count;
  res.truncated = train.truncated + valid.truncated;
  res.train_pairs = int64_t(train.src.size());

  Seq2Seq m(cfg);
  m.init_weights(o.seed);
  m.set_matmul_precision(o.dtype == "bf16" ? nn::Precision::BF16 : nn::Precision::F32);
  m.zero_grad();
  std::vector<ParamRef> refs;
  for (const auto& p : m.params())
    refs.push_back({m.param_data() + p.offset, m.grad_data() + p.offset, p.numel, p.decay});
  AdamW adam(refs, {o.beta1, o.beta2, 1e-9f, o.weight_decay});
  make_dirs(o.out);
  const std::string state_path = o.out + "/train_state.safetensors";
  std::string log;
  int64_t start = 0;
  const bool resuming = o.resume && file_exists(state_path);
  if (o.resume && !resuming && !o.quiet)
    std::printf("no checkpoint in %s: starting from scratch\n", o.out.c_str());
  if (resuming) {
    SafetensorsFile st(state_path);
    const auto& md = st.metadata();
    QKV_CHECK(md.count("config") && md.count("step") && md.count("train_pairs"),
              "{}: not a qkv encoder-decoder checkpoint", state_path);
    QKV_CHECK(nlohmann::json::parse(md.at("config")) == cfg.to_json(),
              "{}: the checkpoint's model config differs from this run's; resume with the same "
              "flags and data",
              state_path);
    QKV_CHECK(std::stoll(md.at("train_pairs")) == int64_t(train.src.size()),
              "{}: the checkpoint was trained on different data ({} pairs, now {})", state_path,
              md.at("train_pairs"), train.src.size());
    start = std::stoll(md.at("step"));
    auto load_flat = [&](const char* name, float* dst, size_t n) {
      Tensor t = st.get(name);
      QKV_CHECK(t.dtype() == DType::F32 && size_t(t.numel()) == n,
                "{}: tensor '{}' has the wrong size", state_path, name);
      std::copy(t.f32(), t.f32() + n, dst);
    };
    load_flat("params", m.param_data(), m.num_params());
    load_flat("adam_m", adam.m().data(), adam.m().size());
    load_flat("adam_v", adam.v().data(), adam.v().size());
    adam.set_steps(start);
    // The log up to the checkpoint (train steps before it, evaluations at or before it).
    if (file_exists(o.out + "/log.jsonl")) {
      std::istringstream in(read_file(o.out + "/log.jsonl"));
      std::string line;
      while (std::getline(in, line)) {
        try {
          const auto j = nlohmann::json::parse(line);
          const int64_t s = j.at("step").get<int64_t>();
          if (j.contains("exact_match") ? s <= start : s < start) log += line + "\n";
        } catch (const std::exception&) {
        }
      }
    }
    if (!o.quiet) std::printf("resuming from step %lld\n", static_cast<long long>(start));
  }
  auto checkpoint = [&](int64_t step) {
    const Shape flat = {int64_t(m.num_params())}, moments = {int64_t(adam.m().size())};
    save_safetensors(state_path,
                     {{"params", DType::F32, flat, m.param_data()},
                      {"adam_m", DType::F32, moments, adam.m().data()},
                      {"adam_v", DType::F32, moments, adam.v().data()}},
                     {{"step", std::to_string(step)},
                      {"config", cfg.to_json().dump()},
                      {"train_pairs", std::to_string(train.src.size())}});
    m.save_dir(o.out);
    write_file_atomic(o.out + "/log.jsonl", log);
  };
  tok->save(o.out);
  const bool tty = !o.quiet && ::isatty(STDOUT_FILENO);
  if (!o.quiet)
    std::printf(
        "encoder-decoder: %lld parameters (%d+%d layers, %d heads, %d channels, vocab %d); %zu "
        "training pairs, %zu held out%s%s\n",
        static_cast<long long>(cfg.num_params()), cfg.base.n_layer, cfg.dec_layers(),
        cfg.base.n_head, cfg.base.n_embd, cfg.base.vocab_size, train.src.size(), valid.src.size(),
        res.skipped_lines ? fmt::format("; skipped {} bad lines", res.skipped_lines).c_str() : "",
        res.truncated ? fmt::format("; {} pairs cut to the context", res.truncated).c_str() : "");

  auto evaluate = [&](int64_t step) {
    res.exact_match = double(exact_matches(m, valid, 1, o.eval_examples, &res.eval_examples)) /
                      double(std::max<int64_t>(1, res.eval_examples));
    log += fmt::format("{{\"step\": {}, \"exact_match\": {:.6f}, \"examples\": {}}}\n", step,
                       res.exact_match, res.eval_examples);
    if (!o.quiet)
      std::printf("%sstep %lld/%lld: held-out exact match %.2f%% (%lld pairs, greedy)\n",
                  tty ? "\r\033[K" : "", static_cast<long long>(step),
                  static_cast<long long>(o.max_iters), 100 * res.exact_match,
                  static_cast<long long>(res.eval_examples));
    checkpoint(step);
  };

  const int B = o.batch_size;
  std::vector<int32_t> src, tin, tout, sl, tl;
  for (int64_t it = start; it < o.max_iters; ++it) {
    if (it > start && it % o.eval_interval == 0) evaluate(it);
    if (g_stop_training.load()) {
      checkpoint(it);
      res.interrupted = true;
      if (!o.quiet)
        std::printf("%sstopped at step %lld; checkpoint written, continue with --resume\n",
                    tty ? "\r\033[K" : "", static_cast<long long>(it));
      res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return res;
    }
    Rng rng(o.seed, uint64_t(it));
    std::vector<size_t> pick(static_cast<size_t>(B));
    int S = 1, T = 1;
    for (auto& i : pick) {
      i = size_t(rng.below(train.src.size()));
      S = std::max(S, int(train.src[i].size()));
      T = std::max(T, int(train.tgt[i].size()) + 1);
    }
    src.assign(size_t(B) * S, 0);
    tin.assign(size_t(B) * T, 0);
    tout.assign(size_t(B) * T, -1);
    sl.resize(size_t(B));
    tl.resize(size_t(B));
    for (int b = 0; b < B; ++b) {
      const auto& s = train.src[pick[size_t(b)]];
      const auto& t = train.tgt[pick[size_t(b)]];
      std::copy(s.begin(), s.end(), src.begin() + ptrdiff_t(b) * S);
      tin[size_t(b) * T] = cfg.bos_token_id;
      std::copy(t.begin(), t.end(), tin.begin() + ptrdiff_t(b) * T + 1);
      std::copy(t.begin(), t.end(), tout.begin() + ptrdiff_t(b) * T);
      tout[size_t(b) * T + t.size()] = cfg.eos_token_id;
      sl[size_t(b)] = int32_t(s.size());
      tl[size_t(b)] = int32_t(t.size()) + 1;
    }
    const float lr = lr_schedule(it, o.learning_rate, o.min_lr, o.warmup_iters, o.max_iters);
    m.zero_grad();
    const float loss = m.forward(src.data(), sl.data(), S, tin.data(), tl.data(), T, tout.data(), B,
                                 o.label_smoothing);
    QKV_CHECK(std::isfinite(loss),
              "training diverged at step {}: loss is {} (lower --learning-rate?)", it, loss);
    m.backward();
    adam.step(lr, grad_clip_factor(refs, o.grad_clip));
    res.last_loss = loss;
    res.steps = it + 1;
    log += fmt::format("{{\"step\": {}, \"loss\": {:.6f}, \"lr\": {:.6g}}}\n", it, loss, lr);
    if (!o.quiet && (tty || (it + 1) % 50 == 0 || it + 1 == o.max_iters)) {
      const double el =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%sstep %lld/%lld | loss %.4f | lr %.2e | %.0f s%s", tty ? "\r\033[K" : "",
                  static_cast<long long>(it + 1), static_cast<long long>(o.max_iters), loss, lr, el,
                  tty ? "" : "\n");
      std::fflush(stdout);
    }
  }
  evaluate(o.max_iters);
  if (tty) std::printf("\n");
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace qkv

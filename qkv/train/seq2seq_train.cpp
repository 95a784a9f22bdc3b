#include "qkv/train/seq2seq_train.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/rng.h"
#include "qkv/data/labelled.h"
#include "qkv/infer/seq2seq_decode.h"
#include "qkv/tokenizer/tokenizer.h"
#include "qkv/train/optimizer.h"

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
  tok->save(o.out);
  std::string log;
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
    m.save_dir(o.out);
    write_file_atomic(o.out + "/log.jsonl", log);
  };

  const int B = o.batch_size;
  std::vector<int32_t> src, tin, tout, sl, tl;
  for (int64_t it = 0; it < o.max_iters; ++it) {
    if (it > 0 && it % o.eval_interval == 0) evaluate(it);
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

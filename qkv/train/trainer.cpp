#include "qkv/train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/parallel.h"
#include "qkv/core/rng.h"
#include "qkv/data/dataset.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/gpt.h"
#include "qkv/tokenizer/tokenizer.h"
#include "qkv/train/batch_parallel.h"
#include "qkv/train/lora.h"
#include "qkv/train/optimizer.h"

namespace qkv {

std::atomic<bool> g_stop_training{false};

namespace {

constexpr uint64_t kEvalStream = uint64_t(1) << 40;
const char* kStateFile = "train_state.safetensors";
const char* kLogFile = "log.jsonl";

void check_options(const TrainOptions& o) {
  QKV_CHECK(!o.data.empty(), "--data is required");
  QKV_CHECK(!o.out.empty(), "--out is required");
  QKV_CHECK(o.dtype == "fp32" || o.dtype == "bf16", "--dtype must be fp32 or bf16, got '{}'",
            o.dtype);
  QKV_CHECK(o.batch_size >= 1, "--batch-size must be >= 1, got {}", o.batch_size);
  QKV_CHECK(o.grad_accum >= 1 && o.grad_accum <= 4096, "--grad-accum must be in [1, 4096], got {}",
            o.grad_accum);
  QKV_CHECK(o.max_iters >= 0, "--max-iters must be >= 0, got {}", o.max_iters);
  QKV_CHECK(o.learning_rate > 0 && std::isfinite(o.learning_rate), "--learning-rate must be > 0");
  QKV_CHECK(o.min_lr >= 0 && o.min_lr <= o.learning_rate, "--min-lr must be in [0, learning rate]");
  QKV_CHECK(o.warmup_iters >= 0, "--warmup-iters must be >= 0");
  QKV_CHECK(o.weight_decay >= 0, "--weight-decay must be >= 0");
  QKV_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1,
            "--beta1/--beta2 must be in [0, 1)");
  QKV_CHECK(o.grad_clip >= 0, "--grad-clip must be >= 0 (0 disables clipping)");
  QKV_CHECK(o.eval_interval >= 1, "--eval-interval must be >= 1");
  QKV_CHECK(o.eval_iters >= 1, "--eval-iters must be >= 1");
  QKV_CHECK(o.checkpoint_interval >= 0, "--checkpoint-interval must be >= 0");
  QKV_CHECK(o.log_interval >= 1, "--log-interval must be >= 1");
  QKV_CHECK(o.objective == "clm" || o.objective == "mlm",
            "--objective must be clm or mlm, got '{}'", o.objective);
  QKV_CHECK(o.lora_rank >= 0, "--lora-rank must be >= 0");
  QKV_CHECK(o.lora_save == "merged" || o.lora_save == "adapter",
            "--lora-save must be merged or adapter, got '{}'", o.lora_save);
  QKV_CHECK(o.lora_save == "merged" || o.lora_rank > 0, "--lora-save adapter needs --lora-rank");
  QKV_CHECK((o.freeze.empty() && o.lora_rank == 0) || !o.init_from.empty(),
            "--freeze and --lora-rank fine-tune a model: give it with --model");
  QKV_CHECK(!o.resume || (o.freeze.empty() && o.lora_rank == 0),
            "--resume is not supported with --freeze or --lora-rank yet (run the fine-tune again)");
}

void fmt_duration(double s, char* buf, size_t n) {
  if (!std::isfinite(s) || s < 0) {
    std::snprintf(buf, n, "?");
    return;
  }
  const long long t = static_cast<long long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, n, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60)
    std::snprintf(buf, n, "%lldm%02llds", t / 60, t % 60);
  else
    std::snprintf(buf, n, "%llds", t);
}

// Keeps the log entries that precede the resumed step (train steps < step, evaluations <= step).
void truncate_log(const std::string& path, int64_t step) {
  if (!file_exists(path)) return;
  std::istringstream in(read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      int64_t s = j.at("step").get<int64_t>();
      if (j.contains("val_loss") ? s <= step : s < step) kept += line + "\n";
    } catch (const std::exception&) {
      // A torn last line from a killed run: drop it.
    }
  }
  write_file_atomic(path, kept);
}

}  // namespace

void mlm_mask(int32_t* x, int32_t* y, int64_t n, int32_t mask_id, int vocab, uint64_t seed,
              uint64_t stream) {
  Rng rng(seed, stream);
  int64_t chosen = 0;
  for (int64_t i = 0; i < n; ++i) {
    y[i] = -1;
    if (rng.uniform_f64() >= 0.15) continue;
    y[i] = x[i];
    ++chosen;
    const double r = rng.uniform_f64();
    if (r < 0.8)
      x[i] = mask_id;
    else if (r < 0.9)
      x[i] = int32_t(rng.below(uint64_t(vocab)));
  }
  if (chosen == 0 && n > 0) {  // a step with nothing to predict would teach nothing
    const int64_t i = int64_t(rng.below(uint64_t(n)));
    y[i] = x[i];
    x[i] = mask_id;
  }
}

TrainResult train(const TrainOptions& opt_in) {
  TrainOptions opt = opt_in;
  check_options(opt);
  const auto t_start = std::chrono::steady_clock::now();
  const std::string text = read_file(opt.data);
  QKV_CHECK(!text.empty(), "{}: the data file is empty", opt.data);
  make_dirs(opt.out);
  const std::string state_path = opt.out + "/" + kStateFile;
  const bool resuming = opt.resume && file_exists(state_path);
  if (opt.resume && !resuming && !opt.quiet)
    std::printf("no checkpoint in %s: starting from scratch\n", opt.out.c_str());

  std::unique_ptr<Tokenizer> tok;
  if (resuming)
    tok = load_tokenizer(opt.out);
  else if (!opt.init_from.empty() && opt.tokenizer.empty())
    tok = load_tokenizer(opt.init_from);
  else
    tok = make_tokenizer(opt.tokenizer.empty() ? "char" : opt.tokenizer, text);
  if (!opt.init_from.empty()) {
    // Start from an existing model: its architecture, then its weights below.
    opt.model = GPT::from_dir(opt.init_from).config();
    QKV_CHECK(tok->vocab_size() <= opt.model.vocab_size,
              "{}: the tokenizer has {} tokens but the model only {}", opt.init_from,
              tok->vocab_size(), opt.model.vocab_size);
  } else {
    opt.model.vocab_size = tok->vocab_size();
    // Masked-LM: one extra id past the tokenizer's vocabulary is the [MASK] token.
    if (opt.objective == "mlm") opt.model.mask_token_id = opt.model.vocab_size++;
  }
  const bool mlm = opt.objective == "mlm";
  QKV_CHECK(!mlm || !opt.model.causal,
            "--objective mlm trains an encoder (--arch encoder); a decoder learns with clm");
  QKV_CHECK(mlm || opt.model.causal,
            "an encoder (--arch encoder) sees every position: train it with --objective mlm");
  QKV_CHECK(!mlm || opt.model.mask_token_id >= 0,
            "{}: the model has no mask_token_id for masked-LM training", opt.init_from);
  opt.model.validate("model config");
  // nanoGPT's split: the first 90% of the characters train, the rest validates; each part is
  // tokenised on its own.
  const size_t cut = split_offset(text, 0.9);
  const int enc_threads = num_threads();
  TokenSplit split;
  split.train = tok->encode(std::string_view(text).substr(0, cut), enc_threads);
  split.val = tok->encode(std::string_view(text).substr(cut), enc_threads);
  const int T = opt.model.block_size, B = opt.batch_size;
  QKV_CHECK(split.train.size() > size_t(T),
            "{}: the training split has {} tokens, fewer than one block of {} + 1 (use a longer "
            "corpus or a smaller --block-size)",
            opt.data, split.train.size(), T);
  QKV_CHECK(split.val.size() > size_t(T),
            "{}: the validation split (last 10%) has {} tokens, fewer than one block of {} + 1 "
            "(use a longer corpus or a smaller --block-size)",
            opt.data, split.val.size(), T);
  const int64_t decay_iters = opt.lr_decay_iters < 0 ? opt.max_iters : opt.lr_decay_iters;

  GPT model(opt.model);
  const AdamWConfig adam_cfg{opt.beta1, opt.beta2, 1e-8f, opt.weight_decay};
  AdamW adam(model, adam_cfg);
  int64_t start = 0;
  if (resuming) {
    SafetensorsFile st(state_path);
    const auto& md = st.metadata();
    QKV_CHECK(md.count("config") && md.count("step") && md.count("train_tokens"),
              "{}: not a qkv training checkpoint (metadata missing)", state_path);
    QKV_CHECK(
        nlohmann::json::parse(md.at("config")) == opt.model.to_json(),
        "{}: the checkpoint's model config differs from this run's; resume with the same flags",
        state_path);
    QKV_CHECK(std::stoull(md.at("train_tokens")) == split.train.size(),
              "{}: the checkpoint was trained on different data ({} training tokens, now {})",
              state_path, md.at("train_tokens"), split.train.size());
    start = std::stoll(md.at("step"));
    auto load_flat = [&](const char* name, float* dst) {
      Tensor t = st.get(name);
      QKV_CHECK(t.dtype() == DType::F32 && size_t(t.numel()) == model.num_params(),
                "{}: tensor '{}' has the wrong size", state_path, name);
      std::memcpy(dst, t.raw(), model.num_params() * sizeof(float));
    };
    load_flat("params", model.param_data());
    load_flat("adam_m", adam.m().data());
    load_flat("adam_v", adam.v().data());
    adam.set_steps(start);
    truncate_log(opt.out + "/" + kLogFile, start);
    if (!opt.quiet) std::printf("resuming from step %lld\n", static_cast<long long>(start));
  } else {
    if (!opt.init_from.empty())
      model = GPT::from_dir(opt.init_from);
    else
      model.init_weights(opt.seed);
    write_file_atomic(opt.out + "/" + kLogFile, "");
    // A fresh run replaces whatever tokenizer files an earlier run left in the directory.
    for (const char* f : {"qkv_tokenizer.json", "vocab.json", "merges.txt", "tokenizer.json",
                          "encoder.json", "vocab.bpe"})
      std::remove((opt.out + "/" + f).c_str());
  }
  // After loading: a model read from --model comes with fp32 matmuls.
  model.set_matmul_precision(opt.dtype == "bf16" ? nn::Precision::BF16 : nn::Precision::F32);
  // Fine-tuning controls: frozen tensors leave the optimizer; LoRA adapters join it.
  const bool partial = !opt.freeze.empty() || opt.lora_rank > 0;
  Trainable tr;
  std::unique_ptr<AdamW> partial_adam;
  if (partial) {
    model.zero_grad();
    tr = make_trainable(model, opt.freeze, opt.lora_rank, opt.lora_alpha, opt.lora_targets,
                        opt.seed);
    partial_adam = std::make_unique<AdamW>(tr.refs, adam_cfg);
  }
  const std::vector<bool>& frozen = tr.frozen;
  const std::unique_ptr<Lora>& lora = tr.lora;
  const std::vector<ParamRef>& refs = tr.refs;
  // Batch-parallel (each thread its share of the sequences, on a model replica) for the plain
  // path; frozen tensors and LoRA adapters split every op across the threads.
  BatchParallel bp(model,
                   partial ? 1 : batch_parallel_ways(opt.parallel, opt.model, B, num_threads()));
  QKV_CHECK(!partial || opt.parallel != "batch",
            "--parallel batch does not apply to --freeze or LoRA fine-tuning (use auto or ops)");
  tok->save(opt.out);
  write_file_atomic(opt.out + "/config.json", opt.model.to_json().dump(2) + "\n");

  FILE* log = std::fopen((opt.out + "/" + kLogFile).c_str(), "a");
  QKV_CHECK(log != nullptr, "cannot open {}/{} for appending: {}", opt.out, kLogFile,
            std::strerror(errno));
  const bool tty = !opt.quiet && ::isatty(STDOUT_FILENO);
  if (!opt.quiet)
    std::printf(
        "model: %lld parameters (%d layers, %d heads, %d channels, block %d, vocab %d); "
        "data: %zu train / %zu val tokens; %d threads (%s-parallel), %s matmuls\n",
        static_cast<long long>(opt.model.num_params()), opt.model.n_layer, opt.model.n_head,
        opt.model.n_embd, T, opt.model.vocab_size, split.train.size(), split.val.size(),
        num_threads(), bp.ways() > 1 ? "batch" : "ops", opt.dtype.c_str());

  const int G = opt.grad_accum;
  std::vector<int32_t> x(size_t(G) * B * T), y(size_t(G) * B * T);
  const int tok_vocab = tok->vocab_size();
  // Masked-LM batches: the windows, then BERT's masking (its own stream per batch).
  auto mask_batch = [&](int64_t n, uint64_t stream) {
    if (mlm)
      mlm_mask(x.data(), y.data(), n, opt.model.mask_token_id, tok_vocab, opt.seed,
               stream + (uint64_t(1) << 50));
  };
  auto evaluate = [&](int64_t step) {
    if (lora) lora->apply();
    double sum = 0;
    for (int k = 0; k < opt.eval_iters; ++k) {
      const uint64_t stream = kEvalStream + uint64_t(step) * 4096 + uint64_t(k);
      sample_batch(split.val, B, T, opt.seed, stream, x.data(), y.data(), "validation");
      mask_batch(int64_t(B) * T, stream);
      sum += bp.forward(x.data(), y.data(), B, T);
    }
    return float(sum / opt.eval_iters);
  };
  auto checkpoint = [&](int64_t step) {
    // Every log line before `step` must be on disk before a checkpoint at `step` exists.
    std::fflush(log);
    ::fsync(::fileno(log));
    std::map<std::string, std::string> md = {{"step", std::to_string(step)},
                                             {"config", opt.model.to_json().dump()},
                                             {"train_tokens", std::to_string(split.train.size())},
                                             {"seed", std::to_string(opt.seed)}};
    const Shape flat = {int64_t(model.num_params())};
    save_safetensors(state_path,
                     {{"params", DType::F32, flat, model.param_data()},
                      {"adam_m", DType::F32, flat, adam.m().data()},
                      {"adam_v", DType::F32, flat, adam.v().data()}},
                     md);
    if (lora) lora->apply();
    if (partial)
      save_finetuned_weights(opt.out, model, frozen, lora.get(), opt.init_from,
                             opt.lora_save == "adapter");
    else
      model.save(opt.out + "/model.safetensors");
  };

  TrainResult res;
  const int64_t ckpt_every =
      opt.checkpoint_interval > 0 ? opt.checkpoint_interval : opt.eval_interval;
  int64_t steps_timed = 0;
  double step_seconds_sum = 0;
  for (int64_t it = start; it <= opt.max_iters; ++it) {
    const bool last = it == opt.max_iters;
    if ((it % opt.eval_interval == 0 || last) && !(resuming && it == start)) {
      const float vl = evaluate(it);
      res.last_val_loss = vl;
      const double at =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      std::fprintf(log, "{\"step\": %lld, \"val_loss\": %.6f, \"elapsed_s\": %.3f}\n",
                   static_cast<long long>(it), vl, at);
      std::fflush(log);
      if (!opt.quiet) {
        if (tty) std::printf("\r\033[K");
        std::printf("step %lld/%lld: val loss %.4f\n", static_cast<long long>(it),
                    static_cast<long long>(opt.max_iters), vl);
      }
    }
    if (((it % ckpt_every == 0 && it > start) || last) && !(resuming && it == start && !last))
      checkpoint(it);
    if (last) break;
    if (g_stop_training.load()) {
      checkpoint(it);
      res.interrupted = true;
      if (!opt.quiet)
        std::printf("%sstopped at step %lld; checkpoint written, continue with --resume\n",
                    tty ? "\r\033[K" : "", static_cast<long long>(it));
      break;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const float lr = lr_schedule(it, opt.learning_rate, opt.min_lr, opt.warmup_iters, decay_iters);
    // One draw of G * B sequences (what a batch of G * B would see), run B at a time; each
    // micro-batch's gradient is scaled by 1/G, so their sum is the whole batch's mean gradient.
    sample_batch(split.train, G * B, T, opt.seed, uint64_t(it), x.data(), y.data(), "training");
    mask_batch(int64_t(G) * B * T, uint64_t(it));
    if (lora) {
      lora->apply();
      lora->zero_grad();
    }
    bp.zero_grad();
    float loss = 0.0f;
    for (int g = 0; g < G; ++g) {
      const size_t off = size_t(g) * B * T;
      const float l = bp.forward_backward(x.data() + off, y.data() + off, B, T, 1.0f / float(G));
      QKV_CHECK(std::isfinite(l),
                "training diverged at step {}: loss is {} (lower --learning-rate?)", it, l);
      loss += l / float(G);
    }
    bp.reduce_grads();
    if (partial) {
      if (lora) lora->accumulate_grads();
      partial_adam->step(lr, grad_clip_factor(refs, opt.grad_clip));
    } else {
      adam.step(lr, grad_clip_factor(model.grad_data(), model.num_params(), opt.grad_clip));
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    res.last_loss = loss;
    res.steps_done = it + 1;
    if (it > start) {  // the first step pays one-time allocations
      ++steps_timed;
      step_seconds_sum += dt;
    }
    const double avg = steps_timed > 0 ? step_seconds_sum / double(steps_timed) : dt;
    const double tps = double(G) * B * T / dt;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::fprintf(log,
                 "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6g, \"tokens_per_sec\": %.1f, "
                 "\"elapsed_s\": %.3f}\n",
                 static_cast<long long>(it), loss, lr, tps, elapsed);
    if (!opt.quiet) {
      const double eta = avg * double(opt.max_iters - it - 1);
      // snprintf into a fixed buffer: the step loop allocates nothing.
      char eta_buf[32], line[160];
      fmt_duration(eta, eta_buf, sizeof eta_buf);
      std::snprintf(line, sizeof line, "step %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s",
                    static_cast<long long>(it + 1), static_cast<long long>(opt.max_iters), loss, lr,
                    tps, eta_buf);
      if (tty) {
        std::printf("\r\033[K%s", line);
        std::fflush(stdout);
      } else if ((it + 1) % opt.log_interval == 0 || it + 1 == opt.max_iters) {
        std::printf("%s\n", line);
        std::fflush(stdout);
      }
    }
  }
  std::fclose(log);
  if (tty) std::printf("\n");
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return res;
}

}  // namespace qkv

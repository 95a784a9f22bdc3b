#include "qkv/perf/bench.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <new>
#include <nlohmann/json.hpp>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/aligned.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/parallel.h"
#include "qkv/core/rng.h"
#include "qkv/io/svg_plot.h"
#include "qkv/models/gpt.h"
#include "qkv/train/batch_parallel.h"
#include "qkv/train/optimizer.h"

namespace qkv::perf {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<float> random_vec(size_t n, uint64_t seed) {
  Rng rng(seed, 0);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform() - 0.5f;
  return v;
}
}  // namespace

Stats summarize(std::vector<double> s) {
  QKV_ASSERT(!s.empty());
  std::sort(s.begin(), s.end());
  Stats st;
  st.min = s.front();
  st.max = s.back();
  st.median = s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
  return st;
}

// Best of 3 runs of probe(iters) on every thread at once, in GFLOP/s.
double best_probe_gflops(double (*probe)(int64_t), int64_t iters) {
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    double flops = 0;
#pragma omp parallel reduction(+ : flops)
    flops += probe(iters);
    best = std::max(best, flops / since(t0) / 1e9);
  }
  return best;
}

double measure_peak_gflops() { return best_probe_gflops(&cpu::fma_probe, 20'000'000); }

double measure_amx_peak_gflops() {
  return cpu::amx_available() ? best_probe_gflops(&cpu::amx_probe, 200'000) : 0.0;
}

double measure_bf16_peak_gflops() {
  if (cpu::amx_available()) return measure_amx_peak_gflops();
  if (cpu::avx512bf16_available()) return best_probe_gflops(&cpu::avx512bf16_probe, 5'000'000);
  return measure_peak_gflops();
}

double train_flops_per_token(const GPTConfig& c, int T) {
  const double C = c.n_embd, L = c.n_layer;
  const double matmul_params = L * 12 * C * C + double(c.vocab_size) * C;
  return 6 * matmul_params + 12 * L * C * T;
}

TrainBench bench_train(const GPTConfig& cfg, int B, int T, int steps, const std::string& dtype,
                       const std::string& parallel) {
  QKV_CHECK(T <= cfg.block_size, "[bench] --block-size {} exceeds the model's context {}", T,
            cfg.block_size);
  GPT model(cfg);
  model.init_weights(1);
  model.set_matmul_precision(dtype == "bf16" ? nn::Precision::BF16 : nn::Precision::F32);
  AdamW opt(model, {});
  BatchParallel bp(model, batch_parallel_ways(parallel, cfg, B, num_threads()));
  Rng rng(7, 0);
  std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
  for (auto& v : x) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  for (auto& v : y) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  std::vector<double> times;
  for (int s = -2; s < steps; ++s) {  // two warm-up steps
    auto t0 = Clock::now();
    bp.zero_grad();
    bp.forward_backward(x.data(), y.data(), B, T);
    bp.reduce_grads();
    opt.step(1e-4f, grad_clip_factor(model.grad_data(), model.num_params(), 1.0f));
    if (s >= 0) times.push_back(since(t0));
  }
  TrainBench r;
  r.ways = bp.ways();
  r.step = summarize(times);
  r.tokens_per_sec = double(B) * T / r.step.median;
  r.gflops = r.tokens_per_sec * train_flops_per_token(cfg, T) / 1e9;
  return r;
}

ForwardBench bench_forward(const GPTConfig& cfg, int B, int T, int reps,
                           const std::string& hooks_mode) {
  QKV_CHECK(T <= cfg.block_size, "[bench] --block-size {} exceeds the model's context {}", T,
            cfg.block_size);
  QKV_CHECK(hooks_mode == "none" || hooks_mode == "noop" || hooks_mode == "cache",
            "[bench] --hooks {}: expected none, noop or cache", hooks_mode);
  GPT model(cfg);
  model.init_weights(1);
  Hooks hooks;
  std::vector<HookSite> sites = {{HookPoint::Embed, -1}};
  for (int l = 0; l < cfg.n_layer; ++l)
    for (HookPoint p : {HookPoint::Qkv, HookPoint::Heads, HookPoint::AttnOut, HookPoint::MlpOut,
                        HookPoint::ResidPost})
      sites.push_back({p, l});
  for (const auto& site : sites) {
    if (hooks_mode == "noop") hooks.add(site, [](float*, int, int, int) {});
    if (hooks_mode == "cache") hooks.cache(site);
  }
  model.set_hooks(&hooks);
  Rng rng(7, 0);
  std::vector<int32_t> x(size_t(B) * T);
  for (auto& v : x) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  std::vector<double> times;
  for (int s = -2; s < reps; ++s) {
    auto t0 = Clock::now();
    model.forward(x.data(), nullptr, B, T);
    if (s >= 0) times.push_back(since(t0));
  }
  ForwardBench r;
  r.time = summarize(times);
  r.tokens_per_sec = double(B) * T / r.time.median;
  return r;
}

GenerateBench bench_generate(const GPTConfig& cfg, int prompt_tokens, int new_tokens, int reps,
                             const std::string& dtype) {
  QKV_CHECK(prompt_tokens >= 1 && prompt_tokens + new_tokens <= cfg.block_size,
            "[bench] prompt {} + new tokens {} must fit the context {}", prompt_tokens, new_tokens,
            cfg.block_size);
  GPT model(cfg);
  model.init_weights(1);
  model.set_inference_weights(GPT::weights_from_name(dtype));
  return bench_generate(model, prompt_tokens, new_tokens, reps);
}

GenerateBench bench_generate(GPT& model, int prompt_tokens, int new_tokens, int reps) {
  const GPTConfig& cfg = model.config();
  QKV_CHECK(prompt_tokens >= 1 && prompt_tokens + new_tokens <= cfg.block_size,
            "[bench] prompt {} + new tokens {} must fit the context {}", prompt_tokens, new_tokens,
            cfg.block_size);
  Rng rng(9, 0);
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_tokens));
  for (auto& v : prompt) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  std::vector<double> pre, dec;
  for (int r = -1; r < reps; ++r) {
    model.reset_cache();
    auto t0 = Clock::now();
    const float* logits = model.extend(prompt.data(), prompt_tokens);
    double tp = since(t0);
    int32_t next = int32_t(std::max_element(logits, logits + cfg.vocab_size) - logits);
    t0 = Clock::now();
    for (int i = 0; i < new_tokens; ++i) {
      logits = model.extend(&next, 1);
      next = int32_t(std::max_element(logits, logits + cfg.vocab_size) - logits);
    }
    double td = since(t0);
    if (r >= 0) {
      pre.push_back(tp);
      if (new_tokens > 0) dec.push_back(td / new_tokens);
    }
  }
  GenerateBench g;
  g.prefill = summarize(pre);
  g.prefill_tokens_per_sec = prompt_tokens / g.prefill.median;
  if (!dec.empty()) {
    g.decode_token = summarize(dec);
    g.decode_tokens_per_sec = 1.0 / g.decode_token.median;
  }
  return g;
}

KernelBench bench_gemm(int M, int N, int K, bool ta, bool tb, int reps, const std::string& dtype) {
  QKV_CHECK(dtype == "fp32" || dtype == "bf16" || dtype == "int8",
            "[bench] unknown dtype '{}' (fp32, bf16 or int8)", dtype);
  auto* fn = dtype == "bf16" ? &cpu::gemm_bf16 : &cpu::gemm;
  auto A = random_vec(size_t(M) * K, 1), B = random_vec(size_t(K) * N, 2);
  std::vector<float, AlignedAlloc<float>> C(size_t(M) * N);  // as qkv's own buffers
  cpu::PackedMatrix packed;
  if (dtype == "int8") {
    QKV_CHECK(!ta, "[bench] the int8 GEMM takes an untransposed A");
    cpu::pack_matrix(packed, cpu::WeightFormat::Q8, B.data(), tb ? K : N, tb, K, N);
  }
  std::vector<double> t;
  for (int r = -2; r < reps; ++r) {
    auto t0 = Clock::now();
    if (dtype == "int8")
      cpu::gemm_packed(M, A.data(), K, packed, C.data(), N);
    else
      fn(ta, tb, M, N, K, 1.0f, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.0f, C.data(), N,
         nullptr);
    if (r >= 0) t.push_back(since(t0));
  }
  KernelBench k;
  k.time = summarize(t);
  k.gflops = 2.0 * M * N * K / k.time.median / 1e9;
  return k;
}

namespace {
// Keys row p sees under o's rule (the rules of kernel_args.h, counted per row).
int64_t visible_in_row(const AttentionBenchOptions& o, int64_t p) {
  const int64_t T = o.T, hi = o.causal ? p + 1 : T;
  switch (o.kind) {
    case AttnKind::Sliding: {
      const int64_t lo = o.causal ? p - o.window + 1 : p - o.window / 2;
      const int64_t top = o.causal ? hi : std::min(T, p + o.window / 2 + 1);
      return std::max<int64_t>(0, top - std::max<int64_t>(lo, 0));
    }
    case AttnKind::BlockSparse: {
      if (p < o.global) return hi;
      const int64_t g = std::min<int64_t>(o.global, hi), qb = p / o.block;
      const int64_t lo = std::max<int64_t>((qb - o.local_blocks) * o.block, g);
      const int64_t top = std::min<int64_t>((qb + o.local_blocks + 1) * o.block, hi);
      return g + std::max<int64_t>(0, top - lo);
    }
    default:
      return hi;
  }
}
}  // namespace

AttentionBench bench_attention(const AttentionBenchOptions& o) {
  QKV_CHECK(o.B >= 1 && o.NH >= 1 && o.T >= 1 && o.HS >= 1 && o.reps >= 1,
            "[bench attention] sizes and repetitions must be >= 1");
  QKV_CHECK(o.kind != AttnKind::Sliding || o.window >= 1,
            "[bench attention] window {} must be >= 1", o.window);
  QKV_CHECK(
      o.kind != AttnKind::BlockSparse || (o.block >= 1 && o.local_blocks >= 0 && o.global >= 0),
      "[bench attention] block {} must be >= 1, local blocks and global >= 0", o.block);
  const size_t C = size_t(o.NH) * o.HS, N = size_t(o.B) * o.T;
  auto qkv = random_vec(N * 3 * C, 3), dout = random_vec(N * C, 4);
  std::vector<float> out(N * C), dqkv(qkv.size());
  AttentionBench r;
  std::vector<double> tf, tb;
  for (int rep = -1; rep < o.reps; ++rep) {
    const bool measure_memory = rep == -1;
    if (measure_memory) {
      cpu::release_attention_scratch();
      reset_aligned_peak();
    }
    const int64_t base = aligned_bytes_in_use();
    AlignedVector<float> lse(size_t(o.B) * o.NH * o.T);
    auto a = attn_args_packed_qkv<float>(qkv.data(), out.data(), lse.data(), o.B, o.T, o.NH, o.HS);
    a.causal = o.causal;
    a.kind = o.kind;
    a.window = o.window;
    a.block = o.block;
    a.local_blocks = o.local_blocks;
    a.global = o.global;
    auto t0 = Clock::now();
    cpu::attention_forward(a);
    const double fwd = since(t0);
    a.dout = dout.data();
    a.dq = dqkv.data();
    a.dk = dqkv.data() + C;
    a.dv = dqkv.data() + 2 * C;
    t0 = Clock::now();
    cpu::attention_forward(a);
    cpu::attention_backward(a);
    const double both = since(t0);
    if (measure_memory) r.peak_bytes = aligned_peak_bytes() - base;
    if (rep >= 0) {
      tf.push_back(fwd);
      tb.push_back(both);
    }
  }
  r.fwd = summarize(tf);
  r.fwd_bwd = summarize(tb);
  const double heads = double(o.B) * o.NH;
  if (o.kind == AttnKind::Linear) {
    const double per = heads * double(o.T) * o.HS * o.HS;
    r.fwd_gflops = per * 4 / r.fwd.median / 1e9;
    r.fwd_bwd_gflops = per * 14 / r.fwd_bwd.median / 1e9;
  } else {
    for (int64_t p = 0; p < o.T; ++p) r.visible_pairs += visible_in_row(o, p);
    const double per = heads * double(r.visible_pairs) * o.HS;
    r.fwd_gflops = per * 4 / r.fwd.median / 1e9;
    r.fwd_bwd_gflops = per * 14 / r.fwd_bwd.median / 1e9;
  }
  return r;
}

std::string attention_sweep(const AttentionSweepOptions& o) {
  QKV_CHECK(o.min_T >= 1 && o.max_T >= o.min_T, "[bench attention] bad sweep range {}..{}", o.min_T,
            o.max_T);
  struct Row {
    AttnKind kind;
    int T;
    AttentionBench r;
  };
  std::vector<Row> rows;
  std::vector<std::string> stopped;
  for (AttnKind k : o.kinds) {
    for (int64_t T = o.min_T; T <= o.max_T; T *= 2) {
      AttentionBenchOptions b = o.base;
      b.kind = k;
      b.T = int(T);
      try {
        rows.push_back({k, int(T), bench_attention(b)});
      } catch (const std::bad_alloc&) {
        stopped.push_back(
            fmt::format("{} stopped at T = {}: out of memory", GPTConfig::attention_name(k), T));
        break;
      }
      if (o.progress)
        std::fprintf(stderr, "  %-12s T=%-6lld fwd %9.2f ms  fwd+bwd %9.2f ms  peak %8.2f MiB\n",
                     GPTConfig::attention_name(k), static_cast<long long>(T),
                     1e3 * rows.back().r.fwd.median, 1e3 * rows.back().r.fwd_bwd.median,
                     double(rows.back().r.peak_bytes) / (1 << 20));
    }
  }
  const AttentionBenchOptions& b = o.base;
  std::string settings = fmt::format(
      "B={} heads={} head_dim={} {}; sliding window {}; block_sparse block {} local {} global {}",
      b.B, b.NH, b.HS, b.causal ? "causal" : "bidirectional", b.window, b.block, b.local_blocks,
      b.global);
  std::string md = "Attention scaling (" + settings + "; medians of " + std::to_string(b.reps) +
                   ")\n\n| kind | T | fwd ms | fwd+bwd ms | fwd+bwd GFLOP/s | peak extra MiB | "
                   "fwd+bwd time vs T/2 | memory vs T/2 |\n|---|---|---|---|---|---|---|---|\n";
  nlohmann::json js = nlohmann::json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& w = rows[i];
    std::string tr = "", mr = "";
    if (i > 0 && rows[i - 1].kind == w.kind) {
      tr = fmt::format("{:.2f}x", w.r.fwd_bwd.median / rows[i - 1].r.fwd_bwd.median);
      mr = fmt::format("{:.2f}x", double(w.r.peak_bytes) / double(rows[i - 1].r.peak_bytes));
    }
    md += fmt::format("| {} | {} | {:.2f} | {:.2f} | {:.1f} | {:.2f} | {} | {} |\n",
                      GPTConfig::attention_name(w.kind), w.T, 1e3 * w.r.fwd.median,
                      1e3 * w.r.fwd_bwd.median, w.r.fwd_bwd_gflops,
                      double(w.r.peak_bytes) / (1 << 20), tr, mr);
    js.push_back({{"kind", GPTConfig::attention_name(w.kind)},
                  {"seq_len", w.T},
                  {"fwd_ms", 1e3 * w.r.fwd.median},
                  {"fwd_bwd_ms", 1e3 * w.r.fwd_bwd.median},
                  {"fwd_bwd_gflops", w.r.fwd_bwd_gflops},
                  {"peak_bytes", w.r.peak_bytes}});
  }
  for (const auto& s : stopped) md += "\n" + s + "\n";
  if (!o.out_dir.empty()) {
    std::vector<PlotSeries> time_series, mem_series;
    // What holding the scores would take, for scale: one head's T x T fp32 matrix.
    PlotSeries quad{"T x T fp32 scores, 1 head (not held)", {}, {}};
    for (AttnKind k : o.kinds) {
      PlotSeries t{GPTConfig::attention_name(k), {}, {}}, m = t;
      for (const Row& w : rows)
        if (w.kind == k) {
          t.x.push_back(w.T);
          t.y.push_back(1e3 * w.r.fwd_bwd.median);
          m.x.push_back(w.T);
          m.y.push_back(double(w.r.peak_bytes) / (1 << 20));
        }
      time_series.push_back(t);
      mem_series.push_back(m);
    }
    for (int64_t T = o.min_T; T <= o.max_T; T *= 2) {
      quad.x.push_back(double(T));
      quad.y.push_back(double(T) * double(T) * 4 / (1 << 20));
    }
    mem_series.push_back(quad);
    const std::string svg = svg_line_chart(
        "Attention forward+backward: time and extra memory vs sequence length",
        {PlotPanel{"time", "sequence length T", "forward+backward ms", 2, 10, time_series},
         PlotPanel{"memory", "sequence length T", "peak extra MiB", 2, 10, mem_series}},
        settings);
    write_file_atomic(o.out_dir + "/attention_scaling.svg", svg);
    write_file_atomic(o.out_dir + "/attention_scaling.md", md);
    write_file_atomic(o.out_dir + "/attention_scaling.json",
                      nlohmann::json{{"settings", settings}, {"rows", js}}.dump(2) + "\n");
  }
  return md;
}

}  // namespace qkv::perf

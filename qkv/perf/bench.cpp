#include "qkv/perf/bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/error.h"
#include "qkv/core/rng.h"
#include "qkv/models/gpt.h"
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

double train_flops_per_token(const GPTConfig& c, int T) {
  const double C = c.n_embd, L = c.n_layer;
  const double matmul_params = L * 12 * C * C + double(c.vocab_size) * C;
  return 6 * matmul_params + 12 * L * C * T;
}

TrainBench bench_train(const GPTConfig& cfg, int B, int T, int steps, const std::string& dtype) {
  QKV_CHECK(T <= cfg.block_size, "[bench] --block-size {} exceeds the model's context {}", T,
            cfg.block_size);
  GPT model(cfg);
  model.init_weights(1);
  model.set_matmul_precision(dtype == "bf16" ? nn::Precision::BF16 : nn::Precision::F32);
  AdamW opt(model, {});
  Rng rng(7, 0);
  std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
  for (auto& v : x) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  for (auto& v : y) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  std::vector<double> times;
  for (int s = -2; s < steps; ++s) {  // two warm-up steps
    auto t0 = Clock::now();
    model.zero_grad();
    model.forward(x.data(), y.data(), B, T);
    model.backward();
    opt.step(1e-4f, grad_clip_factor(model.grad_data(), model.num_params(), 1.0f));
    if (s >= 0) times.push_back(since(t0));
  }
  TrainBench r;
  r.step = summarize(times);
  r.tokens_per_sec = double(B) * T / r.step.median;
  r.gflops = r.tokens_per_sec * train_flops_per_token(cfg, T) / 1e9;
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
  std::vector<float> C(size_t(M) * N);
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
      fn(ta, tb, M, N, K, 1.0f, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.0f, C.data(), N);
    if (r >= 0) t.push_back(since(t0));
  }
  KernelBench k;
  k.time = summarize(t);
  k.gflops = 2.0 * M * N * K / k.time.median / 1e9;
  return k;
}

KernelBench bench_attention(int B, int NH, int T, int HS, bool backward, int reps) {
  const size_t C = size_t(NH) * HS;
  auto qkv = random_vec(size_t(B) * T * 3 * C, 3), dout = random_vec(size_t(B) * T * C, 4);
  std::vector<float> out(size_t(B) * T * C), lse(size_t(B) * NH * T), dqkv(qkv.size());
  std::vector<double> t;
  for (int r = -1; r < reps; ++r) {
    auto a = attn_args_packed_qkv<float>(qkv.data(), out.data(), lse.data(), B, T, NH, HS);
    auto t0 = Clock::now();
    cpu::attention_forward(a);
    if (backward) {
      a.dout = dout.data();
      a.dq = dqkv.data();
      a.dk = dqkv.data() + C;
      a.dv = dqkv.data() + 2 * C;
      cpu::attention_backward(a);
    }
    if (r >= 0) t.push_back(since(t0));
  }
  KernelBench k;
  k.time = summarize(t);
  // Causal: half of the T x T scores. Forward 2 matmuls (4 flops/score/dim), backward 5 (incl.
  // recompute).
  const double scores = double(B) * NH * T * (T + 1) / 2.0;
  k.gflops = scores * HS * 2.0 * (backward ? 7 : 2) / k.time.median / 1e9;
  return k;
}

}  // namespace qkv::perf

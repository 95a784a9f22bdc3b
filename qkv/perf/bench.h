// Benchmarks behind `qkv bench`: training steps, generation (prefill + decode), GEMM and fused
// attention on random weights and tokens, timed with warm-up and reported as medians.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qkv/models/gpt.h"
#include "qkv/models/gpt_config.h"

namespace qkv::perf {

struct Stats {
  double median = 0, min = 0, max = 0;  // seconds per repetition
};
Stats summarize(std::vector<double> seconds);

// Peak fp32 FMA throughput of this machine with the current thread count (GFLOP/s), measured
// by a register-only loop.
double measure_peak_gflops();
// The AMX bf16 tile peak over all threads, GFLOP/s (0 without AMX).
double measure_amx_peak_gflops();

struct TrainBench {
  double tokens_per_sec = 0, gflops = 0, peak_gflops = 0;
  Stats step;
};
TrainBench bench_train(const GPTConfig& cfg, int B, int T, int steps,
                       const std::string& dtype = "fp32");

struct GenerateBench {
  double prefill_tokens_per_sec = 0, decode_tokens_per_sec = 0;
  Stats prefill, decode_token;
};
// dtype: the inference weights, "fp32", "bf16" or "int8" (GPT::set_inference_weights).
GenerateBench bench_generate(const GPTConfig& cfg, int prompt_tokens, int new_tokens, int reps,
                             const std::string& dtype = "fp32");
// The same on a given model (its weights as set_inference_weights left them).
GenerateBench bench_generate(GPT& model, int prompt_tokens, int new_tokens, int reps);

struct KernelBench {
  double gflops = 0;
  Stats time;
};
// dtype: "fp32", "bf16" (AMX where available) or "int8" (B packed as int8 inference weights,
// cpu::gemm_packed).
KernelBench bench_gemm(int M, int N, int K, bool trans_a, bool trans_b, int reps,
                       const std::string& dtype = "fp32");
// Causal attention forward (+ backward if `backward`), B x NH heads of size HS over T tokens.
KernelBench bench_attention(int B, int NH, int T, int HS, bool backward, int reps);

// Training FLOPs per token (forward + backward): 6 * matmul params + 12 * L * C * T (attention).
double train_flops_per_token(const GPTConfig& cfg, int T);

}  // namespace qkv::perf

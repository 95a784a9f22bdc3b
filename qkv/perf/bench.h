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
// The peak of the units cpu::gemm_bf16 runs on now (cpu::bf16_engine(): AMX tiles, AVX512-BF16
// dot products, or fp32 FMA).
double measure_bf16_peak_gflops();

struct TrainBench {
  double tokens_per_sec = 0, gflops = 0, peak_gflops = 0;
  int ways = 1;  // batch-parallel ways the step ran with (1: ops split across threads)
  Stats step;
};
// parallel: "auto", "batch" or "ops", as qkv train's --parallel (batch_parallel.h).
TrainBench bench_train(const GPTConfig& cfg, int B, int T, int steps,
                       const std::string& dtype = "fp32", const std::string& parallel = "auto");

// Forward passes only (no targets), with hooks at every site: "none" (the plain pass), "noop"
// (a function that does nothing) or "cache" (a copy of every activation).
struct ForwardBench {
  double tokens_per_sec = 0;
  Stats time;
};
ForwardBench bench_forward(const GPTConfig& cfg, int B, int T, int reps,
                           const std::string& hooks_mode = "none");

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
// Attention forward and forward+backward for one rule (kernel_args.h), B x NH heads of size HS
// over T tokens, on random q, k, v.
struct AttentionBenchOptions {
  int B = 1, NH = 12, T = 1024, HS = 64;
  bool causal = true;
  AttnKind kind = AttnKind::Dense;
  int window = 256;                               // sliding
  int block = 64, local_blocks = 1, global = 64;  // block_sparse
  int reps = 3;
};
struct AttentionBench {
  Stats fwd, fwd_bwd;
  // Useful work per second: 4 HS flops per visible (query, key) pair forward, 14 forward +
  // backward (the backward recomputes the scores); linear attention 4 HS^2 per token forward,
  // 14 HS^2 forward + backward.
  double fwd_gflops = 0, fwd_bwd_gflops = 0;
  int64_t visible_pairs = 0;  // per head (0 for linear)
  // Extra memory one forward+backward took, measured: every buffer it allocated (per-thread
  // scratch, the (B, NH, T) log-sum-exp rows, the backward's D row) at its peak; q, k, v, the
  // output and the gradients, which any implementation holds, are not counted.
  int64_t peak_bytes = 0;
};
AttentionBench bench_attention(const AttentionBenchOptions& o);

// The scaling sweep: every kind at T = min_T, 2 min_T, ... max_T (a kind stops early if memory
// runs out). Writes attention_scaling.md (table), .json and .svg (time and memory vs T, log-log)
// to out_dir (if not empty) and returns the markdown table.
struct AttentionSweepOptions {
  AttentionBenchOptions base;  // B, NH, HS, causal, window, block settings, reps
  std::vector<AttnKind> kinds = {AttnKind::Dense, AttnKind::Sliding, AttnKind::BlockSparse,
                                 AttnKind::Linear};
  int min_T = 256, max_T = 16384;
  std::string out_dir;
  bool progress = true;  // a line per measurement on stderr
};
std::string attention_sweep(const AttentionSweepOptions& o);

// Training FLOPs per token (forward + backward): 6 * matmul params + 12 * L * C * T (attention).
double train_flops_per_token(const GPTConfig& cfg, int T);

}  // namespace qkv::perf

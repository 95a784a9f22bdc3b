// The training loop: data, model, AdamW, schedule, evaluation, JSONL log, progress, atomic
// checkpoints and exact resume. Every random draw is keyed by (seed, step), so a run resumed
// from a checkpoint ends with the same weights, bit for bit, as one never interrupted.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "qkv/models/gpt_config.h"

namespace qkv {

struct TrainOptions {
  std::string data;       // a UTF-8 (or any) text file
  std::string out;        // the model/run directory
  GPTConfig model;        // vocab_size is set from the tokenizer
  std::string tokenizer;  // "char" (default), "byte", or a directory with a BPE vocabulary
  std::string init_from;  // a model directory to start from (its config, weights, tokenizer)
  std::string dtype =
      "fp32";  // matmul precision: fp32, or bf16 (mixed precision, fp32 master weights)
  int batch_size = 12;
  // Micro-batches of batch_size per optimizer step: the step sees grad_accum * batch_size
  // sequences (the same ones a batch that large would draw), at the memory of one micro-batch.
  int grad_accum = 1;
  int64_t max_iters = 2000;
  float learning_rate = 1e-3f;
  float min_lr = 1e-4f;
  int64_t warmup_iters = 100;
  int64_t lr_decay_iters = -1;  // -1: max_iters
  float weight_decay = 0.1f;
  float beta1 = 0.9f;
  float beta2 = 0.99f;
  float grad_clip = 1.0f;
  int64_t eval_interval = 250;
  int eval_iters = 20;
  int64_t checkpoint_interval = 0;  // 0: at each evaluation
  int64_t log_interval = 10;        // plain progress lines when stdout is not a terminal
  uint64_t seed = 1337;
  bool resume = false;
  bool quiet = false;
};

struct TrainResult {
  int64_t steps_done = 0;
  float last_loss = 0;
  float last_val_loss = -1;
  bool interrupted = false;
  double seconds = 0;
};

// Set from a signal handler to stop at the next step boundary (a checkpoint is written).
extern std::atomic<bool> g_stop_training;

// Trains; throws qkv::Error on bad input (before any work where it can be checked up front).
TrainResult train(const TrainOptions& opt);

// Mean loss of the model in `dir` over `iters` random validation batches (used by
// tests/benchmarks).
}  // namespace qkv

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
  // How the threads share a step: "batch" (each thread its share of the sequences, on a model
  // replica; fastest for small models), "ops" (every op split across the threads), or "auto"
  // (batch_parallel_ways' rule). Results are deterministic for a fixed thread count and mode.
  std::string parallel = "auto";
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
  // "clm": next-token prediction (decoders); "mlm": masked-language-model pretraining (encoders):
  // 15% of the positions are predicted, of which 80% are replaced by the mask token, 10% by a
  // random token and 10% kept (BERT's rule).
  std::string objective = "clm";
  // Fine-tuning controls (with init_from): frozen parameters (see frozen_params) and LoRA
  // adapters (lora_rank > 0: the base frozen); lora_save "merged" or "adapter".
  std::string freeze;
  int lora_rank = 0;
  float lora_alpha = 16.0f;
  std::string lora_targets = "attn.c_attn,attn.c_proj";
  std::string lora_save = "merged";
};

// BERT's masking of x (n tokens) in place for a masked-language-model step: each position is
// chosen with probability 0.15 (y = its token, else y = -1); a chosen token becomes mask_id with
// probability 0.8, a uniform random id in [0, vocab) with 0.1, and stays with 0.1. At least one
// position is chosen. Deterministic in (seed, stream).
void mlm_mask(int32_t* x, int32_t* y, int64_t n, int32_t mask_id, int vocab, uint64_t seed,
              uint64_t stream);

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

// Training an encoder-decoder on source/target pairs (TSV): a character vocabulary over the
// training text plus BOS and EOS, padded batches on both sides, label-smoothed loss, AdamW with
// warmup and cosine decay, and exact-match evaluation by greedy decoding on held-out pairs.
#pragma once

#include <cstdint>
#include <string>

#include "qkv/models/seq2seq.h"

namespace qkv {

struct Seq2SeqTrainOptions {
  std::string data;     // training TSV: source<TAB>target per line
  std::string eval;     // held-out TSV ("" : the last 10% of the data's lines)
  std::string out;      // model directory
  Seq2SeqConfig model;  // vocab and BOS/EOS come from the data
  int batch_size = 64;
  int64_t max_iters = 3000;
  float learning_rate = 1e-3f;
  float min_lr = 1e-4f;
  int64_t warmup_iters = 200;
  float weight_decay = 0.01f;
  float beta1 = 0.9f, beta2 = 0.98f;
  float grad_clip = 1.0f;
  float label_smoothing = 0.1f;
  int64_t eval_interval = 500;
  int eval_examples = 500;  // held-out pairs decoded per evaluation (0: all)
  uint64_t seed = 1337;
  bool skip_bad_lines = false;
  std::string dtype = "fp32";
  bool quiet = false;
  // Continue from the checkpoint in `out` (weights, AdamW moments, step; written at every
  // evaluation and on SIGINT/SIGTERM via g_stop_training). Batches are keyed by (seed, step), so
  // a resumed run ends with the same weights as one never stopped.
  bool resume = false;
};

struct Seq2SeqTrainResult {
  int64_t steps = 0;
  double seconds = 0;
  float last_loss = 0;
  double exact_match = 0;  // of the last evaluation (greedy decoding)
  bool interrupted = false;
  int64_t eval_examples = 0, train_pairs = 0, skipped_lines = 0, truncated = 0;
};

Seq2SeqTrainResult train_seq2seq(const Seq2SeqTrainOptions& o);

// Exact match of greedy (beam 1) or beam decoding on TSV pairs against a trained model
// directory's tokenizer; bad lines stop with FILE:LINE unless skip_bad.
struct Seq2SeqEval {
  int64_t examples = 0, exact = 0, skipped_lines = 0, truncated = 0;
  double accuracy() const { return examples ? double(exact) / double(examples) : 0.0; }
};
class Tokenizer;
Seq2SeqEval evaluate_seq2seq(Seq2Seq& m, const Tokenizer& tok, const std::string& tsv, int beam,
                             int max_examples, bool skip_bad);

}  // namespace qkv

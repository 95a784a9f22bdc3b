// Fine-tuning from a model directory: a classification head on labelled text (JSONL), with
// frozen layers or LoRA adapters, and the evaluation of such a classifier.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qkv/models/gpt.h"

namespace qkv {

class Tokenizer;

struct FinetuneOptions {
  std::string model;  // the starting model directory (any qkv/HF GPT-2 directory)
  std::string data;   // training JSONL {"text", "label"}
  std::string eval;   // optional evaluation JSONL (accuracy after each epoch / eval interval)
  std::string out;    // the fine-tuned model directory
  int batch_size = 16;
  int epochs = 3;
  int64_t max_iters = 0;  // > 0: this many steps instead of epochs
  float learning_rate = 3e-4f;
  float min_lr = 3e-5f;
  int64_t warmup_iters = -1;  // -1: 5% of the steps
  float weight_decay = 0.01f;
  float grad_clip = 1.0f;
  int64_t eval_interval = 0;  // 0: after each epoch
  uint64_t seed = 1;
  std::string freeze;  // see frozen_params()
  int lora_rank = 0;   // > 0: LoRA adapters on lora_targets, the base frozen
  float lora_alpha = 16.0f;
  std::string lora_targets = "attn.c_attn,attn.c_proj";
  std::string lora_save = "merged";  // "merged" (full model.safetensors) or "adapter"
  bool skip_bad_lines = false;
  std::string dtype = "fp32";
  bool quiet = false;
};

struct ClassifierEval {
  int64_t examples = 0, correct = 0;
  double loss = 0;  // mean cross-entropy
  std::vector<int64_t> per_label, per_label_correct;
  double accuracy() const { return examples ? double(correct) / double(examples) : 0.0; }
};

struct FinetuneResult {
  int64_t steps = 0;
  double seconds = 0;
  float last_loss = 0;
  ClassifierEval eval;  // on --eval (examples 0 without one)
  int64_t train_examples = 0, skipped_lines = 0, truncated = 0;
};

FinetuneResult finetune(const FinetuneOptions& o);

// Token ids of labelled examples against a label list: text longer than block_size is cut
// (counted in *truncated); an unknown label is a bad line.
struct LabelledIds {
  std::vector<std::vector<int32_t>> ids;
  std::vector<int32_t> labels;
  int64_t truncated = 0;
};
// Reads and tokenises a labelled JSONL file for a classifier; bad lines stop with FILE:LINE
// unless skip_bad (then *skipped counts them).
LabelledIds load_labelled(const std::string& path, const Tokenizer& tok,
                          const std::vector<std::string>& labels, int max_len, bool skip_bad,
                          int64_t* skipped);

// Accuracy and loss of a classifier on tokenised examples, in padded batches.
ClassifierEval evaluate_classifier(GPT& m, const LabelledIds& data, int batch_size);

}  // namespace qkv

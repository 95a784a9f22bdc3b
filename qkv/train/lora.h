// Fine-tuning controls on a GPT: which parameters train (freezing), and LoRA adapters trained
// with the base frozen. LoRA is computed exactly by merging: before each forward the adapted
// matrices hold W0 + s A B; after backward the gradient of each W gives dA = s dW B^T and
// dB = s A^T dW. Every kernel stays as it is, at the cost of one small (K x r x N) product per
// matrix per step.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qkv/io/safetensors.h"
#include "qkv/models/adapter.h"
#include "qkv/models/gpt.h"
#include "qkv/train/optimizer.h"

namespace qkv {

// Which parameters a freeze spec holds fixed: a comma list of "embeddings" (wte, wpe), layer
// indices ("3") or ranges ("0-5"), "final_norm" (ln_f), and "all" (every base tensor; the
// classification head always trains). Throws on a bad item or a layer out of range.
std::vector<bool> frozen_params(const GPT& m, const std::string& spec);

class Lora {
 public:
  // Adapters for spec.targets in every layer: A ~ N(0, 1/rank) (seeded), B = 0, so training
  // starts from the base model exactly. Keeps a copy of each base matrix.
  Lora(GPT& m, const LoraSpec& spec, uint64_t seed);
  const LoraSpec& spec() const { return spec_; }
  // W = W0 + s A B for every adapted matrix (call before forward).
  void apply();
  // dA += s dW B^T, dB += s A^T dW from the model's gradient buffer (call after backward).
  void accumulate_grads();
  void zero_grad();
  // The adapters' tensors for the optimizer.
  std::vector<ParamRef> params();
  // Indices (into m.params()) of the adapted matrices: frozen, updated only through A, B.
  const std::vector<size_t>& targets() const { return idx_; }
  // "lora.<name>.A" / ".B" tensors, for adapter.safetensors.
  void append_tensors(std::vector<TensorRef>* out) const;

 private:
  GPT& m_;
  LoraSpec spec_;
  std::vector<size_t> idx_;
  struct Mat {
    int K, N;
    std::vector<float> W0, A, B, dA, dB;
  };
  std::vector<Mat> mats_;
};

// What a fine-tune trains: the frozen mask, the adapters (lora_rank > 0: on lora_targets, with
// every base tensor frozen but a classification head) and the tensors AdamW updates (the model's
// unfrozen ones, then the adapters'). Throws if nothing would train.
struct Trainable {
  std::vector<bool> frozen;
  std::unique_ptr<Lora> lora;
  std::vector<ParamRef> refs;
  int64_t numel = 0;
};
Trainable make_trainable(GPT& m, const std::string& freeze, int lora_rank, float lora_alpha,
                         const std::string& lora_targets, uint64_t seed);

// Writes a fine-tuned model's weights into `out`: in full (model.safetensors), or with `adapter`
// as adapter.safetensors (the LoRA pairs and every tensor that trained in full) plus
// adapter_config.json naming `base_dir`. Removes the other form's files so the directory reads
// back unambiguously.
void save_finetuned_weights(const std::string& out, const GPT& m, const std::vector<bool>& frozen,
                            const Lora* lora, const std::string& base_dir, bool adapter);

}  // namespace qkv

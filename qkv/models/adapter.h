// Low-rank adapters (LoRA, Hu et al. 2021) as files: a fine-tuned model directory may hold only
// what changed from a base model, `adapter_config.json` + `adapter.safetensors`, instead of a
// full `model.safetensors`. Each adapted matrix W (Hugging Face layout, in x out) becomes
// W + (alpha / rank) A B with A (in x rank) and B (rank x out), stored as "lora.<name>.A/.B";
// tensors trained in full (a classification head, unfrozen layers) are stored as they are.
// GPT::from_dir loads the base named in the config and applies the adapter.
#pragma once

#include <string>
#include <vector>

namespace qkv {

class GPT;

struct LoraSpec {
  int rank = 8;
  float alpha = 16.0f;
  // Which matrices, by the end of their name: "attn.c_attn", "attn.c_proj", "mlp.c_fc",
  // "mlp.c_proj" (short forms "c_attn", "c_fc" are accepted).
  std::vector<std::string> targets = {"attn.c_attn", "attn.c_proj"};
  float scale() const { return alpha / float(rank); }
};

// Parses "c_attn,attn.c_proj,..." into target names; throws on an unknown one.
std::vector<std::string> parse_lora_targets(const std::string& list);
// Indices into m.params() of the matrices a spec adapts (every layer); throws if none.
std::vector<size_t> lora_target_params(const GPT& m, const LoraSpec& spec);

// W += scale * A @ B for one matrix (K x N) from A (K x r), B (r x N).
void lora_merge(float* W, const float* A, const float* B, int K, int N, int r, float scale);

// Applies the adapter in `dir` (adapter_config.json + adapter.safetensors) to a model holding
// the base weights. Throws on a mismatch (shapes, names, rank).
void apply_adapter(GPT& m, const std::string& dir);
// The base model directory an adapter directory names ("" if `dir` holds no adapter).
std::string adapter_base(const std::string& dir);

}  // namespace qkv

// Looking inside a GPT from its own fast forward pass (hooks + the kernel's saved normalisers):
// attention maps, the logit lens, direct logit attribution, ablations and causal tracing.
// Every function runs batch 1 on a prompt of at most block_size tokens and leaves the model
// without hooks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qkv/models/gpt.h"

namespace qkv::interp {

// Checks a prompt before any work: non-empty, within the context, ids in the vocabulary.
void check_prompt(const GPT& m, const std::vector<int32_t>& ids);

// All attention maps of the prompt: [layer][head] -> (T, T) row-major probabilities.
std::vector<std::vector<std::vector<float>>> attention_maps(GPT& m,
                                                            const std::vector<int32_t>& ids);

// The logit lens: the residual stream after the embeddings (row 0) and after each block (row
// l + 1) read out through ln_f and the unembedding, at every position: top-k next tokens.
struct LensEntry {
  int32_t token;
  float prob;
};
struct LogitLens {
  int rows = 0, T = 0, k = 0;
  std::vector<LensEntry> top;  // (rows, T, k)
  const LensEntry* at(int row, int t) const { return top.data() + (size_t(row) * T + t) * k; }
  std::vector<float> last_logits;  // (T, V) of the last row: the model's own output
};
LogitLens logit_lens(GPT& m, const std::vector<int32_t>& ids, int k = 5);

// Direct logit attribution of `token`'s logit at position `pos`: with ln_f's scale frozen at
// its value on this input, the logit is a sum over the residual stream's writes (embeddings,
// each head through its slice of c_proj, each attention output bias, each MLP) plus ln_f's bias.
struct Part {
  std::string name;  // "embed", "L.H" (head), "L.attn_bias", "L.mlp", "ln_f.bias"
  int layer = -1, head = -1;
  double value = 0;
};
struct Attribution {
  int pos = 0;
  int32_t token = 0;
  double logit = 0;         // the model's logit
  std::vector<Part> parts;  // sums to logit
};
Attribution direct_logit_attribution(GPT& m, const std::vector<int32_t>& ids, int pos,
                                     int32_t token);

// The change in the prompt's mean next-token loss when each head or MLP is zeroed or replaced
// by its mean over the prompt's positions.
struct Ablation {
  int layer = 0, head = -1;  // head -1: the layer's MLP
  double zero_delta = 0, mean_delta = 0;
};
struct Ablations {
  double clean_loss = 0;
  std::vector<Ablation> rows;
};
Ablations ablations(GPT& m, const std::vector<int32_t>& ids);

// Causal tracing (Meng et al. 2022): the subject positions' embeddings get Gaussian noise
// (noise_scale x the embedding matrix's std), then each layer's hidden state / MLP output /
// attention output at each position is restored to its clean value; the map holds the answer's
// probability at the last position, averaged over `samples` noise draws.
struct CausalTrace {
  int L = 0, T = 0;
  int32_t answer = 0;
  double clean_prob = 0, corrupt_prob = 0;
  std::vector<double> hidden, mlp, attn;  // (L, T); mlp empty for attention-only models
};
CausalTrace causal_trace(GPT& m, const std::vector<int32_t>& ids, int subject_begin,
                         int subject_end, int32_t answer, int samples = 5, double noise_scale = 3.0,
                         uint64_t seed = 1);

}  // namespace qkv::interp

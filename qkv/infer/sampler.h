// Next-token sampling: temperature (0 = greedy), top-k, top-p (nucleus), from a seeded
// counter-based RNG. Scratch is kept between calls: no allocation per token.
#pragma once

#include <cstdint>
#include <vector>

#include "qkv/core/rng.h"

namespace qkv {

struct SamplerConfig {
  float temperature = 1.0f;  // 0: argmax
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 1337;
};

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& cfg);
  // Picks a token id from logits (V).
  int32_t sample(const float* logits, int V);

 private:
  SamplerConfig cfg_;
  Rng rng_;
  std::vector<float> probs_;
  std::vector<int32_t> order_;
};

}  // namespace qkv

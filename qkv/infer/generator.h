// Autoregressive generation: prefill the prompt into the KV cache, then decode one token at a
// time, streaming each through a callback. When the context is full, the window slides: the
// last block_size tokens are re-run (as nanoGPT crops idx[:, -block_size:]).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "qkv/infer/sampler.h"
#include "qkv/models/gpt.h"

namespace qkv {

struct GenerateOptions {
  int max_new_tokens = 256;
  SamplerConfig sampler;
  bool use_kv_cache = true;  // false: recompute the whole window every token (the test oracle)
};

// Returns the generated ids (without the prompt). `on_token` is called for each new id and may
// return false to stop. The prompt must be non-empty and at most block_size long.
std::vector<int32_t> generate(GPT& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& opt,
                              const std::function<bool(int32_t)>& on_token = nullptr);

}  // namespace qkv

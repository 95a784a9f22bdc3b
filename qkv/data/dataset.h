// Token data for language modelling: the train/validation split and random batch windows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qkv {

struct TokenSplit {
  std::vector<int32_t> train, val;
};

// nanoGPT's split: the first 90% of the symbols train, the last 10% validate.
// `ids` is the whole corpus already tokenised.
TokenSplit split_tokens(const std::vector<int32_t>& ids, double train_fraction = 0.9);

// Fills x, y (B,T) with B random windows of T+1 tokens from `data`: x = data[i:i+T],
// y = data[i+1:i+T+1], offsets uniform in [0, len - T). Deterministic in (seed, stream).
// Throws if the data is not longer than T.
void sample_batch(const std::vector<int32_t>& data, int B, int T, uint64_t seed, uint64_t stream,
                  int32_t* x, int32_t* y, const char* what = "data");

}  // namespace qkv

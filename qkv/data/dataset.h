// Token data for language modelling: the train/validation split and random batch windows.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qkv {

struct TokenSplit {
  std::vector<int32_t> train, val;
};

// nanoGPT's split point: the byte offset of the first character past `fraction` of the
// characters of UTF-8 `text` (characters = bytes that are not continuation bytes). The text
// before it trains, the rest validates; each part is tokenised on its own.
size_t split_offset(std::string_view text, double fraction = 0.9);

// Fills x, y (B,T) with B random windows of T+1 tokens from `data`: x = data[i:i+T],
// y = data[i+1:i+T+1], offsets uniform in [0, len - T). Deterministic in (seed, stream).
// Throws if the data is not longer than T.
void sample_batch(const std::vector<int32_t>& data, int B, int T, uint64_t seed, uint64_t stream,
                  int32_t* x, int32_t* y, const char* what = "data");

}  // namespace qkv

#include "qkv/data/dataset.h"

#include "qkv/core/error.h"
#include "qkv/core/rng.h"

namespace qkv {

size_t split_offset(std::string_view text, double fraction) {
  auto is_char_start = [](char c) { return (static_cast<unsigned char>(c) & 0xc0) != 0x80; };
  size_t chars = 0;
  for (char c : text) chars += is_char_start(c) ? 1 : 0;
  const size_t k = size_t(double(chars) * fraction);
  size_t seen = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!is_char_start(text[i])) continue;
    if (seen == k) return i;
    ++seen;
  }
  return text.size();
}

void sample_batch(const std::vector<int32_t>& data, int B, int T, uint64_t seed, uint64_t stream,
                  int32_t* x, int32_t* y, const char* what) {
  QKV_CHECK(data.size() > size_t(T),
            "[data] the {} split has {} tokens; it needs more than block_size = {}", what,
            data.size(), T);
  Rng rng(seed, stream);
  const uint64_t range = data.size() - size_t(T);
  for (int b = 0; b < B; ++b) {
    const size_t i = size_t(rng.below(range));
    for (int t = 0; t < T; ++t) {
      x[size_t(b) * T + t] = data[i + t];
      y[size_t(b) * T + t] = data[i + t + 1];
    }
  }
}

}  // namespace qkv

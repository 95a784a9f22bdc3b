#include "qkv/data/dataset.h"

#include "qkv/core/error.h"
#include "qkv/core/rng.h"

namespace qkv {

TokenSplit split_tokens(const std::vector<int32_t>& ids, double train_fraction) {
  TokenSplit s;
  const size_t n = ids.size();
  const size_t cut = size_t(double(n) * train_fraction);
  s.train.assign(ids.begin(), ids.begin() + long(cut));
  s.val.assign(ids.begin() + long(cut), ids.end());
  return s;
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

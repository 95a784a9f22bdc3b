// The 90/10 split and batch windows, against nanoGPT's published split sizes.
#include "qkv/data/dataset.h"

#include <gtest/gtest.h>

#include "qkv/core/error.h"

namespace qkv {
namespace {

TEST(Dataset, SplitAsNanoGpt) {
  // nanoGPT: 1,115,394 characters -> 1,003,854 train, 111,540 val.
  std::vector<int32_t> ids(1115394, 0);
  TokenSplit s = split_tokens(ids);
  EXPECT_EQ(s.train.size(), 1003854u);
  EXPECT_EQ(s.val.size(), 111540u);
}

TEST(Dataset, WindowsAreShiftedByOneAndDeterministic) {
  std::vector<int32_t> data(100);
  for (int i = 0; i < 100; ++i) data[size_t(i)] = i;
  const int B = 8, T = 10;
  std::vector<int32_t> x(B * T), y(B * T), x2(B * T), y2(B * T);
  sample_batch(data, B, T, 42, 3, x.data(), y.data());
  sample_batch(data, B, T, 42, 3, x2.data(), y2.data());
  EXPECT_EQ(x, x2);
  for (int b = 0; b < B; ++b) {
    EXPECT_LE(x[size_t(b) * T] + T, 99);  // window fits: i + T < len
    for (int t = 0; t < T; ++t) {
      EXPECT_EQ(y[size_t(b * T + t)], x[size_t(b * T + t)] + 1);
      if (t) {
        EXPECT_EQ(x[size_t(b * T + t)], x[size_t(b * T + t - 1)] + 1);
      }
    }
  }
  sample_batch(data, B, T, 42, 4, x2.data(), y2.data());
  EXPECT_NE(x, x2);
  EXPECT_THROW(sample_batch(std::vector<int32_t>(10), 1, 10, 1, 1, x.data(), y.data()), Error);
}

}  // namespace
}  // namespace qkv

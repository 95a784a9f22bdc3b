// The 90/10 split and batch windows, against nanoGPT's published split sizes.
#include "qkv/data/dataset.h"

#include <gtest/gtest.h>

#include <string>

#include "qkv/core/error.h"

namespace qkv {
namespace {

TEST(Dataset, SplitAsNanoGpt) {
  // nanoGPT: 1,115,394 characters -> the first 1,003,854 train, 111,540 validate.
  EXPECT_EQ(split_offset(std::string(1115394, 'x')), 1003854u);
  // Characters, not bytes: "aé東😀b" has 5; half of them is 2, so the cut is before "東".
  EXPECT_EQ(split_offset("a\xc3\xa9\xe6\x9d\xb1\xf0\x9f\x98\x80"
                         "b",
                         0.5),
            3u);
  EXPECT_EQ(split_offset("", 0.9), 0u);
  EXPECT_EQ(split_offset("abc", 1.0), 3u);
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

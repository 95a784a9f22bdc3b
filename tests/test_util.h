// Helpers shared by the tests: seeded random data and comparisons that report the first
// mismatch, both values and the max difference.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/rng.h"
#include "qkv/models/gpt_config.h"

namespace qkv::test {

// A small GPT for tests (GPT-2 defaults otherwise).
inline GPTConfig tiny_config(int n_layer, int n_head, int n_embd, int block_size, int vocab_size,
                             bool bias = true) {
  GPTConfig c;
  c.n_layer = n_layer;
  c.n_head = n_head;
  c.n_embd = n_embd;
  c.block_size = block_size;
  c.vocab_size = vocab_size;
  c.bias = bias;
  return c;
}

// A test run once per CPU kernel build ("avx512", "avx2", "generic"), skipped where the CPU
// lacks it; the best build is restored afterwards.
class IsaTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!cpu::isa_supported(GetParam())) GTEST_SKIP() << GetParam() << " not on this CPU";
    cpu::set_isa(GetParam());
  }
  void TearDown() override {
    for (const char* isa : {"avx512", "avx2", "generic"})
      if (cpu::isa_supported(isa)) {
        cpu::set_isa(isa);
        break;
      }
  }
};

template <typename T = float>
std::vector<T> randn(size_t n, uint64_t seed, double stddev = 1.0) {
  Rng rng(seed, 7);
  std::vector<T> v(n);
  for (auto& x : v) x = T(rng.normal() * stddev);
  return v;
}

// Max |a-b| / max(|b|) over the whole tensor (scale-aware relative error).
template <typename A, typename B>
double rel_err(const A* a, const B* b, size_t n) {
  double md = 0, mb = 0;
  for (size_t i = 0; i < n; ++i) {
    md = std::max(md, std::abs(double(a[i]) - double(b[i])));
    mb = std::max(mb, std::abs(double(b[i])));
  }
  return mb > 0 ? md / mb : md;
}

// Elementwise |a-b| <= atol + rtol*|b|; reports the first failure.
template <typename A, typename B>
::testing::AssertionResult all_close(const A* a, const B* b, size_t n, double rtol, double atol,
                                     const std::string& what = "") {
  double maxdiff = 0;
  size_t first = n;
  for (size_t i = 0; i < n; ++i) {
    if (double(a[i]) == double(b[i])) continue;  // equal, infinities included
    double d = std::abs(double(a[i]) - double(b[i]));
    if (!(d <= atol + rtol * std::abs(double(b[i])))) {
      if (first == n) first = i;
    }
    if (!(d <= maxdiff)) maxdiff = d;
  }
  if (first == n) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": first mismatch at index " << first << ": got " << double(a[first])
         << ", expected " << double(b[first]) << "; max abs diff " << maxdiff << " over " << n
         << " elements";
}

template <typename A, typename B>
::testing::AssertionResult all_close(const std::vector<A>& a, const std::vector<B>& b, double rtol,
                                     double atol, const std::string& what = "") {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << what << ": size " << a.size() << " vs " << b.size();
  return all_close(a.data(), b.data(), a.size(), rtol, atol, what);
}

}  // namespace qkv::test

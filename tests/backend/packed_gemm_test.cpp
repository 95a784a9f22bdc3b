// Inference weights packed as bf16 or int8 (cpu::PackedMatrix) against a double reference.
// The test quantises on its own (block of 32 k per column, scale = the smallest bf16 >= amax/127)
// and checks: the packed values equal that quantisation; every weight is within half a step of
// the original; the GEMV path (M <= 4, fp32 activations) equals A @ dequantised W to fp32
// accumulation error on every ISA; the AMX path (M > 4) equals the same product with A and the
// dequantised W rounded to bf16; the fallback without AMX equals the fp32-activation product.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/backend/ref/ref.h"
#include "qkv/core/dtype.h"
#include "qkv/core/error.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

using cpu::WeightFormat;

float next_bf16_up(float s) {
  float r = bf16_to_f32(f32_to_bf16(s));
  if (r >= s) return r;
  uint16_t b = f32_to_bf16(s);
  return bf16_to_f32(uint16_t(b + 1));
}

// op(B) (K x N) dequantised by the test's own rule, as a K x N row-major matrix of doubles.
std::vector<double> reference_weights(const std::vector<float>& B, bool tb, int K, int N,
                                      WeightFormat f) {
  auto at = [&](int k, int j) { return tb ? B[size_t(j) * K + k] : B[size_t(k) * N + j]; };
  std::vector<double> W(size_t(K) * N);
  for (int j = 0; j < N; ++j)
    for (int k0 = 0; k0 < K; k0 += 32) {
      const int k1 = std::min(K, k0 + 32);
      if (f == WeightFormat::BF16) {
        for (int k = k0; k < k1; ++k) W[size_t(k) * N + j] = bf16_to_f32(f32_to_bf16(at(k, j)));
        continue;
      }
      float amax = 0;
      for (int k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(at(k, j)));
      const float s = next_bf16_up(amax / 127.0f);
      for (int k = k0; k < k1; ++k) {
        const double q = s > 0 ? std::nearbyint(double(at(k, j)) / s) : 0.0;
        EXPECT_LE(std::abs(q), 127.0);
        W[size_t(k) * N + j] = q * s;
        EXPECT_LE(std::abs(W[size_t(k) * N + j] - at(k, j)), 0.5 * s * (1 + 1e-6));
      }
    }
  return W;
}

class PackedGemm : public ::testing::TestWithParam<std::string> {
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

void check_packed(WeightFormat f, const std::string& what) {
  const std::vector<std::tuple<int, int, int>> shapes = {
      {1, 1, 1},   {1, 33, 17},  {2, 31, 16},  {3, 64, 50},   {4, 100, 130},
      {5, 32, 15}, {17, 96, 33}, {40, 70, 64}, {64, 200, 48}, {1, 768, 300}};
  uint64_t seed = 500;
  for (auto [M, K, N] : shapes)
    for (int tb = 0; tb < 2; ++tb) {
      const std::string where = what + " " + cpu::weight_format_name(f) +
                                " M=" + std::to_string(M) + " K=" + std::to_string(K) +
                                " N=" + std::to_string(N) + " tb=" + std::to_string(tb);
      auto A = test::randn(size_t(M) * K, seed++);
      auto B = test::randn(size_t(K) * N, seed++, 0.05);
      const auto W = reference_weights(B, tb, K, N, f);
      cpu::PackedMatrix P;
      cpu::pack_matrix(P, f, B.data(), tb ? K : N, tb, K, N);
      // The packed values are the reference quantisation, column by column.
      std::vector<float> col(K);
      for (int j = 0; j < N; ++j) {
        cpu::packed_column(P, j, col.data());
        for (int k = 0; k < K; ++k) ASSERT_EQ(double(col[k]), W[size_t(k) * N + j]) << where;
      }
      // The product, against double math on what the path multiplies.
      const bool amx_path = M > 4 && cpu::amx_available();
      std::vector<double> Ad(A.begin(), A.end()), Wd = W, Cr(size_t(M) * N, 0.0);
      if (amx_path) {
        for (auto& a : Ad) a = bf16_to_f32(f32_to_bf16(float(a)));
        for (auto& w : Wd) w = bf16_to_f32(f32_to_bf16(float(w)));
      }
      ref::gemm<double>(false, false, M, N, K, 1.0, Ad.data(), K, Wd.data(), N, 0.0, Cr.data(), N);
      std::vector<float> C(size_t(M) * N, -7.0f);
      cpu::gemm_packed(M, A.data(), K, P, C.data(), N);
      EXPECT_TRUE(test::all_close(C, Cr, 1e-4, 2e-6 * std::sqrt(double(K)), where));
    }
}

TEST_P(PackedGemm, Bf16) { check_packed(WeightFormat::BF16, GetParam()); }
TEST_P(PackedGemm, Int8) { check_packed(WeightFormat::Q8, GetParam()); }

TEST_P(PackedGemm, WithoutAmx) {
  const bool had = cpu::amx_available();
  cpu::set_amx(false);
  check_packed(WeightFormat::Q8, GetParam() + " no-amx");
  check_packed(WeightFormat::BF16, GetParam() + " no-amx");
  cpu::set_amx(had);
}

INSTANTIATE_TEST_SUITE_P(Isa, PackedGemm, ::testing::Values("avx512", "avx2", "generic"),
                         [](const auto& info) { return info.param; });

// Saving and loading int8 weights: unpack_q8 then pack_q8 gives the same matrix, in both
// orientations, and values of -128 (outside the symmetric range) are refused.
TEST(PackedQ8, RoundTrip) {
  for (int tb = 0; tb < 2; ++tb) {
    const int K = 70, N = 37;
    auto B = test::randn(size_t(K) * N, 9 + tb);
    cpu::PackedMatrix P, Q;
    cpu::pack_matrix(P, WeightFormat::Q8, B.data(), tb ? K : N, tb, K, N);
    const int kc = (K + 31) / 32;
    std::vector<int8_t> q(size_t(K) * N);
    std::vector<uint16_t> s(size_t(kc) * N);
    cpu::unpack_q8(P, q.data(), s.data(), tb);
    cpu::pack_q8(Q, q.data(), s.data(), tb, K, N);
    EXPECT_EQ(P.q8, Q.q8);
    EXPECT_EQ(P.scale, Q.scale);
    q[5] = -128;
    EXPECT_THROW(cpu::pack_q8(Q, q.data(), s.data(), tb, K, N), Error);
  }
}

}  // namespace
}  // namespace qkv

// Inference weights packed as bf16 or int8 (cpu::PackedMatrix) against a double reference.
// The test quantises on its own (block of 32 k per column, scale = the smallest bf16 >= amax/127)
// and checks: the packed values equal that quantisation; every weight is within half a step of
// the original; the GEMV path (M <= 4) equals A @ dequantised W to fp32 accumulation error on
// every ISA (for int8, with A quantised per 32 values as the kernel documents, re-derived here);
// for bf16 the AMX path (M > 4) rounds A to bf16 and the fallback keeps it fp32; int8 quantises
// A on every path (AMX-INT8 tiles, or the GEMV four rows at a time), so both give the product of
// the two quantised matrices, to fp32 accumulation error.
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

// Rows of A (M x K) as the int8 GEMV sees them: per chunk of 32, s = max|a| / 127 and
// q = round(a * (1 / s)) in float arithmetic; returns q * s in double.
std::vector<double> quantized_rows(const std::vector<float>& A, int M, int K) {
  std::vector<double> out(A.size());
  for (int m = 0; m < M; ++m)
    for (int k0 = 0; k0 < K; k0 += 32) {
      const int k1 = std::min(K, k0 + 32);
      float amax = 0;
      for (int k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(A[size_t(m) * K + k]));
      const float s = amax / 127.0f, inv = s > 0 ? 1.0f / s : 0.0f;
      for (int k = k0; k < k1; ++k) {
        const float q = std::nearbyint(A[size_t(m) * K + k] * inv);
        EXPECT_LE(std::abs(q), 127.0f);
        out[size_t(m) * K + k] = double(q) * double(s);
      }
    }
  return out;
}

double max_abs_in_chunk(const std::vector<float>& A, int K, size_t i) {
  const size_t row = i / size_t(K), k0 = (i % size_t(K)) / 32 * 32;
  double amax = 0;
  for (size_t k = k0; k < std::min(size_t(K), k0 + 32); ++k)
    amax = std::max(amax, double(std::fabs(A[row * size_t(K) + k])));
  return amax;
}

class PackedGemm : public test::IsaTest {};

void check_packed(WeightFormat f, const std::string& what) {
  const std::vector<std::tuple<int, int, int>> shapes = {
      {1, 1, 1},
      {1, 33, 17},
      {2, 31, 16},
      {3, 64, 50},
      {4, 100, 130},
      {5, 32, 15},
      {17, 96, 33},
      {40, 70, 64},
      {64, 200, 48},
      {1, 768, 300},
      // 32 panels: one row walks eight panels at once (bf16) on 1 and 2 threads.
      {1, 70, 512},
      {2, 70, 512}};
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
      // Prefill-sized bf16 products on AMX or AVX512-BF16 round the activations to bf16 too.
      const bool bf16_units = M > 4 && (cpu::amx_available() || cpu::avx512bf16_available());
      std::vector<double> Ad(A.begin(), A.end()), Wd = W, Cr(size_t(M) * N, 0.0);
      if (f == WeightFormat::Q8) {
        Ad = quantized_rows(A, M, K);          // int8 products quantise the activations too
        for (size_t i = 0; i < A.size(); ++i)  // within half a step of the original
          EXPECT_LE(std::abs(Ad[i] - A[i]), 0.51 * max_abs_in_chunk(A, K, i) / 127.0) << where;
      } else if (bf16_units) {
        for (auto& a : Ad) a = bf16_to_f32(f32_to_bf16(float(a)));
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
  const bool had = cpu::amx_available(), had_dp = cpu::avx512bf16_available();
  cpu::set_amx(false);
  check_packed(WeightFormat::Q8, GetParam() + " no-amx");
  check_packed(WeightFormat::BF16, GetParam() + " no-amx " + cpu::bf16_engine());
  cpu::set_avx512bf16(false);  // and without AVX512-BF16: fp32 products on widened slabs
  check_packed(WeightFormat::BF16, GetParam() + " no-amx no-avx512bf16");
  cpu::set_amx(had);
  cpu::set_avx512bf16(had_dp);
}

// int8 is one function whatever the number of rows: each row of a prefill-sized product (AMX-INT8
// tiles, or the GEMV four rows at a time) equals, bit for bit, that row alone (the decode GEMV),
// so a KV-cached decode and a recomputation agree exactly.
TEST_P(PackedGemm, Int8RowsEqualAloneBitForBit) {
  const int M = 37, K = 200, N = 70;
  auto A = test::randn(size_t(M) * K, 77);
  auto B = test::randn(size_t(K) * N, 78, 0.05);
  cpu::PackedMatrix P;
  cpu::pack_matrix(P, WeightFormat::Q8, B.data(), N, false, K, N);
  std::vector<float> all(size_t(M) * N), one(static_cast<size_t>(N));
  cpu::gemm_packed(M, A.data(), K, P, all.data(), N);
  for (int i = 0; i < M; ++i) {
    cpu::gemm_packed(1, A.data() + size_t(i) * K, K, P, one.data(), N);
    ASSERT_EQ(0, std::memcmp(one.data(), all.data() + size_t(i) * N, sizeof(float) * N))
        << GetParam() << " row " << i;
  }
}

// Bias (and GELU) passed to the product equal the product followed by the separate epilogue,
// bit for bit: decode applies them to each panel inside the GEMV's region, prefill after.
TEST_P(PackedGemm, EpilogueEqualsSeparatePass) {
  const int K = 96, N = 200;  // 13 panels: four side by side, and single ones
  uint64_t seed = 900;
  for (WeightFormat f : {WeightFormat::BF16, WeightFormat::Q8})
    for (int M : {1, 3, 9})
      for (bool gelu : {false, true}) {
        const std::string where = GetParam() + " " + cpu::weight_format_name(f) +
                                  " M=" + std::to_string(M) + (gelu ? " bias+gelu" : " bias");
        auto A = test::randn(size_t(M) * K, seed++);
        auto B = test::randn(size_t(K) * N, seed++, 0.05);
        auto bias = test::randn(size_t(N), seed++);
        cpu::PackedMatrix P;
        cpu::pack_matrix(P, f, B.data(), N, false, K, N);
        std::vector<float> c1(size_t(M) * N), c2(c1.size()), a1(c1.size()), a2(c1.size());
        cpu::GemmEpilogue ep;
        ep.bias = bias.data();
        ep.ld_act = N;
        ep.act = gelu ? a1.data() : nullptr;
        cpu::gemm_packed(M, A.data(), K, P, c1.data(), N, &ep);
        cpu::gemm_packed(M, A.data(), K, P, c2.data(), N);
        ep.act = gelu ? a2.data() : nullptr;
        cpu::gemm_epilogue(ep, c2.data(), N, M, N);
        EXPECT_EQ(0, std::memcmp(c1.data(), c2.data(), sizeof(float) * c1.size())) << where;
        if (gelu) {
          EXPECT_EQ(0, std::memcmp(a1.data(), a2.data(), sizeof(float) * a1.size())) << where;
        }
        // And the epilogue did something: the bias is in the output.
        std::vector<float> c3(c1.size());
        cpu::gemm_packed(M, A.data(), K, P, c3.data(), N);
        for (int j = 0; j < N; ++j) ASSERT_EQ(c1[j], c3[j] + bias[j]) << where << " column " << j;
      }
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

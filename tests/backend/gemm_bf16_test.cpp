// bf16 GEMM (AMX and AVX512-BF16 where available, and the fallback) against a double-precision
// reference on the same bf16-rounded inputs: products of bf16 values are exact in fp32, so only the
// fp32 accumulation differs (f32-level tolerance), plus the bound against the unrounded inputs.
#include <gtest/gtest.h>

#include <tuple>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/backend/ref/ref.h"
#include "qkv/core/dtype.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

// One product on random operands (seeds from seed on) against the double reference on the
// same bf16-rounded inputs, and against the unrounded ones within bf16's rounding.
void check_case(const std::string& path, bool ta, bool tb, int M, int N, int K, float alpha,
                float beta, uint64_t& seed) {
  auto A = test::randn(size_t(M) * K, seed++), B = test::randn(size_t(K) * N, seed++);
  auto C0 = test::randn(size_t(M) * N, seed++);
  std::vector<double> Ar(A.size()), Br(B.size()), Cr(C0.begin(), C0.end());
  for (size_t i = 0; i < A.size(); ++i) Ar[i] = bf16_to_f32(f32_to_bf16(A[i]));
  for (size_t i = 0; i < B.size(); ++i) Br[i] = bf16_to_f32(f32_to_bf16(B[i]));
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  ref::gemm<double>(ta, tb, M, N, K, alpha, Ar.data(), lda, Br.data(), ldb, beta, Cr.data(), N);
  auto C = C0;
  cpu::gemm_bf16(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), N);
  const std::string where = path + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
                            " K=" + std::to_string(K) + " ta=" + std::to_string(ta) +
                            " tb=" + std::to_string(tb) + " beta=" + std::to_string(beta);
  EXPECT_TRUE(test::all_close(C, Cr, 1e-4, 2e-5 * std::sqrt(double(K)), where));
  // Against the unrounded inputs: within bf16's rounding (2^-8 relative per operand).
  std::vector<float> Cf = C0;
  ref::gemm<float>(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, Cf.data(), N);
  EXPECT_LE(test::rel_err(C.data(), Cf.data(), C.size()), 0.05) << where;
}

void check_bf16_gemm(const std::string& path) {
  // 300 x 96 x 2100 (66 chunks of 32) is cut into two K blocks that C accumulates; alpha 1
  // with beta 0 or 1 stores full blocks straight from the tiles (beta 1 starts from C).
  const std::vector<std::tuple<int, int, int>> shapes = {
      {1, 1, 1},     {3, 5, 7},      {17, 33, 31},  {32, 32, 32},
      {37, 101, 96}, {130, 70, 333}, {64, 288, 160}};
  std::vector<std::tuple<int, int, int, float, float>> cases;
  for (auto [M, N, K] : shapes)
    for (float beta : {0.0f, 0.5f}) cases.emplace_back(M, N, K, 1.5f, beta);
  for (auto [M, N, K] : {std::tuple{64, 288, 160}, {130, 70, 333}, {300, 96, 2100}})
    for (float beta : {0.0f, 1.0f}) cases.emplace_back(M, N, K, 1.0f, beta);
  cases.emplace_back(300, 96, 2100, 1.5f, 0.5f);  // K blocks through store_block
  uint64_t seed = 100;
  for (auto [M, N, K, alpha, beta] : cases)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) check_case(path, ta, tb, M, N, K, alpha, beta, seed);
  // The epilogues (the MLP's bias + GELU, GELU's derivative) on the bf16 product equal the
  // same passes run after it.
  for (auto [M, N, K] : shapes) {
    auto A = test::randn(size_t(M) * K, seed++), B = test::randn(size_t(K) * N, seed++);
    auto bias = test::randn(size_t(N), seed++), pre = test::randn(size_t(M) * N, seed++);
    std::vector<float> c1(size_t(M) * N), act1(c1.size()), c2(c1.size()), act2(c1.size());
    cpu::GemmEpilogue ep;
    ep.bias = bias.data();
    ep.act = act1.data();
    ep.ld_act = N;
    cpu::gemm_bf16(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, c1.data(), N, &ep);
    cpu::gemm_bf16(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, c2.data(), N);
    cpu::bias_forward(c2.data(), bias.data(), M, N);
    cpu::gelu_forward(act2.data(), c2.data(), int64_t(M) * N);
    EXPECT_TRUE(test::all_close(c1, c2, 0, 0, path + " bias epilogue"));
    EXPECT_TRUE(test::all_close(act1, act2, 0, 0, path + " gelu epilogue"));
    cpu::GemmEpilogue eg;
    eg.kind = cpu::GemmEpilogue::Kind::kGeluGrad;
    eg.pre = pre.data();
    eg.ld_pre = N;
    std::vector<float> d1(c1.size()), d2(c1.size(), 0.0f), t(c1.size());
    cpu::gemm_bf16(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, d1.data(), N, &eg);
    cpu::gemm_bf16(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, t.data(), N);
    cpu::gelu_backward(d2.data(), pre.data(), t.data(), int64_t(M) * N);
    EXPECT_TRUE(test::all_close(d1, d2, 0, 0, path + " gelu grad epilogue"));
  }
}

// Runs check with only the chosen engines on, then restores the machine's choice.
template <class F>
void with_engines(bool amx, bool dpbf16, F check) {
  const bool had_amx = cpu::amx_available(), had_dp = cpu::avx512bf16_available();
  cpu::set_amx(amx);
  cpu::set_avx512bf16(dpbf16);
  check();
  cpu::set_amx(had_amx);
  cpu::set_avx512bf16(had_dp);
}

TEST(GemmBf16, Amx) {
  if (!cpu::amx_available())
    GTEST_SKIP() << "no AMX-BF16 on this CPU (the other engines' tests cover gemm_bf16)";
  with_engines(true, false, [] {
    ASSERT_STREQ(cpu::bf16_engine(), "AMX");
    check_bf16_gemm("amx");
  });
}

TEST(GemmBf16, Avx512Bf16) {
  if (!cpu::avx512bf16_available())
    GTEST_SKIP() << "no AVX512-BF16 on this CPU (the fallback test covers gemm_bf16)";
  with_engines(false, true, [] {
    ASSERT_STREQ(cpu::bf16_engine(), "AVX512-BF16");
    check_bf16_gemm("avx512bf16");
  });
}

// Shapes that reach the AVX512-BF16 kernel's K blocks (K over 768: near-equal blocks that C
// accumulates), several column blocks of 384 with a ragged last one, balanced blocks (2100
// columns: six of 352 or fewer), and row chunks (one column block for many rows), against the
// same double reference.
TEST(GemmBf16, Avx512Bf16Blocking) {
  if (!cpu::avx512bf16_available()) GTEST_SKIP() << "no AVX512-BF16 on this CPU";
  with_engines(false, true, [] {
    uint64_t seed = 900;
    for (auto [M, N, K] :
         {std::tuple{50, 1000, 1601}, {301, 40, 770}, {13, 800, 64}, {20, 2100, 100}})
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) check_case("blocking", ta, tb, M, N, K, 0.5f, 1.0f, seed);
  });
}

TEST(GemmBf16, Fallback) {
  with_engines(false, false, [] {
    ASSERT_STREQ(cpu::bf16_engine(), "fp32 FMA");
    check_bf16_gemm("fallback");
  });
}

}  // namespace
}  // namespace qkv

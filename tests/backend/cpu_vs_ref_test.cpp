// Every CPU kernel, in every instruction-set build this machine runs, against the scalar
// reference on seeded random inputs of awkward shapes (1, primes, not multiples of the vector
// width). f32 tolerances: ~1e-5 relative.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/backend/ref/ref.h"
#include "qkv/core/parallel.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

using test::all_close;
using test::randn;

class CpuVsRef : public test::IsaTest {};

TEST_P(CpuVsRef, Gemm) {
  const std::vector<std::tuple<int, int, int>> shapes = {
      {1, 1, 1},
      {3, 5, 7},
      {13, 17, 19},
      {4, 50, 33},
      {37, 101, 96},
      {200, 130, 777},
      {97, 2304, 64},
      // At least 4 row blocks: K up to 768 is one block.
      {400, 70, 700},
      // ... and K beyond 768: equal K blocks (544, 544, 512) for op(A) row-major, KC blocks
      // for a transposed A read in place (the next row block prefetched).
      {400, 70, 1600},
      // Decode's few rows (M <= 4): rows of B read as several streams, with remainders.
      {3, 77, 150},
      {1, 301, 768}};
  uint64_t seed = 1;
  for (auto [M, N, K] : shapes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.0f, 1.0f}) {
          auto A = randn(size_t(M) * K, seed++);
          auto B = randn(size_t(K) * N, seed++);
          auto C0 = randn(size_t(M) * N, seed++);
          auto c_ref = C0, c_cpu = C0;
          int64_t lda = ta ? M : K, ldb = tb ? K : N;
          ref::gemm<float>(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, beta, c_ref.data(),
                           N);
          cpu::gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, beta, c_cpu.data(), N);
          EXPECT_TRUE(all_close(c_cpu, c_ref, 1e-4, 2e-5 * std::sqrt(double(K)),
                                "gemm M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                    " K=" + std::to_string(K) + " ta=" + std::to_string(ta) +
                                    " tb=" + std::to_string(tb)));
        }
}

// The blockings that only large products take: more than one block of columns (op(A) packed
// once for all of them; one K block up to K = 1024, KC blocks beyond), many row blocks rounded
// to the thread count, and a C of over 4M entries whose K (> KC = 384) stays one block. As the
// LM head (B^T) and its weight gradient (A^T, read in place but for a short last micro-panel)
// meet them; and a weight gradient of few rows (split K, A^T in place). With many rows and
// columns a row-major A is read in place, but for a short last micro-panel. The full reference
// would take seconds per product, so 3000 sampled entries of C (every row block and column
// panel is hit) are recomputed as dot products in double.
TEST_P(CpuVsRef, GemmLargeBlockings) {
  const std::vector<std::tuple<int, int, int, bool, bool>> cases = {
      {450, 2100, 40, false, true},
      {100, 2100, 400, true, true},
      {1100, 3850, 400, false, true},
      {3850, 600, 1100, true, false},
      {61, 2100, 1100, false, false},
      {130, 300, 768, true, false},
      // Many rows and columns, row-major A read in place (a short last micro-panel packed),
      // K in three blocks.
      {500, 2100, 1100, false, false},
      // Many rows, a C of over 4M entries and K between 768 and 1024: one K block, not the
      // equal blocks of up to 768 that a smaller C of many rows takes.
      {2100, 2000, 1000, false, true},
      // A transposed A whose k rows are 4 KiB apart (lda = M = 1024) and K beyond 768: equal K
      // blocks (512, 488), as a row-major A takes, not KC blocks.
      {1024, 300, 1000, true, false}};
  uint64_t seed = 100;
  for (auto [M, N, K, ta, tb] : cases) {
    auto A = randn(size_t(M) * K, seed++);
    auto B = randn(size_t(K) * N, seed++);
    auto C = randn(size_t(M) * N, seed++);
    const auto C0 = C;
    const int64_t lda = ta ? M : K, ldb = tb ? K : N;
    cpu::gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f, C.data(), N);
    Rng rng(seed++, 0);
    int bad = 0;
    for (int s = 0; s < 3000; ++s) {
      const int i = int(rng.below(M)), j = int(rng.below(N));
      double dot = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        const double a = ta ? A[size_t(k) * lda + i] : A[size_t(i) * lda + k];
        const double b = tb ? B[size_t(j) * ldb + k] : B[size_t(k) * ldb + j];
        dot += a * b;
        mag += std::abs(a * b);
      }
      const double want = C0[size_t(i) * N + j] + 0.5 * dot;
      const double got = C[size_t(i) * N + j];
      if (std::abs(got - want) > 1e-5 * (mag + std::abs(want)) + 1e-6 && bad++ < 5)
        ADD_FAILURE() << "M=" << M << " N=" << N << " K=" << K << " C[" << i << "," << j
                      << "] = " << got << ", want " << want;
    }
    EXPECT_EQ(bad, 0);
  }
}

// A row-major A (or the split-K path's row-major B) with a leading dimension of a multiple of
// 1024 floats is packed, not read in place (its rows would share one L1 set): the row-block,
// split-K (few rows, K in two blocks on two threads) and many-column paths, against the
// reference with the same strides.
TEST_P(CpuVsRef, GemmAStrideOfWholePages) {
  // (M, N, K, lda, ldb of a row-major B; 0: N)
  const std::vector<std::tuple<int, int, int, int, int>> cases = {{400, 300, 700, 1024, 0},
                                                                  {100, 200, 700, 1024, 0},
                                                                  {400, 2100, 100, 2048, 0},
                                                                  {37, 70, 1500, 3072, 0},
                                                                  {100, 200, 700, 700, 1024}};
  uint64_t seed = 300;
  for (auto [M, N, K, lda, ldb_rm] : cases)
    for (int tb = 0; tb < 2; ++tb) {
      const int64_t ldb = tb ? K : ldb_rm ? ldb_rm : N;
      auto A = randn(size_t(M) * lda, seed++);
      auto B = randn(size_t(tb ? N : K) * ldb, seed++);
      auto C0 = randn(size_t(M) * N, seed++);
      auto c_ref = C0, c_cpu = C0;
      ref::gemm<float>(false, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f, c_ref.data(),
                       N);
      cpu::gemm(false, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f, c_cpu.data(), N);
      EXPECT_TRUE(all_close(c_cpu, c_ref, 1e-4, 2e-5 * std::sqrt(double(K)),
                            "gemm M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                " K=" + std::to_string(K) + " lda=" + std::to_string(lda)));
    }
}

// The GEMM's results do not depend on the thread count (docs/architecture.md): row blocks,
// column shares, and the split-K weight gradients (each thread one K block, summed in block
// order) all give one thread's bits.
TEST_P(CpuVsRef, GemmSameBitsForAnyThreadCount) {
  const std::vector<std::tuple<int, int, int, bool, bool>> cases = {
      {128, 384, 768, true, false}, {130, 300, 700, false, true},  {65, 128, 768, true, false},
      {768, 128, 512, false, true}, {100, 2100, 400, true, true},  {97, 64, 1000, false, false},
      {300, 200, 700, true, true},  {400, 300, 1600, false, true}, {400, 300, 1600, true, false},
      {1024, 70, 1000, true, false}};
  const int threads = num_threads();
  uint64_t seed = 200;
  for (auto [M, N, K, ta, tb] : cases) {
    auto A = randn(size_t(M) * K, seed++);
    auto B = randn(size_t(K) * N, seed++);
    const auto C0 = randn(size_t(M) * N, seed++);
    const int64_t lda = ta ? M : K, ldb = tb ? K : N;
    std::vector<std::vector<float>> out;
    for (int t : {1, 2, 3}) {
      set_num_threads(t);
      auto c = C0;
      cpu::gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f, c.data(), N);
      out.push_back(c);
    }
    set_num_threads(threads);
    for (size_t t = 1; t < out.size(); ++t)
      EXPECT_EQ(0, std::memcmp(out[0].data(), out[t].data(), sizeof(float) * out[0].size()))
          << "M=" << M << " N=" << N << " K=" << K << ": " << t + 1 << " threads differ from 1";
  }
}

TEST_P(CpuVsRef, EncoderForwardBackward) {
  for (auto [B, T, C, V] :
       std::vector<std::tuple<int, int, int, int>>{{1, 1, 1, 3}, {2, 7, 37, 11}, {3, 13, 96, 5}}) {
    auto wte = randn(size_t(V) * C, 1), wpe = randn(size_t(T) * C, 2);
    std::vector<int32_t> ids(size_t(B) * T);
    Rng rng(3, 0);
    for (auto& x : ids) x = int32_t(rng.below(V));
    std::vector<float> o1(size_t(B) * T * C), o2(o1.size());
    ref::encoder_forward(o1.data(), ids.data(), wte.data(), wpe.data(), B, T, C);
    cpu::encoder_forward(o2.data(), ids.data(), wte.data(), wpe.data(), B, T, C);
    EXPECT_TRUE(all_close(o2, o1, 1e-6, 1e-6, "encoder_forward"));
    auto dout = randn(o1.size(), 4);
    std::vector<float> dwte1(wte.size()), dwpe1(wpe.size()), dwte2(wte.size()), dwpe2(wpe.size());
    ref::encoder_backward(dwte1.data(), dwpe1.data(), dout.data(), ids.data(), B, T, C);
    cpu::encoder_backward(dwte2.data(), dwpe2.data(), dout.data(), ids.data(), B, T, C);
    EXPECT_TRUE(all_close(dwte2, dwte1, 1e-5, 1e-5, "dwte"));
    EXPECT_TRUE(all_close(dwpe2, dwpe1, 1e-5, 1e-5, "dwpe"));
  }
}

TEST_P(CpuVsRef, LayerNorm) {
  for (auto [N, C] :
       std::vector<std::pair<int, int>>{{1, 1}, {3, 7}, {17, 96}, {5, 768}, {2, 33}}) {
    for (bool with_bias : {true, false}) {
      auto x = randn(size_t(N) * C, 11, 2.0), w = randn(size_t(C), 12), bb = randn(size_t(C), 13);
      const float* bias = with_bias ? bb.data() : nullptr;
      std::vector<float> o1(x.size()), o2(x.size()), m1(N), m2(N), r1(N), r2(N);
      ref::layernorm_forward(o1.data(), m1.data(), r1.data(), x.data(), w.data(), bias, N, C,
                             1e-5f);
      cpu::layernorm_forward(o2.data(), m2.data(), r2.data(), x.data(), w.data(), bias, N, C,
                             1e-5f);
      EXPECT_TRUE(all_close(o2, o1, 1e-4, 1e-5, "layernorm out"));
      EXPECT_TRUE(all_close(r2, r1, 1e-4, 1e-5, "layernorm rstd"));
      auto dy = randn(x.size(), 14);
      auto dx1 = randn(x.size(), 15), dx2 = dx1;  // accumulate onto existing values
      std::vector<float> dw1(C), dw2(C), db1(C), db2(C);
      ref::layernorm_backward(dx1.data(), dw1.data(), with_bias ? db1.data() : nullptr, dy.data(),
                              x.data(), w.data(), m1.data(), r1.data(), N, C);
      cpu::layernorm_backward(dx2.data(), dw2.data(), with_bias ? db2.data() : nullptr, dy.data(),
                              x.data(), w.data(), m1.data(), r1.data(), N, C);
      EXPECT_TRUE(all_close(dx2, dx1, 1e-4, 1e-4, "layernorm dx"));
      EXPECT_TRUE(all_close(dw2, dw1, 1e-4, 1e-4, "layernorm dw"));
      EXPECT_TRUE(all_close(db2, db1, 1e-4, 1e-4, "layernorm db"));
    }
  }
}

// The residual add fused with the norm after it: against the reference add then norm, and
// bit for bit against the kernels' own two passes (the fused one must not change a bit).
TEST_P(CpuVsRef, ResidualNorm) {
  for (auto [N, C] : std::vector<std::pair<int, int>>{{1, 1}, {3, 7}, {17, 96}, {5, 768}}) {
    auto x = randn(size_t(N) * C, 61, 2.0), add = randn(x.size(), 62), w = randn(size_t(C), 63),
         bb = randn(size_t(C), 64);
    for (bool rms : {false, true}) {
      for (bool with_bias : {true, false}) {
        if (rms && with_bias) continue;  // RMSNorm has no bias
        const float* bias = with_bias ? bb.data() : nullptr;
        const std::string what = std::string(rms ? "rmsnorm" : "layernorm") +
                                 (with_bias ? "+bias" : "") + " N=" + std::to_string(N) +
                                 " C=" + std::to_string(C);
        // Reference: sum, then norm.
        std::vector<float> sum1(x.size()), o1(x.size()), m1(N), r1(N);
        ref::residual_forward(sum1.data(), x.data(), add.data(), int64_t(x.size()));
        if (rms)
          ref::rmsnorm_forward(o1.data(), r1.data(), sum1.data(), w.data(), N, C, 1e-5f);
        else
          ref::layernorm_forward(o1.data(), m1.data(), r1.data(), sum1.data(), w.data(), bias, N, C,
                                 1e-5f);
        // The kernels' two passes.
        std::vector<float> sum2 = x, o2(x.size()), m2(N), r2(N);
        cpu::residual_forward(sum2.data(), sum2.data(), add.data(), int64_t(x.size()));
        if (rms)
          cpu::rmsnorm_forward(o2.data(), r2.data(), sum2.data(), w.data(), N, C, 1e-5f);
        else
          cpu::layernorm_forward(o2.data(), m2.data(), r2.data(), sum2.data(), w.data(), bias, N, C,
                                 1e-5f);
        // Fused.
        std::vector<float> sum3 = x, o3(x.size()), m3(N), r3(N);
        if (rms)
          cpu::residual_rmsnorm_forward(sum3.data(), add.data(), o3.data(), r3.data(), w.data(), N,
                                        C, 1e-5f);
        else
          cpu::residual_layernorm_forward(sum3.data(), add.data(), o3.data(), m3.data(), r3.data(),
                                          w.data(), bias, N, C, 1e-5f);
        EXPECT_TRUE(all_close(sum3, sum1, 0, 0, what + " sum vs ref"));
        EXPECT_TRUE(all_close(o3, o1, 1e-4, 1e-5, what + " out vs ref"));
        EXPECT_TRUE(all_close(r3, r1, 1e-4, 1e-5, what + " rstd vs ref"));
        EXPECT_TRUE(all_close(sum3, sum2, 0, 0, what + " sum vs two passes"));
        EXPECT_TRUE(all_close(o3, o2, 0, 0, what + " out vs two passes"));
        EXPECT_TRUE(all_close(r3, r2, 0, 0, what + " rstd vs two passes"));
        if (!rms) {
          EXPECT_TRUE(all_close(m3, m2, 0, 0, what + " mean vs two passes"));
        }
      }
    }
  }
}

TEST_P(CpuVsRef, RmsNormAndRelu) {
  for (auto [N, C] : std::vector<std::pair<int, int>>{{1, 1}, {7, 33}, {64, 768}}) {
    auto x = randn(size_t(N) * C, 51, 2.0), w = randn(size_t(C), 52), dy = randn(size_t(N) * C, 53);
    std::vector<float> o1(x.size()), o2(x.size()), r1(static_cast<size_t>(N)), r2(r1);
    ref::rmsnorm_forward(o1.data(), r1.data(), x.data(), w.data(), N, C, 1e-5f);
    cpu::rmsnorm_forward(o2.data(), r2.data(), x.data(), w.data(), N, C, 1e-5f);
    EXPECT_TRUE(all_close(o2, o1, 1e-5, 1e-6, "rmsnorm out"));
    EXPECT_TRUE(all_close(r2, r1, 1e-5, 1e-6, "rmsnorm rstd"));
    auto dx1 = randn(x.size(), 54), dx2 = dx1;  // accumulated into
    std::vector<float> dw1(static_cast<size_t>(C), 0.5f), dw2 = dw1;
    ref::rmsnorm_backward(dx1.data(), dw1.data(), dy.data(), x.data(), w.data(), r1.data(), N, C);
    cpu::rmsnorm_backward(dx2.data(), dw2.data(), dy.data(), x.data(), w.data(), r1.data(), N, C);
    EXPECT_TRUE(all_close(dx2, dx1, 1e-4, 1e-5, "rmsnorm dx"));
    EXPECT_TRUE(all_close(dw2, dw1, 1e-4, 1e-4, "rmsnorm dw"));
    std::vector<float> a1(x.size()), a2(x.size());
    ref::relu_forward(a1.data(), x.data(), int64_t(x.size()));
    cpu::relu_forward(a2.data(), x.data(), int64_t(x.size()));
    EXPECT_TRUE(all_close(a2, a1, 0, 0, "relu"));
    auto g1 = randn(x.size(), 55), g2 = g1;
    ref::relu_backward(g1.data(), x.data(), dy.data(), int64_t(x.size()));
    cpu::relu_backward(g2.data(), x.data(), dy.data(), int64_t(x.size()));
    EXPECT_TRUE(all_close(g2, g1, 0, 0, "relu backward"));
  }
}

TEST_P(CpuVsRef, SwigluAndRope) {
  for (auto [N, H] : std::vector<std::pair<int, int>>{{1, 1}, {7, 37}, {64, 512}}) {
    auto x = randn(size_t(N) * 2 * H, 61, 3.0), dy = randn(size_t(N) * H, 62);
    std::vector<float> o1(size_t(N) * H), o2(o1.size());
    ref::swiglu_forward(o1.data(), x.data(), N, H);
    cpu::swiglu_forward(o2.data(), x.data(), N, H);
    EXPECT_TRUE(all_close(o2, o1, 1e-5, 1e-6, "swiglu"));
    auto g1 = randn(x.size(), 63), g2 = g1;  // accumulated into
    ref::swiglu_backward(g1.data(), x.data(), dy.data(), N, H);
    cpu::swiglu_backward(g2.data(), x.data(), dy.data(), N, H);
    EXPECT_TRUE(all_close(g2, g1, 1e-5, 1e-5, "swiglu backward"));
  }
  // Rotary: 3 sequences of 50 rows at offset 1000, 3 heads of 16 inside rows of 80 (the rest
  // untouched), both directions; and inverse(forward(x)) == x.
  const int rows = 150, T = 50, heads = 3, HS = 16, stride = 80;
  for (bool inverse : {false, true}) {
    auto x1 = randn(size_t(rows) * stride, 64), x2 = x1, x0 = x1;
    ref::rope_apply(x1.data(), rows, T, 1000, stride, heads, HS, 10000.0f, inverse);
    cpu::rope_apply(x2.data(), rows, T, 1000, stride, heads, HS, 10000.0f, inverse);
    EXPECT_TRUE(all_close(x2, x1, 1e-4, 1e-5, inverse ? "rope inverse" : "rope"));
    for (int r = 0; r < rows; ++r)
      for (int c = heads * HS; c < stride; ++c)
        ASSERT_EQ(x2[size_t(r) * stride + size_t(c)], x0[size_t(r) * stride + size_t(c)]);
    cpu::rope_apply(x2.data(), rows, T, 1000, stride, heads, HS, 10000.0f, !inverse);
    EXPECT_TRUE(all_close(x2, x0, 1e-5, 1e-5, "rope round trip"));
  }
}

// GELU and its derivative where the exponential saturates or vanishes (|x| up to 1e30, the
// zero of the derivative near -0.75, the vector tail): finite, and as the reference.
TEST_P(CpuVsRef, GeluExtremes) {
  std::vector<float> x = {-1e30f, -1e6f,       -100.0f, -30.0f, -20.0f, -9.0f, -5.5f,
                          -3.0f,  -0.7517916f, -1e-20f, 0.0f,   1e-20f, 0.5f,  3.0f,
                          5.5f,   9.0f,        20.0f,   30.0f,  100.0f, 1e6f,  1e30f};
  const size_t n = x.size();
  std::vector<float> g1(n), g2(n), dy(n, 1.0f), d1(n, 0.0f), d2(n, 0.0f);
  ref::gelu_forward(g1.data(), x.data(), int64_t(n));
  cpu::gelu_forward(g2.data(), x.data(), int64_t(n));
  ref::gelu_backward(d1.data(), x.data(), dy.data(), int64_t(n));
  cpu::gelu_backward(d2.data(), x.data(), dy.data(), int64_t(n));
  for (size_t i = 0; i < n; ++i) {
    ASSERT_TRUE(std::isfinite(g2[i]) && std::isfinite(d2[i])) << "x = " << x[i];
    EXPECT_NEAR(g2[i], g1[i], 1e-6 + 1e-6 * std::abs(g1[i])) << "gelu at x = " << x[i];
    EXPECT_NEAR(d2[i], d1[i], 1e-6) << "gelu' at x = " << x[i];
  }
}

TEST_P(CpuVsRef, BiasGeluResidual) {
  for (auto [N, C] : std::vector<std::pair<int, int>>{{1, 1}, {3, 7}, {17, 97}, {4, 3072}}) {
    size_t n = size_t(N) * C;
    auto x = randn(n, 21, 3.0), b = randn(size_t(C), 22);
    auto o1 = x, o2 = x;
    ref::bias_forward(o1.data(), b.data(), N, C);
    cpu::bias_forward(o2.data(), b.data(), N, C);
    EXPECT_TRUE(all_close(o2, o1, 1e-6, 1e-6, "bias_forward"));
    std::vector<float> db1(C), db2(C);
    ref::bias_backward(db1.data(), x.data(), N, C);
    cpu::bias_backward(db2.data(), x.data(), N, C);
    EXPECT_TRUE(all_close(db2, db1, 1e-5, 1e-5, "bias_backward"));
    std::vector<float> g1(n), g2(n);
    ref::gelu_forward(g1.data(), x.data(), int64_t(n));
    cpu::gelu_forward(g2.data(), x.data(), int64_t(n));
    EXPECT_TRUE(all_close(g2, g1, 1e-5, 1e-6, "gelu_forward"));
    auto dy = randn(n, 23);
    auto d1 = randn(n, 24), d2 = d1;
    ref::gelu_backward(d1.data(), x.data(), dy.data(), int64_t(n));
    cpu::gelu_backward(d2.data(), x.data(), dy.data(), int64_t(n));
    EXPECT_TRUE(all_close(d2, d1, 1e-5, 1e-5, "gelu_backward"));
    ref::residual_forward(o1.data(), x.data(), dy.data(), int64_t(n));
    cpu::residual_forward(o2.data(), x.data(), dy.data(), int64_t(n));
    EXPECT_TRUE(all_close(o2, o1, 0, 0, "residual"));
  }
}

// The GEMM epilogues (the MLP's bias + GELU, and GELU's derivative) against the reference
// kernels run one after another, and equal, value for value, to the CPU's own separate passes:
// a fused layer computes what the unfused one did. Shapes cover the small-M path, row blocks,
// column shares, two K blocks, split K and a ragged last tile.
TEST_P(CpuVsRef, GemmEpilogues) {
  const std::vector<std::tuple<int, int, int>> shapes = {
      {3, 50, 40}, {37, 101, 96}, {200, 130, 777}, {130, 300, 700}, {768, 512, 128}};
  uint64_t seed = 300;
  for (auto [M, N, K] : shapes) {
    const std::string at =
        "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K);
    auto A = randn(size_t(M) * K, seed++), B = randn(size_t(K) * N, seed++);
    auto bias = randn(size_t(N), seed++), pre = randn(size_t(M) * N, seed++, 2.0);
    // Forward: pre-activation and GELU in one call.
    std::vector<float> c_fused(size_t(M) * N), act_fused(c_fused.size());
    cpu::GemmEpilogue ep;
    ep.kind = cpu::GemmEpilogue::Kind::kBiasGelu;
    ep.bias = bias.data();
    ep.act = act_fused.data();
    ep.ld_act = N;
    cpu::gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, c_fused.data(), N, &ep);
    std::vector<float> c_sep(c_fused.size()), act_sep(c_fused.size());
    cpu::gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, c_sep.data(), N);
    cpu::bias_forward(c_sep.data(), bias.data(), M, N);
    cpu::gelu_forward(act_sep.data(), c_sep.data(), int64_t(M) * N);
    std::vector<float> c_ref(c_fused.size()), act_ref(c_fused.size());
    ref::gemm<float>(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, c_ref.data(), N);
    ref::bias_forward(c_ref.data(), bias.data(), M, N);
    ref::gelu_forward(act_ref.data(), c_ref.data(), int64_t(M) * N);
    EXPECT_TRUE(all_close(c_fused, c_ref, 1e-4, 2e-5 * std::sqrt(double(K)), "bias " + at));
    EXPECT_TRUE(all_close(act_fused, act_ref, 1e-4, 2e-5 * std::sqrt(double(K)), "gelu " + at));
    EXPECT_TRUE(all_close(c_fused, c_sep, 0, 0, "bias fused == separate " + at));
    EXPECT_TRUE(all_close(act_fused, act_sep, 0, 0, "gelu fused == separate " + at));
    // Backward: dpre = (A B) * gelu'(pre), B transposed as the layer's weight.
    cpu::GemmEpilogue eg;
    eg.kind = cpu::GemmEpilogue::Kind::kGeluGrad;
    eg.pre = pre.data();
    eg.ld_pre = N;
    std::vector<float> d_fused(c_fused.size());
    auto Bt = randn(size_t(K) * N, seed++);
    cpu::gemm(false, true, M, N, K, 1.0f, A.data(), K, Bt.data(), K, 0.0f, d_fused.data(), N, &eg);
    std::vector<float> dact(c_fused.size()), d_sep(c_fused.size(), 0.0f);
    cpu::gemm(false, true, M, N, K, 1.0f, A.data(), K, Bt.data(), K, 0.0f, dact.data(), N);
    cpu::gelu_backward(d_sep.data(), pre.data(), dact.data(), int64_t(M) * N);
    std::vector<float> dact_ref(c_fused.size()), d_ref(c_fused.size(), 0.0f);
    ref::gemm<float>(false, true, M, N, K, 1.0f, A.data(), K, Bt.data(), K, 0.0f, dact_ref.data(),
                     N);
    ref::gelu_backward(d_ref.data(), pre.data(), dact_ref.data(), int64_t(M) * N);
    EXPECT_TRUE(all_close(d_fused, d_ref, 1e-4, 2e-5 * std::sqrt(double(K)), "gelu grad " + at));
    EXPECT_TRUE(all_close(d_fused, d_sep, 0, 0, "gelu grad fused == separate " + at));
    // The forward also saving gelu'(pre) over C itself (as training does), and the backward
    // multiplying by it (kMul): the bits of kGeluGrad on the pre-activation.
    std::vector<float> c_grad(c_fused.size()), act_grad(c_fused.size());
    ep.act = act_grad.data();
    ep.grad = c_grad.data();
    ep.ld_grad = N;
    cpu::gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, c_grad.data(), N, &ep);
    EXPECT_TRUE(all_close(act_grad, act_fused, 0, 0, "gelu with its derivative saved " + at));
    std::vector<float> ones(c_fused.size(), 1.0f), g_ref(c_fused.size(), 0.0f);
    ref::gelu_backward(g_ref.data(), c_ref.data(), ones.data(), int64_t(M) * N);
    EXPECT_TRUE(all_close(c_grad, g_ref, 1e-4, 2e-5 * std::sqrt(double(K)), "gelu' saved " + at));
    cpu::GemmEpilogue em;
    em.kind = cpu::GemmEpilogue::Kind::kGeluGrad;
    em.pre = c_fused.data();
    em.ld_pre = N;
    std::vector<float> d_pre(c_fused.size()), d_mul(c_fused.size());
    cpu::gemm(false, true, M, N, K, 1.0f, A.data(), K, Bt.data(), K, 0.0f, d_pre.data(), N, &em);
    em.kind = cpu::GemmEpilogue::Kind::kMul;
    em.pre = c_grad.data();
    cpu::gemm(false, true, M, N, K, 1.0f, A.data(), K, Bt.data(), K, 0.0f, d_mul.data(), N, &em);
    EXPECT_TRUE(all_close(d_mul, d_pre, 0, 0, "saved derivative == recomputed " + at));
  }
}

// Attention over a packed qkv buffer, plus a decode-style case (q_offset, separate buffers).
TEST_P(CpuVsRef, Attention) {
  struct Case {
    int B, NH, T, HS;
  };
  for (Case c : {Case{1, 1, 1, 1}, Case{2, 3, 37, 32}, Case{1, 2, 70, 64}, Case{2, 1, 130, 7},
                 Case{1, 4, 5, 16}}) {
    const int C = c.NH * c.HS;
    size_t nqkv = size_t(c.B) * c.T * 3 * C, nout = size_t(c.B) * c.T * C;
    auto qkv = randn(nqkv, 31);
    std::vector<float> o1(nout), o2(nout), l1(size_t(c.B) * c.NH * c.T), l2(l1.size());
    auto a1 = attn_args_packed_qkv<float>(qkv.data(), o1.data(), l1.data(), c.B, c.T, c.NH, c.HS);
    auto a2 = attn_args_packed_qkv<float>(qkv.data(), o2.data(), l2.data(), c.B, c.T, c.NH, c.HS);
    ref::attention_forward(a1);
    cpu::attention_forward(a2);
    EXPECT_TRUE(all_close(o2, o1, 1e-4, 1e-5, "attention out"));
    EXPECT_TRUE(all_close(l2, l1, 1e-5, 1e-5, "attention lse"));
    auto dout = randn(nout, 32);
    std::vector<float> dqkv1(nqkv), dqkv2(nqkv);
    a1.dout = a2.dout = dout.data();
    a1.dq = dqkv1.data();
    a1.dk = dqkv1.data() + C;
    a1.dv = dqkv1.data() + 2 * C;
    a2.dq = dqkv2.data();
    a2.dk = dqkv2.data() + C;
    a2.dv = dqkv2.data() + 2 * C;
    ref::attention_backward(a1);
    cpu::attention_backward(a2);
    EXPECT_TRUE(all_close(dqkv2, dqkv1, 1e-4, 1e-4, "attention dqkv"));
    // The last query, or the last few, at an offset against all keys (the KV-cache decode
    // shape). One query takes the kernel's own path, which must give the full causal result's
    // last row bit for bit (a token decoded with the cache equals its recomputation).
    for (int nq : {1, std::min(3, c.T)}) {
      AttnArgs<float> d1 = a1, d2 = a2;
      std::vector<float> dl1(size_t(c.B) * c.NH * nq), dl2(dl1.size());
      for (AttnArgs<float>* d : {&d1, &d2}) {
        d->Tq = nq;
        d->q_offset = c.T - nq;
        d->q = qkv.data() + int64_t(c.T - nq) * 3 * C;
      }
      d1.lse = dl1.data();
      d2.lse = dl2.data();
      std::vector<float> od1(nout), od2(nout);
      d1.out = od1.data();
      d2.out = od2.data();
      ref::attention_forward(d1);
      cpu::attention_forward(d2);
      EXPECT_TRUE(all_close(od2, od1, 1e-4, 1e-5, "attention decode"));
      EXPECT_TRUE(all_close(dl2, dl1, 1e-5, 1e-5, "attention decode lse"));
      const double tol = nq == 1 ? 0.0 : 1e-4;
      for (int b = 0; b < c.B; ++b) {
        EXPECT_TRUE(all_close(od2.data() + size_t(b) * c.T * C,
                              o2.data() + (size_t(b) * c.T + c.T - nq) * C, size_t(nq) * C, tol,
                              tol / 10, "decode vs full, nq=" + std::to_string(nq)));
        for (int h = 0; h < c.NH && nq == 1; ++h)
          EXPECT_EQ(dl2[size_t(b) * c.NH + h], l2[(size_t(b) * c.NH + h) * c.T + c.T - 1]);
      }
    }
  }
}

// Key padding (per-sequence lengths), causal and bidirectional, including a sequence with no
// valid key (must give zeros, not NaN) and lengths that are not block multiples.
TEST_P(CpuVsRef, AttentionKeyPadding) {
  const int B = 4, NH = 2, T = 70, HS = 16, C = NH * HS;
  const std::vector<int32_t> lens = {70, 37, 1, 0};
  for (bool causal : {false, true}) {
    auto qkv = randn(size_t(B) * T * 3 * C, 61);
    std::vector<float> o1(size_t(B) * T * C), o2(o1.size()), l1(size_t(B) * NH * T), l2(l1.size());
    auto a1 = attn_args_packed_qkv<float>(qkv.data(), o1.data(), l1.data(), B, T, NH, HS);
    auto a2 = attn_args_packed_qkv<float>(qkv.data(), o2.data(), l2.data(), B, T, NH, HS);
    a1.causal = a2.causal = causal;
    a1.key_len = a2.key_len = lens.data();
    ref::attention_forward(a1);
    cpu::attention_forward(a2);
    EXPECT_TRUE(all_close(o2, o1, 1e-4, 1e-5, "padded attention out"));
    for (float v : o2) ASSERT_TRUE(std::isfinite(v));
    auto dout = randn(o1.size(), 62);
    std::vector<float> g1(qkv.size()), g2(qkv.size());
    a1.dout = a2.dout = dout.data();
    a1.dq = g1.data();
    a1.dk = g1.data() + C;
    a1.dv = g1.data() + 2 * C;
    a2.dq = g2.data();
    a2.dk = g2.data() + C;
    a2.dv = g2.data() + 2 * C;
    ref::attention_backward(a1);
    cpu::attention_backward(a2);
    EXPECT_TRUE(all_close(g2, g1, 1e-4, 1e-4, "padded attention dqkv"));
    for (float v : g2) ASSERT_TRUE(std::isfinite(v));
    // Padded keys receive no gradient; the empty sequence gets none at all.
    for (int b = 0; b < B; ++b)
      for (int t = std::max(lens[size_t(b)], 0); t < T; ++t)
        for (int c = C; c < 3 * C; ++c)
          ASSERT_EQ(g2[(size_t(b) * T + t) * 3 * C + c], 0.0f) << b << " " << t;
    // Sequence 1 (37 valid keys) equals the same 37 tokens run alone, for its valid queries.
    std::vector<float> alone_qkv(qkv.begin() + ptrdiff_t(size_t(T) * 3 * C),
                                 qkv.begin() + ptrdiff_t(size_t(T) * 3 * C + 37 * 3 * C));
    std::vector<float> alone(size_t(37) * C);
    auto s = attn_args_packed_qkv<float>(alone_qkv.data(), alone.data(), nullptr, 1, 37, NH, HS);
    s.causal = causal;
    cpu::attention_forward(s);
    EXPECT_TRUE(all_close(o2.data() + size_t(T) * C, alone.data(), alone.size(), 1e-5, 1e-6,
                          "padded vs alone"));
  }
}

TEST_P(CpuVsRef, CrossEntropy) {
  for (auto [N, V] : std::vector<std::pair<int, int>>{{1, 1}, {3, 7}, {17, 101}, {4, 50257}}) {
    auto logits = randn(size_t(N) * V, 41, 3.0);
    std::vector<int32_t> tg(N);
    Rng rng(42, 0);
    for (auto& t : tg) t = int32_t(rng.below(V));
    if (N > 2) tg[1] = -1;  // ignored position
    std::vector<float> l1(N), l2(N), s1(N), s2(N);
    ref::crossentropy_forward(l1.data(), s1.data(), logits.data(), tg.data(), N, V);
    cpu::crossentropy_forward(l2.data(), s2.data(), logits.data(), tg.data(), N, V);
    EXPECT_TRUE(all_close(l2, l1, 1e-5, 1e-5, "ce loss"));
    auto dl = randn(size_t(N), 43);
    std::vector<float> g1(logits.size()), g2 = logits;  // cpu runs in place
    ref::crossentropy_backward(g1.data(), logits.data(), s1.data(), tg.data(), dl.data(), N, V);
    cpu::crossentropy_backward(g2.data(), g2.data(), s1.data(), tg.data(), dl.data(), N, V);
    EXPECT_TRUE(all_close(g2, g1, 1e-5, 1e-6, "ce dlogits"));
  }
}

TEST_P(CpuVsRef, AdamWAndNorm) {
  for (int n : {1, 7, 1000, 40000}) {
    auto p1 = randn(size_t(n), 51), g = randn(size_t(n), 52), m1 = randn(size_t(n), 53, 0.1);
    auto v1 = randn(size_t(n), 54, 0.1);
    for (auto& x : v1) x = x * x;
    auto p2 = p1, m2 = m1, v2 = v1;
    ref::adamw_update(p1.data(), g.data(), m1.data(), v1.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f,
                      0.19f, 0.0975f);
    cpu::adamw_update(p2.data(), g.data(), m2.data(), v2.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f,
                      0.19f, 0.0975f);
    EXPECT_TRUE(all_close(p2, p1, 1e-6, 1e-7, "adamw p"));
    EXPECT_TRUE(all_close(m2, m1, 1e-6, 1e-7, "adamw m"));
    EXPECT_TRUE(all_close(v2, v1, 1e-6, 1e-7, "adamw v"));
    // Clipping fused in (gscale) equals the reference run on gradients scaled beforehand.
    auto gs = g;
    for (auto& x : gs) x *= 0.37f;
    ref::adamw_update(p1.data(), gs.data(), m1.data(), v1.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f,
                      0.1f, 0.19f, 0.0975f);
    cpu::adamw_update(p2.data(), g.data(), m2.data(), v2.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f,
                      0.19f, 0.0975f, 0.37f);
    EXPECT_TRUE(all_close(p2, p1, 1e-6, 1e-7, "adamw p, fused clip"));
    EXPECT_TRUE(all_close(m2, m1, 1e-6, 1e-7, "adamw m, fused clip"));
    double s = 0;
    for (float x : g) s += double(x) * x;
    EXPECT_NEAR(cpu::sum_squares(g.data(), n), s, 1e-9 * s);
  }
}

// Many tensors in one region: the same bits as one adamw_update per tensor, whatever the
// segment sizes (shares cut across segments), and gaps between segments untouched.
TEST_P(CpuVsRef, AdamWSegments) {
  const std::vector<std::pair<int64_t, int64_t>> spans = {{0, 1},     {1, 7},       {16, 1000},
                                                          {1100, 33}, {1133, 4000}, {5200, 17}};
  const size_t n = 5300;
  auto p1 = randn(n, 71), g = randn(n, 72), m1 = randn(n, 73, 0.1), v1 = randn(n, 74, 0.1);
  for (auto& x : v1) x = x * x;
  auto p2 = p1, m2 = m1, v2 = v1;
  std::vector<cpu::AdamWSegment> segs;
  for (size_t s = 0; s < spans.size(); ++s) {
    const float wd = s % 2 ? 0.0f : 0.1f;
    segs.push_back({spans[s].first, spans[s].second, wd});
    const int64_t o = spans[s].first;
    cpu::adamw_update(p1.data() + o, g.data() + o, m1.data() + o, v1.data() + o, spans[s].second,
                      1e-3f, 0.9f, 0.95f, 1e-8f, wd, 0.19f, 0.0975f, 0.5f);
  }
  cpu::adamw_update_segments(p2.data(), g.data(), m2.data(), v2.data(), segs.data(),
                             int(segs.size()), 1e-3f, 0.9f, 0.95f, 1e-8f, 0.19f, 0.0975f, 0.5f);
  EXPECT_TRUE(all_close(p2, p1, 0, 0, "segments p"));
  EXPECT_TRUE(all_close(m2, m1, 0, 0, "segments m"));
  EXPECT_TRUE(all_close(v2, v1, 0, 0, "segments v"));
  // And against the reference for one of them (the gaps, e.g. [8, 16), stay as they were).
  auto pr = randn(n, 71), mr = randn(n, 73, 0.1), vr = randn(n, 74, 0.1);
  for (auto& x : vr) x = x * x;
  std::vector<float> gs(g.begin() + 1133, g.begin() + 1133 + 4000);
  for (auto& x : gs) x *= 0.5f;
  ref::adamw_update(pr.data() + 1133, gs.data(), mr.data() + 1133, vr.data() + 1133, 4000, 1e-3f,
                    0.9f, 0.95f, 1e-8f, 0.1f, 0.19f, 0.0975f);
  auto part = [](const std::vector<float>& x, size_t a, size_t b) {
    return std::vector<float>(x.begin() + a, x.begin() + b);
  };
  EXPECT_TRUE(all_close(part(p2, 1133, 5133), part(pr, 1133, 5133), 1e-6, 1e-7, "p vs ref"));
  EXPECT_TRUE(all_close(part(m2, 1133, 5133), part(mr, 1133, 5133), 1e-6, 1e-7, "m vs ref"));
  EXPECT_TRUE(all_close(part(p2, 8, 16), part(pr, 8, 16), 0, 0, "gap untouched"));
  EXPECT_TRUE(all_close(part(v2, 5133, 5200), part(vr, 5133, 5200), 0, 0, "gap untouched"));
}

INSTANTIATE_TEST_SUITE_P(Isa, CpuVsRef, ::testing::Values("avx512", "avx2", "generic"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace qkv

// Packing, dequantisation and dispatch of inference weights (see PackedMatrix in cpu.h).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/backend/cpu/isa_table.h"
#include "qkv/core/dtype.h"
#include "qkv/core/error.h"

namespace qkv::cpu {

namespace amx {
void gemm_packed(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C, int64_t ldc);
void gemm_packed_q8(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C,
                    int64_t ldc);
}  // namespace amx
namespace dpbf16 {
void gemm_packed(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C, int64_t ldc);
}  // namespace dpbf16
const IsaTable& isa_table();

namespace {

// The smallest bf16 >= s (s >= 0, finite): a scale that never lets |w| / scale exceed 127.
uint16_t bf16_round_up(float s) {
  uint32_t bits;
  std::memcpy(&bits, &s, 4);
  if (bits & 0xffffu) bits = (bits & 0xffff0000u) + 0x10000u;
  return uint16_t(bits >> 16);
}

void shape_packed(PackedMatrix& d, WeightFormat f, int K, int N) {
  QKV_CHECK(K > 0 && N > 0, "[cpu] cannot pack an empty {}x{} matrix", K, N);
  d.format = f;
  d.K = K;
  d.N = N;
  d.kchunks = (K + 31) / 32;
  d.panels = (N + 15) / 16;
  const size_t n = size_t(d.panels) * size_t(d.kchunks) * 512;
  d.bf16.clear();
  d.q8.clear();
  d.scale.clear();
  if (f == WeightFormat::BF16) {
    d.bf16.assign(n, 0);
  } else {
    d.q8.assign(n, 128);  // zero
    d.scale.assign(n / 32, 0);
  }
}

}  // namespace

QuantRows quantize_rows_q8(int M, const float* A, int64_t lda, int K, int kchunks, int pad_rows) {
  static thread_local AlignedVector<int8_t> q;
  static thread_local std::vector<float> scale, sum;
  const int kp = kchunks * 32, rows = std::max(M, pad_rows);
  q.assign(size_t(rows) * size_t(kp), 0);
  scale.assign(size_t(rows) * size_t(kchunks), 0.0f);
  sum.assign(size_t(rows) * size_t(kchunks), 0.0f);
  // The calling thread's buffers: OpenMP workers have thread_locals of their own.
  int8_t* qp = q.data();
  float* sp = scale.data();
  float* tp = sum.data();
#pragma omp parallel for schedule(static) if (M > 16)
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < kchunks; ++c) {
      const float* x = A + m * lda + c * 32;
      const int kn = std::min(32, K - c * 32);
      float amax = 0.0f;
      for (int k = 0; k < kn; ++k) amax = std::max(amax, std::fabs(x[k]));
      const float s = amax / 127.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
      int total = 0;
      for (int k = 0; k < kn; ++k) {
        // Round half to even (as nearbyint in the default mode), inline: |x * inv| <= 127.
        const float r = (x[k] * inv + 12582912.0f) - 12582912.0f;
        const int v = int(r);
        qp[size_t(m) * kp + size_t(c) * 32 + size_t(k)] = int8_t(v);
        total += v;
      }
      sp[size_t(m) * kchunks + size_t(c)] = s;
      tp[size_t(m) * kchunks + size_t(c)] = float(total);
    }
  return {q.data(), scale.data(), sum.data(), kp, kchunks};
}

const char* weight_format_name(WeightFormat f) { return f == WeightFormat::BF16 ? "bf16" : "int8"; }

void pack_matrix(PackedMatrix& d, WeightFormat f, const float* B, int64_t ldb, bool trans_b, int K,
                 int N) {
  shape_packed(d, f, K, N);
  auto at = [&](int k, int j) {
    return trans_b ? B[int64_t(j) * ldb + k] : B[int64_t(k) * ldb + j];
  };
#pragma omp parallel for schedule(static)
  for (int p = 0; p < d.panels; ++p) {
    for (int c = 0; c < d.kchunks; ++c) {
      const size_t t = d.tile(p, c);
      const int kn = std::min(32, K - c * 32), jn = std::min(16, N - p * 16);
      for (int jj = 0; jj < jn; ++jj) {
        const int j = p * 16 + jj;
        if (f == WeightFormat::BF16) {
          for (int kk = 0; kk < kn; ++kk)
            d.bf16[t + PackedMatrix::bf16_at(kk, jj)] = f32_to_bf16(at(c * 32 + kk, j));
          continue;
        }
        float amax = 0.0f;
        for (int kk = 0; kk < kn; ++kk) amax = std::max(amax, std::fabs(at(c * 32 + kk, j)));
        const uint16_t sb = bf16_round_up(amax / 127.0f);
        d.scale[t / 32 + jj] = sb;
        const float s = bf16_to_f32(sb);
        for (int kk = 0; kk < kn; ++kk) {
          const float q = s > 0.0f ? std::nearbyint(at(c * 32 + kk, j) / s) : 0.0f;
          d.q8[t + PackedMatrix::q8_at(kk, jj)] =
              uint8_t(int(std::clamp(q, -127.0f, 127.0f)) + 128);
        }
      }
    }
  }
}

void pack_q8(PackedMatrix& d, const int8_t* q, const uint16_t* scales, bool trans_b, int K, int N) {
  shape_packed(d, WeightFormat::Q8, K, N);
  const int kc = d.kchunks;
  for (int j = 0; j < N; ++j) {
    const int p = j / 16, jj = j % 16;
    for (int c = 0; c < kc; ++c) {
      const size_t t = d.tile(p, c);
      d.scale[t / 32 + jj] = trans_b ? scales[size_t(j) * kc + c] : scales[size_t(c) * N + j];
      for (int kk = 0; kk < std::min(32, K - c * 32); ++kk) {
        const int k = c * 32 + kk;
        const int8_t v = trans_b ? q[size_t(j) * K + k] : q[size_t(k) * N + j];
        QKV_CHECK(v != -128, "[cpu] int8 weight -128 at ({}, {}): q8 values lie in [-127, 127]", k,
                  j);
        d.q8[t + PackedMatrix::q8_at(kk, jj)] = uint8_t(v + 128);
      }
    }
  }
}

void unpack_q8(const PackedMatrix& d, int8_t* q, uint16_t* scales, bool trans_b) {
  QKV_CHECK(d.format == WeightFormat::Q8, "[cpu] unpack_q8 needs an int8 matrix");
  const int K = d.K, N = d.N, kc = d.kchunks;
  for (int j = 0; j < N; ++j) {
    const int p = j / 16, jj = j % 16;
    for (int c = 0; c < kc; ++c) {
      const size_t t = d.tile(p, c);
      (trans_b ? scales[size_t(j) * kc + c] : scales[size_t(c) * N + j]) = d.scale[t / 32 + jj];
      for (int kk = 0; kk < std::min(32, K - c * 32); ++kk) {
        const int k = c * 32 + kk;
        (trans_b ? q[size_t(j) * K + k] : q[size_t(k) * N + j]) =
            int8_t(int(d.q8[t + PackedMatrix::q8_at(kk, jj)]) - 128);
      }
    }
  }
}

void packed_column(const PackedMatrix& d, int j, float* out) {
  const int p = j / 16, jj = j % 16;
  for (int c = 0; c < d.kchunks; ++c) {
    const size_t t = d.tile(p, c);
    const int kn = std::min(32, d.K - c * 32);
    if (d.format == WeightFormat::BF16) {
      for (int kk = 0; kk < kn; ++kk)
        out[c * 32 + kk] = bf16_to_f32(d.bf16[t + PackedMatrix::bf16_at(kk, jj)]);
    } else {
      const float s = bf16_to_f32(d.scale[t / 32 + jj]);
      for (int kk = 0; kk < kn; ++kk)
        out[c * 32 + kk] = float(int(d.q8[t + PackedMatrix::q8_at(kk, jj)]) - 128) * s;
    }
  }
}

namespace {

void gemm_packed_rows(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C,
                      int64_t ldc);

}  // namespace

void gemm_packed(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C, int64_t ldc,
                 const GemmEpilogue* ep) {
  if (M <= 0) return;
  if (M <= 4) {
    isa_table().gemv_packed(M, A, lda, B, C, ldc, ep);
    return;
  }
  gemm_packed_rows(M, A, lda, B, C, ldc);
  if (ep) isa_table().gemm_epilogue(*ep, C, ldc, M, B.N);
}

namespace {

// M > 4 rows: AMX where it serves, else the GEMV four rows at a time or widened slabs.
void gemm_packed_rows(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C,
                      int64_t ldc) {
  if (B.format == WeightFormat::Q8) {
    // int8 x int8 products: AMX-INT8 tiles, else the GEMV four rows at a time. The tiles' scaling
    // repeats the AVX-512 GEMV's operations (fused multiply-adds), so they serve only with it:
    // a forced lower ISA keeps prefill and decode on one arithmetic.
    if (amx_available() && std::strcmp(isa_name(), "avx512") == 0) {
      amx::gemm_packed_q8(M, A, lda, B, C, ldc);
    } else {
      for (int i = 0; i < M; i += 4)
        isa_table().gemv_packed(std::min(4, M - i), A + int64_t(i) * lda, lda, B,
                                C + int64_t(i) * ldc, ldc, nullptr);
    }
    return;
  }
  if (amx_available()) {
    amx::gemm_packed(M, A, lda, B, C, ldc);
    return;
  }
  if (avx512bf16_available()) {
    dpbf16::gemm_packed(M, A, lda, B, C, ldc);
    return;
  }
  // bf16 without AMX or AVX512-BF16: widen slabs of 256 columns (whole panels) and run the fp32
  // GEMM on them.
  constexpr int kSlab = 256;
  static thread_local AlignedVector<float> slab;
  slab.resize(size_t(kSlab) * size_t(B.K));
  float* sp = slab.data();  // the caller's buffer: other threads have their own thread_local
  for (int j0 = 0; j0 < B.N; j0 += kSlab) {
    const int jn = std::min(kSlab, B.N - j0);
#pragma omp parallel for schedule(static)
    for (int j = 0; j < jn; ++j) packed_column(B, j0 + j, sp + size_t(j) * B.K);
    gemm(false, true, M, jn, B.K, 1.0f, A, lda, sp, B.K, 0.0f, C + j0, ldc);
  }
}

}  // namespace

}  // namespace qkv::cpu

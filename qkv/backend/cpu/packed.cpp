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
}  // namespace amx
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
    d.q8.assign(n, 0);
    d.scale.assign(n / 32, 0);
  }
}

}  // namespace

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
            d.bf16[t + size_t(kk) * 16 + jj] = f32_to_bf16(at(c * 32 + kk, j));
          continue;
        }
        float amax = 0.0f;
        for (int kk = 0; kk < kn; ++kk) amax = std::max(amax, std::fabs(at(c * 32 + kk, j)));
        const uint16_t sb = bf16_round_up(amax / 127.0f);
        d.scale[t / 32 + jj] = sb;
        const float s = bf16_to_f32(sb);
        for (int kk = 0; kk < kn; ++kk) {
          const float q = s > 0.0f ? std::nearbyint(at(c * 32 + kk, j) / s) : 0.0f;
          d.q8[t + size_t(kk) * 16 + jj] = int8_t(std::clamp(q, -127.0f, 127.0f));
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
        d.q8[t + size_t(kk) * 16 + jj] = v;
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
        (trans_b ? q[size_t(j) * K + k] : q[size_t(k) * N + j]) = d.q8[t + size_t(kk) * 16 + jj];
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
        out[c * 32 + kk] = bf16_to_f32(d.bf16[t + size_t(kk) * 16 + jj]);
    } else {
      const float s = bf16_to_f32(d.scale[t / 32 + jj]);
      for (int kk = 0; kk < kn; ++kk) out[c * 32 + kk] = float(d.q8[t + size_t(kk) * 16 + jj]) * s;
    }
  }
}

void gemm_packed(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C, int64_t ldc) {
  if (M <= 0) return;
  if (M <= 4) {
    isa_table().gemv_packed(M, A, lda, B, C, ldc);
    return;
  }
  if (amx_available()) {
    amx::gemm_packed(M, A, lda, B, C, ldc);
    return;
  }
  // Without AMX: dequantise slabs of 256 columns (whole panels) and run the fp32 GEMM on them.
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

}  // namespace qkv::cpu

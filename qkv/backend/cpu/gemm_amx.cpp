// bf16 GEMM on Intel AMX (TDPBF16PS): fp32 inputs are rounded to bf16 while packing, products
// accumulate in fp32 tiles. A is packed into 16-row x 32-k tiles, B into VNNI pairs (16 k-pairs x
// 16 columns); a 32x32 block of C lives in 4 accumulator tiles. Compiled with -mamx-* flags;
// only called when the CPU has AMX-BF16 and the kernel granted the tile-data permission.
// Full tiles of untransposed operands are converted with AVX512-BF16 (round to nearest even, as
// f32_to_bf16, except that it flushes fp32 denormals to zero); the rest goes element by element.
#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "qkv/backend/cpu/isa_table.h"
#include "qkv/core/dtype.h"

namespace qkv::cpu::amx {

namespace {

constexpr int kTile = 16;   // rows of a tile; also output columns per tile (16 fp32 = 64 bytes)
constexpr int kPairK = 32;  // bf16 values of K per tile row (64 bytes)

struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void load_config() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = kTile;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

std::vector<uint16_t, AlignedAlloc<uint16_t>>& buf_a() {
  static std::vector<uint16_t, AlignedAlloc<uint16_t>> b;
  return b;
}
std::vector<uint16_t, AlignedAlloc<uint16_t>>& buf_b() {
  static std::vector<uint16_t, AlignedAlloc<uint16_t>> b;
  return b;
}

}  // namespace

bool request_permission() {
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// Row-major C (M,N) = alpha * op(A) @ op(B) + beta * C, with bf16 products and fp32 sums.
void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int Mp = (M + 31) / 32 * 32, Np = (N + 31) / 32 * 32,
            Kp = (K + kPairK - 1) / kPairK * kPairK;
  const int kchunks = Kp / kPairK;
  auto& pa = buf_a();
  auto& pb = buf_b();
  if (pa.size() < size_t(Mp) * Kp) pa.resize(size_t(Mp) * Kp);
  if (pb.size() < size_t(Np) * Kp) pb.resize(size_t(Np) * Kp);
  uint16_t* PA = pa.data();
  uint16_t* PB = pb.data();
  // A tiles: [m-panel of 16][k-chunk] -> 16 rows x 32 bf16.
#pragma omp parallel for schedule(static)
  for (int mp = 0; mp < Mp / kTile; ++mp) {
    for (int kc = 0; kc < kchunks; ++kc) {
      uint16_t* dst = PA + (size_t(mp) * kchunks + kc) * kTile * kPairK;
      if (!trans_a && (mp + 1) * kTile <= M && (kc + 1) * kPairK <= K) {
        // Full tile of a row-major A: 32 consecutive k per row, converted 32 at a time.
        for (int r = 0; r < kTile; ++r) {
          const float* src = A + int64_t(mp * kTile + r) * lda + kc * kPairK;
          __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
          _mm512_storeu_si512(dst + r * kPairK, (__m512i)v);
        }
        continue;
      }
      for (int r = 0; r < kTile; ++r) {
        const int i = mp * kTile + r;
        for (int c = 0; c < kPairK; ++c) {
          const int k = kc * kPairK + c;
          float v = (i < M && k < K) ? (trans_a ? A[int64_t(k) * lda + i] : A[int64_t(i) * lda + k])
                                     : 0.0f;
          dst[r * kPairK + c] = f32_to_bf16(v);
        }
      }
    }
  }
  // B tiles (VNNI): [n-panel of 16][k-chunk] -> 16 k-pairs x (16 columns x 2).
#pragma omp parallel for schedule(static)
  for (int np = 0; np < Np / kTile; ++np) {
    for (int kc = 0; kc < kchunks; ++kc) {
      uint16_t* dst = PB + (size_t(np) * kchunks + kc) * kTile * kPairK;
      if (!trans_b && (np + 1) * kTile <= N && (kc + 1) * kPairK <= K) {
        // Full tile of a row-major B: rows k and k+1 (16 columns each) interleave into one
        // VNNI row: (B[k][j], B[k+1][j]) for each column j.
        for (int r = 0; r < kTile; ++r) {
          const float* r0 = B + int64_t(kc * kPairK + 2 * r) * ldb + np * kTile;
          const __m512i lo =
              _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r0)));
          const __m512i hi =
              _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r0 + ldb)));
          _mm512_storeu_si512(dst + r * kPairK, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
        continue;
      }
      for (int r = 0; r < kTile; ++r) {
        for (int c = 0; c < kTile; ++c) {
          const int j = np * kTile + c;
          for (int e = 0; e < 2; ++e) {
            const int k = kc * kPairK + 2 * r + e;
            float v = (j < N && k < K)
                          ? (trans_b ? B[int64_t(j) * ldb + k] : B[int64_t(k) * ldb + j])
                          : 0.0f;
            dst[r * kPairK + 2 * c + e] = f32_to_bf16(v);
          }
        }
      }
    }
  }
  const int mblocks = Mp / 32, nblocks = Np / 32;
#pragma omp parallel
  {
    load_config();
    alignas(64) float tmp[32 * 32];
#pragma omp for schedule(static) collapse(2)
    for (int nb = 0; nb < nblocks; ++nb) {
      for (int mb = 0; mb < mblocks; ++mb) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        const uint16_t* a0 = PA + size_t(2 * mb) * kchunks * kTile * kPairK;
        const uint16_t* a1 = PA + size_t(2 * mb + 1) * kchunks * kTile * kPairK;
        const uint16_t* b0 = PB + size_t(2 * nb) * kchunks * kTile * kPairK;
        const uint16_t* b1 = PB + size_t(2 * nb + 1) * kchunks * kTile * kPairK;
        for (int kc = 0; kc < kchunks; ++kc) {
          const size_t o = size_t(kc) * kTile * kPairK;
          _tile_loadd(4, a0 + o, 64);
          _tile_loadd(5, a1 + o, 64);
          _tile_loadd(6, b0 + o, 64);
          _tile_loadd(7, b1 + o, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, tmp, 32 * 4);
        _tile_stored(1, tmp + 16, 32 * 4);
        _tile_stored(2, tmp + 16 * 32, 32 * 4);
        _tile_stored(3, tmp + 16 * 32 + 16, 32 * 4);
        const int i0 = mb * 32, j0 = nb * 32;
        const int rows = std::min(32, M - i0), cols = std::min(32, N - j0);
        for (int r = 0; r < rows; ++r) {
          float* c = C + int64_t(i0 + r) * ldc + j0;
          const float* t = tmp + r * 32;
          if (beta == 0.0f) {
            for (int j = 0; j < cols; ++j) c[j] = alpha * t[j];
          } else {
            for (int j = 0; j < cols; ++j) c[j] = alpha * t[j] + beta * c[j];
          }
        }
      }
    }
    _tile_release();
  }
}

}  // namespace qkv::cpu::amx

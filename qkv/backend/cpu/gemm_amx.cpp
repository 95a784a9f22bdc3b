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

#include "qkv/backend/cpu/bf16_pairs.h"
#include "qkv/backend/cpu/cpu.h"
#include "qkv/backend/cpu/isa_table.h"
#include "qkv/backend/cpu/transpose16.h"
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

// 16 lanes of 32 bits (bf16 pairs) for transpose16.
typedef int32_t v16si __attribute__((vector_size(64)));

// Runs tile(p, kc) for every 16-row/column panel p < panels and k chunk kc < kchunks, each
// thread taking a contiguous range of panels. by_k walks the chunks outside the panels: for a
// source read across panels (the rows k of a row-major B, or of an A stored transposed) each
// pass then moves along 32 rows instead of taking 64 bytes from each of 32 rows and jumping to
// the next panel (+11-14% on weight-gradient shapes such as 768 x 2304 x 1024 with A^T).
template <class F>
void for_tiles(int panels, int kchunks, bool by_k, F tile) {
#pragma omp parallel
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int p0 = panels * t / nt, p1 = panels * (t + 1) / nt;
    if (by_k) {
      for (int kc = 0; kc < kchunks; ++kc)
        for (int p = p0; p < p1; ++p) tile(p, kc);
    } else {
      for (int p = p0; p < p1; ++p)
        for (int kc = 0; kc < kchunks; ++kc) tile(p, kc);
    }
  }
}

// A tiles: [m-panel of 16][k-chunk] -> 16 rows x 32 bf16, zero padded to Mp rows.
void pack_a_tiles(uint16_t* PA, const float* A, int64_t lda, bool trans_a, int M, int K, int Mp,
                  int kchunks) {
  for_tiles(Mp / kTile, kchunks, trans_a, [&](int mp, int kc) {
    uint16_t* dst = PA + (size_t(mp) * kchunks + kc) * kTile * kPairK;
    if (!trans_a && (mp + 1) * kTile <= M && (kc + 1) * kPairK <= K) {
      // Full tile of a row-major A: 32 consecutive k per row, converted 32 at a time.
      for (int r = 0; r < kTile; ++r) {
        const float* src = A + int64_t(mp * kTile + r) * lda + kc * kPairK;
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
        _mm512_storeu_si512(dst + r * kPairK, (__m512i)v);
      }
      return;
    }
    if (trans_a && (mp + 1) * kTile <= M && (kc + 1) * kPairK <= K) {
      // Full tile of a transposed A (stored K x M, as X^T in dW = X^T dY): rows k, k+1 give
      // 16 (k, k+1) pairs across m; a 16 x 16 transpose of the pairs makes the tile rows.
      v16si p[16];
      for (int q = 0; q < 16; ++q) {
        const float* r0 = A + int64_t(kc * kPairK + 2 * q) * lda + mp * kTile;
        p[q] = (v16si)bf16_pairs(_mm512_loadu_ps(r0), _mm512_loadu_ps(r0 + lda));
      }
      transpose16(p);
      for (int r = 0; r < kTile; ++r) _mm512_storeu_si512(dst + r * kPairK, (__m512i)p[r]);
      return;
    }
    for (int r = 0; r < kTile; ++r) {
      const int i = mp * kTile + r;
      for (int c = 0; c < kPairK; ++c) {
        const int k = kc * kPairK + c;
        float v =
            (i < M && k < K) ? (trans_a ? A[int64_t(k) * lda + i] : A[int64_t(i) * lda + k]) : 0.0f;
        dst[r * kPairK + c] = f32_to_bf16(v);
      }
    }
  });
}

// Stores a 32x32 fp32 block (tmp) into C: alpha * tmp + beta * C, clipped to rows x cols.
void store_block(const float* tmp, float* C, int64_t ldc, int rows, int cols, float alpha,
                 float beta) {
  for (int r = 0; r < rows; ++r) {
    float* c = C + int64_t(r) * ldc;
    const float* t = tmp + r * 32;
    if (beta == 0.0f) {
      for (int j = 0; j < cols; ++j) c[j] = alpha * t[j];
    } else {
      for (int j = 0; j < cols; ++j) c[j] = alpha * t[j] + beta * c[j];
    }
  }
}

// Four 16x16 accumulators for a 32x32 block of C over kchunks k chunks; a0/a1 are the two A
// panels, b0/b1 the two B panels (each kchunks tiles of 1 KiB). Result into tmp (32x32).
// The accumulators start from out (load_c: C += A B, as for gradients) or zero, and are stored
// to out (row stride ld floats): C itself for full blocks with alpha 1 and beta 0 or 1, so no
// epilogue touches them; a 32x32 scratch block otherwise.
void block_product(const uint16_t* a0, const uint16_t* a1, const uint16_t* b0, const uint16_t* b1,
                   int kchunks, float* out, int64_t ld, bool load_c) {
  const int64_t st = ld * int64_t(sizeof(float));
  if (load_c) {
    _tile_loadd(0, out, st);
    _tile_loadd(1, out + 16, st);
    _tile_loadd(2, out + 16 * ld, st);
    _tile_loadd(3, out + 16 * ld + 16, st);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int kc = 0; kc < kchunks; ++kc) {
    const size_t o = size_t(kc) * kTile * kPairK;
    // Loads interleaved with the products that need them, so the next chunk's loads can
    // start while the last products of this one run.
    _tile_loadd(4, a0 + o, 64);
    _tile_loadd(6, b0 + o, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, b1 + o, 64);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1 + o, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, st);
  _tile_stored(1, out + 16, st);
  _tile_stored(2, out + 16 * ld, st);
  _tile_stored(3, out + 16 * ld + 16, st);
}

// One chunk of a packed bf16 inference matrix ([32 k][16 columns]) as a VNNI B tile: row r
// holds (k = 2r, k = 2r + 1) pairs for the 16 columns. (int8 matrices never come here: their
// stored chunks are AMX-INT8 B tiles already, see gemm_packed_q8.)
void packed_to_vnni(const PackedMatrix& B, int p, int c, uint16_t* dst) {
  const uint16_t* src = B.bf16.data() + B.tile(p, c);
  for (int r = 0; r < kTile; ++r) {
    const __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(src + 32 * r)));
    const __m512i hi =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(src + 32 * r + 16)));
    _mm512_storeu_si512(dst + r * kPairK, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
  }
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
  pack_a_tiles(PA, A, lda, trans_a, M, K, Mp, kchunks);
  // B tiles (VNNI): [n-panel of 16][k-chunk] -> 16 k-pairs x (16 columns x 2).
  for_tiles(Np / kTile, kchunks, !trans_b, [&](int np, int kc) {
    uint16_t* dst = PB + (size_t(np) * kchunks + kc) * kTile * kPairK;
    if (!trans_b && (np + 1) * kTile <= N && (kc + 1) * kPairK <= K) {
      // Full tile of a row-major B: rows k and k+1 (16 columns each) interleave into one
      // VNNI row: (B[k][j], B[k+1][j]) for each column j.
      for (int r = 0; r < kTile; ++r) {
        const float* r0 = B + int64_t(kc * kPairK + 2 * r) * ldb + np * kTile;
        _mm512_storeu_si512(dst + r * kPairK,
                            bf16_pairs(_mm512_loadu_ps(r0), _mm512_loadu_ps(r0 + ldb)));
      }
      return;
    }
    if (trans_b && (np + 1) * kTile <= N && (kc + 1) * kPairK <= K) {
      // Full tile of a transposed B (stored N x K, as W in dX = dY W^T): each column's 32 k
      // are 16 bf16 pairs; a 16 x 16 transpose puts pair r of every column in VNNI row r.
      v16si p[16];
      for (int c = 0; c < kTile; ++c) {
        const float* src = B + int64_t(np * kTile + c) * ldb + kc * kPairK;
        p[c] = (v16si)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
      }
      transpose16(p);
      for (int r = 0; r < kTile; ++r) _mm512_storeu_si512(dst + r * kPairK, (__m512i)p[r]);
      return;
    }
    for (int r = 0; r < kTile; ++r) {
      for (int c = 0; c < kTile; ++c) {
        const int j = np * kTile + c;
        for (int e = 0; e < 2; ++e) {
          const int k = kc * kPairK + 2 * r + e;
          float v = (j < N && k < K) ? (trans_b ? B[int64_t(j) * ldb + k] : B[int64_t(k) * ldb + j])
                                     : 0.0f;
          dst[r * kPairK + 2 * c + e] = f32_to_bf16(v);
        }
      }
    }
  });
  const int mblocks = Mp / 32, nblocks = Np / 32;
  // Tile loads run at L1/L2 speed or not at all: measured on one core, the 32x32 block product
  // gives ~2.8 TFLOP/s from L1, ~1.6-2 from L2 and ~0.4 from L3. So each thread keeps a group
  // of B panels that fits its L2 (jn blocks of 32 columns, <= ~768 KiB) and runs its own row
  // blocks against it, the 32-row A block staying in L1/L2 across the group's columns. Rows are
  // split across threads (columns when there are too few row blocks). A K longer than 64
  // chunks (2048) is cut into near-equal blocks of <= 48 chunks, C accumulating across them:
  // with the LM head's K = 50257 a block's operands (3 MiB each) came from memory, ~9% of the
  // peak. Full blocks of a direct product keep the sum in fp32 tiles stored and reloaded, so
  // the bits do not depend on the blocking; the others go through store_block per K block.
  const int nkb = kchunks > 64 ? (kchunks + 47) / 48 : 1;
  const int kb_len = (kchunks + nkb - 1) / nkb;
  const size_t panel = size_t(kchunks) * kTile * kPairK;  // one 16-row/column panel, all of K
  const size_t block_bytes = size_t(kb_len) * kTile * kPairK * 2 * 2;  // 32 columns x K block
  const int jn = std::max(1, int((size_t(768) << 10) / block_bytes));
  const bool direct = alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
#pragma omp parallel
  {
    load_config();
    alignas(64) float tmp[32 * 32];
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const bool split_rows = mblocks >= 2 * nt || mblocks >= nblocks;
    const int m0 = split_rows ? mblocks * t / nt : 0,
              m1 = split_rows ? mblocks * (t + 1) / nt : mblocks;
    const int n0 = split_rows ? 0 : nblocks * t / nt,
              n1 = split_rows ? nblocks : nblocks * (t + 1) / nt;
    for (int k0 = 0; k0 < kchunks; k0 += kb_len) {
      const int kn = std::min(kb_len, kchunks - k0);
      const size_t ko = size_t(k0) * kTile * kPairK;
      for (int jb = n0; jb < n1; jb += jn) {
        for (int mb = m0; mb < m1; ++mb) {
          for (int nb = jb; nb < std::min(n1, jb + jn); ++nb) {
            const uint16_t* a0 = PA + size_t(2 * mb) * panel + ko;
            const uint16_t* b0 = PB + size_t(2 * nb) * panel + ko;
            const int i0 = mb * 32, j0 = nb * 32;
            float* c = C + int64_t(i0) * ldc + j0;
            if (direct && i0 + 32 <= M && j0 + 32 <= N) {
              block_product(a0, a0 + panel, b0, b0 + panel, kn, c, ldc, k0 > 0 || beta == 1.0f);
            } else {
              block_product(a0, a0 + panel, b0, b0 + panel, kn, tmp, 32, false);
              store_block(tmp, c, ldc, std::min(32, M - i0), std::min(32, N - j0), alpha,
                          k0 > 0 ? 1.0f : beta);
            }
          }
        }
      }
    }
    _tile_release();
  }
}

// C (M x N) = A @ op(B) for a packed bf16 inference matrix: A is packed once; each thread turns
// a block of 32 columns into VNNI tiles and reuses it for every row block.
void gemm_packed(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C, int64_t ldc) {
  const int K = B.K, N = B.N, kchunks = B.kchunks;
  const int Mp = (M + 31) / 32 * 32;
  auto& pa = buf_a();
  if (pa.size() < size_t(Mp) * kchunks * kPairK) pa.resize(size_t(Mp) * kchunks * kPairK);
  uint16_t* PA = pa.data();
  pack_a_tiles(PA, A, lda, false, M, K, Mp, kchunks);
  const int mblocks = Mp / 32, nblocks = (B.panels + 1) / 2;
  const size_t panel = size_t(kchunks) * kTile * kPairK;
#pragma omp parallel
  {
    load_config();
    static thread_local std::vector<uint16_t, AlignedAlloc<uint16_t>> bt;
    if (bt.size() < 2 * panel) bt.resize(2 * panel);
    alignas(64) float tmp[32 * 32];
#pragma omp for schedule(static)
    for (int nb = 0; nb < nblocks; ++nb) {
      for (int h = 0; h < 2; ++h) {
        const int p = 2 * nb + h;
        for (int c = 0; c < kchunks; ++c) {
          uint16_t* dst = bt.data() + size_t(h) * panel + size_t(c) * kTile * kPairK;
          if (p < B.panels)
            packed_to_vnni(B, p, c, dst);
          else
            std::memset(dst, 0, sizeof(uint16_t) * kTile * kPairK);
        }
      }
      for (int mb = 0; mb < mblocks; ++mb) {
        const uint16_t* a0 = PA + size_t(2 * mb) * panel;
        block_product(a0, a0 + panel, bt.data(), bt.data() + panel, kchunks, tmp, 32, false);
        const int i0 = mb * 32, j0 = nb * 32;
        store_block(tmp, C + int64_t(i0) * ldc + j0, ldc, std::min(32, M - i0),
                    std::min(32, N - j0), 1.0f, 0.0f);
      }
    }
    _tile_release();
  }
}

// C (M x N) = A @ op(B) for an int8 packed matrix, on AMX-INT8: the rows of A are quantised per
// chunk of 32 (quantize_rows_q8) and each chunk is one tile product (TDPBSUD: signed activation
// bytes x unsigned weight bytes, the weights' +128 offset removed through the row sums), exact
// in int32. The stored chunk [8 k-quads][16 columns][4 k] is already the B tile layout. Each
// chunk's integers are scaled into fp32 with the operations of the VNNI GEMV, in the same
// order, so prefill and decode compute the same bits. (Bound by that per-chunk scaling, not by
// the tiles: int8 x int8 per block of 32 is what makes the result match the decode path.)
void gemm_packed_q8(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C,
                    int64_t ldc) {
  const int N = B.N, kchunks = B.kchunks;
  const int Mp = (M + 31) / 32 * 32;
  const QuantRows qa = quantize_rows_q8(M, A, lda, B.K, kchunks, Mp);
  // A 32 x 32 block of C per work item: per chunk, four tile products (2 row tiles x 2 column
  // tiles) are stored and scaled into fp32 sums by AVX-512 (AMX results reach vector registers
  // only through memory). The tile unit's loads and stores per chunk, not its products, bound
  // this: the per-chunk scales forbid summing more than 32 k inside a tile.
  // A missing last panel multiplies weight bytes of 128: 0 after the offset.
  struct ZeroChunk {
    alignas(64) uint8_t bytes[512];
    ZeroChunk() { std::memset(bytes, 128, sizeof bytes); }
  };
  static const ZeroChunk zero;
  const uint8_t* zero_chunk = zero.bytes;
  const int nblocks = (B.panels + 1) / 2;
#pragma omp parallel
  {
    TileConfig cfg;
    for (int t = 0; t < 4; ++t) {  // C: 16 x 16 int32
      cfg.rows[t] = 16;
      cfg.colsb[t] = 64;
    }
    for (int t = 4; t < 6; ++t) {  // A: 16 rows x 32 bytes (one chunk)
      cfg.rows[t] = 16;
      cfg.colsb[t] = 32;
    }
    for (int t = 6; t < 8; ++t) {  // B: 8 k-quads x 64 bytes (16 columns x 4 k)
      cfg.rows[t] = 8;
      cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    alignas(64) int32_t d[32 * 32];
    alignas(64) float acc[32 * 32];
#pragma omp for schedule(static) collapse(2)
    for (int nb = 0; nb < nblocks; ++nb) {
      for (int mb = 0; mb < Mp / 32; ++mb) {
        std::memset(acc, 0, sizeof acc);
        const int p0 = 2 * nb, p1 = 2 * nb + 1;
        for (int c = 0; c < kchunks; ++c) {
          const int8_t* a0 = qa.q + size_t(mb * 32) * qa.kp + size_t(c) * 32;
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
          _tile_loadd(4, a0, qa.kp);
          _tile_loadd(5, a0 + size_t(16) * qa.kp, qa.kp);
          _tile_loadd(6, B.q8.data() + B.tile(p0, c), 64);
          _tile_loadd(7, p1 < B.panels ? B.q8.data() + B.tile(p1, c) : zero_chunk, 64);
          _tile_dpbsud(0, 4, 6);
          _tile_dpbsud(1, 4, 7);
          _tile_dpbsud(2, 5, 6);
          _tile_dpbsud(3, 5, 7);
          _tile_stored(0, d, 32 * 4);
          _tile_stored(1, d + 16, 32 * 4);
          _tile_stored(2, d + 16 * 32, 32 * 4);
          _tile_stored(3, d + 16 * 32 + 16, 32 * 4);
          __m512 sw[2];
          for (int h = 0; h < 2; ++h)
            sw[h] = 2 * nb + h < B.panels
                        ? _mm512_castsi512_ps(_mm512_slli_epi32(
                              _mm512_cvtepu16_epi32(_mm256_loadu_si256(
                                  (const __m256i*)(B.scale.data() + B.tile(2 * nb + h, c) / 32))),
                              16))
                        : _mm512_setzero_ps();
          const int rows = std::min(32, M - mb * 32);
          for (int r = 0; r < rows; ++r) {
            const size_t i = size_t(mb * 32 + r) * kchunks + c;
            const __m512 corr = _mm512_set1_ps(128.0f * qa.sum[i]);
            const __m512 sa = _mm512_set1_ps(qa.scale[i]);
            for (int h = 0; h < 2; ++h) {
              const __m512 blk = _mm512_cvtepi32_ps(_mm512_load_si512(d + r * 32 + 16 * h));
              float* o = acc + r * 32 + 16 * h;
              _mm512_store_ps(o, _mm512_fmadd_ps(_mm512_sub_ps(blk, corr), _mm512_mul_ps(sw[h], sa),
                                                 _mm512_load_ps(o)));
            }
          }
        }
        const int i0 = mb * 32, j0 = nb * 32;
        store_block(acc, C + int64_t(i0) * ldc + j0, ldc, std::min(32, M - i0),
                    std::min(32, N - j0), 1.0f, 0.0f);
      }
    }
    _tile_release();
  }
}

// The tile unit's peak: iters x 4 TDPBF16PS on tiles already loaded (no memory traffic), on
// the calling thread. Returns the flops done (16 x 16 x 32 x 2 per instruction).
double peak_probe(int64_t iters) {
  load_config();
  alignas(64) static const uint16_t zeros[16 * 32] = {};
  _tile_loadd(4, zeros, 64);
  _tile_loadd(5, zeros, 64);
  _tile_loadd(6, zeros, 64);
  _tile_loadd(7, zeros, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t i = 0; i < iters; ++i) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float sink[16 * 16];
  _tile_stored(0, sink, 64);
  _tile_release();
  return double(iters) * 4 * 16 * 16 * 32 * 2 + sink[0];
}

}  // namespace qkv::cpu::amx

// bf16 GEMM on AVX512-BF16 (VDPBF16PS) for CPUs without AMX: fp32 inputs are rounded to bf16
// while packing, each instruction multiplies 16 pairs of bf16 and adds both products to 16 fp32
// sums. On AMD Zen 5 it runs at 1.85x the flops of an fp32 FMA (425 against 230 GFLOP/s a core,
// measured), so bf16 pays there without a matrix engine.
//
// Layout: a "pair" is two bf16 of consecutive k in one 32-bit lane (k even in the low half).
// op(A) is packed once per call in MR-row micro-panels ([K block][m panel][pair][MR]); each
// thread takes whole column blocks of op(B) (up to kBlockPanels panels of NR, ~0.6 MB per
// K block, in its L2), packs them ([pair][NR] per panel) and sweeps every row tile across them,
// the A micro-panel in L1 and C written as MR row streams (the fp32 kernel's many-column sweep).
// Each C element's sum runs over the same K blocks in the same order whatever the thread count,
// so results are deterministic for any number of threads.
#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "qkv/backend/cpu/bf16_pairs.h"
#include "qkv/backend/cpu/cpu.h"
#include "qkv/backend/cpu/transpose16.h"
#include "qkv/core/dtype.h"

namespace qkv::cpu::dpbf16 {

namespace {

constexpr int MR = 12;  // rows of the register tile (12 x 2 accumulators, 2 B vectors, 1 A)
constexpr int NR = 32;  // columns: two vectors of 16 fp32 sums
// Pairs of k per K block: 384 pairs (768 k, one block at GPT-2's K = 768) keep the A
// micro-panel (18 KiB) in L1 and a 12-panel column block (576 KiB) in L2.
constexpr int kBlockPairs = 384;
constexpr int kBlockPanels = 12;

typedef int32_t v16si __attribute__((vector_size(64)));
using PairVec = std::vector<uint32_t, AlignedAlloc<uint32_t>>;

inline uint32_t pair_of(float lo, float hi) {
  return uint32_t(f32_to_bf16(lo)) | uint32_t(f32_to_bf16(hi)) << 16;
}

// 32 consecutive floats of one row as 16 pairs of consecutive k.
inline __m512i pairs_along(const float* p) {
  return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(p + 16), _mm512_loadu_ps(p));
}

// op(X)[i][k] for X stored row-major (trans: X is stored transposed).
inline float at(const float* X, int64_t ld, bool trans, int64_t i, int64_t k) {
  return trans ? X[k * ld + i] : X[i * ld + k];
}

// Packs rows [i0, i0 + rows) (rows <= MR) and pairs [q0, q0 + nq) of op(A) (M x K) into one
// micro-panel dst[pair][MR], zero past the rows and past K.
void pack_a_panel(uint32_t* dst, const float* A, int64_t lda, bool trans, int K, int i0, int rows,
                  int q0, int nq) {
  int q = 0;
  if (trans) {
    // Stored K x M: rows 2q and 2q + 1 of the store hold the pair for every m.
    const __mmask16 m = __mmask16((1u << rows) - 1), all = __mmask16((1u << MR) - 1);
    for (; q < nq && 2 * (q0 + q) + 1 < K; ++q) {
      const float* r0 = A + int64_t(2 * (q0 + q)) * lda + i0;
      const __m512i v =
          bf16_pairs(_mm512_maskz_loadu_ps(m, r0), _mm512_maskz_loadu_ps(m, r0 + lda));
      _mm512_mask_storeu_epi32(dst + int64_t(q) * MR, all, v);
    }
  } else if (rows == MR) {
    // Row-major: 16 pairs (32 k) of each row, then a 16 x 16 transpose puts pair q in row q.
    for (; q + 16 <= nq && 2 * (q0 + q + 16) <= K; q += 16) {
      v16si r[16];
      for (int i = 0; i < MR; ++i)
        r[i] = (v16si)pairs_along(A + int64_t(i0 + i) * lda + 2 * (q0 + q));
      for (int i = MR; i < 16; ++i) r[i] = v16si{};
      transpose16(r);
      for (int j = 0; j < 16; ++j)
        _mm512_mask_storeu_epi32(dst + int64_t(q + j) * MR, __mmask16((1u << MR) - 1),
                                 (__m512i)r[j]);
    }
  }
  for (; q < nq; ++q) {
    uint32_t* d = dst + int64_t(q) * MR;
    const int k = 2 * (q0 + q);
    for (int r = 0; r < MR; ++r) {
      if (r >= rows) {
        d[r] = 0;
        continue;
      }
      const float lo = k < K ? at(A, lda, trans, i0 + r, k) : 0.0f;
      const float hi = k + 1 < K ? at(A, lda, trans, i0 + r, k + 1) : 0.0f;
      d[r] = pair_of(lo, hi);
    }
  }
}

// Packs columns [j0, j0 + cols) (cols <= NR) and pairs [q0, q0 + nq) of op(B) (K x N) into one
// panel dst[pair][NR], zero past the columns and past K.
void pack_b_panel(uint32_t* dst, const float* B, int64_t ldb, bool trans, int K, int j0, int cols,
                  int q0, int nq) {
  int q = 0;
  if (!trans && cols == NR) {
    // Row-major K x N: rows 2q and 2q + 1 give the pairs of 16 columns at a time.
    for (; q < nq && 2 * (q0 + q) + 1 < K; ++q) {
      const float* r0 = B + int64_t(2 * (q0 + q)) * ldb + j0;
      for (int h = 0; h < NR; h += 16)
        _mm512_storeu_si512(dst + int64_t(q) * NR + h,
                            bf16_pairs(_mm512_loadu_ps(r0 + h), _mm512_loadu_ps(r0 + ldb + h)));
    }
  } else if (trans && cols == NR) {
    // Stored N x K (the weight in dX = dY W^T): 16 pairs of each of 16 columns, transposed.
    for (; q + 16 <= nq && 2 * (q0 + q + 16) <= K; q += 16) {
      for (int h = 0; h < NR; h += 16) {
        v16si r[16];
        for (int c = 0; c < 16; ++c)
          r[c] = (v16si)pairs_along(B + int64_t(j0 + h + c) * ldb + 2 * (q0 + q));
        transpose16(r);
        for (int j = 0; j < 16; ++j)
          _mm512_storeu_si512(dst + int64_t(q + j) * NR + h, (__m512i)r[j]);
      }
    }
  }
  for (; q < nq; ++q) {
    uint32_t* d = dst + int64_t(q) * NR;
    const int k = 2 * (q0 + q);
    for (int c = 0; c < NR; ++c) {
      if (c >= cols) {
        d[c] = 0;
        continue;
      }
      // op(B)[k][j] is B[k][j] stored K x N, or B[j][k] stored transposed.
      const float lo = k < K ? at(B, ldb, !trans, j0 + c, k) : 0.0f;
      const float hi = k + 1 < K ? at(B, ldb, !trans, j0 + c, k + 1) : 0.0f;
      d[c] = pair_of(lo, hi);
    }
  }
}

// The MR x NR tile of C at C (rows x cols of it real) from nq pairs of a packed A micro-panel
// and a packed B panel: C = alpha * sum + beta * C on the first K block (C not read when beta
// is 0), C += alpha * sum after it.
void micro_kernel(int nq, const uint32_t* __restrict ap, const uint32_t* __restrict bp, float* C,
                  int64_t ldc, int rows, int cols, float alpha, float beta, bool first) {
  __m512 acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (int q = 0; q < nq; ++q) {
    // The panel streams from L2: fetch its two lines 16 pairs ahead.
    _mm_prefetch((const char*)(bp + 16 * NR), _MM_HINT_T0);
    _mm_prefetch((const char*)(bp + 16 * NR + 16), _MM_HINT_T0);
    const __m512bh b0 = (__m512bh)_mm512_load_si512(bp), b1 = (__m512bh)_mm512_load_si512(bp + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(ap[r]));
      acc0[r] = _mm512_dpbf16_ps(acc0[r], a, b0);
      acc1[r] = _mm512_dpbf16_ps(acc1[r], a, b1);
    }
    ap += MR;
    bp += NR;
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  if (rows == MR && cols == NR) {
    for (int r = 0; r < MR; ++r) {
      float* c = C + r * ldc;
      __m512 v0 = _mm512_mul_ps(acc0[r], va), v1 = _mm512_mul_ps(acc1[r], va);
      if (!first) {
        v0 = _mm512_add_ps(v0, _mm512_loadu_ps(c));
        v1 = _mm512_add_ps(v1, _mm512_loadu_ps(c + 16));
      } else if (beta != 0.0f) {
        v0 = _mm512_fmadd_ps(_mm512_loadu_ps(c), vb, v0);
        v1 = _mm512_fmadd_ps(_mm512_loadu_ps(c + 16), vb, v1);
      }
      _mm512_storeu_ps(c, v0);
      _mm512_storeu_ps(c + 16, v1);
    }
    return;
  }
  // Edge tiles: the same arithmetic, masked to the real columns.
  const __mmask16 m0 = __mmask16(cols >= 16 ? 0xffff : (1u << cols) - 1);
  const __mmask16 m1 = __mmask16(cols >= NR ? 0xffff : cols > 16 ? (1u << (cols - 16)) - 1 : 0);
  for (int r = 0; r < rows; ++r) {
    float* c = C + r * ldc;
    __m512 v0 = _mm512_mul_ps(acc0[r], va), v1 = _mm512_mul_ps(acc1[r], va);
    if (!first) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, c));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, c + 16));
    } else if (beta != 0.0f) {
      v0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, c), vb, v0);
      v1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, c + 16), vb, v1);
    }
    _mm512_mask_storeu_ps(c, m0, v0);
    _mm512_mask_storeu_ps(c + 16, m1, v1);
  }
}

bool cpu_has_avx512bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 16))) return false;  // AVX512F
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  return a & (1u << 5);  // AVX512_BF16
}

}  // namespace

bool supported() {
  static const bool has = cpu_has_avx512bf16();
  return has;
}

namespace {

// C (M x N) = alpha * op(A) @ op(B) + beta * C over K (pairs = ceil(K / 2)); pack_b(dst, j0,
// cols, q0, nq) packs one panel of op(B). K blocks are whole multiples of 16 pairs (a packed
// inference matrix's 32-k chunks).
template <class PackB>
void sweep(bool trans_a, int M, int N, int K, float alpha, const float* A, int64_t lda, float beta,
           float* C, int64_t ldc, PackB pack_b) {
  const int pairs = (K + 1) / 2;
  // K blocks of near-equal length; a product whose C is large (the LM head's 1024 x 50257, or
  // its weight gradient) keeps K up to 1536 in one block rather than reading C twice.
  const bool big_c = int64_t(M) * N > (int64_t(4) << 20);
  const int max_pairs = big_c && pairs <= 2 * kBlockPairs ? pairs : kBlockPairs;
  const int kblocks = (pairs + max_pairs - 1) / max_pairs;
  const int block_pairs = ((pairs + kblocks - 1) / kblocks + 15) / 16 * 16;
  const int m_panels = (M + MR - 1) / MR;
  const int64_t m_pad = int64_t(m_panels) * MR;
  // op(A) packed once for every column block: [K block][m panel][pair][MR].
  static thread_local PairVec packed_a;
  if (packed_a.size() < size_t(m_pad) * size_t(pairs)) packed_a.resize(size_t(m_pad) * pairs);
  uint32_t* const pa = packed_a.data();  // thread_local: this thread's, shared with the team
  auto kblock = [&](int kb, int& q0, int& nq) {
    q0 = kb * block_pairs;
    nq = std::min(block_pairs, pairs - q0);
  };
#pragma omp parallel for schedule(static) collapse(2)
  for (int kb = 0; kb < kblocks; ++kb) {
    for (int mp = 0; mp < m_panels; ++mp) {
      int q0, nq;
      kblock(kb, q0, nq);
      if (nq > 0)
        pack_a_panel(pa + m_pad * q0 + int64_t(mp) * MR * nq, A, lda, trans_a, K, mp * MR,
                     std::min(MR, M - mp * MR), q0, nq);
    }
  }
  // Work items: column blocks, each cut into row chunks when there are too few blocks to keep
  // every thread busy (a chunk packs its column block again: cheap beside its products).
  const int nthreads = omp_get_max_threads();
  // Column blocks of at most kBlockPanels panels, as many as a multiple of the thread count when
  // there are enough, and near-equal: 2048 columns (64 panels) as five blocks of 11 and one of 9,
  // not five of 12 and one of 4, which left one thread idle for most of a block at the end.
  const int n_panels_all = (N + NR - 1) / NR;
  int cblocks = (n_panels_all + kBlockPanels - 1) / kBlockPanels;
  if (cblocks >= 2 * nthreads) cblocks = (cblocks + nthreads - 1) / nthreads * nthreads;
  const int block_panels = (n_panels_all + cblocks - 1) / cblocks;
  const int block_cols = block_panels * NR;
  cblocks = (n_panels_all + block_panels - 1) / block_panels;
  const int chunks =
      cblocks >= 2 * nthreads ? 1 : std::min(m_panels, (2 * nthreads + cblocks - 1) / cblocks);
  const int items = cblocks * chunks;
#pragma omp parallel for schedule(dynamic)
  for (int w = 0; w < items; ++w) {
    const int cb = w / chunks, ch = w % chunks;
    const int j0 = cb * block_cols, nc = std::min(block_cols, N - j0);
    const int n_panels = (nc + NR - 1) / NR;
    const int r0 = MR * int(int64_t(m_panels) * ch / chunks);
    const int r1 = std::min(M, MR * int(int64_t(m_panels) * (ch + 1) / chunks));
    static thread_local PairVec pb;
    if (pb.size() < size_t(n_panels) * NR * block_pairs)
      pb.resize(size_t(n_panels) * NR * block_pairs);
    for (int kb = 0; kb < kblocks; ++kb) {
      int q0, nq;
      kblock(kb, q0, nq);
      if (nq <= 0) break;
      for (int p = 0; p < n_panels; ++p)
        pack_b(pb.data() + size_t(p) * NR * nq, j0 + p * NR, std::min(NR, nc - p * NR), q0, nq);
      for (int r = r0; r < r1; r += MR) {
        const uint32_t* ap = pa + m_pad * q0 + int64_t(r) * nq;
        for (int p = 0; p < n_panels; ++p)
          micro_kernel(nq, ap, pb.data() + size_t(p) * NR * nq, C + int64_t(r) * ldc + j0 + p * NR,
                       ldc, std::min(MR, M - r), std::min(NR, nc - p * NR), alpha, beta, kb == 0);
      }
    }
  }
}

}  // namespace

// Row-major C (M,N) = alpha * op(A) @ op(B) + beta * C, with bf16 products and fp32 sums.
void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  sweep(trans_a, M, N, K, alpha, A, lda, beta, C, ldc,
        [&](uint32_t* dst, int j0, int cols, int q0, int nq) {
          pack_b_panel(dst, B, ldb, trans_b, K, j0, cols, q0, nq);
        });
}

// C (M x N) = A @ op(B) for a packed bf16 inference matrix (prefill): its chunks ([32 k][16
// columns] of bf16) become pair panels as each column block is swept; A is rounded to bf16
// (as the AMX path does).
void gemm_packed(int M, const float* A, int64_t lda, const PackedMatrix& B, float* C, int64_t ldc) {
  sweep(false, M, B.N, B.K, 1.0f, A, lda, 0.0f, C, ldc,
        [&](uint32_t* dst, int j0, int, int q0, int nq) {
          for (int h = 0; h < 2; ++h) {
            const int p = j0 / 16 + h;
            for (int q = q0; q < q0 + nq; ++q) {
              uint32_t* d = dst + int64_t(q - q0) * NR + 16 * h;
              if (p >= B.panels) {
                std::memset(d, 0, 16 * sizeof(uint32_t));
                continue;
              }
              // Pair q is rows 2 (q % 16) and 2 (q % 16) + 1 of chunk q / 16.
              const uint16_t* src =
                  B.bf16.data() + B.tile(p, q / 16) + PackedMatrix::bf16_at(2 * (q % 16), 0);
              const __m512i lo = _mm512_cvtepu16_epi32(_mm256_load_si256((const __m256i*)src));
              const __m512i hi =
                  _mm512_cvtepu16_epi32(_mm256_load_si256((const __m256i*)(src + 16)));
              _mm512_storeu_si512(d, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
            }
          }
        });
}

// Runs iters x 24 VDPBF16PS on registers (this thread); returns the flops done. 24 chains: the
// instruction's latency (~6 cycles on Zen 5) times its throughput (2 a cycle) is 12. (The
// compiler keeps the array in registers and cannot fold the dot products away; an empty asm
// pinning each element instead made it store them all every iteration, a third of the rate.)
double peak_probe(int64_t iters) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_setzero_ps();
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  float sink[16];
  __m512 s = acc[0];
  for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, acc[i]);
  _mm512_storeu_ps(sink, s);
  return double(iters) * 24 * 16 * 2 * 2 + sink[0];
}

}  // namespace qkv::cpu::dpbf16

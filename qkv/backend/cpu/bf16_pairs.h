// Rounding fp32 rows to bf16 pairs (two bf16 in a 32-bit lane, the first in the low half): the
// operand layout of AMX's TDPBF16PS B tiles and of AVX512-BF16's VDPBF16PS. Shared by
// gemm_amx.cpp and gemm_dpbf16.cpp; include only from files compiled with -mavx512bf16.
#pragma once

#include <immintrin.h>

namespace qkv::cpu {

// Two rows of 16 floats as 16 pairs: lane j = (lo[j], hi[j]), each rounded to nearest even.
inline __m512i bf16_pairs(__m512 lo, __m512 hi) {
  const __m512i a = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
  const __m512i b = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi));
  return _mm512_or_si512(a, _mm512_slli_epi32(b, 16));
}

}  // namespace qkv::cpu

// One in-register transpose of a 16 x 16 block of 32-bit elements, shared by the fp32 kernels'
// packing (floats) and the AMX packing (bf16 pairs as 32-bit lanes): r[i] is row i on entry,
// column i on exit. Pairs, then quads within 128-bit lanes, then the lanes themselves, written
// as vector shuffles (they compile to unpck/shufps/shuff32x4 on AVX-512) rather than
// intrinsics, whose _mm512_undefined_* sources GCC 12 flags as uninitialised once inlined.
// V: any 64-byte GCC vector of 16 32-bit lanes.
#pragma once

#include <cstdint>

namespace qkv::cpu {

template <typename V>
inline void transpose16(V r[16]) {
  static_assert(sizeof(V) == 64 && sizeof(r[0][0]) == 4, "16 lanes of 32 bits");
  typedef int32_t mi __attribute__((vector_size(64)));
  const mi lo = {0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29};
  const mi hi = lo + 2;
  const mi q0 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
  const mi q1 = q0 + 2;
  const mi l0 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
  const mi l1 = l0 + 4;
  V t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = __builtin_shuffle(t[i], t[i + 2], q0);
    r[i + 1] = __builtin_shuffle(t[i], t[i + 2], q1);
    r[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], q0);
    r[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], q1);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = __builtin_shuffle(r[i], r[4 + i], l0);
    t[4 + i] = __builtin_shuffle(r[i], r[4 + i], l1);
    t[8 + i] = __builtin_shuffle(r[8 + i], r[12 + i], l0);
    t[12 + i] = __builtin_shuffle(r[8 + i], r[12 + i], l1);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = __builtin_shuffle(t[i], t[8 + i], l0);
    r[8 + i] = __builtin_shuffle(t[i], t[8 + i], l1);
  }
}

}  // namespace qkv::cpu

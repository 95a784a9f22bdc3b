// Fixed position encodings shared by the models.
#pragma once

#include <cmath>
#include <cstdint>

namespace qkv {

// Adds the encoding of "Attention Is All You Need" for position p to x (C values):
// PE(p, 2i) = sin(p / 10000^(2i/C)), PE(p, 2i+1) = cos(p / 10000^(2i/C)), in double and rounded
// once (training and decoding agree bit for bit).
inline void sinusoid_add(float* x, int64_t p, int C) {
  for (int c = 0; c < C; ++c) {
    const int i2 = c & ~1;
    const double angle = double(p) * std::pow(10000.0, -double(i2) / double(C));
    x[c] += float(c & 1 ? std::cos(angle) : std::sin(angle));
  }
}

}  // namespace qkv

// Rotary position embedding on the CPU: the angles for a (T, HS/2) table are computed once in
// double (and kept while the call's positions repeat, as in training), then every row of every
// head turns its channel pairs (i, i + HS/2) in float.
#include <omp.h>

#include <cmath>
#include <vector>

#include "qkv/backend/cpu/cpu.h"

namespace qkv::cpu {

namespace {
struct RopeTable {
  int T = 0, HS = 0;
  int64_t pos0 = -1;
  float theta = 0;
  std::vector<float> cs;  // (T, HS/2) pairs of cos, sin
};
}  // namespace

void rope_apply(float* x, int64_t rows, int T, int64_t pos0, int64_t stride, int heads, int HS,
                float theta, bool inverse) {
  static thread_local RopeTable table;  // the calling thread's; workers only read it
  const int half = HS / 2;
  if (table.T != T || table.HS != HS || table.pos0 != pos0 || table.theta != theta) {
    table.cs.resize(size_t(T) * half * 2);
    float* cs = table.cs.data();
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < half; ++i) {
        const double angle = double(pos0 + t) * std::pow(double(theta), -2.0 * i / HS);
        cs[(size_t(t) * half + i) * 2] = float(std::cos(angle));
        cs[(size_t(t) * half + i) * 2 + 1] = float(std::sin(angle));
      }
    table.T = T;
    table.HS = HS;
    table.pos0 = pos0;
    table.theta = theta;
  }
  const float* cs = table.cs.data();
  const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = cs + size_t(r % T) * half * 2;
    for (int h = 0; h < heads; ++h) {
      float* v = x + r * stride + int64_t(h) * HS;
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const float c = row[2 * i], s = sign * row[2 * i + 1];
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

}  // namespace qkv::cpu

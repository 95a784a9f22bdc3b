// Threads: OpenMP underneath. set_num_threads() is the one knob; kernels split work statically
// so results are deterministic for a fixed thread count.
#pragma once

#include <cstdint>

namespace qkv {

// 0 means OMP_NUM_THREADS if set, else all cores.
void set_num_threads(int n);
int num_threads();

// p[0, n) = 0, each thread clearing one contiguous share (the share it later works on under a
// static split). A gradient buffer cleared by one thread kept the other idle: ~2% of a small
// model's training step.
void parallel_zero(float* p, int64_t n);

}  // namespace qkv

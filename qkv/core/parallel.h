// Threads: OpenMP underneath. set_num_threads() is the one knob; kernels split work statically
// so results are deterministic for a fixed thread count.
#pragma once

#include <cstdint>

namespace qkv {

// 0 means OMP_NUM_THREADS if set, else all cores.
void set_num_threads(int n);
int num_threads();

}  // namespace qkv

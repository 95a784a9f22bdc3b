#include "qkv/core/parallel.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>

namespace qkv {

void set_num_threads(int n) {
  if (n <= 0) {
    // "All cores", unless OMP_NUM_THREADS says otherwise.
    const char* env = std::getenv("OMP_NUM_THREADS");
    n = env != nullptr && std::atoi(env) > 0 ? std::atoi(env) : omp_get_num_procs();
  }
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void parallel_zero(float* p, int64_t n) {
  if (n < (int64_t(1) << 15)) {  // below 128 KiB a parallel region costs more than it saves
    std::memset(p, 0, sizeof(float) * size_t(n));
    return;
  }
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t b = n * t / nt, e = n * (t + 1) / nt;
    std::memset(p + b, 0, sizeof(float) * size_t(e - b));
  }
}

}  // namespace qkv

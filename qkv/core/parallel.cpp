#include "qkv/core/parallel.h"

#include <omp.h>

#include <cstdlib>

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

}  // namespace qkv

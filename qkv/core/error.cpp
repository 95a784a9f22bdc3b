#include "qkv/core/error.h"

#include <cstdio>
#include <cstdlib>

namespace qkv {

void assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "qkv: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace qkv

// Errors: QKV_CHECK for bad user input (throws qkv::Error with a one-line message),
// QKV_ASSERT for broken invariants (always on, aborts with file:line).
#pragma once

#include <fmt/core.h>

#include <stdexcept>
#include <string>

namespace qkv {

// A user-facing error: the message is one line that says what is wrong and where.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

[[noreturn]] void assert_fail(const char* expr, const char* file, int line);

}  // namespace qkv

#define QKV_CHECK(cond, ...)                                   \
  do {                                                         \
    if (!(cond)) throw ::qkv::Error(fmt::format(__VA_ARGS__)); \
  } while (0)

#define QKV_ASSERT(cond)                                        \
  do {                                                          \
    if (!(cond)) ::qkv::assert_fail(#cond, __FILE__, __LINE__); \
  } while (0)

#ifdef NDEBUG
#define QKV_DASSERT(cond) ((void)0)
#else
#define QKV_DASSERT(cond) QKV_ASSERT(cond)
#endif

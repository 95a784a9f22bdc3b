// 64-byte aligned storage for vectors that SIMD kernels read (one cache line, one AVX-512 load).
// Large blocks (weights, KV caches, activations) are 2 MiB aligned and offered to the kernel as
// transparent huge pages: streaming hundreds of MB per token through 4 KiB pages spends a TLB
// walk every 4 KiB (GPT-2 fp32 decode ran ~20% faster with huge pages).
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

namespace qkv {

// Bytes held by AlignedAlloc right now, and the most held since reset_aligned_peak(): every
// kernel scratch and planned buffer goes through it, so a benchmark can report the extra memory
// a call took (qkv bench attention's peak_bytes). Two relaxed atomics per allocation.
namespace detail {
inline std::atomic<int64_t> aligned_current{0}, aligned_peak{0};
}
inline int64_t aligned_bytes_in_use() { return detail::aligned_current.load(); }
inline int64_t aligned_peak_bytes() { return detail::aligned_peak.load(); }
inline void reset_aligned_peak() { detail::aligned_peak.store(detail::aligned_current.load()); }

template <typename T>
struct AlignedAlloc {
  using value_type = T;
  AlignedAlloc() = default;
  template <typename U>
  AlignedAlloc(const AlignedAlloc<U>&) {}
  T* allocate(size_t n) {
    constexpr size_t kHuge = size_t(2) << 20;
    const size_t bytes = n * sizeof(T);
    const size_t align = bytes >= 2 * kHuge ? kHuge : 64;
    void* p = std::aligned_alloc(align, (bytes + align - 1) / align * align);
    if (!p) throw std::bad_alloc();
    if (align == kHuge) madvise(p, (bytes + align - 1) / align * align, MADV_HUGEPAGE);
    const int64_t now = detail::aligned_current.fetch_add(int64_t(bytes)) + int64_t(bytes);
    int64_t peak = detail::aligned_peak.load();
    while (now > peak && !detail::aligned_peak.compare_exchange_weak(peak, now)) {
    }
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    detail::aligned_current.fetch_sub(int64_t(n * sizeof(T)));
    std::free(p);
  }
  bool operator==(const AlignedAlloc&) const { return true; }
  bool operator!=(const AlignedAlloc&) const { return false; }
};

template <typename T>
using AlignedVector = std::vector<T, AlignedAlloc<T>>;

}  // namespace qkv

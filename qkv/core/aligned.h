// 64-byte aligned storage for vectors that SIMD kernels read (one cache line, one AVX-512 load).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace qkv {

template <typename T>
struct AlignedAlloc {
  using value_type = T;
  AlignedAlloc() = default;
  template <typename U>
  AlignedAlloc(const AlignedAlloc<U>&) {}
  T* allocate(size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  bool operator==(const AlignedAlloc&) const { return true; }
  bool operator!=(const AlignedAlloc&) const { return false; }
};

template <typename T>
using AlignedVector = std::vector<T, AlignedAlloc<T>>;

}  // namespace qkv

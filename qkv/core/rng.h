// Seeded counter-based RNG: every draw is a pure function of (seed, stream, counter), so a run
// can be resumed at any step, and results do not depend on the thread that draws them.
#pragma once

#include <cmath>
#include <cstdint>

namespace qkv {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A stream of random numbers identified by (seed, stream); next() advances a counter.
class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream, uint64_t counter = 0)
      : key_(splitmix64(seed ^ splitmix64(stream + 0x632be59bd9b4e019ull))), counter_(counter) {}

  uint64_t next_u64() { return splitmix64(key_ ^ splitmix64(counter_++)); }
  // Uniform in [0, 1) with 24 random bits.
  float uniform() { return float(next_u64() >> 40) * (1.0f / 16777216.0f); }
  double uniform_f64() { return double(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  // Uniform integer in [0, n), n > 0 (multiply-shift; bias below 2^-32 for n < 2^32).
  uint64_t below(uint64_t n) {
    return uint64_t((static_cast<unsigned __int128>(next_u64()) * n) >> 64);
  }
  // Standard normal by Box-Muller.
  double normal() {
    double u1 = uniform_f64(), u2 = uniform_f64();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  uint64_t counter() const { return counter_; }

 private:
  uint64_t key_;
  uint64_t counter_;
};

}  // namespace qkv

#include "qkv/infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "qkv/core/error.h"

namespace qkv {

Sampler::Sampler(const SamplerConfig& cfg) : cfg_(cfg), rng_(cfg.seed, 0x5a3b1e) {
  QKV_CHECK(cfg.temperature >= 0 && std::isfinite(cfg.temperature),
            "[sampler] temperature {} must be >= 0", cfg.temperature);
  QKV_CHECK(cfg.top_k >= 0, "[sampler] top_k {} must be >= 0", cfg.top_k);
  QKV_CHECK(cfg.top_p > 0 && cfg.top_p <= 1, "[sampler] top_p {} must be in (0, 1]", cfg.top_p);
}

int32_t Sampler::sample(const float* logits, int V) {
  if (cfg_.temperature == 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  probs_.resize(size_t(V));
  order_.resize(size_t(V));
  std::iota(order_.begin(), order_.end(), 0);
  int n = V;
  // Candidates sorted by logit (descending, ties by id) when a cut is needed.
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (cfg_.top_k > 0 && cfg_.top_k < V) {
    n = cfg_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + n, order_.end(), by_logit);
  } else if (cfg_.top_p < 1.0f) {
    std::sort(order_.begin(), order_.end(), by_logit);
  }
  float mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::max(mx, logits[order_[size_t(i)]]);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    float p = std::exp((logits[order_[size_t(i)]] - mx) / cfg_.temperature);
    probs_[size_t(i)] = p;
    sum += p;
  }
  if (cfg_.top_p < 1.0f) {
    // Keep the smallest prefix whose probability mass reaches top_p.
    double cum = 0;
    int keep = n;
    for (int i = 0; i < n; ++i) {
      cum += probs_[size_t(i)] / sum;
      if (cum >= cfg_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
    sum = 0;
    for (int i = 0; i < n; ++i) sum += probs_[size_t(i)];
  }
  double r = rng_.uniform_f64() * sum;
  for (int i = 0; i < n; ++i) {
    r -= probs_[size_t(i)];
    if (r < 0) return order_[size_t(i)];
  }
  return order_[size_t(n - 1)];
}

}  // namespace qkv

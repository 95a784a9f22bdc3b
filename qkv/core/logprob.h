// log p(token) under softmax(logits), in double (interpretability and evaluation read single
// rows of logits; the training loss has its own fused kernel).
#pragma once

#include <cmath>
#include <cstdint>

namespace qkv {

inline double log_softmax_at(const float* logits, int V, int32_t token) {
  double mx = logits[0];
  for (int v = 1; v < V; ++v) mx = logits[v] > mx ? double(logits[v]) : mx;
  double s = 0;
  for (int v = 0; v < V; ++v) s += std::exp(double(logits[v]) - mx);
  return double(logits[token]) - mx - std::log(s);
}

}  // namespace qkv

// Reference softmax cross-entropy and AdamW.
#include <cmath>

#include "qkv/backend/ref/ref.h"

namespace qkv::ref {

template <typename T>
void crossentropy_forward(T* losses, T* lse, const T* logits, const int32_t* targets, int64_t N,
                          int V) {
  for (int64_t i = 0; i < N; ++i) {
    const T* x = logits + i * V;
    double mx = x[0];
    for (int v = 1; v < V; ++v) mx = std::max(mx, double(x[v]));
    double s = 0;
    for (int v = 0; v < V; ++v) s += std::exp(double(x[v]) - mx);
    double l = mx + std::log(s);
    lse[i] = T(l);
    losses[i] = targets[i] < 0 ? T(0) : T(l - x[targets[i]]);
  }
}

template <typename T>
void crossentropy_backward(T* dlogits, const T* logits, const T* lse, const int32_t* targets,
                           const T* dlosses, int64_t N, int V) {
  for (int64_t i = 0; i < N; ++i) {
    for (int v = 0; v < V; ++v) {
      double g = 0;
      if (targets[i] >= 0) {
        double p = std::exp(double(logits[i * V + v]) - double(lse[i]));
        g = (p - (v == targets[i] ? 1.0 : 0.0)) * dlosses[i];
      }
      dlogits[i * V + v] = T(g);
    }
  }
}

template <typename T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float wd, float bc1, float bc2, float gscale) {
  for (int64_t i = 0; i < n; ++i) {
    const double gi = double(g[i]) * gscale;
    double pi = double(p[i]) * (1.0 - double(lr) * wd);
    double mi = beta1 * double(m[i]) + (1.0 - beta1) * gi;
    double vi = beta2 * double(v[i]) + (1.0 - beta2) * gi * gi;
    pi -= (double(lr) / bc1) * mi / (std::sqrt(vi) / std::sqrt(double(bc2)) + eps);
    p[i] = T(pi);
    m[i] = T(mi);
    v[i] = T(vi);
  }
}

#define QKV_INSTANTIATE(T)                                                                        \
  template void crossentropy_forward<T>(T*, T*, const T*, const int32_t*, int64_t, int);          \
  template void crossentropy_backward<T>(T*, const T*, const T*, const int32_t*, const T*,        \
                                         int64_t, int);                                           \
  template void adamw_update<T>(T*, const T*, T*, T*, int64_t, float, float, float, float, float, \
                                float, float, float);
QKV_INSTANTIATE(float)
QKV_INSTANTIATE(double)
#undef QKV_INSTANTIATE

}  // namespace qkv::ref

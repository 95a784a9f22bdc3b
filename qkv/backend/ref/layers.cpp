// Reference kernels for the per-token layers: embeddings, layer norm, bias, GELU, residual.
#include <cmath>

#include "qkv/backend/ref/ref.h"

namespace qkv::ref {

// ---- embedding ----
template <typename T>
void encoder_forward(T* out, const int32_t* inp, const T* wte, const T* wpe, int B, int Tt, int C) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tt; ++t) {
      T* o = out + (int64_t(b) * Tt + t) * C;
      const T* e = wte + int64_t(inp[b * Tt + t]) * C;
      const T* p = wpe ? wpe + int64_t(t) * C : nullptr;  // null: no additive positions
      for (int c = 0; c < C; ++c) o[c] = e[c] + (p ? p[c] : T(0));
    }
}

template <typename T>
void encoder_backward(T* dwte, T* dwpe, const T* dout, const int32_t* inp, int B, int Tt, int C) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tt; ++t) {
      const T* d = dout + (int64_t(b) * Tt + t) * C;
      T* de = dwte + int64_t(inp[b * Tt + t]) * C;
      T* dp = dwpe + int64_t(t) * C;
      for (int c = 0; c < C; ++c) {
        de[c] += d[c];
        dp[c] += d[c];
      }
    }
}

// ---- layer norm ----
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t N, int C, float eps) {
  for (int64_t i = 0; i < N; ++i) {
    const T* x = inp + i * C;
    double m = 0;
    for (int c = 0; c < C; ++c) m += x[c];
    m /= C;
    double var = 0;
    for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    var /= C;
    double r = 1.0 / std::sqrt(var + eps);
    for (int c = 0; c < C; ++c) {
      double y = (x[c] - m) * r * weight[c] + (bias ? double(bias[c]) : 0.0);
      out[i * C + c] = T(y);
    }
    mean[i] = T(m);
    rstd[i] = T(r);
  }
}

template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t N, int C) {
  for (int64_t i = 0; i < N; ++i) {
    const T* x = inp + i * C;
    const T* dy = dout + i * C;
    double m = mean[i], r = rstd[i];
    double sum_dn = 0, sum_dn_n = 0;  // sums of dnorm and dnorm * norm
    for (int c = 0; c < C; ++c) {
      double n = (x[c] - m) * r;
      double dn = double(weight[c]) * dy[c];
      sum_dn += dn;
      sum_dn_n += dn * n;
    }
    sum_dn /= C;
    sum_dn_n /= C;
    for (int c = 0; c < C; ++c) {
      double n = (x[c] - m) * r;
      double dn = double(weight[c]) * dy[c];
      if (dbias) dbias[c] += dy[c];
      dweight[c] += T(n * dy[c]);
      dinp[i * C + c] += T((dn - sum_dn - n * sum_dn_n) * r);
    }
  }
}

// ---- bias ----
template <typename T>
void bias_forward(T* out, const T* bias, int64_t N, int OC) {
  for (int64_t i = 0; i < N; ++i)
    for (int o = 0; o < OC; ++o) out[i * OC + o] += bias[o];
}

template <typename T>
void bias_backward(T* dbias, const T* dout, int64_t N, int OC) {
  for (int o = 0; o < OC; ++o) {
    double s = 0;
    for (int64_t i = 0; i < N; ++i) s += dout[i * OC + o];
    dbias[o] += T(s);
  }
}

// ---- GELU (tanh form) ----
namespace {
constexpr double kGeluK = 0.7978845608028654;  // sqrt(2/pi)
}

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double x = inp[i];
    out[i] = T(0.5 * x * (1.0 + std::tanh(kGeluK * (x + 0.044715 * x * x * x))));
  }
}

template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double x = inp[i];
    double u = kGeluK * (x + 0.044715 * x * x * x);
    double th = std::tanh(u);
    double sech2 = 1.0 - th * th;
    double g = 0.5 * (1.0 + th) + 0.5 * x * sech2 * kGeluK * (1.0 + 3.0 * 0.044715 * x * x);
    dinp[i] += T(g * dout[i]);
  }
}

// ---- RMSNorm ----
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int64_t N, int C, float eps) {
  for (int64_t i = 0; i < N; ++i) {
    const T* x = inp + i * C;
    double ms = 0;
    for (int c = 0; c < C; ++c) ms += double(x[c]) * x[c];
    const double r = 1.0 / std::sqrt(ms / C + eps);
    for (int c = 0; c < C; ++c) out[i * C + c] = T(x[c] * r * weight[c]);
    rstd[i] = T(r);
  }
}

// y_c = g_c x_c r with r = (mean(x^2) + eps)^-1/2: dx_j = r (g_j dy_j - x_j r^2 mean(g dy x)).
template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, int64_t N, int C) {
  for (int64_t i = 0; i < N; ++i) {
    const T* x = inp + i * C;
    const T* dy = dout + i * C;
    const double r = rstd[i];
    double b = 0;
    for (int c = 0; c < C; ++c) b += double(weight[c]) * dy[c] * x[c];
    b /= C;
    for (int c = 0; c < C; ++c) {
      dinp[i * C + c] += T(r * (weight[c] * dy[c] - x[c] * r * r * b));
      dweight[c] += T(double(dy[c]) * x[c] * r);
    }
  }
}

// ---- ReLU ----
template <typename T>
void relu_forward(T* out, const T* inp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = inp[i] > 0 ? inp[i] : T(0);
}

template <typename T>
void relu_backward(T* dinp, const T* inp, const T* dout, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (inp[i] > 0) dinp[i] += dout[i];
}

// ---- SwiGLU ----
template <typename T>
void swiglu_forward(T* out, const T* inp, int64_t N, int H) {
  for (int64_t r = 0; r < N; ++r)
    for (int i = 0; i < H; ++i) {
      const double g = inp[r * 2 * H + i], u = inp[r * 2 * H + H + i];
      out[r * H + i] = T(g / (1 + std::exp(-g)) * u);
    }
}

template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int64_t N, int H) {
  for (int64_t r = 0; r < N; ++r)
    for (int i = 0; i < H; ++i) {
      const double g = inp[r * 2 * H + i], u = inp[r * 2 * H + H + i], d = dout[r * H + i];
      const double sg = 1 / (1 + std::exp(-g));
      dinp[r * 2 * H + i] += T(d * u * sg * (1 + g * (1 - sg)));
      dinp[r * 2 * H + H + i] += T(d * g * sg);
    }
}

// ---- rotary positions ----
template <typename T>
void rope_apply(T* x, int64_t rows, int T_, int64_t pos0, int64_t stride, int heads, int HS,
                float theta, bool inverse) {
  const int half = HS / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const double p = double(pos0 + r % T_);
    for (int h = 0; h < heads; ++h) {
      T* v = x + r * stride + int64_t(h) * HS;
      for (int i = 0; i < half; ++i) {
        const double angle = p * std::pow(double(theta), -2.0 * i / HS);
        const double c = std::cos(angle), s = inverse ? -std::sin(angle) : std::sin(angle);
        const double a = v[i], b = v[i + half];
        v[i] = T(a * c - b * s);
        v[i + half] = T(b * c + a * s);
      }
    }
  }
}

// ---- residual ----
template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

#define QKV_INSTANTIATE(T)                                                                         \
  template void encoder_forward<T>(T*, const int32_t*, const T*, const T*, int, int, int);         \
  template void encoder_backward<T>(T*, T*, const T*, const int32_t*, int, int, int);              \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int,       \
                                     float);                                                       \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,          \
                                      const T*, int64_t, int);                                     \
  template void bias_forward<T>(T*, const T*, int64_t, int);                                       \
  template void bias_backward<T>(T*, const T*, int64_t, int);                                      \
  template void gelu_forward<T>(T*, const T*, int64_t);                                            \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t);                                 \
  template void residual_forward<T>(T*, const T*, const T*, int64_t);                              \
  template void rmsnorm_forward<T>(T*, T*, const T*, const T*, int64_t, int, float);               \
  template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t, int); \
  template void relu_forward<T>(T*, const T*, int64_t);                                            \
  template void relu_backward<T>(T*, const T*, const T*, int64_t);                                 \
  template void swiglu_forward<T>(T*, const T*, int64_t, int);                                     \
  template void swiglu_backward<T>(T*, const T*, const T*, int64_t, int);                          \
  template void rope_apply<T>(T*, int64_t, int, int64_t, int64_t, int, int, float, bool);
QKV_INSTANTIATE(float)
QKV_INSTANTIATE(double)
#undef QKV_INSTANTIATE

}  // namespace qkv::ref

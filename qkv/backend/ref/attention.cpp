// Reference attention: materialises each query's full score row (the naive way the fused
// kernel avoids), softmax, then the weighted sum. Backward from the same explicit probabilities.
#include <cmath>
#include <limits>
#include <vector>

#include "qkv/backend/ref/ref.h"

namespace qkv::ref {

namespace {
template <typename T>
bool visible(const AttnArgs<T>& a, int b, int i, int j) {
  if (a.key_len && j >= a.key_len[b]) return false;
  return !a.causal || j <= a.q_offset + i;
}

// Probabilities p[j] for query (b, h, i); returns the log-sum-exp of the scaled scores.
template <typename T>
double probs_row(const AttnArgs<T>& a, int b, int h, int i, std::vector<double>& p) {
  const double scale = 1.0 / std::sqrt(double(a.HS));
  const T* q = a.q + b * a.q_sb + int64_t(i) * a.q_st + h * a.q_sh;
  double mx = -std::numeric_limits<double>::infinity();
  for (int j = 0; j < a.Tk; ++j) {
    if (!visible(a, b, i, j)) {
      p[j] = -std::numeric_limits<double>::infinity();
      continue;
    }
    const T* k = a.k + b * a.k_sb + int64_t(j) * a.k_st + h * a.k_sh;
    double s = 0;
    for (int d = 0; d < a.HS; ++d) s += double(q[d]) * k[d];
    p[j] = s * scale;
    mx = std::max(mx, p[j]);
  }
  double sum = 0;
  for (int j = 0; j < a.Tk; ++j) {
    p[j] = visible(a, b, i, j) ? std::exp(p[j] - mx) : 0.0;
    sum += p[j];
  }
  if (sum == 0) return std::numeric_limits<double>::infinity();  // no visible key: p = 0
  for (int j = 0; j < a.Tk; ++j) p[j] /= sum;
  return mx + std::log(sum);
}
}  // namespace

template <typename T>
void attention_forward(const AttnArgs<T>& a) {
  std::vector<double> p(a.Tk);
  for (int b = 0; b < a.B; ++b)
    for (int h = 0; h < a.NH; ++h)
      for (int i = 0; i < a.Tq; ++i) {
        double l = probs_row(a, b, h, i, p);
        if (a.lse) a.lse[(int64_t(b) * a.NH + h) * a.Tq + i] = T(l);
        T* o = a.out + b * a.o_sb + int64_t(i) * a.o_st + h * a.o_sh;
        for (int d = 0; d < a.HS; ++d) {
          double acc = 0;
          for (int j = 0; j < a.Tk; ++j)
            acc += p[j] * a.v[b * a.v_sb + int64_t(j) * a.v_st + h * a.v_sh + d];
          o[d] = T(acc);
        }
      }
}

template <typename T>
void attention_backward(const AttnArgs<T>& a) {
  const double scale = 1.0 / std::sqrt(double(a.HS));
  std::vector<double> p(a.Tk), dp(a.Tk);
  for (int b = 0; b < a.B; ++b)
    for (int h = 0; h < a.NH; ++h)
      for (int i = 0; i < a.Tq; ++i) {
        probs_row(a, b, h, i, p);
        const T* dO = a.dout + b * a.o_sb + int64_t(i) * a.o_st + h * a.o_sh;
        const T* q = a.q + b * a.q_sb + int64_t(i) * a.q_st + h * a.q_sh;
        T* dq = a.dq + b * a.q_sb + int64_t(i) * a.q_st + h * a.q_sh;
        double dot = 0;  // sum_j p_j dp_j
        for (int j = 0; j < a.Tk; ++j) {
          const T* v = a.v + b * a.v_sb + int64_t(j) * a.v_st + h * a.v_sh;
          T* dv = a.dv + b * a.v_sb + int64_t(j) * a.v_st + h * a.v_sh;
          double s = 0;
          for (int d = 0; d < a.HS; ++d) {
            s += double(dO[d]) * v[d];
            dv[d] += T(p[j] * dO[d]);
          }
          dp[j] = s;
          dot += p[j] * s;
        }
        for (int j = 0; j < a.Tk; ++j) {
          if (p[j] == 0) continue;
          double ds = p[j] * (dp[j] - dot) * scale;
          const T* k = a.k + b * a.k_sb + int64_t(j) * a.k_st + h * a.k_sh;
          T* dk = a.dk + b * a.k_sb + int64_t(j) * a.k_st + h * a.k_sh;
          for (int d = 0; d < a.HS; ++d) {
            dq[d] += T(ds * k[d]);
            dk[d] += T(ds * q[d]);
          }
        }
      }
}

template void attention_forward<float>(const AttnArgs<float>&);
template void attention_forward<double>(const AttnArgs<double>&);
template void attention_backward<float>(const AttnArgs<float>&);
template void attention_backward<double>(const AttnArgs<double>&);

}  // namespace qkv::ref

// Reference attention: materialises each query's full score row (the naive way the fused
// kernel avoids), softmax, then the weighted sum. Backward from the same explicit probabilities.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "qkv/backend/ref/ref.h"

namespace qkv::ref {

namespace {
// The rules of kernel_args.h, written out per (query, key) pair.
template <typename T>
bool visible(const AttnArgs<T>& a, int b, int i, int j) {
  const int p = a.q_offset + i;
  if (a.key_len && j >= a.key_len[b]) return false;
  if (a.causal && j > p) return false;
  switch (a.kind) {
    case AttnKind::Sliding:
      return a.causal ? p - j < a.window : 2 * std::abs(p - j) <= a.window;
    case AttnKind::BlockSparse:
      return p < a.global || j < a.global || std::abs(p / a.block - j / a.block) <= a.local_blocks;
    default:
      return true;
  }
}

double elu1(double x) { return x > 0 ? x + 1 : std::exp(x); }
double elu1_grad(double x) { return x > 0 ? 1 : std::exp(x); }

// Linear attention with explicit pairwise weights w_ij = phi(q_i).phi(k_j): O(Tq Tk HS).
template <typename T>
void linear_forward(const AttnArgs<T>& a) {
  std::vector<double> fq(a.HS), w(a.Tk);
  for (int b = 0; b < a.B; ++b)
    for (int h = 0; h < a.NH; ++h)
      for (int i = 0; i < a.Tq; ++i) {
        const T* q = a.q + b * a.q_sb + int64_t(i) * a.q_st + h * a.q_sh;
        for (int d = 0; d < a.HS; ++d) fq[d] = elu1(q[d]);
        double den = 0;
        for (int j = 0; j < a.Tk; ++j) {
          w[j] = 0;
          if (!visible(a, b, i, j)) continue;
          const T* k = a.k + b * a.k_sb + int64_t(j) * a.k_st + (h / a.kv_group) * a.k_sh;
          for (int d = 0; d < a.HS; ++d) w[j] += fq[d] * elu1(k[d]);
          den += w[j];
        }
        if (a.lse) a.lse[(int64_t(b) * a.NH + h) * a.Tq + i] = T(den);
        T* o = a.out + b * a.o_sb + int64_t(i) * a.o_st + h * a.o_sh;
        for (int d = 0; d < a.HS; ++d) {
          double acc = 0;
          for (int j = 0; j < a.Tk; ++j)
            if (w[j] != 0)
              acc += w[j] * a.v[b * a.v_sb + int64_t(j) * a.v_st + (h / a.kv_group) * a.v_sh + d];
          o[d] = den > 0 ? T(acc / den) : T(0);
        }
      }
}

// d out_i / d w_ij = (v_j - out_i) / den_i; w_ij = phi(q_i).phi(k_j).
template <typename T>
void linear_backward(const AttnArgs<T>& a) {
  std::vector<double> fq(a.HS), fk(a.HS), o(a.HS), dfq(a.HS);
  for (int b = 0; b < a.B; ++b)
    for (int h = 0; h < a.NH; ++h)
      for (int i = 0; i < a.Tq; ++i) {
        const T* q = a.q + b * a.q_sb + int64_t(i) * a.q_st + h * a.q_sh;
        const T* dO = a.dout + b * a.o_sb + int64_t(i) * a.o_st + h * a.o_sh;
        T* dq = a.dq + b * a.q_sb + int64_t(i) * a.q_st + h * a.q_sh;
        for (int d = 0; d < a.HS; ++d) fq[d] = elu1(q[d]);
        // The output again, in double, from the pairwise weights.
        double den = 0;
        std::fill(o.begin(), o.end(), 0.0);
        for (int j = 0; j < a.Tk; ++j) {
          if (!visible(a, b, i, j)) continue;
          const T* k = a.k + b * a.k_sb + int64_t(j) * a.k_st + (h / a.kv_group) * a.k_sh;
          const T* v = a.v + b * a.v_sb + int64_t(j) * a.v_st + (h / a.kv_group) * a.v_sh;
          double wij = 0;
          for (int d = 0; d < a.HS; ++d) wij += fq[d] * elu1(k[d]);
          den += wij;
          for (int d = 0; d < a.HS; ++d) o[d] += wij * v[d];
        }
        if (den <= 0) continue;
        for (int d = 0; d < a.HS; ++d) o[d] /= den;
        double dOo = 0;
        for (int d = 0; d < a.HS; ++d) dOo += double(dO[d]) * o[d];
        std::fill(dfq.begin(), dfq.end(), 0.0);
        for (int j = 0; j < a.Tk; ++j) {
          if (!visible(a, b, i, j)) continue;
          const T* k = a.k + b * a.k_sb + int64_t(j) * a.k_st + (h / a.kv_group) * a.k_sh;
          const T* v = a.v + b * a.v_sb + int64_t(j) * a.v_st + (h / a.kv_group) * a.v_sh;
          T* dk = a.dk + b * a.k_sb + int64_t(j) * a.k_st + (h / a.kv_group) * a.k_sh;
          T* dv = a.dv + b * a.v_sb + int64_t(j) * a.v_st + (h / a.kv_group) * a.v_sh;
          double wij = 0, dOv = 0;
          for (int d = 0; d < a.HS; ++d) {
            fk[d] = elu1(k[d]);
            wij += fq[d] * fk[d];
            dOv += double(dO[d]) * v[d];
          }
          const double dw = (dOv - dOo) / den;
          for (int d = 0; d < a.HS; ++d) {
            dv[d] += T(wij / den * dO[d]);
            dfq[d] += dw * fk[d];
            dk[d] += T(dw * fq[d] * elu1_grad(k[d]));
          }
        }
        for (int d = 0; d < a.HS; ++d) dq[d] += T(dfq[d] * elu1_grad(q[d]));
      }
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
    const T* k = a.k + b * a.k_sb + int64_t(j) * a.k_st + (h / a.kv_group) * a.k_sh;
    double s = 0;
    for (int d = 0; d < a.HS; ++d) s += double(q[d]) * k[d];
    p[j] = s * scale;
    if (a.alibi) p[j] -= double(a.alibi[h]) * std::abs(a.q_offset + i - j);
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
  if (a.kind == AttnKind::Linear) return linear_forward(a);
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
            acc += p[j] * a.v[b * a.v_sb + int64_t(j) * a.v_st + (h / a.kv_group) * a.v_sh + d];
          o[d] = T(acc);
        }
      }
}

template <typename T>
void attention_backward(const AttnArgs<T>& a) {
  if (a.kind == AttnKind::Linear) return linear_backward(a);
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
          const T* v = a.v + b * a.v_sb + int64_t(j) * a.v_st + (h / a.kv_group) * a.v_sh;
          T* dv = a.dv + b * a.v_sb + int64_t(j) * a.v_st + (h / a.kv_group) * a.v_sh;
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
          const T* k = a.k + b * a.k_sb + int64_t(j) * a.k_st + (h / a.kv_group) * a.k_sh;
          T* dk = a.dk + b * a.k_sb + int64_t(j) * a.k_st + (h / a.kv_group) * a.k_sh;
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

// Every backward kernel against central finite differences, in double precision on tiny
// shapes, through the reference backend. The loss is L = sum(out * R) for a random R, so the
// analytic gradient is backward(dout = R).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "qkv/backend/ref/ref.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

using Vec = std::vector<double>;
using test::randn;

// d/dx of f(x) = sum(forward(x) * R) by central differences, for every element of x.
Vec numeric_grad(Vec& x, const std::function<double()>& loss) {
  const double eps = 1e-6;
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double keep = x[i];
    x[i] = keep + eps;
    double lp = loss();
    x[i] = keep - eps;
    double lm = loss();
    x[i] = keep;
    g[i] = (lp - lm) / (2 * eps);
  }
  return g;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

#define EXPECT_GRAD(analytic, numeric) \
  EXPECT_TRUE(test::all_close(analytic, numeric, 1e-6, 1e-7, #analytic))

TEST(GradCheck, Matmul) {
  const int M = 3, N = 5, K = 4;
  Vec A = randn<double>(M * K, 1), B = randn<double>(K * N, 2), R = randn<double>(M * N, 3);
  auto loss = [&] {
    Vec C(M * N);
    ref::gemm<double>(false, false, M, N, K, 1.0, A.data(), K, B.data(), N, 0.0, C.data(), N);
    return dot(C, R);
  };
  // dA = R @ B^T, dB = A^T @ R (the matmul backward as the model runs it).
  Vec dA(M * K), dB(K * N);
  ref::gemm<double>(false, true, M, K, N, 1.0, R.data(), N, B.data(), N, 0.0, dA.data(), K);
  ref::gemm<double>(true, false, K, N, M, 1.0, A.data(), K, R.data(), N, 0.0, dB.data(), N);
  EXPECT_GRAD(dA, numeric_grad(A, loss));
  EXPECT_GRAD(dB, numeric_grad(B, loss));
}

TEST(GradCheck, Encoder) {
  const int B = 2, T = 3, C = 4, V = 5;
  std::vector<int32_t> ids = {0, 3, 3, 1, 4, 0};
  Vec wte = randn<double>(V * C, 4), wpe = randn<double>(T * C, 5), R = randn<double>(B * T * C, 6);
  auto loss = [&] {
    Vec o(B * T * C);
    ref::encoder_forward(o.data(), ids.data(), wte.data(), wpe.data(), B, T, C);
    return dot(o, R);
  };
  Vec dwte(wte.size()), dwpe(wpe.size());
  ref::encoder_backward(dwte.data(), dwpe.data(), R.data(), ids.data(), B, T, C);
  EXPECT_GRAD(dwte, numeric_grad(wte, loss));
  EXPECT_GRAD(dwpe, numeric_grad(wpe, loss));
}

TEST(GradCheck, LayerNorm) {
  const int N = 3, C = 5;
  Vec x = randn<double>(N * C, 7), w = randn<double>(C, 8), b = randn<double>(C, 9),
      R = randn<double>(N * C, 10);
  Vec mean(N), rstd(N);
  auto loss = [&] {
    Vec o(N * C);
    ref::layernorm_forward(o.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C,
                           1e-5f);
    return dot(o, R);
  };
  loss();
  Vec dx(x.size()), dw(C), db(C);
  ref::layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(),
                          mean.data(), rstd.data(), N, C);
  EXPECT_GRAD(dx, numeric_grad(x, loss));
  EXPECT_GRAD(dw, numeric_grad(w, loss));
  EXPECT_GRAD(db, numeric_grad(b, loss));
}

TEST(GradCheck, RmsNormAndRelu) {
  const int N = 3, C = 5;
  Vec x = randn<double>(N * C, 27), w = randn<double>(C, 28), R = randn<double>(N * C, 29);
  Vec rstd(N);
  auto loss = [&] {
    Vec o(N * C);
    ref::rmsnorm_forward(o.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
    return dot(o, R);
  };
  loss();
  Vec dx(x.size()), dw(C);
  ref::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
  EXPECT_GRAD(dx, numeric_grad(x, loss));
  EXPECT_GRAD(dw, numeric_grad(w, loss));
  // ReLU away from its kink.
  Vec y = randn<double>(N * C, 30);
  for (auto& v : y) v += v > 0 ? 0.1 : -0.1;
  auto loss_relu = [&] {
    Vec o(y.size());
    ref::relu_forward(o.data(), y.data(), int64_t(y.size()));
    return dot(o, R);
  };
  Vec dy(y.size());
  ref::relu_backward(dy.data(), y.data(), R.data(), int64_t(y.size()));
  EXPECT_GRAD(dy, numeric_grad(y, loss_relu));
}

TEST(GradCheck, SwigluAndRope) {
  const int N = 3, H = 4;
  Vec x = randn<double>(N * 2 * H, 34, 2.0), R = randn<double>(N * H, 35);
  auto loss = [&] {
    Vec o(N * H);
    ref::swiglu_forward(o.data(), x.data(), N, H);
    return dot(o, R);
  };
  Vec dx(x.size());
  ref::swiglu_backward(dx.data(), x.data(), R.data(), N, H);
  EXPECT_GRAD(dx, numeric_grad(x, loss));
  // Rotary is linear in x: d sum(rope(x) R)/dx is the inverse rotation of R.
  const int rows = 4, T = 2, heads = 2, HS = 4, stride = 9;
  Vec y = randn<double>(rows * stride, 36), S = randn<double>(rows * stride, 37);
  auto loss_rope = [&] {
    Vec o = y;
    ref::rope_apply(o.data(), rows, T, 5, stride, heads, HS, 100.0f, false);
    return dot(o, S);
  };
  Vec dy = S;
  ref::rope_apply(dy.data(), rows, T, 5, stride, heads, HS, 100.0f, true);
  EXPECT_GRAD(dy, numeric_grad(y, loss_rope));
}

TEST(GradCheck, BiasAndGelu) {
  const int N = 3, C = 4;
  Vec x = randn<double>(N * C, 11, 2.0), b = randn<double>(C, 12), R = randn<double>(N * C, 13);
  auto loss_bias = [&] {
    Vec o = x;
    ref::bias_forward(o.data(), b.data(), N, C);
    return dot(o, R);
  };
  Vec db(C);
  ref::bias_backward(db.data(), R.data(), N, C);
  EXPECT_GRAD(db, numeric_grad(b, loss_bias));
  auto loss_gelu = [&] {
    Vec o(x.size());
    ref::gelu_forward(o.data(), x.data(), int64_t(x.size()));
    return dot(o, R);
  };
  Vec dx(x.size());
  ref::gelu_backward(dx.data(), x.data(), R.data(), int64_t(x.size()));
  EXPECT_GRAD(dx, numeric_grad(x, loss_gelu));
}

TEST(GradCheck, CausalAttention) {
  const int B = 2, NH = 2, T = 4, HS = 3, C = NH * HS;
  Vec qkv = randn<double>(B * T * 3 * C, 14), R = randn<double>(B * T * C, 15);
  Vec lse(B * NH * T);
  auto loss = [&] {
    Vec o(B * T * C);
    auto a = attn_args_packed_qkv<double>(qkv.data(), o.data(), lse.data(), B, T, NH, HS);
    ref::attention_forward(a);
    return dot(o, R);
  };
  loss();
  Vec o(B * T * C), dqkv(qkv.size());
  auto a = attn_args_packed_qkv<double>(qkv.data(), o.data(), lse.data(), B, T, NH, HS);
  ref::attention_forward(a);
  a.dout = R.data();
  a.dq = dqkv.data();
  a.dk = dqkv.data() + C;
  a.dv = dqkv.data() + 2 * C;
  ref::attention_backward(a);
  EXPECT_GRAD(dqkv, numeric_grad(qkv, loss));
}

TEST(GradCheck, PaddedBidirectionalAttention) {
  const int B = 2, NH = 1, T = 4, HS = 3, C = NH * HS;
  const std::vector<int32_t> lens = {3, 1};
  Vec qkv = randn<double>(B * T * 3 * C, 18), R = randn<double>(B * T * C, 19);
  Vec lse(B * NH * T);
  auto args = [&](Vec& o) {
    auto a = attn_args_packed_qkv<double>(qkv.data(), o.data(), lse.data(), B, T, NH, HS);
    a.causal = false;
    a.key_len = lens.data();
    return a;
  };
  auto loss = [&] {
    Vec o(B * T * C);
    ref::attention_forward(args(o));
    return dot(o, R);
  };
  Vec o(B * T * C), dqkv(qkv.size());
  auto a = args(o);
  ref::attention_forward(a);
  a.dout = R.data();
  a.dq = dqkv.data();
  a.dk = dqkv.data() + C;
  a.dv = dqkv.data() + 2 * C;
  ref::attention_backward(a);
  EXPECT_GRAD(dqkv, numeric_grad(qkv, loss));
}

// Every attention rule (kernel_args.h), causal and bidirectional, with key padding.
TEST(GradCheck, AttentionRules) {
  const int B = 2, NH = 1, T = 9, HS = 3, C = NH * HS;
  const std::vector<int32_t> lens = {9, 6};
  struct Rule {
    const char* name;
    AttnKind kind;
    int window, block, local_blocks, global;
  };
  for (const Rule& r : {Rule{"sliding3", AttnKind::Sliding, 3, 0, 0, 0},
                        Rule{"sliding4", AttnKind::Sliding, 4, 0, 0, 0},
                        Rule{"block_sparse", AttnKind::BlockSparse, 0, 2, 1, 1},
                        Rule{"linear", AttnKind::Linear, 0, 0, 0, 0}})
    for (bool causal : {true, false}) {
      SCOPED_TRACE(std::string(r.name) + (causal ? " causal" : " bidirectional"));
      Vec qkv = randn<double>(B * T * 3 * C, 14), R = randn<double>(B * T * C, 15);
      Vec lse(B * NH * T);
      auto args = [&](Vec& o) {
        auto a = attn_args_packed_qkv<double>(qkv.data(), o.data(), lse.data(), B, T, NH, HS);
        a.causal = causal;
        a.key_len = lens.data();
        a.kind = r.kind;
        a.window = r.window;
        a.block = r.block;
        a.local_blocks = r.local_blocks;
        a.global = r.global;
        return a;
      };
      auto loss = [&] {
        Vec o(B * T * C);
        ref::attention_forward(args(o));
        return dot(o, R);
      };
      Vec o(B * T * C), dqkv(qkv.size());
      auto a = args(o);
      ref::attention_forward(a);
      a.dout = R.data();
      a.dq = dqkv.data();
      a.dk = dqkv.data() + C;
      a.dv = dqkv.data() + 2 * C;
      ref::attention_backward(a);
      EXPECT_GRAD(dqkv, numeric_grad(qkv, loss));
    }
}

// Grouped-query attention (4 query heads over 2 key/value heads) with ALiBi slopes, dense and
// sliding, causal and bidirectional, with key padding: q (B, T, 4 HS) and kv (B, T, 2 * 2 HS).
TEST(GradCheck, GroupedQueryAlibiAttention) {
  const int B = 2, NH = 4, NKV = 2, T = 6, HS = 2, C = NH * HS, CKV = NKV * HS;
  const std::vector<int32_t> lens = {6, 4};
  const Vec slopes = {0.5, 0.25, 0.125, 0.0625};
  for (AttnKind kind : {AttnKind::Dense, AttnKind::Sliding})
    for (bool causal : {true, false}) {
      SCOPED_TRACE(std::string(kind == AttnKind::Dense ? "dense" : "sliding") +
                   (causal ? " causal" : " bidirectional"));
      Vec q = randn<double>(B * T * C, 31), kv = randn<double>(B * T * 2 * CKV, 32);
      Vec R = randn<double>(B * T * C, 33), lse(B * NH * T);
      auto args = [&](Vec& o) {
        AttnArgs<double> a;
        a.B = B;
        a.NH = NH;
        a.Tq = a.Tk = T;
        a.HS = HS;
        a.kv_group = NH / NKV;
        a.alibi = slopes.data();
        a.causal = causal;
        a.kind = kind;
        a.window = 3;
        a.key_len = lens.data();
        a.q = q.data();
        a.k = kv.data();
        a.v = kv.data() + CKV;
        a.out = o.data();
        a.lse = lse.data();
        a.q_sb = a.o_sb = int64_t(T) * C;
        a.q_st = a.o_st = C;
        a.k_sb = a.v_sb = int64_t(T) * 2 * CKV;
        a.k_st = a.v_st = 2 * CKV;
        a.q_sh = a.k_sh = a.v_sh = a.o_sh = HS;
        return a;
      };
      auto loss = [&] {
        Vec o(B * T * C);
        ref::attention_forward(args(o));
        return dot(o, R);
      };
      Vec o(B * T * C), dq(q.size()), dkv(kv.size());
      auto a = args(o);
      ref::attention_forward(a);
      a.dout = R.data();
      a.dq = dq.data();
      a.dk = dkv.data();
      a.dv = dkv.data() + CKV;
      ref::attention_backward(a);
      EXPECT_GRAD(dq, numeric_grad(q, loss));
      EXPECT_GRAD(dkv, numeric_grad(kv, loss));
    }
}

TEST(GradCheck, CrossEntropy) {
  const int N = 4, V = 6;
  Vec logits = randn<double>(N * V, 16, 2.0), dl = randn<double>(N, 17);
  std::vector<int32_t> tg = {2, 0, -1, 5};
  auto loss = [&] {
    Vec l(N), s(N);
    ref::crossentropy_forward(l.data(), s.data(), logits.data(), tg.data(), N, V);
    return dot(l, dl);
  };
  Vec l(N), s(N), g(logits.size());
  ref::crossentropy_forward(l.data(), s.data(), logits.data(), tg.data(), N, V);
  ref::crossentropy_backward(g.data(), logits.data(), s.data(), tg.data(), dl.data(), N, V);
  EXPECT_GRAD(g, numeric_grad(logits, loss));
}

}  // namespace
}  // namespace qkv

// The attention kinds (sliding window, block-sparse, linear) against their oracles:
//  - the reference kernel (one explicit visibility rule per (query, key) pair, double precision),
//    itself checked by central finite differences in gradcheck_test.cpp;
//  - the fused CPU kernels (which skip whole blocks) against that reference on every ISA,
//    causal and bidirectional, with key padding and at a decode offset;
//  - the degenerate settings that must equal dense attention (window >= T, every block on).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/backend/ref/ref.h"
#include "qkv/core/aligned.h"
#include "qkv/io/safetensors.h"
#include "tests/test_paths.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

using test::all_close;
using test::randn;

struct Kind {
  const char* name;
  AttnKind kind;
  int window = 0, block = 0, local_blocks = 0, global = 0;
};

template <typename T>
void set_kind(AttnArgs<T>& a, const Kind& k) {
  a.kind = k.kind;
  a.window = k.window;
  a.block = k.block;
  a.local_blocks = k.local_blocks;
  a.global = k.global;
}

// Gradient buffers wired into args built by attn_args_packed_qkv.
template <typename T>
void set_grads(AttnArgs<T>& a, T* dqkv, const T* dout, int C) {
  a.dout = dout;
  a.dq = dqkv;
  a.dk = dqkv + C;
  a.dv = dqkv + 2 * C;
}

// The reference's rules, spelled out on a small grid (this is the semantics kernel_args.h
// documents; a regression here would silently change what every kernel is compared against).
TEST(AttentionKinds, ReferenceRulesOnAGrid) {
  const int T = 8;
  auto pattern = [&](const Kind& k, bool causal) {
    // One head of size 1 with q = k = 0: every visible key gets the same weight, so out_i (with
    // v_j = 2^j) encodes the set of visible keys.
    std::vector<double> q(T, 0.0), kk(T, 0.0), v(T), o(T);
    for (int j = 0; j < T; ++j) v[j] = double(1 << j);
    AttnArgs<double> a;
    a.B = a.NH = a.HS = 1;
    a.Tq = a.Tk = T;
    a.causal = causal;
    set_kind(a, k);
    a.q = q.data();
    a.k = kk.data();
    a.v = v.data();
    a.out = o.data();
    a.q_sb = a.k_sb = a.v_sb = a.o_sb = T;
    a.q_st = a.k_st = a.v_st = a.o_st = 1;
    ref::attention_forward(a);
    std::string rows;
    for (int i = 0; i < T; ++i) {
      // out_i = (sum of visible 2^j) / count; recover the set by trying every count.
      for (int n = 1; n <= T; ++n) {
        const double s = o[i] * n;
        const long m = std::lround(s);
        if (std::abs(s - double(m)) < 1e-9 && __builtin_popcountl(m) == n) {
          for (int j = 0; j < T; ++j) rows += (m >> j) & 1 ? 'x' : '.';
          break;
        }
      }
      rows += '|';
    }
    return rows;
  };
  EXPECT_EQ(pattern({"", AttnKind::Sliding, 3}, true),
            "x.......|xx......|xxx.....|.xxx....|..xxx...|...xxx..|....xxx.|.....xxx|");
  EXPECT_EQ(pattern({"", AttnKind::Sliding, 2}, false),
            "xx......|xxx.....|.xxx....|..xxx...|...xxx..|....xxx.|.....xxx|......xx|");
  EXPECT_EQ(pattern({"", AttnKind::BlockSparse, 0, 2, 0, 1}, false),
            "xxxxxxxx|xx......|x.xx....|x.xx....|x...xx..|x...xx..|x.....xx|x.....xx|");
  EXPECT_EQ(pattern({"", AttnKind::BlockSparse, 0, 2, 1, 0}, true),
            "x.......|xx......|xxx.....|xxxx....|..xxx...|..xxxx..|....xxx.|....xxxx|");
}

// ---- the CPU kernels against the reference ----
class AttentionKindsCpu : public test::IsaTest {};

// Runs forward and backward of both backends on one packed-qkv problem and compares.
void compare_with_reference(const Kind& k, bool causal, int B, int NH, int T, int HS,
                            const std::vector<int32_t>* lens, uint64_t seed) {
  SCOPED_TRACE(std::string(k.name) + (causal ? " causal" : " bidirectional") +
               " B=" + std::to_string(B) + " T=" + std::to_string(T) + (lens ? " padded" : ""));
  const int C = NH * HS;
  auto qkv = randn(size_t(B) * T * 3 * C, seed);
  std::vector<float> o1(size_t(B) * T * C), o2(o1.size()), l1(size_t(B) * NH * T), l2(l1.size());
  auto a1 = attn_args_packed_qkv<float>(qkv.data(), o1.data(), l1.data(), B, T, NH, HS);
  auto a2 = attn_args_packed_qkv<float>(qkv.data(), o2.data(), l2.data(), B, T, NH, HS);
  for (auto* a : {&a1, &a2}) {
    a->causal = causal;
    a->key_len = lens ? lens->data() : nullptr;
    set_kind(*a, k);
  }
  ref::attention_forward(a1);
  cpu::attention_forward(a2);
  EXPECT_TRUE(all_close(o2, o1, 1e-4, 2e-5, "out"));
  EXPECT_TRUE(all_close(l2, l1, 1e-4, 1e-5, "lse"));
  auto dout = randn(o1.size(), seed + 1);
  std::vector<float> g1(qkv.size()), g2(qkv.size());
  set_grads(a1, g1.data(), dout.data(), C);
  set_grads(a2, g2.data(), dout.data(), C);
  ref::attention_backward(a1);
  cpu::attention_backward(a2);
  EXPECT_TRUE(all_close(g2, g1, 2e-4, 1e-4, "dqkv"));
  for (float x : g2) ASSERT_TRUE(std::isfinite(x));
  // The last query, or the last 3, at an offset against all keys (the KV-cache decode shape;
  // one query takes the kernel's own path).
  for (int nq : {1, std::min(3, T)}) {
    AttnArgs<float> d1 = a1, d2 = a2;
    std::vector<float> od1(o1.size()), od2(o1.size());
    for (auto* d : {&d1, &d2}) {
      d->Tq = nq;
      d->q_offset = T - nq;
      d->q = qkv.data() + int64_t(T - nq) * 3 * C;
      d->lse = nullptr;
    }
    d1.out = od1.data();
    d2.out = od2.data();
    ref::attention_forward(d1);
    cpu::attention_forward(d2);
    EXPECT_TRUE(all_close(od2, od1, 1e-4, 2e-5, "decode nq=" + std::to_string(nq)));
  }
}

const Kind kCpuKinds[] = {
    {"sliding1", AttnKind::Sliding, 1},
    {"sliding7", AttnKind::Sliding, 7},
    {"sliding64", AttnKind::Sliding, 64},
    {"sliding100", AttnKind::Sliding, 100},
    {"block8_local1_global3", AttnKind::BlockSparse, 0, 8, 1, 3},
    {"block16_local0", AttnKind::BlockSparse, 0, 16, 0, 0},
    {"block32_local2_global40", AttnKind::BlockSparse, 0, 32, 2, 40},
    {"block64_local1_global1", AttnKind::BlockSparse, 0, 64, 1, 1},
    {"linear", AttnKind::Linear},
};

TEST_P(AttentionKindsCpu, MatchReference) {
  const std::vector<int32_t> lens = {300, 151, 0};
  for (const Kind& k : kCpuKinds)
    for (bool causal : {true, false}) {
      compare_with_reference(k, causal, 1, 2, 300, 16, nullptr, 71);
      compare_with_reference(k, causal, 3, 2, 300, 16, &lens, 72);
      compare_with_reference(k, causal, 2, 1, 37, 64, nullptr, 73);
    }
}

// Degenerate settings equal dense attention in the fused kernels themselves (causal: W >= T;
// bidirectional: W >= 2T, since the window reaches W/2 each way).
// Grouped-query attention and ALiBi in the fused kernels against the reference: q and the
// key/value heads in separate buffers, every softmax rule, causal and bidirectional, padded.
TEST_P(AttentionKindsCpu, GroupedQueryAndAlibiMatchReference) {
  const int B = 3, T = 150, HS = 16;
  const std::vector<int32_t> lens = {150, 77, 0};
  struct Shape {
    int NH, NKV;
    bool alibi;
  };
  for (const Shape sh : {Shape{4, 1, false}, Shape{4, 2, true}, Shape{3, 3, true}})
    for (const Kind& k : {Kind{"dense", AttnKind::Dense}, Kind{"sliding9", AttnKind::Sliding, 9},
                          Kind{"block16", AttnKind::BlockSparse, 0, 16, 1, 5}})
      for (bool causal : {true, false}) {
        SCOPED_TRACE(std::string(k.name) + (causal ? " causal" : " bidirectional") +
                     " NH=" + std::to_string(sh.NH) + " NKV=" + std::to_string(sh.NKV) +
                     (sh.alibi ? " alibi" : ""));
        const int C = sh.NH * HS, CKV = sh.NKV * HS;
        auto q = randn(size_t(B) * T * C, 81), kv = randn(size_t(B) * T * 2 * CKV, 82);
        std::vector<float> slopes(size_t(sh.NH));
        for (int h = 0; h < sh.NH; ++h) slopes[size_t(h)] = std::pow(2.0f, -1.0f - float(h));
        std::vector<float> o1(q.size()), o2(q.size()), l1(size_t(B) * sh.NH * T), l2(l1.size());
        auto args = [&](float* o, float* l) {
          AttnArgs<float> a;
          a.B = B;
          a.NH = sh.NH;
          a.Tq = a.Tk = T;
          a.HS = HS;
          a.kv_group = sh.NH / sh.NKV;
          a.alibi = sh.alibi ? slopes.data() : nullptr;
          a.causal = causal;
          a.key_len = lens.data();
          set_kind(a, k);
          a.q = q.data();
          a.k = kv.data();
          a.v = kv.data() + CKV;
          a.out = o;
          a.lse = l;
          a.q_sb = a.o_sb = int64_t(T) * C;
          a.q_st = a.o_st = C;
          a.k_sb = a.v_sb = int64_t(T) * 2 * CKV;
          a.k_st = a.v_st = 2 * CKV;
          a.q_sh = a.k_sh = a.v_sh = a.o_sh = HS;
          return a;
        };
        auto a1 = args(o1.data(), l1.data()), a2 = args(o2.data(), l2.data());
        ref::attention_forward(a1);
        cpu::attention_forward(a2);
        EXPECT_TRUE(all_close(o2, o1, 1e-4, 2e-5, "out"));
        EXPECT_TRUE(all_close(l2, l1, 1e-4, 1e-5, "lse"));
        auto dout = randn(o1.size(), 83);
        std::vector<float> dq1(q.size()), dq2(q.size()), dkv1(kv.size()), dkv2(kv.size());
        for (auto [a, dq, dkv] : {std::tuple{&a1, &dq1, &dkv1}, std::tuple{&a2, &dq2, &dkv2}}) {
          a->dout = dout.data();
          a->dq = dq->data();
          a->dk = dkv->data();
          a->dv = dkv->data() + CKV;
        }
        ref::attention_backward(a1);
        cpu::attention_backward(a2);
        EXPECT_TRUE(all_close(dq2, dq1, 2e-4, 1e-4, "dq"));
        EXPECT_TRUE(all_close(dkv2, dkv1, 2e-4, 1e-4, "dkv"));
        // The exact maps recomputed from lse agree with the reference's probabilities.
        std::vector<float> map(size_t(T) * T), ones(size_t(T) * C);
        for (int h : {0, sh.NH - 1}) {
          cpu::attention_probs(a2, 1, h, map.data());
          // Rows sum to 1 where the query sees a key (item 1 has 77 keys), else 0.
          for (int i = 0; i < T; i += 37) {
            double sum = 0;
            for (int j = 0; j < T; ++j) sum += map[size_t(i) * T + size_t(j)];
            const bool sees = std::isfinite(l2[(size_t(1) * sh.NH + size_t(h)) * T + size_t(i)]);
            EXPECT_NEAR(sum, sees ? 1.0 : 0.0, 1e-4);
          }
          // out = map @ v for that head.
          for (int i = 0; i < T; i += 29)
            for (int d = 0; d < HS; ++d) {
              double acc = 0;
              for (int j = 0; j < T; ++j)
                acc += double(map[size_t(i) * T + size_t(j)]) *
                       kv[size_t(1) * T * 2 * CKV + size_t(j) * 2 * CKV + size_t(CKV) +
                          size_t(h / a2.kv_group) * HS + size_t(d)];
              EXPECT_NEAR(acc, o2[size_t(1) * T * C + size_t(i) * C + size_t(h) * HS + size_t(d)],
                          1e-4);
            }
        }
      }
}

TEST_P(AttentionKindsCpu, FullWindowAndAllBlocksEqualDense) {
  const int B = 2, NH = 2, T = 200, HS = 32, C = NH * HS;
  const std::vector<int32_t> lens = {200, 123};
  for (bool causal : {true, false}) {
    auto qkv = randn(size_t(B) * T * 3 * C, 81);
    auto dout = randn(size_t(B) * T * C, 82);
    auto run = [&](const Kind& k, std::vector<float>& out, std::vector<float>& grad) {
      out.assign(size_t(B) * T * C, 0.0f);
      grad.assign(qkv.size(), 0.0f);
      std::vector<float> lse(size_t(B) * NH * T);
      auto a = attn_args_packed_qkv<float>(qkv.data(), out.data(), lse.data(), B, T, NH, HS);
      a.causal = causal;
      a.key_len = lens.data();
      set_kind(a, k);
      cpu::attention_forward(a);
      set_grads(a, grad.data(), dout.data(), C);
      cpu::attention_backward(a);
    };
    std::vector<float> od, gd, o, g;
    run({"dense", AttnKind::Dense}, od, gd);
    const Kind same[] = {{"sliding=T", AttnKind::Sliding, T},
                         {"sliding=2T", AttnKind::Sliding, 2 * T + 1},
                         {"all blocks", AttnKind::BlockSparse, 0, 8, T / 8, 0},
                         {"all global", AttnKind::BlockSparse, 0, 40, 0, T}};
    for (const Kind& k : same) {
      // Bidirectional windows reach W/2 each way: W = T covers a causal row, not a full one.
      if (!causal && k.kind == AttnKind::Sliding && k.window < 2 * T) continue;
      SCOPED_TRACE(std::string(k.name) + (causal ? " causal" : " bidirectional"));
      run(k, o, g);
      EXPECT_TRUE(all_close(o, od, 1e-5, 1e-6, "out vs dense"));
      EXPECT_TRUE(all_close(g, gd, 1e-5, 1e-6, "grad vs dense"));
    }
  }
}

// The fused kernels never hold a T x T matrix: what one forward+backward allocates (scratch,
// the lse rows) grows linearly in T. Counted by AlignedAlloc, which every kernel buffer uses.
TEST(AttentionKinds, ExtraMemoryGrowsLinearlyInT) {
  const int NH = 2, HS = 16, C = NH * HS;
  for (AttnKind kind : {AttnKind::Dense, AttnKind::Sliding, AttnKind::Linear}) {
    auto extra = [&](int T) {
      auto qkv = randn(size_t(T) * 3 * C, 91), dout = randn(size_t(T) * C, 92);
      std::vector<float> out(size_t(T) * C), g(qkv.size());
      cpu::release_attention_scratch();
      reset_aligned_peak();
      const int64_t base = aligned_bytes_in_use();
      {
        AlignedVector<float> lse(size_t(NH) * T);
        auto a = attn_args_packed_qkv<float>(qkv.data(), out.data(), lse.data(), 1, T, NH, HS);
        a.kind = kind;
        a.window = kind == AttnKind::Sliding ? 64 : 0;
        cpu::attention_forward(a);
        set_grads(a, g.data(), dout.data(), C);
        cpu::attention_backward(a);
      }
      return aligned_peak_bytes() - base;
    };
    const int64_t small = extra(1024), large = extra(4096);
    SCOPED_TRACE(std::to_string(int(kind)) + ": " + std::to_string(small) + " -> " +
                 std::to_string(large) + " bytes");
    EXPECT_GT(small, 0);
    EXPECT_LE(large, 4 * small + 4096) << "more than linear growth";
    EXPECT_LT(large, int64_t(4096) * 4096 * 4 / 16) << "a sixteenth of one T x T matrix";
  }
}

// Every rule, causal and bidirectional, with key padding (one sequence empty), against PyTorch's
// straightforward version of the same rule (tools/reference/attention_ref.py: explicit masks,
// whole score matrices, autograd): outputs and all three gradients.
TEST_P(AttentionKindsCpu, MatchPyTorch) {
  const std::string dir = test::temp_dir("attnref");
  ASSERT_EQ(test::run("/usr/bin/python3 " + test::source_dir() +
                      "/tools/reference/attention_ref.py --out " + dir),
            0);
  SafetensorsFile f(dir + "/attention.safetensors");
  const Tensor q = f.get("q"), k = f.get("k"), v = f.get("v"), dout = f.get("dout");
  const Tensor lens = f.get("lens");
  const int B = int(q.dim(0)), NH = int(q.dim(1)), T = int(q.dim(2)), HS = int(q.dim(3));
  const Kind kinds[] = {{"dense", AttnKind::Dense},
                        {"sliding", AttnKind::Sliding, 9},
                        {"block_sparse", AttnKind::BlockSparse, 0, 8, 1, 3},
                        {"linear", AttnKind::Linear}};
  const size_t n = size_t(B) * NH * T * HS;
  for (const Kind& kind : kinds)
    for (bool causal : {true, false}) {
      const std::string name = std::string(kind.name) + (causal ? ".causal" : ".bidirectional");
      SCOPED_TRACE(name);
      std::vector<float> out(n), lse(size_t(B) * NH * T), dq(n), dk(n), dv(n);
      AttnArgs<float> a;
      a.B = B;
      a.NH = NH;
      a.Tq = a.Tk = T;
      a.HS = HS;
      a.causal = causal;
      a.key_len = lens.data<int32_t>();
      set_kind(a, kind);
      a.q = q.f32();
      a.k = k.f32();
      a.v = v.f32();
      a.out = out.data();
      a.lse = lse.data();
      a.q_sb = a.k_sb = a.v_sb = a.o_sb = int64_t(NH) * T * HS;
      a.q_sh = a.k_sh = a.v_sh = a.o_sh = int64_t(T) * HS;
      a.q_st = a.k_st = a.v_st = a.o_st = HS;
      cpu::attention_forward(a);
      a.dout = dout.f32();
      a.dq = dq.data();
      a.dk = dk.data();
      a.dv = dv.data();
      cpu::attention_backward(a);
      for (auto [what, got] : {std::pair{"out", &out}, std::pair{"dq", &dq}, std::pair{"dk", &dk},
                               std::pair{"dv", &dv}}) {
        const Tensor ref = f.get(name + "." + what);
        for (size_t i = 0; i < n; ++i) ASSERT_TRUE(std::isfinite(ref.f32()[i])) << what << " " << i;
        EXPECT_LE(test::rel_err(got->data(), ref.f32(), n), 1e-4) << what;
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Isa, AttentionKindsCpu, ::testing::Values("avx512", "avx2", "generic"));

}  // namespace
}  // namespace qkv

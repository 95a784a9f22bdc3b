// Argument structs shared by every backend's kernels (ref, cpu, later cuda), so that the
// backends have the same family names and signatures.
#pragma once

#include <cstdint>

namespace qkv {

// Scaled dot-product attention over strided Q, K, V (last dim contiguous):
//   q (B, Tq, NH, HS), k/v (B, Tk, NH, HS) via strides -> out (B, Tq, NH, HS); lse (B, NH, Tq).
// Query i sits at absolute position q_offset + i; with `causal`, it sees keys j <= q_offset + i.
// Same as F.scaled_dot_product_attention(q, k, v, is_causal=...) with scale 1/sqrt(HS).
//
// `kind` picks the rule; every kind shares the causal and key-padding semantics:
//   Dense        softmax over every visible key.
//   Sliding      softmax over the keys within `window` of the query: causal, the last `window`
//                positions (itself included, j > p - window); bidirectional, |p - j| <= window/2.
//   BlockSparse  positions fall in blocks of `block`; a query sees the keys whose block is within
//                `local_blocks` of its own, plus the first `global` positions, and those global
//                positions see every key (Longformer/BigBird-style local + global).
//   Linear       no softmax: out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j) with
//                phi(x) = elu(x) + 1 (Katharopoulos et al. 2020). O(T HS^2); `lse` then holds
//                the normaliser sum_j phi(q_i).phi(k_j) instead of a log-sum-exp.
// Key blocks that no query of a block can see are skipped, not masked, so Sliding and
// BlockSparse cost O(T window) and O(T block (2 local_blocks + 1) + T global).
enum class AttnKind : uint8_t { Dense, Sliding, BlockSparse, Linear };

template <typename T>
struct AttnArgs {
  int B = 0, NH = 0, Tq = 0, Tk = 0, HS = 0;
  int q_offset = 0;
  bool causal = true;
  AttnKind kind = AttnKind::Dense;
  int window = 0;                               // Sliding
  int block = 0, local_blocks = 0, global = 0;  // BlockSparse
  // Linear forward only: running sums (B, NH, HS*HS + HS) = (S, z) of the keys before this call's
  // first key; read first and updated in place, so generation carries O(1) state per head. The
  // call's keys then sit at the queries' positions (q_offset 0).
  T* state = nullptr;
  // Key padding: with key_len (B) set, batch item b sees only keys j < key_len[b]. A query that
  // sees no key at all outputs zeros (and its lse is +inf), never NaN.
  const int32_t* key_len = nullptr;
  // Grouped-query attention: query head h reads key/value head h / kv_group, so k and v have
  // NH / kv_group heads (1 = multi-head attention; NH = multi-query). Not with Linear.
  int kv_group = 1;
  // ALiBi (Press et al. 2022): with `alibi` set (NH slopes m_h), the score of query position p
  // and key j gets -m_h * |p - j| added before the softmax. Not with Linear.
  const T* alibi = nullptr;
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  T* out = nullptr;
  T* lse = nullptr;  // (B, NH, Tq) log-sum-exp of the scaled scores; may be null in forward
  // Strides in elements: batch, time, head (the head-size dim is contiguous).
  int64_t q_sb = 0, q_st = 0, q_sh = 0;
  int64_t k_sb = 0, k_st = 0, k_sh = 0;
  int64_t v_sb = 0, v_st = 0, v_sh = 0;
  int64_t o_sb = 0, o_st = 0, o_sh = 0;
  // Backward only: gradients (dq has q's strides, dk k's, dv v's, dout out's). Accumulated (+=).
  const T* dout = nullptr;
  T* dq = nullptr;
  T* dk = nullptr;
  T* dv = nullptr;
};

// Fills strides for the packed layout GPT uses: qkv (B, T, 3C) from one projection, with
// q at channel 0, k at C, v at 2C, head h at h*HS; out (B, T, C).
template <typename T>
AttnArgs<T> attn_args_packed_qkv(const T* qkv, T* out, T* lse, int B, int Tt, int NH, int HS) {
  AttnArgs<T> a;
  int64_t C = int64_t(NH) * HS;
  a.B = B;
  a.NH = NH;
  a.Tq = a.Tk = Tt;
  a.HS = HS;
  a.q = qkv;
  a.k = qkv + C;
  a.v = qkv + 2 * C;
  a.out = out;
  a.lse = lse;
  a.q_sb = a.k_sb = a.v_sb = int64_t(Tt) * 3 * C;
  a.q_st = a.k_st = a.v_st = 3 * C;
  a.q_sh = a.k_sh = a.v_sh = HS;
  a.o_sb = int64_t(Tt) * C;
  a.o_st = C;
  a.o_sh = HS;
  return a;
}

}  // namespace qkv

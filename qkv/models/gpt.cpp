#include "qkv/models/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/parallel.h"
#include "qkv/core/rng.h"
#include "qkv/io/json_file.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/adapter.h"
#include "qkv/models/positions.h"
#include "qkv/nn/linear.h"

namespace qkv {

namespace {
// Offsets of one layer's activations inside its slice of the activation buffer.
struct LayerActs {
  size_t ln1, ln1_mean, ln1_rstd, qkv, atty, lse, res2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu,
      res3, size;
};
LayerActs layer_acts(int B, int T, const GPTConfig& c) {
  const int C = c.n_embd, NH = c.n_head;
  const size_t N = size_t(B) * T;
  LayerActs a{};
  size_t o = 0;
  auto take = [&](size_t n) {
    size_t r = o;
    o += (n + 15) / 16 * 16;  // keep every array 64-byte aligned
    return r;
  };
  a.ln1 = take(N * C);
  a.ln1_mean = take(N);
  a.ln1_rstd = take(N);
  a.qkv = take(N * size_t(c.qkv_width()));
  a.atty = take(N * C);
  a.lse = take(size_t(B) * NH * T);
  a.res2 = take(N * C);
  a.ln2 = take(N * C);
  a.ln2_mean = take(N);
  a.ln2_rstd = take(N);
  a.fch = take(N * size_t(c.fc_width()));
  a.fch_gelu = take(N * size_t(c.mlp_hidden()));
  a.res3 = take(N * C);
  a.size = o;
  return a;
}
// ALiBi's head slopes: the geometric sequence 2^(-8/n), 2^(-16/n), ... for n heads when n is a
// power of two; otherwise the paper's rule: the sequence of the largest power of two below n,
// then every other slope of the next power's sequence.
std::vector<float> alibi_slopes(int n) {
  auto pow2_slopes = [](int m) {
    std::vector<double> out(static_cast<size_t>(m));
    for (int i = 0; i < m; ++i) out[size_t(i)] = std::pow(2.0, -8.0 * (i + 1) / m);
    return out;
  };
  int p = 1;
  while (p * 2 <= n) p *= 2;
  std::vector<double> s = pow2_slopes(p);
  const std::vector<double> extra = pow2_slopes(2 * p);
  for (int i = 0; int(s.size()) < n; i += 2) s.push_back(extra[size_t(i)]);
  return std::vector<float>(s.begin(), s.end());
}
}  // namespace

GPT::GPT(const GPTConfig& config) : config_(config) {
  config_.validate();
  const int C = config_.n_embd, QW = config_.qkv_width(), H = config_.mlp_hidden(),
            F = config_.fc_width();
  const bool bias = config_.bias;
  const bool norm_bias = bias && config_.norm == GPTConfig::Norm::LayerNorm;
  auto add = [&](const std::string& name, Shape shape, bool decay) {
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    params_.push_back({name, std::move(shape), n_params_, n, decay});
    size_t off = n_params_;
    n_params_ += (n + 15) / 16 * 16;
    return off;
  };
  wte_ = add("wte.weight", {config_.vocab_size, C}, true);
  wpe_ = config_.pos == PosEncoding::Learned ? add("wpe.weight", {config_.block_size, C}, true)
                                             : kNone;
  for (int l = 0; l < config_.n_layer; ++l) {
    std::string p = "h." + std::to_string(l) + ".";
    LayerOffsets o{};
    o.ln1_w = add(p + "ln_1.weight", {C}, false);
    o.ln1_b = norm_bias ? add(p + "ln_1.bias", {C}, false) : kNone;
    o.attn_w = add(p + "attn.c_attn.weight", {C, QW}, true);
    o.attn_b = bias ? add(p + "attn.c_attn.bias", {QW}, false) : kNone;
    o.attnproj_w = add(p + "attn.c_proj.weight", {C, C}, true);
    o.attnproj_b = bias ? add(p + "attn.c_proj.bias", {C}, false) : kNone;
    o.ln2_w = o.ln2_b = o.fc_w = o.fc_b = o.fcproj_w = o.fcproj_b = kNone;
    if (config_.mlp) {
      o.ln2_w = add(p + "ln_2.weight", {C}, false);
      o.ln2_b = norm_bias ? add(p + "ln_2.bias", {C}, false) : kNone;
      o.fc_w = add(p + "mlp.c_fc.weight", {C, F}, true);
      o.fc_b = bias ? add(p + "mlp.c_fc.bias", {F}, false) : kNone;
      o.fcproj_w = add(p + "mlp.c_proj.weight", {H, C}, true);
      o.fcproj_b = bias ? add(p + "mlp.c_proj.bias", {C}, false) : kNone;
    }
    layer_.push_back(o);
  }
  lnf_w_ = lnf_b_ = kNone;
  if (config_.final_norm()) {
    lnf_w_ = add("ln_f.weight", {C}, false);
    lnf_b_ = norm_bias ? add("ln_f.bias", {C}, false) : kNone;
  }
  cls_w_ = cls_b_ = kNone;
  if (config_.num_labels() > 0) {
    cls_w_ = add("classifier.weight", {C, config_.num_labels()}, true);
    cls_b_ = add("classifier.bias", {config_.num_labels()}, false);
  }
  params_buf_.assign(n_params_, 0.0f);
  if (config_.pos == PosEncoding::Alibi) alibi_ = alibi_slopes(config_.n_head);
}

float* GPT::grad_data() {
  if (grads_buf_.empty()) grads_buf_.assign(n_params_, 0.0f);
  return grads_buf_.data();
}

GPT GPT::make_replica() const {
  QKV_CHECK(fp32_weights_, "[gpt] a model without fp32 weights cannot train");
  GPT r(config_);
  r.params_buf_ = AlignedVector<float>();  // reads this model's instead
  r.shared_ = shared_ ? shared_ : this;
  r.prec_ = prec_;
  return r;
}

float* GPT::param(const std::string& name) {
  for (const auto& p : params_)
    if (p.name == name) return params_buf_.data() + p.offset;
  QKV_CHECK(false, "[gpt] no parameter named '{}'", name);
}

void GPT::init_weights(uint64_t seed) {
  const double std_resid = 0.02 / std::sqrt(2.0 * config_.n_layer);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param& p = params_[i];
    float* w = params_buf_.data() + p.offset;
    const bool is_bias = p.name.size() > 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0;
    const bool is_ln = p.name.find("ln_") != std::string::npos;
    if (is_bias) {
      std::fill(w, w + p.numel, 0.0f);
    } else if (is_ln) {
      std::fill(w, w + p.numel, 1.0f);
    } else {
      const bool resid = p.name.find("c_proj.weight") != std::string::npos;
      const double sd = resid ? std_resid : 0.02;
      Rng rng(seed, 1000 + i);  // one stream per tensor: independent of the layout
      for (size_t k = 0; k < p.numel; ++k) w[k] = float(rng.normal() * sd);
    }
  }
}

void GPT::zero_grad() { parallel_zero(grads_buf_.data(), int64_t(grads_buf_.size())); }

void GPT::plan_activations(int B, int T) {
  if (B == B_ && T == T_) return;
  const int C = config_.n_embd, V = config_.vocab_size;
  const size_t N = size_t(B) * T;
  LayerActs la = layer_acts(B, T, config_);
  size_t o = 0;
  auto take = [&](size_t n) {
    size_t r = o;
    o += (n + 15) / 16 * 16;
    return r;
  };
  act_encoded_ = take(N * C);
  act_layer_stride_ = la.size;
  act_layer_ = take(la.size * config_.n_layer);
  act_lnf_ = take(N * C);
  act_lnf_mean_ = take(N);
  act_lnf_rstd_ = take(N);
  act_logits_ = take(N * V);
  act_losses_ = take(N);
  act_lse_ = take(N);
  act_dlosses_ = take(N);
  acts_.assign(o, 0.0f);
  if (config_.pos == PosEncoding::Sinusoidal) {
    pos_table_.assign(size_t(T) * C, 0.0f);
    for (int t = 0; t < T; ++t) sinusoid_add(pos_table_.data() + size_t(t) * C, t, C);
  }
  ids_.assign(N, 0);
  targets_.assign(N, -1);
  grad_acts_.clear();
  B_ = B;
  T_ = T;
}

const float* GPT::forward_trunk(const int32_t* ids, int B, int T, const int32_t* lens) {
  QKV_CHECK(fp32_weights_,
            "[gpt] this model holds int8 weights, for inference only; training "
            "needs the fp32 checkpoint");
  const GPTConfig& c = config_;
  QKV_CHECK(B >= 1 && T >= 1, "[gpt] batch {} x {} is empty", B, T);
  QKV_CHECK(T <= c.max_positions(), "[gpt] sequence length {} exceeds block_size {}", T,
            c.block_size);
  plan_activations(B, T);
  const int C = c.n_embd, V = c.vocab_size;
  const int64_t N = int64_t(B) * T;
  for (int64_t i = 0; i < N; ++i)
    QKV_CHECK(ids[i] >= 0 && ids[i] < V,
              "[gpt] token id {} at position {} is outside the vocabulary [0, {})", ids[i], i, V);
  have_lens_ = lens != nullptr;
  lens_.assign(size_t(B), T);
  if (lens)
    for (int b = 0; b < B; ++b) {
      QKV_CHECK(lens[b] >= 1 && lens[b] <= T, "[gpt] sequence {} has length {}, outside [1, {}]", b,
                lens[b], T);
      lens_[size_t(b)] = lens[b];
    }
  std::copy(ids, ids + N, ids_.begin());
  have_targets_ = false;

  const float* P = pdata();
  float* A = acts_.data();
  const LayerActs la = layer_acts(B, T, c);
  auto opt = [&](size_t off) { return off == kNone ? nullptr : P + off; };

  const float* pos_add = wpe_ != kNone                      ? P + wpe_
                         : c.pos == PosEncoding::Sinusoidal ? pos_table_.data()
                                                            : nullptr;
  cpu::encoder_forward(A + act_encoded_, ids, P + wte_, pos_add, B, T, C);
  hooked_pass_ = hooks_ != nullptr;
  auto hook = [&](HookPoint point, int layer, float* data, int width) {
    if (hooks_) hooks_->run({point, layer}, data, B, T, width);
  };
  hook(HookPoint::Embed, -1, A + act_encoded_, C);
  const bool post = !c.final_norm();
  const int QW = c.qkv_width(), H = c.mlp_hidden(), F = c.fc_width();
  const float* x = A + act_encoded_;
  // Residual adds run fused with the norm that reads their sum (one pass over the stream, not
  // two): the sum's own norm (post-norm; pre-norm's ln_2) and, without hooks that might edit
  // a block's output in between, the next block's ln_1.
  bool ln1_ready = false;
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerOffsets& w = layer_[l];
    float* L = A + act_layer_ + act_layer_stride_ * l;
    // Pre-norm: attention reads ln_1(x); post-norm: x itself, and ln_1 follows the residual.
    // (Layers after the first find ln_1 already computed when the previous layer's residual
    // add ran fused with it.)
    const float* attn_in = x;
    if (!post) {
      if (!ln1_ready)
        norm_forward(L + la.ln1, L + la.ln1_mean, L + la.ln1_rstd, x, P + w.ln1_w, opt(w.ln1_b), N,
                     C, c.ln_eps);
      attn_in = L + la.ln1;
    }
    nn::linear_forward(L + la.qkv, attn_in, P + w.attn_w, opt(w.attn_b), N, C, QW, prec_);
    if (c.pos == PosEncoding::Rope) rotate_qk(L + la.qkv, N, T, 0, false);
    hook(HookPoint::Qkv, l, L + la.qkv, QW);
    auto args = self_attention_args(L + la.qkv, L + la.atty, L + la.lse, B, T);
    cpu::attention_forward(args);
    hook(HookPoint::Heads, l, L + la.atty, C);
    // res2 = x + atty @ Wproj + b: the projection lands in res2, then x is added.
    nn::linear_forward(L + la.res2, L + la.atty, P + w.attnproj_w, opt(w.attnproj_b), N, C, C,
                       prec_);
    hook(HookPoint::AttnOut, l, L + la.res2, C);
    const float* mid = L + la.res2;  // the stream between attention and MLP
    if (post) {
      residual_norm_forward(L + la.res2, x, L + la.ln1, L + la.ln1_mean, L + la.ln1_rstd,
                            P + w.ln1_w, opt(w.ln1_b), N, C, c.ln_eps);
      mid = L + la.ln1;
    } else if (c.mlp) {
      residual_norm_forward(L + la.res2, x, L + la.ln2, L + la.ln2_mean, L + la.ln2_rstd,
                            P + w.ln2_w, opt(w.ln2_b), N, C, c.ln_eps);
    } else {
      cpu::residual_forward(L + la.res2, L + la.res2, x, N * C);
    }
    ln1_ready = false;
    float* out = layer_output(l);
    if (!c.mlp) {  // attention-only: pre-norm keeps the block's output in res3's slot
      if (!post) std::memcpy(out, mid, sizeof(float) * size_t(N) * C);
      hook(HookPoint::ResidPost, l, out, C);
      x = out;
      continue;
    }
    const float* mlp_in = post ? mid : L + la.ln2;  // pre-norm: ln_2 ran with the residual
    if (c.act == GPTConfig::Act::GeluTanh) {        // bias and GELU in the GEMM's epilogue
      // The pre-activation is kept only for GELU's derivative: the derivative replaces it
      // (computed here from the same exp, the backward pass only multiplies by it).
      nn::linear_gelu_forward(L + la.fch, L + la.fch_gelu, mlp_in, P + w.fc_w, opt(w.fc_b), N, C, F,
                              prec_, L + la.fch);
    } else {
      nn::linear_forward(L + la.fch, mlp_in, P + w.fc_w, opt(w.fc_b), N, C, F, prec_);
      act_forward(L + la.fch_gelu, L + la.fch, N);
    }
    nn::linear_forward(L + la.res3, L + la.fch_gelu, P + w.fcproj_w, opt(w.fcproj_b), N, H, C,
                       prec_);
    hook(HookPoint::MlpOut, l, L + la.res3, C);
    if (post) {
      residual_norm_forward(L + la.res3, mid, L + la.ln2, L + la.ln2_mean, L + la.ln2_rstd,
                            P + w.ln2_w, opt(w.ln2_b), N, C, c.ln_eps);
    } else if (!hooks_ && l + 1 < c.n_layer) {
      const LayerOffsets& wn = layer_[l + 1];
      float* Ln = A + act_layer_ + act_layer_stride_ * (l + 1);
      residual_norm_forward(L + la.res3, mid, Ln + la.ln1, Ln + la.ln1_mean, Ln + la.ln1_rstd,
                            P + wn.ln1_w, opt(wn.ln1_b), N, C, c.ln_eps);
      ln1_ready = true;
    } else {
      cpu::residual_forward(L + la.res3, L + la.res3, mid, N * C);
    }
    hook(HookPoint::ResidPost, l, out, C);
    x = out;
  }
  return x;
}

const float* GPT::head_input(const float* x) {
  if (!config_.final_norm()) return x;  // post-norm: the last block already normalised
  const float* P = pdata();
  float* A = acts_.data();
  norm_forward(A + act_lnf_, A + act_lnf_mean_, A + act_lnf_rstd_, x, P + lnf_w_,
               lnf_b_ == kNone ? nullptr : P + lnf_b_, int64_t(B_) * T_, config_.n_embd,
               config_.ln_eps);
  return A + act_lnf_;
}

float GPT::forward(const int32_t* ids, const int32_t* targets, int B, int T, const int32_t* lens) {
  const GPTConfig& c = config_;
  const int C = c.n_embd, V = c.vocab_size;
  const int64_t N = int64_t(B) * T;
  if (targets)
    for (int64_t i = 0; i < N; ++i)
      QKV_CHECK(targets[i] < V, "[gpt] target id {} at position {} is outside the vocabulary",
                targets[i], i);
  const float* x = forward_trunk(ids, B, T, lens);
  classify_ = false;
  const float* P = pdata();
  float* A = acts_.data();
  // logits = ln_f(x) @ wte^T (post-norm: x @ wte^T, the last block already normalised).
  const float* head_in = head_input(x);
  nn::matmul(prec_, false, true, int(N), V, C, 1.0f, head_in, C, P + wte_, C, 0.0f, A + act_logits_,
             V);
  if (!targets) return 0.0f;
  have_targets_ = true;
  std::copy(targets, targets + N, targets_.begin());
  // Padding's targets never count.
  for (int b = 0; b < B; ++b)
    for (int t = lens_[size_t(b)]; t < T; ++t) targets_[size_t(b) * T + size_t(t)] = -1;
  cpu::crossentropy_forward(A + act_losses_, A + act_lse_, A + act_logits_, targets_.data(), N, V);
  double sum = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i)
    if (targets_[size_t(i)] >= 0) {
      sum += A[act_losses_ + i];
      ++count;
    }
  inv_count_ = count > 0 ? 1.0f / float(count) : 0.0f;
  return count > 0 ? float(sum / double(count)) : 0.0f;
}

float GPT::forward_classify(const int32_t* ids, const int32_t* lens, const int32_t* labels, int B,
                            int T) {
  const GPTConfig& c = config_;
  const int K = c.num_labels(), C = c.n_embd;
  QKV_CHECK(K > 0, "[gpt] this model has no classification head (no labels in its config)");
  if (labels)
    for (int b = 0; b < B; ++b)
      QKV_CHECK(labels[b] < K, "[gpt] label {} of sequence {} is outside [0, {})", labels[b], b, K);
  const float* x = forward_trunk(ids, B, T, lens);
  classify_ = true;
  const float* P = pdata();
  const float* head_in = head_input(x);
  // Mean over each sequence's own tokens, in double (B is small; the order is fixed).
  cls_pooled_.assign(size_t(B) * C, 0.0f);
  cls_logits_.assign(size_t(B) * K, 0.0f);
  std::vector<double> acc(static_cast<size_t>(C));
  for (int b = 0; b < B; ++b) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const int len = lens_[size_t(b)];
    for (int t = 0; t < len; ++t) {
      const float* h = head_in + (size_t(b) * T + size_t(t)) * C;
      for (int i = 0; i < C; ++i) acc[size_t(i)] += h[i];
    }
    for (int i = 0; i < C; ++i)
      cls_pooled_[size_t(b) * C + size_t(i)] = float(acc[size_t(i)] / len);
  }
  nn::linear_forward(cls_logits_.data(), cls_pooled_.data(), P + cls_w_, P + cls_b_, B, C, K);
  if (!labels) return 0.0f;
  have_targets_ = true;
  cls_labels_.assign(labels, labels + B);
  double sum = 0;
  int count = 0;
  cls_dlogits_.assign(size_t(B) * K, 0.0f);
  for (int b = 0; b < B; ++b) {
    if (labels[b] < 0) continue;
    const float* z = cls_logits_.data() + size_t(b) * K;
    const float mx = *std::max_element(z, z + K);
    double se = 0;
    for (int k = 0; k < K; ++k) se += std::exp(double(z[k] - mx));
    sum += double(mx) + std::log(se) - z[labels[b]];
    ++count;
  }
  inv_count_ = count > 0 ? 1.0f / float(count) : 0.0f;
  return count > 0 ? float(sum / count) : 0.0f;
}

void GPT::backward(float loss_scale) {
  QKV_CHECK(have_targets_, "[gpt] backward() needs a forward pass with targets");
  QKV_CHECK(!hooked_pass_, "[gpt] backward() after a forward pass with hooks (analysis only)");
  const GPTConfig& c = config_;
  const int B = B_, T = T_, C = c.n_embd, V = c.vocab_size;
  const int QW = c.qkv_width(), H = c.mlp_hidden(), F = c.fc_width();
  const bool post = !c.final_norm();
  const int64_t N = int64_t(B) * T;
  float* G = grad_data();
  const float* P = pdata();
  float* A = acts_.data();
  // Gradient scratch, planned once per (B, T): dres, dln, datty (N,C); dqkv (N,QW); dfch_gelu
  // (N,H), dfch (N,F).
  const size_t g_dres = 0, g_dln = g_dres + N * C, g_datty = g_dln + N * C,
               g_dqkv = g_datty + N * C, g_dfchg = g_dqkv + N * QW, g_dfch = g_dfchg + N * H,
               g_size = g_dfch + N * F;
  if (grad_acts_.size() != g_size) grad_acts_.assign(g_size, 0.0f);
  float* D = grad_acts_.data();
  auto gopt = [&](size_t off) { return off == kNone ? nullptr : G + off; };

  const float* x_last = layer_output(c.n_layer - 1);
  float* dres = D + g_dres;
  const float dmean = inv_count_ * loss_scale;
  if (classify_) {
    // logits = mean_t(head_in) @ W + b: dhead_in[b, t] = (dlogits[b] @ W^T) / len_b on the
    // sequence's own tokens.
    const int K = c.num_labels();
    for (int b = 0; b < B; ++b) {
      float* d = cls_dlogits_.data() + size_t(b) * K;
      std::fill(d, d + K, 0.0f);
      if (cls_labels_[size_t(b)] < 0) continue;
      const float* z = cls_logits_.data() + size_t(b) * K;
      const float mx = *std::max_element(z, z + K);
      double se = 0;
      for (int k = 0; k < K; ++k) se += std::exp(double(z[k] - mx));
      for (int k = 0; k < K; ++k) d[k] = float(std::exp(double(z[k] - mx)) / se) * dmean;
      d[cls_labels_[size_t(b)]] -= dmean;
    }
    std::vector<float> dpooled(size_t(B) * C);
    nn::linear_backward(dpooled.data(), G + cls_w_, G + cls_b_, cls_dlogits_.data(),
                        cls_pooled_.data(), P + cls_w_, B, C, K);
    float* dhead = post ? dres : D + g_dln;
    parallel_zero(dhead, N * C);
    for (int b = 0; b < B; ++b) {
      const int len = lens_[size_t(b)];
      for (int t = 0; t < len; ++t) {
        float* o = dhead + (size_t(b) * T + size_t(t)) * C;
        for (int i = 0; i < C; ++i) o[i] = dpooled[size_t(b) * C + size_t(i)] / float(len);
      }
    }
    if (!post) {
      parallel_zero(dres, N * C);
      norm_backward(dres, G + lnf_w_, gopt(lnf_b_), D + g_dln, x_last, P + lnf_w_,
                    A + act_lnf_mean_, A + act_lnf_rstd_, N, C);
    }
    backward_trunk();
    return;
  }
  float* dl = A + act_dlosses_;
  for (int64_t i = 0; i < N; ++i) dl[i] = targets_[i] >= 0 ? dmean : 0.0f;
  float* dlogits = A + act_logits_;  // in place: logits become their gradient
  cpu::crossentropy_backward(dlogits, dlogits, A + act_lse_, targets_.data(), dl, N, V);
  if (!post) {
    // logits = lnf @ wte^T: dlnf = dlogits @ wte; dwte += dlogits^T @ lnf.
    nn::matmul(prec_, false, false, int(N), C, V, 1.0f, dlogits, V, P + wte_, C, 0.0f, D + g_dln,
               C);
    nn::matmul(prec_, true, false, V, C, int(N), 1.0f, dlogits, V, A + act_lnf_, C, 1.0f, G + wte_,
               C);
    parallel_zero(dres, N * C);
    norm_backward(dres, G + lnf_w_, gopt(lnf_b_), D + g_dln, x_last, P + lnf_w_, A + act_lnf_mean_,
                  A + act_lnf_rstd_, N, C);
  } else {
    nn::matmul(prec_, false, false, int(N), C, V, 1.0f, dlogits, V, P + wte_, C, 0.0f, dres, C);
    nn::matmul(prec_, true, false, V, C, int(N), 1.0f, dlogits, V, x_last, C, 1.0f, G + wte_, C);
  }
  backward_trunk();
}

void GPT::backward_trunk() {
  const GPTConfig& c = config_;
  const int B = B_, T = T_, C = c.n_embd;
  const int QW = c.qkv_width(), H = c.mlp_hidden(), F = c.fc_width();
  const bool post = !c.final_norm();
  const int64_t N = int64_t(B) * T;
  const LayerActs la = layer_acts(B, T, c);
  float* G = grad_data();
  const float* P = pdata();
  float* A = acts_.data();
  const size_t g_dres = 0, g_dln = g_dres + N * C, g_datty = g_dln + N * C,
               g_dqkv = g_datty + N * C, g_dfchg = g_dqkv + N * QW, g_dfch = g_dfchg + N * H;
  float* D = grad_acts_.data();
  auto gopt = [&](size_t off) { return off == kNone ? nullptr : G + off; };
  float* dres = D + g_dres;
  for (int l = c.n_layer - 1; l >= 0; --l) {
    const LayerOffsets& w = layer_[l];
    float* L = A + act_layer_ + act_layer_stride_ * l;
    const float* x = l == 0 ? A + act_encoded_ : layer_output(l - 1);
    // dres holds d(block output).
    if (post) {
      // out = ln2(mid + mlp(mid)), mid = ln1(x + attn(x)): dres becomes d(res2).
      float* dmid = D + g_datty;
      if (c.mlp) {
        float* dres3 = D + g_dln;
        parallel_zero(dres3, N * C);
        norm_backward(dres3, G + w.ln2_w, gopt(w.ln2_b), dres, L + la.res3, P + w.ln2_w,
                      L + la.ln2_mean, L + la.ln2_rstd, N, C);
        mlp_proj_backward(D + g_dfch, D + g_dfchg, G + w.fcproj_w, gopt(w.fcproj_b), dres3,
                          L + la.fch_gelu, L + la.fch, P + w.fcproj_w, N);
        nn::linear_backward(dmid, G + w.fc_w, gopt(w.fc_b), D + g_dfch, L + la.ln1, P + w.fc_w, N,
                            C, F, false, prec_);
        cpu::residual_forward(dmid, dmid, dres3, N * C);
      } else {
        std::memcpy(dmid, dres, sizeof(float) * size_t(N) * C);
      }
      parallel_zero(dres, N * C);
      norm_backward(dres, G + w.ln1_w, gopt(w.ln1_b), dmid, L + la.res2, P + w.ln1_w,
                    L + la.ln1_mean, L + la.ln1_rstd, N, C);
    } else if (c.mlp) {
      // MLP: res3 = res2 + act(ln2 @ Wfc + bfc) @ Wfcproj + bfcproj
      mlp_proj_backward(D + g_dfch, D + g_dfchg, G + w.fcproj_w, gopt(w.fcproj_b), dres,
                        L + la.fch_gelu, L + la.fch, P + w.fcproj_w, N);
      nn::linear_backward(D + g_dln, G + w.fc_w, gopt(w.fc_b), D + g_dfch, L + la.ln2, P + w.fc_w,
                          N, C, F, false, prec_);
      norm_backward(dres, G + w.ln2_w, gopt(w.ln2_b), D + g_dln, L + la.res2, P + w.ln2_w,
                    L + la.ln2_mean, L + la.ln2_rstd, N, C);
    }
    // Attention: res2 = x + attn(in) @ Wproj + bproj with in = ln1(x) (pre) or x (post).
    nn::linear_backward(D + g_datty, G + w.attnproj_w, gopt(w.attnproj_b), dres, L + la.atty,
                        P + w.attnproj_w, N, C, C, false, prec_);
    parallel_zero(D + g_dqkv, N * QW);
    auto args = self_attention_args(L + la.qkv, L + la.atty, L + la.lse, B, T);
    const int CKV = c.kv_heads() * c.head_size();
    args.dout = D + g_datty;
    args.dq = D + g_dqkv;
    args.dk = D + g_dqkv + C;
    args.dv = D + g_dqkv + C + CKV;
    cpu::attention_backward(args);
    if (c.pos == PosEncoding::Rope) rotate_qk(D + g_dqkv, N, T, 0, true);
    if (post) {
      nn::linear_backward(dres, G + w.attn_w, gopt(w.attn_b), D + g_dqkv, x, P + w.attn_w, N, C, QW,
                          true, prec_);
    } else {
      nn::linear_backward(D + g_dln, G + w.attn_w, gopt(w.attn_b), D + g_dqkv, L + la.ln1,
                          P + w.attn_w, N, C, QW, false, prec_);
      norm_backward(dres, G + w.ln1_w, gopt(w.ln1_b), D + g_dln, x, P + w.ln1_w, L + la.ln1_mean,
                    L + la.ln1_rstd, N, C);
    }
  }
  cpu::encoder_backward(G + wte_, wpe_ != kNone ? G + wpe_ : nullptr, D + g_dres, ids_.data(), B, T,
                        C);
  have_targets_ = false;  // the logits buffer now holds gradients
}

float* GPT::layer_output(int l) {
  float* L = acts_.data() + act_layer_ + act_layer_stride_ * l;
  const LayerActs la = layer_acts(B_, T_, config_);
  if (config_.final_norm()) return L + la.res3;
  return L + (config_.mlp ? la.ln2 : la.ln1);
}

AttnArgs<float> GPT::self_attention_args(const float* qkv, float* out, float* lse, int B,
                                         int T) const {
  const GPTConfig& c = config_;
  const int C = c.n_embd, HS = c.head_size(), QW = c.qkv_width();
  AttnArgs<float> a;
  a.B = B;
  a.NH = c.n_head;
  a.Tq = a.Tk = T;
  a.HS = HS;
  c.apply_attention(a);
  a.causal = c.causal;
  a.key_len = have_lens_ ? lens_.data() : nullptr;
  a.alibi = alibi_.empty() ? nullptr : alibi_.data();
  a.q = qkv;
  a.k = qkv + C;
  a.v = qkv + C + int64_t(c.kv_heads()) * HS;
  a.out = out;
  a.lse = lse;
  a.q_sb = a.k_sb = a.v_sb = int64_t(T) * QW;
  a.q_st = a.k_st = a.v_st = QW;
  a.q_sh = a.k_sh = a.v_sh = HS;
  a.o_sb = int64_t(T) * C;
  a.o_st = C;
  a.o_sh = HS;
  return a;
}

void GPT::rotate_qk(float* qkv, int64_t rows, int T, int64_t pos0, bool inverse) const {
  const GPTConfig& c = config_;
  const int HS = c.head_size(), QW = c.qkv_width();
  // Queries (n_head heads from channel 0), then keys (kv_heads() heads from channel C).
  cpu::rope_apply(qkv, rows, T, pos0, QW, c.n_head, HS, c.rope_theta, inverse);
  cpu::rope_apply(qkv + c.n_embd, rows, T, pos0, QW, c.kv_heads(), HS, c.rope_theta, inverse);
}

void GPT::norm_forward(float* out, float* mean, float* rstd, const float* in, const float* w,
                       const float* b, int64_t N, int C, float eps) const {
  if (config_.norm == GPTConfig::Norm::RMSNorm)
    cpu::rmsnorm_forward(out, rstd, in, w, N, C, eps);
  else
    cpu::layernorm_forward(out, mean, rstd, in, w, b, N, C, eps);
}

void GPT::residual_norm_forward(float* res, const float* add, float* out, float* mean, float* rstd,
                                const float* w, const float* b, int64_t N, int C, float eps) const {
  if (config_.norm == GPTConfig::Norm::RMSNorm)
    cpu::residual_rmsnorm_forward(res, add, out, rstd, w, N, C, eps);
  else
    cpu::residual_layernorm_forward(res, add, out, mean, rstd, w, b, N, C, eps);
}

void GPT::norm_backward(float* dinp, float* dw, float* db, const float* dout, const float* in,
                        const float* w, const float* mean, const float* rstd, int64_t N,
                        int C) const {
  if (config_.norm == GPTConfig::Norm::RMSNorm)
    cpu::rmsnorm_backward(dinp, dw, dout, in, w, rstd, N, C);
  else
    cpu::layernorm_backward(dinp, dw, db, dout, in, w, mean, rstd, N, C);
}

void GPT::act_forward(float* out, const float* in, int64_t rows) const {
  const int64_t H = config_.mlp_hidden();
  switch (config_.act) {
    case GPTConfig::Act::ReLU:
      return cpu::relu_forward(out, in, rows * H);
    case GPTConfig::Act::SwiGLU:
      return cpu::swiglu_forward(out, in, rows, int(H));
    default:
      return cpu::gelu_forward(out, in, rows * H);
  }
}

void GPT::act_backward(float* dinp, const float* in, const float* dout, int64_t rows) const {
  const int64_t H = config_.mlp_hidden();
  switch (config_.act) {
    case GPTConfig::Act::ReLU:
      return cpu::relu_backward(dinp, in, dout, rows * H);
    case GPTConfig::Act::SwiGLU:
      return cpu::swiglu_backward(dinp, in, dout, rows, int(H));
    default:
      return cpu::gelu_backward(dinp, in, dout, rows * H);
  }
}

void GPT::mlp_proj_backward(float* dfch, float* dfch_act, float* dw, float* db, const float* dout,
                            const float* fch_act, const float* fch, const float* w,
                            int64_t rows) const {
  const GPTConfig& c = config_;
  const int H = c.mlp_hidden(), F = c.fc_width();
  if (c.act == GPTConfig::Act::GeluTanh) {  // fch holds GELU's derivative (forward_trunk)
    nn::linear_backward(dfch, dw, db, dout, fch_act, w, rows, H, c.n_embd, false, prec_, fch);
    return;
  }
  nn::linear_backward(dfch_act, dw, db, dout, fch_act, w, rows, H, c.n_embd, false, prec_);
  parallel_zero(dfch, rows * F);
  act_backward(dfch, fch, dfch_act, rows);
}

void GPT::final_norm(const float* x, int rows, float* out) const {
  const size_t n = size_t(rows) * size_t(config_.n_embd);
  if (!config_.final_norm()) {  // post-norm: the blocks' output goes to the head as it is
    std::copy(x, x + n, out);
    return;
  }
  std::vector<float> mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows));
  const float* P = pdata();
  norm_forward(out, mean.data(), rstd.data(), x, P + lnf_w_, lnf_b_ == kNone ? nullptr : P + lnf_b_,
               rows, config_.n_embd, config_.ln_eps);
}

void GPT::attention_map(int layer, int b, int head, float* out) const {
  const GPTConfig& c = config_;
  QKV_CHECK(B_ > 0, "[gpt] attention_map needs a forward pass first");
  QKV_CHECK(layer >= 0 && layer < c.n_layer, "[gpt] layer {} out of range [0, {})", layer,
            c.n_layer);
  QKV_CHECK(head >= 0 && head < c.n_head, "[gpt] head {} out of range [0, {})", head, c.n_head);
  QKV_CHECK(b >= 0 && b < B_, "[gpt] batch item {} out of range [0, {})", b, B_);
  const LayerActs la = layer_acts(B_, T_, c);
  const float* L = acts_.data() + act_layer_ + act_layer_stride_ * layer;
  auto args = self_attention_args(L + la.qkv, nullptr, const_cast<float*>(L + la.lse), B_, T_);
  cpu::attention_probs(args, b, head, out);
}

// ---- inference with a KV cache ----

GPT::InferScratch GPT::infer_scratch() {
  const GPTConfig& c = config_;
  const size_t C = size_t(c.n_embd), T = size_t(c.block_size);
  size_t o = 0;
  auto take = [&](size_t n) {
    const size_t r = o;
    o += (n + 15) / 16 * 16;
    return r;
  };
  const size_t x = take(T * C), ln = take(T * C), atty = take(T * C), tmp = take(T * C),
               qkv = take(T * size_t(c.qkv_width())), fch = take(T * size_t(c.fc_width())),
               fch_act = take(T * size_t(c.mlp_hidden())), logits = take(size_t(c.vocab_size));
  if (infer_.size() < o) infer_.assign(o, 0.0f);
  float* p = infer_.data();
  return {p + x, p + ln, p + atty, p + tmp, p + qkv, p + fch, p + fch_act, p + logits};
}

void GPT::plan_cache() {
  const GPTConfig& c = config_;
  const size_t CKV = size_t(c.kv_heads()) * size_t(c.head_size());
  if (kv_.empty()) {
    if (c.attention == AttnKind::Linear) {
      const size_t HS = size_t(c.head_size());
      kv_.assign(size_t(c.n_layer) * size_t(c.n_head) * (HS * HS + HS), 0.0f);
    } else {
      // Sliding: the last window-1 keys plus a chunk of up to block_size new tokens.
      cache_cap_ = c.attention == AttnKind::Sliding ? c.window - 1 + c.block_size : c.block_size;
      kv_.assign(size_t(c.n_layer) * 2 * size_t(cache_cap_) * CKV, 0.0f);
    }
  }
  infer_scratch();  // allocates the scratch on first use
}

std::vector<GPT::MatrixSlot> GPT::matrix_slots() const {
  std::vector<MatrixSlot> out;
  auto index_of = [&](size_t offset) {
    for (size_t i = 0; i < params_.size(); ++i)
      if (params_[i].offset == offset) return i;
    QKV_ASSERT(false);
    return size_t(0);
  };
  const int C = config_.n_embd;
  for (const LayerOffsets& w : layer_) {
    out.push_back({index_of(w.attn_w), C, config_.qkv_width(), false});
    out.push_back({index_of(w.attnproj_w), C, C, false});
    if (!config_.mlp) continue;
    out.push_back({index_of(w.fc_w), C, config_.fc_width(), false});
    out.push_back({index_of(w.fcproj_w), config_.mlp_hidden(), C, false});
  }
  out.push_back({index_of(wte_), C, config_.vocab_size, true});
  return out;
}

GPT::Weights GPT::weights_from_name(const std::string& name) {
  if (name == "fp32" || name == "f32") return Weights::F32;
  if (name == "bf16") return Weights::BF16;
  if (name == "int8" || name == "q8") return Weights::INT8;
  QKV_CHECK(false, "unknown weight dtype '{}' (expected fp32, bf16 or int8)", name);
}

const char* GPT::weights_name(Weights w) {
  return w == Weights::F32 ? "fp32" : w == Weights::BF16 ? "bf16" : "int8";
}

void GPT::set_inference_weights(Weights w) {
  if (w == weights_) return;
  QKV_CHECK(fp32_weights_,
            "[gpt] this model was loaded with int8 weights; it cannot be "
            "converted to {} (load the fp32 checkpoint instead)",
            weights_name(w));
  weights_ = w;
  packed_.clear();
  if (w == Weights::F32) return;
  const cpu::WeightFormat f = w == Weights::BF16 ? cpu::WeightFormat::BF16 : cpu::WeightFormat::Q8;
  const auto slots = matrix_slots();
  packed_.resize(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    const MatrixSlot& m = slots[i];
    cpu::pack_matrix(packed_[i], f, params_buf_.data() + params_[m.param].offset,
                     m.trans ? m.K : m.N, m.trans, m.K, m.N);
  }
  reset_cache();  // the cached keys (or linear state) came from the old weights
}

size_t GPT::inference_weight_bytes() const {
  if (weights_ == Weights::F32) return n_params_ * sizeof(float);
  size_t bytes = 0;
  for (const auto& m : packed_) bytes += m.bytes();
  const auto slots = matrix_slots();
  size_t packed_numel = 0;
  for (const auto& m : slots) packed_numel += params_[m.param].numel;
  size_t total = 0;
  for (const auto& p : params_) total += p.numel;
  return bytes + (total - packed_numel) * sizeof(float);
}

void GPT::infer_linear(float* out, const float* inp, int n, int slot, size_t w_off, size_t b_off,
                       int K, int N, float* gelu_out) {
  const float* P = pdata();
  cpu::GemmEpilogue ep;
  ep.bias = b_off == kNone ? nullptr : P + b_off;
  ep.act = gelu_out;
  ep.ld_act = N;
  const bool fused = ep.bias || ep.act;
  if (weights_ == Weights::F32) {
    cpu::gemm(false, false, n, N, K, 1.0f, inp, K, P + w_off, N, 0.0f, out, N,
              fused ? &ep : nullptr);
  } else {
    cpu::gemm_packed(n, inp, K, packed_[size_t(slot)], out, N, fused ? &ep : nullptr);
  }
}

void GPT::lm_head(const float* x, int rows, float* logits) {
  const int C = config_.n_embd, V = config_.vocab_size;
  if (weights_ == Weights::F32)
    cpu::gemm(false, true, rows, V, C, 1.0f, x, C, params_buf_.data() + wte_, C, 0.0f, logits, V);
  else
    cpu::gemm_packed(rows, x, C, packed_.back(), logits, V);
}

void GPT::reset_cache() {
  cache_len_ = 0;
  cache_base_ = 0;
  if (config_.attention == AttnKind::Linear) std::fill(kv_.begin(), kv_.end(), 0.0f);
}

float* GPT::forward_cached(const int32_t* ids, int n) {
  const GPTConfig& c = config_;
  QKV_CHECK(c.causal,
            "[gpt] this is an encoder (bidirectional): it predicts masked tokens, not the next "
            "one, so it has no generation or perplexity");
  QKV_CHECK(n >= 1 && n <= c.block_size, "[gpt] extend runs 1..{} tokens at a time, got {}",
            c.block_size, n);
  QKV_CHECK(int64_t(cache_len_) + n <= c.max_positions(),
            "[gpt] KV cache holds {} tokens; {} + {} exceed it", c.max_positions(), cache_len_, n);
  plan_cache();
  const int C = c.n_embd, NH = c.n_head, HS = c.head_size(), V = c.vocab_size;
  const int QW = c.qkv_width(), H = c.mlp_hidden(), F = c.fc_width();
  const int CKV = c.kv_heads() * HS;
  const bool post = !c.final_norm();
  for (int i = 0; i < n; ++i)
    QKV_CHECK(ids[i] >= 0 && ids[i] < V, "[gpt] token id {} is outside the vocabulary [0, {})",
              ids[i], V);
  const float* P = pdata();
  auto opt = [&](size_t off) { return off == kNone ? nullptr : P + off; };
  const InferScratch S = infer_scratch();
  float *x = S.x, *ln = S.ln, *atty = S.atty, *tmp = S.tmp, *qkv = S.qkv, *fch = S.fch;
  float mean[1024], rstd[1024];  // per-token stats in chunks of up to 1024 tokens
  const int pos = cache_len_;
  for (int i = 0; i < n; ++i) {
    float* xi = x + size_t(i) * C;
    if (weights_ == Weights::F32)
      std::memcpy(xi, P + wte_ + size_t(ids[i]) * C, sizeof(float) * C);
    else
      cpu::packed_column(packed_.back(), ids[i], xi);  // the tied embedding, as the head sees it
    if (wpe_ != kNone) {
      const float* p = P + wpe_ + size_t(pos + i) * C;
      for (int k = 0; k < C; ++k) xi[k] += p[k];
    } else if (c.pos == PosEncoding::Sinusoidal) {
      sinusoid_add(xi, int64_t(pos) + i, C);
    }
  }
  // Sliding window: when the new tokens do not fit behind the cached ones, keep only the last
  // window-1 keys (all a new query can see) at the front.
  int slot = pos - cache_base_;
  if (c.attention == AttnKind::Sliding && slot + n > cache_cap_) {
    const int keep = std::min(c.window - 1, slot), shift = slot - keep;
    for (int l = 0; l < c.n_layer; ++l) {
      float* kc = kv_.data() + size_t(l) * 2 * cache_cap_ * CKV;
      float* vc = kc + size_t(cache_cap_) * CKV;
      std::memmove(kc, kc + size_t(shift) * CKV, sizeof(float) * size_t(keep) * CKV);
      std::memmove(vc, vc + size_t(shift) * CKV, sizeof(float) * size_t(keep) * CKV);
    }
    cache_base_ += shift;
    slot = keep;
  }
  auto norm = [&](float* out, const float* in, const float* w, const float* b) {
    for (int i0 = 0; i0 < n; i0 += 1024) {
      int cnt = std::min(1024, n - i0);
      norm_forward(out + size_t(i0) * C, mean, rstd, in + size_t(i0) * C, w, b, cnt, C, c.ln_eps);
    }
  };
  // x += add, then out = norm(x): one pass (the same bits as the two).
  auto residual_norm = [&](const float* add, float* out, const float* w, const float* b) {
    for (int i0 = 0; i0 < n; i0 += 1024) {
      int cnt = std::min(1024, n - i0);
      residual_norm_forward(x + size_t(i0) * C, add + size_t(i0) * C, out + size_t(i0) * C, mean,
                            rstd, w, b, cnt, C, c.ln_eps);
    }
  };
  bool ln1_ready = false;  // pre-norm: the last block's residual add already wrote ln_1's output
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerOffsets& w = layer_[l];
    const float* attn_in = x;
    if (!post) {
      if (!ln1_ready) norm(ln, x, P + w.ln1_w, opt(w.ln1_b));
      ln1_ready = false;
      attn_in = ln;
    }
    const int slot0 = l * (c.mlp ? 4 : 2);  // this layer's first entry in packed_
    infer_linear(qkv, attn_in, n, slot0 + 0, w.attn_w, w.attn_b, C, QW);
    // Rotary angles use absolute positions: relative offsets survive the rolling cache.
    if (c.pos == PosEncoding::Rope) rotate_qk(qkv, n, n, pos, false);
    AttnArgs<float> a;
    c.apply_attention(a);
    a.alibi = alibi_.empty() ? nullptr : alibi_.data();
    a.B = 1;
    a.NH = NH;
    a.HS = HS;
    a.causal = true;
    a.q = qkv;
    a.q_st = QW;
    a.q_sh = HS;
    a.k_sh = a.v_sh = HS;
    if (c.attention == AttnKind::Linear) {
      // The new keys are folded into the running state.
      a.Tq = a.Tk = n;
      a.k = qkv + C;
      a.v = qkv + C + CKV;
      a.k_st = a.v_st = QW;
      a.state = kv_.data() + size_t(l) * NH * (size_t(HS) * HS + HS);
    } else {
      float* kc = kv_.data() + size_t(l) * 2 * cache_cap_ * CKV;
      float* vc = kc + size_t(cache_cap_) * CKV;
      for (int i = 0; i < n; ++i) {
        std::memcpy(kc + size_t(slot + i) * CKV, qkv + size_t(i) * QW + C, sizeof(float) * CKV);
        std::memcpy(vc + size_t(slot + i) * CKV, qkv + size_t(i) * QW + C + CKV,
                    sizeof(float) * CKV);
      }
      // Positions relative to the cache's first slot: the sliding rule and ALiBi only see
      // differences, and the other rules never roll (base 0).
      a.Tq = n;
      a.Tk = slot + n;
      a.q_offset = slot;
      a.k = kc;
      a.v = vc;
      a.k_st = a.v_st = CKV;
    }
    a.out = atty;
    a.o_st = C;
    a.o_sh = HS;
    cpu::attention_forward(a);
    infer_linear(tmp, atty, n, slot0 + 1, w.attnproj_w, w.attnproj_b, C, C);
    if (!post && c.mlp) {
      residual_norm(tmp, ln, P + w.ln2_w, opt(w.ln2_b));
    } else {
      cpu::residual_forward(x, x, tmp, int64_t(n) * C);
      if (post) norm(x, x, P + w.ln1_w, opt(w.ln1_b));
    }
    if (!c.mlp) continue;
    const float* mlp_in = post ? x : ln;
    if (c.act == GPTConfig::Act::GeluTanh) {
      infer_linear(fch, mlp_in, n, slot0 + 2, w.fc_w, w.fc_b, C, F, S.fch_act);
    } else {
      infer_linear(fch, mlp_in, n, slot0 + 2, w.fc_w, w.fc_b, C, F);
      act_forward(S.fch_act, fch, n);
    }
    infer_linear(tmp, S.fch_act, n, slot0 + 3, w.fcproj_w, w.fcproj_b, H, C);
    if (!post && l + 1 < c.n_layer) {
      const LayerOffsets& wn = layer_[l + 1];
      residual_norm(tmp, ln, P + wn.ln1_w, opt(wn.ln1_b));
      ln1_ready = true;
    } else {
      cpu::residual_forward(x, x, tmp, int64_t(n) * C);
      if (post) norm(x, x, P + w.ln2_w, opt(w.ln2_b));
    }
  }
  cache_len_ += n;
  return x;
}

void GPT::head_norm(float* out, const float* x, int rows) const {
  if (!config_.final_norm()) {
    std::memcpy(out, x, sizeof(float) * size_t(rows) * size_t(config_.n_embd));
    return;
  }
  float mean[32], rstd[32];
  const float* P = pdata();
  for (int r0 = 0; r0 < rows; r0 += 32) {
    const int cnt = std::min(32, rows - r0);
    norm_forward(out + size_t(r0) * config_.n_embd, mean, rstd, x + size_t(r0) * config_.n_embd,
                 P + lnf_w_, lnf_b_ == kNone ? nullptr : P + lnf_b_, cnt, config_.n_embd,
                 config_.ln_eps);
  }
}

const float* GPT::extend(const int32_t* ids, int n) {
  const int C = config_.n_embd, Tmax = config_.block_size;
  QKV_CHECK(n >= 1, "[gpt] extend needs at least one token");
  // Chunks of at most block_size tokens (the scratch's size); the last chunk's last row counts.
  int done = 0, m = 0;
  const float* x = nullptr;
  for (; done < n; done += m) {
    m = std::min(Tmax, n - done);
    x = forward_cached(ids + done, m);
  }
  n = m;
  // Only the last position's logits are needed for the next token.
  const InferScratch S = infer_scratch();
  head_norm(S.ln, x + size_t(n - 1) * C, 1);
  lm_head(S.ln, 1, S.logits);
  return S.logits;
}

double GPT::nll_sum(const int32_t* ids, int n) {
  const int V = config_.vocab_size, Tmax = config_.block_size;
  QKV_CHECK(n >= 2 && n <= Tmax, "[gpt] nll_sum needs 2..{} tokens, got {}", Tmax, n);
  reset_cache();
  const float* x = forward_cached(ids, n);
  float* ln = infer_scratch().ln;
  constexpr int kRows = 32;  // logits of 32 positions at a time: never (T, V) at once
  if (score_.size() < size_t(kRows) * (size_t(V) + 2))
    score_.resize(size_t(kRows) * (size_t(V) + 2));
  float* logits = score_.data();  // kept between calls: perplexity scores window after window
  float* lse = logits + size_t(kRows) * V;
  float* loss = lse + kRows;
  double sum = 0;
  for (int i0 = 0; i0 < n - 1; i0 += kRows) {
    const int rows = std::min(kRows, n - 1 - i0);
    head_norm(ln, x + size_t(i0) * config_.n_embd, rows);
    lm_head(ln, rows, logits);
    cpu::crossentropy_forward(loss, lse, logits, ids + i0 + 1, rows, V);
    for (int r = 0; r < rows; ++r) sum += loss[r];
  }
  reset_cache();
  return sum;
}

// ---- files ----

void GPT::save(const std::string& path) const {
  std::vector<TensorRef> refs;
  std::vector<std::vector<uint16_t>> keep16;  // BF16 copies and int8 scales
  std::vector<std::vector<int8_t>> keep8;
  keep16.reserve(params_.size() * 2);
  keep8.reserve(params_.size());
  std::vector<int> slot_of(params_.size(), -1);
  const auto slots = matrix_slots();
  if (weights_ == Weights::INT8)
    for (size_t i = 0; i < slots.size(); ++i) slot_of[slots[i].param] = int(i);
  for (size_t pi = 0; pi < params_.size(); ++pi) {
    const Param& p = params_[pi];
    const std::string name = "transformer." + p.name;
    const float* data = params_buf_.data() + p.offset;
    if (slot_of[pi] >= 0) {
      const MatrixSlot& m = slots[size_t(slot_of[pi])];
      const cpu::PackedMatrix& pm = packed_[size_t(slot_of[pi])];
      keep8.emplace_back(p.numel);
      keep16.emplace_back(size_t(pm.kchunks) * size_t(m.N));
      cpu::unpack_q8(pm, keep8.back().data(), keep16.back().data(), m.trans);
      refs.push_back({name, DType::I8, p.shape, keep8.back().data()});
      const Shape sshape = m.trans ? Shape{m.N, pm.kchunks} : Shape{pm.kchunks, m.N};
      refs.push_back({name + "_scale", DType::BF16, sshape, keep16.back().data()});
    } else if (weights_ == Weights::BF16) {
      keep16.emplace_back(p.numel);
      for (size_t i = 0; i < p.numel; ++i) keep16.back()[i] = f32_to_bf16(data[i]);
      refs.push_back({name, DType::BF16, p.shape, keep16.back().data()});
    } else {
      refs.push_back({name, DType::F32, p.shape, data});
    }
  }
  // Hugging Face's GPT-2 always has biases: a GPT-2-shaped model without them is saved with zero
  // biases (the same function), so such a qkv checkpoint is a valid HF GPT-2 directory.
  std::vector<float> zeros;
  const GPTConfig& c = config_;
  const bool gpt2_shape = c.mlp && c.norm == GPTConfig::Norm::LayerNorm && c.final_norm() &&
                          c.act != GPTConfig::Act::SwiGLU && c.kv_heads() == c.n_head &&
                          c.mlp_hidden() == 4 * c.n_embd;
  if (!config_.bias && gpt2_shape) {
    const int64_t C = config_.n_embd;
    zeros.assign(size_t(4 * C), 0.0f);
    auto zero = [&](const std::string& name, int64_t n) {
      refs.push_back({"transformer." + name, DType::F32, {n}, zeros.data()});
    };
    for (int l = 0; l < config_.n_layer; ++l) {
      const std::string p = "h." + std::to_string(l) + ".";
      zero(p + "ln_1.bias", C);
      zero(p + "attn.c_attn.bias", 3 * C);
      zero(p + "attn.c_proj.bias", C);
      zero(p + "ln_2.bias", C);
      zero(p + "mlp.c_fc.bias", 4 * C);
      zero(p + "mlp.c_proj.bias", C);
    }
    zero("ln_f.bias", C);
  }
  std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (weights_ == Weights::INT8)
    meta["qkv_quantization"] =
        "int8 matmul weights, one bf16 scale per 32 inputs of each output (<name>_scale); other "
        "tensors F32";
  save_safetensors(path, refs, meta);
}

void GPT::load(const std::string& path, bool allow_missing_head) {
  SafetensorsFile f(path);
  std::vector<int> slot_of(params_.size(), -1);
  const auto slots = matrix_slots();
  for (size_t i = 0; i < slots.size(); ++i) slot_of[slots[i].param] = int(i);
  std::vector<cpu::PackedMatrix> packed;
  size_t n_int8 = 0;
  for (size_t pi = 0; pi < params_.size(); ++pi) {
    const Param& p = params_[pi];
    std::string name = "transformer." + p.name;
    if (!f.has(name)) name = p.name;
    if (!f.has(name) && allow_missing_head && p.name.rfind("classifier.", 0) == 0) continue;
    QKV_CHECK(f.has(name), "{}: missing tensor 'transformer.{}'", path, p.name);
    Tensor t = f.get(name);
    QKV_CHECK(t.shape() == p.shape, "{}: tensor '{}' has shape {}, expected {}", path, name,
              t.shape_str(), shape_to_string(p.shape));
    if (t.dtype() == DType::I8) {
      QKV_CHECK(slot_of[pi] >= 0, "{}: tensor '{}' is int8; only matmul weights can be", path,
                name);
      const MatrixSlot& m = slots[size_t(slot_of[pi])];
      const int kchunks = (m.K + 31) / 32;
      const Shape sshape = m.trans ? Shape{m.N, kchunks} : Shape{kchunks, m.N};
      QKV_CHECK(f.has(name + "_scale"), "{}: int8 tensor '{}' has no '{}_scale' beside it", path,
                name, name);
      Tensor sc = f.get(name + "_scale");
      QKV_CHECK(sc.dtype() == DType::BF16 && sc.shape() == sshape,
                "{}: tensor '{}_scale' must be BF16 of shape {}, found {} {}", path, name,
                shape_to_string(sshape), dtype_name(sc.dtype()), sc.shape_str());
      const uint16_t* sv = static_cast<const uint16_t*>(sc.raw());
      for (size_t i = 0; i < size_t(sc.numel()); ++i) {
        const float v = bf16_to_f32(sv[i]);
        QKV_CHECK(std::isfinite(v) && v >= 0.0f,
                  "{}: tensor '{}_scale' holds {} at index {} (scales are finite and >= 0)", path,
                  name, v, i);
      }
      if (packed.empty()) packed.resize(slots.size());
      try {
        cpu::pack_q8(packed[size_t(slot_of[pi])], static_cast<const int8_t*>(t.raw()), sv, m.trans,
                     m.K, m.N);
      } catch (const Error& e) {
        QKV_CHECK(false, "{}: tensor '{}': {}", path, name, e.what());
      }
      std::fill_n(params_buf_.data() + p.offset, p.numel, 0.0f);
      ++n_int8;
      continue;
    }
    read_float_weights(t, params_buf_.data() + p.offset, path, name,
                       "F32, F16, BF16 (or I8 for matmul weights)");
  }
  QKV_CHECK(n_int8 == 0 || n_int8 == slots.size(),
            "{}: {} of the {} matmul weights are int8; a quantized checkpoint has all of them",
            path, n_int8, slots.size());
  packed_ = std::move(packed);
  weights_ = n_int8 ? Weights::INT8 : Weights::F32;
  fp32_weights_ = n_int8 == 0;
  reset_cache();
}

GPT GPT::from_dir(const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  GPT m(GPTConfig::from_json(read_json_file(cfg_path), cfg_path));
  // A fine-tune saved as an adapter: the base model's weights, then the adapter's changes.
  const std::string base = adapter_base(dir);
  if (!base.empty() && !file_exists(dir + "/model.safetensors")) {
    m.load(base + "/model.safetensors", /*allow_missing_head=*/true);
    apply_adapter(m, dir);
    return m;
  }
  m.load(dir + "/model.safetensors");
  return m;
}

void GPT::save_dir(const std::string& dir) const {
  make_dirs(dir);
  write_file_atomic(dir + "/config.json", config_.to_json().dump(2) + "\n");
  save(dir + "/model.safetensors");
}

}  // namespace qkv

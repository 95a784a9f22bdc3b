#include "qkv/models/seq2seq.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/backend/kernel_args.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/rng.h"
#include "qkv/io/json_file.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/positions.h"

namespace qkv {

// ---- config ----

void Seq2SeqConfig::validate(const std::string& where) const {
  base.validate(where);
  QKV_CHECK(base.pos == PosEncoding::Learned || base.pos == PosEncoding::Sinusoidal,
            "{}: the encoder-decoder takes learned or sinusoidal positions, not '{}'", where,
            GPTConfig::pos_name(base.pos));
  QKV_CHECK(base.attention == AttnKind::Dense, "{}: the encoder-decoder uses dense attention",
            where);
  QKV_CHECK(base.kv_heads() == base.n_head && base.mlp && base.labels.empty(),
            "{}: grouped-query attention, attention-only blocks and classifier heads are for "
            "the GPT/encoder models",
            where);
  QKV_CHECK(n_dec_layer >= 0 && n_dec_layer <= 1024, "{}: n_decoder_layer {} out of range", where,
            n_dec_layer);
  QKV_CHECK(bos_token_id >= 0 && bos_token_id < base.vocab_size && eos_token_id >= 0 &&
                eos_token_id < base.vocab_size && bos_token_id != eos_token_id,
            "{}: bos_token_id {} and eos_token_id {} must be distinct ids in [0, {})", where,
            bos_token_id, eos_token_id, base.vocab_size);
}

int64_t Seq2SeqConfig::num_params() const {
  const GPTConfig& c = base;
  const int64_t C = c.n_embd, b = c.bias ? 1 : 0, H = c.mlp_hidden(), F = c.fc_width();
  const int64_t nb = c.norm == GPTConfig::Norm::RMSNorm ? 0 : b;
  const int64_t norm = C + C * nb;
  const int64_t self = norm + C * 3 * C + 3 * C * b + C * C + C * b;
  const int64_t cross = norm + C * C + C * b + C * 2 * C + 2 * C * b + C * C + C * b;
  const int64_t mlp = norm + C * F + F * b + H * C + C * b;
  const int64_t emb = int64_t(c.vocab_size) * C * (shared_embeddings ? 1 : 2);
  const int64_t wpe = c.pos == PosEncoding::Learned ? 2 * int64_t(c.block_size) * C : 0;
  const int64_t fin = c.final_norm() ? 2 * norm : 0;
  return emb + wpe + c.n_layer * (self + mlp) + dec_layers() * (self + cross + mlp) + fin;
}

nlohmann::json Seq2SeqConfig::to_json() const {
  nlohmann::json j = base.to_json();
  j["model_type"] = "qkv-seq2seq";
  j["architectures"] = {"QkvEncoderDecoder"};
  j["arch"] = "encoder-decoder";
  j["n_decoder_layer"] = dec_layers();
  j["shared_embeddings"] = shared_embeddings;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j.erase("tie_word_embeddings");
  if (base.pos == PosEncoding::Learned) j.erase("pos");
  return j;
}

Seq2SeqConfig Seq2SeqConfig::from_json(const nlohmann::json& j_in, const std::string& where) {
  QKV_CHECK(j_in.is_object(), "{}: expected a JSON object", where);
  QKV_CHECK(j_in.value("arch", "") == "encoder-decoder", "{}: not an encoder-decoder config",
            where);
  nlohmann::json j = j_in;
  Seq2SeqConfig c;
  auto take_int = [&](const char* key, int* out, bool required) {
    if (!j.contains(key)) {
      QKV_CHECK(!required, "{}: missing key '{}'", where, key);
      return;
    }
    QKV_CHECK(j[key].is_number_integer(), "{}: '{}' must be an integer", where, key);
    *out = j[key].get<int>();
    j.erase(key);
  };
  take_int("n_decoder_layer", &c.n_dec_layer, false);
  take_int("bos_token_id", &c.bos_token_id, true);
  take_int("eos_token_id", &c.eos_token_id, true);
  if (j.contains("shared_embeddings")) {
    QKV_CHECK(j["shared_embeddings"].is_boolean(), "{}: 'shared_embeddings' must be true or false",
              where);
    c.shared_embeddings = j["shared_embeddings"].get<bool>();
    j.erase("shared_embeddings");
  }
  j.erase("arch");
  c.base = GPTConfig::from_json(j, where);
  c.validate(where);
  return c;
}

Seq2SeqConfig Seq2SeqConfig::preset(const std::string& name) {
  QKV_CHECK(name == "seq2seq", "unknown encoder-decoder preset '{}' (seq2seq)", name);
  Seq2SeqConfig c;
  c.base.n_layer = 3;
  c.n_dec_layer = 3;
  c.base.n_head = 4;
  c.base.n_embd = 128;
  c.base.block_size = 64;
  c.base.pos = PosEncoding::Sinusoidal;
  c.base.norm_pos = GPTConfig::NormPos::Post;
  c.base.act = GPTConfig::Act::ReLU;
  c.shared_embeddings = true;
  return c;
}

bool is_seq2seq_dir(const std::string& dir) {
  const std::string p = dir + "/config.json";
  if (!file_exists(p)) return false;
  try {
    const auto j = nlohmann::json::parse(read_file(p));
    return j.is_object() && j.value("arch", "") == "encoder-decoder";
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

// ---- parameters ----

size_t Seq2Seq::add(const std::string& name, Shape shape, bool decay) {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  params_.push_back({name, std::move(shape), n_params_, n, decay});
  const size_t off = n_params_;
  n_params_ += (n + 15) / 16 * 16;
  return off;
}

Seq2Seq::Sub Seq2Seq::make_sub(const std::string& p, Sub::Kind kind) {
  const GPTConfig& c = cfg_.base;
  const int64_t C = c.n_embd;
  const bool bias = c.bias, nbias = bias && c.norm == GPTConfig::Norm::LayerNorm;
  Sub s;
  s.kind = kind;
  const std::string ln = kind == Sub::Self ? "ln_1" : kind == Sub::Cross ? "ln_cross" : "ln_2";
  s.norm.w = add(p + ln + ".weight", {C}, false);
  if (nbias) s.norm.b = add(p + ln + ".bias", {C}, false);
  auto lin = [&](const std::string& n, int64_t in, int64_t out, size_t* w, size_t* b) {
    *w = add(p + n + ".weight", {in, out}, true);
    if (bias) *b = add(p + n + ".bias", {out}, false);
  };
  if (kind == Sub::Self) {
    lin("attn.c_attn", C, 3 * C, &s.w1, &s.b1);
    lin("attn.c_proj", C, C, &s.wo, &s.bo);
  } else if (kind == Sub::Cross) {
    lin("cross.q_proj", C, C, &s.w1, &s.b1);
    lin("cross.kv_proj", C, 2 * C, &s.w2, &s.b2);
    lin("cross.c_proj", C, C, &s.wo, &s.bo);
  } else {
    lin("mlp.c_fc", C, c.fc_width(), &s.w1, &s.b1);
    lin("mlp.c_proj", c.mlp_hidden(), C, &s.wo, &s.bo);
  }
  return s;
}

Seq2Seq::Seq2Seq(const Seq2SeqConfig& config) : cfg_(config) {
  cfg_.validate();
  const GPTConfig& c = cfg_.base;
  const int64_t C = c.n_embd, V = c.vocab_size;
  if (cfg_.shared_embeddings) {
    enc_.wte = dec_.wte = add("shared.weight", {V, C}, true);
  } else {
    enc_.wte = add("encoder.embed_tokens.weight", {V, C}, true);
    dec_.wte = add("decoder.embed_tokens.weight", {V, C}, true);
  }
  if (c.pos == PosEncoding::Learned) {
    enc_.wpe = add("encoder.wpe.weight", {c.block_size, C}, true);
    dec_.wpe = add("decoder.wpe.weight", {c.block_size, C}, true);
  }
  const bool nbias = c.bias && c.norm == GPTConfig::Norm::LayerNorm;
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "encoder.h." + std::to_string(l) + ".";
    enc_.layers.push_back({make_sub(p, Sub::Self), make_sub(p, Sub::Mlp)});
  }
  for (int l = 0; l < cfg_.dec_layers(); ++l) {
    const std::string p = "decoder.h." + std::to_string(l) + ".";
    dec_.layers.push_back({make_sub(p, Sub::Self), make_sub(p, Sub::Cross), make_sub(p, Sub::Mlp)});
  }
  if (c.final_norm()) {
    for (auto [st, name] : {std::pair{&enc_, "encoder"}, std::pair{&dec_, "decoder"}}) {
      st->final_norm.w = add(std::string(name) + ".ln_f.weight", {C}, false);
      if (nbias) st->final_norm.b = add(std::string(name) + ".ln_f.bias", {C}, false);
    }
  }
  params_buf_.assign(n_params_, 0.0f);
}

float* Seq2Seq::grad_data() {
  if (grads_buf_.empty()) grads_buf_.assign(n_params_, 0.0f);
  return grads_buf_.data();
}

void Seq2Seq::zero_grad() { std::fill(grads_buf_.begin(), grads_buf_.end(), 0.0f); }

void Seq2Seq::init_weights(uint64_t seed) {
  const double std_resid = 0.02 / std::sqrt(2.0 * (cfg_.base.n_layer + cfg_.dec_layers()));
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param& p = params_[i];
    float* w = params_buf_.data() + p.offset;
    const bool is_bias = p.name.size() > 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0;
    if (is_bias) {
      std::fill(w, w + p.numel, 0.0f);
    } else if (p.name.find(".ln_") != std::string::npos) {
      std::fill(w, w + p.numel, 1.0f);
    } else {
      const double sd = p.name.find("c_proj.weight") != std::string::npos ? std_resid : 0.02;
      Rng rng(seed, 2000 + i);
      for (size_t k = 0; k < p.numel; ++k) w[k] = float(rng.normal() * sd);
    }
  }
}

// ---- the sublayer ----

void Seq2Seq::norm_fwd(float* out, float* mean, float* rstd, const float* in, const NormW& w,
                       int64_t rows) const {
  const float* P = params_buf_.data();
  const int C = cfg_.base.n_embd;
  if (cfg_.base.norm == GPTConfig::Norm::RMSNorm)
    cpu::rmsnorm_forward(out, rstd, in, P + w.w, rows, C, cfg_.base.ln_eps);
  else
    cpu::layernorm_forward(out, mean, rstd, in, P + w.w, w.b == kNone ? nullptr : P + w.b, rows, C,
                           cfg_.base.ln_eps);
}

void Seq2Seq::norm_bwd(float* dinp, const float* dout, const float* in, const NormW& w,
                       const float* mean, const float* rstd, int64_t rows) {
  float* G = grad_data();
  const float* P = params_buf_.data();
  const int C = cfg_.base.n_embd;
  if (cfg_.base.norm == GPTConfig::Norm::RMSNorm)
    cpu::rmsnorm_backward(dinp, G + w.w, dout, in, P + w.w, rstd, rows, C);
  else
    cpu::layernorm_backward(dinp, G + w.w, w.b == kNone ? nullptr : G + w.b, dout, in, P + w.w,
                            mean, rstd, rows, C);
}

namespace {
void act_fwd(const GPTConfig& c, float* out, const float* in, int64_t rows) {
  const int64_t H = c.mlp_hidden();
  if (c.act == GPTConfig::Act::ReLU)
    cpu::relu_forward(out, in, rows * H);
  else if (c.act == GPTConfig::Act::SwiGLU)
    cpu::swiglu_forward(out, in, rows, int(H));
  else
    cpu::gelu_forward(out, in, rows * H);
}
void act_bwd(const GPTConfig& c, float* dinp, const float* in, const float* dout, int64_t rows) {
  const int64_t H = c.mlp_hidden();
  if (c.act == GPTConfig::Act::ReLU)
    cpu::relu_backward(dinp, in, dout, rows * H);
  else if (c.act == GPTConfig::Act::SwiGLU)
    cpu::swiglu_backward(dinp, in, dout, rows, int(H));
  else
    cpu::gelu_backward(dinp, in, dout, rows * H);
}
// Attention arguments for q (B, T, NH, HS) with row stride q_st against k, v (B, S, ...).
AttnArgs<float> attn_args(const GPTConfig& c, const float* q, int64_t q_sb, int64_t q_st,
                          const float* k, const float* v, int64_t kv_sb, int64_t kv_st, float* out,
                          float* lse, int B, int T, int S, const int32_t* key_len, bool causal) {
  AttnArgs<float> a;
  a.B = B;
  a.NH = c.n_head;
  a.Tq = T;
  a.Tk = S;
  a.HS = c.head_size();
  a.causal = causal;
  a.key_len = key_len;
  a.q = q;
  a.k = k;
  a.v = v;
  a.out = out;
  a.lse = lse;
  a.q_sb = q_sb;
  a.q_st = q_st;
  a.k_sb = a.v_sb = kv_sb;
  a.k_st = a.v_st = kv_st;
  a.q_sh = a.k_sh = a.v_sh = a.o_sh = a.HS;
  a.o_sb = int64_t(T) * c.n_embd;
  a.o_st = c.n_embd;
  return a;
}
}  // namespace

void Seq2Seq::sub_f(const Sub& s, SubActs& a, const float* h, int B, int T, const int32_t* lens,
                    const float* mem, int S, const int32_t* mem_lens, bool causal) {
  const GPTConfig& c = cfg_.base;
  const float* P = params_buf_.data();
  auto opt = [&](size_t o) { return o == kNone ? nullptr : P + o; };
  const int C = c.n_embd;
  const int64_t N = int64_t(B) * T;
  if (s.kind == Sub::Mlp) {
    nn::linear_forward(a.a.data(), h, P + s.w1, opt(s.b1), N, C, c.fc_width(), prec_);
    act_fwd(c, a.b.data(), a.a.data(), N);
    nn::linear_forward(a.res.data(), a.b.data(), P + s.wo, opt(s.bo), N, c.mlp_hidden(), C, prec_);
    return;
  }
  if (s.kind == Sub::Self) {
    nn::linear_forward(a.a.data(), h, P + s.w1, opt(s.b1), N, C, 3 * C, prec_);
    auto args =
        attn_args(c, a.a.data(), int64_t(T) * 3 * C, 3 * C, a.a.data() + C, a.a.data() + 2 * C,
                  int64_t(T) * 3 * C, 3 * C, a.b.data(), a.lse.data(), B, T, T, lens, causal);
    cpu::attention_forward(args);
  } else {
    nn::linear_forward(a.a.data(), h, P + s.w1, opt(s.b1), N, C, C, prec_);
    nn::linear_forward(a.kv.data(), mem, P + s.w2, opt(s.b2), int64_t(B) * S, C, 2 * C, prec_);
    auto args =
        attn_args(c, a.a.data(), int64_t(T) * C, C, a.kv.data(), a.kv.data() + C,
                  int64_t(S) * 2 * C, 2 * C, a.b.data(), a.lse.data(), B, T, S, mem_lens, false);
    cpu::attention_forward(args);
  }
  nn::linear_forward(a.res.data(), a.b.data(), P + s.wo, opt(s.bo), N, C, C, prec_);
}

const float* Seq2Seq::sub_forward(const Sub& s, SubActs& a, const float* x, int B, int T,
                                  const int32_t* lens, const float* mem, int S,
                                  const int32_t* mem_lens, bool causal) {
  const int64_t N = int64_t(B) * T, C = cfg_.base.n_embd;
  if (cfg_.base.final_norm()) {  // pre: x + f(norm(x))
    norm_fwd(a.ln.data(), a.mean.data(), a.rstd.data(), x, s.norm, N);
    sub_f(s, a, a.ln.data(), B, T, lens, mem, S, mem_lens, causal);
    cpu::residual_forward(a.res.data(), a.res.data(), x, N * C);
    return a.res.data();
  }
  sub_f(s, a, x, B, T, lens, mem, S, mem_lens, causal);  // post: norm(x + f(x))
  cpu::residual_forward(a.res.data(), a.res.data(), x, N * C);
  norm_fwd(a.out.data(), a.mean.data(), a.rstd.data(), a.res.data(), s.norm, N);
  return a.out.data();
}

void Seq2Seq::sub_backward(const Sub& s, SubActs& a, const float* x, const float* dout, float* dx,
                           int B, int T, const int32_t* lens, const float* mem, float* dmem, int S,
                           const int32_t* mem_lens, bool causal) {
  const GPTConfig& c = cfg_.base;
  const int C = c.n_embd;
  const int64_t N = int64_t(B) * T;
  float* G = grad_data();
  const float* P = params_buf_.data();
  auto gopt = [&](size_t o) { return o == kNone ? nullptr : G + o; };
  const bool pre = c.final_norm();
  const float* h = pre ? a.ln.data() : x;
  float* dres = g_c_.data();
  const float* dy = dout;
  if (!pre) {  // out = norm(res): dres = norm'(dout)
    std::fill(dres, dres + N * C, 0.0f);
    norm_bwd(dres, dout, a.res.data(), s.norm, a.mean.data(), a.rstd.data(), N);
    dy = dres;
  }
  // dh = f'(dy): into dx (post) or into g_x_ (pre, then through the norm).
  float* dh = pre ? g_x_.data() : dx;
  if (s.kind == Sub::Mlp) {
    nn::linear_backward(g_b_.data(), G + s.wo, gopt(s.bo), dy, a.b.data(), P + s.wo, N,
                        c.mlp_hidden(), C, false, prec_);
    std::fill(g_a_.begin(), g_a_.begin() + N * c.fc_width(), 0.0f);
    act_bwd(c, g_a_.data(), a.a.data(), g_b_.data(), N);
    nn::linear_backward(dh, G + s.w1, gopt(s.b1), g_a_.data(), h, P + s.w1, N, C, c.fc_width(),
                        false, prec_);
  } else {
    nn::linear_backward(g_b_.data(), G + s.wo, gopt(s.bo), dy, a.b.data(), P + s.wo, N, C, C, false,
                        prec_);
    if (s.kind == Sub::Self) {
      std::fill(g_a_.begin(), g_a_.begin() + N * 3 * C, 0.0f);
      auto args =
          attn_args(c, a.a.data(), int64_t(T) * 3 * C, 3 * C, a.a.data() + C, a.a.data() + 2 * C,
                    int64_t(T) * 3 * C, 3 * C, a.b.data(), a.lse.data(), B, T, T, lens, causal);
      args.dout = g_b_.data();
      args.dq = g_a_.data();
      args.dk = g_a_.data() + C;
      args.dv = g_a_.data() + 2 * C;
      cpu::attention_backward(args);
      nn::linear_backward(dh, G + s.w1, gopt(s.b1), g_a_.data(), h, P + s.w1, N, C, 3 * C, false,
                          prec_);
    } else {
      const int64_t M = int64_t(B) * S;
      std::fill(g_a_.begin(), g_a_.begin() + N * C, 0.0f);
      std::fill(g_mem_.begin(), g_mem_.begin() + M * 2 * C, 0.0f);
      auto args =
          attn_args(c, a.a.data(), int64_t(T) * C, C, a.kv.data(), a.kv.data() + C,
                    int64_t(S) * 2 * C, 2 * C, a.b.data(), a.lse.data(), B, T, S, mem_lens, false);
      args.dout = g_b_.data();
      args.dq = g_a_.data();
      args.dk = g_mem_.data();
      args.dv = g_mem_.data() + C;
      cpu::attention_backward(args);
      nn::linear_backward(dh, G + s.w1, gopt(s.b1), g_a_.data(), h, P + s.w1, N, C, C, false,
                          prec_);
      nn::linear_backward(dmem, G + s.w2, gopt(s.b2), g_mem_.data(), mem, P + s.w2, M, C, 2 * C,
                          true, prec_);
    }
  }
  if (pre) {  // dx = dout + norm'(dh)
    std::memcpy(dx, dout, sizeof(float) * size_t(N) * C);
    norm_bwd(dx, dh, x, s.norm, a.mean.data(), a.rstd.data(), N);
  } else {  // dx = dres + dh
    cpu::residual_forward(dx, dx, dres, N * C);
  }
}

// ---- embeddings ----

void Seq2Seq::embed(float* out, const int32_t* ids, int B, int T, const Stack& st, int pos0) const {
  const GPTConfig& c = cfg_.base;
  const int C = c.n_embd, V = c.vocab_size;
  const float* P = params_buf_.data();
  const float scale = std::sqrt(float(C));  // the paper scales token embeddings by sqrt(C)
  for (int64_t i = 0; i < int64_t(B) * T; ++i)
    QKV_CHECK(ids[i] >= 0 && ids[i] < V, "[seq2seq] token id {} is outside the vocabulary [0, {})",
              ids[i], V);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(B) * T; ++i) {
    float* o = out + i * C;
    const float* e = P + st.wte + size_t(ids[i]) * C;
    const int p = pos0 + int(i % T);
    for (int k = 0; k < C; ++k) o[k] = e[k] * scale;
    if (st.wpe != kNone) {
      const float* w = P + st.wpe + size_t(p) * C;
      for (int k = 0; k < C; ++k) o[k] += w[k];
    } else {
      sinusoid_add(o, p, C);
    }
  }
}

void Seq2Seq::embed_backward(const float* dx, const int32_t* ids, int B, int T, const Stack& st) {
  const int C = cfg_.base.n_embd;
  float* G = grad_data();
  const float scale = std::sqrt(float(C));
  // Channel slices per thread: every thread adds every row in the same order (deterministic).
  const int nt = omp_get_max_threads();
#pragma omp parallel for schedule(static)
  for (int t = 0; t < nt; ++t) {
    const int c0 = int(int64_t(C) * t / nt), c1 = int(int64_t(C) * (t + 1) / nt);
    for (int64_t i = 0; i < int64_t(B) * T; ++i) {
      const float* d = dx + i * C;
      float* e = G + st.wte + size_t(ids[i]) * C;
      for (int k = c0; k < c1; ++k) e[k] += scale * d[k];
      if (st.wpe != kNone) {
        float* w = G + st.wpe + size_t(i % T) * C;
        for (int k = c0; k < c1; ++k) w[k] += d[k];
      }
    }
  }
}

void Seq2Seq::plan(std::vector<std::vector<SubActs>>& acts, const Stack& st, int rows, int B, int T,
                   int S) {
  const GPTConfig& c = cfg_.base;
  const size_t N = size_t(rows), C = size_t(c.n_embd);
  acts.resize(st.layers.size());
  for (size_t l = 0; l < st.layers.size(); ++l) {
    acts[l].resize(st.layers[l].size());
    for (size_t k = 0; k < st.layers[l].size(); ++k) {
      const Sub& s = st.layers[l][k];
      SubActs& a = acts[l][k];
      auto fit = [](AlignedVector<float>& v, size_t n) {
        if (v.size() != n) v.assign(n, 0.0f);
      };
      fit(a.ln, c.final_norm() ? N * C : 0);
      fit(a.mean, N);
      fit(a.rstd, N);
      fit(a.out, c.final_norm() ? 0 : N * C);
      fit(a.res, N * C);
      fit(a.a, N * (s.kind == Sub::Self ? 3 * C : s.kind == Sub::Cross ? C : size_t(c.fc_width())));
      fit(a.b, N * (s.kind == Sub::Mlp ? size_t(c.mlp_hidden()) : C));
      fit(a.kv, s.kind == Sub::Cross ? size_t(B) * S * 2 * C : 0);
      fit(a.lse, s.kind == Sub::Mlp ? 0 : size_t(B) * c.n_head * T);
    }
  }
}

// ---- training ----

float Seq2Seq::forward(const int32_t* src, const int32_t* src_len, int S, const int32_t* tgt_in,
                       const int32_t* tgt_len, int T, const int32_t* targets, int B,
                       float label_smoothing) {
  const GPTConfig& c = cfg_.base;
  QKV_CHECK(B >= 1 && S >= 1 && T >= 1, "[seq2seq] empty batch {} x ({}, {})", B, S, T);
  QKV_CHECK(S <= c.block_size && T <= c.block_size,
            "[seq2seq] source {} / target {} tokens exceed block_size {}", S, T, c.block_size);
  QKV_CHECK(label_smoothing >= 0 && label_smoothing < 1,
            "[seq2seq] label smoothing {} not in [0, 1)", label_smoothing);
  for (int b = 0; b < B; ++b)
    QKV_CHECK(src_len[b] >= 1 && src_len[b] <= S && tgt_len[b] >= 1 && tgt_len[b] <= T,
              "[seq2seq] sequence {} has lengths {} / {}, outside [1, {}] / [1, {}]", b, src_len[b],
              tgt_len[b], S, T);
  const int C = c.n_embd, V = c.vocab_size;
  const int64_t NS = int64_t(B) * S, NT = int64_t(B) * T;
  B_ = B;
  S_ = S;
  T_ = T;
  src_.assign(src, src + NS);
  tgt_.assign(tgt_in, tgt_in + NT);
  src_len_.assign(src_len, src_len + B);
  tgt_len_.assign(tgt_len, tgt_len + B);
  auto fit = [](AlignedVector<float>& v, size_t n) {
    if (v.size() != n) v.assign(n, 0.0f);
  };
  fit(enc_x_, size_t(NS) * C);
  fit(dec_x_, size_t(NT) * C);
  fit(enc_out_, size_t(NS) * C);
  fit(dec_out_, size_t(NT) * C);
  fit(enc_mean_, size_t(NS));
  fit(enc_rstd_, size_t(NS));
  fit(dec_mean_, size_t(NT));
  fit(dec_rstd_, size_t(NT));
  fit(logits_, size_t(NT) * V);
  fit(lse_, size_t(NT));
  plan(enc_acts_, enc_, int(NS), B, S, S);
  plan(dec_acts_, dec_, int(NT), B, T, S);

  // Encoder.
  embed(enc_x_.data(), src, B, S, enc_, 0);
  const float* x = enc_x_.data();
  for (size_t l = 0; l < enc_.layers.size(); ++l)
    for (size_t k = 0; k < enc_.layers[l].size(); ++k)
      x = sub_forward(enc_.layers[l][k], enc_acts_[l][k], x, B, S, src_len_.data(), nullptr, 0,
                      nullptr, false);
  const float* mem = x;
  if (c.final_norm()) {
    norm_fwd(enc_out_.data(), enc_mean_.data(), enc_rstd_.data(), x, enc_.final_norm, NS);
    mem = enc_out_.data();
  }
  // Decoder.
  embed(dec_x_.data(), tgt_in, B, T, dec_, 0);
  x = dec_x_.data();
  for (size_t l = 0; l < dec_.layers.size(); ++l)
    for (size_t k = 0; k < dec_.layers[l].size(); ++k)
      x = sub_forward(dec_.layers[l][k], dec_acts_[l][k], x, B, T, tgt_len_.data(), mem, S,
                      src_len_.data(), true);
  const float* top = x;
  if (c.final_norm()) {
    norm_fwd(dec_out_.data(), dec_mean_.data(), dec_rstd_.data(), x, dec_.final_norm, NT);
    top = dec_out_.data();
  }
  nn::matmul(prec_, false, true, int(NT), V, C, 1.0f, top, C, params_buf_.data() + dec_.wte, C,
             0.0f, logits_.data(), V);
  have_targets_ = targets != nullptr;
  if (!targets) return 0.0f;
  targets_.assign(targets, targets + NT);
  for (int b = 0; b < B; ++b)
    for (int t = tgt_len[b]; t < T; ++t) targets_[size_t(b) * T + size_t(t)] = -1;
  for (int64_t i = 0; i < NT; ++i)
    QKV_CHECK(targets_[size_t(i)] < V, "[seq2seq] target id {} outside the vocabulary",
              targets_[size_t(i)]);
  smoothing_ = label_smoothing;
  // Label-smoothed cross-entropy: (1 - eps) (lse - z_y) + eps (lse - mean z).
  double sum = 0;
  int64_t count = 0;
#pragma omp parallel for schedule(static) reduction(+ : sum, count)
  for (int64_t i = 0; i < NT; ++i) {
    const int32_t y = targets_[size_t(i)];
    const float* z = logits_.data() + i * V;
    float mx = z[0];
    for (int v = 1; v < V; ++v) mx = std::max(mx, z[v]);
    double se = 0, zs = 0;
    for (int v = 0; v < V; ++v) {
      se += std::exp(double(z[v] - mx));
      zs += z[v];
    }
    const double l = double(mx) + std::log(se);
    lse_[size_t(i)] = float(l);
    if (y < 0) continue;
    sum += (1 - label_smoothing) * (l - z[y]) + label_smoothing * (l - zs / V);
    ++count;
  }
  inv_count_ = count ? 1.0f / float(count) : 0.0f;
  return count ? float(sum / double(count)) : 0.0f;
}

void Seq2Seq::backward(float loss_scale) {
  QKV_CHECK(have_targets_, "[seq2seq] backward() needs a forward pass with targets");
  const GPTConfig& c = cfg_.base;
  const int B = B_, S = S_, T = T_, C = c.n_embd, V = c.vocab_size;
  const int64_t NS = int64_t(B) * S, NT = int64_t(B) * T, NMAX = std::max(NS, NT);
  float* G = grad_data();
  const float* P = params_buf_.data();
  auto fit = [](AlignedVector<float>& v, size_t n) {
    if (v.size() < n) v.assign(n, 0.0f);
  };
  const size_t widest = std::max<size_t>(3 * size_t(C), size_t(c.fc_width()));
  fit(g_a_, size_t(NMAX) * widest);
  fit(g_b_, size_t(NMAX) * std::max<size_t>(size_t(C), size_t(c.mlp_hidden())));
  fit(g_c_, size_t(NMAX) * C);
  fit(g_x_, size_t(NMAX) * C);
  fit(g_mem_, size_t(NS) * 2 * C);
  fit(dlogits_scratch_, 2 * size_t(NMAX) * C + size_t(NS) * C);
  float* d0 = dlogits_scratch_.data();  // ping
  float* d1 = d0 + size_t(NMAX) * C;    // pong
  float* dmem = d1 + size_t(NMAX) * C;  // d(encoder output), summed over layers
  // dlogits in place of the logits.
  const float eps = smoothing_, dmean = inv_count_ * loss_scale;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < NT; ++i) {
    float* z = logits_.data() + i * V;
    const int32_t y = targets_[size_t(i)];
    if (y < 0) {
      std::fill(z, z + V, 0.0f);
      continue;
    }
    const float l = lse_[size_t(i)];
    for (int v = 0; v < V; ++v) z[v] = (std::exp(z[v] - l) - eps / V) * dmean;
    z[y] -= (1 - eps) * dmean;
  }
  // Decoder top.
  const std::vector<SubActs>& last_dec = dec_acts_.back();
  auto sub_out = [&](const std::vector<std::vector<SubActs>>& acts, size_t l, size_t k) {
    const SubActs& a = acts[l][k];
    return c.final_norm() ? a.res.data() : a.out.data();
  };
  const float* dec_last = sub_out(dec_acts_, dec_acts_.size() - 1, last_dec.size() - 1);
  const float* top = c.final_norm() ? dec_out_.data() : dec_last;
  float* dtop = c.final_norm() ? g_x_.data() : d0;
  nn::matmul(prec_, false, false, int(NT), C, V, 1.0f, logits_.data(), V, P + dec_.wte, C, 0.0f,
             dtop, C);
  nn::matmul(prec_, true, false, V, C, int(NT), 1.0f, logits_.data(), V, top, C, 1.0f, G + dec_.wte,
             C);
  if (c.final_norm()) {
    std::fill(d0, d0 + NT * C, 0.0f);
    norm_bwd(d0, dtop, dec_last, dec_.final_norm, dec_mean_.data(), dec_rstd_.data(), NT);
  }
  // Decoder stack, last sublayer first.
  const float* mem = c.final_norm()
                         ? enc_out_.data()
                         : sub_out(enc_acts_, enc_acts_.size() - 1, enc_acts_.back().size() - 1);
  std::fill(dmem, dmem + NS * C, 0.0f);
  float *dcur = d0, *dnext = d1;
  for (size_t l = dec_.layers.size(); l-- > 0;)
    for (size_t k = dec_.layers[l].size(); k-- > 0;) {
      const float* x_in = k > 0   ? sub_out(dec_acts_, l, k - 1)
                          : l > 0 ? sub_out(dec_acts_, l - 1, dec_.layers[l - 1].size() - 1)
                                  : dec_x_.data();
      sub_backward(dec_.layers[l][k], dec_acts_[l][k], x_in, dcur, dnext, B, T, tgt_len_.data(),
                   mem, dmem, S, src_len_.data(), true);
      std::swap(dcur, dnext);
    }
  embed_backward(dcur, tgt_.data(), B, T, dec_);
  // Encoder from d(memory).
  const float* enc_last = sub_out(enc_acts_, enc_acts_.size() - 1, enc_acts_.back().size() - 1);
  if (c.final_norm()) {
    std::fill(d0, d0 + NS * C, 0.0f);
    norm_bwd(d0, dmem, enc_last, enc_.final_norm, enc_mean_.data(), enc_rstd_.data(), NS);
  } else {
    std::memcpy(d0, dmem, sizeof(float) * size_t(NS) * C);
  }
  dcur = d0;
  dnext = d1;
  for (size_t l = enc_.layers.size(); l-- > 0;)
    for (size_t k = enc_.layers[l].size(); k-- > 0;) {
      const float* x_in = k > 0   ? sub_out(enc_acts_, l, k - 1)
                          : l > 0 ? sub_out(enc_acts_, l - 1, enc_.layers[l - 1].size() - 1)
                                  : enc_x_.data();
      sub_backward(enc_.layers[l][k], enc_acts_[l][k], x_in, dcur, dnext, B, S, src_len_.data(),
                   nullptr, nullptr, 0, nullptr, false);
      std::swap(dcur, dnext);
    }
  embed_backward(dcur, src_.data(), B, S, enc_);
  have_targets_ = false;
}

// ---- inference ----

void Seq2Seq::encode(const int32_t* src, int n) {
  const GPTConfig& c = cfg_.base;
  QKV_CHECK(n >= 1 && n <= c.block_size, "[seq2seq] the source has {} tokens; 1..{} fit", n,
            c.block_size);
  const int C = c.n_embd;
  const int32_t len = n;
  // The encoder as in training (batch 1), then each decoder layer's cross keys and values.
  AlignedVector<float> x(size_t(n) * C);
  plan(enc_acts_, enc_, n, 1, n, n);
  embed(x.data(), src, 1, n, enc_, 0);
  const float* h = x.data();
  for (size_t l = 0; l < enc_.layers.size(); ++l)
    for (size_t k = 0; k < enc_.layers[l].size(); ++k)
      h = sub_forward(enc_.layers[l][k], enc_acts_[l][k], h, 1, n, &len, nullptr, 0, nullptr,
                      false);
  mem_.assign(size_t(n) * C, 0.0f);
  if (c.final_norm()) {
    std::vector<float> mean(static_cast<size_t>(n)), rstd(static_cast<size_t>(n));
    norm_fwd(mem_.data(), mean.data(), rstd.data(), h, enc_.final_norm, n);
  } else {
    std::memcpy(mem_.data(), h, sizeof(float) * size_t(n) * C);
  }
  const size_t L = dec_.layers.size();
  cross_kv_.assign(L * size_t(n) * 2 * C, 0.0f);
  const float* P = params_buf_.data();
  for (size_t l = 0; l < L; ++l) {
    const Sub& s = dec_.layers[l][1];
    nn::linear_forward(cross_kv_.data() + l * size_t(n) * 2 * C, mem_.data(), P + s.w2,
                       s.b2 == kNone ? nullptr : P + s.b2, n, C, 2 * C);
  }
  src_n_ = n;
  beams_ = 0;
}

void Seq2Seq::start(int beams) {
  QKV_CHECK(src_n_ > 0, "[seq2seq] start() needs encode() first");
  QKV_CHECK(beams >= 1 && beams <= 256, "[seq2seq] {} beams out of range [1, 256]", beams);
  const GPTConfig& c = cfg_.base;
  const size_t C = size_t(c.n_embd), Tm = size_t(c.block_size), L = dec_.layers.size();
  beams_ = beams;
  dec_pos_ = 0;
  self_kv_.assign(L * size_t(beams) * 2 * Tm * C, 0.0f);
  const size_t rows = size_t(beams);
  step_x_.assign(rows * C, 0.0f);
  step_ln_.assign(rows * C, 0.0f);
  step_a_.assign(rows * std::max<size_t>(3 * C, size_t(c.fc_width())), 0.0f);
  step_b_.assign(rows * std::max<size_t>(C, size_t(c.mlp_hidden())), 0.0f);
  step_c_.assign(rows * C, 0.0f);
  step_tmp_.assign(rows * C, 0.0f);
  step_logits_.assign(rows * size_t(c.vocab_size), 0.0f);
  step_stats_.assign(2 * rows, 0.0f);
}

const float* Seq2Seq::step(const int32_t* tokens) {
  QKV_CHECK(beams_ > 0, "[seq2seq] step() needs start() first");
  const GPTConfig& c = cfg_.base;
  QKV_CHECK(dec_pos_ < c.block_size, "[seq2seq] the target reached block_size {}", c.block_size);
  const int C = c.n_embd, R = beams_, Tm = c.block_size, pos = dec_pos_;
  const float* P = params_buf_.data();
  auto opt = [&](size_t o) { return o == kNone ? nullptr : P + o; };
  const bool pre = c.final_norm();
  float* mean = step_stats_.data();  // per-row norm statistics (unused after the call)
  float* rstd = mean + R;
  float* x = step_x_.data();
  embed(x, tokens, R, 1, dec_, pos);
  for (size_t l = 0; l < dec_.layers.size(); ++l) {
    float* kc = self_kv_.data() + l * size_t(R) * 2 * Tm * C;  // (R, Tm, C) keys then values
    float* vc = kc + size_t(R) * Tm * C;
    for (const Sub& s : dec_.layers[l]) {
      const float* h = x;
      if (pre) {
        norm_fwd(step_ln_.data(), mean, rstd, x, s.norm, R);
        h = step_ln_.data();
      }
      float* y = step_c_.data();
      if (s.kind == Sub::Mlp) {
        nn::linear_forward(step_a_.data(), h, P + s.w1, opt(s.b1), R, C, c.fc_width());
        act_fwd(c, step_b_.data(), step_a_.data(), R);
        nn::linear_forward(y, step_b_.data(), P + s.wo, opt(s.bo), R, c.mlp_hidden(), C);
      } else {
        AttnArgs<float> a;
        if (s.kind == Sub::Self) {
          nn::linear_forward(step_a_.data(), h, P + s.w1, opt(s.b1), R, C, 3 * C);
          for (int r = 0; r < R; ++r) {
            const float* row = step_a_.data() + size_t(r) * 3 * C;
            std::memcpy(kc + (size_t(r) * Tm + size_t(pos)) * C, row + C, sizeof(float) * C);
            std::memcpy(vc + (size_t(r) * Tm + size_t(pos)) * C, row + 2 * C, sizeof(float) * C);
          }
          a = attn_args(c, step_a_.data(), 3 * C, 3 * C, kc, vc, int64_t(Tm) * C, C, step_b_.data(),
                        nullptr, R, 1, pos + 1, nullptr, true);
          a.q_offset = pos;
        } else {
          nn::linear_forward(step_a_.data(), h, P + s.w1, opt(s.b1), R, C, C);
          const float* kv = cross_kv_.data() + l * size_t(src_n_) * 2 * C;
          // Every beam reads the same source keys: batch stride 0.
          a = attn_args(c, step_a_.data(), C, C, kv, kv + C, 0, 2 * C, step_b_.data(), nullptr, R,
                        1, src_n_, nullptr, false);
        }
        a.o_sb = C;
        cpu::attention_forward(a);
        nn::linear_forward(y, step_b_.data(), P + s.wo, opt(s.bo), R, C, C);
      }
      cpu::residual_forward(x, x, y, int64_t(R) * C);
      if (!pre) norm_fwd(x, mean, rstd, x, s.norm, R);
    }
  }
  const float* top = x;
  if (pre) {
    norm_fwd(step_ln_.data(), mean, rstd, x, dec_.final_norm, R);
    top = step_ln_.data();
  }
  cpu::gemm(false, true, R, c.vocab_size, C, 1.0f, top, C, P + dec_.wte, C, 0.0f,
            step_logits_.data(), c.vocab_size);
  ++dec_pos_;
  return step_logits_.data();
}

void Seq2Seq::reorder(const int32_t* parent) {
  const GPTConfig& c = cfg_.base;
  const size_t C = size_t(c.n_embd), Tm = size_t(c.block_size), R = size_t(beams_);
  const size_t per_beam = Tm * C, n = size_t(dec_pos_) * C;  // only the filled positions
  std::vector<float>& tmp = reorder_tmp_;  // kept: reorder runs at every beam-search step
  tmp.resize(R * per_beam);
  for (size_t l = 0; l < dec_.layers.size(); ++l)
    for (size_t kv = 0; kv < 2; ++kv) {
      float* base = self_kv_.data() + (l * 2 + kv) * R * per_beam;
      for (size_t r = 0; r < R; ++r) {
        QKV_CHECK(parent[r] >= 0 && size_t(parent[r]) < R, "[seq2seq] beam parent {} out of range",
                  parent[r]);
        std::memcpy(tmp.data() + r * per_beam, base + size_t(parent[r]) * per_beam,
                    sizeof(float) * n);
      }
      for (size_t r = 0; r < R; ++r)
        std::memcpy(base + r * per_beam, tmp.data() + r * per_beam, sizeof(float) * n);
    }
}

// ---- files ----

void Seq2Seq::save(const std::string& path) const {
  std::vector<TensorRef> refs;
  for (const Param& p : params_)
    refs.push_back({p.name, DType::F32, p.shape, params_buf_.data() + p.offset});
  save_safetensors(path, refs, {{"format", "pt"}});
}

void Seq2Seq::load(const std::string& path) {
  SafetensorsFile f(path);
  for (const Param& p : params_) {
    QKV_CHECK(f.has(p.name), "{}: missing tensor '{}'", path, p.name);
    Tensor t = f.get(p.name);
    QKV_CHECK(t.shape() == p.shape, "{}: tensor '{}' has shape {}, expected {}", path, p.name,
              t.shape_str(), shape_to_string(p.shape));
    read_float_weights(t, params_buf_.data() + p.offset, path, p.name);
  }
}

Seq2Seq Seq2Seq::from_dir(const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  Seq2Seq m(Seq2SeqConfig::from_json(read_json_file(cfg_path), cfg_path));
  m.load(dir + "/model.safetensors");
  return m;
}

void Seq2Seq::save_dir(const std::string& dir) const {
  make_dirs(dir);
  write_file_atomic(dir + "/config.json", cfg_.to_json().dump(2) + "\n");
  save(dir + "/model.safetensors");
}

}  // namespace qkv

#include "qkv/interp/interp.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/error.h"
#include "qkv/core/logprob.h"
#include "qkv/core/rng.h"

namespace qkv::interp {

namespace {
// Runs the prompt (batch 1) with the given hooks, then removes them.
void run(GPT& m, const std::vector<int32_t>& ids, const Hooks* hooks) {
  m.set_hooks(hooks);
  try {
    m.forward(ids.data(), nullptr, 1, int(ids.size()));
  } catch (...) {
    m.set_hooks(nullptr);
    throw;
  }
  m.set_hooks(nullptr);
}

// Mean next-token loss of the last forward over the prompt (0 for one token).
double prompt_loss(const GPT& m, const std::vector<int32_t>& ids) {
  const int V = m.config().vocab_size, T = int(ids.size());
  if (T < 2) return 0;
  double sum = 0;
  for (int t = 0; t + 1 < T; ++t)
    sum -= log_softmax_at(m.logits() + size_t(t) * V, V, ids[size_t(t) + 1]);
  return sum / (T - 1);
}

}  // namespace

void check_prompt(const GPT& m, const std::vector<int32_t>& ids) {
  const GPTConfig& c = m.config();
  QKV_CHECK(!ids.empty(), "the prompt is empty");
  QKV_CHECK(int64_t(ids.size()) <= c.block_size,
            "the prompt has {} tokens; the model's context is {}", ids.size(), c.block_size);
  for (size_t i = 0; i < ids.size(); ++i)
    QKV_CHECK(ids[i] >= 0 && ids[i] < c.vocab_size, "token {} at position {} is not in [0, {})",
              ids[i], i, c.vocab_size);
  QKV_CHECK(m.has_fp32_weights(), "this model holds int8 weights; inspect needs the fp32 model");
}

std::vector<std::vector<std::vector<float>>> attention_maps(GPT& m,
                                                            const std::vector<int32_t>& ids) {
  check_prompt(m, ids);
  run(m, ids, nullptr);
  const int L = m.config().n_layer, NH = m.config().n_head, T = int(ids.size());
  std::vector<std::vector<std::vector<float>>> maps(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l)
    for (int h = 0; h < NH; ++h) {
      maps[size_t(l)].emplace_back(size_t(T) * T);
      m.attention_map(l, 0, h, maps[size_t(l)].back().data());
    }
  return maps;
}

LogitLens logit_lens(GPT& m, const std::vector<int32_t>& ids, int k) {
  check_prompt(m, ids);
  const GPTConfig& c = m.config();
  const int L = c.n_layer, T = int(ids.size()), C = c.n_embd, V = c.vocab_size;
  k = std::clamp(k, 1, V);
  Hooks hooks;
  hooks.cache({HookPoint::Embed, -1});
  for (int l = 0; l < L; ++l) hooks.cache({HookPoint::ResidPost, l});
  run(m, ids, &hooks);
  LogitLens lens;
  lens.rows = L + 1;
  lens.T = T;
  lens.k = k;
  lens.top.resize(size_t(lens.rows) * T * size_t(k));
  std::vector<float> ln(size_t(T) * C), logits(size_t(T) * V);
  std::vector<int32_t> order(static_cast<size_t>(V));
  for (int row = 0; row <= L; ++row) {
    const auto& x = row == 0 ? hooks.cached({HookPoint::Embed, -1})
                             : hooks.cached({HookPoint::ResidPost, row - 1});
    m.final_norm(x.data(), T, ln.data());
    cpu::gemm(false, true, T, V, C, 1.0f, ln.data(), C, m.param("wte.weight"), C, 0.0f,
              logits.data(), V);
    for (int t = 0; t < T; ++t) {
      const float* lg = logits.data() + size_t(t) * V;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return lg[a] > lg[b] || (lg[a] == lg[b] && a < b);
      });
      for (int i = 0; i < k; ++i)
        lens.top[(size_t(row) * T + t) * k + i] = {
            order[size_t(i)], float(std::exp(log_softmax_at(lg, V, order[size_t(i)])))};
    }
    if (row == L) lens.last_logits = logits;
  }
  return lens;
}

Attribution direct_logit_attribution(GPT& m, const std::vector<int32_t>& ids, int pos,
                                     int32_t token) {
  check_prompt(m, ids);
  const GPTConfig& c = m.config();
  const int L = c.n_layer, NH = c.n_head, HS = c.head_size(), C = c.n_embd, V = c.vocab_size;
  const int T = int(ids.size());
  QKV_CHECK(pos >= 0 && pos < T, "position {} out of range [0, {})", pos, T);
  QKV_CHECK(token >= 0 && token < V, "token {} out of range [0, {})", token, V);
  QKV_CHECK(c.final_norm(),
            "direct logit attribution needs a pre-norm model: post-norm blocks normalise the "
            "stream after every block, so the logit is not a sum of the components' writes");
  Hooks hooks;
  hooks.cache({HookPoint::Embed, -1});
  for (int l = 0; l < L; ++l) {
    hooks.cache({HookPoint::Heads, l});
    if (c.mlp) hooks.cache({HookPoint::MlpOut, l});
  }
  hooks.cache({HookPoint::ResidPost, L - 1});
  run(m, ids, &hooks);
  Attribution out;
  out.pos = pos;
  out.token = token;
  out.logit = m.logits()[size_t(pos) * V + size_t(token)];
  // ln_f(x) . w = sum_c (x_c - mean(x)) rstd g_c w_c + sum_c b_c w_c, with rstd frozen.
  const float* x = hooks.cached({HookPoint::ResidPost, L - 1}).data() + size_t(pos) * C;
  double mean = 0, var = 0;
  for (int i = 0; i < C; ++i) mean += x[i];
  mean /= C;
  // LayerNorm centres each write (its mean is subtracted); RMSNorm does not.
  const bool centred = c.norm == GPTConfig::Norm::LayerNorm;
  if (!centred) mean = 0;
  for (int i = 0; i < C; ++i) var += (x[i] - mean) * (x[i] - mean);
  const double rstd = 1.0 / std::sqrt(var / C + double(c.ln_eps));
  const float* g = m.param("ln_f.weight");
  const float* w = m.param("wte.weight") + size_t(token) * C;
  std::vector<double> u(static_cast<size_t>(C));
  double usum = 0;
  for (int i = 0; i < C; ++i) usum += (u[size_t(i)] = rstd * g[i] * w[i]);
  auto contribution = [&](const double* v) {
    double dot = 0, vm = 0;
    for (int i = 0; i < C; ++i) {
      dot += v[i] * u[size_t(i)];
      vm += v[i];
    }
    return centred ? dot - vm / C * usum : dot;
  };
  std::vector<double> v(static_cast<size_t>(C));
  auto from_floats = [&](const float* p) {
    for (int i = 0; i < C; ++i) v[size_t(i)] = p[i];
    return contribution(v.data());
  };
  out.parts.push_back({"embed", -1, -1,
                       from_floats(hooks.cached({HookPoint::Embed, -1}).data() + size_t(pos) * C)});
  for (int l = 0; l < L; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    const float* heads = hooks.cached({HookPoint::Heads, l}).data() + size_t(pos) * C;
    const float* wo = m.param(p + "attn.c_proj.weight");  // (C in, C out)
    for (int h = 0; h < NH; ++h) {
      std::fill(v.begin(), v.end(), 0.0);
      for (int d = h * HS; d < (h + 1) * HS; ++d)
        for (int o = 0; o < C; ++o) v[size_t(o)] += double(heads[d]) * wo[size_t(d) * C + o];
      out.parts.push_back(
          {std::to_string(l) + "." + std::to_string(h), l, h, contribution(v.data())});
    }
    if (c.bias)
      out.parts.push_back(
          {std::to_string(l) + ".attn_bias", l, -1, from_floats(m.param(p + "attn.c_proj.bias"))});
    if (c.mlp)
      out.parts.push_back(
          {std::to_string(l) + ".mlp", l, -1,
           from_floats(hooks.cached({HookPoint::MlpOut, l}).data() + size_t(pos) * C)});
  }
  if (c.bias && c.norm == GPTConfig::Norm::LayerNorm) {
    const float* b = m.param("ln_f.bias");
    double s = 0;
    for (int i = 0; i < C; ++i) s += double(b[i]) * w[i];
    out.parts.push_back({"ln_f.bias", -1, -1, s});
  }
  return out;
}

Ablations ablations(GPT& m, const std::vector<int32_t>& ids) {
  check_prompt(m, ids);
  QKV_CHECK(ids.size() >= 2, "ablations need a prompt of at least 2 tokens (a loss)");
  const GPTConfig& c = m.config();
  const int L = c.n_layer, NH = c.n_head, HS = c.head_size(), C = c.n_embd, T = int(ids.size());
  Hooks clean;
  for (int l = 0; l < L; ++l) {
    clean.cache({HookPoint::Heads, l});
    if (c.mlp) clean.cache({HookPoint::MlpOut, l});
  }
  run(m, ids, &clean);
  Ablations out;
  out.clean_loss = prompt_loss(m, ids);
  auto mean_over_positions = [&](const std::vector<float>& a, int off, int n) {
    std::vector<float> mean(static_cast<size_t>(n), 0.0f);
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < n; ++i) mean[size_t(i)] += a[size_t(t) * C + off + i] / float(T);
    return mean;
  };
  auto loss_with = [&](const Hooks& h) {
    run(m, ids, &h);
    return prompt_loss(m, ids) - out.clean_loss;
  };
  for (int l = 0; l < L; ++l) {
    for (int h = 0; h < NH; ++h) {  // the heads, then the MLP (head -1)
      Ablation a{l, h, 0, 0};
      Hooks z, mh;
      z.zero({HookPoint::Heads, l}, h, HS);
      mh.mean_ablate({HookPoint::Heads, l},
                     mean_over_positions(clean.cached({HookPoint::Heads, l}), h * HS, HS), h, HS);
      a.zero_delta = loss_with(z);
      a.mean_delta = loss_with(mh);
      out.rows.push_back(a);
    }
    if (!c.mlp) continue;
    Ablation a{l, -1, 0, 0};
    Hooks z, mh;
    z.zero({HookPoint::MlpOut, l});
    mh.mean_ablate({HookPoint::MlpOut, l},
                   mean_over_positions(clean.cached({HookPoint::MlpOut, l}), 0, C));
    a.zero_delta = loss_with(z);
    a.mean_delta = loss_with(mh);
    out.rows.push_back(a);
  }
  return out;
}

CausalTrace causal_trace(GPT& m, const std::vector<int32_t>& ids, int subject_begin,
                         int subject_end, int32_t answer, int samples, double noise_scale,
                         uint64_t seed) {
  check_prompt(m, ids);
  const GPTConfig& c = m.config();
  const int L = c.n_layer, C = c.n_embd, V = c.vocab_size, T = int(ids.size());
  QKV_CHECK(subject_begin >= 0 && subject_begin < subject_end && subject_end <= T,
            "subject positions [{}, {}) are not inside the prompt's {} tokens", subject_begin,
            subject_end, T);
  QKV_CHECK(answer >= 0 && answer < V, "answer token {} out of range [0, {})", answer, V);
  QKV_CHECK(samples >= 1, "samples {} must be >= 1", samples);
  Hooks clean;
  for (int l = 0; l < L; ++l) {
    clean.cache({HookPoint::ResidPost, l});
    if (c.mlp) clean.cache({HookPoint::MlpOut, l});
    clean.cache({HookPoint::AttnOut, l});
  }
  run(m, ids, &clean);
  auto answer_prob = [&] {
    return std::exp(log_softmax_at(m.logits() + size_t(T - 1) * V, V, answer));
  };
  CausalTrace tr;
  tr.L = L;
  tr.T = T;
  tr.answer = answer;
  tr.clean_prob = answer_prob();
  // The noise scale: the standard deviation of the token embedding matrix's entries.
  const float* wte = m.param("wte.weight");
  double s1 = 0, s2 = 0;
  const size_t nw = size_t(V) * C;
  for (size_t i = 0; i < nw; ++i) {
    s1 += wte[i];
    s2 += double(wte[i]) * wte[i];
  }
  const double sigma =
      noise_scale * std::sqrt(std::max(0.0, s2 / double(nw) - (s1 / nw) * (s1 / nw)));
  std::vector<std::vector<float>> noise(static_cast<size_t>(samples));
  for (int s = 0; s < samples; ++s) {
    Rng rng(seed, uint64_t(s));
    noise[size_t(s)].resize(size_t(subject_end - subject_begin) * C);
    for (auto& x : noise[size_t(s)]) x = float(rng.normal() * sigma);
  }
  auto corrupted = [&](Hooks& h, int s) {
    const std::vector<float>* n = &noise[size_t(s)];
    h.add({HookPoint::Embed, -1}, [n, subject_begin, subject_end, C](float* d, int, int, int) {
      for (int t = subject_begin; t < subject_end; ++t)
        for (int i = 0; i < C; ++i) d[size_t(t) * C + i] += (*n)[size_t(t - subject_begin) * C + i];
    });
  };
  auto mean_prob = [&](const std::function<void(Hooks&)>& restore) {
    double p = 0;
    for (int s = 0; s < samples; ++s) {
      Hooks h;
      corrupted(h, s);
      restore(h);
      run(m, ids, &h);
      p += answer_prob();
    }
    return p / samples;
  };
  tr.corrupt_prob = mean_prob([](Hooks&) {});
  tr.hidden.assign(size_t(L) * T, 0.0);
  tr.mlp = tr.attn = tr.hidden;
  if (!c.mlp) tr.mlp.clear();  // attention-only: no MLP to restore
  for (int l = 0; l < L; ++l)
    for (int t = 0; t < T; ++t) {
      const size_t at = size_t(l) * T + t;
      for (auto [point, dst] :
           {std::pair{HookPoint::ResidPost, &tr.hidden}, std::pair{HookPoint::MlpOut, &tr.mlp},
            std::pair{HookPoint::AttnOut, &tr.attn}}) {
        if (dst->empty()) continue;
        const HookSite site{point, l};
        (*dst)[at] = mean_prob([&](Hooks& h) { h.replace(site, clean.cached(site), {t}); });
      }
    }
  return tr;
}

}  // namespace qkv::interp

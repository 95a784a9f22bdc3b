// Interpretability from the fast engine, against independent computations: attention maps
// against a naive softmax of the same queries and keys; the logit lens's last row against the
// model's output; direct logit attribution summing to the logit; hook ablation against edited
// weights; causal tracing's exact limits.
#include "qkv/interp/interp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/error.h"
#include "qkv/core/rng.h"
#include "qkv/models/gpt.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

GPT tiny_model(AttnKind kind = AttnKind::Dense, uint64_t seed = 11) {
  GPTConfig c = test::tiny_config(3, 4, 32, 32, 29);
  c.attention = kind;
  if (kind == AttnKind::Sliding) c.window = 5;
  GPT m(c);
  m.init_weights(seed);
  // Larger weights than GPT-2's init, so attention is far from uniform and every part matters.
  Rng rng(seed, 99);
  for (size_t i = 0; i < m.num_params(); ++i) m.param_data()[i] += float(rng.normal() * 0.08);
  return m;
}

std::vector<int32_t> ids_of(int n, int V, uint64_t seed) {
  Rng rng(seed, 5);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& t : ids) t = int32_t(rng.below(uint64_t(V)));
  return ids;
}

TEST(Interp, AttentionMapsEqualNaiveSoftmaxOfTheSameQueriesAndKeys) {
  for (AttnKind kind : {AttnKind::Dense, AttnKind::Sliding, AttnKind::Linear}) {
    GPT m = tiny_model(kind);
    const GPTConfig& c = m.config();
    const int T = 23, C = c.n_embd, HS = c.head_size();
    // Two sequences: the maps of the second one (batch offsets included).
    const int B = 2;
    const auto ids = ids_of(B * T, c.vocab_size, 1);
    Hooks hooks;
    for (int l = 0; l < c.n_layer; ++l) hooks.cache({HookPoint::Qkv, l});
    m.set_hooks(&hooks);
    m.forward(ids.data(), nullptr, B, T);
    m.set_hooks(nullptr);
    std::vector<float> map(size_t(T) * T);
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < c.n_head; ++h) {
        m.attention_map(l, 1, h, map.data());
        const float* qkv = hooks.cached({HookPoint::Qkv, l}).data() + size_t(T) * 3 * C;
        for (int i = 0; i < T; ++i) {
          // The naive row: every score, the rule's mask, softmax (or linear weights), in double.
          std::vector<double> p(static_cast<size_t>(T), 0.0);
          double sum = 0, mx = -1e300;
          for (int j = 0; j <= i; ++j) {
            if (kind == AttnKind::Sliding && i - j >= c.window) continue;
            double s = 0;
            for (int d = 0; d < HS; ++d) {
              const double q = qkv[size_t(i) * 3 * C + h * HS + d];
              const double k = qkv[size_t(j) * 3 * C + C + h * HS + d];
              s += kind == AttnKind::Linear
                       ? (q > 0 ? q + 1 : std::exp(q)) * (k > 0 ? k + 1 : std::exp(k))
                       : q * k;
            }
            p[size_t(j)] = kind == AttnKind::Linear ? s : s / std::sqrt(double(HS));
            mx = std::max(mx, p[size_t(j)]);
          }
          for (int j = 0; j <= i; ++j) {
            if (kind == AttnKind::Sliding && i - j >= c.window) continue;
            if (kind != AttnKind::Linear) p[size_t(j)] = std::exp(p[size_t(j)] - mx);
            sum += p[size_t(j)];
          }
          double row_sum = 0;
          for (int j = 0; j < T; ++j) {
            const float got = map[size_t(i) * T + j];
            ASSERT_NEAR(got, p[size_t(j)] / sum, 1e-6)
                << "layer " << l << " head " << h << " (" << i << ", " << j << ")";
            if (j > i) {
              ASSERT_EQ(got, 0.0f) << "above the diagonal";
            }
            row_sum += got;
          }
          ASSERT_NEAR(row_sum, 1.0, 1e-5);
        }
      }
  }
}

// Padded keys get exactly 0 in the recomputed maps (kernel level, bidirectional and causal).
TEST(Interp, PaddedKeysGetZeroProbability) {
  const int B = 2, NH = 2, T = 40, HS = 8, C = NH * HS;
  const std::vector<int32_t> lens = {40, 17};
  auto qkv = test::randn(size_t(B) * T * 3 * C, 3);
  std::vector<float> out(size_t(B) * T * C), lse(size_t(B) * NH * T), map(size_t(T) * T);
  for (bool causal : {false, true}) {
    auto a = attn_args_packed_qkv<float>(qkv.data(), out.data(), lse.data(), B, T, NH, HS);
    a.causal = causal;
    a.key_len = lens.data();
    cpu::attention_forward(a);
    cpu::attention_probs(a, 1, 1, map.data());
    for (int i = 0; i < T; ++i) {
      double sum = 0;
      for (int j = 0; j < T; ++j) {
        if (j >= 17 || (causal && j > i)) {
          ASSERT_EQ(map[size_t(i) * T + j], 0.0f);
        }
        sum += map[size_t(i) * T + j];
      }
      ASSERT_NEAR(sum, 1.0, 1e-5) << "row " << i;
    }
  }
}

TEST(Interp, LogitLensLastRowIsTheModelsOutput) {
  GPT m = tiny_model();
  const auto ids = ids_of(17, m.config().vocab_size, 2);
  const auto lens = interp::logit_lens(m, ids, 5);
  ASSERT_EQ(lens.rows, m.config().n_layer + 1);
  m.forward(ids.data(), nullptr, 1, int(ids.size()));
  const int V = m.config().vocab_size;
  ASSERT_EQ(lens.last_logits.size(), ids.size() * size_t(V));
  EXPECT_LE(test::rel_err(lens.last_logits.data(), m.logits(), lens.last_logits.size()), 1e-6);
  for (int t = 0; t < int(ids.size()); ++t) {
    const float* lg = m.logits() + size_t(t) * V;
    const int32_t best = int32_t(std::max_element(lg, lg + V) - lg);
    const auto* top = lens.at(lens.rows - 1, t);
    EXPECT_EQ(top[0].token, best);
    for (int i = 1; i < 5; ++i) EXPECT_LE(top[i].prob, top[i - 1].prob);
  }
}

TEST(Interp, DirectLogitAttributionSumsToTheLogitWithRmsNorm) {
  GPTConfig c = test::tiny_config(2, 2, 32, 32, 29);
  c.norm = GPTConfig::Norm::RMSNorm;
  c.act = GPTConfig::Act::ReLU;
  GPT m(c);
  m.init_weights(5);
  Rng rng(5, 99);
  for (size_t i = 0; i < m.num_params(); ++i) m.param_data()[i] += float(rng.normal() * 0.08);
  const auto ids = ids_of(15, c.vocab_size, 3);
  const auto a = interp::direct_logit_attribution(m, ids, 14, 3);
  double sum = 0;
  for (const auto& p : a.parts) sum += p.value;
  EXPECT_NEAR(sum, a.logit, 1e-4 * std::max(1.0, std::abs(a.logit)));
  const auto lens = interp::logit_lens(m, ids, 3);
  m.forward(ids.data(), nullptr, 1, int(ids.size()));
  EXPECT_LE(test::rel_err(lens.last_logits.data(), m.logits(), lens.last_logits.size()), 1e-6);
}

// Post-norm, rotary, grouped-query, SwiGLU: the lens's last row is the model's logits (the
// blocks' output goes to the head as it is), and attribution refuses with a reason.
TEST(Interp, PostNormModelLensAndNoAttribution) {
  GPTConfig c = test::tiny_config(2, 4, 32, 32, 29);
  c.norm_pos = GPTConfig::NormPos::Post;
  c.pos = PosEncoding::Rope;
  c.n_kv_head = 2;
  c.act = GPTConfig::Act::SwiGLU;
  GPT m(c);
  m.init_weights(6);
  const auto ids = ids_of(15, c.vocab_size, 4);
  const auto lens = interp::logit_lens(m, ids, 3);
  m.forward(ids.data(), nullptr, 1, int(ids.size()));
  EXPECT_LE(test::rel_err(lens.last_logits.data(), m.logits(), lens.last_logits.size()), 1e-6);
  try {
    interp::direct_logit_attribution(m, ids, 14, 3);
    FAIL() << "expected an error for a post-norm model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pre-norm"), std::string::npos) << e.what();
  }
}

TEST(Interp, DirectLogitAttributionSumsToTheLogit) {
  GPT m = tiny_model();
  const auto ids = ids_of(19, m.config().vocab_size, 3);
  for (int pos : {0, 7, 18})
    for (int32_t tok : {0, 5, 28}) {
      const auto a = interp::direct_logit_attribution(m, ids, pos, tok);
      double sum = 0;
      for (const auto& p : a.parts) sum += p.value;
      EXPECT_NEAR(sum, a.logit, 1e-4 * std::max(1.0, std::abs(a.logit))) << pos << " " << tok;
      // embed + L * (NH heads + attn bias + mlp) + ln_f.bias
      const GPTConfig& c = m.config();
      EXPECT_EQ(a.parts.size(), size_t(1 + c.n_layer * (c.n_head + 2) + 1));
    }
}

TEST(Interp, ZeroAblatingAHeadEqualsZeroingItsOutputWeights) {
  GPT m = tiny_model();
  const GPTConfig& c = m.config();
  const auto ids = ids_of(21, c.vocab_size, 4);
  const int T = int(ids.size()), V = c.vocab_size, HS = c.head_size(), C = c.n_embd;
  const int layer = 1, head = 2;
  Hooks hooks;
  hooks.zero({HookPoint::Heads, layer}, head, HS);
  m.set_hooks(&hooks);
  m.forward(ids.data(), nullptr, 1, T);
  m.set_hooks(nullptr);
  std::vector<float> hooked(m.logits(), m.logits() + size_t(T) * V);
  // The same head removed in the weights: its rows of c_proj (HF layout [in, out]).
  GPT edited = tiny_model();
  float* wo = edited.param("h.1.attn.c_proj.weight");
  std::fill(wo + size_t(head) * HS * C, wo + size_t(head + 1) * HS * C, 0.0f);
  edited.forward(ids.data(), nullptr, 1, T);
  EXPECT_LE(test::rel_err(hooked.data(), edited.logits(), hooked.size()), 1e-6);
  // And the ablation table reports that model's loss change.
  const auto ab = interp::ablations(m, ids);
  double edited_loss = 0;
  for (int t = 0; t + 1 < T; ++t) {
    const float* lg = edited.logits() + size_t(t) * V;
    double mx = *std::max_element(lg, lg + V), s = 0;
    for (int v = 0; v < V; ++v) s += std::exp(double(lg[v]) - mx);
    edited_loss += mx + std::log(s) - lg[ids[size_t(t) + 1]];
  }
  edited_loss /= T - 1;
  bool found = false;
  for (const auto& r : ab.rows)
    if (r.layer == layer && r.head == head) {
      EXPECT_NEAR(ab.clean_loss + r.zero_delta, edited_loss, 1e-5);
      found = true;
    }
  EXPECT_TRUE(found);
  EXPECT_EQ(ab.rows.size(), size_t(c.n_layer * (c.n_head + 1)));
  // The hooked pass cannot be trained on.
  m.set_hooks(&hooks);
  std::vector<int32_t> y(ids.size(), 1);
  m.forward(ids.data(), y.data(), 1, T);
  m.set_hooks(nullptr);
  EXPECT_THROW(m.backward(), Error);
}

TEST(Interp, CausalTraceLimits) {
  GPT m = tiny_model();
  const GPTConfig& c = m.config();
  const auto ids = ids_of(12, c.vocab_size, 6);
  const int T = int(ids.size()), L = c.n_layer;
  const auto tr = interp::causal_trace(m, ids, 3, 6, 7, 2);
  EXPECT_NE(tr.clean_prob, tr.corrupt_prob);
  for (int l = 0; l < L; ++l)
    for (int t = 0; t < 3; ++t) {  // before the subject nothing was corrupted: no effect
      EXPECT_NEAR(tr.hidden[size_t(l) * T + t], tr.corrupt_prob, 1e-9);
      EXPECT_NEAR(tr.mlp[size_t(l) * T + t], tr.corrupt_prob, 1e-9);
      EXPECT_NEAR(tr.attn[size_t(l) * T + t], tr.corrupt_prob, 1e-9);
    }
  // Restoring the last layer's state at the last position restores the output exactly.
  EXPECT_NEAR(tr.hidden[size_t(L - 1) * T + T - 1], tr.clean_prob, 1e-6);
  // Bad input, before any work.
  EXPECT_THROW(interp::causal_trace(m, ids, 5, 5, 7), Error);
  EXPECT_THROW(interp::causal_trace(m, ids, 3, 13, 7), Error);
  EXPECT_THROW(interp::causal_trace(m, ids, 3, 6, c.vocab_size), Error);
  EXPECT_THROW(interp::logit_lens(m, ids_of(33, c.vocab_size, 1)), Error);  // > context
}

TEST(Interp, HookNames) {
  for (const char* n : {"embed", "blocks.0.attn.qkv", "blocks.2.attn.heads", "blocks.1.attn_out",
                        "blocks.0.mlp_out", "blocks.2.resid_post"})
    EXPECT_EQ(hook_name(parse_hook_name(n, 3)), n);
  EXPECT_THROW(parse_hook_name("blocks.3.mlp_out", 3), Error);
  EXPECT_THROW(parse_hook_name("blocks.x.mlp_out", 3), Error);
  EXPECT_THROW(parse_hook_name("blocks.0.mlp", 3), Error);
  EXPECT_THROW(parse_hook_name("resid", 3), Error);
}

}  // namespace
}  // namespace qkv

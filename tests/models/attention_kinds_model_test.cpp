// The attention rules inside the GPT: generation with the rule's cache (rolling window, linear
// state, full cache) equals recomputing the whole sequence with forward(), past block_size when
// the rule allows it; and bad settings are refused at config load, naming the key.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "qkv/core/error.h"
#include "qkv/core/rng.h"
#include "qkv/models/gpt.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

GPTConfig rule_config(AttnKind kind, PosEncoding pos) {
  GPTConfig c = test::tiny_config(2, 2, 32, 64, 41);
  c.attention = kind;
  c.pos = pos;
  if (kind == AttnKind::Sliding) c.window = 8;
  if (kind == AttnKind::BlockSparse) {
    c.attn_block = 8;
    c.attn_local_blocks = 1;
    c.attn_global = 2;
  }
  return c;
}

std::vector<int32_t> random_ids(int n, int V, uint64_t seed) {
  Rng rng(seed, 3);
  std::vector<int32_t> ids(size_t(n), 0);
  for (auto& t : ids) t = int32_t(rng.below(uint64_t(V)));
  return ids;
}

// Feeds `ids` through extend() (a prompt chunk, then one token at a time) and compares the
// logits after each step with forward() over the whole prefix.
void expect_cache_equals_recompute(GPT& m, const std::vector<int32_t>& ids, int prompt) {
  const int V = m.config().vocab_size;
  m.reset_cache();
  for (int n = prompt; n <= int(ids.size()); ++n) {
    const float* got =
        n == prompt ? m.extend(ids.data(), prompt) : m.extend(&ids[size_t(n - 1)], 1);
    std::vector<float> cached(got, got + V);
    m.forward(ids.data(), nullptr, 1, n);
    const float* full = m.logits() + size_t(n - 1) * V;
    ASSERT_LE(test::rel_err(cached.data(), full, size_t(V)), 2e-5) << "after " << n << " tokens";
  }
}

TEST(AttentionRulesInGpt, SlidingRollingCacheEqualsRecomputePastTheContext) {
  GPT m(rule_config(AttnKind::Sliding, PosEncoding::Sinusoidal));
  m.init_weights(1);
  // 200 tokens with block_size 64: the window's cache rolls many times, and the 100-token
  // prompt is itself longer than the context (prefilled in chunks).
  expect_cache_equals_recompute(m, random_ids(200, 41, 2), 100);
}

TEST(AttentionRulesInGpt, LinearStateEqualsRecomputePastTheContext) {
  GPT m(rule_config(AttnKind::Linear, PosEncoding::Sinusoidal));
  m.init_weights(3);
  expect_cache_equals_recompute(m, random_ids(180, 41, 4), 70);
}

TEST(AttentionRulesInGpt, BlockSparseAndLearnedSlidingCacheWithinTheContext) {
  for (AttnKind k : {AttnKind::BlockSparse, AttnKind::Sliding}) {
    GPT m(rule_config(k, PosEncoding::Learned));
    m.init_weights(5);
    expect_cache_equals_recompute(m, random_ids(64, 41, 6), 5);
    // Learned positions end at block_size: one more token is a clear error, not a bad read.
    try {
      m.extend(std::vector<int32_t>{1}.data(), 1);
      FAIL() << "expected an error past block_size";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("exceed"), std::string::npos) << e.what();
    }
  }
}

// Attention-only blocks ("mlp": false): the cache path and the packed-weight slots follow.
TEST(AttentionRulesInGpt, AttentionOnlyModelCachesAndPacks) {
  GPTConfig c = rule_config(AttnKind::Dense, PosEncoding::Learned);
  c.mlp = false;
  GPT m(c);
  m.init_weights(7);
  for (const auto& p : m.params())
    EXPECT_TRUE(p.name.find("mlp") == std::string::npos && p.name.find("ln_2") == std::string::npos)
        << p.name;
  const auto ids = random_ids(40, 41, 8);
  expect_cache_equals_recompute(m, ids, 3);
  m.forward(ids.data(), nullptr, 1, 40);
  std::vector<float> full(m.logits() + size_t(39) * 41, m.logits() + size_t(40) * 41);
  m.set_inference_weights(GPT::Weights::BF16);
  m.reset_cache();
  const float* got = m.extend(ids.data(), 40);
  EXPECT_LE(test::rel_err(got, full.data(), full.size()), 3e-2) << "bf16 packed slots";
}

// RMSNorm and ReLU blocks through the cache path.
TEST(AttentionRulesInGpt, RmsNormReluCacheEqualsRecompute) {
  GPTConfig c = rule_config(AttnKind::Dense, PosEncoding::Learned);
  c.norm = GPTConfig::Norm::RMSNorm;
  c.act = GPTConfig::Act::ReLU;
  GPT m(c);
  m.init_weights(9);
  expect_cache_equals_recompute(m, random_ids(40, 41, 10), 4);
  const GPTConfig r = GPTConfig::from_json(c.to_json(), "roundtrip");
  EXPECT_EQ(r.norm, c.norm);
  EXPECT_EQ(r.act, c.act);
  EXPECT_EQ(r.num_params(), c.num_params());
  // RMSNorm has no bias: 2 per layer + ln_f fewer vectors of C than LayerNorm.
  GPTConfig ln = c;
  ln.norm = GPTConfig::Norm::LayerNorm;
  EXPECT_EQ(ln.num_params() - c.num_params(), int64_t(2 * c.n_layer + 1) * c.n_embd);
}

// The block options of the Transformer family (rotary / ALiBi positions, grouped-query
// attention, post-norm, SwiGLU, n_inner) through the cache path, past block_size where the rule
// allows it, and through the packed bf16 / int8 weight slots.
TEST(BlockOptionsInGpt, CacheEqualsRecompute) {
  struct Case {
    const char* name;
    AttnKind kind;
    PosEncoding pos;
    int n_kv_head;
    GPTConfig::NormPos norm_pos;
    GPTConfig::Act act;
    int n_inner, n, prompt;
  };
  using NP = GPTConfig::NormPos;
  using A = GPTConfig::Act;
  for (const Case& k : {
           Case{"rope_gqa_swiglu", AttnKind::Dense, PosEncoding::Rope, 1, NP::Pre, A::SwiGLU, 40,
                64, 5},
           Case{"rope_sliding_past_context", AttnKind::Sliding, PosEncoding::Rope, 1, NP::Pre,
                A::GeluTanh, 0, 200, 100},
           Case{"alibi_sliding_post_past_context", AttnKind::Sliding, PosEncoding::Alibi, 0,
                NP::Post, A::ReLU, 0, 180, 70},
           Case{"alibi_block_sparse_gqa", AttnKind::BlockSparse, PosEncoding::Alibi, 1, NP::Pre,
                A::SwiGLU, 0, 64, 3},
           Case{"post_sinusoidal_dense", AttnKind::Dense, PosEncoding::Sinusoidal, 0, NP::Post,
                A::GeluTanh, 24, 64, 9},
           Case{"rope_linear_past_context", AttnKind::Linear, PosEncoding::Rope, 0, NP::Post,
                A::SwiGLU, 0, 150, 30},
       }) {
    SCOPED_TRACE(k.name);
    GPTConfig c = rule_config(k.kind, k.pos);
    c.n_kv_head = k.n_kv_head;
    c.norm_pos = k.norm_pos;
    c.act = k.act;
    c.n_inner = k.n_inner;
    GPT m(c);
    m.init_weights(21);
    size_t numel = 0;
    for (const auto& p : m.params()) numel += p.numel;
    EXPECT_EQ(int64_t(numel), c.num_params());
    const auto ids = random_ids(k.n, 41, 22);
    expect_cache_equals_recompute(m, ids, k.prompt);
    // The packed weights follow the options' shapes (bf16 and int8 stay close to fp32).
    const int n = std::min(k.n, 64);
    m.forward(ids.data(), nullptr, 1, n);
    const std::vector<float> full(m.logits() + size_t(n - 1) * 41, m.logits() + size_t(n) * 41);
    for (auto w : {GPT::Weights::BF16, GPT::Weights::INT8}) {
      m.set_inference_weights(w);
      const float* got = m.extend(ids.data(), n);
      EXPECT_LE(test::rel_err(got, full.data(), full.size()), 5e-2) << GPT::weights_name(w);
    }
    // config.json round trip.
    const GPTConfig r = GPTConfig::from_json(c.to_json(), "roundtrip");
    EXPECT_EQ(r.pos, c.pos);
    EXPECT_EQ(r.kv_heads(), c.kv_heads());
    EXPECT_EQ(r.norm_pos, c.norm_pos);
    EXPECT_EQ(r.act, c.act);
    EXPECT_EQ(r.mlp_hidden(), c.mlp_hidden());
    EXPECT_EQ(r.num_params(), c.num_params());
  }
}

// ALiBi's slopes for a power-of-two head count are the paper's geometric sequence 2^(-8h/n)
// (8 heads: 1/2, 1/4, ..., 1/256). A 1-head model has slope 2^-8, so with all scores equal its
// attention weights fall as exp(-2^-8 |i - j|), which the map shows.
TEST(BlockOptionsInGpt, AlibiMapDecaysWithDistance) {
  GPTConfig c = rule_config(AttnKind::Dense, PosEncoding::Alibi);
  c.n_head = 1;
  GPT m(c);
  m.init_weights(23);
  // Zero query/key projections: every score is 0 before the bias.
  float* w = m.param("h.0.attn.c_attn.weight");
  for (int r = 0; r < c.n_embd; ++r)
    for (int col = 0; col < 2 * c.n_embd; ++col) w[size_t(r) * 3 * c.n_embd + size_t(col)] = 0;
  float* b = m.param("h.0.attn.c_attn.bias");
  for (int col = 0; col < 2 * c.n_embd; ++col) b[col] = 0;
  const auto ids = random_ids(6, 41, 24);
  m.forward(ids.data(), nullptr, 1, 6);
  std::vector<float> map(36);
  m.attention_map(0, 0, 0, map.data());
  // Row 5: weights proportional to 2^(-8 (5 - j)) (slope 2^-8 for one head).
  double z = 0;
  for (int j = 0; j <= 5; ++j) z += std::exp(-std::pow(2.0, -8.0) * (5 - j));
  for (int j = 0; j <= 5; ++j)
    EXPECT_NEAR(map[size_t(30 + j)], std::exp(-std::pow(2.0, -8.0) * (5 - j)) / z, 1e-6) << j;
}

// Switching the inference weights mid-sequence restarts the cache (a rolled sliding window
// included): the next sequence equals the same model freshly set to those weights.
TEST(AttentionRulesInGpt, NewInferenceWeightsRestartTheCache) {
  GPT m(rule_config(AttnKind::Sliding, PosEncoding::Sinusoidal));
  m.init_weights(11);
  const auto ids = random_ids(150, 41, 12);
  m.extend(ids.data(), 64);
  m.extend(ids.data() + 64, 64);  // the window has rolled
  m.set_inference_weights(GPT::Weights::BF16);
  EXPECT_EQ(m.cache_len(), 0);
  const float* a = m.extend(ids.data(), 50);
  const std::vector<float> got(a, a + 41);
  GPT fresh(rule_config(AttnKind::Sliding, PosEncoding::Sinusoidal));
  fresh.init_weights(11);
  fresh.set_inference_weights(GPT::Weights::BF16);
  const float* b = fresh.extend(ids.data(), 50);
  for (int i = 0; i < 41; ++i) EXPECT_EQ(got[size_t(i)], b[i]) << i;
}

TEST(AttentionRulesInGpt, BadSettingsFailAtConfigLoad) {
  auto load = [](const std::string& extra) {
    const std::string text = R"({"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 64,
                                 "vocab_size": 10)" +
                             extra + "}";
    return GPTConfig::from_json(nlohmann::json::parse(text), "m/config.json");
  };
  auto error_of = [&](const std::string& extra) -> std::string {
    try {
      load(extra);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NO_THROW(load(R"(, "attention": "sliding", "window": 64)"));
  EXPECT_NO_THROW(load(R"(, "attention": "block_sparse", "attn_block": 16, "attn_global": 1)"));
  EXPECT_NO_THROW(load(R"(, "attention": "linear", "pos": "sinusoidal")"));
  struct Bad {
    std::string extra, expect;
  };
  for (const Bad& b : {Bad{R"(, "attention": "sliding", "window": 0)", "window 0"},
                       Bad{R"(, "attention": "sliding")", "window 0"},
                       Bad{R"(, "attention": "sliding", "window": 65)", "window 65"},
                       Bad{R"(, "window": 8)", "window is for 'sliding'"},
                       Bad{R"(, "attention": "block_sparse", "attn_block": 24)",
                           "attn_block 24 must divide block_size 64"},
                       Bad{R"(, "attention": "block_sparse", "attn_block": 0)", "attn_block 0"},
                       Bad{R"(, "attention": "block_sparse", "attn_block": 8, "attn_global": 65)",
                           "attn_global 65"},
                       Bad{R"(, "attention": "flash")", "unknown attention 'flash'"},
                       Bad{R"(, "attention": 3)", "'attention' must be a string"},
                       Bad{R"(, "pos": "rotary")", "unknown position encoding 'rotary'"},
                       Bad{R"(, "n_kv_head": 3)", "n_kv_head 3 must divide n_head 2"},
                       Bad{R"(, "norm_position": "middle")", "unknown norm_position 'middle'"},
                       Bad{R"(, "attention": "linear", "pos": "alibi")", "linear attention"},
                       Bad{R"(, "n_head": 4, "n_kv_head": 2, "attention": "linear")",
                           "not supported with linear attention"},
                       Bad{R"(, "n_head": 16, "pos": "rope")", "even head size"},
                       Bad{R"(, "n_inner": -4)", "out of range"},
                       Bad{R"(, "norm": "batchnorm")", "unknown norm 'batchnorm'"},
                       Bad{R"(, "activation_function": "swish")", "'swish' is not supported"}}) {
    const std::string msg = error_of(b.extra);
    EXPECT_NE(msg.find("m/config.json"), std::string::npos) << b.extra << ": " << msg;
    EXPECT_NE(msg.find(b.expect), std::string::npos) << b.extra << ": " << msg;
  }
}

TEST(AttentionRulesInGpt, ConfigRoundTripKeepsTheRule) {
  for (AttnKind k : {AttnKind::Dense, AttnKind::Sliding, AttnKind::BlockSparse, AttnKind::Linear}) {
    const GPTConfig c = rule_config(k, PosEncoding::Sinusoidal);
    const GPTConfig r = GPTConfig::from_json(c.to_json(), "roundtrip");
    EXPECT_EQ(r.attention, c.attention);
    EXPECT_EQ(r.window, c.window);
    EXPECT_EQ(r.attn_block, c.attn_block);
    EXPECT_EQ(r.attn_local_blocks, c.attn_local_blocks);
    EXPECT_EQ(r.attn_global, c.attn_global);
    EXPECT_EQ(r.pos, c.pos);
    EXPECT_EQ(r.num_params(), c.num_params());
  }
  // Plain GPT-2 settings write none of qkv's own keys.
  const auto j = test::tiny_config(1, 1, 8, 8, 8).to_json();
  for (const char* key : {"attention", "window", "attn_block", "pos"})
    EXPECT_FALSE(j.contains(key));
}

}  // namespace
}  // namespace qkv

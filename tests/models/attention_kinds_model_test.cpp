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

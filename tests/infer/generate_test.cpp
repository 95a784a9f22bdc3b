// Generation: the KV-cache path against full recomputation, and the sampler against the
// distribution it should draw from.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "qkv/core/error.h"
#include "qkv/infer/generator.h"
#include "qkv/models/gpt.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

GPT random_model(int block_size, uint64_t seed) {
  GPTConfig c;
  c.n_layer = 2;
  c.n_head = 3;
  c.n_embd = 48;
  c.block_size = block_size;
  c.vocab_size = 37;
  GPT m(c);
  m.init_weights(seed);
  // Larger weights than GPT-2 init, so the logits are far from uniform and greedy is not trivial.
  float* p = m.param_data();
  for (size_t i = 0; i < m.num_params(); ++i) p[i] *= 8.0f;
  return m;
}

TEST(Generate, ExtendLogitsEqualFullForward) {
  GPT m = random_model(40, 1);
  std::vector<int32_t> ids = {1, 5, 9, 2, 33, 0, 7, 7, 12, 30, 31, 4, 8};
  m.forward(ids.data(), nullptr, 1, int(ids.size()));
  const int V = m.config().vocab_size;
  std::vector<float> full(m.logits(), m.logits() + ids.size() * V);
  // Prefill 5, then one at a time: each step's logits equal the full pass at that position.
  m.reset_cache();
  const float* l = m.extend(ids.data(), 5);
  EXPECT_TRUE(test::all_close(l, full.data() + 4 * V, V, 1e-4, 1e-4, "prefill"));
  for (size_t i = 5; i < ids.size(); ++i) {
    l = m.extend(&ids[i], 1);
    EXPECT_TRUE(
        test::all_close(l, full.data() + i * V, V, 1e-4, 1e-4, "decode step " + std::to_string(i)));
  }
}

TEST(Generate, KvCacheGreedyEqualsRecompute) {
  // 64 new tokens with a 40-token context: the window slides past the cache's end too.
  for (uint64_t seed : {2, 3}) {
    GPT m = random_model(40, seed);
    std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
    GenerateOptions opt;
    opt.max_new_tokens = 64;
    opt.sampler.temperature = 0;
    opt.use_kv_cache = true;
    auto with_cache = generate(m, prompt, opt);
    opt.use_kv_cache = false;
    auto without = generate(m, prompt, opt);
    ASSERT_EQ(with_cache.size(), 64u);
    EXPECT_EQ(with_cache, without) << "seed " << seed;
    // Not a degenerate sequence: the model does produce different tokens.
    std::vector<bool> seen(37);
    int distinct = 0;
    for (int32_t id : with_cache) distinct += !seen[size_t(id)] ? (seen[size_t(id)] = true, 1) : 0;
    EXPECT_GE(distinct, 3);
  }
}

TEST(Generate, StopsWhenCallbackSaysSo) {
  GPT m = random_model(16, 4);
  GenerateOptions opt;
  opt.max_new_tokens = 50;
  int calls = 0;
  auto out = generate(m, {1, 2}, opt, [&](int32_t) { return ++calls < 5; });
  EXPECT_EQ(out.size(), 5u);
}

TEST(Generate, RejectsBadPrompts) {
  GPT m = random_model(16, 5);
  GenerateOptions opt;
  EXPECT_THROW(generate(m, {}, opt), Error);
  EXPECT_THROW(generate(m, std::vector<int32_t>(17, 1), opt), Error);
  EXPECT_THROW(generate(m, {1, 99}, opt), Error);  // id outside the vocabulary
}

std::vector<double> softmax(const std::vector<float>& x, double temp) {
  double mx = -1e300;
  for (float v : x) mx = std::max(mx, double(v));
  std::vector<double> p(x.size());
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += p[i] = std::exp((x[i] - mx) / temp);
  for (auto& v : p) v /= s;
  return p;
}

TEST(Sampler, FrequenciesMatchSoftmax) {
  std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f};
  const int n = 200000;
  for (float temp : {1.0f, 0.5f}) {
    Sampler s({temp, 0, 1.0f, 7});
    std::vector<int> counts(logits.size());
    for (int i = 0; i < n; ++i) counts[size_t(s.sample(logits.data(), int(logits.size())))]++;
    auto p = softmax(logits, temp);
    for (size_t k = 0; k < p.size(); ++k) {
      double sd = std::sqrt(p[k] * (1 - p[k]) / n);
      EXPECT_NEAR(double(counts[k]) / n, p[k], 5 * sd + 1e-4) << "token " << k << " temp " << temp;
    }
  }
}

TEST(Sampler, TopKAndTopPRestrictTheSupport) {
  std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f};
  Sampler k2({1.0f, 2, 1.0f, 9});
  for (int i = 0; i < 2000; ++i) {
    int id = k2.sample(logits.data(), 6);
    EXPECT_TRUE(id == 4 || id == 1) << id;
  }
  // Probabilities (T=1): 4 -> .61, 1 -> .22; top-p 0.7 keeps exactly {4, 1}.
  Sampler p7({1.0f, 0, 0.7f, 9});
  std::vector<int> counts(6);
  for (int i = 0; i < 20000; ++i) counts[size_t(p7.sample(logits.data(), 6))]++;
  EXPECT_EQ(counts[0] + counts[2] + counts[3] + counts[5], 0);
  auto p = softmax(logits, 1.0);
  EXPECT_NEAR(double(counts[4]) / 20000, p[4] / (p[4] + p[1]), 0.02);
  Sampler greedy({0.0f, 0, 1.0f, 1});
  EXPECT_EQ(greedy.sample(logits.data(), 6), 4);
}

}  // namespace
}  // namespace qkv

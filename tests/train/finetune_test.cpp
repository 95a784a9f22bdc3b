// Fine-tuning: LoRA's gradients against finite differences, adapters saved apart == merged ==
// the trained model, frozen tensors bit-for-bit unchanged, BERT's masking rates, and the
// labelled-data errors (FILE:LINE, --skip-bad-lines counts, unknown labels, truncation).
#include "qkv/train/finetune.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/rng.h"
#include "qkv/data/labelled.h"
#include "qkv/models/gpt.h"
#include "qkv/tokenizer/tokenizer.h"
#include "qkv/train/lora.h"
#include "qkv/train/trainer.h"
#include "tests/test_paths.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

const char* kAlphabet = "abcdefghij klmnop";

// A small encoder model directory with a character tokenizer over kAlphabet.
std::string make_model_dir(const std::string& tag, bool causal = false) {
  const std::string dir = test::temp_dir(tag);
  const auto tok = make_tokenizer("char", kAlphabet);
  GPTConfig c = test::tiny_config(2, 2, 32, 32, tok->vocab_size());
  c.causal = causal;
  GPT m(c);
  m.init_weights(5);
  m.save_dir(dir);
  tok->save(dir);
  return dir;
}

// "label a" if the text has more a's than b's, else "b": learnable, and a held-out check.
std::string write_jsonl(const std::string& path, int n, uint64_t seed) {
  Rng rng(seed, 1);
  std::string s;
  for (int i = 0; i < n; ++i) {
    std::string t;
    int a = 0, b = 0;
    const int len = 5 + int(rng.below(20));
    for (int k = 0; k < len; ++k) {
      const char ch = "abcdefg"[rng.below(7)];
      a += ch == 'a';
      b += ch == 'b';
      t += ch;
    }
    s += "{\"text\": \"" + t + "\", \"label\": \"" + (a > b ? "a" : "b") + "\"}\n";
  }
  write_file_atomic(path, s);
  return path;
}

TEST(Lora, GradientsMatchFiniteDifferences) {
  GPTConfig c = test::tiny_config(2, 2, 16, 16, 11);
  c.labels = {"x", "y", "z"};
  GPT m(c);
  m.init_weights(7);
  LoraSpec spec;
  spec.rank = 3;
  spec.alpha = 6;
  spec.targets = {"attn.c_attn", "mlp.c_proj"};
  Lora lora(m, spec, 9);
  // Make B non-zero so both gradients are informative.
  Rng rng(3, 3);
  auto refs = lora.params();
  for (size_t i = 1; i < refs.size(); i += 2)
    for (size_t k = 0; k < refs[i].n; ++k) refs[i].p[k] = float(rng.normal() * 0.3);
  const std::vector<int32_t> ids = {1, 4, 2, 9, 3, 3, 7, 0, 5, 6, 2, 1, 8, 8}, lens = {7, 5},
                             labels = {2, 0};
  auto loss = [&] {
    lora.apply();
    return double(m.forward_classify(ids.data(), lens.data(), labels.data(), 2, 7));
  };
  loss();
  m.zero_grad();
  lora.zero_grad();
  m.backward();
  lora.accumulate_grads();
  int checked = 0;
  for (const ParamRef& r : refs) {
    // The 3 entries with the largest gradient in each tensor.
    std::vector<size_t> idx(r.n);
    for (size_t k = 0; k < r.n; ++k) idx[k] = k;
    std::partial_sort(idx.begin(), idx.begin() + 3, idx.end(),
                      [&](size_t x, size_t y) { return std::abs(r.g[x]) > std::abs(r.g[y]); });
    for (int q = 0; q < 3; ++q) {
      const size_t k = idx[size_t(q)];
      const float keep = r.p[k], eps = 1e-2f;
      r.p[k] = keep + eps;
      const double lp = loss();
      r.p[k] = keep - eps;
      const double lm = loss();
      r.p[k] = keep;
      const double fd = (lp - lm) / (2 * eps);
      EXPECT_NEAR(r.g[k], fd, 2e-2 * std::abs(fd) + 2e-4) << "tensor " << checked / 3;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 3 * int(refs.size()));
}

TEST(Finetune, LoraAdapterEqualsMergedAndKeepsTheBase) {
  const std::string base = make_model_dir("ft_base");
  const std::string dir = test::temp_dir("ft_lora");
  FinetuneOptions o;
  o.model = base;
  o.data = write_jsonl(dir + "/train.jsonl", 64, 1);
  o.out = dir + "/adapter";
  o.max_iters = 6;
  o.batch_size = 8;
  o.lora_rank = 4;
  o.lora_targets = "attn.c_attn,mlp.c_fc";
  o.lora_save = "adapter";
  o.quiet = true;
  finetune(o);
  EXPECT_FALSE(file_exists(o.out + "/model.safetensors"));
  EXPECT_TRUE(file_exists(o.out + "/adapter.safetensors"));
  o.out = dir + "/merged";
  o.lora_save = "merged";
  finetune(o);  // the same seeded run, saved merged
  GPT a = GPT::from_dir(dir + "/adapter"), b = GPT::from_dir(dir + "/merged");
  GPT orig = GPT::from_dir(base);
  ASSERT_EQ(a.num_params(), b.num_params());
  for (size_t i = 0; i < a.params().size(); ++i) {
    const auto& p = a.params()[i];
    const float* pa = a.param_data() + p.offset;
    const float* pb = b.param_data() + p.offset;
    EXPECT_LE(test::rel_err(pa, pb, p.numel), 1e-6) << p.name;
    // Untargeted base tensors are exactly the base's; targeted ones moved.
    const bool targeted = p.name.find("c_attn.weight") != std::string::npos ||
                          p.name.find("c_fc.weight") != std::string::npos;
    if (p.name.rfind("classifier.", 0) == 0) continue;
    const GPT::Param& q = orig.params()[i];
    ASSERT_EQ(q.name, p.name);
    const float* po = orig.param_data() + q.offset;
    bool same = true;
    for (size_t k = 0; k < p.numel; ++k) same &= pb[k] == po[k];
    EXPECT_EQ(same, !targeted) << p.name;
  }
}

TEST(Finetune, FrozenLayersStayBitForBit) {
  const std::string base = make_model_dir("ft_freeze_base");
  const std::string dir = test::temp_dir("ft_freeze");
  FinetuneOptions o;
  o.model = base;
  o.data = write_jsonl(dir + "/train.jsonl", 40, 2);
  o.out = dir + "/out";
  o.max_iters = 4;
  o.batch_size = 8;
  o.freeze = "embeddings,0";
  o.quiet = true;
  finetune(o);
  GPT orig = GPT::from_dir(base), got = GPT::from_dir(o.out);
  for (size_t i = 0; i < orig.params().size(); ++i) {
    const auto& p = orig.params()[i];
    const bool frozen =
        p.name == "wte.weight" || p.name == "wpe.weight" || p.name.rfind("h.0.", 0) == 0;
    const float* a = orig.param_data() + p.offset;
    const float* b = got.param_data() + got.params()[i].offset;
    bool same = true;
    for (size_t k = 0; k < p.numel; ++k) same &= a[k] == b[k];
    EXPECT_EQ(same, frozen) << p.name;
  }
  EXPECT_THROW(frozen_params(orig, "embeddings,7"), Error);
  EXPECT_THROW(frozen_params(orig, "layer1"), Error);
}

TEST(Finetune, LearnsAndEvalAgreesFromTheDirectory) {
  const std::string base = make_model_dir("ft_learn_base");
  const std::string dir = test::temp_dir("ft_learn");
  FinetuneOptions o;
  o.model = base;
  o.data = write_jsonl(dir + "/train.jsonl", 600, 3);
  o.eval = write_jsonl(dir + "/valid.jsonl", 200, 4);
  o.out = dir + "/out";
  o.epochs = 6;
  o.batch_size = 16;
  o.learning_rate = 2e-3f;
  o.quiet = true;
  const FinetuneResult r = finetune(o);
  // A majority rule over two letters: a small encoder gets most of it in a few epochs; chance is
  // about 50%.
  EXPECT_GE(r.eval.accuracy(), 0.8) << r.eval.correct << "/" << r.eval.examples;
  GPT m = GPT::from_dir(o.out);
  const auto tok = load_tokenizer(o.out);
  const LabelledIds d = load_labelled(o.eval, *tok, m.config().labels, 32, false, nullptr);
  const ClassifierEval e = evaluate_classifier(m, d, 7);  // another batching: same answers
  EXPECT_EQ(e.correct, r.eval.correct);
  EXPECT_NEAR(e.loss, r.eval.loss, 1e-4);
}

// Language-model fine-tuning (qkv finetune --task lm is train() from a model): frozen tensors
// stay bit for bit, and a LoRA adapter directory reads back as base + s A B on its targets only.
TEST(Finetune, LanguageModelWithFreezeAndLora) {
  const std::string base = make_model_dir("ft_lm_base", /*causal=*/true);
  const std::string dir = test::temp_dir("ft_lm");
  std::string corpus;
  for (int i = 0; i < 200; ++i) corpus += "abc def ghij klmnop ";
  write_file_atomic(dir + "/corpus.txt", corpus);
  TrainOptions t;
  t.data = dir + "/corpus.txt";
  t.init_from = base;
  t.batch_size = 4;
  t.max_iters = 6;
  t.eval_interval = 3;
  t.eval_iters = 1;
  t.quiet = true;
  t.out = dir + "/frozen";
  t.freeze = "embeddings,1";
  train(t);
  t.out = dir + "/lora";
  t.freeze.clear();
  t.lora_rank = 2;
  t.lora_targets = "mlp.c_fc";
  t.lora_save = "adapter";
  train(t);
  EXPECT_FALSE(file_exists(dir + "/lora/model.safetensors"));
  GPT orig = GPT::from_dir(base), frozen = GPT::from_dir(dir + "/frozen"),
      lora = GPT::from_dir(dir + "/lora");
  for (size_t i = 0; i < orig.params().size(); ++i) {
    const auto& p = orig.params()[i];
    auto same = [&](const GPT& g) {
      const float* a = orig.param_data() + p.offset;
      const float* b = g.param_data() + g.params()[i].offset;
      for (size_t k = 0; k < p.numel; ++k)
        if (a[k] != b[k]) return false;
      return true;
    };
    const bool is_frozen =
        p.name == "wte.weight" || p.name == "wpe.weight" || p.name.rfind("h.1.", 0) == 0;
    EXPECT_EQ(same(frozen), is_frozen) << "freeze: " << p.name;
    EXPECT_EQ(same(lora), p.name.find("mlp.c_fc.weight") == std::string::npos)
        << "lora: " << p.name;
  }
  TrainOptions bad = t;
  bad.init_from.clear();
  EXPECT_THROW(train(bad), Error);  // --lora-rank needs --model
}

TEST(LabelledData, BadLinesAreNamedCountedOrSkipped) {
  const std::string dir = test::temp_dir("labelled");
  const std::string path = dir + "/d.jsonl";
  write_file_atomic(path,
                    "{\"text\": \"abc\", \"label\": \"a\"}\n"
                    "not json\n"
                    "\n"
                    "{\"text\": \"abd\"}\n"
                    "{\"text\": \"" +
                        std::string(50, 'a') +
                        "\", \"label\": 1}\n"
                        "{\"text\": \"zzz\", \"label\": \"a\"}\n"
                        "{\"text\": \"ab\", \"label\": \"c\"}\n");
  const auto tok = make_tokenizer("char", kAlphabet);
  try {
    load_labelled(path, *tok, {"a", "1"}, 16, false, nullptr);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    // Each bad line, named: 2 (not JSON), 4 (no label), 6 (z not in the vocabulary), 7 (c).
    EXPECT_NE(msg.find(path + ":2: not valid JSON"), std::string::npos) << msg;
    EXPECT_NE(msg.find(path + ":4: no \"label\""), std::string::npos) << msg;
    EXPECT_NE(msg.find(path + ":6: cannot tokenise"), std::string::npos) << msg;
    EXPECT_NE(msg.find(path + ":7: label 'c' is not one of the model's labels"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("--skip-bad-lines"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line";
  }
  int64_t skipped = 0;
  const LabelledIds d = load_labelled(path, *tok, {"a", "1"}, 16, true, &skipped);
  // Good: line 1 and line 5 (integer label "1", truncated). Bad: 2 (JSON), 4 (no label),
  // 6 (z is not in the vocabulary), 7 (unknown label c).
  EXPECT_EQ(skipped, 4);
  ASSERT_EQ(d.ids.size(), 2u);
  EXPECT_EQ(d.labels, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(d.truncated, 1);
  EXPECT_EQ(d.ids[1].size(), 16u);
  // TSV pairs.
  write_file_atomic(dir + "/p.tsv", "ab\tba\nno tab here\na\tb\tc\n\tx\nok\tko\n");
  BadLines bad;
  const auto pairs = read_tsv_pairs(dir + "/p.tsv", &bad);
  EXPECT_EQ(pairs.size(), 2u);
  EXPECT_EQ(bad.count, 3);
  EXPECT_NE(bad.first[0].find("p.tsv:2: no tab"), std::string::npos) << bad.first[0];
  // Past five, the rest are counted.
  BadLines many;
  for (int i = 1; i <= 7; ++i) many.add("f.tsv", i, "no tab between source and target");
  try {
    many.throw_if_any();
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("f.tsv:5: no tab"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("f.tsv:6:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("and 2 more bad lines"), std::string::npos) << msg;
  }
}

TEST(Mlm, MaskingFollowsBertsRates) {
  const int64_t n = 200000;
  std::vector<int32_t> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = int32_t(i % 50);
  const std::vector<int32_t> orig = x;
  mlm_mask(x.data(), y.data(), n, 50, 50, 11, 3);
  int64_t chosen = 0, masked = 0, kept = 0, other = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (y[size_t(i)] < 0) {
      ASSERT_EQ(x[size_t(i)], orig[size_t(i)]) << "unchosen positions stay";
      continue;
    }
    ASSERT_EQ(y[size_t(i)], orig[size_t(i)]) << "the target is the original token";
    ++chosen;
    if (x[size_t(i)] == 50)
      ++masked;
    else if (x[size_t(i)] == orig[size_t(i)])
      ++kept;
    else
      ++other;
  }
  // Binomial bounds at 5 standard deviations.
  auto near = [](double count, double total, double p) {
    return std::abs(count - total * p) <= 5 * std::sqrt(total * p * (1 - p));
  };
  EXPECT_TRUE(near(double(chosen), double(n), 0.15)) << chosen;
  EXPECT_TRUE(near(double(masked), double(chosen), 0.8)) << masked;
  // "random" draws its own token 1 time in 50: kept = 0.1 + 0.1/50, other = 0.1 * 49/50.
  EXPECT_TRUE(near(double(kept), double(chosen), 0.1 + 0.1 / 50)) << kept;
  EXPECT_TRUE(near(double(other), double(chosen), 0.1 * 49 / 50)) << other;
}

}  // namespace
}  // namespace qkv

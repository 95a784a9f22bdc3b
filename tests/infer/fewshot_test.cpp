// Few-shot evaluation against a recomputation: the same prompt + target run through forward()
// (no cache), log-softmax and argmax done here; shot selection and task-file errors.
#include "qkv/infer/fewshot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/models/gpt.h"
#include "tests/test_paths.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

std::vector<TaskExample> reverse_task(int n) {
  std::vector<TaskExample> t;
  const std::string letters = "abcdefgh";
  for (int i = 0; i < n; ++i) {
    std::string w;
    for (int k = 0; k < 3 + i % 3; ++k) w += letters[size_t((i * 7 + k * 3) % 8)];
    t.push_back({w + "=", std::string(w.rbegin(), w.rend())});
  }
  return t;
}

TEST(FewShot, ScoresEqualARecomputation) {
  const auto tok = make_tokenizer("char", "abcdefgh=\n");
  GPTConfig c = test::tiny_config(2, 2, 32, 48, tok->vocab_size());
  GPT m(c);
  m.init_weights(3);
  // Sharpen the random model so some argmaxes land on the target.
  for (size_t i = 0; i < m.num_params(); ++i) m.param_data()[i] *= 4.0f;
  const auto task = reverse_task(9);
  for (int shots : {0, 2, 5}) {
    FewShotOptions o;
    o.shots = shots;
    const FewShotResult r = evaluate_fewshot(m, *tok, task, o);
    ASSERT_EQ(r.examples, int(task.size()));
    double loglik = 0;
    int exact = 0, truncated = 0;
    int64_t tokens = 0;
    const int V = c.vocab_size;
    for (int q = 0; q < int(task.size()); ++q) {
      std::vector<int32_t> prompt, target;
      fewshot_prompt(task, q, o, *tok, &prompt, &target);
      const int need = int(target.size()) - 1;
      if (int(prompt.size()) + need > c.block_size) {
        prompt.erase(prompt.begin(), prompt.end() - (c.block_size - need));
        ++truncated;
      }
      std::vector<int32_t> seq = prompt;
      seq.insert(seq.end(), target.begin(), target.end() - 1);
      m.forward(seq.data(), nullptr, 1, int(seq.size()));
      bool all = true;
      for (size_t i = 0; i < target.size(); ++i) {
        const float* lg = m.logits() + (prompt.size() - 1 + i) * size_t(V);
        double mx = *std::max_element(lg, lg + V), s = 0;
        for (int v = 0; v < V; ++v) s += std::exp(double(lg[v]) - mx);
        loglik += double(lg[target[i]]) - mx - std::log(s);
        all &= int(std::max_element(lg, lg + V) - lg) == target[i];
      }
      exact += all;
      tokens += int64_t(target.size());
    }
    EXPECT_NEAR(r.loglik_sum, loglik, 1e-4 * std::abs(loglik)) << shots << " shots";
    EXPECT_EQ(r.exact, exact) << shots << " shots";
    EXPECT_EQ(r.target_tokens, tokens);
    EXPECT_EQ(r.truncated, truncated);
    if (shots == 5) {
      EXPECT_GT(r.truncated, 0) << "the test should exercise truncation";
    }
  }
}

TEST(FewShot, ShotsNeverIncludeTheQueryAndFollowTheSeed) {
  const auto tok = make_tokenizer("char", "abcdefgh=\n");
  const auto task = reverse_task(6);
  FewShotOptions o;
  o.shots = 5;  // every other example
  std::vector<int32_t> p1, p2, t;
  for (int q = 0; q < 6; ++q) {
    fewshot_prompt(task, q, o, *tok, &p1, &t);
    const std::string text = tok->decode(p1);
    // The query's own line never appears as a shot; every other example does.
    EXPECT_EQ(text.find(task[size_t(q)].input + task[size_t(q)].target + "\n"), std::string::npos);
    for (int i = 0; i < 6; ++i) {
      if (i == q) continue;
      EXPECT_NE(text.find(task[size_t(i)].input + task[size_t(i)].target + "\n"),
                std::string::npos);
    }
    EXPECT_EQ(text.substr(text.size() - task[size_t(q)].input.size()), task[size_t(q)].input);
    fewshot_prompt(task, q, o, *tok, &p2, &t);
    EXPECT_EQ(p1, p2) << "same seed, same prompt";
  }
  o.shots = 6;
  EXPECT_THROW(fewshot_prompt(task, 0, o, *tok, &p1, &t), Error);
}

TEST(FewShot, TaskFileErrorsNameTheLine) {
  const std::string d = test::temp_dir("task");
  auto error_of = [&](const std::string& text) -> std::string {
    write_file_atomic(d + "/t.jsonl", text);
    try {
      read_task_file(d + "/t.jsonl");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(
      error_of("{\"input\": \"a\", \"target\": \"b\"}\n{oops\n").find("t.jsonl:2: not valid JSON"),
      std::string::npos);
  EXPECT_NE(error_of("{\"input\": \"a\"}\n").find("t.jsonl:1: \"target\" is missing"),
            std::string::npos);
  EXPECT_NE(error_of("\n{\"input\": 3, \"target\": \"b\"}\n").find("t.jsonl:2: \"input\""),
            std::string::npos);
  EXPECT_NE(
      error_of("{\"input\": \"a\", \"target\": \"\"}\n").find("t.jsonl:1: \"target\" is empty"),
      std::string::npos);
  EXPECT_NE(error_of("[1, 2]\n").find("t.jsonl:1: expected an object"), std::string::npos);
  EXPECT_NE(error_of("\n\n").find("no examples"), std::string::npos);
  write_file_atomic(d + "/ok.jsonl", "{\"input\": \"a\", \"target\": \"b\", \"extra\": 1}\r\n\n");
  EXPECT_EQ(read_task_file(d + "/ok.jsonl").size(), 1u);
}

}  // namespace
}  // namespace qkv

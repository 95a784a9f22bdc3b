#include "qkv/infer/fewshot.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qkv/core/error.h"
#include "qkv/core/logprob.h"
#include "qkv/core/rng.h"

namespace qkv {

std::vector<TaskExample> read_task_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QKV_CHECK(in.good(), "{}: cannot open", path);
  std::vector<TaskExample> out;
  std::string line;
  for (int64_t no = 1; std::getline(in, line); ++no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      QKV_CHECK(false, "{}:{}: not valid JSON", path, no);
    }
    QKV_CHECK(j.is_object(), "{}:{}: expected an object with \"input\" and \"target\"", path, no);
    for (const char* key : {"input", "target"})
      QKV_CHECK(j.contains(key) && j[key].is_string(), "{}:{}: \"{}\" is missing or not a string",
                path, no, key);
    TaskExample e{j["input"].get<std::string>(), j["target"].get<std::string>()};
    QKV_CHECK(!e.target.empty(), "{}:{}: \"target\" is empty", path, no);
    out.push_back(std::move(e));
  }
  QKV_CHECK(!out.empty(), "{}: no examples", path);
  return out;
}

void fewshot_prompt(const std::vector<TaskExample>& task, int q, const FewShotOptions& o,
                    const Tokenizer& tok, std::vector<int32_t>* prompt,
                    std::vector<int32_t>* target) {
  const int n = int(task.size());
  QKV_CHECK(o.shots >= 0 && o.shots < n, "--shots {} needs at least {} examples; the task has {}",
            o.shots, o.shots + 1, n);
  // The shots: a seeded shuffle of the other examples, the first K of it.
  std::vector<int> others;
  for (int i = 0; i < n; ++i)
    if (i != q) others.push_back(i);
  Rng rng(o.seed, uint64_t(q));
  for (int i = int(others.size()) - 1; i > 0; --i)
    std::swap(others[size_t(i)], others[size_t(rng.below(uint64_t(i) + 1))]);
  std::string text;
  for (int k = 0; k < o.shots; ++k) {
    const TaskExample& e = task[size_t(others[size_t(k)])];
    text += e.input + e.target + o.separator;
  }
  text += task[size_t(q)].input;
  *prompt = tok.encode(text);
  *target = tok.encode(task[size_t(q)].target);
}

FewShotResult evaluate_fewshot(GPT& model, const Tokenizer& tok,
                               const std::vector<TaskExample>& task, const FewShotOptions& o) {
  const int ctx = model.config().block_size, V = model.config().vocab_size;
  FewShotResult r;
  r.shots = o.shots;
  std::vector<int32_t> prompt, target;
  for (int q = 0; q < int(task.size()); ++q) {
    fewshot_prompt(task, q, o, tok, &prompt, &target);
    QKV_CHECK(!target.empty(), "example {}: the target encodes to no tokens", q + 1);
    // The target follows the prompt; its last token is never fed.
    const int need = int(target.size()) - 1;
    QKV_CHECK(need + 1 < ctx,
              "example {}: the target alone ({} tokens) does not fit the context {}", q + 1,
              target.size(), ctx);
    if (int(prompt.size()) + need > ctx) {
      prompt.erase(prompt.begin(), prompt.end() - (ctx - need));  // keep the end: the query
      ++r.truncated;
    }
    QKV_CHECK(!prompt.empty(), "example {}: the prompt is empty", q + 1);
    model.reset_cache();
    const float* logits = model.extend(prompt.data(), int(prompt.size()));
    bool exact = true;
    for (size_t i = 0; i < target.size(); ++i) {
      const int32_t t = target[i];
      QKV_CHECK(t >= 0 && t < V, "example {}: token {} outside the model's vocabulary", q + 1, t);
      const int32_t best = int32_t(std::max_element(logits, logits + V) - logits);
      r.loglik_sum += log_softmax_at(logits, V, t);
      exact &= best == t;
      if (i + 1 < target.size()) logits = model.extend(&target[i], 1);
    }
    r.exact += exact;
    r.target_tokens += int64_t(target.size());
    ++r.examples;
  }
  model.reset_cache();
  return r;
}

}  // namespace qkv

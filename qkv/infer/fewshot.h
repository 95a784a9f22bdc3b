// Few-shot evaluation: K worked examples from a task file, then the query's input; the model is
// scored on the query's target by exact match under greedy decoding and by the target's
// log-likelihood. Compares in-context ability across checkpoints and K.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qkv/models/gpt.h"
#include "qkv/tokenizer/tokenizer.h"

namespace qkv {

struct TaskExample {
  std::string input, target;
};

// Reads JSONL lines {"input": "...", "target": "..."} (other keys ignored, blank lines skipped).
// Errors name the file and line: not JSON, not an object, a missing or non-string field, an
// empty target; also an empty file.
std::vector<TaskExample> read_task_file(const std::string& path);

struct FewShotOptions {
  int shots = 0;
  uint64_t seed = 1;             // which examples serve as shots (never the query itself)
  std::string separator = "\n";  // after each shot's target
};

struct FewShotResult {
  int examples = 0, shots = 0;
  int exact = 0;          // greedy decoding reproduces the target's tokens exactly
  double loglik_sum = 0;  // sum over examples of log p(target | prompt), nats
  int64_t target_tokens = 0;
  int truncated = 0;  // prompts whose earliest shots were cut to fit the context
  double accuracy() const { return examples ? double(exact) / examples : 0; }
  double mean_loglik() const { return examples ? loglik_sum / examples : 0; }
  double loglik_per_token() const { return target_tokens ? loglik_sum / double(target_tokens) : 0; }
};

// The prompt of example q: shots (input + target + separator) then q's input; shot order and
// choice come from the seed. Returns the prompt's ids and the target's (tokenized separately).
void fewshot_prompt(const std::vector<TaskExample>& task, int q, const FewShotOptions& o,
                    const Tokenizer& tok, std::vector<int32_t>* prompt,
                    std::vector<int32_t>* target);

// Scores every example of the task (the model's inference weights; KV cache).
FewShotResult evaluate_fewshot(GPT& model, const Tokenizer& tok,
                               const std::vector<TaskExample>& task, const FewShotOptions& o);

}  // namespace qkv

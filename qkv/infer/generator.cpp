#include "qkv/infer/generator.h"

#include <algorithm>

#include "qkv/core/error.h"

namespace qkv {

std::vector<int32_t> generate(GPT& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& opt,
                              const std::function<bool(int32_t)>& on_token) {
  // The window the model can attend over: block_size, or unbounded for sliding-window and
  // linear attention with sinusoidal positions (rolling cache / fixed state).
  const int ctx = model.config().max_positions(), V = model.config().vocab_size;
  QKV_CHECK(!prompt.empty(), "[generate] the prompt is empty");
  QKV_CHECK(int64_t(prompt.size()) <= ctx,
            "[generate] the prompt has {} tokens; the context holds {}", prompt.size(), ctx);
  QKV_CHECK(opt.max_new_tokens >= 0, "[generate] max_new_tokens {} must be >= 0",
            opt.max_new_tokens);
  Sampler sampler(opt.sampler);
  std::vector<int32_t> seq = prompt, out;
  // Logits for the next token after `seq`.
  auto next_logits = [&](bool first) -> const float* {
    const int n = int(seq.size());
    const int start = std::max(0, n - ctx);
    if (!opt.use_kv_cache && model.inference_weights() != GPT::Weights::F32) {
      // Recompute the whole window with the same (packed) weights, nothing reused.
      model.reset_cache();
      return model.extend(seq.data() + start, n - start);
    }
    if (!opt.use_kv_cache) {
      const int T = n - start;
      model.forward(seq.data() + start, nullptr, 1, T);
      return model.logits() + size_t(T - 1) * V;
    }
    if (first || model.cache_len() >= ctx) {
      model.reset_cache();
      return model.extend(seq.data() + start, n - start);
    }
    return model.extend(&seq.back(), 1);
  };
  for (int i = 0; i < opt.max_new_tokens; ++i) {
    const float* logits = next_logits(i == 0);
    const int32_t id = sampler.sample(logits, V);
    seq.push_back(id);
    out.push_back(id);
    if (on_token && !on_token(id)) break;
  }
  return out;
}

}  // namespace qkv

// qkv perplexity: a model's perplexity on a text file, with the weights it would generate with.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/parallel.h"
#include "qkv/models/gpt.h"
#include "qkv/tokenizer/tokenizer.h"

namespace qkv::app {

void add_perplexity(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "perplexity",
      "Perplexity of a model on a text file (windows of the context length, inference path)");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string model, data, dtype = "fp32";
    int64_t max_tokens = 0;
    int threads = 0;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Model directory")->required();
  cmd->add_option("--data", a->data, "UTF-8 text file to score")->required();
  cmd->add_option("--dtype", a->dtype, "Weights: fp32, bf16 or int8 (converted on load)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  cmd->add_option("--max-tokens", a->max_tokens, "Score only the first N tokens (0: all)")
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "Threads (0: OMP_NUM_THREADS if set, else all cores)")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([a] {
    apply_threads(a->threads);
    QKV_CHECK(a->max_tokens >= 0, "--max-tokens must be >= 0");
    GPT model = GPT::from_dir(a->model);
    if (model.has_fp32_weights())
      model.set_inference_weights(GPT::weights_from_name(a->dtype));
    else
      QKV_CHECK(a->dtype != "bf16",
                "{}: the model holds int8 weights; --dtype bf16 needs an "
                "fp32 checkpoint",
                a->model);
    std::unique_ptr<Tokenizer> tok = load_tokenizer(a->model);
    const std::string text = read_file(a->data);
    std::vector<int32_t> ids = tok->encode(text, num_threads());
    if (a->max_tokens > 0 && int64_t(ids.size()) > a->max_tokens) ids.resize(size_t(a->max_tokens));
    const int ctx = model.config().block_size;
    QKV_CHECK(ids.size() >= 2, "{}: {} tokens; perplexity needs at least 2", a->data, ids.size());
    // Non-overlapping windows of the context length, each scored from an empty cache.
    double nll = 0;
    int64_t count = 0;
    const auto t0 = std::chrono::steady_clock::now();
    auto last = t0;
    for (size_t s = 0; s + 1 < ids.size(); s += size_t(ctx)) {
      const int n = int(std::min(ids.size() - s, size_t(ctx)));
      if (n < 2) break;
      nll += model.nll_sum(ids.data() + s, n);
      count += n - 1;
      const auto now = std::chrono::steady_clock::now();
      if (!a->json && now - last > std::chrono::seconds(5)) {
        std::fprintf(stderr, "qkv: %lld / %zu tokens, perplexity so far %.4f\n",
                     static_cast<long long>(s + size_t(n)), ids.size(), std::exp(nll / count));
        last = now;
      }
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double mean = nll / double(count);
    if (a->json) {
      nlohmann::ordered_json j = {{"model", a->model},
                                  {"data", a->data},
                                  {"dtype", GPT::weights_name(model.inference_weights())},
                                  {"tokens", count},
                                  {"nll", mean},
                                  {"perplexity", std::exp(mean)},
                                  {"seconds", secs}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%s on %s (%s weights): %lld tokens, mean NLL %.5f, perplexity %.4f (%.1f s)\n",
                  a->model.c_str(), a->data.c_str(), GPT::weights_name(model.inference_weights()),
                  static_cast<long long>(count), mean, std::exp(mean), secs);
    }
  });
}

}  // namespace qkv::app

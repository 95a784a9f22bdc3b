// qkv logits: the final logits [T, vocab] for a JSON array of token ids, as safetensors.
#include <nlohmann/json.hpp>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/gpt.h"

namespace qkv::app {

void add_logits(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "logits",
      "Write a model's logits for token ids (for checking against other implementations)");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string model, ids, out;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Model directory")->required();
  cmd->add_option("--ids", a->ids, "JSON file holding an array of token ids")->required();
  cmd->add_option("--out", a->out, "Output safetensors file (tensor 'logits', F32 [T, vocab])")
      ->required();
  cmd->add_option("--threads", a->threads, "Threads (0: OMP_NUM_THREADS if set, else all cores)")
      ->capture_default_str();
  cmd->callback([a] {
    apply_threads(a->threads);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file(a->ids));
    } catch (const nlohmann::json::exception& e) {
      QKV_CHECK(false, "{}: not valid JSON ({})", a->ids, e.what());
    }
    QKV_CHECK(j.is_array() && !j.empty(), "{}: expected a non-empty JSON array of token ids",
              a->ids);
    GPT model = GPT::from_dir(a->model);
    const int V = model.config().vocab_size, ctx = model.config().block_size;
    QKV_CHECK(int64_t(j.size()) <= ctx, "{}: {} ids exceed the model's context of {}", a->ids,
              j.size(), ctx);
    std::vector<int32_t> ids;
    for (size_t i = 0; i < j.size(); ++i) {
      QKV_CHECK(j[i].is_number_integer() && j[i].get<int64_t>() >= 0 && j[i].get<int64_t>() < V,
                "{}: element {} ({}) is not a token id in [0, {})", a->ids, i, j[i].dump(), V);
      ids.push_back(int32_t(j[i].get<int64_t>()));
    }
    model.forward(ids.data(), nullptr, 1, int(ids.size()));
    save_safetensors(a->out, {{"logits", DType::F32, {int64_t(ids.size()), V}, model.logits()}});
  });
}

}  // namespace qkv::app

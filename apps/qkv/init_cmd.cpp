// qkv init: a new model directory with freshly initialised weights (GPT-2 init) and a tokenizer.
#include <cstdio>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/models/gpt.h"
#include "qkv/tokenizer/tokenizer.h"

namespace qkv::app {

void add_init(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "init", "Write a model directory with random (GPT-2-initialised) weights and a tokenizer");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string preset = "gpt2", out, tokenizer = "byte";
    uint64_t seed = 1;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--preset", a->preset, "Model preset")->capture_default_str();
  cmd->add_option("--out", a->out, "Output model directory")->required();
  cmd->add_option("--tokenizer", a->tokenizer,
                  "byte, or a directory with a BPE vocabulary (vocab.json + merges.txt); its size "
                  "must not exceed the preset's vocab_size")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Initialisation seed")->capture_default_str();
  cmd->callback([a] {
    QKV_CHECK(a->tokenizer != "char", "--tokenizer char needs a corpus: use qkv train");
    std::unique_ptr<Tokenizer> tok = make_tokenizer(a->tokenizer, {});
    GPTConfig c = GPTConfig::preset(a->preset);
    QKV_CHECK(tok->vocab_size() <= c.vocab_size,
              "the tokenizer has {} tokens but preset '{}' has vocab_size {}", tok->vocab_size(),
              a->preset, c.vocab_size);
    GPT m(c);
    m.init_weights(a->seed);
    m.save_dir(a->out);
    tok->save(a->out);
    std::printf("%s: %s, %.1fM parameters, random weights (seed %llu)\n", a->out.c_str(),
                a->preset.c_str(), double(m.num_params()) / 1e6,
                static_cast<unsigned long long>(a->seed));
  });
}

}  // namespace qkv::app

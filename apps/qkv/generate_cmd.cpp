// qkv generate: sample text from a model directory, streaming tokens as they are produced.
#include <cstdio>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/infer/generator.h"
#include "qkv/infer/seq2seq_decode.h"
#include "qkv/models/seq2seq.h"
#include "qkv/tokenizer/tokenizer.h"

namespace qkv::app {

void add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a model (KV cache, streaming)");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string model, prompt = "\n", dtype = "fp32";
    GenerateOptions g;
    int threads = 0;
    bool no_cache = false;
    Seq2SeqDecodeOptions s2s;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model,
                  "Model directory (config.json, model.safetensors, tokenizer)")
      ->required();
  cmd->add_option("--prompt", a->prompt, "Text to continue (default: a newline)");
  cmd->add_option("--max-new-tokens", a->g.max_new_tokens, "Tokens to generate")
      ->capture_default_str();
  cmd->add_option("--temperature", a->g.sampler.temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str();
  cmd->add_option("--top-k", a->g.sampler.top_k, "Sample from the k most likely tokens (0: all)")
      ->capture_default_str();
  cmd->add_option("--top-p", a->g.sampler.top_p, "Nucleus sampling mass (1: off)")
      ->capture_default_str();
  cmd->add_option("--seed", a->g.sampler.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--threads", a->threads, "Threads (0: OMP_NUM_THREADS if set, else all cores)")
      ->capture_default_str();
  cmd->add_option("--dtype", a->dtype,
                  "Weights to run with: fp32, bf16 or int8 (converted on load; a quantized "
                  "model directory from 'qkv quantize' is int8 already)")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  cmd->add_option("--beam", a->s2s.beam,
                  "Encoder-decoder models: beam width (1: greedy); the prompt is the source")
      ->capture_default_str();
  cmd->add_option("--length-penalty", a->s2s.length_penalty,
                  "Encoder-decoder beam search: rank by log p / length^alpha")
      ->capture_default_str();
  cmd->add_flag("--no-kv-cache", a->no_cache,
                "Recompute the whole context for every token (slow; for checking)");
  cmd->callback([a, cmd] {
    apply_threads(a->threads);
    if (is_seq2seq_dir(a->model)) {  // translate the prompt: source -> target
      Seq2Seq m = Seq2Seq::from_dir(a->model);
      const auto tok = load_tokenizer(a->model);
      QKV_CHECK(!a->prompt.empty(), "--prompt is empty");
      std::vector<int32_t> src = tok->encode(a->prompt);
      const int block = m.config().base.block_size;
      if (int(src.size()) > block) {
        std::fprintf(stderr, "qkv: warning: the source has %zu tokens; keeping the first %d\n",
                     src.size(), block);
        src.resize(size_t(block));
      }
      if (cmd->count("--max-new-tokens")) a->s2s.max_len = a->g.max_new_tokens;
      const Seq2SeqHypothesis h = seq2seq_decode(m, src, a->s2s);
      const std::string out = tok->decode(h.tokens);
      std::printf("%s\n", out.c_str());
      return;
    }
    GPT model = GPT::from_dir(a->model);
    if (!model.has_fp32_weights()) {
      QKV_CHECK(a->dtype == "int8" || a->dtype == "fp32",
                "{}: the model holds int8 weights; --dtype {} needs an fp32 checkpoint", a->model,
                a->dtype);
    } else {
      model.set_inference_weights(GPT::weights_from_name(a->dtype));
    }
    std::unique_ptr<Tokenizer> tok = load_tokenizer(a->model);
    QKV_CHECK(tok->vocab_size() <= model.config().vocab_size,
              "{}: the tokenizer has {} tokens but the model's vocab_size is {}", a->model,
              tok->vocab_size(), model.config().vocab_size);
    QKV_CHECK(!a->prompt.empty(), "--prompt is empty");
    std::vector<int32_t> ids = tok->encode(a->prompt);
    const int ctx = model.config().max_positions();  // unbounded: sliding|linear + sinusoidal
    if (int(ids.size()) > ctx) {
      std::fprintf(stderr,
                   "qkv: warning: the prompt has %zu tokens; keeping the last %d (the context)\n",
                   ids.size(), ctx);
      ids.erase(ids.begin(), ids.end() - ctx);
    }
    a->g.use_kv_cache = !a->no_cache;
    const std::string shown = tok->decode(ids);
    std::fwrite(shown.data(), 1, shown.size(), stdout);
    std::fflush(stdout);
    generate(model, ids, a->g, [&](int32_t id) {
      std::string s = tok->token_bytes(id);
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputc('\n', stdout);
  });
}

}  // namespace qkv::app

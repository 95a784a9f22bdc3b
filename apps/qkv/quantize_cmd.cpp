// qkv quantize: write a model directory with int8 (or bf16) weights for inference.
#include <cstdio>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/models/gpt.h"
#include "qkv/tokenizer/tokenizer.h"

namespace qkv::app {

void add_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "quantize", "Convert a model's matmul weights to int8 (or bf16) for faster inference");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string model, out, dtype = "int8";
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Model directory (fp32, f16 or bf16 weights)")->required();
  cmd->add_option("--out", a->out, "Output model directory (config, weights, tokenizer)")
      ->required();
  cmd->add_option("--dtype", a->dtype,
                  "int8: int8 matmul weights with one bf16 scale per 32 inputs of each output; "
                  "bf16: every tensor bf16 (a standard Hugging Face checkpoint)")
      ->capture_default_str()
      ->check(CLI::IsMember({"int8", "bf16"}));
  cmd->add_option("--threads", a->threads, "Threads (0: OMP_NUM_THREADS if set, else all cores)")
      ->capture_default_str();
  cmd->callback([a] {
    apply_threads(a->threads);
    QKV_CHECK(a->out != a->model, "--out must differ from --model ({})", a->model);
    GPT model = GPT::from_dir(a->model);
    QKV_CHECK(model.has_fp32_weights(), "{}: the model is int8 already", a->model);
    std::unique_ptr<Tokenizer> tok = load_tokenizer(a->model);
    const size_t before = model.inference_weight_bytes();
    model.set_inference_weights(GPT::weights_from_name(a->dtype));
    model.save_dir(a->out);
    tok->save(a->out);
    std::printf("%s: %s weights, %.1f MB read per token (fp32: %.1f MB)\n", a->out.c_str(),
                a->dtype.c_str(), model.inference_weight_bytes() / 1e6, before / 1e6);
  });
}

}  // namespace qkv::app

// Hugging Face GPT-2 model directories: the PyTorch reference writes a randomly initialised
// model as HF saves it (no "transformer." prefix, attn.bias buffers present, HF config keys,
// no lm_head.weight) with GPT-2's tokenizer files beside it. qkv's logits (through `qkv logits`)
// must match within 1e-4 relative, greedy generation must give the same 64 ids, and F16/BF16
// weights must load too.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "qkv/core/file.h"
#include "qkv/infer/generator.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/gpt.h"
#include "tests/test_paths.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

namespace fs = std::filesystem;

std::string make_hf_dir(const std::string& size, const std::string& dtype, int new_tokens) {
  const std::string dir = test::temp_dir("hf_" + size + "_" + dtype);
  const std::string cmd = "OPENBLAS_NUM_THREADS=1 /usr/bin/python3 " + test::source_dir() +
                          "/tools/reference/gpt_ref.py hf-model --out " + dir + " --size " + size +
                          " --dtype " + dtype + " --new-tokens " + std::to_string(new_tokens);
  EXPECT_EQ(test::run(cmd), 0) << cmd;
  for (const char* f : {"vocab.json", "merges.txt"})
    fs::copy_file(test::shared_data() + "/gpt2/" + f, dir + "/" + f);
  return dir;
}

TEST(HfGpt2, Gpt2SizeLogitsAndGreedyMatchPyTorch) {
  const std::string dir = make_hf_dir("gpt2", "f32", 64);
  SafetensorsFile expected(dir + "/expected.safetensors");
  // Logits through the CLI, as a user would check them.
  Tensor ids = expected.get("ids");
  std::string json = "[";
  for (int64_t i = 0; i < ids.numel(); ++i)
    json += (i ? "," : "") + std::to_string(ids.data<int32_t>()[i]);
  write_file_atomic(dir + "/ids.json", json + "]");
  ASSERT_EQ(test::run(test::qkv_exe() + " logits --model " + dir + " --ids " + dir +
                      "/ids.json --out " + dir + "/logits.safetensors"),
            0);
  SafetensorsFile got(dir + "/logits.safetensors");
  Tensor want = expected.get("logits");
  ASSERT_EQ(got.get("logits").shape(), want.shape());
  EXPECT_LE(test::rel_err(got.get("logits").f32(), want.f32(), size_t(want.numel())), 1e-4);

  const auto t0 = std::chrono::steady_clock::now();
  GPT model = GPT::from_dir(dir);
  const double open_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("opened the 124M model in %.3f s\n", open_s);
  Tensor prompt = expected.get("prompt"), greedy = expected.get("greedy");
  GenerateOptions opt;
  opt.max_new_tokens = int(greedy.numel());
  opt.sampler.temperature = 0;
  std::vector<int32_t> p(prompt.data<int32_t>(), prompt.data<int32_t>() + prompt.numel());
  std::vector<int32_t> want_ids(greedy.data<int32_t>(), greedy.data<int32_t>() + greedy.numel());
  EXPECT_EQ(generate(model, p, opt), want_ids);

  // The CLI generates from text with GPT-2's BPE tokenizer in the same directory.
  const std::string out = dir + "/gen.txt";
  ASSERT_EQ(test::run(test::qkv_exe() + " generate --model " + dir +
                      " --prompt 'Hello, world' --temperature 0 --max-new-tokens 5 > " + out),
            0);
  EXPECT_EQ(read_file(out).rfind("Hello, world", 0), 0u);
  fs::remove_all(dir);  // half a gigabyte of weights
}

TEST(HfGpt2, HalfPrecisionWeights) {
  for (const char* dtype : {"f16", "bf16"}) {
    const std::string dir = make_hf_dir("tiny", dtype, 4);
    SafetensorsFile expected(dir + "/expected.safetensors");
    GPT model = GPT::from_dir(dir);
    Tensor ids = expected.get("ids"), want = expected.get("logits");
    model.forward(ids.data<int32_t>(), nullptr, 1, int(ids.numel()));
    EXPECT_LE(test::rel_err(model.logits(), want.f32(), size_t(want.numel())), 1e-4) << dtype;
    fs::remove_all(dir);
  }
}

}  // namespace
}  // namespace qkv

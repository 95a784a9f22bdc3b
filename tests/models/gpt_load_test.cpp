// Loading model directories: qkv checkpoints are Hugging Face GPT-2 directories (zero biases
// written for bias-free models), and broken weight files give errors naming file and problem.
#include <gtest/gtest.h>

#include <filesystem>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/gpt.h"
#include "tests/test_paths.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

GPTConfig small(bool bias) { return test::tiny_config(2, 2, 16, 8, 11, bias); }

TEST(GptLoad, BiasFreeCheckpointIsAnHfDirectoryWithZeroBiases) {
  GPT m(small(false));
  m.init_weights(3);
  const std::string dir = test::temp_dir("nobias");
  m.save_dir(dir);
  SafetensorsFile f(dir + "/model.safetensors");
  Tensor b = f.get("transformer.h.1.mlp.c_fc.bias");
  ASSERT_EQ(b.shape(), (Shape{64}));
  for (int i = 0; i < 64; ++i) EXPECT_EQ(b.f32()[i], 0.0f);
  EXPECT_TRUE(f.has("transformer.ln_f.bias"));
  // Read back as the bias-free model it is, and as a model with (zero) biases: same logits.
  GPT back = GPT::from_dir(dir);
  GPTConfig with_bias = small(true);
  GPT hf(with_bias);
  hf.load(dir + "/model.safetensors");
  std::vector<int32_t> ids = {1, 2, 3, 4, 5};
  m.forward(ids.data(), nullptr, 1, 5);
  std::vector<float> want(m.logits(), m.logits() + 5 * 11);
  back.forward(ids.data(), nullptr, 1, 5);
  hf.forward(ids.data(), nullptr, 1, 5);
  for (int i = 0; i < 55; ++i) {
    EXPECT_EQ(back.logits()[i], want[size_t(i)]);
    EXPECT_NEAR(hf.logits()[i], want[size_t(i)], 1e-5);
  }
}

void expect_load_error(const std::string& path, GPT& m, const std::string& needle) {
  try {
    m.load(path);
    ADD_FAILURE() << "expected an error containing " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(GptLoad, MissingTensorWrongDtypeNonFinite) {
  GPT m(small(true));
  m.init_weights(4);
  const std::string dir = test::temp_dir("badload");
  std::vector<TensorRef> refs;
  for (const auto& p : m.params())
    if (p.name != "wpe.weight")
      refs.push_back({"transformer." + p.name, DType::F32, p.shape, m.param_data() + p.offset});
  save_safetensors(dir + "/missing.safetensors", refs);
  expect_load_error(dir + "/missing.safetensors", m, "missing tensor 'transformer.wpe.weight'");

  std::vector<int32_t> ints(8 * 16);
  refs.push_back({"transformer.wpe.weight", DType::I32, {8, 16}, ints.data()});
  save_safetensors(dir + "/dtype.safetensors", refs);
  expect_load_error(dir + "/dtype.safetensors", m, "dtype I32");

  std::vector<float> nan(8 * 16, 0.0f);
  nan[5] = std::numeric_limits<float>::quiet_NaN();
  refs.back() = {"transformer.wpe.weight", DType::F32, {8, 16}, nan.data()};
  save_safetensors(dir + "/nan.safetensors", refs);
  expect_load_error(dir + "/nan.safetensors", m, "non-finite");
}

}  // namespace
}  // namespace qkv

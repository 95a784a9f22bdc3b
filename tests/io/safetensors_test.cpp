// safetensors: round trip, dtype conversion against the compiler's own _Float16, and files that
// are truncated or whose headers lie, which must give a clear error, never a bad read.
#include "qkv/io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "tests/test_paths.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

std::string make_file(const std::string& header, size_t data_bytes) {
  uint64_t n = header.size();
  std::string s(reinterpret_cast<const char*>(&n), 8);
  return s + header + std::string(data_bytes, '\0');
}

void expect_error(const std::string& dir, const std::string& name, const std::string& bytes,
                  const std::string& needle) {
  const std::string path = dir + "/" + name;
  write_file_atomic(path, bytes);
  try {
    SafetensorsFile f(path);
    for (const auto& n : f.names()) f.get(n);
    ADD_FAILURE() << name << ": expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << name << ": " << msg;
    EXPECT_NE(msg.find(path), std::string::npos)
        << name << ": message does not name the file: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  }
}

TEST(Safetensors, RoundTrip) {
  std::string dir = test::temp_dir("st");
  std::vector<float> a = test::randn(6, 1);
  std::vector<int32_t> b = {1, -2, 3};
  save_safetensors(dir + "/x.safetensors",
                   {{"a", DType::F32, {2, 3}, a.data()}, {"b", DType::I32, {3}, b.data()}},
                   {{"k", "v"}});
  SafetensorsFile f(dir + "/x.safetensors");
  EXPECT_EQ(f.get("a").shape(), (Shape{2, 3}));
  EXPECT_EQ(std::memcmp(f.get("a").raw(), a.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.get("b").raw(), b.data(), 12), 0);
  EXPECT_EQ(f.metadata().at("k"), "v");
  EXPECT_THROW(f.get("c"), Error);
}

TEST(Safetensors, HalfPrecisionConversions) {
  // f16 against the compiler's _Float16; bf16 is the upper half of an f32 (exact for these).
  std::vector<float> vals = {0.0f,    -0.0f,    1.0f,     -2.5f, 65504.0f,
                             6.1e-5f, 5.96e-8f, 3.14159f, 1e-3f, 70000.0f};
  for (float v : vals) {
    _Float16 h = static_cast<_Float16>(v);
    uint16_t bits;
    std::memcpy(&bits, &h, 2);
    EXPECT_EQ(f32_to_f16(v), bits) << v;
    EXPECT_EQ(f16_to_f32(bits), static_cast<float>(h)) << v;
    float r = bf16_to_f32(f32_to_bf16(v));
    EXPECT_NEAR(r, v, std::abs(v) * (1.0 / 128));
  }
  std::string dir = test::temp_dir("st16");
  std::vector<uint16_t> h = {f32_to_f16(1.5f), f32_to_f16(-0.25f)},
                        bf = {f32_to_bf16(2.0f), f32_to_bf16(-3.0f)};
  save_safetensors(dir + "/h.safetensors",
                   {{"h", DType::F16, {2}, h.data()}, {"bf", DType::BF16, {2}, bf.data()}});
  SafetensorsFile f(dir + "/h.safetensors");
  Tensor t = f.get("h").to_f32(), u = f.get("bf").to_f32();
  EXPECT_EQ(t.f32()[0], 1.5f);
  EXPECT_EQ(t.f32()[1], -0.25f);
  EXPECT_EQ(u.f32()[0], 2.0f);
  EXPECT_EQ(u.f32()[1], -3.0f);
}

TEST(Safetensors, TruncatedAndLyingFiles) {
  std::string dir = test::temp_dir("stbad");
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  expect_error(dir, "short", "abc", "not a safetensors file");
  expect_error(dir, "hlen", make_file(ok, 16).substr(0, 30), "header length");
  expect_error(dir, "trunc", make_file(ok, 8), "outside");
  expect_error(dir, "json", make_file("{\"a\": [", 16), "not valid JSON");
  expect_error(dir, "shape",
               make_file(R"({"a":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}})", 16),
               "needs 24 bytes");
  expect_error(dir, "dtype",
               make_file(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8),
               "unsupported dtype");
  expect_error(dir, "neg",
               make_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 8),
               "bad dimension");
  expect_error(dir, "offs",
               make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8),
               "outside");
  expect_error(
      dir, "huge",
      make_file(
          R"({"a":{"dtype":"F32","shape":[1099511627775,1099511627775],"data_offsets":[0,4]}})", 8),
      "absurd");
  expect_error(
      dir, "overlap",
      make_file(
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
          12),
      "overlap");
  expect_error(dir, "missing", make_file(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "lacks");
}

}  // namespace
}  // namespace qkv

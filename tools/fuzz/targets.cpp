#include "tools/fuzz/targets.h"

#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/gpt_config.h"
#include "qkv/tokenizer/bpe_tokenizer.h"

namespace qkv::fuzz {

namespace {
// A per-process scratch directory for the file-based loaders.
std::string scratch(const std::string& name) {
  static const std::string dir = [] {
    std::string d = "/tmp/qkv_fuzz_" + std::to_string(::getpid());
    make_dirs(d);
    return d;
  }();
  return dir + "/" + name;
}
}  // namespace

int safetensors(const uint8_t* data, size_t size) {
  const std::string path = scratch("x.safetensors");
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    SafetensorsFile f(path);
    for (const auto& n : f.names()) {
      Tensor t = f.get(n);
      if (t.dtype() == DType::F32 || t.dtype() == DType::F16 || t.dtype() == DType::BF16) {
        Tensor u = t.to_f32();
        volatile float sink = u.numel() ? u.f32()[u.numel() - 1] : 0.0f;
        (void)sink;
      }
    }
  } catch (const Error&) {
  }
  return 0;
}

int config_json(const uint8_t* data, size_t size) {
  try {
    auto j = nlohmann::json::parse(data, data + size);
    GPTConfig c = GPTConfig::from_json(j, "config.json");
    (void)c.num_params();
  } catch (const Error&) {
  } catch (const nlohmann::json::exception&) {
  }
  return 0;
}

int bpe_files(const uint8_t* data, size_t size) {
  std::string s(reinterpret_cast<const char*>(data), size);
  const size_t nul = s.find('\0');
  const std::string vocab = s.substr(0, nul),
                    merges = nul == std::string::npos ? "" : s.substr(nul + 1);
  write_file_atomic(scratch("vocab.json"), vocab);
  write_file_atomic(scratch("merges.txt"), merges);
  try {
    BpeTokenizer t = BpeTokenizer::load(scratch("vocab.json"), scratch("merges.txt"));
    const std::string probe = "Hello, world! 123 \xff";
    if (t.decode(t.encode(probe)) != probe) std::abort();
  } catch (const Error&) {
  }
  return 0;
}

int bpe_encode(const uint8_t* data, size_t size) {
  static const BpeTokenizer tok = [] {
    const char* env = std::getenv("QKV_GPT2_DIR");
    return BpeTokenizer::load_dir(env ? env : "../shared/data/gpt2");
  }();
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  if (tok.decode(tok.encode(s)) != s) std::abort();
  if (tok.decode(tok.encode(s, true)) != s) std::abort();
  return 0;
}

bool run(const std::string& name, const std::string& input) {
  const auto* d = reinterpret_cast<const uint8_t*>(input.data());
  if (name == "safetensors")
    safetensors(d, input.size());
  else if (name == "config_json")
    config_json(d, input.size());
  else if (name == "bpe_files")
    bpe_files(d, input.size());
  else if (name == "bpe_encode")
    bpe_encode(d, input.size());
  else
    return false;
  return true;
}

}  // namespace qkv::fuzz

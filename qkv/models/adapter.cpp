#include "qkv/models/adapter.h"

#include <nlohmann/json.hpp>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/io/json_file.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/gpt.h"

namespace qkv {

std::vector<std::string> parse_lora_targets(const std::string& list) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= list.size()) {
    size_t j = list.find(',', i);
    if (j == std::string::npos) j = list.size();
    std::string t = list.substr(i, j - i);
    if (t == "c_attn") t = "attn.c_attn";
    if (t == "c_fc") t = "mlp.c_fc";
    QKV_CHECK(t == "attn.c_attn" || t == "attn.c_proj" || t == "mlp.c_fc" || t == "mlp.c_proj",
              "--lora-targets: unknown matrix '{}' (attn.c_attn, attn.c_proj, mlp.c_fc, "
              "mlp.c_proj)",
              t);
    out.push_back(t);
    i = j + 1;
  }
  return out;
}

std::vector<size_t> lora_target_params(const GPT& m, const LoraSpec& spec) {
  std::vector<size_t> out;
  for (size_t i = 0; i < m.params().size(); ++i) {
    const std::string& n = m.params()[i].name;
    for (const std::string& t : spec.targets) {
      const std::string suffix = "." + t + ".weight";
      if (n.size() > suffix.size() &&
          n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
        out.push_back(i);
    }
  }
  QKV_CHECK(!out.empty(), "LoRA: the model has none of the target matrices");
  return out;
}

void lora_merge(float* W, const float* A, const float* B, int K, int N, int r, float scale) {
  cpu::gemm(false, false, K, N, r, scale, A, r, B, N, 1.0f, W, N);
}

std::string adapter_base(const std::string& dir) {
  const std::string cfg = dir + "/adapter_config.json";
  if (!file_exists(cfg)) return "";
  const nlohmann::json j = read_json_file(cfg);
  QKV_CHECK(j.is_object() && j.contains("base_model") && j["base_model"].is_string(),
            "{}: no \"base_model\"", cfg);
  std::string base = j["base_model"].get<std::string>();
  if (!base.empty() && base[0] != '/') base = dir + "/" + base;  // relative to the adapter
  return base;
}

void apply_adapter(GPT& m, const std::string& dir) {
  const std::string cfg_path = dir + "/adapter_config.json";
  const nlohmann::json j = read_json_file(cfg_path);
  LoraSpec spec;
  QKV_CHECK(j.contains("rank") && j["rank"].is_number_integer() && j["rank"].get<int>() >= 1 &&
                j.contains("alpha") && j["alpha"].is_number(),
            "{}: needs integer \"rank\" >= 1 and numeric \"alpha\"", cfg_path);
  spec.rank = j["rank"].get<int>();
  spec.alpha = j["alpha"].get<float>();
  const std::string path = dir + "/adapter.safetensors";
  SafetensorsFile f(path);
  for (const std::string& name : f.names()) {
    Tensor t = f.get(name);
    QKV_CHECK(t.dtype() == DType::F32, "{}: tensor '{}' must be F32", path, name);
    const bool lora = name.rfind("lora.", 0) == 0;
    if (lora && name.size() > 2 && name.compare(name.size() - 2, 2, ".B") == 0) continue;
    if (lora) {  // "lora.<param>.A" with its ".B"
      QKV_CHECK(name.compare(name.size() - 2, 2, ".A") == 0, "{}: unexpected tensor '{}'", path,
                name);
      const std::string param = name.substr(5, name.size() - 7);
      const std::string bname = "lora." + param + ".B";
      QKV_CHECK(f.has(bname), "{}: '{}' has no '{}'", path, name, bname);
      const GPT::Param* p = nullptr;
      for (const auto& q : m.params())
        if (q.name == param) p = &q;
      QKV_CHECK(p && p->shape.size() == 2, "{}: '{}' adapts '{}', which the model has no matrix of",
                path, name, param);
      const int K = int(p->shape[0]), N = int(p->shape[1]), r = spec.rank;
      Tensor b = f.get(bname);
      QKV_CHECK(t.shape() == Shape({K, r}) && b.shape() == Shape({r, N}),
                "{}: '{}' / '{}' have shapes {} / {}, expected [{}, {}] / [{}, {}]", path, name,
                bname, t.shape_str(), b.shape_str(), K, r, r, N);
      lora_merge(m.param_data() + p->offset, t.f32(), b.f32(), K, N, r, spec.scale());
    } else {
      const GPT::Param* p = nullptr;
      for (const auto& q : m.params())
        if (q.name == name) p = &q;
      QKV_CHECK(p && t.shape() == p->shape, "{}: tensor '{}' does not match the model", path, name);
      std::copy(t.f32(), t.f32() + p->numel, m.param_data() + p->offset);
    }
  }
}

}  // namespace qkv

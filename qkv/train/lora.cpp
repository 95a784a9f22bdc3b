#include "qkv/train/lora.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/rng.h"
#include "qkv/io/safetensors.h"

namespace qkv {

std::vector<bool> frozen_params(const GPT& m, const std::string& spec) {
  const auto& ps = m.params();
  std::vector<bool> frozen(ps.size(), false);
  if (spec.empty()) return frozen;
  const int L = m.config().n_layer;
  auto layer_of = [](const std::string& name) {
    if (name.rfind("h.", 0) != 0) return -1;
    return std::atoi(name.c_str() + 2);
  };
  size_t i = 0;
  while (i <= spec.size()) {
    size_t j = spec.find(',', i);
    if (j == std::string::npos) j = spec.size();
    const std::string item = spec.substr(i, j - i);
    i = j + 1;
    for (size_t k = 0; k < ps.size(); ++k) {
      const std::string& n = ps[k].name;
      const bool head = n.rfind("classifier.", 0) == 0;
      if (item == "all") {
        frozen[k] = frozen[k] || !head;
      } else if (item == "embeddings") {
        if (n == "wte.weight" || n == "wpe.weight") frozen[k] = true;
      } else if (item == "final_norm") {
        if (n.rfind("ln_f.", 0) == 0) frozen[k] = true;
      }
    }
    if (item == "all" || item == "embeddings" || item == "final_norm") continue;
    int lo = -1, hi = -1;
    char extra = 0;
    const int got = std::sscanf(item.c_str(), "%d-%d%c", &lo, &hi, &extra);
    if (got == 1) hi = lo;
    QKV_CHECK((got == 1 || got == 2) && lo >= 0 && hi >= lo && hi < L &&
                  item.find_first_not_of("0123456789-") == std::string::npos,
              "--freeze: '{}' is not embeddings, final_norm, all, a layer or a range a-b of "
              "layers in [0, {})",
              item, L);
    for (size_t k = 0; k < ps.size(); ++k) {
      const int l = layer_of(ps[k].name);
      if (l >= lo && l <= hi) frozen[k] = true;
    }
  }
  return frozen;
}

Lora::Lora(GPT& m, const LoraSpec& spec, uint64_t seed) : m_(m), spec_(spec) {
  QKV_CHECK(spec.rank >= 1 && spec.rank <= 4096, "--lora-rank {} out of range [1, 4096]",
            spec.rank);
  QKV_CHECK(spec.alpha > 0 && std::isfinite(spec.alpha), "--lora-alpha must be > 0");
  idx_ = lora_target_params(m, spec);
  const int r = spec.rank;
  for (size_t t = 0; t < idx_.size(); ++t) {
    const GPT::Param& p = m.params()[idx_[t]];
    Mat mt;
    mt.K = int(p.shape[0]);
    mt.N = int(p.shape[1]);
    QKV_CHECK(r <= std::min(mt.K, mt.N), "--lora-rank {} exceeds the size of '{}' ({} x {})", r,
              p.name, mt.K, mt.N);
    const float* w = m.param_data() + p.offset;
    mt.W0.assign(w, w + p.numel);
    mt.A.resize(size_t(mt.K) * r);
    Rng rng(seed, 7000 + t);
    const double sd = 1.0 / std::sqrt(double(r));
    for (auto& a : mt.A) a = float(rng.normal() * sd);
    mt.B.assign(size_t(r) * mt.N, 0.0f);
    mt.dA.assign(mt.A.size(), 0.0f);
    mt.dB.assign(mt.B.size(), 0.0f);
    mats_.push_back(std::move(mt));
  }
}

void Lora::apply() {
  for (size_t t = 0; t < idx_.size(); ++t) {
    Mat& mt = mats_[t];
    float* w = m_.param_data() + m_.params()[idx_[t]].offset;
    std::copy(mt.W0.begin(), mt.W0.end(), w);
    lora_merge(w, mt.A.data(), mt.B.data(), mt.K, mt.N, spec_.rank, spec_.scale());
  }
}

void Lora::accumulate_grads() {
  const int r = spec_.rank;
  const float s = spec_.scale();
  for (size_t t = 0; t < idx_.size(); ++t) {
    Mat& mt = mats_[t];
    const float* dW = m_.grad_data() + m_.params()[idx_[t]].offset;  // (K, N)
    // dA (K, r) += s dW B^T; dB (r, N) += s A^T dW.
    cpu::gemm(false, true, mt.K, r, mt.N, s, dW, mt.N, mt.B.data(), mt.N, 1.0f, mt.dA.data(), r);
    cpu::gemm(true, false, r, mt.N, mt.K, s, mt.A.data(), r, dW, mt.N, 1.0f, mt.dB.data(), mt.N);
  }
}

void Lora::zero_grad() {
  for (Mat& mt : mats_) {
    std::fill(mt.dA.begin(), mt.dA.end(), 0.0f);
    std::fill(mt.dB.begin(), mt.dB.end(), 0.0f);
  }
}

std::vector<ParamRef> Lora::params() {
  std::vector<ParamRef> out;
  for (Mat& mt : mats_) {
    out.push_back({mt.A.data(), mt.dA.data(), mt.A.size(), true});
    out.push_back({mt.B.data(), mt.dB.data(), mt.B.size(), true});
  }
  return out;
}

void Lora::append_tensors(std::vector<TensorRef>* out) const {
  for (size_t t = 0; t < idx_.size(); ++t) {
    const Mat& mt = mats_[t];
    const std::string& name = m_.params()[idx_[t]].name;
    out->push_back({"lora." + name + ".A", DType::F32, {mt.K, spec_.rank}, mt.A.data()});
    out->push_back({"lora." + name + ".B", DType::F32, {spec_.rank, mt.N}, mt.B.data()});
  }
}

Trainable make_trainable(GPT& m, const std::string& freeze, int lora_rank, float lora_alpha,
                         const std::string& lora_targets, uint64_t seed) {
  Trainable t;
  t.frozen = frozen_params(m, lora_rank > 0 ? (freeze.empty() ? "all" : freeze + ",all") : freeze);
  if (lora_rank > 0) {
    LoraSpec spec;
    spec.rank = lora_rank;
    spec.alpha = lora_alpha;
    spec.targets = parse_lora_targets(lora_targets);
    t.lora = std::make_unique<Lora>(m, spec, seed);
    for (size_t i : t.lora->targets()) t.frozen[i] = true;
  }
  for (size_t i = 0; i < m.params().size(); ++i) {
    if (t.frozen[i]) continue;
    const auto& p = m.params()[i];
    t.refs.push_back({m.param_data() + p.offset, m.grad_data() + p.offset, p.numel, p.decay});
    t.numel += int64_t(p.numel);
  }
  if (t.lora)
    for (const ParamRef& r : t.lora->params()) {
      t.refs.push_back(r);
      t.numel += int64_t(r.n);
    }
  QKV_CHECK(!t.refs.empty(), "--freeze leaves nothing to train");
  return t;
}

void save_finetuned_weights(const std::string& out, const GPT& m, const std::vector<bool>& frozen,
                            const Lora* lora, const std::string& base_dir, bool adapter) {
  if (!adapter) {
    m.save(out + "/model.safetensors");
    std::remove((out + "/adapter_config.json").c_str());
    std::remove((out + "/adapter.safetensors").c_str());
    return;
  }
  QKV_CHECK(lora != nullptr, "an adapter needs LoRA (--lora-rank)");
  std::vector<TensorRef> tensors;
  lora->append_tensors(&tensors);
  for (size_t i = 0; i < m.params().size(); ++i)
    if (!frozen[i]) {
      const auto& p = m.params()[i];
      tensors.push_back({p.name, DType::F32, p.shape, m.param_data() + p.offset});
    }
  save_safetensors(out + "/adapter.safetensors", tensors, {{"format", "qkv-lora"}});
  char buf[PATH_MAX];
  const std::string base = ::realpath(base_dir.c_str(), buf) ? std::string(buf) : base_dir;
  nlohmann::ordered_json ac = {{"base_model", base},
                               {"rank", lora->spec().rank},
                               {"alpha", lora->spec().alpha},
                               {"targets", lora->spec().targets}};
  write_file_atomic(out + "/adapter_config.json", ac.dump(2) + "\n");
  std::remove((out + "/model.safetensors").c_str());
}

}  // namespace qkv

#include "qkv/models/hooks.h"

#include <algorithm>
#include <memory>

#include "qkv/core/error.h"

namespace qkv {

std::string hook_name(const HookSite& s) {
  const std::string b = "blocks." + std::to_string(s.layer) + ".";
  switch (s.point) {
    case HookPoint::Embed:
      return "embed";
    case HookPoint::Qkv:
      return b + "attn.qkv";
    case HookPoint::Heads:
      return b + "attn.heads";
    case HookPoint::AttnOut:
      return b + "attn_out";
    case HookPoint::MlpOut:
      return b + "mlp_out";
    case HookPoint::ResidPost:
      return b + "resid_post";
  }
  return "?";
}

HookSite parse_hook_name(const std::string& name, int n_layer) {
  if (name == "embed") return {HookPoint::Embed, -1};
  const std::string forms =
      "embed, blocks.L.attn.qkv, blocks.L.attn.heads, blocks.L.attn_out, blocks.L.mlp_out, "
      "blocks.L.resid_post";
  QKV_CHECK(name.rfind("blocks.", 0) == 0, "unknown hook point '{}' (known: {})", name, forms);
  size_t dot = name.find('.', 7);
  QKV_CHECK(dot != std::string::npos && dot > 7, "unknown hook point '{}' (known: {})", name,
            forms);
  const std::string num = name.substr(7, dot - 7), rest = name.substr(dot + 1);
  QKV_CHECK(std::all_of(num.begin(), num.end(), ::isdigit) && num.size() < 7,
            "hook point '{}': '{}' is not a layer number", name, num);
  const int layer = std::stoi(num);
  QKV_CHECK(layer < n_layer, "hook point '{}': layer {} out of range [0, {})", name, layer,
            n_layer);
  if (rest == "attn.qkv") return {HookPoint::Qkv, layer};
  if (rest == "attn.heads") return {HookPoint::Heads, layer};
  if (rest == "attn_out") return {HookPoint::AttnOut, layer};
  if (rest == "mlp_out") return {HookPoint::MlpOut, layer};
  if (rest == "resid_post") return {HookPoint::ResidPost, layer};
  QKV_CHECK(false, "unknown hook point '{}' (known: {})", name, forms);
  return {};
}

void Hooks::add(const HookSite& s, Fn fn) { fns_.emplace_back(s, std::move(fn)); }

void Hooks::cache(const HookSite& s) {
  auto store = cache_;
  add(s,
      [store, s](float* d, int B, int T, int W) { (*store)[s].assign(d, d + size_t(B) * T * W); });
}

const std::vector<float>& Hooks::cached(const HookSite& s) const {
  auto it = cache_->find(s);
  QKV_CHECK(it != cache_->end(), "no cached activation at '{}' (cache it, then run forward)",
            hook_name(s));
  return it->second;
}

namespace {
// Calls f(slice pointer, row index) for the chosen positions and slice of every row.
template <typename F>
void for_slices(float* d, int B, int T, int W, int head, int head_size,
                const std::vector<int>& positions, F f) {
  const int off = head >= 0 ? head * head_size : 0, n = head >= 0 ? head_size : W;
  QKV_CHECK(off + n <= W, "hook: head {} x {} exceeds the width {}", head, head_size, W);
  for (int b = 0; b < B; ++b) {
    auto row = [&](int t) { f(d + (size_t(b) * T + size_t(t)) * W + off, size_t(b) * T + t); };
    if (positions.empty()) {
      for (int t = 0; t < T; ++t) row(t);
    } else {
      for (int t : positions) {
        QKV_CHECK(t >= 0 && t < T, "hook: position {} out of range [0, {})", t, T);
        row(t);
      }
    }
  }
}
}  // namespace

void Hooks::zero(const HookSite& s, int head, int head_size, std::vector<int> positions) {
  add(s, [=](float* d, int B, int T, int W) {
    const int n = head >= 0 ? head_size : W;
    for_slices(d, B, T, W, head, head_size, positions,
               [&](float* p, size_t) { std::fill(p, p + n, 0.0f); });
  });
}

void Hooks::mean_ablate(const HookSite& s, std::vector<float> mean, int head, int head_size) {
  add(s, [=](float* d, int B, int T, int W) {
    const int n = head >= 0 ? head_size : W;
    QKV_CHECK(int(mean.size()) == n, "mean_ablate at '{}': {} values for a slice of {}",
              hook_name(s), mean.size(), n);
    for_slices(d, B, T, W, head, head_size, {},
               [&](float* p, size_t) { std::copy(mean.begin(), mean.end(), p); });
  });
}

void Hooks::replace(const HookSite& s, std::vector<float> values, std::vector<int> positions) {
  add(s, [=](float* d, int B, int T, int W) {
    QKV_CHECK(values.size() == size_t(B) * T * W, "replace at '{}': {} values for ({}, {}, {})",
              hook_name(s), values.size(), B, T, W);
    for_slices(d, B, T, W, -1, 0, positions, [&](float* p, size_t row) {
      std::copy(values.begin() + ptrdiff_t(row * W), values.begin() + ptrdiff_t((row + 1) * W), p);
    });
  });
}

void Hooks::clear() {
  fns_.clear();
  cache_->clear();
}

void Hooks::run(const HookSite& s, float* data, int B, int T, int width) const {
  for (const auto& [site, fn] : fns_)
    if (site == s) fn(data, B, T, width);
}

}  // namespace qkv

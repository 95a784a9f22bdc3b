// Hook points: named places in GPT::forward where the residual stream is written (and each
// head's output), at which a caller can read, cache, zero, mean-ablate or replace the
// activation during the pass. A model without hooks pays one null check per point.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace qkv {

enum class HookPoint : uint8_t {
  Embed,      // "embed": token + position embeddings, (B, T, C)
  Qkv,        // "blocks.L.attn.qkv": the c_attn output, queries | keys | values, (B, T, 3C)
  Heads,      // "blocks.L.attn.heads": each head's output before c_proj, (B, T, NH * HS)
  AttnOut,    // "blocks.L.attn_out": attention after c_proj (+ bias), before the residual add
  MlpOut,     // "blocks.L.mlp_out": the MLP's output, before the residual add
  ResidPost,  // "blocks.L.resid_post": the residual stream after block L
};

struct HookSite {
  HookPoint point = HookPoint::Embed;
  int layer = -1;  // -1 for Embed
  bool operator==(const HookSite& o) const { return point == o.point && layer == o.layer; }
  bool operator<(const HookSite& o) const {
    return layer != o.layer ? layer < o.layer : point < o.point;
  }
};

std::string hook_name(const HookSite& s);
// Parses a name of the list above; errors name the valid forms and the layer range.
HookSite parse_hook_name(const std::string& name, int n_layer);

class Hooks {
 public:
  // A hook sees the activation (B, T, width) at its site and may overwrite it in place.
  using Fn = std::function<void(float* data, int B, int T, int width)>;

  void add(const HookSite& s, Fn fn);
  // Copies the activation at every pass; cached(s) returns the last copy.
  void cache(const HookSite& s);
  const std::vector<float>& cached(const HookSite& s) const;
  // Sets the activation to zero: at `positions` (all if empty) and, at the Heads point, only the
  // slice of `head` (>= 0; head_size = width / n_head) or all heads (-1).
  void zero(const HookSite& s, int head = -1, int head_size = 0, std::vector<int> positions = {});
  // Replaces every position's vector (or head slice) by `mean` (width, or head_size floats).
  void mean_ablate(const HookSite& s, std::vector<float> mean, int head = -1, int head_size = 0);
  // Overwrites the given positions with the same positions of `values` (B, T, width).
  void replace(const HookSite& s, std::vector<float> values, std::vector<int> positions);
  void clear();
  bool empty() const { return fns_.empty(); }

  // Called by the model at each site.
  void run(const HookSite& s, float* data, int B, int T, int width) const;

 private:
  std::vector<std::pair<HookSite, Fn>> fns_;
  std::shared_ptr<std::map<HookSite, std::vector<float>>> cache_ =
      std::make_shared<std::map<HookSite, std::vector<float>>>();
};

}  // namespace qkv

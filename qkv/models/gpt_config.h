// GPT configuration: sizes, named presets, and config.json in Hugging Face GPT-2 spelling
// (n_layer, n_head, n_embd, n_positions, vocab_size, layer_norm_epsilon, ...).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qkv {

struct GPTConfig {
  int n_layer = 4;
  int n_head = 4;
  int n_embd = 128;
  int block_size = 64;  // n_positions
  int vocab_size = 256;
  bool bias = true;
  float ln_eps = 1e-5f;

  // Throws qkv::Error (prefixed with `where`) if a value is out of range or inconsistent.
  void validate(const std::string& where = "config") const;
  int head_size() const { return n_embd / n_head; }
  int64_t num_params() const;

  nlohmann::json to_json() const;
  // Reads the HF GPT-2 keys; `where` names the file in error messages.
  static GPTConfig from_json(const nlohmann::json& j, const std::string& where);
  // Named presets: gpt2, gpt2-medium, gpt2-large, gpt2-xl, shakespeare-char, baby.
  static GPTConfig preset(const std::string& name);
  static std::vector<std::string> preset_names();
};

}  // namespace qkv

// GPT configuration: sizes, named presets, and config.json in Hugging Face GPT-2 spelling
// (n_layer, n_head, n_embd, n_positions, vocab_size, layer_norm_epsilon, ...).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qkv/backend/kernel_args.h"

namespace qkv {

// Position information added to the token embeddings.
enum class PosEncoding : uint8_t {
  Learned,     // GPT-2's trained table wpe (block_size x n_embd): positions < block_size only
  Sinusoidal,  // the fixed sin/cos table of "Attention Is All You Need": no parameters, any
               // position
};

struct GPTConfig {
  int n_layer = 4;
  int n_head = 4;
  int n_embd = 128;
  int block_size = 64;  // n_positions
  int vocab_size = 256;
  bool bias = true;
  float ln_eps = 1e-5f;
  PosEncoding pos = PosEncoding::Learned;
  bool mlp = true;
  // Norm: LayerNorm (GPT-2) or RMSNorm (no centring, no bias); "norm" in config.json.
  enum class Norm : uint8_t { LayerNorm, RMSNorm } norm = Norm::LayerNorm;
  // MLP activation: GELU in its tanh form (GPT-2's "gelu_new") or ReLU ("relu");
  // "activation_function" in config.json, as Hugging Face spells it.
  enum class Act : uint8_t {
    GeluTanh,
    ReLU
  } act = Act::GeluTanh;  // false: attention-only blocks (no ln_2, no MLP), "mlp": false in
                          // config.json
  // Attention rule (see kernel_args.h): dense, sliding (window), block_sparse (attn_block,
  // attn_local_blocks, attn_global) or linear.
  AttnKind attention = AttnKind::Dense;
  int window = 0;
  int attn_block = 0, attn_local_blocks = 1, attn_global = 0;

  static AttnKind attention_from_name(const std::string& name, const std::string& where);
  static const char* attention_name(AttnKind k);
  static PosEncoding pos_from_name(const std::string& name, const std::string& where);
  static const char* pos_name(PosEncoding p);
  // Positions the model can encode and attend over in generation: block_size with learned
  // positions or dense/block-sparse attention; unbounded (INT32_MAX) for sliding-window and
  // linear attention with sinusoidal positions (a rolling cache / a fixed-size state).
  int max_positions() const;
  // Copies the attention rule into kernel arguments.
  template <typename T>
  void apply_attention(AttnArgs<T>& a) const {
    a.kind = attention;
    a.window = window;
    a.block = attn_block;
    a.local_blocks = attn_local_blocks;
    a.global = attn_global;
  }

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

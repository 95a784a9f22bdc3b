// GPT configuration: sizes, named presets, and config.json in Hugging Face GPT-2 spelling
// (n_layer, n_head, n_embd, n_positions, vocab_size, layer_norm_epsilon, ...).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qkv/backend/kernel_args.h"

namespace qkv {

// How the model knows positions.
enum class PosEncoding : uint8_t {
  Learned,     // GPT-2's trained table wpe (block_size x n_embd): positions < block_size only
  Sinusoidal,  // the fixed sin/cos table of "Attention Is All You Need": no parameters, any
               // position
  Rope,        // rotary: queries and keys turned by position-dependent angles (RoFormer)
  Alibi,       // no embedding: attention scores get -m_h |i - j| (Press et al. 2022)
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
  float rope_theta = 10000.0f;  // rotary base ("rope_theta")
  bool mlp = true;  // false: attention-only blocks (no ln_2, no MLP), "mlp": false in config.json
  // Norm: LayerNorm (GPT-2) or RMSNorm (no centring, no bias); "norm" in config.json.
  enum class Norm : uint8_t { LayerNorm, RMSNorm } norm = Norm::LayerNorm;
  // Where the norms sit ("norm_position"): Pre (GPT-2: x + f(norm(x)), then a final norm ln_f)
  // or Post (the original Transformer: norm(x + f(x)); no final norm).
  enum class NormPos : uint8_t { Pre, Post } norm_pos = NormPos::Pre;
  // MLP activation: GELU in its tanh form (GPT-2's "gelu_new"), ReLU ("relu") or SwiGLU
  // ("swiglu": c_fc produces [gate | up], the MLP is silu(gate) * up); "activation_function".
  enum class Act : uint8_t { GeluTanh, ReLU, SwiGLU } act = Act::GeluTanh;
  int n_inner = 0;    // MLP hidden width ("n_inner" as in HF GPT-2); 0 = 4 * n_embd
  int n_kv_head = 0;  // key/value heads (grouped-query attention); 0 = n_head
  // Architecture ("arch"): a decoder (causal, GPT) or an encoder (bidirectional, BERT-style: no
  // generation; masked-language-model pretraining and classification).
  bool causal = true;
  // The [MASK] token of masked-language-model training: an id past the tokenizer's vocabulary
  // ("mask_token_id"); -1 = none.
  int mask_token_id = -1;
  // Classification head: one output per label, over the mean of the final hidden states of a
  // sequence's tokens ("id2label" in config.json, as Hugging Face writes it). Empty = none.
  std::vector<std::string> labels;
  int num_labels() const { return int(labels.size()); }
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
  // Copies the attention rule into kernel arguments (the ALiBi slopes come from the model).
  template <typename T>
  void apply_attention(AttnArgs<T>& a) const {
    a.kv_group = n_head / kv_heads();
    a.kind = attention;
    a.window = window;
    a.block = attn_block;
    a.local_blocks = attn_local_blocks;
    a.global = attn_global;
  }

  // Throws qkv::Error (prefixed with `where`) if a value is out of range or inconsistent.
  void validate(const std::string& where = "config") const;
  int head_size() const { return n_embd / n_head; }
  int kv_heads() const { return n_kv_head ? n_kv_head : n_head; }
  int mlp_hidden() const { return n_inner ? n_inner : 4 * n_embd; }
  // Output widths of c_fc (SwiGLU: gate and up) and c_attn (q, then k and v of kv_heads()).
  int fc_width() const { return act == Act::SwiGLU ? 2 * mlp_hidden() : mlp_hidden(); }
  int qkv_width() const { return n_embd + 2 * kv_heads() * head_size(); }
  bool final_norm() const { return norm_pos == NormPos::Pre; }
  static const char* act_name(Act a);
  int64_t num_params() const;

  nlohmann::json to_json() const;
  // Reads the HF GPT-2 keys; `where` names the file in error messages.
  static GPTConfig from_json(const nlohmann::json& j, const std::string& where);
  // Named presets: gpt2, gpt2-medium, gpt2-large, gpt2-xl, shakespeare-char, baby.
  static GPTConfig preset(const std::string& name);
  static std::vector<std::string> preset_names();
};

}  // namespace qkv

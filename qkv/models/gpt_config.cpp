#include "qkv/models/gpt_config.h"

#include <cmath>
#include <limits>

#include "qkv/core/error.h"

namespace qkv {

void GPTConfig::validate(const std::string& where) const {
  QKV_CHECK(n_layer >= 1 && n_layer <= 1024, "{}: n_layer {} out of range [1, 1024]", where,
            n_layer);
  QKV_CHECK(n_head >= 1 && n_head <= 1024, "{}: n_head {} out of range [1, 1024]", where, n_head);
  QKV_CHECK(n_embd >= 1 && n_embd <= 65536, "{}: n_embd {} out of range [1, 65536]", where, n_embd);
  QKV_CHECK(n_embd % n_head == 0, "{}: n_embd {} is not divisible by n_head {}", where, n_embd,
            n_head);
  QKV_CHECK(block_size >= 1 && block_size <= 1 << 20, "{}: block_size {} out of range [1, 1048576]",
            where, block_size);
  QKV_CHECK(vocab_size >= 1 && vocab_size <= 1 << 24,
            "{}: vocab_size {} out of range [1, 16777216]", where, vocab_size);
  QKV_CHECK(ln_eps > 0 && ln_eps < 1, "{}: layer_norm_epsilon {} out of range (0, 1)", where,
            ln_eps);
  // The attention rule: errors here come before any buffer is planned.
  if (attention == AttnKind::Sliding)
    QKV_CHECK(window >= 1 && window <= block_size,
              "{}: window {} must be in [1, block_size = {}] for sliding attention", where, window,
              block_size);
  else
    QKV_CHECK(window == 0, "{}: window {} is set but attention is '{}' (window is for 'sliding')",
              where, window, attention_name(attention));
  if (attention == AttnKind::BlockSparse) {
    QKV_CHECK(attn_block >= 1 && attn_block <= block_size && block_size % attn_block == 0,
              "{}: attn_block {} must divide block_size {} for block_sparse attention", where,
              attn_block, block_size);
    QKV_CHECK(attn_local_blocks >= 0 && attn_local_blocks <= block_size / attn_block,
              "{}: attn_local_blocks {} out of range [0, {}]", where, attn_local_blocks,
              block_size / attn_block);
    QKV_CHECK(attn_global >= 0 && attn_global <= block_size,
              "{}: attn_global {} out of range [0, block_size = {}]", where, attn_global,
              block_size);
  } else {
    QKV_CHECK(attn_block == 0 && attn_global == 0,
              "{}: attn_block/attn_global are set but attention is '{}' (they are for "
              "'block_sparse')",
              where, attention_name(attention));
  }
  QKV_CHECK(n_kv_head >= 0 && n_kv_head <= n_head && n_head % kv_heads() == 0,
            "{}: n_kv_head {} must divide n_head {}", where, n_kv_head, n_head);
  QKV_CHECK(n_inner >= 0 && n_inner <= 1 << 20, "{}: n_inner {} out of range [0, 1048576]", where,
            n_inner);
  if (pos == PosEncoding::Rope) {
    QKV_CHECK(head_size() % 2 == 0, "{}: rotary positions need an even head size, got {}", where,
              head_size());
    QKV_CHECK(rope_theta > 1 && std::isfinite(rope_theta), "{}: rope_theta {} must be > 1", where,
              rope_theta);
  }
  if (attention == AttnKind::Linear) {
    QKV_CHECK(pos != PosEncoding::Alibi,
              "{}: ALiBi biases softmax scores; linear attention has none (pick another pos)",
              where);
    QKV_CHECK(kv_heads() == n_head,
              "{}: grouped-query attention (n_kv_head {}) is not supported with linear attention",
              where, n_kv_head);
  }
  QKV_CHECK(mask_token_id >= -1 && mask_token_id < vocab_size,
            "{}: mask_token_id {} out of range [0, vocab_size = {})", where, mask_token_id,
            vocab_size);
  QKV_CHECK(labels.size() <= 1u << 20, "{}: {} labels is too many", where, labels.size());
  QKV_CHECK(num_params() < (int64_t(1) << 36), "{}: model of {} parameters is too large", where,
            num_params());
}

int64_t GPTConfig::num_params() const {
  const int64_t C = n_embd, b = bias ? 1 : 0, QW = qkv_width(), H = mlp_hidden(), F = fc_width();
  const int64_t nb = norm == Norm::RMSNorm ? 0 : b;  // RMSNorm has no bias
  const int64_t attn = C + C * nb                    // ln_1
                       + C * QW + QW * b             // c_attn
                       + C * C + C * b;              // attn.c_proj
  const int64_t mlp_part = C + C * nb                // ln_2
                           + C * F + F * b           // c_fc
                           + H * C + C * b;          // mlp.c_proj
  const int64_t per_layer = attn + (mlp ? mlp_part : 0);
  const int64_t wpe = pos == PosEncoding::Learned ? int64_t(block_size) * C : 0;
  const int64_t lnf = final_norm() ? C + C * nb : 0;
  const int64_t head = num_labels() ? (C + 1) * num_labels() : 0;
  return int64_t(vocab_size) * C + wpe + n_layer * per_layer + lnf + head;
}

const char* GPTConfig::act_name(Act a) {
  return a == Act::ReLU ? "relu" : a == Act::SwiGLU ? "swiglu" : "gelu_new";
}

nlohmann::json GPTConfig::to_json() const {
  nlohmann::json j = {{"model_type", "gpt2"},
                      {"architectures", {"GPT2LMHeadModel"}},
                      {"n_layer", n_layer},
                      {"n_head", n_head},
                      {"n_embd", n_embd},
                      {"n_positions", block_size},
                      {"n_ctx", block_size},
                      {"vocab_size", vocab_size},
                      {"layer_norm_epsilon", ln_eps},
                      {"activation_function", act_name(act)},
                      {"bias", bias},
                      {"tie_word_embeddings", true}};
  // qkv's own keys, written only when they differ from GPT-2 (plain GPT-2 files stay plain).
  if (pos != PosEncoding::Learned) j["pos"] = pos_name(pos);
  if (pos == PosEncoding::Rope) j["rope_theta"] = rope_theta;
  if (norm_pos == NormPos::Post) j["norm_position"] = "post";
  if (n_inner) j["n_inner"] = n_inner;
  if (n_kv_head && n_kv_head != n_head) j["n_kv_head"] = n_kv_head;
  if (!causal) {
    j["arch"] = "encoder";
    j["architectures"] = {"QkvEncoder"};
  }
  if (mask_token_id >= 0) j["mask_token_id"] = mask_token_id;
  if (!labels.empty()) {
    nlohmann::json m = nlohmann::json::object();
    for (size_t i = 0; i < labels.size(); ++i) m[std::to_string(i)] = labels[i];
    j["id2label"] = m;
  }
  if (!mlp) j["mlp"] = false;
  if (norm == Norm::RMSNorm) j["norm"] = "rmsnorm";
  if (attention != AttnKind::Dense) j["attention"] = attention_name(attention);
  if (attention == AttnKind::Sliding) j["window"] = window;
  if (attention == AttnKind::BlockSparse) {
    j["attn_block"] = attn_block;
    j["attn_local_blocks"] = attn_local_blocks;
    j["attn_global"] = attn_global;
  }
  return j;
}

AttnKind GPTConfig::attention_from_name(const std::string& name, const std::string& where) {
  if (name == "dense") return AttnKind::Dense;
  if (name == "sliding") return AttnKind::Sliding;
  if (name == "block_sparse") return AttnKind::BlockSparse;
  if (name == "linear") return AttnKind::Linear;
  QKV_CHECK(false, "{}: unknown attention '{}' (dense, sliding, block_sparse, linear)", where,
            name);
  return AttnKind::Dense;
}

const char* GPTConfig::attention_name(AttnKind k) {
  switch (k) {
    case AttnKind::Sliding:
      return "sliding";
    case AttnKind::BlockSparse:
      return "block_sparse";
    case AttnKind::Linear:
      return "linear";
    default:
      return "dense";
  }
}

PosEncoding GPTConfig::pos_from_name(const std::string& name, const std::string& where) {
  if (name == "learned") return PosEncoding::Learned;
  if (name == "sinusoidal") return PosEncoding::Sinusoidal;
  if (name == "rope") return PosEncoding::Rope;
  if (name == "alibi") return PosEncoding::Alibi;
  QKV_CHECK(false, "{}: unknown position encoding '{}' (learned, sinusoidal, rope, alibi)", where,
            name);
  return PosEncoding::Learned;
}

const char* GPTConfig::pos_name(PosEncoding p) {
  switch (p) {
    case PosEncoding::Sinusoidal:
      return "sinusoidal";
    case PosEncoding::Rope:
      return "rope";
    case PosEncoding::Alibi:
      return "alibi";
    default:
      return "learned";
  }
}

int GPTConfig::max_positions() const {
  const bool bounded_state = attention == AttnKind::Sliding || attention == AttnKind::Linear;
  return pos != PosEncoding::Learned && bounded_state ? std::numeric_limits<int32_t>::max()
                                                      : block_size;
}

GPTConfig GPTConfig::from_json(const nlohmann::json& j, const std::string& where) {
  QKV_CHECK(j.is_object(), "{}: expected a JSON object", where);
  GPTConfig c;
  auto get_int = [&](const char* key, int* out, bool required) {
    if (!j.contains(key)) {
      QKV_CHECK(!required, "{}: missing key '{}'", where, key);
      return;
    }
    const auto& v = j[key];
    QKV_CHECK(v.is_number_integer(), "{}: '{}' must be an integer, got {}", where, key, v.dump());
    int64_t x = v.get<int64_t>();
    QKV_CHECK(x >= 0 && x <= (int64_t(1) << 30), "{}: '{}' = {} is out of range", where, key, x);
    *out = int(x);
  };
  get_int("n_layer", &c.n_layer, true);
  get_int("n_head", &c.n_head, true);
  get_int("n_embd", &c.n_embd, true);
  get_int("vocab_size", &c.vocab_size, true);
  if (j.contains("n_positions"))
    get_int("n_positions", &c.block_size, true);
  else
    get_int("n_ctx", &c.block_size, true);
  if (j.contains("layer_norm_epsilon")) {
    QKV_CHECK(j["layer_norm_epsilon"].is_number(), "{}: 'layer_norm_epsilon' must be a number",
              where);
    c.ln_eps = j["layer_norm_epsilon"].get<float>();
  }
  if (j.contains("bias")) {
    QKV_CHECK(j["bias"].is_boolean(), "{}: 'bias' must be true or false", where);
    c.bias = j["bias"].get<bool>();
  }
  if (j.contains("activation_function")) {
    QKV_CHECK(j["activation_function"].is_string(), "{}: 'activation_function' must be a string",
              where);
    std::string act = j["activation_function"].get<std::string>();
    QKV_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "relu" || act == "swiglu",
              "{}: activation_function '{}' is not supported (gelu_new, relu, swiglu)", where, act);
    c.act = act == "relu" ? Act::ReLU : act == "swiglu" ? Act::SwiGLU : Act::GeluTanh;
  }
  auto get_string = [&](const char* key) {
    QKV_CHECK(j[key].is_string(), "{}: '{}' must be a string, got {}", where, key, j[key].dump());
    return j[key].get<std::string>();
  };
  if (j.contains("norm")) {
    const std::string n = get_string("norm");
    QKV_CHECK(n == "layernorm" || n == "rmsnorm", "{}: unknown norm '{}' (layernorm, rmsnorm)",
              where, n);
    c.norm = n == "rmsnorm" ? Norm::RMSNorm : Norm::LayerNorm;
  }
  if (j.contains("mlp")) {
    QKV_CHECK(j["mlp"].is_boolean(), "{}: 'mlp' must be true or false", where);
    c.mlp = j["mlp"].get<bool>();
  }
  if (j.contains("pos")) c.pos = pos_from_name(get_string("pos"), where);
  if (j.contains("rope_theta")) {
    QKV_CHECK(j["rope_theta"].is_number(), "{}: 'rope_theta' must be a number", where);
    c.rope_theta = j["rope_theta"].get<float>();
  }
  if (j.contains("norm_position")) {
    const std::string n = get_string("norm_position");
    QKV_CHECK(n == "pre" || n == "post", "{}: unknown norm_position '{}' (pre, post)", where, n);
    c.norm_pos = n == "post" ? NormPos::Post : NormPos::Pre;
  }
  if (j.contains("n_inner") && !j["n_inner"].is_null()) get_int("n_inner", &c.n_inner, false);
  get_int("n_kv_head", &c.n_kv_head, false);
  if (j.contains("arch")) {
    const std::string a = get_string("arch");
    QKV_CHECK(a != "encoder-decoder",
              "{}: an encoder-decoder model; this command reads decoder and encoder models "
              "(train, generate and eval read encoder-decoders)",
              where);
    QKV_CHECK(a == "decoder" || a == "encoder", "{}: unknown arch '{}' (decoder, encoder)", where,
              a);
    c.causal = a == "decoder";
  }
  if (j.contains("mask_token_id") && !j["mask_token_id"].is_null()) {
    QKV_CHECK(j["mask_token_id"].is_number_integer(), "{}: 'mask_token_id' must be an integer",
              where);
    c.mask_token_id = j["mask_token_id"].get<int>();
  }
  if (j.contains("id2label")) {
    const auto& m = j["id2label"];
    QKV_CHECK(m.is_object(), "{}: 'id2label' must be an object {{\"0\": label, ...}}", where);
    c.labels.assign(m.size(), "");
    for (auto it = m.begin(); it != m.end(); ++it) {
      size_t idx = 0;
      try {
        size_t used = 0;
        idx = std::stoul(it.key(), &used);
        QKV_CHECK(used == it.key().size(), "");
      } catch (const std::exception&) {
        QKV_CHECK(false, "{}: id2label key '{}' is not an index", where, it.key());
      }
      QKV_CHECK(idx < m.size() && c.labels[idx].empty() && it.value().is_string() &&
                    !it.value().get<std::string>().empty(),
                "{}: id2label must map 0..{} to distinct non-empty strings (at key '{}')", where,
                m.size() - 1, it.key());
      c.labels[idx] = it.value().get<std::string>();
    }
  }
  if (j.contains("attention")) c.attention = attention_from_name(get_string("attention"), where);
  get_int("window", &c.window, false);
  get_int("attn_block", &c.attn_block, false);
  get_int("attn_local_blocks", &c.attn_local_blocks, false);
  get_int("attn_global", &c.attn_global, false);
  c.validate(where);
  return c;
}

GPTConfig GPTConfig::preset(const std::string& name) {
  GPTConfig c;
  auto set = [&](int l, int h, int e, int bs, int v, bool bias) {
    c.n_layer = l;
    c.n_head = h;
    c.n_embd = e;
    c.block_size = bs;
    c.vocab_size = v;
    c.bias = bias;
  };
  if (name == "gpt2")
    set(12, 12, 768, 1024, 50257, true);
  else if (name == "gpt2-medium")
    set(24, 16, 1024, 1024, 50257, true);
  else if (name == "gpt2-large")
    set(36, 20, 1280, 1024, 50257, true);
  else if (name == "gpt2-xl")
    set(48, 25, 1600, 1024, 50257, true);
  else if (name == "shakespeare-char")
    set(6, 6, 384, 256, 65, false);
  else if (name == "baby")
    set(4, 4, 128, 64, 65, false);
  else {
    std::string list;
    for (const auto& n : preset_names()) list += (list.empty() ? "" : ", ") + n;
    QKV_CHECK(false, "unknown preset '{}' (known: {})", name, list);
  }
  return c;
}

std::vector<std::string> GPTConfig::preset_names() {
  return {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "shakespeare-char", "baby"};
}

}  // namespace qkv

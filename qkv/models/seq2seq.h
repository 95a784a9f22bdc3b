// The encoder-decoder Transformer ("Attention Is All You Need"): an encoder stack reads the
// source bidirectionally; a decoder stack reads the target so far (causal self-attention),
// attends to the encoder's output (cross-attention), and predicts the next target token. By
// default as the paper built it: post-LayerNorm sublayers, sinusoidal positions, a ReLU MLP, and
// one embedding shared by the source, the target and the output projection.
//
// Every sublayer is one shape, norm(x + f(x)) (post) or x + f(norm(x)) (pre, then a final norm
// per stack), with f = self-attention, cross-attention or MLP; forward and backward are written
// once for that shape. Padded batches carry source and target lengths: padded source keys are
// never attended (encoder and cross-attention), padded target keys neither, and their targets
// never count. Inference keeps, per decoder layer, a self-attention KV cache per beam and the
// cross-attention keys/values of the source, computed once and shared by every beam.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qkv/core/aligned.h"
#include "qkv/core/tensor.h"
#include "qkv/models/gpt_config.h"
#include "qkv/nn/linear.h"

namespace qkv {

struct Seq2SeqConfig {
  // Sizes and block options shared with the GPT config (n_layer = encoder layers, block_size =
  // the longest source and the longest target, with BOS/EOS). Supported: pos learned|sinusoidal,
  // norm layernorm|rmsnorm placed pre|post, activation gelu|relu|swiglu, n_inner, bias.
  GPTConfig base;
  int n_dec_layer = 0;                       // decoder layers (0: as many as the encoder)
  bool shared_embeddings = true;             // one (V, C) table for source, target and output
  int bos_token_id = -1, eos_token_id = -1;  // decoder start / end ids

  int dec_layers() const { return n_dec_layer ? n_dec_layer : base.n_layer; }
  void validate(const std::string& where = "config") const;
  int64_t num_params() const;
  // config.json: the GPT keys plus "arch": "encoder-decoder", "n_decoder_layer",
  // "shared_embeddings", "bos_token_id", "eos_token_id".
  nlohmann::json to_json() const;
  static Seq2SeqConfig from_json(const nlohmann::json& j, const std::string& where);
  // The original Transformer's choices at a size that learns the synthetic tasks in minutes:
  // "seq2seq" (3+3 layers, 4 heads, 128 wide, post-LN, sinusoidal, ReLU, shared embeddings).
  static Seq2SeqConfig preset(const std::string& name);
};

// True if the config.json in `dir` describes an encoder-decoder.
bool is_seq2seq_dir(const std::string& dir);

class Seq2Seq {
 public:
  struct Param {
    std::string name;
    Shape shape;
    size_t offset, numel;
    bool decay;
  };

  explicit Seq2Seq(const Seq2SeqConfig& config);
  const Seq2SeqConfig& config() const { return cfg_; }
  const std::vector<Param>& params() const { return params_; }
  size_t num_params() const { return n_params_; }
  float* param_data() { return params_buf_.data(); }
  const float* param_data() const { return params_buf_.data(); }
  float* grad_data();
  void init_weights(uint64_t seed);  // N(0, 0.02), residual projections scaled, norms 1
  void zero_grad();
  void set_matmul_precision(nn::Precision p) { prec_ = p; }

  // Teacher-forced training pass. src (B, S) with src_len (B) in [1, S]; tgt_in (B, T) (BOS then
  // the target) with tgt_len (B) in [1, T]; targets (B, T) (the target then EOS; < 0 ignored;
  // past tgt_len ignored) may be null. label_smoothing eps: the target distribution is
  // (1 - eps) onehot + eps / V. Returns the mean loss over counted targets.
  float forward(const int32_t* src, const int32_t* src_len, int S, const int32_t* tgt_in,
                const int32_t* tgt_len, int T, const int32_t* targets, int B,
                float label_smoothing = 0.0f);
  const float* logits() const { return logits_.data(); }  // (B, T, V) of the last forward
  void backward(float loss_scale = 1.0f);

  // Inference, one source at a time. encode() runs the encoder over src (n tokens) and caches
  // every decoder layer's cross-attention keys and values; start(beams) empties the decoder's
  // self-attention caches for `beams` hypotheses; step(tokens) feeds one token per beam at the
  // next position and returns their logits (beams, V); reorder(parent) makes beam i continue
  // beam parent[i]'s cache (beam search).
  void encode(const int32_t* src, int n);
  void start(int beams);
  const float* step(const int32_t* tokens);
  void reorder(const int32_t* parent);
  int decoded() const { return dec_pos_; }

  void save(const std::string& path) const;
  void load(const std::string& path);
  static Seq2Seq from_dir(const std::string& dir);
  void save_dir(const std::string& dir) const;

 private:
  static constexpr size_t kNone = size_t(-1);
  struct NormW {
    size_t w = kNone, b = kNone;
  };
  // One sublayer's weights: attention (self: qkv (C, 3C); cross: q (C, C) and kv (C, 2C)) or MLP.
  struct Sub {
    enum Kind { Self, Cross, Mlp } kind;
    NormW norm;
    size_t w1 = kNone, b1 = kNone;  // self c_attn | cross q_proj | mlp c_fc
    size_t w2 = kNone, b2 = kNone;  // cross kv_proj
    size_t wo = kNone, bo = kNone;  // c_proj
  };
  // One sublayer's activations for a (rows = B*T) pass.
  struct SubActs {
    AlignedVector<float> ln, mean, rstd, a, b, kv, lse, res, out;
  };
  struct Stack {
    std::vector<std::vector<Sub>> layers;  // per layer: its sublayers in order
    NormW final_norm;                      // pre-norm stacks
    size_t wte = kNone, wpe = kNone;
  };

  size_t add(const std::string& name, Shape shape, bool decay);
  Sub make_sub(const std::string& prefix, Sub::Kind kind);
  void norm_fwd(float* out, float* mean, float* rstd, const float* in, const NormW& w,
                int64_t rows) const;
  void norm_bwd(float* dinp, const float* dout, const float* in, const NormW& w, const float* mean,
                const float* rstd, int64_t rows);
  // f of a sublayer: h (rows, C) -> y (rows, C) into acts.res; cross-attention reads mem.
  void sub_f(const Sub& s, SubActs& a, const float* h, int B, int T, const int32_t* lens,
             const float* mem, int S, const int32_t* mem_lens, bool causal);
  // The whole sublayer: returns its output (acts.out or acts.res).
  const float* sub_forward(const Sub& s, SubActs& a, const float* x, int B, int T,
                           const int32_t* lens, const float* mem, int S, const int32_t* mem_lens,
                           bool causal);
  // dx (rows, C) = d(sublayer input) from dout; cross-attention adds into dmem.
  void sub_backward(const Sub& s, SubActs& a, const float* x, const float* dout, float* dx, int B,
                    int T, const int32_t* lens, const float* mem, float* dmem, int S,
                    const int32_t* mem_lens, bool causal);
  void embed(float* out, const int32_t* ids, int B, int T, const Stack& st, int pos0) const;
  void embed_backward(const float* dx, const int32_t* ids, int B, int T, const Stack& st);
  void plan(std::vector<std::vector<SubActs>>& acts, const Stack& st, int rows, int B, int T,
            int S);

  Seq2SeqConfig cfg_;
  nn::Precision prec_ = nn::Precision::F32;
  std::vector<Param> params_;
  size_t n_params_ = 0;
  AlignedVector<float> params_buf_, grads_buf_;
  Stack enc_, dec_;

  // Training pass state.
  int B_ = 0, S_ = 0, T_ = 0;
  std::vector<int32_t> src_, tgt_, targets_, src_len_, tgt_len_;
  std::vector<std::vector<SubActs>> enc_acts_, dec_acts_;
  AlignedVector<float> enc_x_, dec_x_, enc_out_, enc_mean_, enc_rstd_, dec_out_, dec_mean_,
      dec_rstd_, logits_, dlogits_scratch_, lse_;
  AlignedVector<float> g_a_, g_b_, g_c_, g_mem_, g_x_;  // gradient scratch
  float inv_count_ = 0, smoothing_ = 0;
  bool have_targets_ = false;

  // Inference state.
  int src_n_ = 0, beams_ = 0, dec_pos_ = 0;
  AlignedVector<float> mem_, cross_kv_, self_kv_, step_x_, step_ln_, step_a_, step_b_, step_c_,
      step_logits_, step_tmp_;
  std::vector<float> reorder_tmp_, step_stats_;
};

}  // namespace qkv

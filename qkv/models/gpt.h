// GPT (decoder-only Transformer), as GPT-2: token + learned position embeddings, pre-LayerNorm
// blocks x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)) with a 4x GELU (tanh) MLP, final ln_f, and
// the LM head tied to the token embedding. Parameters, gradients and activations each live in
// one buffer planned up front, so a training step allocates nothing. The backward pass is
// written per layer (no dynamic tape): see docs/architecture.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/tensor.h"
#include "qkv/models/gpt_config.h"
#include "qkv/models/hooks.h"
#include "qkv/nn/linear.h"

namespace qkv {

class GPT {
 public:
  // One parameter tensor: its Hugging Face GPT-2 name (without the "transformer." prefix),
  // shape, offset into the flat parameter buffer, and whether AdamW decays it (2-D weights).
  struct Param {
    std::string name;
    Shape shape;
    size_t offset;
    size_t numel;
    bool decay;
  };

  explicit GPT(const GPTConfig& config);

  const GPTConfig& config() const { return config_; }
  const std::vector<Param>& params() const { return params_; }
  size_t num_params() const { return n_params_; }
  float* param_data() { return params_buf_.data(); }
  const float* param_data() const { return params_buf_.data(); }
  float* grad_data();  // allocated on first use
  // A model for data-parallel training: the same configuration and matmul precision, its own
  // activations and gradient buffer, and this model's parameters, read in place (not copied),
  // so updates to them are seen at once. A replica only runs forward() and backward(); this
  // model must stay where it is (not moved or destroyed) while the replica is used.
  GPT make_replica() const;
  float* param(const std::string& name);

  // GPT-2 init: N(0, 0.02), residual projections N(0, 0.02/sqrt(2 n_layer)), biases 0,
  // LayerNorm gains 1. Deterministic in `seed`.
  void init_weights(uint64_t seed);

  // ids, targets (B,T) with T <= config().max_positions(); targets may be null (no loss), and
  // target < 0 is ignored. Returns the mean loss over counted targets (0 without targets).
  // lens (B), optional: sequence b holds lens[b] tokens (1..T) and the rest of its row is
  // padding, which no query attends to and whose targets do not count (padded positions still
  // get logits; ignore them).
  float forward(const int32_t* ids, const int32_t* targets, int B, int T,
                const int32_t* lens = nullptr);
  // Classification (config().labels): the mean of each sequence's final hidden states (after
  // ln_f; padding excluded) through the classifier -> class_logits() (B, num_labels). labels
  // (B) may be null (no loss); label < 0 is ignored. Returns the mean loss. backward() follows.
  float forward_classify(const int32_t* ids, const int32_t* lens, const int32_t* labels, int B,
                         int T);
  const float* class_logits() const { return cls_logits_.data(); }
  // Logits (B,T,V) of the last forward. Valid until backward() (which overwrites them).
  const float* logits() const { return acts_.data() + act_logits_; }
  // Accumulates loss_scale * d(mean loss)/d(params) into the gradient buffer (loss_scale 1/N
  // over N micro-batches makes their sum the gradient of the whole batch's mean). Needs forward
  // with targets.
  void backward(float loss_scale = 1.0f);
  void zero_grad();

  // Hooks run inside forward() at their sites (hooks.h); null removes them. The hooks object
  // must outlive its use. A forward pass whose hooks changed activations is for analysis:
  // backward() refuses it.
  void set_hooks(const Hooks* hooks) { hooks_ = hooks && !hooks->empty() ? hooks : nullptr; }
  bool has_hooks() const { return hooks_ != nullptr; }
  // The exact attention probabilities of the last forward pass for (layer, batch item, head):
  // (T, T) row-major into out, recomputed from that pass's queries, keys and per-row normaliser
  // (log-sum-exp), so the fast kernel itself never stores them. Rows of masked keys are 0.
  void attention_map(int layer, int b, int head, float* out) const;
  // The final norm (ln_f) of rows (rows, C) into out, as the model's head applies it.
  void final_norm(const float* x, int rows, float* out) const;
  int last_batch() const { return B_; }
  int last_seq_len() const { return T_; }

  // Precision of the training matmuls (forward() and backward()): F32, or BF16 = mixed
  // precision (bf16 products, fp32 accumulation, fp32 master weights and everything else).
  void set_matmul_precision(nn::Precision p) { prec_ = p; }
  nn::Precision matmul_precision() const { return prec_; }

  // Inference with a KV cache, batch 1. reset_cache() starts a new sequence; extend() runs
  // n tokens at positions cache_len()..cache_len()+n-1 and returns the logits (V) of the last.
  // The cache follows the attention rule: dense and block-sparse keep every position (up to
  // block_size); sliding keeps a rolling window of the last `window` keys, and linear attention
  // a fixed (HS x HS + HS) state per head, so with sinusoidal positions those two generate
  // sequences of any length (config().max_positions()).
  void reset_cache();
  int cache_len() const { return cache_len_; }
  const float* extend(const int32_t* ids, int n);
  // Sum over i in [0, n-1) of -log p(ids[i+1] | ids[0..i]) on the inference path (the weights
  // set_inference_weights chose), from an empty cache; n <= block_size. Resets the cache.
  double nll_sum(const int32_t* ids, int n);

  // Weights of the inference path (extend, nll_sum). F32: the parameters as they are. BF16 and
  // INT8: a packed copy of every matmul weight, the tied token embedding / LM head included
  // (INT8: one scale per 32 inputs of each output, see cpu::PackedMatrix); LayerNorms, biases
  // and position embeddings stay fp32. Training always uses the fp32 parameters.
  enum class Weights { F32, BF16, INT8 };
  static Weights weights_from_name(const std::string& name);  // "fp32", "bf16", "int8"
  static const char* weights_name(Weights w);
  void set_inference_weights(Weights w);
  Weights inference_weights() const { return weights_; }
  // Bytes of weights one decoded token reads (the packed matrices, or all fp32 parameters).
  size_t inference_weight_bytes() const;
  // False after loading an int8 checkpoint: the fp32 matmul weights are not there to train.
  bool has_fp32_weights() const { return fp32_weights_; }

  // Hugging Face GPT-2 tensor names and layout ("transformer."-prefixed on save). A model with
  // INT8 inference weights saves its matmul weights as I8 tensors (HF shape) with a BF16
  // "<name>_scale" tensor beside each (blocks of 32 along the input axis); BF16 saves every
  // tensor as BF16 (a standard HF checkpoint). load() reads all three.
  void save(const std::string& path) const;
  // allow_missing_head: a checkpoint without classifier tensors leaves the (initialised) head as
  // it is, so a pretrained model can start a classification fine-tune.
  void load(const std::string& path, bool allow_missing_head = false);
  // Reads a model directory: config.json + model.safetensors.
  static GPT from_dir(const std::string& dir);
  void save_dir(const std::string& dir) const;

 private:
  void plan_activations(int B, int T);
  // Checks and embeds the batch, runs every block; returns the last block's output (B*T, C).
  const float* forward_trunk(const int32_t* ids, int B, int T, const int32_t* lens);
  // What the heads read: ln_f(x) into the activations (pre-norm), or x itself (post-norm).
  const float* head_input(const float* x);
  // The blocks' backward from d(last block output) in the gradient scratch's dres slot.
  void backward_trunk();
  void plan_cache();
  // The inference scratch's arrays (rows for up to block_size tokens) inside infer_.
  struct InferScratch {
    float *x, *ln, *atty, *tmp, *qkv, *fch, *fch_act, *logits;
  };
  InferScratch infer_scratch();  // allocates infer_ on first use
  // out (rows, C) = what the LM head reads: ln_f(x), or x itself for post-norm models.
  void head_norm(float* out, const float* x, int rows) const;
  // Runs n tokens through the layers with the KV cache; returns their final hidden states
  // (n, C) before ln_f, in the inference scratch.
  float* forward_cached(const int32_t* ids, int n);
  // logits (rows, V) = ln_f-normed rows (rows, C) @ wte^T, with the inference weights.
  void lm_head(const float* x, int rows, float* logits);
  // (out, n) = inp (n, K) @ matrix + bias, with the inference weights: slot is the index in
  // packed_ (layer * 4 + {0 c_attn, 1 attn c_proj, 2 c_fc, 3 mlp c_proj}; attention-only
  // models: layer * 2 + {0, 1}). With gelu_out, also gelu_out = gelu(out) (tanh form). Bias
  // and GELU run in the product's epilogue, on the columns each thread just wrote.
  void infer_linear(float* out, const float* inp, int n, int slot, size_t w_off, size_t b_off,
                    int K, int N, float* gelu_out = nullptr);
  // The matmul weights the inference path can pack: offset, K, N, and whether the stored
  // tensor is (N, K) (the token embedding) rather than HF's (K, N).
  struct MatrixSlot {
    size_t param;  // index in params_
    int K, N;
    bool trans;
  };
  std::vector<MatrixSlot> matrix_slots() const;
  // The configured norm and activation, with the kernels' signatures (RMSNorm ignores mean and
  // bias; its parameters have no bias).
  void norm_forward(float* out, float* mean, float* rstd, const float* in, const float* w,
                    const float* b, int64_t N, int C, float eps) const;
  // res += add, then out = norm(res): one pass (cpu::residual_layernorm_forward / rmsnorm).
  void residual_norm_forward(float* res, const float* add, float* out, float* mean, float* rstd,
                             const float* w, const float* b, int64_t N, int C, float eps) const;
  void norm_backward(float* dinp, float* dw, float* db, const float* dout, const float* in,
                     const float* w, const float* mean, const float* rstd, int64_t N, int C) const;
  // The MLP activation over rows: in (rows, fc_width) -> out (rows, mlp_hidden).
  void act_forward(float* out, const float* in, int64_t rows) const;
  void act_backward(float* dinp, const float* in, const float* dout, int64_t rows) const;
  // Backward of the MLP's output layer and its activation: dfch (rows, fc_width) from dout
  // (rows, C); dw/db accumulate. GELU runs in the GEMM's epilogue; other activations use
  // dfch_act (rows, mlp_hidden) as scratch.
  void mlp_proj_backward(float* dfch, float* dfch_act, float* dw, float* db, const float* dout,
                         const float* fch_act, const float* fch, const float* w,
                         int64_t rows) const;
  // Layer l's output in the training activations (res3 pre-norm; ln_2, or ln_1 without MLP,
  // post-norm).
  float* layer_output(int l);
  // Kernel arguments for the packed projection qkv (B, T, qkv_width): the attention rule,
  // grouped-query mapping and ALiBi slopes of the config.
  AttnArgs<float> self_attention_args(const float* qkv, float* out, float* lse, int B, int T) const;
  // Rotary positions on the query and key heads of rows (rows, qkv_width) at positions
  // pos0 + r % T (inverse: the backward pass).
  void rotate_qk(float* qkv, int64_t rows, int T, int64_t pos0, bool inverse) const;

  // The parameters the passes read: this model's, or the primary's for a replica.
  const float* pdata() const { return shared_ ? shared_->params_buf_.data() : params_buf_.data(); }

  GPTConfig config_;
  const GPT* shared_ = nullptr;  // the model whose parameters a replica reads
  nn::Precision prec_ = nn::Precision::F32;
  const Hooks* hooks_ = nullptr;
  bool hooked_pass_ = false;  // the last forward ran hooks
  std::vector<Param> params_;
  size_t n_params_ = 0;
  AlignedVector<float> params_buf_, grads_buf_;

  // Per-layer parameter offsets.
  struct LayerOffsets {
    size_t ln1_w, ln1_b, attn_w, attn_b, attnproj_w, attnproj_b, ln2_w, ln2_b, fc_w, fc_b, fcproj_w,
        fcproj_b;
  };
  std::vector<LayerOffsets> layer_;
  std::vector<float> alibi_;  // ALiBi slopes per head (empty unless pos is alibi)
  size_t wte_ = 0, wpe_ = 0, lnf_w_ = 0, lnf_b_ = 0, cls_w_ = 0, cls_b_ = 0;
  static constexpr size_t kNone = size_t(-1);

  // Training activations for (B_, T_).
  int B_ = 0, T_ = 0;
  AlignedVector<float> acts_;
  std::vector<int32_t> ids_, targets_, lens_;
  bool have_targets_ = false;
  bool have_lens_ = false;
  bool classify_ = false;  // the last forward was forward_classify
  std::vector<float> cls_pooled_, cls_logits_, cls_dlogits_;  // (B, C), (B, K), (B, K)
  std::vector<int32_t> cls_labels_;
  float inv_count_ = 0;
  size_t act_encoded_ = 0, act_layer_ = 0, act_layer_stride_ = 0, act_lnf_ = 0, act_lnf_mean_ = 0,
         act_lnf_rstd_ = 0, act_logits_ = 0, act_losses_ = 0, act_lse_ = 0, act_dlosses_ = 0;
  AlignedVector<float> grad_acts_;

  // KV cache and inference scratch (batch 1).
  int cache_len_ = 0;
  int cache_base_ = 0;       // absolute position of cache slot 0 (sliding: the window rolls)
  int cache_cap_ = 0;        // slots per layer
  AlignedVector<float> kv_;  // (L, 2, cache_cap_, C); linear attention: (L, NH, HS*HS + HS) state
  AlignedVector<float> pos_table_;  // sinusoidal positions (T_, C) for forward()
  AlignedVector<float> infer_;
  AlignedVector<float> score_;  // nll_sum: logits, lse and losses of 32 positions  // scratch for
                                // up to block_size tokens
  Weights weights_ = Weights::F32;
  bool fp32_weights_ = true;
  std::vector<cpu::PackedMatrix> packed_;  // matrix_slots() order; the LM head last
};

}  // namespace qkv

// AdamW with nanoGPT's parameter groups (weight decay on 2-D weights only), global-norm gradient
// clipping, and the warmup + cosine learning-rate schedule.
#pragma once

#include <cstdint>
#include <vector>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/aligned.h"
#include "qkv/models/gpt.h"

namespace qkv {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

// One trainable tensor: its values, its gradient, and whether it decays.
struct ParamRef {
  float* p;
  const float* g;
  size_t n;
  bool decay;
};

class AdamW {
 public:
  // Every parameter of the model (moments laid out like the model's flat parameter buffer).
  AdamW(GPT& model, const AdamWConfig& cfg);
  // Only these tensors (frozen layers left out, adapters added): moments packed in this order.
  AdamW(std::vector<ParamRef> params, const AdamWConfig& cfg);
  // One update with learning rate `lr` from the model's gradient buffer times grad_scale (the
  // clipping factor, applied inside the update: no separate pass over the gradients);
  // increments step().
  void step(float lr, float grad_scale = 1.0f);
  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }
  AlignedVector<float>& m() { return m_; }
  AlignedVector<float>& v() { return v_; }

 private:
  struct Slot {
    ParamRef ref;
    size_t offset;  // into m_, v_
  };
  std::vector<Slot> slots_;
  GPT* model_ = nullptr;  // whole-model mode: pointers taken at each step (the model may move)
  AdamWConfig cfg_;
  AlignedVector<float> m_, v_;
  std::vector<cpu::AdamWSegment> segments_;  // the model's tensors (kept: no allocation per step)
  int64_t t_ = 0;
};

// Global L2 norm of all gradients; if it exceeds max_norm (> 0), scales them to max_norm, as
// torch.nn.utils.clip_grad_norm_ (factor max_norm / (norm + 1e-6)). Returns the norm before.
float clip_grad_norm(float* grads, size_t n, float max_norm);
// The same factor without touching the gradients: min(1, max_norm / (norm + 1e-6)) (1 when
// max_norm is 0), for AdamW::step(lr, factor). *norm receives the norm if non-null.
float grad_clip_factor(const float* grads, size_t n, float max_norm, float* norm = nullptr);
// The same over a set of tensors (the trainable ones).
float grad_clip_factor(const std::vector<ParamRef>& params, float max_norm, float* norm = nullptr);

// nanoGPT's get_lr: linear warmup lr*(it+1)/(warmup+1), then cosine decay to min_lr at
// decay_iters, min_lr after.
float lr_schedule(int64_t it, float lr, float min_lr, int64_t warmup, int64_t decay_iters);

}  // namespace qkv

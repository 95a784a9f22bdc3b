#include "qkv/train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "qkv/backend/cpu/cpu.h"

namespace qkv {

AdamW::AdamW(GPT& model, const AdamWConfig& cfg)
    : model_(&model), cfg_(cfg), m_(model.num_params(), 0.0f), v_(model.num_params(), 0.0f) {}

AdamW::AdamW(std::vector<ParamRef> params, const AdamWConfig& cfg) : cfg_(cfg) {
  size_t o = 0;
  for (const ParamRef& r : params) {
    slots_.push_back({r, o});
    o += (r.n + 15) / 16 * 16;
  }
  m_.assign(o, 0.0f);
  v_.assign(o, 0.0f);
}

void AdamW::step(float lr, float grad_scale) {
  ++t_;
  const float bc1 = 1.0f - std::pow(cfg_.beta1, float(t_));
  const float bc2 = 1.0f - std::pow(cfg_.beta2, float(t_));
  if (model_) {
    // All tensors in one call (one parallel region): they share the flat buffers.
    segments_.clear();
    for (const auto& prm : model_->params())
      segments_.push_back(
          {int64_t(prm.offset), int64_t(prm.numel), prm.decay ? cfg_.weight_decay : 0.0f});
    cpu::adamw_update_segments(model_->param_data(), model_->grad_data(), m_.data(), v_.data(),
                               segments_.data(), int(segments_.size()), lr, cfg_.beta1, cfg_.beta2,
                               cfg_.eps, bc1, bc2, grad_scale);
    return;
  }
  for (const Slot& s : slots_)
    cpu::adamw_update(s.ref.p, s.ref.g, m_.data() + s.offset, v_.data() + s.offset,
                      int64_t(s.ref.n), lr, cfg_.beta1, cfg_.beta2, cfg_.eps,
                      s.ref.decay ? cfg_.weight_decay : 0.0f, bc1, bc2, grad_scale);
}

float grad_clip_factor(const std::vector<ParamRef>& params, float max_norm, float* norm_out) {
  double ss = 0;
  for (const ParamRef& r : params) ss += cpu::sum_squares(r.g, int64_t(r.n));
  const float norm = float(std::sqrt(ss));
  if (norm_out) *norm_out = norm;
  if (max_norm <= 0) return 1.0f;
  return std::min(1.0f, max_norm / (norm + 1e-6f));
}

float grad_clip_factor(const float* grads, size_t n, float max_norm, float* norm_out) {
  const float norm = float(std::sqrt(cpu::sum_squares(grads, int64_t(n))));
  if (norm_out) *norm_out = norm;
  if (max_norm <= 0) return 1.0f;
  return std::min(1.0f, max_norm / (norm + 1e-6f));
}

float clip_grad_norm(float* grads, size_t n, float max_norm) {
  const float norm = float(std::sqrt(cpu::sum_squares(grads, int64_t(n))));
  if (max_norm > 0) {
    const float coef = max_norm / (norm + 1e-6f);
    if (coef < 1.0f) cpu::scale(grads, int64_t(n), coef);
  }
  return norm;
}

float lr_schedule(int64_t it, float lr, float min_lr, int64_t warmup, int64_t decay_iters) {
  if (it < warmup) return lr * float(it + 1) / float(warmup + 1);
  if (it > decay_iters) return min_lr;
  const double ratio = double(it - warmup) / double(std::max<int64_t>(1, decay_iters - warmup));
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));
  return float(min_lr + coeff * (lr - min_lr));
}

}  // namespace qkv

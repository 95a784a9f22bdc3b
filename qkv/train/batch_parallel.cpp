#include "qkv/train/batch_parallel.h"

#include <omp.h>

#include <algorithm>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/error.h"

namespace qkv {

int batch_parallel_ways(const std::string& mode, const GPTConfig& config, int batch_size,
                        int threads) {
  QKV_CHECK(mode == "auto" || mode == "batch" || mode == "ops",
            "--parallel {}: expected auto, batch or ops", mode);
  if (mode == "ops" || threads <= 1) return 1;
  if (mode == "batch") {
    QKV_CHECK(batch_size >= threads,
              "--parallel batch: a batch of {} sequences cannot give each of {} threads one "
              "(raise --batch-size or use --parallel ops)",
              batch_size, threads);
    return threads;
  }
  // auto: batch measured faster at every size tried on 2 cores (BENCHMARKS.md, "Batch-parallel
  // training": baby +6%, GPT-2 124M +2%, bf16 baby +30%), given equal shares (a thread with one
  // sequence more than the other leaves it waiting at the end of the step) and memory for the
  // replicas' gradients (one fp32 copy of the parameters each), here at most 2 GiB.
  const bool even = batch_size % threads == 0 || batch_size >= 4 * threads;
  const double extra_bytes = double(threads - 1) * 4.0 * double(config.num_params());
  return batch_size >= threads && even && extra_bytes <= double(int64_t(2) << 30) ? threads : 1;
}

BatchParallel::BatchParallel(GPT& model, int ways) : model_(&model), ways_(ways) {
  QKV_CHECK(ways >= 1, "[batch-parallel] ways must be at least 1, not {}", ways);
  replicas_.reserve(size_t(ways - 1));
  for (int i = 1; i < ways; ++i) replicas_.push_back(model.make_replica());
  losses_.assign(size_t(ways), 0.0);
  counts_.assign(size_t(ways), 0);
}

void BatchParallel::zero_grad() {
  if (ways_ == 1) {
    model_->zero_grad();
    return;
  }
  // Each thread clears the buffer it is about to fill: it stays in that core's cache.
#pragma omp parallel num_threads(ways_)
  {
    const int t = omp_get_thread_num();
    GPT& m = t == 0 ? *model_ : replicas_[size_t(t - 1)];
    std::fill_n(m.grad_data(), m.num_params(), 0.0f);
  }
}

float BatchParallel::run(const int32_t* ids, const int32_t* targets, int B, int T, bool backward,
                         float loss_scale) {
  QKV_CHECK(B >= ways_, "[batch-parallel] a batch of {} sequences for {} threads", B, ways_);
  // Hooks would run on the model's share only: analysis runs on the model itself.
  QKV_CHECK(!model_->has_hooks(), "[batch-parallel] the model has hooks set; run it directly");
  if (backward) QKV_CHECK(targets != nullptr, "[batch-parallel] backward needs targets");
  // Counted targets per share, so each share's mean loss gets its weight in the batch's.
  int64_t total = 0;
  for (int i = 0; i < ways_; ++i) {
    const int64_t b0 = int64_t(B) * i / ways_, b1 = int64_t(B) * (i + 1) / ways_;
    int64_t n = 0;
    if (targets)
      for (int64_t k = b0 * T; k < b1 * T; ++k) n += targets[k] >= 0;
    counts_[size_t(i)] = n;
    total += n;
  }
  for (GPT& r : replicas_) r.set_matmul_precision(model_->matmul_precision());
  // An error inside a thread cannot leave the parallel region: keep the first and rethrow.
  std::string error;
#pragma omp parallel num_threads(ways_)
  {
    // Every kernel this thread calls runs on this thread alone.
    omp_set_num_threads(1);
    const int t = omp_get_thread_num();
    GPT& m = t == 0 ? *model_ : replicas_[size_t(t - 1)];
    const int b0 = int(int64_t(B) * t / ways_), b1 = int(int64_t(B) * (t + 1) / ways_);
    const size_t off = size_t(b0) * size_t(T);
    try {
      const float l = m.forward(ids + off, targets ? targets + off : nullptr, b1 - b0, T);
      losses_[size_t(t)] = l;
      if (backward && total > 0)
        m.backward(loss_scale * float(double(counts_[size_t(t)]) / double(total)));
    } catch (const std::exception& e) {
#pragma omp critical(qkv_batch_parallel_error)
      if (error.empty()) error = e.what();
    }
  }
  if (!error.empty()) throw Error(error);
  if (total == 0) return 0.0f;
  double sum = 0;
  for (int i = 0; i < ways_; ++i) sum += losses_[size_t(i)] * double(counts_[size_t(i)]);
  return float(sum / double(total));
}

float BatchParallel::forward_backward(const int32_t* ids, const int32_t* targets, int B, int T,
                                      float loss_scale) {
  if (ways_ == 1) {
    const float l = model_->forward(ids, targets, B, T);
    model_->backward(loss_scale);
    return l;
  }
  return run(ids, targets, B, T, true, loss_scale);
}

float BatchParallel::forward(const int32_t* ids, const int32_t* targets, int B, int T) {
  if (ways_ == 1) return model_->forward(ids, targets, B, T);
  return run(ids, targets, B, T, false, 1.0f);
}

void BatchParallel::reduce_grads() {
  float* g = model_->grad_data();
  const int64_t n = int64_t(model_->num_params());
  for (GPT& r : replicas_) cpu::residual_forward(g, g, r.grad_data(), n);
}

}  // namespace qkv

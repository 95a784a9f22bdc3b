// Data parallelism across the threads of one machine: each thread runs forward and backward on
// its share of the batch's sequences with its own copy of the activations and gradients (a
// GPT::make_replica of the model, reading the model's parameters in place), then the gradients
// are summed into the model's. For small models this beats splitting each operation across the
// threads: their matmuls are too small to keep two cores busy without waiting at every op's
// barrier, and a thread alone keeps its activations in its own cache. It costs one gradient
// buffer and one set of activations per extra thread. docs/architecture.md has the numbers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qkv/models/gpt.h"

namespace qkv {

// Which parallelism a training run uses: "ops" (every operation split across the threads),
// "batch" (BatchParallel), or "auto". batch_parallel_ways resolves it: the number of ways to
// split each batch (1 = ops) for a model, micro-batch size and thread count. "auto" picks batch
// when every thread gets an equal share of the sequences (or at least 4 each) and the replicas'
// gradient buffers take at most 2 GiB.
int batch_parallel_ways(const std::string& mode, const GPTConfig& config, int batch_size,
                        int threads);

class BatchParallel {
 public:
  // ways >= 1 threads, each with one share; ways - 1 replicas are made. The model must outlive
  // this object and stay where it is, and have no hooks set while ways > 1.
  BatchParallel(GPT& model, int ways);

  int ways() const { return ways_; }
  // Zeroes the model's gradients and the replicas'.
  void zero_grad();
  // Forward and backward of the batch ids, targets (B, T) (target < 0 not counted): thread i
  // takes sequences [B*i/ways, B*(i+1)/ways). Each thread accumulates loss_scale times its
  // share of the gradient of the batch's mean loss (its share weighted by its counted targets)
  // into its own buffer; reduce_grads() sums them into the model's. Returns the batch's mean
  // loss. Results depend on ways (the order of the sums), not on anything else.
  float forward_backward(const int32_t* ids, const int32_t* targets, int B, int T,
                         float loss_scale = 1.0f);
  // The batch's mean loss, no gradients (evaluation).
  float forward(const int32_t* ids, const int32_t* targets, int B, int T);
  // model gradient += every replica's gradient (in replica order), over all threads.
  void reduce_grads();

 private:
  float run(const int32_t* ids, const int32_t* targets, int B, int T, bool backward,
            float loss_scale);

  GPT* model_;
  int ways_;
  std::vector<GPT> replicas_;  // ways_ - 1
  std::vector<double> losses_;
  std::vector<int64_t> counts_;
};

}  // namespace qkv

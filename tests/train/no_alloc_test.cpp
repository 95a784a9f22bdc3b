// "No heap allocation per training step": after a warm-up step, a whole step (batch sampling,
// forward, backward, clipping, AdamW; ops- or batch-parallel) must not call operator new. Counted
// by replacing the global operator new in this test binary; the counter is only armed around the
// measured steps.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "qkv/data/dataset.h"
#include "qkv/infer/generator.h"
#include "qkv/models/gpt.h"
#include "qkv/train/batch_parallel.h"
#include "qkv/train/optimizer.h"
#include "tests/test_util.h"

namespace {
std::atomic<bool> g_armed{false};
std::atomic<long> g_allocs{0};
}  // namespace

void* operator new(size_t n) {
  if (g_armed.load(std::memory_order_relaxed)) g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace qkv {
namespace {

// Both ways of using the threads: ways 1 (every op split) and 2 (batch-parallel, with a model
// replica; 5 sequences give uneven shares).
TEST(NoAlloc, TrainingStepAllocatesNothing) {
  for (int ways : {1, 2}) {
    // 80 positions: more than one attention block.
    GPT model(test::tiny_config(2, 4, 64, 80, 71));
    model.init_weights(1);
    AdamW opt(model, {});
    BatchParallel bp(model, ways);
    std::vector<int32_t> data(5000);
    for (size_t i = 0; i < data.size(); ++i) data[i] = int32_t((i * 7919) % 71);
    const int B = 5, T = 80;
    std::vector<int32_t> x(B * T), y(B * T);
    auto step = [&](int it) {
      sample_batch(data, B, T, 1, uint64_t(it), x.data(), y.data());
      bp.zero_grad();
      bp.forward_backward(x.data(), y.data(), B, T);
      bp.reduce_grads();
      clip_grad_norm(model.grad_data(), model.num_params(), 1.0f);
      opt.step(lr_schedule(it, 1e-3f, 1e-4f, 2, 10));
    };
    step(0);  // plans the buffers
    g_allocs = 0;
    g_armed = true;
    for (int it = 1; it < 4; ++it) step(it);
    g_armed = false;
    EXPECT_EQ(g_allocs.load(), 0) << "operator new calls during 3 training steps, " << ways
                                  << " way(s)";
  }
}

TEST(NoAlloc, DecodeStepAllocatesNothing) {
  GPT model(test::tiny_config(2, 2, 32, 64, 50));
  model.init_weights(2);
  // With every weight format: the packed GEMVs and int8 activation buffers are reused too.
  for (auto w : {GPT::Weights::F32, GPT::Weights::BF16, GPT::Weights::INT8}) {
    model.set_inference_weights(w);
    std::vector<int32_t> prompt = {1, 2, 3, 4};
    model.reset_cache();
    model.extend(prompt.data(), 4);
    int32_t next = 5;
    model.extend(&next, 1);  // the first decode step sizes the per-thread scratch
    g_allocs = 0;
    g_armed = true;
    for (int i = 0; i < 10; ++i) model.extend(&next, 1);
    g_armed = false;
    EXPECT_EQ(g_allocs.load(), 0) << "operator new calls during 10 decode steps, "
                                  << GPT::weights_name(w) << " weights";
  }
}

}  // namespace
}  // namespace qkv

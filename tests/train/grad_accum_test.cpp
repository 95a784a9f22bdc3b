// Gradient accumulation (issue #5): N micro-batches with backward(1/N) give the gradient of the
// whole batch (within float error), and `train` with --grad-accum N equals a run with an N-times
// larger batch: same losses, same weights after a few AdamW steps.
#include <gtest/gtest.h>

#include <cmath>

#include "qkv/core/error.h"
#include "qkv/core/rng.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/gpt.h"
#include "qkv/train/trainer.h"
#include "tests/test_paths.h"
#include "tests/test_util.h"
#include "tests/train/tiny_train.h"

namespace qkv {
namespace {

TEST(GradAccum, MicroBatchesSumToTheBatchGradient) {
  const GPTConfig c = test::tiny_config(2, 2, 32, 16, 50);
  const int B = 8, T = 16;
  Rng rng(3, 1);
  std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
  for (auto& v : x) v = int32_t(rng.below(50));
  for (auto& v : y) v = int32_t(rng.below(50));
  GPT whole(c), parts(c);
  whole.init_weights(11);
  parts.init_weights(11);
  whole.zero_grad();
  const float loss = whole.forward(x.data(), y.data(), B, T);
  whole.backward();
  for (int g : {2, 4, 8}) {
    parts.zero_grad();
    double l = 0;
    for (int i = 0; i < g; ++i) {
      const size_t off = size_t(i) * (B / g) * T;
      l += parts.forward(x.data() + off, y.data() + off, B / g, T) / g;
      parts.backward(1.0f / float(g));
    }
    EXPECT_NEAR(l, loss, 1e-5 * loss) << g << " micro-batches";
    EXPECT_LE(test::rel_err(parts.grad_data(), whole.grad_data(), parts.num_params()), 1e-5)
        << g << " micro-batches";
  }
}

TrainOptions small_run(int batch, int accum, const std::string& tag) {
  TrainOptions o = test::tiny_train_options(tag);
  o.batch_size = batch;
  o.grad_accum = accum;
  o.max_iters = 5;
  o.eval_interval = 5;
  return o;
}

TEST(GradAccum, TrainingEqualsALargerBatch) {
  const TrainOptions big = small_run(8, 1, "accum_big"), acc = small_run(2, 4, "accum_acc");
  const TrainResult rb = train(big), ra = train(acc);
  EXPECT_NEAR(ra.last_loss, rb.last_loss, 1e-4 * rb.last_loss);
  // (Validation losses differ: evaluation draws --batch-size sequences per batch.)
  SafetensorsFile fb(big.out + "/model.safetensors"), fa(acc.out + "/model.safetensors");
  const auto names = fb.names();
  ASSERT_EQ(names, fa.names());
  for (const auto& n : names) {
    Tensor tb = fb.get(n), ta = fa.get(n);
    const float* pb = static_cast<const float*>(tb.raw());
    const float* pa = static_cast<const float*>(ta.raw());
    // AdamW divides by sqrt(v): weights agree to ~1e-4 of their scale after 5 steps.
    EXPECT_LE(test::rel_err(pa, pb, size_t(tb.numel())), 2e-4) << n;
  }
  // And it is not the same run as a batch of 2 without accumulation.
  const TrainResult r2 = train(small_run(2, 1, "accum_small"));
  EXPECT_GT(std::abs(r2.last_loss - rb.last_loss), 1e-3);
}

TEST(GradAccum, BadValueIsRefused) {
  TrainOptions o = small_run(2, 0, "accum_bad");
  try {
    train(o);
    ADD_FAILURE() << "grad_accum 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--grad-accum must be in [1, 4096]"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace qkv

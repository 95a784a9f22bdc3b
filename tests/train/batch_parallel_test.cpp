// Batch-parallel training (issue #4): threads that each run forward and backward on their share
// of the sequences, with model replicas, must give the gradient and loss of one model on the
// whole batch (within float error: only the order of the sums differs), for uneven shares and
// shares with different numbers of counted targets; the same bits for any process thread
// count; and `train --parallel batch` must follow the same path as `--parallel ops`.
#include "qkv/train/batch_parallel.h"

#include <gtest/gtest.h>

#include "qkv/core/error.h"
#include "qkv/core/parallel.h"
#include "qkv/core/rng.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/gpt.h"
#include "qkv/train/optimizer.h"
#include "qkv/train/trainer.h"
#include "tests/test_paths.h"
#include "tests/test_util.h"
#include "tests/train/tiny_train.h"

namespace qkv {
namespace {

struct Batch {
  std::vector<int32_t> x, y;
};

// Random tokens; every `skip`-th target is ignored (-1), more of them in the first sequences, so
// the shares count different numbers of targets.
Batch random_batch(int B, int T, int V, uint64_t seed) {
  Rng rng(seed, 2);
  Batch b{std::vector<int32_t>(size_t(B) * T), std::vector<int32_t>(size_t(B) * T)};
  for (auto& v : b.x) v = int32_t(rng.below(uint64_t(V)));
  for (size_t i = 0; i < b.y.size(); ++i) {
    const int seq = int(i / size_t(T));
    b.y[i] = i % size_t(2 + seq) == 0 ? -1 : int32_t(rng.below(uint64_t(V)));
  }
  return b;
}

class BatchParallelShapes : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(BatchParallelShapes, LossAndGradientsOfOneModel) {
  const auto [B, ways] = GetParam();
  const int T = 24, V = 53;
  GPTConfig c = test::tiny_config(2, 4, 32, T, V);
  const Batch b = random_batch(B, T, V, uint64_t(B * 10 + ways));
  GPT ref(c), model(c);
  ref.init_weights(5);
  model.init_weights(5);
  ref.zero_grad();
  const float ref_loss = ref.forward(b.x.data(), b.y.data(), B, T);
  ref.backward(0.5f);

  BatchParallel bp(model, ways);
  EXPECT_EQ(bp.ways(), ways);
  bp.zero_grad();
  const float loss = bp.forward_backward(b.x.data(), b.y.data(), B, T, 0.5f);
  bp.reduce_grads();
  EXPECT_NEAR(loss, ref_loss, 2e-6 * ref_loss);
  EXPECT_LE(test::rel_err(model.grad_data(), ref.grad_data(), model.num_params()), 2e-5);
  EXPECT_NEAR(bp.forward(b.x.data(), b.y.data(), B, T), ref_loss, 2e-6 * ref_loss);
}

// Even and uneven shares (5 sequences over 2 threads: 2 + 3), more threads than cores.
INSTANTIATE_TEST_SUITE_P(Shapes, BatchParallelShapes,
                         ::testing::Values(std::make_tuple(4, 2), std::make_tuple(5, 2),
                                           std::make_tuple(7, 3), std::make_tuple(3, 3),
                                           std::make_tuple(6, 1)));

TEST(BatchParallel, AccumulatesMicroBatchesAndSeesParameterUpdates) {
  const int B = 4, T = 16, V = 40;
  GPTConfig c = test::tiny_config(2, 2, 32, T, V);
  GPT ref(c), model(c);
  ref.init_weights(9);
  model.init_weights(9);
  AdamW ref_opt(ref, {}), opt(model, {});
  BatchParallel bp(model, 2);
  for (int step = 0; step < 3; ++step) {
    ref.zero_grad();
    bp.zero_grad();
    for (int g = 0; g < 2; ++g) {
      const Batch b = random_batch(B, T, V, uint64_t(100 + step * 2 + g));
      ref.forward(b.x.data(), b.y.data(), B, T);
      ref.backward(0.5f);
      bp.forward_backward(b.x.data(), b.y.data(), B, T, 0.5f);
    }
    bp.reduce_grads();
    ASSERT_LE(test::rel_err(model.grad_data(), ref.grad_data(), model.num_params()), 1e-4)
        << "step " << step;
    // The replica reads the updated parameters in place: the next step's gradients still match.
    ref_opt.step(1e-3f);
    opt.step(1e-3f);
  }
  EXPECT_LE(test::rel_err(model.param_data(), ref.param_data(), model.num_params()), 1e-4);
}

TEST(BatchParallel, SameBitsForAnyProcessThreadCount) {
  const int B = 6, T = 20, V = 31;
  GPTConfig c = test::tiny_config(2, 2, 48, T, V);
  const Batch b = random_batch(B, T, V, 77);
  std::vector<std::vector<float>> grads;
  std::vector<float> losses;
  const int threads = num_threads();
  for (int t : {1, 2, 1}) {
    set_num_threads(t);
    GPT model(c);
    model.init_weights(3);
    BatchParallel bp(model, 2);
    bp.zero_grad();
    losses.push_back(bp.forward_backward(b.x.data(), b.y.data(), B, T));
    bp.reduce_grads();
    grads.emplace_back(model.grad_data(), model.grad_data() + model.num_params());
  }
  set_num_threads(threads);
  for (size_t i = 1; i < grads.size(); ++i) {
    EXPECT_EQ(losses[i], losses[0]);
    EXPECT_EQ(grads[i], grads[0]) << "run " << i;
  }
}

TEST(BatchParallel, Bf16ReplicasFollowTheModelsPrecision) {
  const int B = 4, T = 16, V = 40;
  GPTConfig c = test::tiny_config(1, 2, 32, T, V);
  const Batch b = random_batch(B, T, V, 5);
  GPT ref(c), model(c);
  ref.init_weights(2);
  model.init_weights(2);
  BatchParallel bp(model, 2);  // replicas made before the precision changes
  ref.set_matmul_precision(nn::Precision::BF16);
  model.set_matmul_precision(nn::Precision::BF16);
  ref.zero_grad();
  const float ref_loss = ref.forward(b.x.data(), b.y.data(), B, T);
  ref.backward();
  bp.zero_grad();
  const float loss = bp.forward_backward(b.x.data(), b.y.data(), B, T);
  bp.reduce_grads();
  // Row-independent bf16 products: each sequence sees the same roundings either way.
  EXPECT_NEAR(loss, ref_loss, 2e-6 * ref_loss);
  EXPECT_LE(test::rel_err(model.grad_data(), ref.grad_data(), model.num_params()), 2e-5);
}

TEST(BatchParallel, WaysRuleAndErrors) {
  const GPTConfig baby = GPTConfig::preset("baby"), gpt2 = GPTConfig::preset("gpt2");
  EXPECT_EQ(batch_parallel_ways("auto", baby, 12, 2), 2);
  EXPECT_EQ(batch_parallel_ways("auto", baby, 1, 2), 1);  // not a sequence per thread
  EXPECT_EQ(batch_parallel_ways("auto", baby, 12, 1), 1);
  EXPECT_EQ(batch_parallel_ways("auto", gpt2, 4, 2), 2);
  EXPECT_EQ(batch_parallel_ways("auto", baby, 3, 2), 1);  // shares of 1 and 2
  EXPECT_EQ(batch_parallel_ways("auto", baby, 9, 2), 2);  // 4 and 5: close enough
  EXPECT_EQ(batch_parallel_ways("auto", GPTConfig::preset("gpt2-large"), 4, 2), 1);  // 3 GiB
  EXPECT_EQ(batch_parallel_ways("ops", baby, 12, 2), 1);
  EXPECT_EQ(batch_parallel_ways("batch", gpt2, 4, 2), 2);
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] {
              batch_parallel_ways("batch", baby, 1, 2);
            }).find("a batch of 1 sequences cannot give each of 2 threads one"),
            std::string::npos);
  EXPECT_NE(message([&] {
              batch_parallel_ways("rows", baby, 4, 2);
            }).find("--parallel rows: expected auto, batch or ops"),
            std::string::npos);
  GPT model(test::tiny_config(1, 2, 16, 8, 20));
  BatchParallel bp(model, 3);
  std::vector<int32_t> x(16, 1);
  EXPECT_NE(message([&] {
              bp.forward_backward(x.data(), x.data(), 2, 8);
            }).find("a batch of 2 sequences for 3 threads"),
            std::string::npos);
  // A bad token in one share is reported as the model reports it.
  BatchParallel bp2(model, 2);
  x[12] = 99;
  const std::string bad = message([&] { bp2.forward(x.data(), nullptr, 2, 8); });
  EXPECT_NE(bad.find("99"), std::string::npos) << bad;
  x[12] = 1;
  Hooks hooks;
  hooks.add({HookPoint::Embed, -1}, [](float*, int, int, int) {});
  model.set_hooks(&hooks);
  EXPECT_NE(message([&] { bp2.forward(x.data(), nullptr, 2, 8); }).find("has hooks set"),
            std::string::npos);
  model.set_hooks(nullptr);
  EXPECT_EQ(message([&] { bp2.forward(x.data(), nullptr, 2, 8); }), "no error");
}

TrainOptions run(const std::string& parallel, const std::string& tag) {
  TrainOptions o = test::tiny_train_options(tag);
  o.batch_size = 4;
  o.max_iters = 6;
  o.eval_interval = 3;
  o.parallel = parallel;
  return o;
}

TEST(BatchParallel, TrainingMatchesOpsParallel) {
  const int threads = num_threads();
  set_num_threads(2);  // batch needs two threads even in the one-thread test run
  const TrainOptions ops = run("ops", "bp_ops"), batch = run("batch", "bp_batch");
  const TrainResult ro = train(ops), rb = train(batch);
  set_num_threads(threads);
  EXPECT_NEAR(rb.last_loss, ro.last_loss, 1e-4 * ro.last_loss);
  EXPECT_NEAR(rb.last_val_loss, ro.last_val_loss, 1e-4 * ro.last_val_loss);
  SafetensorsFile fo(ops.out + "/model.safetensors"), fb(batch.out + "/model.safetensors");
  for (const auto& n : fo.names()) {
    Tensor to = fo.get(n), tb = fb.get(n);
    EXPECT_LE(test::rel_err(static_cast<const float*>(tb.raw()),
                            static_cast<const float*>(to.raw()), size_t(to.numel())),
              2e-4)
        << n;
  }
}

}  // namespace
}  // namespace qkv

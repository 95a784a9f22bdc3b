// Mixed precision: the baby GPT trained 200 steps with bf16 matmuls (fp32 accumulation and
// master weights) must track fp32 training: validation loss within 0.02 (issue #4's bound).
#include <gtest/gtest.h>

#include <cmath>

#include "qkv/backend/cpu/cpu.h"
#include "qkv/models/gpt_config.h"
#include "qkv/train/trainer.h"
#include "tests/test_paths.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

TrainResult run(const std::string& dtype) {
  TrainOptions o;
  o.data = test::shared_data() + "/tinyshakespeare.txt";
  o.out = test::temp_dir("bf16_" + dtype);
  o.model = GPTConfig::preset("baby");
  o.max_iters = 200;
  o.eval_interval = 200;
  o.eval_iters = 40;
  o.dtype = dtype;
  o.quiet = true;
  return train(o);
}

TEST(Bf16Training, TracksFp32) {
  const TrainResult f = run("fp32"), b = run("bf16");
  std::printf("val loss after 200 steps: fp32 %.4f, bf16 %.4f (AMX %s)\n", f.last_val_loss,
              b.last_val_loss, cpu::amx_available() ? "on" : "off");
  EXPECT_LT(f.last_val_loss, 2.7f);  // it did learn (4.2 at the start)
  EXPECT_NEAR(b.last_val_loss, f.last_val_loss, 0.02);
  EXPECT_NE(b.last_val_loss, f.last_val_loss);  // and the bf16 path really ran
}

// --dtype bf16 holds for a model loaded with --model too (it once came back with fp32 matmuls).
TEST(Bf16Training, AppliesToAModelLoadedWithModel) {
  TrainOptions base;
  base.data = test::shared_data() + "/tinyshakespeare.txt";
  base.out = test::temp_dir("bf16_base");
  base.model = test::tiny_config(2, 2, 32, 32, 1);
  base.max_iters = 3;
  base.eval_interval = 3;
  base.eval_iters = 1;
  base.quiet = true;
  train(base);
  auto continued = [&](const std::string& dtype) {
    TrainOptions o = base;
    o.init_from = base.out;
    o.out = test::temp_dir("bf16_cont_" + dtype);
    o.dtype = dtype;
    return train(o);
  };
  const TrainResult f = continued("fp32"), b = continued("bf16");
  EXPECT_NE(b.last_loss, f.last_loss);
  EXPECT_NEAR(b.last_loss, f.last_loss, 0.02);
}

}  // namespace
}  // namespace qkv

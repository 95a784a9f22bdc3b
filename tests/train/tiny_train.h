// A tiny language-model training run on tiny Shakespeare (2 layers, 2 heads, 32 wide, context
// 32, quiet), for tests that compare two ways of training the same model; each test sets the
// batch, the steps and what it compares.
#pragma once

#include <string>

#include "qkv/train/trainer.h"
#include "tests/test_paths.h"

namespace qkv::test {

inline TrainOptions tiny_train_options(const std::string& tag) {
  TrainOptions o;
  o.data = shared_data() + "/tinyshakespeare.txt";
  o.out = temp_dir(tag);
  o.model.n_layer = 2;
  o.model.n_head = 2;
  o.model.n_embd = 32;
  o.model.block_size = 32;
  o.warmup_iters = 2;
  o.eval_iters = 2;
  o.quiet = true;
  return o;
}

}  // namespace qkv::test

// The encoder (bidirectional) and padded batches:
//  - parity with PyTorch's own nn.TransformerEncoderLayer stack (tools/reference/encoder_ref.py)
//    on a padded batch, pre- and post-norm, masked-LM and classification heads: logits, loss and
//    every gradient within 1e-4 relative;
//  - padding: each sequence of a padded batch gives the same logits and the same gradients of its
//    own loss as the sequence run alone, within 1e-5, for the decoder, the encoder and the
//    classifier, over the block options.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "qkv/core/error.h"
#include "qkv/core/rng.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/gpt.h"
#include "tests/test_paths.h"
#include "tests/test_util.h"

namespace qkv {
namespace {

struct EncCase {
  const char* name;
  std::string args;
};
void PrintTo(const EncCase& c, std::ostream* os) { *os << c.name; }

class EncoderParity : public ::testing::TestWithParam<EncCase> {};

TEST_P(EncoderParity, MatchesTorchTransformerEncoderLayer) {
  const EncCase& pc = GetParam();
  const std::string dir = test::temp_dir(std::string("encoder_") + pc.name);
  const std::string cmd = "/usr/bin/python3 " + test::source_dir() +
                          "/tools/reference/encoder_ref.py parity --out " + dir + " " + pc.args;
  ASSERT_EQ(test::run(cmd), 0) << "reference failed: " << cmd;
  GPT m = GPT::from_dir(dir + "/model");
  ASSERT_FALSE(m.config().causal);
  SafetensorsFile in(dir + "/inputs.safetensors"), ex(dir + "/expected.safetensors");
  Tensor x = in.get("x"), y = in.get("y"), lens = in.get("lens"), labels = in.get("labels");
  const int B = int(x.dim(0)), T = int(x.dim(1)), V = m.config().vocab_size;
  const int32_t* L = lens.data<int32_t>();
  float loss = 0;
  if (m.config().num_labels() > 0) {
    loss = m.forward_classify(x.data<int32_t>(), L, labels.data<int32_t>(), B, T);
    Tensor ref = ex.get("class_logits");
    EXPECT_LE(test::rel_err(m.class_logits(), ref.f32(), size_t(ref.numel())), 1e-4);
  } else {
    loss = m.forward(x.data<int32_t>(), y.data<int32_t>(), B, T, L);
    Tensor ref = ex.get("logits");
    // Only the real tokens' logits are defined alike (padded queries are not compared).
    for (int b = 0; b < B; ++b)
      EXPECT_LE(test::rel_err(m.logits() + size_t(b) * T * V, ref.f32() + size_t(b) * T * V,
                              size_t(L[b]) * V),
                1e-4)
          << "logits of sequence " << b;
  }
  const float ref_loss = ex.get("loss").f32()[0];
  EXPECT_NEAR(loss, ref_loss, 1e-4 * std::abs(ref_loss));
  m.zero_grad();
  m.backward();
  for (const auto& p : m.params()) {
    Tensor g = ex.get("grad." + p.name);
    ASSERT_EQ(size_t(g.numel()), p.numel) << p.name;
    // Softmax ignores the key bias (a constant per score row): its true gradient is 0, and both
    // sides hold only rounding noise there; compare the query and value parts.
    if (p.name.find("c_attn.bias") != std::string::npos) {
      const size_t C = p.numel / 3;
      EXPECT_LE(test::rel_err(m.grad_data() + p.offset, g.f32(), C), 1e-4) << p.name;
      EXPECT_LE(test::rel_err(m.grad_data() + p.offset + 2 * C, g.f32() + 2 * C, C), 1e-4)
          << p.name;
      continue;
    }
    EXPECT_LE(test::rel_err(m.grad_data() + p.offset, g.f32(), p.numel), 1e-4)
        << "grad of " << p.name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Configs, EncoderParity,
    ::testing::Values(EncCase{"pre_gelu_mlm", "--seed 1"},
                      EncCase{"post_relu_mlm", "--seed 2 --norm-position post --activation relu"},
                      EncCase{"pre_sinusoidal_classify",
                              "--seed 3 --task classify --pos sinusoidal --num-labels 4"},
                      EncCase{"post_gelu_classify_long",
                              "--seed 4 --task classify --norm-position post --n-layer 3 --seq 70 "
                              "--block-size 80 --batch 4"}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- padded == alone ----

std::vector<int32_t> random_ids(size_t n, int V, uint64_t seed) {
  Rng rng(seed, 5);
  std::vector<int32_t> v(n);
  for (auto& t : v) t = int32_t(rng.below(uint64_t(V)));
  return v;
}

std::vector<float> grads_of(GPT& m) {
  return std::vector<float>(m.grad_data(), m.grad_data() + m.num_params());
}

// For every sequence b of a padded batch: its logits (or class logits) and the gradient of a
// loss on it alone equal those of the sequence run by itself.
void expect_padded_equals_alone(GPT& m, bool classify) {
  const int B = 4, T = 29, V = m.config().vocab_size;
  const std::vector<int32_t> lens = {29, 17, 1, 8};
  auto x = random_ids(size_t(B) * T, V, 1), y = random_ids(size_t(B) * T, V, 2);
  const std::vector<int32_t> labels = {1, 0, 2, 1};
  for (int b = 0; b < B; ++b) {
    SCOPED_TRACE("sequence " + std::to_string(b) + " of length " + std::to_string(lens[b]));
    const int n = lens[size_t(b)];
    // Alone.
    std::vector<int32_t> xa(x.begin() + b * T, x.begin() + b * T + n);
    std::vector<int32_t> ya(y.begin() + b * T, y.begin() + b * T + n);
    m.zero_grad();
    std::vector<float> alone;
    if (classify) {
      m.forward_classify(xa.data(), nullptr, &labels[size_t(b)], 1, n);
      alone.assign(m.class_logits(), m.class_logits() + m.config().num_labels());
    } else {
      m.forward(xa.data(), ya.data(), 1, n);
      alone.assign(m.logits(), m.logits() + size_t(n) * V);
    }
    m.backward();
    const auto g_alone = grads_of(m);
    // In the padded batch, with only sequence b's loss counted.
    std::vector<int32_t> yb(y.size(), -1), lb(size_t(B), -1);
    std::copy(y.begin() + b * T, y.begin() + b * T + T, yb.begin() + b * T);  // padding: ignored
    lb[size_t(b)] = labels[size_t(b)];
    m.zero_grad();
    const float* got;
    if (classify) {
      m.forward_classify(x.data(), lens.data(), lb.data(), B, T);
      got = m.class_logits() + size_t(b) * m.config().num_labels();
    } else {
      m.forward(x.data(), yb.data(), B, T, lens.data());
      got = m.logits() + size_t(b) * T * V;
    }
    EXPECT_LE(test::rel_err(got, alone.data(), alone.size()), 1e-5) << "outputs";
    m.backward();
    const auto g = grads_of(m);
    for (const auto& p : m.params())
      EXPECT_LE(test::rel_err(g.data() + p.offset, g_alone.data() + p.offset, p.numel), 1e-5)
          << "grad of " << p.name;
  }
}

struct PadCase {
  const char* name;
  bool causal;
  AttnKind kind;
  PosEncoding pos;
  GPTConfig::NormPos norm_pos;
  int n_kv_head;
};

TEST(Padding, PaddedBatchEqualsEachSequenceAlone) {
  using NP = GPTConfig::NormPos;
  for (const PadCase& k : {
           PadCase{"decoder", true, AttnKind::Dense, PosEncoding::Learned, NP::Pre, 0},
           PadCase{"decoder_rope_gqa_sliding", true, AttnKind::Sliding, PosEncoding::Rope, NP::Pre,
                   1},
           PadCase{"encoder", false, AttnKind::Dense, PosEncoding::Learned, NP::Pre, 0},
           PadCase{"encoder_post_alibi", false, AttnKind::Dense, PosEncoding::Alibi, NP::Post, 2},
           PadCase{"encoder_sliding_sinusoidal", false, AttnKind::Sliding, PosEncoding::Sinusoidal,
                   NP::Pre, 0},
           PadCase{"encoder_linear", false, AttnKind::Linear, PosEncoding::Learned, NP::Pre, 0},
       }) {
    SCOPED_TRACE(k.name);
    GPTConfig c = test::tiny_config(2, 4, 32, 32, 23);
    c.causal = k.causal;
    c.attention = k.kind;
    if (k.kind == AttnKind::Sliding) c.window = 6;
    c.pos = k.pos;
    c.norm_pos = k.norm_pos;
    c.n_kv_head = k.n_kv_head;
    c.labels = {"a", "b", "c"};
    GPT m(c);
    m.init_weights(3);
    expect_padded_equals_alone(m, false);
    expect_padded_equals_alone(m, true);
  }
}

TEST(Padding, BadLengthsAndEncoderGenerationAreClearErrors) {
  GPTConfig c = test::tiny_config(1, 2, 16, 16, 11);
  c.causal = false;
  GPT m(c);
  m.init_weights(1);
  const std::vector<int32_t> x(32, 1), bad = {0, 16}, over = {17, 3};
  EXPECT_THROW(m.forward(x.data(), nullptr, 2, 16, bad.data()), Error);
  EXPECT_THROW(m.forward(x.data(), nullptr, 2, 16, over.data()), Error);
  EXPECT_THROW(m.forward_classify(x.data(), nullptr, nullptr, 2, 16), Error);  // no head
  try {
    m.extend(x.data(), 3);
    FAIL() << "an encoder has no generation";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("encoder"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qkv

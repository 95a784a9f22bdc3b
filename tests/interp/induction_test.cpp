// The induction experiment at a small, fast setting: an attention-only 2-layer model on repeated
// random segments must show in-context learning (the score falls by at least 1 nat) and at least
// one head that matches prefixes (> 0.5) by the end; the measurements are checked against their
// definitions on the way (the score is late minus early loss, scores are probabilities).
#include "qkv/interp/induction.h"

#include <gtest/gtest.h>

#include <cmath>

namespace qkv {
namespace {

TEST(Induction, AttentionOnlyModelGrowsInductionHeads) {
  interp::InductionOptions o;  // the defaults, fewer steps
  o.steps = 2500;
  o.eval_interval = 250;
  const auto run = interp::run_induction(o);
  ASSERT_EQ(run.curve.size(), size_t(o.steps / o.eval_interval + 1));
  for (const auto& p : run.curve) {
    EXPECT_NEAR(p.icl_score, p.late_loss - p.early_loss, 1e-12);
    ASSERT_EQ(p.prefix.size(), size_t(o.n_layer * o.n_head));
    for (double s : p.prefix) {
      EXPECT_GE(s, 0.0);
      EXPECT_LE(s, 1.0 + 1e-6);
    }
  }
  // Untrained, nothing is predictable from the context: both losses are near log(vocab).
  EXPECT_NEAR(run.curve.front().early_loss, std::log(double(o.vocab)), 0.2);
  EXPECT_NEAR(run.curve.front().icl_score, 0.0, 0.2);
  EXPECT_GE(run.icl_drop, 1.0) << "in-context score did not fall by 1 nat";
  double best = 0;
  for (double s : run.curve.back().prefix) best = std::max(best, s);
  EXPECT_GT(best, 0.5) << "no head matches prefixes";
  EXPECT_FALSE(run.induction_heads.empty());
  // Induction heads need a previous-token head below them: none can be in layer 0.
  for (int h : run.induction_heads) EXPECT_GE(h / o.n_head, 1) << run.head_name(h);
  EXPECT_GT(run.phase_change_step, 0);
  const std::string html = interp::induction_html({run});
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("Induction heads at the end"), std::string::npos);
}

}  // namespace
}  // namespace qkv

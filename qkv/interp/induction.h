// In-context learning, emerging (Olsson et al. 2022, "In-context Learning and Induction Heads"):
// small models trained on sequences of random tokens that repeat within the context, measured as
// they train: the in-context learning score (loss late in the context minus loss early), each
// head's prefix-matching and copying scores, and the training loss.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace qkv::interp {

struct InductionOptions {
  int n_layer = 2, n_head = 4, n_embd = 64, vocab = 128, seq_len = 64, batch = 32;
  int steps = 4000, eval_interval = 100, eval_batch = 32;
  float lr = 1e-3f;
  uint64_t seed = 1;
  bool mlp = false;  // false: attention-only blocks
  // Each sequence is random tokens in which one random segment (length in [T/4, 7T/16]) appears
  // twice, separated by a random gap: inside the second copy the next token can be read off
  // the first, and the distance varies, so only finding the earlier occurrence of the current
  // token works (an induction head), not a fixed position.
};

struct InductionPoint {
  int step = 0;
  double seconds = 0;
  double train_loss = 0;
  double early_loss = 0, late_loss = 0;  // next-token loss inside the segment's first / second copy
  double icl_score = 0;                  // late - early (nats; negative = learning in context)
  std::vector<double> prefix, copying;   // per head (layer-major)
};

struct InductionRun {
  InductionOptions opt;
  std::vector<InductionPoint> curve;
  double icl_drop = 0;               // first ICL score minus the last (nats)
  int phase_change_step = -1;        // where the ICL score fell fastest
  std::vector<int> induction_heads;  // layer * n_head + head, prefix score > 0.5 at the end
  std::string head_name(int i) const;
};

// Trains and measures; `progress` (if set) is called after every evaluation.
InductionRun run_induction(const InductionOptions& o,
                           const std::function<void(const InductionPoint&)>& progress = {});

// The report: an SVG per run (losses and ICL score; prefix matching per head; copying per head)
// inside one self-contained HTML page naming the induction heads, plus the numbers as JSON.
std::string induction_html(const std::vector<InductionRun>& runs);
std::string induction_json(const std::vector<InductionRun>& runs);

}  // namespace qkv::interp

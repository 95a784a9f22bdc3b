#include "qkv/infer/seq2seq_decode.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "qkv/core/error.h"

namespace qkv {

namespace {
// log_softmax of one row into out (double).
void log_softmax(const float* z, int V, std::vector<double>& out) {
  out.resize(size_t(V));
  float mx = z[0];
  for (int v = 1; v < V; ++v) mx = std::max(mx, z[v]);
  double se = 0;
  for (int v = 0; v < V; ++v) se += std::exp(double(z[v] - mx));
  const double lse = double(mx) + std::log(se);
  for (int v = 0; v < V; ++v) out[size_t(v)] = double(z[v]) - lse;
}
}  // namespace

Seq2SeqHypothesis seq2seq_decode(Seq2Seq& m, const std::vector<int32_t>& src,
                                 const Seq2SeqDecodeOptions& o) {
  const Seq2SeqConfig& c = m.config();
  const int V = c.base.vocab_size, bos = c.bos_token_id, eos = c.eos_token_id;
  const int max_len =
      o.max_len > 0 ? std::min(o.max_len, c.base.block_size - 1) : c.base.block_size - 1;
  QKV_CHECK(o.beam >= 1 && o.beam <= 64, "--beam {} out of range [1, 64]", o.beam);
  QKV_CHECK(o.length_penalty >= 0 && o.length_penalty <= 5, "--length-penalty {} out of [0, 5]",
            o.length_penalty);
  m.encode(src.data(), int(src.size()));
  const int K = o.beam;
  m.start(K);
  const double ninf = -std::numeric_limits<double>::infinity();
  auto normalised = [&](const Seq2SeqHypothesis& h) {
    const double len = double(h.tokens.size() + (h.finished ? 1 : 0));
    return o.length_penalty > 0 ? h.logprob / std::pow(std::max(1.0, len), o.length_penalty)
                                : h.logprob;
  };
  // Beam k: its tokens and score; only beam 0 is live at the start (the others are copies of
  // it with score -inf, so the first step expands one hypothesis).
  std::vector<Seq2SeqHypothesis> beams(static_cast<size_t>(K));
  for (int k = 1; k < K; ++k) beams[size_t(k)].logprob = ninf;
  std::vector<int32_t> feed(static_cast<size_t>(K), bos), parent(static_cast<size_t>(K));
  std::vector<Seq2SeqHypothesis> finished;
  std::vector<double> lp;
  struct Cand {
    double score;
    int beam;
    int32_t tok;
  };
  std::vector<Cand> cands;
  for (int t = 0; t < max_len; ++t) {
    const float* logits = m.step(feed.data());
    cands.clear();
    for (int k = 0; k < K; ++k) {
      if (beams[size_t(k)].logprob == ninf) continue;
      log_softmax(logits + size_t(k) * V, V, lp);
      lp[size_t(bos)] = ninf;  // BOS only starts a target; it is never an output
      // The best 2K tokens of this beam are all any step can keep.
      std::vector<int32_t> idx(static_cast<size_t>(V));
      for (int v = 0; v < V; ++v) idx[size_t(v)] = v;
      const int take = std::min(V, 2 * K);
      std::partial_sort(idx.begin(), idx.begin() + take, idx.end(),
                        [&](int32_t a, int32_t b) { return lp[size_t(a)] > lp[size_t(b)]; });
      for (int i = 0; i < take; ++i)
        cands.push_back({beams[size_t(k)].logprob + lp[size_t(idx[size_t(i)])], k, idx[size_t(i)]});
    }
    std::sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) {
      return a.score != b.score ? a.score > b.score
                                : (a.beam != b.beam ? a.beam < b.beam : a.tok < b.tok);
    });
    std::vector<Seq2SeqHypothesis> next;
    for (const Cand& cd : cands) {
      if (int(next.size()) == K) break;
      Seq2SeqHypothesis h = beams[size_t(cd.beam)];
      h.logprob = cd.score;
      if (cd.tok == eos) {
        h.finished = true;
        finished.push_back(std::move(h));
        continue;
      }
      h.tokens.push_back(cd.tok);
      parent[next.size()] = cd.beam;
      feed[next.size()] = cd.tok;
      next.push_back(std::move(h));
    }
    if (K == 1 && !finished.empty()) break;  // greedy: EOS ends it
    if (next.empty()) break;
    if (o.early_stop && !finished.empty()) {
      // A live hypothesis with raw score s (< 0, only falling) ends at best s / max_len^alpha.
      double best_done = ninf, best_live = ninf;
      for (const auto& h : finished) best_done = std::max(best_done, normalised(h));
      const double denom = o.length_penalty > 0 ? std::pow(double(max_len), o.length_penalty) : 1;
      for (const auto& h : next) best_live = std::max(best_live, h.logprob / denom);
      if (best_done >= best_live) break;
    }
    while (int(next.size()) < K) {  // keep K rows: dead copies
      parent[next.size()] = parent[0];
      feed[next.size()] = feed[0];
      Seq2SeqHypothesis dead = next[0];
      dead.logprob = ninf;
      next.push_back(std::move(dead));
    }
    m.reorder(parent.data());
    beams = std::move(next);
  }
  if (finished.empty())  // none ended with EOS: the best unfinished
    for (const auto& h : beams)
      if (h.logprob > ninf) finished.push_back(h);
  QKV_CHECK(!finished.empty(), "[seq2seq] decoding produced no hypothesis");
  return *std::max_element(finished.begin(), finished.end(),
                           [&](const Seq2SeqHypothesis& a, const Seq2SeqHypothesis& b) {
                             return normalised(a) < normalised(b);
                           });
}

}  // namespace qkv

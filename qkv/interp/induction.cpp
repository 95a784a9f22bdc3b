#include "qkv/interp/induction.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "qkv/core/error.h"
#include "qkv/core/logprob.h"
#include "qkv/core/rng.h"
#include "qkv/io/svg_plot.h"
#include "qkv/models/gpt.h"
#include "qkv/train/optimizer.h"

namespace qkv::interp {

namespace {
// Where a sequence's repeated segment sits: first copy at [a, a + L), second at [b, b + L).
struct Layout {
  int a, L, b;
};

// B sequences of T random tokens in which one random segment of length L in [T/4, 7T/16]
// appears twice, the copies separated by a random gap: predicting inside the second copy needs
// the earlier occurrence of the current token (its distance varies, so no position will do).
void make_batch(const InductionOptions& o, Rng& rng, std::vector<int32_t>& x,
                std::vector<int32_t>& y, std::vector<Layout>* layout) {
  const int T = o.seq_len;
  std::vector<int32_t> seq(size_t(T) + 1);
  if (layout) layout->clear();
  for (int b = 0; b < o.batch; ++b) {
    for (auto& t : seq) t = int32_t(rng.below(uint64_t(o.vocab)));
    const int L = T / 4 + int(rng.below(uint64_t(3 * T / 16 + 1)));
    const int slack = T - 2 * L;  // >= T/8: split into a lead-in, a gap and a tail
    const int a = int(rng.below(uint64_t(slack / 2 + 1)));
    const int gap = int(rng.below(uint64_t(slack - a + 1)));
    const int second = a + L + gap;
    for (int t = 0; t < L; ++t) seq[size_t(second + t)] = seq[size_t(a + t)];
    std::copy(seq.begin(), seq.begin() + T, x.begin() + ptrdiff_t(b) * T);
    std::copy(seq.begin() + 1, seq.begin() + T + 1, y.begin() + ptrdiff_t(b) * T);
    if (layout) layout->push_back({a, L, second});
  }
}

// Scores on a fixed evaluation batch.
InductionPoint evaluate(GPT& m, const InductionOptions& o, const std::vector<int32_t>& x,
                        const std::vector<int32_t>& y, const std::vector<Layout>& lay) {
  const GPTConfig& c = m.config();
  const int B = o.eval_batch, T = o.seq_len, V = o.vocab, C = c.n_embd, HS = c.head_size();
  const int NH = c.n_head, L = c.n_layer;
  Hooks hooks;
  for (int l = 0; l < L; ++l) hooks.cache({HookPoint::Heads, l});
  hooks.cache({HookPoint::ResidPost, L - 1});
  m.set_hooks(&hooks);
  m.forward(x.data(), nullptr, B, T);
  m.set_hooks(nullptr);
  InductionPoint p;
  // Per-position losses of the next token inside the segment: early = its first occurrence
  // (unpredictable), late = its repeat (predictable from the context).
  double early = 0, late = 0;
  int ne = 0, nl = 0;
  auto loss_at = [&](int b, int t) {
    return -log_softmax_at(m.logits() + (size_t(b) * T + t) * V, V, y[size_t(b) * T + t]);
  };
  for (int b = 0; b < B; ++b) {
    const Layout& s = lay[size_t(b)];
    for (int t = s.a; t + 1 < s.a + s.L; ++t, ++ne) early += loss_at(b, t);
    for (int t = s.b; t + 1 < s.b + s.L; ++t, ++nl) late += loss_at(b, t);
  }
  p.early_loss = early / ne;
  p.late_loss = late / nl;
  p.icl_score = p.late_loss - p.early_loss;
  // Prefix matching: the attention a query inside a repeat pays to the tokens that followed an
  // earlier occurrence of its own token. Copying: how much the head's output, read through the
  // final LayerNorm (scale frozen) and the unembedding, raises the correct next token's logit
  // above the vocabulary's mean, at the same queries.
  std::vector<float> map(size_t(T) * T);
  const auto& resid = hooks.cached({HookPoint::ResidPost, L - 1});
  const float* g = m.param("ln_f.weight");
  const float* wte = m.param("wte.weight");
  const bool centred = c.norm == GPTConfig::Norm::LayerNorm;
  p.prefix.assign(size_t(L) * NH, 0.0);
  p.copying.assign(size_t(L) * NH, 0.0);
  std::vector<double> v(static_cast<size_t>(C)), mean_w(static_cast<size_t>(C), 0.0);
  for (int t = 0; t < V; ++t)
    for (int i = 0; i < C; ++i) mean_w[size_t(i)] += double(wte[size_t(t) * C + i]) / V;
  for (int l = 0; l < L; ++l) {
    const float* wo = m.param("h." + std::to_string(l) + ".attn.c_proj.weight");
    const auto& heads = hooks.cached({HookPoint::Heads, l});
    for (int h = 0; h < NH; ++h) {
      double pm = 0, cp = 0;
      int n = 0;
      for (int b = 0; b < B; ++b) {
        m.attention_map(l, b, h, map.data());
        const int32_t* xs = x.data() + size_t(b) * T;
        const Layout& s = lay[size_t(b)];
        for (int i = s.b; i + 1 < s.b + s.L; ++i) {
          double s = 0;
          for (int j = 1; j <= i; ++j)
            if (xs[j - 1] == xs[i]) s += map[size_t(i) * T + j];
          pm += s;
          // Copying at (b, i): the head's write, centred, scaled by ln_f's rstd and gain.
          const float* r = resid.data() + (size_t(b) * T + i) * C;
          double mu = 0, var = 0;
          for (int k = 0; k < C; ++k) mu += r[k];
          mu = centred ? mu / C : 0;  // RMSNorm does not centre
          for (int k = 0; k < C; ++k) var += (r[k] - mu) * (r[k] - mu);
          const double rstd = 1.0 / std::sqrt(var / C + double(c.ln_eps));
          std::fill(v.begin(), v.end(), 0.0);
          const float* hv = heads.data() + (size_t(b) * T + i) * C;
          for (int d = h * HS; d < (h + 1) * HS; ++d)
            for (int k = 0; k < C; ++k) v[size_t(k)] += double(hv[d]) * wo[size_t(d) * C + k];
          double vm = 0;
          for (int k = 0; k < C; ++k) vm += v[size_t(k)];
          vm = centred ? vm / C : 0;
          const int32_t target = y[size_t(b) * T + i];
          double boost = 0;
          for (int k = 0; k < C; ++k)
            boost += (v[size_t(k)] - vm) * rstd * g[k] *
                     (double(wte[size_t(target) * C + k]) - mean_w[size_t(k)]);
          cp += boost;
          ++n;
        }
      }
      p.prefix[size_t(l) * NH + h] = n ? pm / n : 0;
      p.copying[size_t(l) * NH + h] = n ? cp / n : 0;
    }
  }
  return p;
}
}  // namespace

std::string InductionRun::head_name(int i) const {
  return fmt::format("{}.{}", i / opt.n_head, i % opt.n_head);
}

InductionRun run_induction(const InductionOptions& o,
                           const std::function<void(const InductionPoint&)>& progress) {
  QKV_CHECK(o.n_layer >= 1 && o.n_head >= 1 && o.n_embd % o.n_head == 0,
            "[induction] bad model size {} layers, {} heads, {} channels", o.n_layer, o.n_head,
            o.n_embd);
  QKV_CHECK(o.vocab >= 2 && o.seq_len >= 16 && o.batch >= 1 && o.steps >= 1 &&
                o.eval_interval >= 1 && o.eval_batch >= 1,
            "[induction] vocab >= 2, seq_len >= 16, batch, steps, eval interval >= 1 required");
  GPTConfig c;
  c.n_layer = o.n_layer;
  c.n_head = o.n_head;
  c.n_embd = o.n_embd;
  c.block_size = o.seq_len;
  c.vocab_size = o.vocab;
  c.bias = false;
  c.mlp = o.mlp;
  GPT m(c);
  m.init_weights(o.seed);
  AdamWConfig ac;
  ac.beta2 = 0.99f;
  ac.weight_decay = 0.01f;
  AdamW opt(m, ac);
  InductionRun run;
  run.opt = o;
  Rng data(o.seed, 77), eval_rng(o.seed, 78);
  std::vector<int32_t> x(size_t(o.batch) * o.seq_len), y(x.size());
  InductionOptions eo = o;
  eo.batch = o.eval_batch;
  std::vector<int32_t> ex(size_t(o.eval_batch) * o.seq_len), ey(ex.size());
  std::vector<Layout> eseg;
  make_batch(eo, eval_rng, ex, ey, &eseg);
  const auto t0 = std::chrono::steady_clock::now();
  double loss_acc = 0;
  int loss_n = 0;
  for (int step = 0; step <= o.steps; ++step) {
    if (step % o.eval_interval == 0 || step == o.steps) {
      InductionPoint p = evaluate(m, o, ex, ey, eseg);
      p.step = step;
      p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      p.train_loss = loss_n ? loss_acc / loss_n : std::log(double(o.vocab));
      loss_acc = 0;
      loss_n = 0;
      run.curve.push_back(p);
      if (progress) progress(p);
    }
    if (step == o.steps) break;
    make_batch(o, data, x, y, nullptr);
    m.zero_grad();
    loss_acc += m.forward(x.data(), y.data(), o.batch, o.seq_len);
    ++loss_n;
    m.backward();
    const float lr = lr_schedule(step, o.lr, o.lr / 10, std::min(100, o.steps / 10), o.steps);
    opt.step(lr, grad_clip_factor(m.grad_data(), m.num_params(), 1.0f));
  }
  run.icl_drop = run.curve.front().icl_score - run.curve.back().icl_score;
  double steepest = 0;
  for (size_t i = 1; i < run.curve.size(); ++i) {
    const double fall = run.curve[i - 1].icl_score - run.curve[i].icl_score;
    if (fall > steepest) {
      steepest = fall;
      run.phase_change_step = run.curve[i].step;
    }
  }
  const auto& last = run.curve.back().prefix;
  for (size_t i = 0; i < last.size(); ++i)
    if (last[i] > 0.5) run.induction_heads.push_back(int(i));
  return run;
}

namespace {
std::string variant(const InductionRun& r) {
  return r.opt.mlp ? "attention + MLP" : "attention-only";
}
}  // namespace

std::string induction_json(const std::vector<InductionRun>& runs) {
  nlohmann::json all = nlohmann::json::array();
  for (const auto& r : runs) {
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& p : r.curve)
      curve.push_back({{"step", p.step},
                       {"seconds", p.seconds},
                       {"train_loss", p.train_loss},
                       {"early_loss", p.early_loss},
                       {"late_loss", p.late_loss},
                       {"icl_score", p.icl_score},
                       {"prefix_matching", p.prefix},
                       {"copying", p.copying}});
    nlohmann::json heads = nlohmann::json::array();
    for (int i : r.induction_heads)
      heads.push_back({{"head", r.head_name(i)},
                       {"prefix_matching", r.curve.back().prefix[size_t(i)]},
                       {"copying", r.curve.back().copying[size_t(i)]}});
    const auto& o = r.opt;
    all.push_back({{"variant", variant(r)},
                   {"config",
                    {{"n_layer", o.n_layer},
                     {"n_head", o.n_head},
                     {"n_embd", o.n_embd},
                     {"vocab", o.vocab},
                     {"seq_len", o.seq_len},
                     {"batch", o.batch},
                     {"steps", o.steps},
                     {"lr", o.lr},
                     {"seed", o.seed},
                     {"mlp", o.mlp}}},
                   {"icl_drop", r.icl_drop},
                   {"phase_change_step", r.phase_change_step},
                   {"induction_heads", heads},
                   {"curve", curve}});
  }
  return nlohmann::json{{"experiment", "induction"}, {"runs", all}}.dump(2) + "\n";
}

std::string induction_html(const std::vector<InductionRun>& runs) {
  std::string body;
  for (const auto& r : runs) {
    const int H = r.opt.n_layer * r.opt.n_head;
    PlotSeries train{"training loss", {}, {}}, early{"loss, early positions", {}, {}},
        late{"loss, late positions", {}, {}}, icl{"in-context score (late - early)", {}, {}};
    std::vector<PlotSeries> prefix(static_cast<size_t>(H)), copying(static_cast<size_t>(H));
    for (int i = 0; i < H; ++i) {
      prefix[size_t(i)].name = copying[size_t(i)].name = "head " + r.head_name(i);
    }
    for (const auto& p : r.curve) {
      for (PlotSeries* s : {&train, &early, &late, &icl}) s->x.push_back(p.step);
      train.y.push_back(p.step == 0 ? std::nan("") : p.train_loss);
      early.y.push_back(p.early_loss);
      late.y.push_back(p.late_loss);
      icl.y.push_back(p.icl_score);
      for (int i = 0; i < H; ++i) {
        prefix[size_t(i)].x.push_back(p.step);
        prefix[size_t(i)].y.push_back(p.prefix[size_t(i)]);
        copying[size_t(i)].x.push_back(p.step);
        copying[size_t(i)].y.push_back(p.copying[size_t(i)]);
      }
    }
    const std::string title = fmt::format(
        "{}: {} layers, {} heads, {} channels; {} random tokens, context {}", variant(r),
        r.opt.n_layer, r.opt.n_head, r.opt.n_embd, r.opt.vocab, r.opt.seq_len);
    std::string heads;
    for (int i : r.induction_heads)
      heads += fmt::format("{}<b>{}</b> (prefix matching {:.2f}, copying {:+.2f})",
                           heads.empty() ? "" : ", ", r.head_name(i),
                           r.curve.back().prefix[size_t(i)], r.curve.back().copying[size_t(i)]);
    body += fmt::format(
        "<h2>{}</h2>\n<p>In-context score {:.3f} → {:.3f} nats (a fall of {:.3f}); it fell fastest "
        "just before step {}. Induction heads at the end (prefix matching &gt; 0.5): {}.</p>\n",
        variant(r), r.curve.front().icl_score, r.curve.back().icl_score, r.icl_drop,
        r.phase_change_step, heads.empty() ? "none" : heads);
    body +=
        svg_line_chart(title, {PlotPanel{"losses and in-context score",
                                         "training step",
                                         "nats",
                                         0,
                                         0,
                                         {train, early, late, icl}},
                               PlotPanel{"prefix matching per head", "training step",
                                         "attention to the token after "
                                         "an earlier copy",
                                         0, 0, prefix},
                               PlotPanel{"copying per head", "training step",
                                         "direct logit boost of the next token", 0, 0, copying}});
  }
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>qkv "
         "experiment induction</title><style>body{font:14px/1.4 system-ui,sans-serif;margin:"
         "24px;color:#222}h2{font-size:17px;margin-top:28px}</style></head><body>\n<h1>In-context "
         "learning and induction heads</h1>\n<p>Each sequence is random tokens in which one "
         "random segment (length in [T/4, 7T/16]) appears twice, separated by a random gap. "
         "Inside the second copy every next token can be predicted by finding the earlier "
         "occurrence of the current token and copying what followed it. The in-context score is "
         "the loss at those late positions minus the loss at the same tokens' first occurrence; "
         "its sudden fall is the phase change where induction heads form. Prefix matching: a "
         "head's attention, from inside the second copy, to tokens that followed an earlier "
         "occurrence of the current token. Copying: how much its output raises the correct next "
         "token's logit above the vocabulary's mean (read through the final LayerNorm and the "
         "unembedding).</p>\n" +
         body + "</body></html>\n";
}

}  // namespace qkv::interp

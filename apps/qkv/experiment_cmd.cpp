// qkv experiment induction: in-context learning emerging as small models train (induction heads).
#include <cstdio>
#include <sstream>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/interp/induction.h"

namespace qkv::app {

void add_experiment(CLI::App& app) {
  auto* exp = app.add_subcommand("experiment", "Experiments that show how Transformers learn");
  exp->require_subcommand(1);
  auto* cmd = exp->add_subcommand(
      "induction",
      "Train small models on repeated random tokens; record the in-context learning score and "
      "each head's prefix-matching and copying scores; report where induction heads form");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    interp::InductionOptions o;
    std::string out = "runs/induction", variants = "attn-only,mlp";
    int threads = 0;
    bool json = false, quiet = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--out", a->out, "Directory for induction.html and induction.json")
      ->capture_default_str();
  cmd->add_option("--variants", a->variants,
                  "Which models: attn-only, mlp (attention + MLP), or both, comma-separated")
      ->capture_default_str();
  cmd->add_option("--steps", a->o.steps, "Training steps per model")->capture_default_str();
  cmd->add_option("--eval-interval", a->o.eval_interval, "Steps between measurements")
      ->capture_default_str();
  cmd->add_option("--n-layer", a->o.n_layer, "Layers")->capture_default_str();
  cmd->add_option("--n-head", a->o.n_head, "Heads per layer")->capture_default_str();
  cmd->add_option("--n-embd", a->o.n_embd, "Channels")->capture_default_str();
  cmd->add_option("--vocab", a->o.vocab, "Random-token vocabulary")->capture_default_str();
  cmd->add_option("--seq-len", a->o.seq_len, "Context length")->capture_default_str();
  cmd->add_option("--batch-size", a->o.batch, "Sequences per step")->capture_default_str();
  cmd->add_option("--learning-rate", a->o.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "Seed (weights, data)")->capture_default_str();
  cmd->add_option("--threads", a->threads, "Threads (0: OMP_NUM_THREADS if set, else all cores)")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print the results as JSON on stdout");
  cmd->add_flag("--quiet", a->quiet, "No progress output");
  cmd->callback([a] {
    apply_threads(a->threads);
    std::vector<bool> mlps;
    std::stringstream names(a->variants);
    for (std::string v; std::getline(names, v, ',');) {
      QKV_CHECK(v == "attn-only" || v == "mlp", "--variants: unknown '{}' (attn-only, mlp)", v);
      mlps.push_back(v == "mlp");
    }
    QKV_CHECK(!mlps.empty(), "--variants is empty");
    make_dirs(a->out);
    std::vector<interp::InductionRun> runs;
    for (bool mlp : mlps) {
      interp::InductionOptions o = a->o;
      o.mlp = mlp;
      if (!a->quiet)
        std::fprintf(stderr, "%s: %d layers x %d heads, %d channels, %d steps\n",
                     mlp ? "attention + MLP" : "attention-only", o.n_layer, o.n_head, o.n_embd,
                     o.steps);
      runs.push_back(interp::run_induction(o, [&](const interp::InductionPoint& p) {
        if (a->quiet) return;
        double best = 0;
        for (double s : p.prefix) best = std::max(best, s);
        std::fprintf(stderr,
                     "  step %5d  %6.1f s  train loss %.3f  in-context score %+.3f  best prefix "
                     "matching %.2f\n",
                     p.step, p.seconds, p.train_loss, p.icl_score, best);
      }));
      const auto& r = runs.back();
      if (!a->quiet) {
        std::string heads;
        for (int i : r.induction_heads) heads += (heads.empty() ? "" : ", ") + r.head_name(i);
        std::fprintf(stderr,
                     "  in-context score fell %.3f nats (fastest before step %d); induction "
                     "heads: %s\n",
                     r.icl_drop, r.phase_change_step, heads.empty() ? "none" : heads.c_str());
      }
    }
    write_file_atomic(a->out + "/induction.html", interp::induction_html(runs));
    const std::string js = interp::induction_json(runs);
    write_file_atomic(a->out + "/induction.json", js);
    if (a->json)
      std::fwrite(js.data(), 1, js.size(), stdout);
    else
      std::printf("wrote %s/induction.html and induction.json\n", a->out.c_str());
  });
}

}  // namespace qkv::app

// qkv finetune: train a classification head (or continue language-model training) from a model
// directory, with frozen layers or LoRA adapters.
#include <cstdio>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/train/finetune.h"
#include "qkv/train/trainer.h"

namespace qkv::app {

void add_adapt_flags(CLI::App* cmd, std::string* freeze, int* lora_rank, float* lora_alpha,
                     std::string* lora_targets, std::string* lora_save) {
  cmd->add_option("--freeze", *freeze,
                  "Fine-tuning a --model: parameters held fixed: embeddings, final_norm, layer "
                  "indices or ranges (0-3), all; comma-separated (a classification head always "
                  "trains)");
  cmd->add_option("--lora-rank", *lora_rank,
                  "Fine-tuning a --model: LoRA adapters of this rank, the base frozen (0: off)")
      ->capture_default_str();
  cmd->add_option("--lora-alpha", *lora_alpha, "LoRA scale numerator (scale alpha / rank)")
      ->capture_default_str();
  cmd->add_option("--lora-targets", *lora_targets,
                  "Matrices to adapt: attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj")
      ->capture_default_str();
  cmd->add_option("--lora-save", *lora_save,
                  "merged (a full model) or adapter (the adapters and fully trained tensors "
                  "only, over the --model directory)")
      ->capture_default_str();
}

void add_finetune(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "finetune",
      "Fine-tune a model: --task classify (a head on labelled JSONL text) or --task lm (continue "
      "language-model training on a new corpus); freeze layers or train LoRA adapters");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string task = "classify";
    FinetuneOptions o;
    TrainOptions lm;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--task", a->task, "classify or lm")
      ->capture_default_str()
      ->check(CLI::IsMember({"classify", "lm"}));
  cmd->add_option("--model", a->o.model, "The model directory to start from")->required();
  cmd->add_option("--data", a->o.data,
                  "classify: JSONL, one {\"text\": ..., \"label\": ...} per line; lm: a text file")
      ->required();
  cmd->add_option("--eval", a->o.eval, "classify: JSONL to report accuracy on");
  cmd->add_option("--out", a->o.out, "Output model directory")->required();
  cmd->add_option("--batch-size", a->o.batch_size, "Sequences per step")->capture_default_str();
  cmd->add_option("--epochs", a->o.epochs, "classify: passes over the data")->capture_default_str();
  cmd->add_option("--max-iters", a->o.max_iters, "Steps (classify: overrides --epochs if > 0)")
      ->capture_default_str();
  cmd->add_option("--learning-rate", a->o.learning_rate, "Peak learning rate")
      ->capture_default_str();
  cmd->add_option("--min-lr", a->o.min_lr, "Learning rate at the end of the cosine decay")
      ->capture_default_str();
  cmd->add_option("--warmup-iters", a->o.warmup_iters, "Warmup steps (-1: 5% of the steps)")
      ->capture_default_str();
  cmd->add_option("--weight-decay", a->o.weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--grad-clip", a->o.grad_clip, "Clip the gradient norm (0: off)")
      ->capture_default_str();
  cmd->add_option("--eval-interval", a->o.eval_interval, "Steps between evaluations (0: per epoch)")
      ->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "Random seed")->capture_default_str();
  add_adapt_flags(cmd, &a->o.freeze, &a->o.lora_rank, &a->o.lora_alpha, &a->o.lora_targets,
                  &a->o.lora_save);
  cmd->add_flag("--skip-bad-lines", a->o.skip_bad_lines,
                "Skip (and count) bad lines instead of stopping at them");
  cmd->add_option("--dtype", a->o.dtype, "Matmul precision: fp32 or bf16")->capture_default_str();
  cmd->add_option("--threads", a->threads, "Threads (0: OMP_NUM_THREADS if set, else all cores)")
      ->capture_default_str();
  cmd->add_flag("--quiet", a->o.quiet, "No progress output");
  cmd->callback([a] {
    apply_threads(a->threads);
    const FinetuneOptions& o = a->o;
    if (a->task == "lm") {
      QKV_CHECK(o.eval.empty(), "--eval is for --task classify (lm validates on the last 10%)");
      TrainOptions t;
      t.data = o.data;
      t.out = o.out;
      t.init_from = o.model;
      t.batch_size = o.batch_size;
      t.max_iters = o.max_iters > 0 ? o.max_iters : 500;
      t.learning_rate = o.learning_rate;
      t.min_lr = o.min_lr;
      t.warmup_iters = o.warmup_iters >= 0 ? o.warmup_iters : t.max_iters / 20;
      t.weight_decay = o.weight_decay;
      t.grad_clip = o.grad_clip;
      if (o.eval_interval > 0) t.eval_interval = o.eval_interval;
      t.seed = o.seed;
      t.dtype = o.dtype;
      t.quiet = o.quiet;
      t.freeze = o.freeze;
      t.lora_rank = o.lora_rank;
      t.lora_alpha = o.lora_alpha;
      t.lora_targets = o.lora_targets;
      t.lora_save = o.lora_save;
      const TrainResult r = train(t);
      if (!o.quiet)
        std::printf("done: %lld steps in %.1f s, final val loss %.4f; model in %s\n",
                    static_cast<long long>(r.steps_done), r.seconds, r.last_val_loss,
                    o.out.c_str());
      return;
    }
    const FinetuneResult r = finetune(o);
    if (!o.quiet) {
      std::printf("done: %lld steps in %.1f s, last loss %.4f", static_cast<long long>(r.steps),
                  r.seconds, r.last_loss);
      if (r.eval.examples)
        std::printf("; eval accuracy %.2f%% (%lld/%lld)", 100 * r.eval.accuracy(),
                    static_cast<long long>(r.eval.correct),
                    static_cast<long long>(r.eval.examples));
      if (r.skipped_lines)
        std::printf("; skipped %lld bad lines", static_cast<long long>(r.skipped_lines));
      if (r.truncated)
        std::printf("; %lld texts cut to the context", static_cast<long long>(r.truncated));
      std::printf("; model in %s\n", o.out.c_str());
    }
  });
}

}  // namespace qkv::app

// qkv train: train a GPT from scratch on a text file.
#include <csignal>
#include <optional>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/train/seq2seq_train.h"
#include "qkv/train/trainer.h"

namespace qkv::app {

namespace {
void on_signal(int) { g_stop_training.store(true); }
}  // namespace

void add_train(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train", "Train a GPT from scratch on a text file (character or byte tokens)");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    TrainOptions o;
    std::string preset = "baby";
    std::optional<int> n_layer, n_head, n_embd, block_size;
    std::optional<bool> bias;
    std::optional<std::string> attention, pos, norm, norm_position, activation, arch;
    std::optional<int> window, attn_block, attn_local_blocks, attn_global, n_kv_head, n_inner;
    std::optional<float> rope_theta;
    // Encoder-decoder only.
    Seq2SeqTrainOptions s2s;
    std::optional<int> n_dec_layer;
    std::optional<bool> shared_embeddings;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--data", a->o.data, "Training text file (first 90% train, last 10% validation)")
      ->required();
  cmd->add_option("--out", a->o.out, "Output directory: model, tokenizer, checkpoints, log.jsonl")
      ->required();
  cmd->add_option("--preset", a->preset,
                  "Model preset: baby, shakespeare-char, gpt2, gpt2-medium, gpt2-large, gpt2-xl; "
                  "seq2seq for --arch encoder-decoder (its default)")
      ->capture_default_str();
  cmd->add_option("--n-layer", a->n_layer, "Number of layers (overrides the preset)");
  cmd->add_option("--n-head", a->n_head, "Number of attention heads");
  cmd->add_option("--n-embd", a->n_embd, "Embedding width (divisible by --n-head)");
  cmd->add_option("--block-size", a->block_size, "Context length in tokens");
  cmd->add_option("--bias", a->bias, "Biases in linear layers and LayerNorms (true/false)");
  cmd->add_option("--attention", a->attention,
                  "Attention rule: dense (default), sliding (--window), block_sparse "
                  "(--attn-block, --attn-local-blocks, --attn-global) or linear");
  cmd->add_option("--window", a->window,
                  "sliding: keys per query (causal: the last W positions, itself included)");
  cmd->add_option("--attn-block", a->attn_block,
                  "block_sparse: block size in tokens (must divide --block-size)");
  cmd->add_option("--attn-local-blocks", a->attn_local_blocks,
                  "block_sparse: neighbouring blocks each query sees on each side (default 1)");
  cmd->add_option("--attn-global", a->attn_global,
                  "block_sparse: leading tokens that see and are seen by every position");
  cmd->add_option("--norm", a->norm, "Norm: layernorm (GPT-2, default) or rmsnorm (no bias)");
  cmd->add_option("--norm-position", a->norm_position,
                  "Norm placement: pre (GPT-2, default: x + f(norm(x)), final norm) or post (the "
                  "original Transformer: norm(x + f(x)))");
  cmd->add_option("--activation", a->activation,
                  "MLP activation: gelu (tanh form, default), relu or swiglu (silu(gate) * up)");
  cmd->add_option("--n-inner", a->n_inner, "MLP hidden width (default 4 x --n-embd)");
  cmd->add_option("--n-kv-head", a->n_kv_head,
                  "Key/value heads for grouped-query attention (divides --n-head; 1 = "
                  "multi-query; default --n-head)");
  cmd->add_option("--pos", a->pos,
                  "Positions: learned (GPT-2, default), sinusoidal (fixed), rope (rotary) or "
                  "alibi (linear biases); all but learned generate past --block-size with "
                  "sliding or linear attention");
  cmd->add_option("--rope-theta", a->rope_theta, "Rotary base (with --pos rope; default 10000)");
  cmd->add_option("--arch", a->arch,
                  "decoder (GPT, causal; default), encoder (BERT-style, bidirectional; train it "
                  "with --objective mlm) or encoder-decoder (--data is source<TAB>target pairs)");
  cmd->add_option("--eval", a->s2s.eval,
                  "encoder-decoder: held-out TSV pairs (default: the last 10% of --data)");
  cmd->add_option("--eval-examples", a->s2s.eval_examples,
                  "encoder-decoder: held-out pairs decoded per evaluation (0: all)")
      ->capture_default_str();
  cmd->add_option("--label-smoothing", a->s2s.label_smoothing,
                  "encoder-decoder: label smoothing of the target distribution")
      ->capture_default_str();
  cmd->add_option("--n-decoder-layer", a->n_dec_layer,
                  "encoder-decoder: decoder layers (default: --n-layer)");
  cmd->add_option("--shared-embeddings", a->shared_embeddings,
                  "encoder-decoder: one embedding for source, target and output (default true)");
  cmd->add_flag("--skip-bad-lines", a->s2s.skip_bad_lines,
                "encoder-decoder: skip (and count) bad TSV lines instead of stopping");
  cmd->add_option("--objective", a->o.objective,
                  "clm (next token; decoders) or mlm (masked language model: 15% of positions, "
                  "80/10/10 mask/random/keep; encoders)")
      ->capture_default_str();
  add_adapt_flags(cmd, &a->o.freeze, &a->o.lora_rank, &a->o.lora_alpha, &a->o.lora_targets,
                  &a->o.lora_save);
  cmd->add_option("--tokenizer", a->o.tokenizer,
                  "char (sorted unique characters; default), byte, or a directory with a BPE "
                  "vocabulary (vocab.json + merges.txt)");
  cmd->add_option("--model", a->o.init_from,
                  "Start from this model directory (its config, weights and tokenizer; e.g. a "
                  "Hugging Face GPT-2 directory)");
  cmd->add_option("--batch-size", a->o.batch_size, "Sequences per micro-batch")
      ->capture_default_str();
  cmd->add_option("--grad-accum", a->o.grad_accum,
                  "Micro-batches per optimizer step (the step sees --grad-accum x --batch-size "
                  "sequences; memory of one micro-batch)")
      ->capture_default_str();
  cmd->add_option("--max-iters", a->o.max_iters, "Training steps")->capture_default_str();
  cmd->add_option("--learning-rate", a->o.learning_rate, "Peak learning rate")
      ->capture_default_str();
  cmd->add_option("--min-lr", a->o.min_lr, "Learning rate at the end of the cosine decay")
      ->capture_default_str();
  cmd->add_option("--warmup-iters", a->o.warmup_iters, "Linear warmup steps")
      ->capture_default_str();
  cmd->add_option("--lr-decay-iters", a->o.lr_decay_iters,
                  "Step where the cosine decay ends (-1: --max-iters)")
      ->capture_default_str();
  cmd->add_option("--weight-decay", a->o.weight_decay, "AdamW weight decay (2-D weights only)")
      ->capture_default_str();
  cmd->add_option("--beta1", a->o.beta1, "AdamW beta1")->capture_default_str();
  cmd->add_option("--beta2", a->o.beta2, "AdamW beta2")->capture_default_str();
  cmd->add_option("--grad-clip", a->o.grad_clip, "Clip the global gradient norm (0: off)")
      ->capture_default_str();
  cmd->add_option("--eval-interval", a->o.eval_interval, "Steps between validation evaluations")
      ->capture_default_str();
  cmd->add_option("--eval-iters", a->o.eval_iters, "Batches per validation evaluation")
      ->capture_default_str();
  cmd->add_option("--checkpoint-interval", a->o.checkpoint_interval,
                  "Steps between checkpoints (0: at each evaluation)")
      ->capture_default_str();
  cmd->add_option("--log-interval", a->o.log_interval,
                  "Steps between progress lines when stdout is not a terminal")
      ->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "Random seed (init, batches)")->capture_default_str();
  cmd->add_option("--dtype", a->o.dtype,
                  "Matmul precision: fp32, or bf16 (bf16 products on AMX or AVX512-BF16, fp32 "
                  "accumulation and master weights)")
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "Threads (0: OMP_NUM_THREADS if set, else all cores)")
      ->capture_default_str();
  cmd->add_option("--parallel", a->o.parallel,
                  "How the threads share a step: batch (each thread its share of the sequences, "
                  "on a model replica; one more fp32 gradient buffer per thread), ops (every op "
                  "split across the threads), or auto (batch for equal shares, when the extra "
                  "gradients take at most 2 GiB)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "batch", "ops"}));
  cmd->add_flag("--resume", a->o.resume,
                "Continue from the checkpoint in --out (weights, optimizer, step)");
  cmd->add_flag("--quiet", a->o.quiet, "No progress output");
  cmd->callback([a, cmd] {
    apply_threads(a->threads);
    const bool s2s = a->arch && *a->arch == "encoder-decoder";
    Seq2SeqConfig sc;
    if (s2s) {
      sc = Seq2SeqConfig::preset(cmd->count("--preset") ? a->preset : "seq2seq");
      if (a->n_dec_layer) sc.n_dec_layer = *a->n_dec_layer;
      if (a->shared_embeddings) sc.shared_embeddings = *a->shared_embeddings;
    }
    GPTConfig c = s2s ? sc.base : GPTConfig::preset(a->preset);
    if (a->n_layer) c.n_layer = *a->n_layer;
    if (a->n_head) c.n_head = *a->n_head;
    if (a->n_embd) c.n_embd = *a->n_embd;
    if (a->block_size) c.block_size = *a->block_size;
    if (a->bias) c.bias = *a->bias;
    if (a->attention) c.attention = GPTConfig::attention_from_name(*a->attention, "--attention");
    if (a->pos) c.pos = GPTConfig::pos_from_name(*a->pos, "--pos");
    if (a->norm) {
      QKV_CHECK(*a->norm == "layernorm" || *a->norm == "rmsnorm",
                "--norm: unknown '{}' (layernorm, rmsnorm)", *a->norm);
      c.norm = *a->norm == "rmsnorm" ? GPTConfig::Norm::RMSNorm : GPTConfig::Norm::LayerNorm;
    }
    if (a->norm_position) {
      QKV_CHECK(*a->norm_position == "pre" || *a->norm_position == "post",
                "--norm-position: unknown '{}' (pre, post)", *a->norm_position);
      c.norm_pos = *a->norm_position == "post" ? GPTConfig::NormPos::Post : GPTConfig::NormPos::Pre;
    }
    if (a->activation) {
      const std::string& act = *a->activation;
      QKV_CHECK(act == "gelu" || act == "relu" || act == "swiglu",
                "--activation: unknown '{}' (gelu, relu, swiglu)", act);
      c.act = act == "relu"     ? GPTConfig::Act::ReLU
              : act == "swiglu" ? GPTConfig::Act::SwiGLU
                                : GPTConfig::Act::GeluTanh;
    }
    if (a->n_kv_head) c.n_kv_head = *a->n_kv_head;
    if (a->arch) {
      QKV_CHECK(*a->arch == "decoder" || *a->arch == "encoder" || s2s,
                "--arch: unknown '{}' (decoder, encoder, encoder-decoder)", *a->arch);
      c.causal = *a->arch != "encoder";
    }
    if (a->n_inner) c.n_inner = *a->n_inner;
    if (a->rope_theta) c.rope_theta = *a->rope_theta;
    if (a->window) c.window = *a->window;
    if (a->attn_block) c.attn_block = *a->attn_block;
    if (a->attn_local_blocks) c.attn_local_blocks = *a->attn_local_blocks;
    if (a->attn_global) c.attn_global = *a->attn_global;
    c.vocab_size = 256;  // replaced by the tokenizer's
    c.validate("model config");
    if (s2s) {
      Seq2SeqTrainOptions& t = a->s2s;
      sc.base = c;
      sc.bos_token_id = 0;  // set from the data's vocabulary
      sc.eos_token_id = 1;
      t.model = sc;
      t.data = a->o.data;
      t.out = a->o.out;
      t.seed = a->o.seed;
      t.dtype = a->o.dtype;
      t.quiet = a->o.quiet;
      // The training flags the user gave; the rest keep the encoder-decoder's defaults.
      auto given = [&](const char* flag) { return cmd->count(flag) > 0; };
      if (given("--batch-size")) t.batch_size = a->o.batch_size;
      if (given("--max-iters")) t.max_iters = a->o.max_iters;
      if (given("--learning-rate")) t.learning_rate = a->o.learning_rate;
      if (given("--min-lr")) t.min_lr = a->o.min_lr;
      if (given("--warmup-iters")) t.warmup_iters = a->o.warmup_iters;
      if (given("--weight-decay")) t.weight_decay = a->o.weight_decay;
      if (given("--beta1")) t.beta1 = a->o.beta1;
      if (given("--beta2")) t.beta2 = a->o.beta2;
      if (given("--grad-clip")) t.grad_clip = a->o.grad_clip;
      if (given("--eval-interval")) t.eval_interval = a->o.eval_interval;
      QKV_CHECK(a->o.init_from.empty() && a->o.objective == "clm" && a->o.freeze.empty() &&
                    a->o.lora_rank == 0 && a->o.parallel != "batch",
                "--model, --objective, --freeze, --lora-rank and --parallel batch are for "
                "decoder and encoder models, not --arch encoder-decoder");
      t.resume = a->o.resume;
      std::signal(SIGINT, on_signal);
      std::signal(SIGTERM, on_signal);
      const Seq2SeqTrainResult r = train_seq2seq(t);
      if (r.interrupted) throw CLI::RuntimeError(130);
      if (!t.quiet)
        std::printf(
            "done: %lld steps in %.1f s, held-out exact match %.2f%% (%lld pairs); "
            "model in %s\n",
            static_cast<long long>(r.steps), r.seconds, 100 * r.exact_match,
            static_cast<long long>(r.eval_examples), t.out.c_str());
      return;
    }
    a->o.model = c;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    TrainResult r = train(a->o);
    if (!a->o.quiet && !r.interrupted)
      std::printf("done: %lld steps in %.1f s, final val loss %.4f; model in %s\n",
                  static_cast<long long>(r.steps_done), r.seconds, r.last_val_loss,
                  a->o.out.c_str());
    if (r.interrupted) throw CLI::RuntimeError(130);
  });
}

}  // namespace qkv::app

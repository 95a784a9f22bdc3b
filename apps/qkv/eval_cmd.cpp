// qkv eval: a classifier's accuracy on a labelled JSONL file, or few-shot evaluation of a language
// model on a task file (exact match and log-likelihood).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/infer/fewshot.h"
#include "qkv/models/gpt.h"
#include "qkv/models/seq2seq.h"
#include "qkv/tokenizer/tokenizer.h"
#include "qkv/train/finetune.h"
#include "qkv/train/seq2seq_train.h"

namespace qkv::app {

void add_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "eval",
      "Evaluate a model: a classifier's accuracy on labelled JSONL (--data), or few-shot exact "
      "match and target log-likelihood on a task file (--task)");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string model, task, data, dtype = "fp32", separator = "\\n";
    FewShotOptions o;
    int threads = 0, batch_size = 32, beam = 1, max_examples = 0;
    bool json = false, skip_bad_lines = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Model directory")->required();
  cmd->add_option("--task", a->task,
                  "JSONL file, one {\"input\": ..., \"target\": ...} per line; the prompt is the "
                  "shots' input+target+separator, then the query's input");
  cmd->add_option("--data", a->data,
                  "Classifier models: JSONL, one {\"text\": ..., \"label\": ...} per line "
                  "(labels from the model's config)");
  cmd->add_option("--batch-size", a->batch_size, "--data: sequences per batch")
      ->capture_default_str();
  cmd->add_option("--beam", a->beam, "Encoder-decoder --data (TSV pairs): beam width")
      ->capture_default_str();
  cmd->add_option("--max-examples", a->max_examples,
                  "Encoder-decoder --data: decode only the first N pairs (0: all)")
      ->capture_default_str();
  cmd->add_flag("--skip-bad-lines", a->skip_bad_lines,
                "--data: skip (and count) bad lines instead of stopping");
  cmd->add_option("--shots", a->o.shots, "Worked examples before each query (K)")
      ->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "Which examples are the shots")->capture_default_str();
  cmd->add_option("--separator", a->separator, "Text after each shot's target (escapes: \\n, \\t)")
      ->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "Inference weights: fp32, bf16 or int8")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  cmd->add_option("--threads", a->threads, "Threads (0: OMP_NUM_THREADS if set, else all cores)")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([a] {
    apply_threads(a->threads);
    QKV_CHECK(a->task.empty() != a->data.empty(),
              "give --data (a classifier's labelled JSONL) or --task (few-shot), one of them");
    if (!a->data.empty() && is_seq2seq_dir(a->model)) {  // exact match on source/target pairs
      Seq2Seq m = Seq2Seq::from_dir(a->model);
      const auto tok = load_tokenizer(a->model);
      const Seq2SeqEval r =
          evaluate_seq2seq(m, *tok, a->data, a->beam, a->max_examples, a->skip_bad_lines);
      if (a->json) {
        nlohmann::ordered_json j = {{"model", a->model},
                                    {"data", a->data},
                                    {"beam", a->beam},
                                    {"examples", r.examples},
                                    {"exact", r.exact},
                                    {"exact_match", r.accuracy()},
                                    {"skipped_lines", r.skipped_lines},
                                    {"truncated", r.truncated}};
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("exact match %.2f%% (%lld/%lld, beam %d)", 100 * r.accuracy(),
                    static_cast<long long>(r.exact), static_cast<long long>(r.examples), a->beam);
        if (r.skipped_lines)
          std::printf("; skipped %lld bad lines", static_cast<long long>(r.skipped_lines));
        if (r.truncated)
          std::printf("; %lld pairs cut to the context", static_cast<long long>(r.truncated));
        std::printf("\n");
      }
      return;
    }
    if (!a->data.empty()) {
      QKV_CHECK(a->batch_size >= 1, "--batch-size must be >= 1");
      GPT model = GPT::from_dir(a->model);
      const auto& labels = model.config().labels;
      QKV_CHECK(!labels.empty(),
                "{}: not a classifier (no labels in its config); fine-tune one with qkv finetune "
                "--task classify",
                a->model);
      const auto tok = load_tokenizer(a->model);
      int64_t skipped = 0;
      const LabelledIds d = load_labelled(a->data, *tok, labels, model.config().block_size,
                                          a->skip_bad_lines, &skipped);
      const ClassifierEval r = evaluate_classifier(model, d, a->batch_size);
      if (a->json) {
        nlohmann::ordered_json per = nlohmann::ordered_json::object();
        for (size_t k = 0; k < labels.size(); ++k)
          per[labels[k]] = {
              {"examples", r.per_label[k]},
              {"accuracy",
               r.per_label[k] ? double(r.per_label_correct[k]) / double(r.per_label[k]) : 0.0}};
        nlohmann::ordered_json j = {
            {"model", a->model},    {"data", a->data},          {"examples", r.examples},
            {"correct", r.correct}, {"accuracy", r.accuracy()}, {"loss", r.loss},
            {"per_label", per},     {"skipped_lines", skipped}, {"truncated", d.truncated}};
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("accuracy %.2f%% (%lld/%lld), loss %.4f", 100 * r.accuracy(),
                    static_cast<long long>(r.correct), static_cast<long long>(r.examples), r.loss);
        if (skipped) std::printf("; skipped %lld bad lines", static_cast<long long>(skipped));
        if (d.truncated)
          std::printf("; %lld texts cut to the context", static_cast<long long>(d.truncated));
        std::printf("\n");
        for (size_t k = 0; k < labels.size(); ++k)
          std::printf("  %-20s %6.2f%% of %lld\n", labels[k].c_str(),
                      r.per_label[k]
                          ? 100.0 * double(r.per_label_correct[k]) / double(r.per_label[k])
                          : 0.0,
                      static_cast<long long>(r.per_label[k]));
      }
      return;
    }
    QKV_CHECK(a->o.shots >= 0, "--shots {} must be >= 0", a->o.shots);
    a->o.separator.clear();
    for (size_t i = 0; i < a->separator.size(); ++i) {
      if (a->separator[i] == '\\' && i + 1 < a->separator.size()) {
        const char c = a->separator[++i];
        a->o.separator += c == 'n' ? '\n' : c == 't' ? '\t' : c;
      } else {
        a->o.separator += a->separator[i];
      }
    }
    const std::vector<TaskExample> task = read_task_file(a->task);
    QKV_CHECK(a->o.shots < int(task.size()), "--shots {} needs at least {} examples; {} has {}",
              a->o.shots, a->o.shots + 1, a->task, task.size());
    GPT model = GPT::from_dir(a->model);
    if (model.has_fp32_weights()) model.set_inference_weights(GPT::weights_from_name(a->dtype));
    const auto tok = load_tokenizer(a->model);
    const FewShotResult r = evaluate_fewshot(model, *tok, task, a->o);
    if (a->json) {
      nlohmann::ordered_json j = {{"model", a->model},
                                  {"task", a->task},
                                  {"shots", r.shots},
                                  {"examples", r.examples},
                                  {"exact_match", r.accuracy()},
                                  {"exact", r.exact},
                                  {"mean_target_loglik", r.mean_loglik()},
                                  {"loglik_per_token", r.loglik_per_token()},
                                  {"target_tokens", r.target_tokens},
                                  {"truncated_prompts", r.truncated}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf(
          "%d-shot on %d examples: exact match %.1f%% (%d), target log-likelihood %.4f nats "
          "(%.4f per token)%s\n",
          r.shots, r.examples, 100 * r.accuracy(), r.exact, r.mean_loglik(), r.loglik_per_token(),
          r.truncated ? (", " + std::to_string(r.truncated) + " prompts cut to the context").c_str()
                      : "");
    }
  });
}

}  // namespace qkv::app

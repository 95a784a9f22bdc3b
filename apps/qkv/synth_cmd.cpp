// qkv synth: write a synthetic task's data splits (for the fine-tuning and seq2seq benchmarks).
#include <cstdio>

#include "apps/qkv/commands.h"
#include "qkv/data/synthetic.h"

namespace qkv::app {

void add_synth(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "synth",
      "Generate a synthetic task: sentiment (classification with negation: train/valid JSONL + "
      "text.txt), reverse, sort or spell (source<TAB>target: train/valid/test TSV)");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string task, out;
    int train = 20000, valid = 1000, test = 1000, min_len = 4, max_len = 12;
    uint64_t seed = 1;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("task", a->task, "sentiment, reverse, sort or spell")
      ->required()
      ->check(CLI::IsMember({"sentiment", "reverse", "sort", "spell"}));
  cmd->add_option("--out", a->out, "Output directory")->required();
  cmd->add_option("--train", a->train, "Training examples")->capture_default_str();
  cmd->add_option("--valid", a->valid, "Validation examples (never in train)")
      ->capture_default_str();
  cmd->add_option("--test", a->test, "Test examples (seq2seq tasks; never in train or valid)")
      ->capture_default_str();
  cmd->add_option("--min-len", a->min_len, "Shortest input (characters; spell: digits)")
      ->capture_default_str();
  cmd->add_option("--max-len", a->max_len, "Longest input (characters; spell: digits, <= 6)")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Random seed")->capture_default_str();
  cmd->callback([a] {
    write_synthetic(a->task, a->out, a->train, a->valid, a->task == "sentiment" ? 0 : a->test,
                    a->min_len, a->max_len, a->seed);
    std::printf("wrote %s data to %s\n", a->task.c_str(), a->out.c_str());
  });
}

}  // namespace qkv::app

// The qkv command line: one small file per verb, each parsing flags into an options struct and
// calling the library. main.cpp maps errors to exit codes (0 ok, 1 user error).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace qkv::app {

void add_train(CLI::App& app);
void add_generate(CLI::App& app);
void add_logits(CLI::App& app);
void add_bench(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_quantize(CLI::App& app);
void add_init(CLI::App& app);
void add_perplexity(CLI::App& app);
void add_inspect(CLI::App& app);
void add_experiment(CLI::App& app);
void add_eval(CLI::App& app);
void add_finetune(CLI::App& app);
void add_synth(CLI::App& app);

// --freeze, --lora-rank, --lora-alpha, --lora-targets, --lora-save (train and finetune).
void add_adapt_flags(CLI::App* cmd, std::string* freeze, int* lora_rank, float* lora_alpha,
                     std::string* lora_targets, std::string* lora_save);

// Applies --threads (0 = all cores).
void apply_threads(int threads);

}  // namespace qkv::app

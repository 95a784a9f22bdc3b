// Synthetic tasks the project generates for its own fine-tuning and sequence-to-sequence
// benchmarks (no downloads): each is deterministic in its seed, and the held-out splits never
// repeat a training example.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qkv/data/labelled.h"

namespace qkv {

// "Negated sentiment": short reviews like "honestly, the film was not very good today"; the
// label (positive / negative) is the adjective's polarity flipped by a "not" or "never" before
// it, so a bag of words cannot tell: the model must relate the two words. ~360k distinct texts.
std::vector<LabelledText> synth_sentiment(int n, uint64_t seed, uint64_t stream);

// Sequence-to-sequence pairs over lowercase text, lengths in [min_len, max_len]:
//   reverse  "abcde" -> "edcba"     sort  "dbeca" -> "abcde"
//   spell    "40213" -> "forty thousand two hundred thirteen" (numbers below 10^6; min/max_len
//            bound the digits)
// Every output depends on the whole input (the first output token on the last input token).
std::vector<TextPair> synth_pairs(const std::string& task, int n, int min_len, int max_len,
                                  uint64_t seed, uint64_t stream);
// English words for 0 <= v < 10^6 ("zero", "twenty-one", "one hundred five", ...).
std::string number_words(int64_t v);

// Writes a task's splits into `dir`: sentiment -> train.jsonl, valid.jsonl and text.txt (the
// training texts, one per line, for masked-LM pretraining); reverse, sort, spell -> train.tsv,
// valid.tsv, test.tsv. Held-out examples that also occur in train are dropped and redrawn.
void write_synthetic(const std::string& task, const std::string& dir, int n_train, int n_valid,
                     int n_test, int min_len, int max_len, uint64_t seed);

}  // namespace qkv

// Learns a byte-level BPE vocabulary (GPT-2's pre-tokenizer, merges by pair frequency) from text.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qkv/tokenizer/bpe_tokenizer.h"

namespace qkv {

struct BpeTrainOptions {
  int vocab_size = 8192;  // 256 byte tokens + merges + special tokens
  std::vector<std::string> specials = {"<|endoftext|>"};
  int min_pair_count = 2;  // stop early when no pair occurs this often
  int threads = 1;         // for the pre-tokenization pass
  std::function<void(int merges_done, int merges_total)> progress;
};

// The merges, in order, as pairs of raw byte strings. Each step merges the most frequent
// adjacent pair (counted over pre-tokenized words, weighted by word frequency); ties go to the
// pair whose (left bytes, right bytes) is smallest in byte order.
std::vector<std::pair<std::string, std::string>> learn_bpe_merges(std::string_view text,
                                                                  const BpeTrainOptions& opt);

// learn_bpe_merges + the tokenizer built from them.
BpeTokenizer train_bpe(std::string_view text, const BpeTrainOptions& opt);

}  // namespace qkv

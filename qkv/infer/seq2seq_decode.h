// Decoding an encoder-decoder: greedy, or beam search with length normalisation, both with the
// model's caches (self-attention per beam, cross-attention keys computed once per source).
#pragma once

#include <cstdint>
#include <vector>

#include "qkv/models/seq2seq.h"

namespace qkv {

struct Seq2SeqDecodeOptions {
  int beam = 1;     // 1: greedy
  int max_len = 0;  // target tokens at most (0: block_size - 1)
  // Beam search ranks finished hypotheses by sum log p / length^alpha (0: raw sum; 1: mean).
  float length_penalty = 0.6f;
  // Stop as soon as no live hypothesis can still beat the best finished one (an exact bound:
  // scores only fall, and no length normalises a score better than max_len). false: always run
  // to max_len (for checking; the answer is the same).
  bool early_stop = true;
};

struct Seq2SeqHypothesis {
  std::vector<int32_t> tokens;  // without BOS and EOS
  double logprob = 0;           // sum of the log-probabilities, EOS included if it ended
  bool finished = false;        // ended with EOS (else stopped at max_len)
};

// The best target for src (1..block_size ids). BOS is never chosen as an output token.
Seq2SeqHypothesis seq2seq_decode(Seq2Seq& m, const std::vector<int32_t>& src,
                                 const Seq2SeqDecodeOptions& o = {});

}  // namespace qkv

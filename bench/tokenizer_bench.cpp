// qkv's GPT-2 BPE encoder on one file: single-threaded (and with N threads), median MB/s.
//   build/bench/tokenizer_bench TOKENIZER_DIR FILE [reps] [threads]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "qkv/core/file.h"
#include "qkv/tokenizer/bpe_tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: tokenizer_bench TOKENIZER_DIR FILE [reps] [threads]\n");
    return 1;
  }
  const qkv::BpeTokenizer tok = qkv::BpeTokenizer::load_dir(argv[1]);
  const std::string text = qkv::read_file(argv[2]);
  const int reps = argc > 3 ? std::atoi(argv[3]) : 5;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 1;
  size_t tokens = tok.encode(text).size();  // warm-up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    tokens = (threads > 1 ? tok.encode_parallel(text, threads) : tok.encode(text)).size();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  const double med = t[t.size() / 2];
  std::printf(
      "{\"mb_per_sec\": %.3f, \"seconds\": %.4f, \"tokens\": %zu, \"bytes\": %zu, \"threads\": "
      "%d}\n",
      double(text.size()) / med / 1e6, med, tokens, text.size(), threads);
  return 0;
}

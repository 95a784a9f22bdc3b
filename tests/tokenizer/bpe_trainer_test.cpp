// The BPE trainer against a straightforward reference written here: recount every pair from
// scratch each round, merge the most frequent (ties: smallest bytes), repeat.
#include "qkv/tokenizer/bpe_trainer.h"

#include <gtest/gtest.h>

#include <map>

#include "qkv/core/file.h"
#include "tests/test_paths.h"

namespace qkv {
namespace {

std::vector<std::pair<std::string, std::string>> naive_merges(std::string_view text, int n_merges) {
  BpeTokenizer pre = BpeTokenizer::from_merges({}, {});
  std::vector<std::pair<size_t, size_t>> pieces;
  pre.pretokenize(text, pieces);
  std::map<std::string, int64_t> counts;
  for (auto [b, e] : pieces) ++counts[std::string(text.substr(b, e - b))];
  std::vector<std::pair<std::vector<std::string>, int64_t>> words;
  for (auto& [w, c] : counts) {
    std::vector<std::string> s;
    for (char ch : w) s.push_back(std::string(1, ch));
    words.emplace_back(s, c);
  }
  std::vector<std::pair<std::string, std::string>> merges;
  while (int(merges.size()) < n_merges) {
    std::map<std::pair<std::string, std::string>, int64_t> pc;
    for (auto& [s, c] : words)
      for (size_t i = 0; i + 1 < s.size(); ++i) pc[{s[i], s[i + 1]}] += c;
    std::pair<std::string, std::string> best;
    int64_t best_c = 0;
    for (auto& [p, c] : pc)  // map order = smallest bytes first, so '>' keeps the first on ties
      if (c > best_c) {
        best_c = c;
        best = p;
      }
    if (best_c < 2) break;
    merges.push_back(best);
    for (auto& [s, c] : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == best.first && s[i + 1] == best.second) {
          out.push_back(best.first + best.second);
          ++i;
        } else {
          out.push_back(s[i]);
        }
      }
      s = out;
    }
  }
  return merges;
}

TEST(BpeTrainer, SameMergesAsTheStraightforwardReference) {
  const std::string text =
      read_file(test::shared_data() + "/tinyshakespeare.txt").substr(0, 30000) +
      "naïve café – 東京 東京 😀😀 \xff\xfe";
  BpeTrainOptions opt;
  opt.vocab_size = 256 + 300 + 1;
  for (int threads : {1, 2}) {
    opt.threads = threads;
    auto got = learn_bpe_merges(text, opt);
    auto want = naive_merges(text, 300);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_EQ(got[i], want[i]) << "merge " << i << " threads " << threads;
  }
}

TEST(BpeTrainer, TrainedTokenizerRoundTripsAndCompresses) {
  const std::string text =
      read_file(test::shared_data() + "/tinyshakespeare.txt").substr(0, 200000);
  BpeTrainOptions opt;
  opt.vocab_size = 1000;
  BpeTokenizer t = train_bpe(text, opt);
  EXPECT_EQ(t.vocab_size(), 1000);
  auto ids = t.encode(text);
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_LT(ids.size(), text.size() / 2);  // a learned vocabulary compresses English
  const std::string dir = test::temp_dir("bpe_trained");
  t.save(dir);
  BpeTokenizer u = BpeTokenizer::load_dir(dir);
  EXPECT_EQ(u.encode(text), ids);
  EXPECT_EQ(u.special_id("<|endoftext|>"), 999);
}

}  // namespace
}  // namespace qkv

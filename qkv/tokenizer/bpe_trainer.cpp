#include "qkv/tokenizer/bpe_trainer.h"

#include <algorithm>
#include <cctype>
#include <queue>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "qkv/core/error.h"

namespace qkv {

namespace {

uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

struct Word {
  std::vector<int32_t> sym;
  int64_t count;
};

// Counts the pre-tokenized pieces of `text` (GPT-2 regex), optionally across threads.
std::unordered_map<std::string, int64_t> count_pieces(std::string_view text, int threads) {
  const BpeTokenizer& pre = *[] {
    static BpeTokenizer t = BpeTokenizer::from_merges({}, {});
    return &t;
  }();
  threads = std::max(1, threads);
  std::vector<std::unordered_map<std::string, int64_t>> partial(static_cast<size_t>(threads));
  const std::vector<size_t> cuts = BpeTokenizer::safe_cuts(text, threads);
  std::vector<std::thread> pool;
  for (int t = 0; t + 1 < int(cuts.size()); ++t) {
    pool.emplace_back([&, t] {
      const size_t b = cuts[size_t(t)], e = cuts[size_t(t) + 1];
      std::vector<std::pair<size_t, size_t>> pieces;
      std::string_view chunk = text.substr(b, e - b);
      pre.pretokenize(chunk, pieces);
      auto& m = partial[size_t(t)];
      for (auto [pb, pe] : pieces) ++m[std::string(chunk.substr(pb, pe - pb))];
    });
  }
  for (auto& th : pool) th.join();
  for (size_t t = 1; t < partial.size(); ++t)
    for (auto& [k, v] : partial[t]) partial[0][k] += v;
  return std::move(partial[0]);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> learn_bpe_merges(std::string_view text,
                                                                  const BpeTrainOptions& opt) {
  const int n_merges = opt.vocab_size - 256 - int(opt.specials.size());
  QKV_CHECK(n_merges >= 0,
            "[bpe] vocab size {} is smaller than the 256 byte tokens + {} special tokens",
            opt.vocab_size, opt.specials.size());
  // Symbols: 0..255 are bytes; merge i creates symbol 256 + i.
  std::vector<std::string> sym_bytes(256);
  for (int b = 0; b < 256; ++b) sym_bytes[size_t(b)] = std::string(1, char(b));
  std::vector<Word> words;
  {
    auto counts = count_pieces(text, opt.threads);
    words.reserve(counts.size());
    for (auto& [piece, c] : counts) {
      Word w;
      w.count = c;
      for (unsigned char ch : piece) w.sym.push_back(ch);
      words.push_back(std::move(w));
    }
    // Word order does not change the result, but keep it fixed anyway.
    std::sort(words.begin(), words.end(),
              [](const Word& a, const Word& b) { return a.sym < b.sym; });
  }
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  for (size_t w = 0; w < words.size(); ++w) {
    const auto& s = words[w].sym;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t k = key(s[i], s[i + 1]);
      pair_count[k] += words[w].count;
      auto& v = where[k];
      if (v.empty() || v.back() != int32_t(w)) v.push_back(int32_t(w));
    }
  }
  struct Entry {
    int64_t count;
    uint64_t pair;
  };
  // Highest count first; ties: smallest (left bytes, right bytes).
  auto worse = [&](const Entry& x, const Entry& y) {
    if (x.count != y.count) return x.count < y.count;
    const std::string& xa = sym_bytes[x.pair >> 32];
    const std::string& ya = sym_bytes[y.pair >> 32];
    if (xa != ya) return xa > ya;
    return sym_bytes[uint32_t(x.pair)] > sym_bytes[uint32_t(y.pair)];
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(worse)> heap(worse);
  for (auto& [k, c] : pair_count) heap.push({c, k});

  std::vector<std::pair<std::string, std::string>> merges;
  std::unordered_set<uint64_t> touched;
  while (int(merges.size()) < n_merges && !heap.empty()) {
    Entry top = heap.top();
    heap.pop();
    auto it = pair_count.find(top.pair);
    if (it == pair_count.end() || it->second != top.count) continue;  // stale
    if (top.count < opt.min_pair_count) break;
    const int32_t a = int32_t(top.pair >> 32), b = int32_t(uint32_t(top.pair));
    const int32_t c = int32_t(sym_bytes.size());
    sym_bytes.push_back(sym_bytes[size_t(a)] + sym_bytes[size_t(b)]);
    merges.emplace_back(sym_bytes[size_t(a)], sym_bytes[size_t(b)]);
    touched.clear();
    std::vector<int32_t> ws = std::move(where[top.pair]);
    where.erase(top.pair);
    for (int32_t wi : ws) {
      Word& w = words[size_t(wi)];
      auto& s = w.sym;
      bool has = false;
      for (size_t i = 0; i + 1 < s.size(); ++i)
        if (s[i] == a && s[i + 1] == b) {
          has = true;
          break;
        }
      if (!has) continue;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        uint64_t k = key(s[i], s[i + 1]);
        pair_count[k] -= w.count;
        touched.insert(k);
      }
      std::vector<int32_t> out;
      out.reserve(s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          out.push_back(c);
          ++i;
        } else {
          out.push_back(s[i]);
        }
      }
      s = std::move(out);
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        uint64_t k = key(s[i], s[i + 1]);
        pair_count[k] += w.count;
        touched.insert(k);
        auto& v = where[k];
        if (v.empty() || v.back() != wi) v.push_back(wi);
      }
    }
    for (uint64_t k : touched) {
      auto pc = pair_count.find(k);
      if (pc == pair_count.end()) continue;
      if (pc->second <= 0)
        pair_count.erase(pc);
      else
        heap.push({pc->second, k});
    }
    if (opt.progress && (merges.size() % 256 == 0 || int(merges.size()) == n_merges))
      opt.progress(int(merges.size()), n_merges);
  }
  return merges;
}

BpeTokenizer train_bpe(std::string_view text, const BpeTrainOptions& opt) {
  return BpeTokenizer::from_merges(learn_bpe_merges(text, opt), opt.specials);
}

}  // namespace qkv

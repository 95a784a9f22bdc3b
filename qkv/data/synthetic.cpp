#include "qkv/data/synthetic.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/rng.h"

namespace qkv {

namespace {
template <size_t N>
const char* pick(Rng& rng, const char* const (&list)[N]) {
  return list[rng.below(N)];
}
}  // namespace

std::vector<LabelledText> synth_sentiment(int n, uint64_t seed, uint64_t stream) {
  static const char* const openers[] = {"", "honestly, ", "i think ", "overall ", "well, "};
  static const char* const subjects[] = {"film",  "movie", "book",  "meal", "show",  "song",
                                         "hotel", "game",  "story", "play", "album", "trip"};
  static const char* const verbs[] = {"was", "is", "seemed", "felt", "looked"};
  static const char* const negs[] = {"", "not ", "never "};
  static const char* const intens[] = {"", "very ", "really ", "quite "};
  static const char* const good[] = {"good",     "great",    "fun",       "lovely",     "superb",
                                     "pleasant", "charming", "brilliant", "delightful", "fine"};
  static const char* const bad[] = {"bad",   "awful", "dull",    "boring",   "terrible",
                                    "bland", "poor",  "tedious", "dreadful", "weak"};
  static const char* const endings[] = {"", " today", " to me", " again", " at all"};
  Rng rng(seed, stream);
  std::vector<LabelledText> out;
  out.reserve(size_t(n));
  for (int i = 0; i < n; ++i) {
    const bool positive_word = rng.below(2) == 0;
    const char* neg = pick(rng, negs);
    std::string t = std::string(pick(rng, openers)) + "the " + pick(rng, subjects) + " " +
                    pick(rng, verbs) + " " + neg + pick(rng, intens) +
                    (positive_word ? pick(rng, good) : pick(rng, bad)) + pick(rng, endings);
    const bool negated = neg[0] != '\0';
    out.push_back({t, positive_word != negated ? "positive" : "negative", i + 1});
  }
  return out;
}

std::string number_words(int64_t v) {
  QKV_CHECK(v >= 0 && v < 1000000, "number_words: {} out of range [0, 10^6)", v);
  static const char* const ones[] = {"zero",    "one",     "two",       "three",    "four",
                                     "five",    "six",     "seven",     "eight",    "nine",
                                     "ten",     "eleven",  "twelve",    "thirteen", "fourteen",
                                     "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"};
  static const char* const tens[] = {"",      "",      "twenty",  "thirty", "forty",
                                     "fifty", "sixty", "seventy", "eighty", "ninety"};
  auto below_1000 = [&](int x) {
    std::string s;
    if (x >= 100) {
      s = std::string(ones[x / 100]) + " hundred";
      x %= 100;
      if (x) s += " ";
    }
    if (x >= 20) {
      s += tens[x / 10];
      if (x % 10) s += std::string("-") + ones[x % 10];
    } else if (x > 0 || s.empty()) {
      s += ones[x];
    }
    return s;
  };
  if (v < 1000) return below_1000(int(v));
  std::string s = below_1000(int(v / 1000)) + " thousand";
  if (v % 1000) s += " " + below_1000(int(v % 1000));
  return s;
}

std::vector<TextPair> synth_pairs(const std::string& task, int n, int min_len, int max_len,
                                  uint64_t seed, uint64_t stream) {
  QKV_CHECK(task == "reverse" || task == "sort" || task == "spell",
            "unknown sequence task '{}' (reverse, sort, spell)", task);
  QKV_CHECK(min_len >= 1 && max_len >= min_len, "lengths {}..{} are not a range >= 1", min_len,
            max_len);
  QKV_CHECK(task != "spell" || max_len <= 6, "spell: numbers have at most 6 digits, not {}",
            max_len);
  Rng rng(seed, stream);
  std::vector<TextPair> out;
  out.reserve(size_t(n));
  for (int i = 0; i < n; ++i) {
    const int len = min_len + int(rng.below(uint64_t(max_len - min_len + 1)));
    TextPair p;
    p.line = i + 1;
    if (task == "spell") {
      int64_t v = len == 1 ? int64_t(rng.below(10)) : 1 + int64_t(rng.below(9));
      for (int d = 1; d < len; ++d) v = v * 10 + int64_t(rng.below(10));
      p.source = std::to_string(v);
      p.target = number_words(v);
    } else {
      for (int k = 0; k < len; ++k) p.source += char('a' + rng.below(26));
      p.target = p.source;
      if (task == "reverse")
        std::reverse(p.target.begin(), p.target.end());
      else
        std::sort(p.target.begin(), p.target.end());
    }
    out.push_back(std::move(p));
  }
  return out;
}

void write_synthetic(const std::string& task, const std::string& dir, int n_train, int n_valid,
                     int n_test, int min_len, int max_len, uint64_t seed) {
  QKV_CHECK(n_train >= 1 && n_valid >= 0 && n_test >= 0, "bad split sizes {}/{}/{}", n_train,
            n_valid, n_test);
  make_dirs(dir);
  if (task == "sentiment") {
    const auto train = synth_sentiment(n_train, seed, 1);
    std::set<std::string> seen;
    std::string tj, text;
    for (const auto& e : train) {
      seen.insert(e.text);
      tj += nlohmann::json({{"text", e.text}, {"label", e.label}}).dump() + "\n";
      text += e.text + "\n";
    }
    std::string vj;
    int got = 0;
    for (uint64_t stream = 2; got < n_valid; ++stream)
      for (const auto& e : synth_sentiment(n_valid, seed, stream)) {
        if (got == n_valid || !seen.insert(e.text).second) continue;
        vj += nlohmann::json({{"text", e.text}, {"label", e.label}}).dump() + "\n";
        ++got;
      }
    write_file_atomic(dir + "/train.jsonl", tj);
    write_file_atomic(dir + "/valid.jsonl", vj);
    write_file_atomic(dir + "/text.txt", text);
    return;
  }
  const auto train = synth_pairs(task, n_train, min_len, max_len, seed, 1);
  std::set<std::string> seen;
  std::string t;
  for (const auto& p : train) {
    seen.insert(p.source);
    t += p.source + "\t" + p.target + "\n";
  }
  write_file_atomic(dir + "/train.tsv", t);
  uint64_t stream = 2;
  for (auto [name, count] : {std::pair{"valid", n_valid}, std::pair{"test", n_test}}) {
    std::string s;
    int got = 0;
    for (int tries = 0; got < count; ++tries, ++stream) {
      QKV_CHECK(tries < 1000,
                "{}: cannot draw {} held-out examples distinct from the training "
                "set (the task has too few distinct inputs; widen the lengths)",
                task, count);
      for (const auto& p : synth_pairs(task, count, min_len, max_len, seed, stream)) {
        if (got == count || !seen.insert(p.source).second) continue;
        s += p.source + "\t" + p.target + "\n";
        ++got;
      }
    }
    write_file_atomic(dir + "/" + name + ".tsv", s);
  }
}

}  // namespace qkv

// Supervised data files: labelled text (JSONL: {"text": ..., "label": ...}) for classification and
// source/target pairs (TSV: source<TAB>target) for sequence-to-sequence. Bad lines are found
// before any training: each is named FILE:LINE, and reading stops with one error line (naming
// the first and counting the rest) unless the caller skips them, counted, for the summary.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qkv {

struct BadLines {
  int64_t count = 0;
  std::vector<std::string> first;  // "FILE:LINE: why" of the first few
  void add(const std::string& file, int64_t line, const std::string& why);
  // Throws one line: every bad line up to the first 5 ("FILE:LINE: why; ..."), how many more,
  // and --skip-bad-lines (if count > 0).
  void throw_if_any() const;
};

struct LabelledText {
  std::string text, label;
  int64_t line = 0;
};
// Reads a JSONL file of {"text": string, "label": string or integer}. Blank lines are skipped.
// A line that is not JSON, not an object, has no string "text" (or an empty one) or no label is
// bad: recorded in `bad` and skipped (the caller decides whether to stop).
std::vector<LabelledText> read_labelled_jsonl(const std::string& path, BadLines* bad);

struct TextPair {
  std::string source, target;
  int64_t line = 0;
};
// Reads "source<TAB>target" lines (a trailing CR is dropped; blank lines skipped). A line with no
// tab, more than one tab, or an empty side is bad.
std::vector<TextPair> read_tsv_pairs(const std::string& path, BadLines* bad);

}  // namespace qkv

#include "qkv/data/labelled.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "qkv/core/error.h"

namespace qkv {

namespace {
constexpr size_t kKeepFirst = 5;

template <typename F>
void for_each_line(const std::string& path, F&& f) {
  std::ifstream in(path, std::ios::binary);
  QKV_CHECK(in.good(), "{}: cannot open", path);
  std::string line;
  for (int64_t no = 1; std::getline(in, line); ++no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    f(line, no);
  }
}
}  // namespace

void BadLines::add(const std::string& file, int64_t line, const std::string& why) {
  if (first.size() < kKeepFirst) first.push_back(file + ":" + std::to_string(line) + ": " + why);
  ++count;
}

void BadLines::throw_if_any() const {
  if (count == 0) return;
  std::string all;
  for (const auto& f : first) all += (all.empty() ? "" : "; ") + f;
  const int64_t more = count - int64_t(first.size());
  QKV_CHECK(false, "{}{} (--skip-bad-lines skips bad lines and counts them)", all,
            more > 0 ? fmt::format("; and {} more bad line{}", more, more > 1 ? "s" : "")
                     : std::string());
}

std::vector<LabelledText> read_labelled_jsonl(const std::string& path, BadLines* bad) {
  std::vector<LabelledText> out;
  for_each_line(path, [&](const std::string& line, int64_t no) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      return bad->add(path, no, "not valid JSON");
    }
    if (!j.is_object())
      return bad->add(path, no, "expected an object {\"text\": ..., \"label\": ...}");
    if (!j.contains("text") || !j["text"].is_string())
      return bad->add(path, no, "\"text\" is missing or not a string");
    LabelledText e;
    e.text = j["text"].get<std::string>();
    if (e.text.empty()) return bad->add(path, no, "\"text\" is empty");
    if (!j.contains("label") || j["label"].is_null()) return bad->add(path, no, "no \"label\"");
    const auto& l = j["label"];
    if (l.is_string())
      e.label = l.get<std::string>();
    else if (l.is_number_integer())
      e.label = std::to_string(l.get<int64_t>());
    else
      return bad->add(path, no, "\"label\" must be a string or an integer");
    if (e.label.empty()) return bad->add(path, no, "\"label\" is empty");
    e.line = no;
    out.push_back(std::move(e));
  });
  return out;
}

std::vector<TextPair> read_tsv_pairs(const std::string& path, BadLines* bad) {
  std::vector<TextPair> out;
  for_each_line(path, [&](const std::string& line, int64_t no) {
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) return bad->add(path, no, "no tab between source and target");
    if (line.find('\t', tab + 1) != std::string::npos)
      return bad->add(path, no, "more than one tab (expected source<TAB>target)");
    TextPair p{line.substr(0, tab), line.substr(tab + 1), no};
    if (p.source.empty() || p.target.empty()) return bad->add(path, no, "an empty side");
    out.push_back(std::move(p));
  });
  return out;
}

}  // namespace qkv

#include "qkv/tokenizer/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <limits>
#include <nlohmann/json.hpp>
#include <thread>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/tokenizer/char_tokenizer.h"

namespace qkv {

namespace {

// GPT-2's pre-tokenizer (tiktoken r50k_base / HF ByteLevel with use_regex).
constexpr const char* kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct ByteTable {
  uint32_t to_cp[256];
  int16_t from_cp[512];  // code points used are < 512; -1 if unused
  ByteTable() {
    std::fill(std::begin(from_cp), std::end(from_cp), int16_t(-1));
    bool printable[256] = {};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xa1; b <= 0xac; ++b) printable[b] = true;
    for (int b = 0xae; b <= 0xff; ++b) printable[b] = true;
    int n = 0;
    for (int b = 0; b < 256; ++b) to_cp[b] = printable[b] ? uint32_t(b) : uint32_t(256 + n++);
    for (int b = 0; b < 256; ++b) from_cp[to_cp[b]] = int16_t(b);
  }
};
const ByteTable& table() {
  static const ByteTable t;
  return t;
}

// A vocabulary key (GPT-2's unicode spelling) back to raw bytes; false if a character is not
// in the byte table.
bool key_to_bytes(const std::string& key, std::string& out) {
  out.clear();
  for (uint32_t cp : utf8_symbols(key)) {
    if (cp >= 512 || table().from_cp[cp] < 0) return false;
    out.push_back(char(table().from_cp[cp]));
  }
  return true;
}

std::string bytes_to_key(const std::string& bytes) {
  std::string s;
  for (unsigned char b : bytes) append_utf8(s, table().to_cp[b]);
  return s;
}

nlohmann::json parse_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    QKV_CHECK(false, "{}: not valid JSON ({})", path, e.what());
  }
}

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

}  // namespace

uint32_t gpt2_byte_to_unicode(uint8_t b) { return table().to_cp[b]; }

struct BpeTokenizer::Regex {
  pcre2_code* code = nullptr;
  Regex() {
    int err = 0;
    PCRE2_SIZE off = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    QKV_ASSERT(code != nullptr);
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is off
  }
  ~Regex() { pcre2_code_free(code); }
};

BpeTokenizer::BpeTokenizer() : re_(std::make_unique<Regex>()) {}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

void BpeTokenizer::build_index(const std::string& where) {
  bytes_id_.clear();
  for (size_t i = 0; i < id_bytes_.size(); ++i) {
    // Several ids may spell the same bytes only for special tokens; keep the first.
    bytes_id_.emplace(id_bytes_[i], int32_t(i));
  }
  for (int b = 0; b < 256; ++b) {
    auto it = bytes_id_.find(std::string(1, char(b)));
    QKV_CHECK(it != bytes_id_.end(),
              "{}: the vocabulary lacks the single byte 0x{:02x} (not a byte-level BPE)", where, b);
    byte_id_[b] = it->second;
  }
  merge_rank_.clear();
  merge_rank_.reserve(merges_.size() * 2);
  for (size_t r = 0; r < merges_.size(); ++r) {
    auto [a, b] = merges_[r];
    auto it = bytes_id_.find(id_bytes_[size_t(a)] + id_bytes_[size_t(b)]);
    QKV_CHECK(it != bytes_id_.end(), "{}: merge {} ('{}' + '{}') has no vocabulary entry", where,
              r + 1, bytes_to_key(id_bytes_[size_t(a)]), bytes_to_key(id_bytes_[size_t(b)]));
    merge_rank_.emplace(pair_key(a, b), std::make_pair(int32_t(r), it->second));
  }
}

bool BpeTokenizer::dir_has_bpe(const std::string& dir) {
  return (file_exists(dir + "/vocab.json") && file_exists(dir + "/merges.txt")) ||
         (file_exists(dir + "/encoder.json") && file_exists(dir + "/vocab.bpe")) ||
         file_exists(dir + "/tokenizer.json");
}

BpeTokenizer BpeTokenizer::load_dir(const std::string& dir) {
  if (file_exists(dir + "/vocab.json") && file_exists(dir + "/merges.txt"))
    return load(dir + "/vocab.json", dir + "/merges.txt");
  if (file_exists(dir + "/encoder.json") && file_exists(dir + "/vocab.bpe"))
    return load(dir + "/encoder.json", dir + "/vocab.bpe");
  const std::string tj = dir + "/tokenizer.json";
  QKV_CHECK(
      file_exists(tj),
      "{}: no tokenizer (vocab.json + merges.txt, encoder.json + vocab.bpe, or tokenizer.json)",
      dir);
  nlohmann::json j = parse_json_file(tj);
  QKV_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), "{}: missing \"model\"",
            tj);
  const auto& m = j["model"];
  QKV_CHECK(m.value("type", "BPE") == "BPE", "{}: model type '{}' is not BPE", tj,
            m.value("type", ""));
  QKV_CHECK(m.contains("vocab") && m["vocab"].is_object(), "{}: model.vocab must be an object", tj);
  QKV_CHECK(m.contains("merges") && m["merges"].is_array(), "{}: model.merges must be an array",
            tj);
  BpeTokenizer t;
  std::vector<std::pair<std::string, int64_t>> entries;
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    QKV_CHECK(it.value().is_number_integer(), "{}: vocab entry '{}' has a non-integer id", tj,
              it.key());
    entries.emplace_back(it.key(), it.value().get<int64_t>());
  }
  std::vector<std::string> merge_lines;
  for (const auto& e : m["merges"]) {
    if (e.is_string())
      merge_lines.push_back(e.get<std::string>());
    else {
      QKV_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(),
                "{}: bad merge entry {}", tj, e.dump());
      merge_lines.push_back(e[0].get<std::string>() + " " + e[1].get<std::string>());
    }
  }
  // Added (special) tokens.
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const auto& a : j["added_tokens"]) {
      QKV_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() &&
                    a.contains("content") && a["content"].is_string(),
                "{}: bad added_tokens entry", tj);
      if (a.value("special", false))
        t.specials_.emplace_back(a["content"].get<std::string>(), a["id"].get<int32_t>());
    }
  std::vector<std::string> id_bytes;
  for (auto& entry : entries) {
    const std::string& k = entry.first;
    const int64_t v = entry.second;
    QKV_CHECK(v >= 0 && v < (int64_t(1) << 24), "{}: id {} of '{}' out of range", tj, v, k);
    if (size_t(v) >= id_bytes.size()) id_bytes.resize(size_t(v) + 1);
    std::string bytes;
    bool is_special =
        std::any_of(t.specials_.begin(), t.specials_.end(), [&](auto& s) { return s.first == k; });
    if (!key_to_bytes(k, bytes)) {
      QKV_CHECK(is_special, "{}: vocab entry '{}' is not in GPT-2's byte alphabet", tj, k);
      bytes = k;
    }
    id_bytes[size_t(v)] = bytes;
  }
  t.id_bytes_ = std::move(id_bytes);
  t.build_index(tj);  // byte ids (merges empty yet)
  size_t line_no = 0;
  for (const auto& l : merge_lines) {
    ++line_no;
    auto sp = l.find(' ');
    QKV_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < l.size(),
              "{}: merge {} '{}' is not two tokens", tj, line_no, l);
    std::string a, b;
    QKV_CHECK(key_to_bytes(l.substr(0, sp), a) && key_to_bytes(l.substr(sp + 1), b),
              "{}: merge {} '{}' has characters outside GPT-2's byte alphabet", tj, line_no, l);
    auto ia = t.bytes_id_.find(a), ib = t.bytes_id_.find(b);
    QKV_CHECK(ia != t.bytes_id_.end() && ib != t.bytes_id_.end(),
              "{}: merge {} '{}' names a token not in the vocabulary", tj, line_no, l);
    t.merges_.emplace_back(ia->second, ib->second);
  }
  t.build_index(tj);
  return t;
}

BpeTokenizer BpeTokenizer::load(const std::string& vocab_json, const std::string& merges_txt) {
  nlohmann::json v = parse_json_file(vocab_json);
  QKV_CHECK(v.is_object() && !v.empty(), "{}: expected a JSON object mapping tokens to ids",
            vocab_json);
  BpeTokenizer t;
  std::vector<bool> seen;
  for (auto it = v.begin(); it != v.end(); ++it) {
    QKV_CHECK(it.value().is_number_integer(), "{}: token '{}' has a non-integer id {}", vocab_json,
              it.key(), it.value().dump());
    const int64_t id = it.value().get<int64_t>();
    QKV_CHECK(id >= 0 && id < (int64_t(1) << 24), "{}: token '{}' has id {} out of range",
              vocab_json, it.key(), id);
    if (size_t(id) >= t.id_bytes_.size()) {
      t.id_bytes_.resize(size_t(id) + 1);
      seen.resize(size_t(id) + 1);
    }
    QKV_CHECK(!seen[size_t(id)], "{}: id {} is used twice", vocab_json, id);
    seen[size_t(id)] = true;
    std::string bytes;
    QKV_CHECK(key_to_bytes(it.key(), bytes),
              "{}: token '{}' has characters outside GPT-2's byte alphabet", vocab_json, it.key());
    t.id_bytes_[size_t(id)] = bytes;
    if (it.key().size() > 4 && it.key().rfind("<|", 0) == 0 &&
        it.key().compare(it.key().size() - 2, 2, "|>") == 0)
      t.specials_.emplace_back(it.key(), int32_t(id));
  }
  for (size_t i = 0; i < seen.size(); ++i)
    QKV_CHECK(seen[i], "{}: no token has id {} (ids must be 0..{})", vocab_json, i,
              seen.size() - 1);
  t.build_index(vocab_json);
  const std::string text = read_file(merges_txt);
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    auto sp = line.find(' ');
    QKV_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < line.size() &&
                  line.find(' ', sp + 1) == std::string::npos,
              "{}:{}: expected two tokens separated by one space, got '{}'", merges_txt, line_no,
              line);
    std::string a, b;
    QKV_CHECK(key_to_bytes(line.substr(0, sp), a) && key_to_bytes(line.substr(sp + 1), b),
              "{}:{}: '{}' has characters outside GPT-2's byte alphabet", merges_txt, line_no,
              line);
    auto ia = t.bytes_id_.find(a), ib = t.bytes_id_.find(b);
    QKV_CHECK(ia != t.bytes_id_.end() && ib != t.bytes_id_.end(),
              "{}:{}: merge '{}' names a token not in {}", merges_txt, line_no, line, vocab_json);
    t.merges_.emplace_back(ia->second, ib->second);
  }
  t.build_index(merges_txt);
  return t;
}

BpeTokenizer BpeTokenizer::from_merges(
    const std::vector<std::pair<std::string, std::string>>& merges_bytes,
    const std::vector<std::string>& specials) {
  BpeTokenizer t;
  for (int b = 0; b < 256; ++b) t.id_bytes_.push_back(std::string(1, char(b)));
  // GPT-2 orders the 256 byte tokens by their unicode spelling; so do we.
  std::sort(t.id_bytes_.begin(), t.id_bytes_.end(), [](const std::string& x, const std::string& y) {
    return table().to_cp[uint8_t(x[0])] < table().to_cp[uint8_t(y[0])];
  });
  t.build_index("trainer");
  for (const auto& [a, b] : merges_bytes) {
    auto ia = t.bytes_id_.at(a), ib = t.bytes_id_.at(b);
    std::string ab = a + b;
    if (!t.bytes_id_.count(ab)) {
      t.bytes_id_[ab] = int32_t(t.id_bytes_.size());
      t.id_bytes_.push_back(ab);
    }
    t.merges_.emplace_back(ia, ib);
  }
  for (const auto& s : specials) {
    t.specials_.emplace_back(s, int32_t(t.id_bytes_.size()));
    t.id_bytes_.push_back(s);
  }
  t.build_index("trainer");
  return t;
}

void BpeTokenizer::save(const std::string& dir) const {
  make_dirs(dir);
  nlohmann::ordered_json v = nlohmann::ordered_json::object();
  for (size_t i = 0; i < id_bytes_.size(); ++i) v[bytes_to_key(id_bytes_[i])] = i;
  write_file_atomic(dir + "/vocab.json", v.dump() + "\n");
  std::string m = "#version: 0.2\n";
  for (auto [a, b] : merges_)
    m += bytes_to_key(id_bytes_[size_t(a)]) + " " + bytes_to_key(id_bytes_[size_t(b)]) + "\n";
  write_file_atomic(dir + "/merges.txt", m);
}

const std::string& BpeTokenizer::token_bytes(int32_t id) const {
  QKV_CHECK(id >= 0 && size_t(id) < id_bytes_.size(),
            "[tokenizer] id {} is outside the vocabulary [0, {})", id, id_bytes_.size());
  return id_bytes_[size_t(id)];
}

int32_t BpeTokenizer::special_id(const std::string& token) const {
  for (const auto& [s, id] : specials_)
    if (s == token) return id;
  return -1;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

void BpeTokenizer::pretokenize(std::string_view text,
                               std::vector<std::pair<size_t, size_t>>& pieces) const {
  pieces.clear();
  if (text.empty()) return;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re_->code, nullptr);
  QKV_CHECK(md != nullptr, "[tokenizer] out of memory");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    int rc = pcre2_match(re_->code, subject, text.size(), pos, 0, md, nullptr);
    if (rc < 0) {  // only invalid UTF-8 remains: one piece
      pieces.emplace_back(pos, text.size());
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[0] > pos) pieces.emplace_back(pos, ov[0]);  // invalid bytes before the match
    if (ov[1] == ov[0]) {  // cannot happen with this pattern; guard against a loop
      pos = ov[0] + 1;
      continue;
    }
    pieces.emplace_back(ov[0], ov[1]);
    pos = ov[1];
  }
  pcre2_match_data_free(md);
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_id_[uint8_t(piece[0])]);
    return;
  }
  // A whole piece that is a token is that token (as tiktoken does).
  auto whole = bytes_id_.find(std::string(piece));
  if (whole != bytes_id_.end() && whole->second < int32_t(id_bytes_.size()) &&
      std::none_of(specials_.begin(), specials_.end(),
                   [&](auto& s) { return s.second == whole->second; })) {
    out.push_back(whole->second);
    return;
  }
  // Merge the lowest-ranked adjacent pair (leftmost on ties) until none is left.
  thread_local std::vector<int32_t> parts;
  thread_local std::vector<int32_t> ranks;
  parts.resize(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) parts[i] = byte_id_[uint8_t(piece[i])];
  constexpr int32_t kNo = std::numeric_limits<int32_t>::max();
  auto rank_of = [&](size_t i) {
    auto it = merge_rank_.find(pair_key(parts[i], parts[i + 1]));
    return it == merge_rank_.end() ? kNo : it->second.first;
  };
  ranks.resize(parts.size());
  for (size_t i = 0; i + 1 < parts.size(); ++i) ranks[i] = rank_of(i);
  while (parts.size() > 1) {
    size_t best = 0;
    int32_t best_rank = kNo;
    for (size_t i = 0; i + 1 < parts.size(); ++i)
      if (ranks[i] < best_rank) {
        best_rank = ranks[i];
        best = i;
      }
    if (best_rank == kNo) break;
    parts[best] = merge_rank_.find(pair_key(parts[best], parts[best + 1]))->second.second;
    parts.erase(parts.begin() + long(best) + 1);
    ranks.erase(ranks.begin() + long(best) + 1);
    if (best + 1 < parts.size())
      ranks[best] = rank_of(best);
    else
      ranks[best] = kNo;
    if (best > 0) ranks[best - 1] = rank_of(best - 1);
  }
  out.insert(out.end(), parts.begin(), parts.end());
}

void BpeTokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  thread_local std::vector<std::pair<size_t, size_t>> pieces;
  pretokenize(text, pieces);
  for (auto [b, e] : pieces) encode_piece(text.substr(b, e - b), out);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool allow_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (!allow_special || specials_.empty()) {
    encode_ordinary(text, out);
    return out;
  }
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t best = std::string_view::npos;
    const std::pair<std::string, int32_t>* which = nullptr;
    for (const auto& s : specials_) {
      size_t f = text.find(s.first, pos);
      if (f < best) {
        best = f;
        which = &s;
      }
    }
    if (which == nullptr) {
      encode_ordinary(text.substr(pos), out);
      break;
    }
    encode_ordinary(text.substr(pos, best - pos), out);
    out.push_back(which->second);
    pos = best + which->first.size();
  }
  return out;
}

std::vector<size_t> BpeTokenizer::safe_cuts(std::string_view text, int parts) {
  // After "\n\n" a cut would not be safe: at the end of a part the two newlines become one
  // piece, in the whole text two. A lone newline is its own piece either way.
  auto lone_newline = [&](size_t p) {
    return p > 0 && text[p] == '\n' && std::isalnum(static_cast<unsigned char>(text[p + 1])) &&
           !std::isspace(static_cast<unsigned char>(text[p - 1])) && uint8_t(text[p - 1]) < 0x80;
  };
  std::vector<size_t> cuts = {0};
  for (int t = 1; t < parts; ++t) {
    size_t p = text.size() * size_t(t) / size_t(parts);
    while (p + 1 < text.size() && !lone_newline(p)) ++p;
    if (p + 1 < text.size() && p + 1 > cuts.back()) cuts.push_back(p + 1);
  }
  cuts.push_back(text.size());
  return cuts;
}

std::vector<int32_t> BpeTokenizer::encode_parallel(std::string_view text, int threads) const {
  if (threads <= 1 || text.size() < (1 << 20)) return encode(text);
  const std::vector<size_t> cuts = safe_cuts(text, threads * 4);
  std::vector<std::vector<int32_t>> parts(cuts.size() - 1);
  std::vector<std::thread> pool;
  std::atomic<size_t> next{0};
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < parts.size();)
        encode_ordinary(text.substr(cuts[i], cuts[i + 1] - cuts[i]), parts[i]);
    });
  for (auto& th : pool) th.join();
  std::vector<int32_t> out;
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace qkv

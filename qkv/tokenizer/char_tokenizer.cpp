#include "qkv/tokenizer/char_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "qkv/core/error.h"
#include "qkv/core/file.h"

namespace qkv {

namespace {
constexpr uint32_t kRawByte = 0x110000;

std::string describe(uint32_t sym) {
  if (sym >= kRawByte) return fmt::format("invalid UTF-8 byte 0x{:02x}", sym - kRawByte);
  std::string s;
  append_utf8(s, sym);
  if (sym < 0x20 || sym == 0x7f) s = fmt::format("\\x{:02x}", sym);
  return fmt::format("'{}' (U+{:04X})", s, sym);
}
}  // namespace

std::vector<uint32_t> utf8_symbols(std::string_view t, std::vector<size_t>* offsets) {
  std::vector<uint32_t> out;
  out.reserve(t.size());
  size_t i = 0;
  const auto* s = reinterpret_cast<const unsigned char*>(t.data());
  while (i < t.size()) {
    unsigned char c = s[i];
    uint32_t cp = 0;
    int len = 0;
    if (c < 0x80) {
      cp = c;
      len = 1;
    } else if ((c & 0xe0) == 0xc0) {
      cp = c & 0x1f;
      len = 2;
    } else if ((c & 0xf0) == 0xe0) {
      cp = c & 0x0f;
      len = 3;
    } else if ((c & 0xf8) == 0xf0) {
      cp = c & 0x07;
      len = 4;
    }
    bool ok = len > 0 && i + len <= t.size();
    for (int k = 1; ok && k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80)
        ok = false;
      else
        cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
               (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff))
      ok = false;
    if (offsets) offsets->push_back(i);
    if (ok) {
      out.push_back(cp);
      i += size_t(len);
    } else {
      out.push_back(kRawByte + c);
      i += 1;
    }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp >= kRawByte)
    out.push_back(char(cp - kRawByte));
  else if (cp < 0x80)
    out.push_back(char(cp));
  else if (cp < 0x800) {
    out.push_back(char(0xc0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xe0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(char(0xf0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  }
}

CharTokenizer CharTokenizer::from_text(std::string_view text) {
  QKV_CHECK(!text.empty(), "[tokenizer] cannot build a character vocabulary from empty text");
  std::vector<uint32_t> syms = utf8_symbols(text);
  std::sort(syms.begin(), syms.end());
  syms.erase(std::unique(syms.begin(), syms.end()), syms.end());
  CharTokenizer t;
  t.kind_ = Kind::Char;
  t.symbols_ = std::move(syms);
  for (size_t i = 0; i < t.symbols_.size(); ++i) t.index_[t.symbols_[i]] = int32_t(i);
  return t;
}

CharTokenizer CharTokenizer::bytes() { return CharTokenizer(); }

std::vector<int32_t> CharTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  if (kind_ == Kind::Byte) {
    ids.reserve(text.size());
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::vector<size_t> offsets;
  std::vector<uint32_t> syms = utf8_symbols(text, &offsets);
  ids.reserve(syms.size());
  for (size_t i = 0; i < syms.size(); ++i) {
    auto it = index_.find(syms[i]);
    QKV_CHECK(it != index_.end(), "[tokenizer] character {} at byte {} is not in the vocabulary",
              describe(syms[i]), offsets[i]);
    ids.push_back(it->second);
  }
  return ids;
}

std::string CharTokenizer::decode_one(int32_t id) const {
  QKV_CHECK(id >= 0 && id < vocab_size(), "[tokenizer] id {} is outside the vocabulary [0, {})", id,
            vocab_size());
  std::string s;
  if (kind_ == Kind::Byte)
    s.push_back(char(id));
  else
    append_utf8(s, symbols_[size_t(id)]);
  return s;
}

std::string CharTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) s += decode_one(id);
  return s;
}

void CharTokenizer::save(const std::string& path) const {
  nlohmann::json j;
  j["type"] = kind_ == Kind::Byte ? "byte" : "char";
  if (kind_ == Kind::Char) j["symbols"] = symbols_;
  write_file_atomic(path, j.dump() + "\n");
}

CharTokenizer CharTokenizer::load(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    QKV_CHECK(false, "{}: not valid JSON ({})", path, e.what());
  }
  QKV_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(),
            "{}: missing \"type\" (\"char\" or \"byte\")", path);
  const std::string type = j["type"].get<std::string>();
  if (type == "byte") return bytes();
  QKV_CHECK(type == "char", "{}: unknown tokenizer type '{}'", path, type);
  QKV_CHECK(j.contains("symbols") && j["symbols"].is_array() && !j["symbols"].empty(),
            "{}: \"symbols\" must be a non-empty array", path);
  CharTokenizer t;
  t.kind_ = Kind::Char;
  for (const auto& v : j["symbols"]) {
    QKV_CHECK(v.is_number_unsigned() && v.get<uint64_t>() < kRawByte + 256, "{}: bad symbol {}",
              path, v.dump());
    uint32_t s = v.get<uint32_t>();
    QKV_CHECK(t.index_.emplace(s, int32_t(t.symbols_.size())).second, "{}: duplicate symbol {}",
              path, s);
    t.symbols_.push_back(s);
  }
  return t;
}

}  // namespace qkv

// Character-level tokenizer (nanoGPT's shakespeare_char: the sorted unique characters of the
// training text, as Unicode code points) and the byte-level fallback (256 ids, one per byte).
// Bytes that are not valid UTF-8 are kept as their own symbols, so decode(encode(s)) == s.
// Stored in a model directory as qkv_tokenizer.json.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qkv {

class CharTokenizer {
 public:
  enum class Kind { Char, Byte };
  static constexpr const char* kFileName = "qkv_tokenizer.json";

  static CharTokenizer from_text(std::string_view text);  // Kind::Char
  static CharTokenizer bytes();                           // Kind::Byte
  static CharTokenizer load(const std::string& path);

  Kind kind() const { return kind_; }
  int vocab_size() const { return kind_ == Kind::Byte ? 256 : int(symbols_.size()); }
  // Throws qkv::Error naming the first character not in the vocabulary and its byte offset.
  std::vector<int32_t> encode(std::string_view text) const;
  // Invalid ids throw.
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string decode_one(int32_t id) const;
  void save(const std::string& path) const;

 private:
  Kind kind_ = Kind::Byte;
  std::vector<uint32_t> symbols_;  // id -> code point (>= 0x110000: raw byte 0x110000 + b)
  std::unordered_map<uint32_t, int32_t> index_;
};

// Splits UTF-8 text into symbols: code points, or 0x110000 + byte for an invalid byte.
// If offsets is non-null it receives each symbol's byte offset.
std::vector<uint32_t> utf8_symbols(std::string_view text, std::vector<size_t>* offsets = nullptr);
void append_utf8(std::string& out, uint32_t symbol);

}  // namespace qkv

// Byte-level BPE, exactly GPT-2's: the pre-tokenizer regex (Unicode letters/numbers/whitespace),
// the byte <-> unicode table, merges applied by rank (lowest first, leftmost on ties), and
// <|endoftext|> as a special token when asked for. Reads Hugging Face vocab.json + merges.txt,
// OpenAI's encoder.json + vocab.bpe, or a BPE tokenizer.json. Bytes that are not valid UTF-8 are
// kept as their own pieces, so decode(encode(x)) == x for any bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qkv {

class BpeTokenizer {
 public:
  // Loads from a directory holding vocab.json + merges.txt (or encoder.json + vocab.bpe, or
  // tokenizer.json). Throws qkv::Error naming the file and the problem.
  static BpeTokenizer load_dir(const std::string& dir);
  static BpeTokenizer load(const std::string& vocab_json, const std::string& merges_txt);
  static bool dir_has_bpe(const std::string& dir);

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer();

  int vocab_size() const { return int(id_bytes_.size()); }
  // With allow_special, "<|endoftext|>" (and any other special token) in the text becomes its id.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = false) const;
  // Thread-parallel encoding of a large text: split at line boundaries, same result as encode().
  std::vector<int32_t> encode_parallel(std::string_view text, int threads) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  const std::string& token_bytes(int32_t id) const;
  int32_t special_id(const std::string& token) const;  // -1 if absent

  // Writes vocab.json + merges.txt (Hugging Face layout).
  void save(const std::string& dir) const;
  // Builds a tokenizer from learned merges over the 256 byte tokens (used by the trainer).
  static BpeTokenizer from_merges(
      const std::vector<std::pair<std::string, std::string>>& merges_bytes,
      const std::vector<std::string>& specials);

  // The pre-tokenizer alone: the pieces GPT-2's regex splits `text` into (byte ranges).
  void pretokenize(std::string_view text, std::vector<std::pair<size_t, size_t>>& pieces) const;
  // Up to `parts` + 1 byte offsets (first 0, last text.size()) that split `text` where GPT-2's
  // pre-tokenizer gives the same pieces for the parts as for the whole: after a lone newline
  // that follows a non-space ASCII byte and precedes an ASCII letter or digit.
  static std::vector<size_t> safe_cuts(std::string_view text, int parts);
  // BPE of one pre-token (raw bytes) appended to out.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

 private:
  BpeTokenizer();
  void build_index(const std::string& where);
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;

  struct Regex;
  std::unique_ptr<Regex> re_;
  std::vector<std::string> id_bytes_;                  // id -> raw bytes
  std::unordered_map<std::string, int32_t> bytes_id_;  // raw bytes -> id
  std::vector<std::pair<int32_t, int32_t>> merges_;    // rank -> (left id, right id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_rank_;  // (l, r) -> (rank, id)
  int32_t byte_id_[256] = {};
  std::vector<std::pair<std::string, int32_t>> specials_;
};

// GPT-2's byte -> unicode code point table (printable bytes map to themselves).
uint32_t gpt2_byte_to_unicode(uint8_t b);

}  // namespace qkv

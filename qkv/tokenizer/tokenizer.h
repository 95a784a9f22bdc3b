// The tokenizer a model directory holds, behind one interface: GPT-2 byte-level BPE
// (vocab.json + merges.txt, encoder.json + vocab.bpe, or tokenizer.json) or qkv's own character /
// byte vocabulary (qkv_tokenizer.json).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qkv {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int vocab_size() const = 0;
  // `threads` > 1 may split a large text across threads (same ids).
  virtual std::vector<int32_t> encode(std::string_view text, int threads = 1) const = 0;
  // The raw bytes of one token (for streaming); throws for an id outside the vocabulary.
  virtual std::string token_bytes(int32_t id) const = 0;
  std::string decode(const std::vector<int32_t>& ids) const;
  // "bpe", "char" or "byte".
  virtual std::string kind() const = 0;
  // Writes the tokenizer's files into a model directory.
  virtual void save(const std::string& dir) const = 0;
};

// True if `dir` holds any tokenizer files.
bool has_tokenizer(const std::string& dir);
// Loads the tokenizer in a model directory; throws qkv::Error if none or broken.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);
// "char" (built from `text`), "byte", or a directory holding a BPE vocabulary.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec, std::string_view text);

}  // namespace qkv

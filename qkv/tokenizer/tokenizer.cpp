#include "qkv/tokenizer/tokenizer.h"

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/tokenizer/bpe_tokenizer.h"
#include "qkv/tokenizer/char_tokenizer.h"

namespace qkv {

namespace {

class BpeAdapter final : public Tokenizer {
 public:
  explicit BpeAdapter(BpeTokenizer t) : t_(std::move(t)) {}
  int vocab_size() const override { return t_.vocab_size(); }
  std::vector<int32_t> encode(std::string_view text, int threads) const override {
    return t_.encode_parallel(text, threads);
  }
  std::string token_bytes(int32_t id) const override { return t_.token_bytes(id); }
  std::string kind() const override { return "bpe"; }
  void save(const std::string& dir) const override { t_.save(dir); }

 private:
  BpeTokenizer t_;
};

class CharAdapter final : public Tokenizer {
 public:
  explicit CharAdapter(CharTokenizer t) : t_(std::move(t)) {}
  int vocab_size() const override { return t_.vocab_size(); }
  std::vector<int32_t> encode(std::string_view text, int) const override { return t_.encode(text); }
  std::string token_bytes(int32_t id) const override { return t_.decode_one(id); }
  std::string kind() const override {
    return t_.kind() == CharTokenizer::Kind::Byte ? "byte" : "char";
  }
  void save(const std::string& dir) const override {
    t_.save(dir + "/" + CharTokenizer::kFileName);
  }

 private:
  CharTokenizer t_;
};

}  // namespace

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) s += token_bytes(id);
  return s;
}

bool has_tokenizer(const std::string& dir) {
  return file_exists(dir + "/" + CharTokenizer::kFileName) || BpeTokenizer::dir_has_bpe(dir);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  if (file_exists(dir + "/" + CharTokenizer::kFileName))
    return std::make_unique<CharAdapter>(CharTokenizer::load(dir + "/" + CharTokenizer::kFileName));
  QKV_CHECK(
      BpeTokenizer::dir_has_bpe(dir),
      "{}: no tokenizer found (qkv_tokenizer.json, vocab.json + merges.txt, or tokenizer.json)",
      dir);
  return std::make_unique<BpeAdapter>(BpeTokenizer::load_dir(dir));
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec, std::string_view text) {
  if (spec == "char") return std::make_unique<CharAdapter>(CharTokenizer::from_text(text));
  if (spec == "byte") return std::make_unique<CharAdapter>(CharTokenizer::bytes());
  QKV_CHECK(file_exists(spec),
            "--tokenizer must be char, byte or a directory with a BPE vocabulary; '{}' is none",
            spec);
  return load_tokenizer(spec);
}

}  // namespace qkv

// Character and byte tokenizers: nanoGPT's shakespeare_char vocabulary (published in
// ../shared/data/README.md), round trips on random Unicode and invalid UTF-8, clear errors.
#include "qkv/tokenizer/char_tokenizer.h"

#include <gtest/gtest.h>

#include <string>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/rng.h"
#include "tests/test_paths.h"

namespace qkv {
namespace {

TEST(CharTokenizer, MatchesNanoGptShakespeareVocabulary) {
  std::string text = read_file(test::shared_data() + "/tinyshakespeare.txt");
  CharTokenizer t = CharTokenizer::from_text(text);
  EXPECT_EQ(t.vocab_size(), 65);
  EXPECT_EQ(t.encode("\n")[0], 0);
  EXPECT_EQ(t.encode(" ")[0], 1);
  EXPECT_EQ(t.encode("!")[0], 2);
  EXPECT_EQ(t.encode("a")[0], 39);
  EXPECT_EQ(t.encode("z")[0], 64);
  EXPECT_EQ(t.decode(t.encode(text)), text);
}

std::string random_text(Rng& rng, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    uint64_t kind = rng.below(5);
    if (kind == 0)
      s.push_back(char(rng.below(256)));  // possibly invalid UTF-8
    else {
      uint32_t cp = kind == 1   ? uint32_t(rng.below(0x80))
                    : kind == 2 ? uint32_t(0x80 + rng.below(0x780))
                    : kind == 3 ? uint32_t(0x800 + rng.below(0xd000))
                                : uint32_t(0x10000 + rng.below(0x100000));
      append_utf8(s, cp);
    }
  }
  return s;
}

TEST(CharTokenizer, RoundTripsAnyBytes) {
  Rng rng(5, 0);
  for (int rep = 0; rep < 50; ++rep) {
    std::string s = random_text(rng, 200);
    CharTokenizer t = CharTokenizer::from_text(s);
    EXPECT_EQ(t.decode(t.encode(s)), s);
    CharTokenizer b = CharTokenizer::bytes();
    EXPECT_EQ(b.decode(b.encode(s)), s);
    EXPECT_EQ(b.encode(s).size(), s.size());
  }
}

TEST(CharTokenizer, SaveLoadAndErrors) {
  CharTokenizer t = CharTokenizer::from_text("hello wörld\xff");
  std::string dir = test::temp_dir("tok");
  t.save(dir + "/t.json");
  CharTokenizer u = CharTokenizer::load(dir + "/t.json");
  EXPECT_EQ(u.vocab_size(), t.vocab_size());
  EXPECT_EQ(u.encode("wörld\xff"), t.encode("wörld\xff"));
  try {
    t.encode("hello?");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'?'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("byte 5"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.decode({999}), Error);
  write_file_atomic(dir + "/bad.json", "{\"type\": \"char\", \"symbols\": [1, 1]}");
  EXPECT_THROW(CharTokenizer::load(dir + "/bad.json"), Error);
  write_file_atomic(dir + "/bad2.json", "{\"type\": ");
  EXPECT_THROW(CharTokenizer::load(dir + "/bad2.json"), Error);
  EXPECT_THROW(CharTokenizer::from_text(""), Error);
}

}  // namespace
}  // namespace qkv

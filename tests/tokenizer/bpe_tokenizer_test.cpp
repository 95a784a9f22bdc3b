// GPT-2 byte-level BPE against OpenAI's tiktoken: every reference case in
// ../shared/data/gpt2/cases, and tiny Shakespeare's train/val splits against the .bin files
// nanoGPT's prepare.py produced (301,966 and 36,059 tokens). Plus round trips and bad files.
#include "qkv/tokenizer/bpe_tokenizer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/rng.h"
#include "qkv/tokenizer/char_tokenizer.h"
#include "tests/test_paths.h"

namespace qkv {

// GPT-2's tokenizer, loaded once for all the tests in this file.
const BpeTokenizer& gpt2() {
  static BpeTokenizer t = BpeTokenizer::load_dir(test::shared_data() + "/gpt2");
  return t;
}

namespace {

TEST(Bpe, EveryTiktokenCase) {
  const std::string dir = test::shared_data() + "/gpt2/cases";
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".txt") continue;
    const std::string text = read_file(e.path().string());
    auto want = nlohmann::json::parse(read_file(e.path().parent_path().string() + "/" +
                                                e.path().stem().string() + ".json"))
                    .get<std::vector<int32_t>>();
    auto got = gpt2().encode(text);
    EXPECT_EQ(got, want) << e.path().filename();
    EXPECT_EQ(gpt2().decode(got), text) << e.path().filename();
    ++n;
  }
  EXPECT_GE(n, 18);
}

std::vector<int32_t> read_u16(const std::string& path) {
  std::string raw = read_file(path);
  std::vector<int32_t> ids(raw.size() / 2);
  for (size_t i = 0; i < ids.size(); ++i) {
    uint16_t v;
    std::memcpy(&v, raw.data() + 2 * i, 2);
    ids[i] = v;
  }
  return ids;
}

TEST(Bpe, TinyShakespeareAsNanoGpt) {
  const std::string text = read_file(test::shared_data() + "/tinyshakespeare.txt");
  const size_t n = text.size() * 9 / 10;
  auto train = gpt2().encode_parallel(std::string_view(text).substr(0, n), 2);
  auto val = gpt2().encode(std::string_view(text).substr(n));
  EXPECT_EQ(train.size(), 301966u);
  EXPECT_EQ(val.size(), 36059u);
  EXPECT_EQ(train, read_u16(test::shared_data() + "/tinyshakespeare_gpt2_train.bin"));
  EXPECT_EQ(val, read_u16(test::shared_data() + "/tinyshakespeare_gpt2_val.bin"));
  EXPECT_EQ(gpt2().encode_parallel(text, 2), gpt2().encode(text));
}

TEST(Bpe, RoundTripsRandomUnicodeAndInvalidBytes) {
  Rng rng(11, 0);
  for (int rep = 0; rep < 300; ++rep) {
    std::string s;
    const size_t len = rng.below(60);
    for (size_t i = 0; i < len; ++i) {
      switch (rng.below(6)) {
        case 0:
          s.push_back(char(rng.below(256)));
          break;
        case 1:
          s.push_back(" \n\t\r'"[rng.below(5)]);
          break;
        case 2:
          append_utf8(s, uint32_t(0x20 + rng.below(0x60)));
          break;
        case 3:
          append_utf8(s, uint32_t(0x80 + rng.below(0x700)));
          break;
        case 4:
          append_utf8(s, uint32_t(0x3000 + rng.below(0x9000)));
          break;
        default:
          append_utf8(s, uint32_t(0x1f300 + rng.below(0x300)));
          break;
      }
    }
    EXPECT_EQ(gpt2().decode(gpt2().encode(s)), s) << "rep " << rep;
  }
}

TEST(Bpe, SpecialTokenOnlyWhenAllowed) {
  const std::string s = "a<|endoftext|>b";
  auto plain = gpt2().encode(s);
  auto special = gpt2().encode(s, true);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 50256), 0);
  ASSERT_EQ(special.size(), 3u);
  EXPECT_EQ(special[1], 50256);
  EXPECT_EQ(gpt2().decode(special), s);
  EXPECT_EQ(gpt2().special_id("<|endoftext|>"), 50256);
}

TEST(Bpe, SaveLoadRoundTrip) {
  const std::string dir = test::temp_dir("bpe_save");
  gpt2().save(dir);
  EXPECT_EQ(read_file(dir + "/merges.txt"), read_file(test::shared_data() + "/gpt2/merges.txt"));
  BpeTokenizer t = BpeTokenizer::load_dir(dir);
  const std::string s = read_file(test::shared_data() + "/gpt2/cases/06-english-prose.txt");
  EXPECT_EQ(t.encode(s), gpt2().encode(s));
}

void expect_load_error(const std::string& vocab, const std::string& merges,
                       const std::string& needle) {
  const std::string dir = test::temp_dir("bpe_bad");
  write_file_atomic(dir + "/vocab.json", vocab);
  write_file_atomic(dir + "/merges.txt", merges);
  try {
    BpeTokenizer::load_dir(dir);
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Bpe, BadFilesGiveClearErrors) {
  const std::string vocab = read_file(test::shared_data() + "/gpt2/vocab.json");
  const std::string merges = read_file(test::shared_data() + "/gpt2/merges.txt");
  expect_load_error(vocab.substr(0, vocab.size() / 2), merges, "vocab.json: not valid JSON");
  expect_load_error(vocab, merges + "Ġthe\n", "expected two tokens");
  expect_load_error(vocab, merges + "zzzzqqq Ġxyzzy\n", "not in");
  expect_load_error("{\"a\": 0, \"b\": 2}", "", "no token has id 1");
  expect_load_error("{\"a\": \"x\"}", "", "non-integer id");
  expect_load_error("{\"a\": 0}", "", "single byte");
}

}  // namespace
}  // namespace qkv

namespace qkv {
namespace {

// A Hugging Face tokenizer.json built from the same vocabulary encodes identically.
TEST(Bpe, HfTokenizerJson) {
  const std::string src = test::shared_data() + "/gpt2";
  nlohmann::json vocab = nlohmann::json::parse(read_file(src + "/vocab.json"));
  nlohmann::json merges = nlohmann::json::array();
  const std::string m = read_file(src + "/merges.txt");
  size_t pos = m.find('\n') + 1;  // skip "#version"
  while (pos < m.size()) {
    size_t nl = m.find('\n', pos);
    if (nl > pos) merges.push_back(m.substr(pos, nl - pos));
    pos = nl + 1;
  }
  nlohmann::json tj = {
      {"version", "1.0"},
      {"added_tokens", {{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  const std::string dir = test::temp_dir("tokjson");
  write_file_atomic(dir + "/tokenizer.json", tj.dump());
  BpeTokenizer t = BpeTokenizer::load_dir(dir);
  const std::string s = read_file(test::shared_data() + "/gpt2/cases/14-code-python.txt");
  EXPECT_EQ(t.encode(s), gpt2().encode(s));
  EXPECT_EQ(t.encode("x<|endoftext|>y", true), gpt2().encode("x<|endoftext|>y", true));
  write_file_atomic(dir + "/tokenizer.json", tj.dump().substr(0, 5000));
  EXPECT_THROW(BpeTokenizer::load_dir(dir), Error);
}

}  // namespace
}  // namespace qkv

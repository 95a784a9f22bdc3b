// qkv tokenize / detokenize: text <-> token ids (a JSON array) with a model directory's tokenizer.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/tokenizer/bpe_trainer.h"
#include "qkv/tokenizer/tokenizer.h"

namespace qkv::app {

namespace {
std::string read_input(const std::string& file) {
  if (!file.empty() && file != "-") return read_file(file);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}
}  // namespace

void add_tokenizer_train(CLI::App& app) {
  auto* group = app.add_subcommand("tokenizer", "Tokenizer tools");
  group->require_subcommand(1);
  auto* cmd = group->add_subcommand(
      "train", "Learn a byte-level BPE vocabulary (GPT-2 pre-tokenizer) from text");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string data, out;
    BpeTrainOptions o;
    bool no_special = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--data", a->data, "Training text file")->required();
  cmd->add_option("--vocab-size", a->o.vocab_size,
                  "Vocabulary size (256 bytes + merges + <|endoftext|>)")
      ->capture_default_str();
  cmd->add_option("--out", a->out, "Directory for vocab.json + merges.txt")->required();
  cmd->add_option("--min-count", a->o.min_pair_count, "Stop when no pair occurs this often")
      ->capture_default_str();
  cmd->add_option("--threads", a->o.threads, "Threads for pre-tokenization")->capture_default_str();
  cmd->add_flag("--no-special", a->no_special, "Do not add <|endoftext|>");
  cmd->callback([a] {
    QKV_CHECK(a->o.vocab_size >= 257 && a->o.vocab_size <= (1 << 20),
              "--vocab-size must be in [257, 1048576], got {}", a->o.vocab_size);
    QKV_CHECK(a->o.min_pair_count >= 1, "--min-count must be >= 1");
    QKV_CHECK(a->o.threads >= 1 && a->o.threads <= 1024, "--threads must be in [1, 1024]");
    if (a->no_special) a->o.specials.clear();
    const std::string text = read_file(a->data);
    QKV_CHECK(!text.empty(), "{}: the data file is empty", a->data);
    const bool tty = ::isatty(STDERR_FILENO);
    a->o.progress = [tty](int done, int total) {
      if (tty) std::fprintf(stderr, "\r\033[Kmerges %d/%d", done, total);
    };
    const auto t0 = std::chrono::steady_clock::now();
    BpeTokenizer tok = train_bpe(text, a->o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (tty) std::fprintf(stderr, "\n");
    tok.save(a->out);
    std::printf(
        "learned %d tokens from %zu bytes in %.2f s (%.2f MB/s); wrote %s/vocab.json and "
        "merges.txt\n",
        tok.vocab_size(), text.size(), s, double(text.size()) / s / 1e6, a->out.c_str());
    if (tok.vocab_size() < a->o.vocab_size)
      std::printf("note: stopped at %d tokens: no pair occurs %d times or more\n", tok.vocab_size(),
                  a->o.min_pair_count);
  });
}

void add_tokenize(CLI::App& app) {
  add_tokenizer_train(app);
  {
    auto* cmd = app.add_subcommand("tokenize", "Print the token ids of a text as a JSON array");
    cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    struct Args {
      std::string model, file, text, out;
      int threads = 1;
    };
    auto a = std::make_shared<Args>();
    cmd->add_option("--model", a->model, "Model or tokenizer directory")->required();
    cmd->add_option("--file", a->file, "Text file (default: standard input)");
    cmd->add_option("--text", a->text, "Text given on the command line instead of a file");
    cmd->add_option("--threads", a->threads, "Threads for large inputs")->capture_default_str();
    cmd->add_option("--out", a->out,
                    "Write a token file instead of JSON: little-endian uint16 ids (uint32 if the "
                    "vocabulary exceeds 65536), nanoGPT's .bin format");
    cmd->callback([a] {
      QKV_CHECK(a->threads >= 1 && a->threads <= 1024, "--threads must be in [1, 1024]");
      std::unique_ptr<Tokenizer> tok = load_tokenizer(a->model);
      const std::string text = !a->text.empty() ? a->text : read_input(a->file);
      const std::vector<int32_t> ids = tok->encode(text, a->threads);
      if (!a->out.empty()) {
        const bool wide = tok->vocab_size() > 65536;
        std::string bin;
        bin.reserve(ids.size() * (wide ? 4 : 2));
        for (int32_t id : ids) {
          const uint32_t v = uint32_t(id);
          bin.push_back(char(v & 0xff));
          bin.push_back(char((v >> 8) & 0xff));
          if (wide) {
            bin.push_back(char((v >> 16) & 0xff));
            bin.push_back(char(v >> 24));
          }
        }
        write_file_atomic(a->out, bin);
        std::fprintf(stderr, "wrote %zu tokens (%s) to %s\n", ids.size(),
                     wide ? "uint32" : "uint16", a->out.c_str());
        return;
      }
      std::string out = "[";
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out += ", ";
        out += std::to_string(ids[i]);
      }
      out += "]\n";
      std::fwrite(out.data(), 1, out.size(), stdout);
    });
  }
  {
    auto* cmd = app.add_subcommand("detokenize", "Print the text of a JSON array of token ids");
    cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    struct Args {
      std::string model, file, ids;
    };
    auto a = std::make_shared<Args>();
    cmd->add_option("--model", a->model, "Model or tokenizer directory")->required();
    cmd->add_option("--file", a->file, "JSON file with the ids (default: standard input)");
    cmd->add_option("--ids", a->ids, "The JSON array given on the command line");
    cmd->callback([a] {
      std::unique_ptr<Tokenizer> tok = load_tokenizer(a->model);
      const std::string where = !a->ids.empty() ? "--ids" : a->file.empty() ? "<stdin>" : a->file;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(!a->ids.empty() ? a->ids : read_input(a->file));
      } catch (const nlohmann::json::exception& e) {
        QKV_CHECK(false, "{}: not valid JSON ({})", where, e.what());
      }
      QKV_CHECK(j.is_array(), "{}: expected a JSON array of token ids", where);
      std::vector<int32_t> ids;
      for (size_t i = 0; i < j.size(); ++i) {
        QKV_CHECK(j[i].is_number_integer() && j[i].get<int64_t>() >= 0 &&
                      j[i].get<int64_t>() < tok->vocab_size(),
                  "{}: element {} ({}) is not a token id in [0, {})", where, i, j[i].dump(),
                  tok->vocab_size());
        ids.push_back(int32_t(j[i].get<int64_t>()));
      }
      const std::string text = tok->decode(ids);
      std::fwrite(text.data(), 1, text.size(), stdout);
    });
  }
}

}  // namespace qkv::app

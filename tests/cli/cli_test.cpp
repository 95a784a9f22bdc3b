// The qkv binary end to end: determinism, exact resume after SIGKILL at random moments, the
// logits verb against the library, and bad input -> one-line error, exit code 1, no partial file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "qkv/core/file.h"
#include "qkv/infer/fewshot.h"
#include "qkv/infer/seq2seq_decode.h"
#include "qkv/interp/interp.h"
#include "qkv/io/safetensors.h"
#include "qkv/models/gpt.h"
#include "qkv/models/seq2seq.h"
#include "qkv/tokenizer/tokenizer.h"
#include "tests/test_paths.h"

namespace qkv {
namespace {

namespace fs = std::filesystem;

struct CmdResult {
  int rc;
  std::string err;
};

CmdResult run_qkv(const std::string& args) {
  const std::string errf = test::temp_dir("err") + "/stderr";
  int rc = test::run(test::qkv_exe() + " " + args + " >/dev/null 2>" + errf);
  return {rc, read_file(errf)};
}

std::string small_train_args(const std::string& data, const std::string& out) {
  return "train --data " + data + " --out " + out +
         " --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 --batch-size 4 --max-iters 60"
         " --eval-interval 20 --eval-iters 2 --checkpoint-interval 5 --warmup-iters 10 --quiet";
}

std::string corpus() { return test::shared_data() + "/tinyshakespeare.txt"; }

std::vector<double> losses_in_log(const std::string& dir) {
  std::ifstream in(dir + "/log.jsonl");
  std::vector<double> out;
  std::string line;
  while (std::getline(in, line)) {
    auto p = line.find("\"loss\": ");
    if (p != std::string::npos) out.push_back(std::stod(line.substr(p + 8)));
  }
  return out;
}

TEST(Cli, SameSeedSameRunBitForBit) {
  std::string a = test::temp_dir("det_a"), b = test::temp_dir("det_b");
  ASSERT_EQ(run_qkv(small_train_args(corpus(), a)).rc, 0);
  ASSERT_EQ(run_qkv(small_train_args(corpus(), b)).rc, 0);
  EXPECT_EQ(read_file(a + "/model.safetensors"), read_file(b + "/model.safetensors"));
  auto la = losses_in_log(a), lb = losses_in_log(b);
  ASSERT_FALSE(la.empty());
  EXPECT_EQ(la.size(), 60u);
  EXPECT_EQ(la, lb);
  EXPECT_LT(la.back(), la.front() - 0.5) << "training did not learn";
}

size_t log_lines(const std::string& path) {
  std::ifstream in(path);
  return size_t(
      std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n'));
}

TEST(Cli, ResumeAfterSigkillIsExact) {
  // A run with a checkpoint every 10 steps, killed once its log shows a given number of lines,
  // so the kills land mid-step and mid-checkpoint whatever the machine's load.
  const std::string args_tail = " --max-iters 1000 --eval-interval 100 --checkpoint-interval 10";
  std::string ref = test::temp_dir("resume_ref");
  ASSERT_EQ(run_qkv(small_train_args(corpus(), ref) + args_tail).rc, 0);
  const std::string want = read_file(ref + "/model.safetensors");
  for (size_t kill_at : {7, 95, 333, 574, 861}) {
    std::string dir = test::temp_dir("resume_" + std::to_string(kill_at));
    std::string cmd = small_train_args(corpus(), dir) + args_tail;
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c",
            ("exec " + test::qkv_exe() + " " + cmd + " >/dev/null 2>&1").c_str(), nullptr);
      _exit(127);
    }
    int status = 0;
    bool exited = false;
    while (log_lines(dir + "/log.jsonl") < kill_at) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ASSERT_FALSE(exited) << "the run ended before its log reached " << kill_at << " lines";
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status)) << "not killed at " << kill_at;
    CmdResult r = run_qkv(cmd + " --resume");
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(read_file(dir + "/model.safetensors"), want) << "killed at log line " << kill_at;
    EXPECT_EQ(losses_in_log(dir), losses_in_log(ref))
        << "log after resume, killed at line " << kill_at;
  }
}

TEST(Cli, LogitsVerbMatchesLibrary) {
  std::string dir = test::temp_dir("logits");
  ASSERT_EQ(run_qkv(small_train_args(corpus(), dir) + " --max-iters 5").rc, 0);
  write_file_atomic(dir + "/ids.json", "[20, 43, 50, 50, 53, 1, 0]");
  CmdResult r = run_qkv("logits --model " + dir + " --ids " + dir + "/ids.json --out " + dir +
                        "/l.safetensors");
  ASSERT_EQ(r.rc, 0) << r.err;
  SafetensorsFile f(dir + "/l.safetensors");
  Tensor t = f.get("logits");
  GPT m = GPT::from_dir(dir);
  ASSERT_EQ(t.shape(), (Shape{7, m.config().vocab_size}));
  std::vector<int32_t> ids = {20, 43, 50, 50, 53, 1, 0};
  m.forward(ids.data(), nullptr, 1, 7);
  EXPECT_EQ(std::memcmp(t.raw(), m.logits(), size_t(t.nbytes())), 0);
}

void expect_user_error(const std::string& args, const std::string& needle) {
  CmdResult r = run_qkv(args);
  EXPECT_EQ(r.rc, 1) << args << "\n" << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\nstderr: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "not one line: " << r.err;
}

TEST(Cli, BadInputGivesOneLineAndExitOne) {
  std::string d = test::temp_dir("bad");
  write_file_atomic(d + "/empty.txt", "");
  write_file_atomic(d + "/short.txt", "hello world, this is short");
  expect_user_error("train --data " + d + "/nope.txt --out " + d + "/o", "cannot open");
  expect_user_error("train --data " + d + "/empty.txt --out " + d + "/o", "empty");
  expect_user_error("train --data " + d + "/short.txt --out " + d + "/o", "fewer than one block");
  expect_user_error("train --data " + corpus() + " --out " + d + "/o --n-embd 30 --n-head 4",
                    "not divisible");
  expect_user_error("train --data " + corpus() + " --out " + d + "/o --bogus-flag", "bogus");
  expect_user_error("frobnicate", "frobnicate");
  expect_user_error("train --data " + corpus() + " --out " + d + "/o --batch-size 0",
                    "--batch-size");
  expect_user_error(
      "train --data " + corpus() + " --out " + d + "/o --parallel batch --batch-size 1 --threads 2",
      "a batch of 1 sequences cannot give each of 2 threads one");
  expect_user_error("train --data " + corpus() + " --out " + d + "/o --parallel rows",
                    "--parallel");

  // A model directory, then broken copies of it.
  std::string m = d + "/model";
  ASSERT_EQ(run_qkv(small_train_args(corpus(), m) + " --max-iters 2").rc, 0);
  auto copy_model = [&](const std::string& name) {
    std::string to = d + "/" + name;
    fs::create_directories(to);
    for (const char* f : {"config.json", "model.safetensors", "qkv_tokenizer.json"})
      fs::copy_file(m + "/" + f, to + "/" + f, fs::copy_options::overwrite_existing);
    return to;
  };
  std::string bad_cfg = copy_model("badcfg");
  write_file_atomic(bad_cfg + "/config.json", "{\"n_layer\": 2, \"n_head\": ");
  expect_user_error("generate --model " + bad_cfg + " --max-new-tokens 3", "config.json");
  std::string div = copy_model("div");
  write_file_atomic(
      div + "/config.json",
      R"({"n_layer": 2, "n_head": 3, "n_embd": 32, "n_positions": 32, "vocab_size": 65})");
  expect_user_error("generate --model " + div + " --max-new-tokens 3", "not divisible");
  std::string trunc = copy_model("trunc");
  std::string w = read_file(trunc + "/model.safetensors");
  write_file_atomic(trunc + "/model.safetensors", w.substr(0, w.size() / 2));
  expect_user_error("generate --model " + trunc + " --max-new-tokens 3", "model.safetensors");
  std::string lie = copy_model("lie");
  w = read_file(lie + "/model.safetensors");
  size_t pos = w.find("[32, 96]");
  if (pos == std::string::npos) pos = w.find("[32,96]");
  ASSERT_NE(pos, std::string::npos);
  w.replace(pos, 7, w[pos + 3] == ' ' ? "[32, 9]" : "[32,9]0");
  write_file_atomic(lie + "/model.safetensors", w);
  expect_user_error("generate --model " + lie + " --max-new-tokens 3", "model.safetensors");

  // logits: ids out of range, too many ids; no output file is left behind.
  write_file_atomic(d + "/ids.json", "[1, 2, 999]");
  expect_user_error(
      "logits --model " + m + " --ids " + d + "/ids.json --out " + d + "/l.safetensors",
      "not a token id");
  write_file_atomic(d + "/ids2.json", "[1, 2, 3");
  expect_user_error(
      "logits --model " + m + " --ids " + d + "/ids2.json --out " + d + "/l.safetensors",
      "not valid JSON");
  EXPECT_FALSE(fs::exists(d + "/l.safetensors"));
  for (const auto& e : fs::directory_iterator(m))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos)
        << "leftover temporary " << e.path();
}

TEST(Cli, GenerateStreamsAndWarnsOnLongPrompt) {
  std::string m = test::temp_dir("gen");
  ASSERT_EQ(run_qkv(small_train_args(corpus(), m) + " --max-iters 2").rc, 0);
  std::string out = test::temp_dir("genout") + "/o";
  std::string prompt(50, 'a');
  int rc = test::run(test::qkv_exe() + " generate --model " + m + " --prompt " + prompt +
                     " --max-new-tokens 20 --seed 3 >" + out + " 2>" + out + ".err");
  ASSERT_EQ(rc, 0);
  EXPECT_NE(read_file(out + ".err").find("keeping the last 32"), std::string::npos);
  std::string text = read_file(out);
  EXPECT_EQ(text.substr(0, 32), std::string(32, 'a'));
  EXPECT_EQ(text.size(), 32u + 20u + 1u);
}

// The attention rules from the command line: train with a sliding window and fixed positions,
// generate past block_size, benchmark one rule and sweep two, and refuse bad settings.
TEST(Cli, AttentionRulesTrainGenerateBench) {
  const std::string d = test::temp_dir("attn");
  const std::string m = d + "/sliding";
  ASSERT_EQ(
      run_qkv(small_train_args(corpus(), m) + " --attention sliding --window 8 --pos sinusoidal")
          .rc,
      0);
  const auto cfg = nlohmann::json::parse(read_file(m + "/config.json"));
  EXPECT_EQ(cfg.at("attention"), "sliding");
  EXPECT_EQ(cfg.at("window"), 8);
  EXPECT_EQ(cfg.at("pos"), "sinusoidal");
  auto la = losses_in_log(m);
  ASSERT_FALSE(la.empty());
  EXPECT_LT(la.back(), la.front() - 0.5) << "sliding-window training did not learn";
  // 100 new tokens with block_size 32: the rolling cache, no context reset.
  const std::string out = d + "/gen.txt";
  ASSERT_EQ(test::run(test::qkv_exe() + " generate --model " + m +
                      " --prompt ROMEO: --max-new-tokens 100 --seed 1 >" + out + " 2>/dev/null"),
            0);
  EXPECT_EQ(read_file(out).size(), 6u + 100u + 1u);

  // One measurement as JSON.
  const std::string js = d + "/bench.json";
  ASSERT_EQ(test::run(test::qkv_exe() +
                      " bench attention --kind linear --seq-len 256 --heads 2 --head-dim 16 "
                      "--steps 1 --json >" +
                      js),
            0);
  const auto b = nlohmann::json::parse(read_file(js));
  EXPECT_EQ(b.at("kind"), "linear");
  EXPECT_EQ(b.at("seq_len"), 256);
  EXPECT_GT(b.at("fwd_ms").get<double>(), 0.0);
  EXPECT_GE(b.at("fwd_bwd_ms").get<double>(), b.at("fwd_ms").get<double>() * 0.5);
  EXPECT_GT(b.at("peak_bytes").get<int64_t>(), 0);
  // A small sweep writes the table, the JSON and the plot.
  const std::string sd = d + "/sweep";
  ASSERT_EQ(run_qkv("bench attention --sweep --kind dense,linear --min-seq-len 64 --max-seq-len "
                    "128 --heads 2 --head-dim 16 --steps 1 --out " +
                    sd)
                .rc,
            0);
  const std::string md = read_file(sd + "/attention_scaling.md");
  EXPECT_NE(md.find("| dense | 128 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| linear | 64 |"), std::string::npos) << md;
  const std::string svg = read_file(sd + "/attention_scaling.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find(">linear<"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(read_file(sd + "/attention_scaling.json")).at("rows").size(), 4u);

  // Bad settings: one line, exit 1, before any training.
  const std::string t = "train --data " + corpus() + " --out " + d + "/bad --block-size 32";
  expect_user_error(t + " --attention sliding --window 0", "window 0");
  expect_user_error(t + " --attention sliding --window 33", "window 33");
  expect_user_error(t + " --attention block_sparse --attn-block 5", "must divide block_size 32");
  expect_user_error(t + " --attention dense --window 8", "window is for 'sliding'");
  expect_user_error(t + " --attention flash", "unknown attention 'flash'");
  expect_user_error("bench attention --kind nope", "unknown attention 'nope'");
  EXPECT_FALSE(fs::exists(d + "/bad/model.safetensors"));
}

// inspect end to end: the HTML page embeds the same numbers --json prints, and the library is
// the oracle for them; bad input is refused before any work.
TEST(Cli, InspectReportAndBadInput) {
  const std::string d = test::temp_dir("inspect"), m = d + "/m";
  ASSERT_EQ(run_qkv(small_train_args(corpus(), m) + " --max-iters 20").rc, 0);
  const std::string prompt = "ROMEO: What say";
  const std::string html = d + "/r.html", js = d + "/r.json";
  ASSERT_EQ(
      test::run(test::qkv_exe() + " inspect --model " + m + " --prompt '" + prompt +
                "' --subject ROMEO --answer ' ' --samples 2 --out " + html + " --json >" + js),
      0);
  const auto j = nlohmann::json::parse(read_file(js));
  const std::string page = read_file(html);
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(page.find("http://"), std::string::npos) << "the page must not fetch anything";
  EXPECT_EQ(page.find("https://"), std::string::npos) << "the page must not fetch anything";
  const std::string open = "type=\"application/json\">";
  const size_t a = page.find(open), b = page.find("</script>", a);
  ASSERT_NE(a, std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(page.substr(a + open.size(), b - a - open.size())), j);
  // The numbers against the library on the same model and prompt.
  GPT model = GPT::from_dir(m);
  auto tok = load_tokenizer(m);
  const auto ids = tok->encode(prompt);
  ASSERT_EQ(j.at("tokens").size(), ids.size());
  const auto lens = interp::logit_lens(model, ids, 5);
  EXPECT_EQ(j.at("logit_lens").size(), size_t(lens.rows));
  EXPECT_EQ(j.at("logit_lens").back().at("top").back().at(0).at("token"),
            lens.at(lens.rows - 1, int(ids.size()) - 1)[0].token);
  const int L = model.config().n_layer, NH = model.config().n_head;
  EXPECT_EQ(j.at("attention").size(), size_t(L * NH));
  EXPECT_EQ(j.at("ablation").at("rows").size(), size_t(L * (NH + 1)));
  const auto& tr = j.at("causal_trace");
  EXPECT_EQ(tr.at("subject_positions"), nlohmann::json::array({0, 5}));
  EXPECT_EQ(tr.at("hidden").size(), size_t(L) * ids.size());

  // In a real browser (headless Chromium over the DevTools protocol): every heatmap drawn, the
  // hover tooltip, a map clicked open, no console errors; screenshots saved beside the report.
  const std::string shot = d + "/report.png";
  ASSERT_EQ(test::run("/usr/bin/python3 " + test::source_dir() + "/tests/browser/check_report.py " +
                      html + " " + shot),
            0);
  EXPECT_GT(fs::file_size(shot), 10000u);
  EXPECT_TRUE(fs::exists(d + "/report_open.png"));

  const std::string base = "inspect --model " + m + " --out " + d + "/x.html ";
  expect_user_error(base + "--prompt '" + std::string(40, 'a') + "'", "context is 32");
  expect_user_error(base + "--prompt 'ROMEO: hi' --subject JULIET --answer a", "not in the prompt");
  expect_user_error(base + "--prompt 'ROMEO: hi' --subject ROMEO --answer ab", "exactly one");
  expect_user_error(base + "--prompt 'ROMEO: hi' --subject ROMEO", "both --subject and --answer");
  expect_user_error(base + "--prompt 'ROMEO: hi' --layer 2", "--layer 2 out of range");
  expect_user_error(base + "--prompt 'ROMEO: hi' --head -2", "--head -2 out of range");
  EXPECT_FALSE(fs::exists(d + "/x.html"));
}

// eval end to end: K-shot prompts from a task file, JSON out; bad task lines named by line.
TEST(Cli, FewShotEval) {
  const std::string d = test::temp_dir("eval"), m = d + "/m";
  ASSERT_EQ(run_qkv(small_train_args(corpus(), m) + " --max-iters 20").rc, 0);
  std::string task;
  for (const char* w : {"ROMEO", "JULIET", "TYBALT", "MERCUTIO", "BENVOLIO"})
    task += std::string("{\"input\": \"Name: ") + w + "\\nSays: \", \"target\": \"" + w + "\"}\n";
  write_file_atomic(d + "/task.jsonl", task);
  const std::string js = d + "/r.json";
  ASSERT_EQ(test::run(test::qkv_exe() + " eval --model " + m + " --task " + d +
                      "/task.jsonl --shots 2 --json >" + js),
            0);
  const auto j = nlohmann::json::parse(read_file(js));
  EXPECT_EQ(j.at("examples"), 5);
  EXPECT_EQ(j.at("shots"), 2);
  EXPECT_LT(j.at("mean_target_loglik").get<double>(), 0.0);
  EXPECT_GE(j.at("exact_match").get<double>(), 0.0);
  EXPECT_LE(j.at("exact_match").get<double>(), 1.0);
  // The library on the same model and task is the oracle.
  GPT model = GPT::from_dir(m);
  auto tok = load_tokenizer(m);
  FewShotOptions o;
  o.shots = 2;
  const auto r = evaluate_fewshot(model, *tok, read_task_file(d + "/task.jsonl"), o);
  EXPECT_NEAR(j.at("mean_target_loglik").get<double>(), r.mean_loglik(), 1e-9);

  write_file_atomic(d + "/bad.jsonl", "{\"input\": \"a\", \"target\": \"b\"}\nnot json\n");
  expect_user_error("eval --model " + m + " --task " + d + "/bad.jsonl",
                    "bad.jsonl:2: not valid JSON");
  write_file_atomic(d + "/nolabel.jsonl", "{\"input\": \"a\"}\n");
  expect_user_error("eval --model " + m + " --task " + d + "/nolabel.jsonl",
                    "nolabel.jsonl:1: \"target\" is missing");
  expect_user_error("eval --model " + m + " --task " + d + "/task.jsonl --shots 5",
                    "--shots 5 needs at least 6 examples");
}

// The encoder path end to end: synth data, masked-LM pretraining, classification fine-tune
// (full and as a LoRA adapter), eval from the saved directories, and the bad-input rules.
TEST(Cli, EncoderMlmFinetuneEval) {
  const std::string d = test::temp_dir("enc");
  ASSERT_EQ(run_qkv("synth sentiment --out " + d + "/data --train 400 --valid 100").rc, 0);
  ASSERT_EQ(run_qkv("train --data " + d + "/data/text.txt --out " + d +
                    "/enc --arch encoder --objective mlm --n-layer 1 --n-head 2 --n-embd 32 "
                    "--block-size 64 --batch-size 8 --max-iters 20 --eval-interval 10 "
                    "--eval-iters 2 --quiet")
                .rc,
            0);
  const GPTConfig ec = GPT::from_dir(d + "/enc").config();
  EXPECT_FALSE(ec.causal);
  EXPECT_EQ(ec.mask_token_id, ec.vocab_size - 1);
  for (const char* save : {"merged", "adapter"}) {
    const std::string out = d + "/cls_" + save;
    ASSERT_EQ(
        run_qkv("finetune --task classify --model " + d + "/enc --data " + d +
                "/data/train.jsonl --eval " + d + "/data/valid.jsonl --out " + out +
                " --max-iters 8 --batch-size 16 --lora-rank 2 --lora-save " + save + " --quiet")
            .rc,
        0);
    const std::string js = d + "/eval.json";
    ASSERT_EQ(test::run(test::qkv_exe() + " eval --model " + out + " --data " + d +
                        "/data/valid.jsonl --json >" + js),
              0);
    const auto j = nlohmann::json::parse(read_file(js));
    EXPECT_EQ(j.at("examples"), 100);
    EXPECT_EQ(j.at("per_label").size(), 2u);
    // The log's last evaluation is the same model on the same file.
    std::ifstream log(out + "/log.jsonl");
    std::string line, last;
    while (std::getline(log, line))
      if (line.find("eval_accuracy") != std::string::npos) last = line;
    EXPECT_NEAR(nlohmann::json::parse(last).at("eval_accuracy").get<double>(),
                j.at("accuracy").get<double>(), 1e-6)
        << save;
  }
  // Bad lines: named before any training, or skipped and counted.
  write_file_atomic(d + "/bad.jsonl",
                    "{\"text\": \"the film was good\", \"label\": \"positive\"}\n"
                    "{\"text\": \"the film was bad\"}\n"
                    "{\"text\": \"the film was dull\", \"label\": \"negative\"}\n");
  expect_user_error(
      "finetune --model " + d + "/enc --data " + d + "/bad.jsonl --out " + d + "/x --max-iters 2",
      "bad.jsonl:2: no \"label\"");
  EXPECT_FALSE(fs::exists(d + "/x/model.safetensors"));
  EXPECT_EQ(run_qkv("finetune --model " + d + "/enc --data " + d + "/bad.jsonl --out " + d +
                    "/x --max-iters 2 --skip-bad-lines --quiet")
                .rc,
            0);
  write_file_atomic(d + "/unknown.jsonl",
                    "{\"text\": \"the film was good\", \"label\": \"neutral\"}\n");
  expect_user_error("eval --model " + d + "/cls_merged --data " + d + "/unknown.jsonl",
                    "unknown.jsonl:1: label 'neutral' is not one of the model's labels");
  expect_user_error("eval --model " + d + "/enc --data " + d + "/data/valid.jsonl",
                    "not a classifier");
  expect_user_error("train --data " + d + "/data/text.txt --out " + d + "/y --arch encoder",
                    "--objective mlm");
  expect_user_error("generate --model " + d + "/enc --prompt the", "encoder");
}

// The encoder-decoder end to end: synth pairs, train, generate (greedy and beam), eval from the
// directory (== the library's decoding), and bad TSV lines named or skipped.
TEST(Cli, EncoderDecoderTrainGenerateEval) {
  const std::string d = test::temp_dir("s2s");
  ASSERT_EQ(run_qkv("synth reverse --out " + d + "/data --train 300 --valid 20 --test 20").rc, 0);
  ASSERT_EQ(run_qkv("train --arch encoder-decoder --data " + d + "/data/train.tsv --eval " + d +
                    "/data/valid.tsv --out " + d +
                    "/m --n-layer 1 --n-head 2 --n-embd 32 "
                    "--block-size 16 --batch-size 8 --max-iters 12 --eval-interval 6 --quiet")
                .rc,
            0);
  const std::string js = d + "/e.json", gen = d + "/g.txt";
  ASSERT_EQ(test::run(test::qkv_exe() + " eval --model " + d + "/m --data " + d +
                      "/data/test.tsv --beam 2 --json >" + js),
            0);
  const auto j = nlohmann::json::parse(read_file(js));
  EXPECT_EQ(j.at("examples"), 20);
  ASSERT_EQ(
      test::run(test::qkv_exe() + " generate --model " + d + "/m --prompt abcdef --beam 3 >" + gen),
      0);
  // The library's beam search on the same model is the oracle for the printed text.
  Seq2Seq m = Seq2Seq::from_dir(d + "/m");
  const auto tok = load_tokenizer(d + "/m");
  Seq2SeqDecodeOptions o;
  o.beam = 3;
  const auto h = seq2seq_decode(m, tok->encode("abcdef"), o);
  EXPECT_EQ(read_file(gen), tok->decode(h.tokens) + "\n");
  write_file_atomic(d + "/bad.tsv", "abc\tcba\nno tab\nab\tba\n");
  expect_user_error("train --arch encoder-decoder --data " + d + "/bad.tsv --out " + d + "/x",
                    "bad.tsv:2: no tab between source and target");
  expect_user_error("eval --model " + d + "/m --data " + d + "/bad.tsv", "bad.tsv:2: no tab");
  EXPECT_EQ(run_qkv("eval --model " + d + "/m --data " + d + "/bad.tsv --skip-bad-lines").rc, 0);
  expect_user_error(
      "train --arch encoder-decoder --data " + d + "/data/train.tsv --out " + d + "/x --pos rope",
      "learned or sinusoidal");
}

// An encoder-decoder run stopped by SIGINT (a checkpoint at the next step) and resumed ends
// with the same weights and log as one never stopped.
TEST(Cli, EncoderDecoderResumeAfterSigintIsExact) {
  const std::string d = test::temp_dir("s2s_resume");
  ASSERT_EQ(run_qkv("synth sort --out " + d + "/data --train 500 --valid 10 --test 10").rc, 0);
  const std::string args = "train --arch encoder-decoder --data " + d + "/data/train.tsv --eval " +
                           d +
                           "/data/valid.tsv --n-layer 1 --n-head 2 --n-embd 32 "
                           "--block-size 16 --batch-size 8 --max-iters 300 --eval-interval 10 "
                           "--eval-examples 2 --quiet --out ";
  ASSERT_EQ(run_qkv(args + d + "/ref").rc, 0);
  const std::string dir = d + "/run";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c",
          ("exec " + test::qkv_exe() + " " + args + dir + " >/dev/null 2>&1").c_str(), nullptr);
    _exit(127);
  }
  int status = 0;
  bool exited = false;
  while (!fs::exists(dir + "/train_state.safetensors")) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ASSERT_FALSE(exited) << "the run ended before its first checkpoint";
  kill(pid, SIGINT);
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << "status " << status;
  CmdResult r = run_qkv(args + dir + " --resume");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(read_file(dir + "/model.safetensors"), read_file(d + "/ref/model.safetensors"));
  EXPECT_EQ(losses_in_log(dir), losses_in_log(d + "/ref"));
}

// quantize + generate + perplexity end to end: converting on load and loading a quantized
// directory give the same text and the same perplexity; the library's nll_sum is the oracle.
TEST(Cli, QuantizeGenerateAndPerplexity) {
  std::string m = test::temp_dir("qm"), q = test::temp_dir("qq") + "/int8";
  ASSERT_EQ(run_qkv(small_train_args(corpus(), m)).rc, 0);
  ASSERT_EQ(run_qkv("quantize --model " + m + " --out " + q).rc, 0);
  const std::string o = test::temp_dir("qout") + "/o";
  auto gen = [&](const std::string& args, const std::string& file) {
    return test::run(test::qkv_exe() + " generate " + args +
                     " --prompt ROMEO --max-new-tokens 40 --seed 5 >" + file + " 2>&1");
  };
  ASSERT_EQ(gen("--model " + m + " --dtype int8", o + ".a"), 0);
  ASSERT_EQ(gen("--model " + q, o + ".b"), 0);
  ASSERT_EQ(gen("--model " + q + " --no-kv-cache", o + ".c"), 0);
  EXPECT_EQ(read_file(o + ".a"), read_file(o + ".b"));
  EXPECT_EQ(read_file(o + ".a").size(), 5u + 40u + 1u);
  // Perplexity on the last 3000 characters, against the library on the same windows.
  const std::string text = read_file(corpus());
  write_file_atomic(o + ".txt", text.substr(text.size() - 3000));
  int rc = test::run(test::qkv_exe() + " perplexity --model " + q + " --data " + o +
                     ".txt --json >" + o + ".json 2>&1");
  ASSERT_EQ(rc, 0) << read_file(o + ".json");
  auto j = nlohmann::json::parse(read_file(o + ".json"));
  GPT g = GPT::from_dir(q);
  const auto ids = load_tokenizer(q)->encode(text.substr(text.size() - 3000));
  double nll = 0;
  int64_t count = 0;
  for (size_t s = 0; s + 1 < ids.size(); s += 32) {
    const int n = int(std::min<size_t>(32, ids.size() - s));
    nll += g.nll_sum(ids.data() + s, n);
    count += n - 1;
  }
  EXPECT_EQ(j["dtype"], "int8");
  EXPECT_EQ(j["tokens"].get<int64_t>(), count);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(nll / double(count)), 1e-9);
  EXPECT_LT(j["perplexity"].get<double>(), 40.0);
  // Bad input: quantizing an int8 model, bf16 from int8, out == model, a missing --data file.
  auto r = run_qkv("quantize --model " + q + " --out " + q + "2");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("int8 already"), std::string::npos) << r.err;
  r = run_qkv("perplexity --model " + q + " --data " + o + ".txt --dtype bf16");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("needs an fp32 checkpoint"), std::string::npos) << r.err;
  r = run_qkv("quantize --model " + m + " --out " + m);
  EXPECT_EQ(r.rc, 1);
  r = run_qkv("perplexity --model " + m + " --data " + o + ".missing");
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace
}  // namespace qkv

namespace qkv {
namespace {

// BPE end to end: learn a vocabulary, train on its tokens, generate; and train on GPT-2's.
TEST(CliBpe, TokenizerTrainThenTrainAndGenerate) {
  const std::string d = test::temp_dir("clibpe");
  CmdResult r =
      run_qkv("tokenizer train --data " + corpus() + " --vocab-size 600 --out " + d + "/tok");
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run_qkv(small_train_args(corpus(), d + "/m") + " --max-iters 20 --tokenizer " + d + "/tok");
  ASSERT_EQ(r.rc, 0) << r.err;
  GPT m = GPT::from_dir(d + "/m");
  EXPECT_EQ(m.config().vocab_size, 600);
  EXPECT_TRUE(fs::exists(d + "/m/vocab.json") && fs::exists(d + "/m/merges.txt"));
  EXPECT_FALSE(fs::exists(d + "/m/qkv_tokenizer.json"));
  const std::string out = d + "/gen.txt";
  ASSERT_EQ(test::run(test::qkv_exe() + " generate --model " + d +
                      "/m --prompt 'To be' --max-new-tokens 10 > " + out),
            0);
  EXPECT_EQ(read_file(out).rfind("To be", 0), 0u);
  // tokenize / detokenize round trip through the CLI.
  write_file_atomic(d + "/t.txt", "Wherefore art thou, Romeo?\n");
  ASSERT_EQ(test::run(test::qkv_exe() + " tokenize --model " + d + "/m --file " + d + "/t.txt > " +
                      d + "/ids.json"),
            0);
  ASSERT_EQ(test::run(test::qkv_exe() + " detokenize --model " + d + "/m --file " + d +
                      "/ids.json > " + d + "/back.txt"),
            0);
  EXPECT_EQ(read_file(d + "/back.txt"), read_file(d + "/t.txt"));
  // GPT-2's own vocabulary.
  r = run_qkv(small_train_args(corpus(), d + "/g") + " --max-iters 3 --tokenizer " +
              test::shared_data() + "/gpt2");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(GPT::from_dir(d + "/g").config().vocab_size, 50257);
  expect_user_error(
      "train --data " + corpus() + " --out " + d + "/x --tokenizer " + d + "/nonexistent",
      "--tokenizer");
  expect_user_error("detokenize --model " + d + "/m --ids '[1, 99999]'", "not a token id");
}

}  // namespace
}  // namespace qkv

namespace qkv {
namespace {

// A large file encoded with 2 threads into nanoGPT's uint16 token file equals the reference
// ids of tiny Shakespeare's training split (made by tiktoken, in ../shared/data).
TEST(CliBpe, TokenFileMatchesNanoGptBin) {
  const std::string d = test::temp_dir("tokbin");
  const std::string text = read_file(corpus());
  write_file_atomic(d + "/train.txt", text.substr(0, text.size() * 9 / 10));
  ASSERT_EQ(
      test::run(test::qkv_exe() + " tokenize --model " + test::shared_data() + "/gpt2 --file " + d +
                "/train.txt --threads 2 --out " + d + "/train.bin 2>/dev/null"),
      0);
  EXPECT_EQ(read_file(d + "/train.bin"),
            read_file(test::shared_data() + "/tinyshakespeare_gpt2_train.bin"));
}

}  // namespace
}  // namespace qkv

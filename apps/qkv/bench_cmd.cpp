// qkv bench train|generate|gemm|attention: speed on random weights and tokens.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "apps/qkv/commands.h"
#include "qkv/backend/cpu/cpu.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/core/parallel.h"
#include "qkv/perf/bench.h"

namespace qkv::app {

void add_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "bench", "Measure speed: train, forward, generate, gemm or attention (random weights)");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string what, preset = "gpt2", dtype = "fp32", model, parallel = "auto";
    int batch_size = 4, block_size = 256, prompt_tokens = 128, new_tokens = 32, steps = 5,
        threads = 0;
    int m = 1024, n = 2304, k = 768, heads = 12, head_dim = 64;
    bool json = false, backward = true, trans_a = false, trans_b = false;
    // attention
    std::string kind = "dense", out, hooks = "none";
    std::optional<int> seq_len;
    int window = 256, attn_block = 64, attn_local_blocks = 1, attn_global = 64;
    int min_seq_len = 256, max_seq_len = 16384;
    bool bidirectional = false, sweep = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("what", a->what, "train, forward, generate, gemm or attention")
      ->required()
      ->check(CLI::IsMember({"train", "forward", "generate", "gemm", "attention"}));
  cmd->add_option("--preset", a->preset, "Model preset (train, generate)")->capture_default_str();
  cmd->add_option("--model", a->model,
                  "generate: a model directory instead of a random --preset (e.g. to run the same "
                  "weights as another engine)");
  cmd->add_option("--dtype", a->dtype,
                  "fp32; bf16 (train: mixed precision; generate: bf16 weights; gemm: AMX or "
                  "AVX512-BF16); int8 "
                  "(generate, gemm: int8 weights)")
      ->capture_default_str();
  cmd->add_option("--batch-size", a->batch_size, "Batch (train; attention: default 1)")
      ->capture_default_str();
  cmd->add_option("--block-size", a->block_size, "Sequence length (train, attention)")
      ->capture_default_str();
  cmd->add_option("--prompt-tokens", a->prompt_tokens, "Prefill length (generate)")
      ->capture_default_str();
  cmd->add_option("--new-tokens", a->new_tokens, "Decoded tokens (generate)")
      ->capture_default_str();
  cmd->add_option("--steps", a->steps, "Timed repetitions")->capture_default_str();
  cmd->add_option("--parallel", a->parallel,
                  "train: how threads share a step: batch (each its share of the sequences, "
                  "with a model replica), ops (every op split), or auto (as qkv train)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "batch", "ops"}));
  cmd->add_option("-m", a->m, "GEMM M")->capture_default_str();
  cmd->add_option("-n", a->n, "GEMM N")->capture_default_str();
  cmd->add_option("-k", a->k, "GEMM K")->capture_default_str();
  cmd->add_flag("--trans-a", a->trans_a, "GEMM: A stored transposed (K x M), as in dW = X^T dY");
  cmd->add_flag("--trans-b", a->trans_b, "GEMM: B stored transposed (N x K), as in dX = dY W^T");
  cmd->add_option("--heads", a->heads, "Attention heads")->capture_default_str();
  cmd->add_option("--head-dim", a->head_dim, "Attention head size")->capture_default_str();
  cmd->add_option("--hooks", a->hooks,
                  "forward: hooks at every site: none, noop (empty functions) or cache")
      ->capture_default_str();
  cmd->add_option("--kind", a->kind,
                  "Attention rule: dense, sliding, block_sparse, linear (--sweep: a comma list, "
                  "default all four)")
      ->capture_default_str();
  cmd->add_option("--seq-len", a->seq_len, "Attention: sequence length T (default --block-size)");
  cmd->add_option("--window", a->window, "Attention sliding: window")->capture_default_str();
  cmd->add_option("--attn-block", a->attn_block, "Attention block_sparse: block size")
      ->capture_default_str();
  cmd->add_option("--attn-local-blocks", a->attn_local_blocks,
                  "Attention block_sparse: neighbour blocks per side")
      ->capture_default_str();
  cmd->add_option("--attn-global", a->attn_global, "Attention block_sparse: global tokens")
      ->capture_default_str();
  cmd->add_flag("--bidirectional", a->bidirectional, "Attention: no causal mask");
  cmd->add_flag("--sweep", a->sweep,
                "Attention: sweep T from --min-seq-len to --max-seq-len (doubling) for each "
                "--kind; table on stdout, and with --out DIR attention_scaling.{md,json,svg}");
  cmd->add_option("--min-seq-len", a->min_seq_len, "Attention sweep: first T")
      ->capture_default_str();
  cmd->add_option("--max-seq-len", a->max_seq_len, "Attention sweep: last T")
      ->capture_default_str();
  cmd->add_option("--out", a->out, "Attention sweep: directory for the table and the plot");
  cmd->add_option("--threads", a->threads, "Threads (0: OMP_NUM_THREADS if set, else all cores)")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([a, cmd] {
    apply_threads(a->threads);
    QKV_CHECK(a->dtype == "fp32" || (a->dtype == "bf16" && a->what != "attention") ||
                  (a->dtype == "int8" && (a->what == "gemm" || a->what == "generate")),
              "--dtype {} does not apply to '{}' (train: fp32|bf16; generate, gemm: "
              "fp32|bf16|int8; attention: fp32)",
              a->dtype, a->what);
    QKV_CHECK(a->steps >= 1, "--steps must be >= 1");
    nlohmann::ordered_json j = {{"what", a->what},
                                {"threads", num_threads()},
                                {"isa", cpu::isa_name()},
                                {"dtype", a->dtype}};
    auto stats = [](const perf::Stats& s) {
      return nlohmann::json{{"median_s", s.median}, {"min_s", s.min}, {"max_s", s.max}};
    };
    if (a->what == "train") {
      GPTConfig c = GPTConfig::preset(a->preset);
      QKV_CHECK(a->batch_size >= 1 && a->block_size >= 1,
                "--batch-size and --block-size must be >= 1");
      auto r = perf::bench_train(c, a->batch_size, a->block_size, a->steps, a->dtype, a->parallel);
      // The peak of the units the matmuls run on: for bf16 AMX tiles or AVX512-BF16 dot
      // products (when present), else FMA.
      const bool bf16 = a->dtype == "bf16";
      const double peak = bf16 ? perf::measure_bf16_peak_gflops() : perf::measure_peak_gflops();
      const std::string peak_name = bf16 ? std::string(cpu::bf16_engine()) + " bf16" : "fp32 FMA";
      j["peak"] = peak_name;
      j.update({{"preset", a->preset},
                {"batch_size", a->batch_size},
                {"block_size", a->block_size},
                {"parallel", r.ways > 1 ? "batch" : "ops"},
                {"tokens_per_sec", r.tokens_per_sec},
                {"gflops", r.gflops},
                {"peak_gflops", peak},
                {"share_of_peak", r.gflops / peak},
                {"step", stats(r.step)}});
      if (!a->json)
        std::printf(
            "train %s %s B=%d T=%d (%s-parallel): %.0f tokens/s, %.1f GFLOP/s (%.0f%% of the "
            "%.0f GFLOP/s %s peak); step %.3f s [%.3f, %.3f]\n",
            a->preset.c_str(), a->dtype.c_str(), a->batch_size, a->block_size,
            r.ways > 1 ? "batch" : "ops", r.tokens_per_sec, r.gflops, 100 * r.gflops / peak, peak,
            peak_name.c_str(), r.step.median, r.step.min, r.step.max);
    } else if (a->what == "forward") {
      QKV_CHECK(a->batch_size >= 1 && a->block_size >= 1,
                "--batch-size and --block-size must be >= 1");
      auto r = perf::bench_forward(GPTConfig::preset(a->preset), a->batch_size, a->block_size,
                                   a->steps, a->hooks);
      j.update({{"preset", a->preset},
                {"batch_size", a->batch_size},
                {"block_size", a->block_size},
                {"hooks", a->hooks},
                {"tokens_per_sec", r.tokens_per_sec},
                {"time", stats(r.time)}});
      if (!a->json)
        std::printf("forward %s B=%d T=%d hooks %s: %.0f tokens/s; %.4f s [%.4f, %.4f]\n",
                    a->preset.c_str(), a->batch_size, a->block_size, a->hooks.c_str(),
                    r.tokens_per_sec, r.time.median, r.time.min, r.time.max);
    } else if (a->what == "generate") {
      perf::GenerateBench r;
      if (a->model.empty()) {
        r = perf::bench_generate(GPTConfig::preset(a->preset), a->prompt_tokens, a->new_tokens,
                                 a->steps, a->dtype);
      } else {
        GPT m = GPT::from_dir(a->model);
        if (m.has_fp32_weights())
          m.set_inference_weights(GPT::weights_from_name(a->dtype));
        else
          QKV_CHECK(a->dtype == "int8", "{}: the model holds int8 weights; use --dtype int8",
                    a->model);
        r = perf::bench_generate(m, a->prompt_tokens, a->new_tokens, a->steps);
        a->preset = a->model;
      }
      j.update({{"preset", a->preset},
                {"prompt_tokens", a->prompt_tokens},
                {"new_tokens", a->new_tokens},
                {"prefill_tokens_per_sec", r.prefill_tokens_per_sec},
                {"decode_tokens_per_sec", r.decode_tokens_per_sec},
                {"prefill", stats(r.prefill)},
                {"decode_token", stats(r.decode_token)}});
      if (!a->json)
        std::printf("generate %s %s: prefill %d tokens %.0f tokens/s; decode %.1f tokens/s\n",
                    a->preset.c_str(), a->dtype.c_str(), a->prompt_tokens, r.prefill_tokens_per_sec,
                    r.decode_tokens_per_sec);
    } else if (a->what == "gemm") {
      QKV_CHECK(a->m >= 1 && a->n >= 1 && a->k >= 1, "-m, -n, -k must be >= 1");
      auto r = perf::bench_gemm(a->m, a->n, a->k, a->trans_a, a->trans_b, a->steps, a->dtype);
      j.update({{"m", a->m},
                {"n", a->n},
                {"k", a->k},
                {"trans_a", a->trans_a},
                {"trans_b", a->trans_b},
                {"gflops", r.gflops},
                {"time", stats(r.time)}});
      j["amx"] = cpu::amx_available();
      j["bf16_engine"] = cpu::bf16_engine();
      // bf16 against its engine's peak; int8 (AMX-INT8 or VNNI) against AMX bf16's where there
      // are tiles, else fp32 FMA's.
      const bool amx = a->dtype == "int8" && cpu::amx_available();
      const double peak = a->dtype == "bf16" ? perf::measure_bf16_peak_gflops()
                          : amx              ? perf::measure_amx_peak_gflops()
                                             : perf::measure_peak_gflops();
      const std::string peak_name = a->dtype == "bf16" ? std::string(cpu::bf16_engine()) + " bf16"
                                    : amx              ? "AMX bf16"
                                                       : "fp32 FMA";
      j.update({{"peak", peak_name}, {"peak_gflops", peak}, {"share_of_peak", r.gflops / peak}});
      if (!a->json)
        std::printf(
            "gemm %s %dx%dx%d: %.1f GFLOP/s (%.3f ms), %.0f%% of the %.0f GFLOP/s %s peak\n",
            a->dtype.c_str(), a->m, a->n, a->k, r.gflops, 1e3 * r.time.median,
            100 * r.gflops / peak, peak, peak_name.c_str());
    } else {
      perf::AttentionBenchOptions o;
      o.B = cmd->count("--batch-size") ? a->batch_size : 1;  // long single sequences by default
      o.NH = a->heads;
      o.HS = a->head_dim;
      o.T = a->seq_len.value_or(a->block_size);
      o.causal = !a->bidirectional;
      o.window = a->window;
      o.block = a->attn_block;
      o.local_blocks = a->attn_local_blocks;
      o.global = a->attn_global;
      o.reps = a->steps;
      if (a->sweep) {
        perf::AttentionSweepOptions so;
        so.base = o;
        if (cmd->count("--kind")) {
          so.kinds.clear();
          std::stringstream names(a->kind);
          for (std::string name; std::getline(names, name, ',');)
            so.kinds.push_back(GPTConfig::attention_from_name(name, "--kind"));
        }
        so.min_T = a->min_seq_len;
        so.max_T = a->max_seq_len;
        so.out_dir = a->out;
        if (!so.out_dir.empty()) make_dirs(so.out_dir);
        so.progress = !a->json;
        const std::string md = perf::attention_sweep(so);
        if (a->json)
          j["table_markdown"] = md;
        else
          std::printf("%s", md.c_str());
        if (!a->out.empty() && !a->json)
          std::printf("\nwrote %s/attention_scaling.{md,json,svg}\n", a->out.c_str());
      } else {
        o.kind = GPTConfig::attention_from_name(a->kind, "--kind");
        const auto r = perf::bench_attention(o);
        j.update({{"kind", a->kind},
                  {"batch_size", o.B},
                  {"heads", o.NH},
                  {"head_dim", o.HS},
                  {"seq_len", o.T},
                  {"causal", o.causal},
                  {"fwd_ms", 1e3 * r.fwd.median},
                  {"fwd_bwd_ms", 1e3 * r.fwd_bwd.median},
                  {"peak_bytes", r.peak_bytes},
                  {"gflops", r.fwd_bwd_gflops},
                  {"fwd_gflops", r.fwd_gflops}});
        if (o.kind == AttnKind::Sliding) j["window"] = o.window;
        if (o.kind == AttnKind::BlockSparse)
          j.update({{"attn_block", o.block},
                    {"attn_local_blocks", o.local_blocks},
                    {"attn_global", o.global}});
        if (!a->json)
          std::printf(
              "attention %s B=%d NH=%d T=%d HS=%d%s: forward %.2f ms (%.1f GFLOP/s), "
              "forward+backward %.2f ms (%.1f GFLOP/s), peak extra memory %.2f MiB\n",
              a->kind.c_str(), o.B, o.NH, o.T, o.HS, o.causal ? "" : " bidirectional",
              1e3 * r.fwd.median, r.fwd_gflops, 1e3 * r.fwd_bwd.median, r.fwd_bwd_gflops,
              double(r.peak_bytes) / (1 << 20));
      }
    }
    if (a->json) std::printf("%s\n", j.dump().c_str());
  });
}

}  // namespace qkv::app

// qkv inspect: attention maps, logit lens, direct logit attribution, ablations and (with
// --subject/--answer) causal tracing for one prompt, as a self-contained HTML page and/or JSON.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/qkv/commands.h"
#include "qkv/core/error.h"
#include "qkv/core/file.h"
#include "qkv/interp/interp.h"
#include "qkv/interp/report.h"
#include "qkv/models/gpt.h"
#include "qkv/tokenizer/tokenizer.h"

namespace qkv::app {

void add_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "inspect", "Look inside a model on one prompt: attention, logit lens, attribution, ablation");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  struct Args {
    std::string model, prompt, out, subject, answer;
    int layer = -1, head = -1, samples = 5, top_k = 5, threads = 0;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Model directory")->required();
  cmd->add_option("--prompt", a->prompt, "Text to inspect (at most the model's context)")
      ->required();
  cmd->add_option("--out", a->out, "Write the HTML report here (one self-contained file)");
  cmd->add_flag("--json", a->json, "Print the same numbers as one JSON object on stdout");
  cmd->add_option("--layer", a->layer, "Show attention maps of this layer only (default all)");
  cmd->add_option("--head", a->head, "Show attention maps of this head only (default all)");
  cmd->add_option("--subject", a->subject,
                  "Causal tracing: the subject, a substring of the prompt, whose tokens get noise");
  cmd->add_option("--answer", a->answer,
                  "Causal tracing: the expected next token after the prompt (one token, e.g. "
                  "' Paris' with its leading space)");
  cmd->add_option("--samples", a->samples, "Causal tracing: noise draws averaged")
      ->capture_default_str();
  cmd->add_option("--top-k", a->top_k, "Logit lens: tokens per cell")->capture_default_str();
  cmd->add_option("--threads", a->threads, "Threads (0: OMP_NUM_THREADS if set, else all cores)")
      ->capture_default_str();
  cmd->callback([a] {
    apply_threads(a->threads);
    QKV_CHECK(!a->out.empty() || a->json, "give --out FILE.html and/or --json");
    QKV_CHECK(a->subject.empty() == a->answer.empty(),
              "causal tracing needs both --subject and --answer");
    QKV_CHECK(a->samples >= 1 && a->samples <= 1000, "--samples {} out of range [1, 1000]",
              a->samples);
    QKV_CHECK(a->top_k >= 1 && a->top_k <= 100, "--top-k {} out of range [1, 100]", a->top_k);
    GPT model = GPT::from_dir(a->model);
    const GPTConfig& c = model.config();
    QKV_CHECK(a->layer >= -1 && a->layer < c.n_layer, "--layer {} out of range [0, {})", a->layer,
              c.n_layer);
    QKV_CHECK(a->head >= -1 && a->head < c.n_head, "--head {} out of range [0, {})", a->head,
              c.n_head);
    std::unique_ptr<Tokenizer> tok = load_tokenizer(a->model);
    QKV_CHECK(!a->prompt.empty(), "--prompt is empty");
    const std::vector<int32_t> ids = tok->encode(a->prompt);
    QKV_CHECK(int64_t(ids.size()) <= c.block_size,
              "--prompt is {} tokens; the model's context is {}", ids.size(), c.block_size);
    interp::check_prompt(model, ids);

    interp::InspectReport r;
    r.model = a->model;
    r.prompt = a->prompt;
    std::vector<size_t> starts;  // byte offset of each token in the prompt
    size_t at = 0;
    for (int32_t id : ids) {
      starts.push_back(at);
      r.tokens.push_back(tok->token_bytes(id));
      at += r.tokens.back().size();
    }
    starts.push_back(at);
    int32_t answer = -1;
    if (!a->subject.empty()) {
      const size_t s = a->prompt.find(a->subject);
      QKV_CHECK(s != std::string::npos, "--subject '{}' is not in the prompt", a->subject);
      const size_t e = s + a->subject.size();
      r.subject_begin = -1;
      for (size_t i = 0; i < ids.size(); ++i)
        if (starts[i] < e && starts[i + 1] > s) {
          if (r.subject_begin < 0) r.subject_begin = int(i);
          r.subject_end = int(i) + 1;
        }
      QKV_CHECK(r.subject_begin >= 0, "--subject '{}' covers no token of the prompt", a->subject);
      const std::vector<int32_t> ans = tok->encode(a->answer);
      QKV_CHECK(ans.size() == 1, "--answer '{}' is {} tokens; it must be exactly one", a->answer,
                ans.size());
      answer = ans[0];
      r.subject = a->subject;
      r.answer = a->answer;
    }
    for (int l = 0; l < c.n_layer; ++l)
      if (a->layer < 0 || l == a->layer) r.layers.push_back(l);
    for (int h = 0; h < c.n_head; ++h)
      if (a->head < 0 || h == a->head) r.heads.push_back(h);

    const int T = int(ids.size());
    r.maps = interp::attention_maps(model, ids);
    r.lens = interp::logit_lens(model, ids, a->top_k);
    r.vocab_text.resize(size_t(c.vocab_size));
    for (int32_t v = 0; v < c.vocab_size && v < tok->vocab_size(); ++v)
      r.vocab_text[size_t(v)] = tok->token_bytes(v);
    // Attribution of the token the model predicts after the prompt.
    const interp::LensEntry* top = r.lens.at(r.lens.rows - 1, T - 1);
    // Post-norm models have no linear read-out of the stream: no attribution (the report says so).
    if (c.final_norm()) r.dla = interp::direct_logit_attribution(model, ids, T - 1, top[0].token);
    r.dla_token_text = r.vocab_text[size_t(top[0].token)];
    r.ablation = T >= 2 ? interp::ablations(model, ids) : interp::Ablations{};
    if (answer >= 0)
      r.trace =
          interp::causal_trace(model, ids, r.subject_begin, r.subject_end, answer, a->samples);
    if (!a->out.empty()) {
      write_file_atomic(a->out, interp::report_html(r));
      if (!a->json) std::printf("wrote %s\n", a->out.c_str());
    }
    if (a->json)
      std::printf("%s\n", interp::report_json(r)
                              .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                              .c_str());
  });
}

}  // namespace qkv::app

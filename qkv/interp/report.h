// The `qkv inspect` report: one self-contained HTML page (data inline as JSON, drawn by inline
// JavaScript on canvases; nothing fetched) and the same numbers as JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qkv/interp/interp.h"

namespace qkv::interp {

struct InspectReport {
  std::string model, prompt;
  std::vector<std::string> tokens;                    // the prompt's tokens as text
  std::vector<int> layers, heads;                     // which attention maps (all by default)
  std::vector<std::vector<std::vector<float>>> maps;  // [layer][head] (T, T), all layers/heads
  LogitLens lens;
  std::vector<std::string> vocab_text;  // token id -> text, for the lens (only ids used)
  Attribution dla;
  std::string dla_token_text;
  Ablations ablation;
  std::optional<CausalTrace> trace;
  std::string subject, answer;
  int subject_begin = 0, subject_end = 0;
};

nlohmann::json report_json(const InspectReport& r);
std::string report_html(const InspectReport& r);

}  // namespace qkv::interp

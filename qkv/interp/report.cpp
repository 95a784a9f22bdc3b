#include "qkv/interp/report.h"

#include <cmath>

namespace qkv::interp {

namespace {
// Rounds for a compact page (probabilities and nats to 5 significant digits).
double r5(double x) {
  if (x == 0 || !std::isfinite(x)) return x;
  const double m = std::pow(10.0, 4 - std::floor(std::log10(std::abs(x))));
  return std::round(x * m) / m;
}
}  // namespace

nlohmann::json report_json(const InspectReport& r) {
  nlohmann::json j;
  j["model"] = r.model;
  j["prompt"] = r.prompt;
  j["tokens"] = r.tokens;
  nlohmann::json maps = nlohmann::json::array();
  for (int l : r.layers)
    for (int h : r.heads) {
      const auto& m = r.maps[size_t(l)][size_t(h)];
      nlohmann::json w = nlohmann::json::array();
      for (float x : m) w.push_back(r5(x));
      maps.push_back({{"layer", l}, {"head", h}, {"weights", w}});
    }
  j["attention"] = maps;
  nlohmann::json lens = nlohmann::json::array();
  for (int row = 0; row < r.lens.rows; ++row) {
    nlohmann::json positions = nlohmann::json::array();
    for (int t = 0; t < r.lens.T; ++t) {
      nlohmann::json top = nlohmann::json::array();
      const LensEntry* e = r.lens.at(row, t);
      for (int i = 0; i < r.lens.k; ++i)
        top.push_back({{"token", e[i].token},
                       {"text", r.vocab_text.at(size_t(e[i].token))},
                       {"prob", r5(e[i].prob)}});
      positions.push_back(top);
    }
    lens.push_back({{"layer", row == 0 ? "embed" : std::to_string(row - 1)}, {"top", positions}});
  }
  j["logit_lens"] = lens;
  nlohmann::json parts = nlohmann::json::array();
  for (const auto& p : r.dla.parts)
    parts.push_back(
        {{"name", p.name}, {"layer", p.layer}, {"head", p.head}, {"value", r5(p.value)}});
  j["direct_logit_attribution"] = {{"position", r.dla.pos},
                                   {"token", r.dla.token},
                                   {"text", r.dla_token_text},
                                   {"logit", r5(r.dla.logit)},
                                   {"parts", parts}};
  nlohmann::json ab = nlohmann::json::array();
  for (const auto& a : r.ablation.rows)
    ab.push_back({{"layer", a.layer},
                  {"head", a.head},
                  {"what", a.head < 0 ? "mlp" : "head"},
                  {"zero_delta", r5(a.zero_delta)},
                  {"mean_delta", r5(a.mean_delta)}});
  j["ablation"] = {{"clean_loss", r5(r.ablation.clean_loss)}, {"rows", ab}};
  if (r.trace) {
    const CausalTrace& t = *r.trace;
    auto grid = [&](const std::vector<double>& v) {
      nlohmann::json g = nlohmann::json::array();
      for (double x : v) g.push_back(r5(x));
      return g;
    };
    j["causal_trace"] = {{"subject", r.subject},
                         {"subject_positions", {r.subject_begin, r.subject_end}},
                         {"answer", r.answer},
                         {"answer_token", t.answer},
                         {"clean_prob", r5(t.clean_prob)},
                         {"corrupt_prob", r5(t.corrupt_prob)},
                         {"layers", t.L},
                         {"hidden", grid(t.hidden)},
                         {"mlp", grid(t.mlp)},
                         {"attn", grid(t.attn)}};
  }
  return j;
}

namespace {
const char* kPage = R"PAGE(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>qkv inspect</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.tok { display: inline-block; background: #eef; border-radius: 3px; padding: 1px 4px; margin: 1px;
       font-family: monospace; white-space: pre; }
.grid { display: grid; gap: 6px; align-items: start; }
.cell { text-align: center; font-size: 11px; color: #555; }
canvas.hm { image-rendering: pixelated; border: 1px solid #ccc; cursor: zoom-in; }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 4px 7px;
       border-radius: 4px; font-size: 12px; display: none; z-index: 20; white-space: pre; }
#modal { position: fixed; inset: 0; background: rgba(0,0,0,.55); display: none; z-index: 10;
         align-items: center; justify-content: center; }
#modal .box { background: #fff; padding: 16px; border-radius: 6px; max-width: 95vw; max-height: 95vh;
              overflow: auto; }
table { border-collapse: collapse; font-size: 12px; }
td, th { border: 1px solid #ddd; padding: 2px 5px; text-align: center; font-family: monospace;
         white-space: pre; }
.bar { height: 12px; display: inline-block; vertical-align: middle; }
.note { color: #666; font-size: 12px; }
</style></head><body>
<h1>qkv inspect</h1>
<div id="head"></div>
<h2>Attention maps</h2>
<p class="note">Rows are query positions, columns key positions; darker is more weight. Hover for the
two tokens and the weight; click a map to open it large.</p>
<div id="maps" class="grid"></div>
<h2>Logit lens</h2>
<p class="note">The residual stream after each layer, read out through the final LayerNorm and the
unembedding: the top next token at each position and its probability (hover for the top 5).</p>
<div id="lens"></div>
<h2>Direct logit attribution</h2>
<div id="dla"></div>
<h2>Ablation</h2>
<p class="note">Change in the prompt's mean next-token loss (nats) when each head or MLP is zeroed
or replaced by its mean over the prompt's positions. Red: the loss rises.</p>
<div id="abl"></div>
<div id="trace"></div>
<div id="tip"></div>
<div id="modal"><div class="box" id="modalbox"></div></div>
<script id="data" type="application/json">@DATA@</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const tip = document.getElementById("tip");
const T = D.tokens.length;
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
function show(s, e) { tip.textContent = s; tip.style.display = "block";
  tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px"; }
function hide() { tip.style.display = "none"; }
function tokText(i) { return JSON.stringify(D.tokens[i]); }
// A heatmap of rows x cols values on a canvas of cell size px; color(v) gives the fill.
function heatmap(values, rows, cols, px, color, label) {
  const c = document.createElement("canvas");
  c.width = cols * px; c.height = rows * px; c.className = "hm";
  const g = c.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
    g.fillStyle = color(values[i * cols + j]); g.fillRect(j * px, i * px, px, px);
  }
  c.addEventListener("mousemove", e => {
    const r = c.getBoundingClientRect();
    const j = Math.floor((e.clientX - r.left) / r.width * cols), i = Math.floor((e.clientY - r.top) / r.height * rows);
    if (i >= 0 && i < rows && j >= 0 && j < cols) show(label(i, j, values[i * cols + j]), e);
  });
  c.addEventListener("mouseleave", hide);
  return c;
}
function blues(v) { const x = Math.max(0, Math.min(1, v)); const l = Math.round(255 - 200 * Math.sqrt(x));
  return "rgb(" + l + "," + l + "," + (255 - Math.round(60 * Math.sqrt(x))) + ")"; }
function diverging(v, scale) { const x = Math.max(-1, Math.min(1, v / (scale || 1)));
  const a = Math.round(255 * (1 - Math.abs(x)));
  return x >= 0 ? "rgb(255," + a + "," + a + ")" : "rgb(" + a + "," + a + ",255)"; }
function openLarge(title, make) {
  const box = document.getElementById("modalbox"); box.innerHTML = "";
  const h = document.createElement("div"); h.textContent = title; h.style.marginBottom = "8px"; box.appendChild(h);
  box.appendChild(make());
  document.getElementById("modal").style.display = "flex";
}
document.getElementById("modal").addEventListener("click", e => {
  if (e.target.id === "modal") { e.currentTarget.style.display = "none"; hide(); } });
document.addEventListener("keydown", e => { if (e.key === "Escape") document.getElementById("modal").style.display = "none"; });

document.getElementById("head").innerHTML = "<p>Model <b>" + esc(D.model) + "</b>, " + T +
  " tokens:</p><p>" + D.tokens.map(t => '<span class="tok">' + esc(t) + "</span>").join("") + "</p>";

// Attention maps: one grid, layers as rows, heads as columns.
(function () {
  const heads = [...new Set(D.attention.map(m => m.head))], layers = [...new Set(D.attention.map(m => m.layer))];
  const grid = document.getElementById("maps");
  grid.style.gridTemplateColumns = "auto repeat(" + heads.length + ", auto)";
  const px = Math.max(1, Math.min(6, Math.floor(96 / T)));
  grid.appendChild(document.createElement("div"));
  for (const h of heads) { const d = document.createElement("div"); d.className = "cell"; d.textContent = "head " + h; grid.appendChild(d); }
  for (const l of layers) {
    const d = document.createElement("div"); d.className = "cell"; d.textContent = "layer " + l; grid.appendChild(d);
    for (const h of heads) {
      const m = D.attention.find(x => x.layer === l && x.head === h);
      const label = (i, j, v) => "layer " + l + " head " + h + "\nquery " + i + " " + tokText(i) + "\nkey " + j + " " + tokText(j) + "\nweight " + v.toFixed(4);
      const c = heatmap(m.weights, T, T, px, blues, label);
      c.dataset.map = l + "." + h;
      c.addEventListener("click", () => openLarge("layer " + l + ", head " + h,
        () => heatmap(m.weights, T, T, Math.max(4, Math.floor(560 / T)), blues, label)));
      grid.appendChild(c);
    }
  }
})();

// Logit lens table.
(function () {
  let s = "<table><tr><th>layer</th>" + D.tokens.map((t, i) => "<th>" + i + " " + esc(JSON.stringify(t)) + "</th>").join("") + "</tr>";
  for (const row of D.logit_lens) {
    s += "<tr><th>" + esc(row.layer) + "</th>";
    row.top.forEach((top, t) => {
      const best = top[0], title = top.map(e => JSON.stringify(e.text) + " " + e.prob.toFixed(3)).join("\n");
      s += '<td data-tip="' + esc(title) + '" style="background:' + blues(best.prob) + '">' + esc(JSON.stringify(best.text)) + "<br>" + best.prob.toFixed(2) + "</td>";
    });
    s += "</tr>";
  }
  const div = document.getElementById("lens"); div.innerHTML = s + "</table>";
  div.querySelectorAll("td").forEach(td => { td.addEventListener("mousemove", e => show(td.dataset.tip, e)); td.addEventListener("mouseleave", hide); });
})();

// Direct logit attribution: bars sorted by size.
(function () {
  const a = D.direct_logit_attribution;
  if (!a.parts.length) {
    document.getElementById("dla").innerHTML = '<p class="note">Not available for a post-norm model: every block ' +
      "normalises the stream, so the logit is not a sum of the components' writes.</p>";
    return;
  }
  const parts = a.parts.slice().sort((x, y) => Math.abs(y.value) - Math.abs(x.value));
  const mx = Math.max(1e-9, ...parts.map(p => Math.abs(p.value)));
  let s = "<p>Logit of " + esc(JSON.stringify(a.text)) + " (the model's top prediction) at position " + a.position +
    ": <b>" + a.logit.toFixed(4) + "</b> = the sum of the parts below (ln_f's scale frozen on this input).</p><table>";
  for (const p of parts.slice(0, 40))
    s += "<tr><td>" + esc(p.name) + "</td><td>" + p.value.toFixed(4) + '</td><td style="text-align:left"><span class="bar" style="width:' +
      Math.round(200 * Math.abs(p.value) / mx) + "px;background:" + (p.value >= 0 ? "#c33" : "#36c") + '"></span></td></tr>';
  document.getElementById("dla").innerHTML = s + "</table>" + (parts.length > 40 ? '<p class="note">' + (parts.length - 40) + " smaller parts not shown (see --json).</p>" : "");
})();

// Ablation: layers x (heads..., mlp) for zero and mean ablation.
(function () {
  const layers = [...new Set(D.ablation.rows.map(r => r.layer))], heads = [...new Set(D.ablation.rows.filter(r => r.head >= 0).map(r => r.head))];
  const cols = heads.length + (D.ablation.rows.some(r => r.head < 0) ? 1 : 0), scale = Math.max(1e-9, ...D.ablation.rows.map(r => Math.max(Math.abs(r.zero_delta), Math.abs(r.mean_delta))));
  const div = document.getElementById("abl");
  div.innerHTML = "<p>Clean loss " + D.ablation.clean_loss.toFixed(4) + " nats. Columns: heads 0.." + (heads.length - 1) + ", then the MLP.</p>";
  for (const kind of ["zero_delta", "mean_delta"]) {
    const v = [];
    const hasMlp = D.ablation.rows.some(r => r.head < 0);
    for (const l of layers) { for (const h of heads) v.push(D.ablation.rows.find(r => r.layer === l && r.head === h)[kind]);
      if (hasMlp) v.push(D.ablation.rows.find(r => r.layer === l && r.head < 0)[kind]); }
    const wrap = document.createElement("div"); wrap.style.display = "inline-block"; wrap.style.marginRight = "24px";
    const cap = document.createElement("div"); cap.className = "cell"; cap.textContent = kind === "zero_delta" ? "zeroed" : "mean-ablated"; wrap.appendChild(cap);
    wrap.appendChild(heatmap(v, layers.length, cols, 22, x => diverging(x, scale),
      (i, j, x) => "layer " + layers[i] + " " + (j < heads.length ? "head " + heads[j] : "MLP") + "\nloss change " + (x >= 0 ? "+" : "") + x.toFixed(4)));
    div.appendChild(wrap);
  }
})();

// Causal tracing.
(function () {
  const t = D.causal_trace; if (!t) return;
  const div = document.getElementById("trace");
  div.innerHTML = "<h2>Where the fact is stored (causal tracing)</h2><p>Subject " + esc(JSON.stringify(t.subject)) + " (tokens " +
    t.subject_positions[0] + ".." + (t.subject_positions[1] - 1) + ") corrupted with noise; answer " + esc(JSON.stringify(t.answer)) +
    ": p = " + t.clean_prob.toFixed(4) + " clean, " + t.corrupt_prob.toFixed(4) + " corrupted. Each cell: p after restoring that layer's state at that position.</p>";
  const px = Math.max(10, Math.min(28, Math.floor(420 / T)));
  for (const [key, name] of [["hidden", "hidden state"], ["mlp", "MLP output"], ["attn", "attention output"]]) {
    if (!t[key] || t[key].length === 0) continue;  // attention-only models have no MLP
    const wrap = document.createElement("div"); wrap.style.display = "inline-block"; wrap.style.marginRight = "24px";
    const cap = document.createElement("div"); cap.className = "cell"; cap.textContent = name + " (rows: positions, columns: layers)"; wrap.appendChild(cap);
    const v = []; for (let i = 0; i < T; i++) for (let l = 0; l < t.layers; l++) v.push(t[key][l * T + i]);
    // One scale for the three maps: from the lowest to the highest probability seen.
    const all = t.hidden.concat(t.mlp || [], t.attn, [t.clean_prob, t.corrupt_prob]);
    const lo = Math.min(...all), hi = Math.max(lo + 1e-9, ...all);
    wrap.appendChild(heatmap(v, T, t.layers, px, x => blues((x - lo) / (hi - lo)),
      (i, l, x) => "position " + i + " " + tokText(i) + "\nlayer " + l + "\np(answer) " + x.toFixed(4)));
    div.appendChild(wrap);
  }
})();
</script></body></html>
)PAGE";
}  // namespace

std::string report_html(const InspectReport& r) {
  std::string data = report_json(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // Inside <script>, "</" must not appear: escape every '<' as a JSON unicode escape.
  std::string safe;
  safe.reserve(data.size());
  for (char c : data) {
    if (c == '<')
      safe += "\\u003c";
    else
      safe += c;
  }
  std::string page = kPage;
  page.replace(page.find("@DATA@"), 6, safe);
  return page;
}

}  // namespace qkv::interp

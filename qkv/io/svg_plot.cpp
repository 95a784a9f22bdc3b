#include "qkv/io/svg_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace qkv {

namespace {
constexpr double kPanelW = 460, kPanelH = 340, kLeft = 70, kRight = 20, kTop = 60, kBottom = 50;
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                         "#ff7f0e", "#17becf", "#8c564b", "#e377c2"};

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else if (c == '"')
      o += "&quot;";
    else
      o += c;
  }
  return o;
}

bool usable(double v, double log_base) { return std::isfinite(v) && (log_base == 0 || v > 0); }

// One axis: maps data to [0, 1] and lists tick positions with labels.
struct Axis {
  double lo = 0, hi = 1, base = 0;
  double tr(double v) const { return base ? std::log(v) : v; }
  double frac(double v) const { return (tr(v) - tr(lo)) / (tr(hi) - tr(lo)); }
  std::vector<double> ticks() const {
    std::vector<double> t;
    if (base) {
      const double step = base;
      double v = std::pow(step, std::floor(std::log(lo) / std::log(step) + 1e-9));
      for (; v <= hi * (1 + 1e-9); v *= step)
        if (v >= lo * (1 - 1e-9)) t.push_back(v);
      if (t.size() < 2) t = {lo, hi};
      return t;
    }
    const double span = hi - lo, raw = span / 5;
    const double mag = std::pow(10, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 5.0, 10.0})
      if (raw <= m * mag) {
        step = m * mag;
        break;
      }
    for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(v);
    return t;
  }
};

std::string label(double v) {
  if (v == 0) return "0";
  const double a = std::abs(v);
  if (a >= 1e9) return fmt::format("{:g}G", v / 1e9);
  if (a >= 1e6) return fmt::format("{:g}M", v / 1e6);
  if (a >= 1e5 && a / 1e3 == std::round(a / 1e3)) return fmt::format("{:g}k", v / 1e3);
  if (a == std::round(a)) return fmt::format("{:.0f}", v);
  return fmt::format("{:.3g}", v);
}

Axis make_axis(const std::vector<double>& vals, double base) {
  Axis ax;
  ax.base = base;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : vals)
    if (usable(v, base)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  if (!std::isfinite(lo)) lo = base ? 1 : 0, hi = base ? 10 : 1;
  if (base) {
    // Whole powers of the base around the data.
    lo = std::pow(base, std::floor(std::log(lo) / std::log(base) + 1e-9));
    hi = std::pow(base, std::ceil(std::log(hi) / std::log(base) - 1e-9));
    if (hi <= lo) hi = lo * base;
  } else {
    if (hi <= lo) hi = lo + 1;
    const double pad = 0.05 * (hi - lo);
    lo -= pad;
    hi += pad;
  }
  ax.lo = lo;
  ax.hi = hi;
  return ax;
}
}  // namespace

std::string svg_line_chart(const std::string& title, const std::vector<PlotPanel>& panels,
                           const std::string& subtitle) {
  const double W = kPanelW * double(std::max<size_t>(1, panels.size())), H = kPanelH + 30;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"16\" "
      "font-weight=\"bold\">{}</text>\n",
      W, H, W, H, W / 2, esc(title));
  if (!subtitle.empty())
    s += fmt::format(
        "<text x=\"{}\" y=\"40\" text-anchor=\"middle\" font-size=\"11\" "
        "fill=\"#555\">{}</text>\n",
        W / 2, esc(subtitle));
  for (size_t pi = 0; pi < panels.size(); ++pi) {
    const PlotPanel& p = panels[pi];
    const double x0 = kPanelW * double(pi) + kLeft, y0 = 30 + kTop - 10;
    const double pw = kPanelW - kLeft - kRight, ph = kPanelH - kTop - kBottom + 10;
    std::vector<double> xs, ys;
    for (const auto& se : p.series) {
      xs.insert(xs.end(), se.x.begin(), se.x.end());
      ys.insert(ys.end(), se.y.begin(), se.y.end());
    }
    const Axis ax = make_axis(xs, p.log_x), ay = make_axis(ys, p.log_y);
    auto px = [&](double v) { return x0 + ax.frac(v) * pw; };
    auto py = [&](double v) { return y0 + ph - ay.frac(v) * ph; };
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{}</text>\n",
                     x0 + pw / 2, y0 - 12, esc(p.title));
    s += fmt::format(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", x0,
        y0, pw, ph);
    for (double t : ax.ticks()) {
      const double x = px(t);
      s += fmt::format(
          "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0}\" "
          "y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
          x, y0, y0 + ph, y0 + ph + 16, label(t));
    }
    for (double t : ay.ticks()) {
      const double y = py(t);
      s += fmt::format(
          "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#ddd\"/><text x=\"{3}\" "
          "y=\"{4}\" text-anchor=\"end\">{5}</text>\n",
          x0, y, x0 + pw, x0 - 6, y + 4, label(t));
    }
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x0 + pw / 2,
                     y0 + ph + 36, esc(p.xlabel));
    s += fmt::format(
        "<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\" transform=\"rotate(-90 {0} {1})\">{2}"
        "</text>\n",
        x0 - 52, y0 + ph / 2, esc(p.ylabel));
    // The legend goes in the corner with the fewest data points under it, drawn over the data.
    const double lw = 190, lh = 16.0 * double(p.series.size()) + 8;
    double lx = x0 + 6, ly0 = y0 + 6;
    {
      size_t best = SIZE_MAX;
      for (int corner = 0; corner < 4; ++corner) {
        const double cx = corner & 1 ? x0 + pw - lw - 6 : x0 + 6;
        const double cy = corner & 2 ? y0 + ph - lh - 6 : y0 + 6;
        size_t n = 0;
        for (const auto& se : p.series)
          for (size_t i = 0; i < se.x.size() && i < se.y.size(); ++i)
            if (usable(se.x[i], p.log_x) && usable(se.y[i], p.log_y)) {
              const double X = px(se.x[i]), Y = py(se.y[i]);
              n += X >= cx && X <= cx + lw && Y >= cy && Y <= cy + lh;
            }
        if (n < best) {
          best = n;
          lx = cx;
          ly0 = cy;
        }
      }
    }
    std::string legend = fmt::format(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"white\" "
        "fill-opacity=\"0.85\"/>\n",
        lx, ly0, lw, lh);
    for (size_t si = 0; si < p.series.size(); ++si) {
      const PlotSeries& se = p.series[si];
      const char* color = kColors[si % (sizeof kColors / sizeof kColors[0])];
      std::string path;
      bool pen = false;
      for (size_t i = 0; i < se.x.size() && i < se.y.size(); ++i) {
        if (!usable(se.x[i], p.log_x) || !usable(se.y[i], p.log_y)) {
          pen = false;
          continue;
        }
        path += fmt::format("{}{:.1f},{:.1f} ", pen ? "L" : "M", px(se.x[i]), py(se.y[i]));
        s += fmt::format(
            "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"><title>{}: {}, {}</title>"
            "</circle>\n",
            px(se.x[i]), py(se.y[i]), color, esc(se.name), label(se.x[i]), label(se.y[i]));
        pen = true;
      }
      if (!path.empty())
        s += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>\n", path,
                         color);
      const double ly = ly0 + 12 + 16 * double(si);
      legend += fmt::format(
          "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"2\"/>"
          "<text x=\"{4}\" y=\"{5}\">{6}</text>\n",
          lx + 6, ly, lx + 26, color, lx + 32, ly + 4, esc(se.name));
    }
    s += legend;
  }
  s += "</svg>\n";
  return s;
}

}  // namespace qkv

// Line charts as self-contained SVG (no scripts, no fonts to fetch): benchmark scaling curves,
// training curves. Panels sit side by side under one title; axes may be logarithmic.
#pragma once

#include <string>
#include <vector>

namespace qkv {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;  // points with a non-finite y (or y <= 0 on a log axis) are gaps
};

struct PlotPanel {
  std::string title, xlabel, ylabel;
  double log_x = 0, log_y = 0;  // 0: linear axis; else the log base of the ticks (2, 10)
  std::vector<PlotSeries> series;
};

// The chart as an SVG document, panels left to right, each with its own axes and legend.
// `subtitle` (optional) is a smaller second line under the title.
std::string svg_line_chart(const std::string& title, const std::vector<PlotPanel>& panels,
                           const std::string& subtitle = "");

}  // namespace qkv

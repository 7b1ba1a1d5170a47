// Small inline SVG plots for the web pages, drawn on the server (no script,
// nothing from elsewhere): horizontal bars (accounts by state) and a line
// over time (throughput). The output is an <svg> element to put in a page;
// labels are escaped.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace imapstage::serve {

struct Bar {
  std::string label;
  double value = 0;
  std::string colour;  // CSS colour, e.g. "#393"
};

// One bar per entry, the longest scaled to the width, each labelled with its value.
std::string svg_bars(const std::string& id, const std::string& title, const std::vector<Bar>& bars);

// A line through `points` ({x: unix seconds, y: value}), x from the first to
// the last point, y from 0 to the largest value; `unit` names the y axis
// values ("bytes/s" is shown as KiB/s, MiB/s... as they grow). A note
// instead of a plot when there are fewer than two points.
std::string svg_line(const std::string& id, const std::string& title,
                     const std::vector<std::pair<double, double>>& points, const std::string& unit);

}  // namespace imapstage::serve

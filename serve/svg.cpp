#include "serve/svg.h"

#include <algorithm>
#include <cmath>
#include <ctime>

#include <fmt/format.h>

#include "serve/web_html.h"

namespace imapstage::serve {

std::string svg_bars(const std::string& id, const std::string& title, const std::vector<Bar>& bars) {
  double most = 1;
  for (auto& b : bars) most = std::max(most, b.value);
  std::string svg = fmt::format(
      "<svg id=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"420\" height=\"{}\" role=\"img\" "
      "aria-label=\"{}\"><title>{}</title>",
      html::esc(id), bars.size() * 24 + 4, html::esc(title), html::esc(title));
  for (size_t i = 0; i < bars.size(); ++i) {
    int w = static_cast<int>(280 * bars[i].value / most);
    svg += fmt::format(
        "<text x=\"0\" y=\"{}\" font-size=\"14\">{}</text><rect x=\"90\" y=\"{}\" width=\"{}\" height=\"18\" "
        "fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"14\">{}</text>",
        i * 24 + 17, html::esc(bars[i].label), i * 24 + 3, w, html::esc(bars[i].colour), 95 + w, i * 24 + 17,
        bars[i].value);
  }
  return svg + "</svg>";
}

namespace {

std::string clock_text(double t) {
  std::time_t s = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

}  // namespace

std::string svg_line(const std::string& id, const std::string& title,
                     const std::vector<std::pair<double, double>>& points, const std::string& unit) {
  if (points.size() < 2)
    return fmt::format("<p class=\"note\" id=\"{}\">{}: not enough samples yet.</p>", html::esc(id), html::esc(title));
  const double W = 560, H = 180, left = 70, right = 10, top = 10, bottom = 24;
  double x0 = points.front().first, x1 = std::max(points.back().first, x0 + 1);
  double ymax = 0;
  for (auto& p : points) ymax = std::max(ymax, p.second);
  if (ymax <= 0) ymax = 1;
  auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * (W - left - right); };
  auto Y = [&](double y) { return top + (1 - y / ymax) * (H - top - bottom); };
  std::string path;
  for (auto& p : points) path += fmt::format("{}{:.1f},{:.1f}", path.empty() ? "M" : " L", X(p.first), Y(p.second));
  std::string label = unit == "bytes/s" ? html::rate_text(ymax) : fmt::format("{:.0f} {}", ymax, unit);
  return fmt::format(
      "<svg id=\"{0}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{1}\" height=\"{2}\" role=\"img\" "
      "aria-label=\"{3}\"><title>{3}</title>"
      "<line x1=\"{4}\" y1=\"{5}\" x2=\"{4}\" y2=\"{6}\" stroke=\"#888\"/>"
      "<line x1=\"{4}\" y1=\"{6}\" x2=\"{7}\" y2=\"{6}\" stroke=\"#888\"/>"
      "<text x=\"0\" y=\"{8}\" font-size=\"11\">{9}</text><text x=\"0\" y=\"{6}\" font-size=\"11\">0</text>"
      "<text x=\"{4}\" y=\"{10}\" font-size=\"11\">{11}</text>"
      "<text x=\"{7}\" y=\"{10}\" font-size=\"11\" text-anchor=\"end\">{12} UTC</text>"
      "<path d=\"{13}\" fill=\"none\" stroke=\"#37c\" stroke-width=\"2\"/></svg>",
      html::esc(id), W, H, html::esc(title), left, top, H - bottom, W - right, top + 10, html::esc(label),
      H - 6, clock_text(x0), clock_text(x1), path);
}

}  // namespace imapstage::serve

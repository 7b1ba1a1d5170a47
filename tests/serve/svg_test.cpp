// The web pages' small pieces without a server: escaping, figures as people
// read them, CSV fields and the SVG plots.
#include <regex>

#include <gtest/gtest.h>

#include "serve/svg.h"
#include "serve/web_html.h"

namespace imapstage::testing {
namespace {

using namespace serve;

TEST(WebHtml, EscapesAndWritesFiguresForPeople) {
  EXPECT_EQ(html::esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  EXPECT_EQ(html::size_text(812), "812 bytes");
  EXPECT_EQ(html::size_text(1536), "1.5 KiB");
  EXPECT_EQ(html::size_text(3 * 1048576ull + 209716), "3.2 MiB");
  EXPECT_EQ(html::rate_text(2.5 * 1048576), "2.5 MiB/s");
  EXPECT_EQ(html::duration_text(45), "45 s");
  EXPECT_EQ(html::duration_text(61), "2 min");
  EXPECT_EQ(html::duration_text(3 * 3600 + 5 * 60), "3 h 05 min");
  EXPECT_EQ(html::duration_text(-1), "unknown");
  EXPECT_EQ(html::when(0), "1970-01-01 00:00 UTC");
  EXPECT_TRUE(html::same("abc", "abc"));
  EXPECT_FALSE(html::same("abc", "abd"));
  EXPECT_FALSE(html::same("abc", "ab"));
}

TEST(WebHtml, QuotesCsvFieldsOnlyWhenNeeded) {
  EXPECT_EQ(html::csv("INBOX"), "INBOX");
  EXPECT_EQ(html::csv("a,b"), "\"a,b\"");
  EXPECT_EQ(html::csv("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(html::csv("two\nlines"), "\"two\nlines\"");
}

TEST(Svg, BarsScaleToTheLongestAndEscapeLabels) {
  std::string svg = svg_bars("by-state", "accounts", {{"done", 4, "#393"}, {"<err>", 2, "#c33"}, {"none", 0, "#999"}});
  EXPECT_EQ(svg.rfind("<svg id=\"by-state\"", 0), 0u) << svg;
  EXPECT_NE(svg.find("width=\"280\""), std::string::npos) << "the longest bar is full width";
  EXPECT_NE(svg.find("width=\"140\""), std::string::npos) << "half the value, half the width";
  EXPECT_NE(svg.find("&lt;err&gt;"), std::string::npos);
  EXPECT_EQ(svg.find("<err>"), std::string::npos);
  EXPECT_EQ(svg.substr(svg.size() - 6), "</svg>");
}

TEST(Svg, ALineNeedsTwoPointsAndSpansThem) {
  std::string none = svg_line("rate", "bytes per second", {{100, 5}}, "bytes/s");
  EXPECT_EQ(none.find("<svg"), std::string::npos);
  EXPECT_NE(none.find("not enough samples"), std::string::npos);
  std::string svg = svg_line("rate", "bytes per second", {{0, 0}, {30, 2048}, {60, 1024}}, "bytes/s");
  EXPECT_EQ(svg.rfind("<svg id=\"rate\"", 0), 0u) << svg;
  EXPECT_NE(svg.find("2.0 KiB/s"), std::string::npos) << "the y axis is labelled with the largest rate";
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, std::regex("d=\"M([0-9.]+),([0-9.]+) L([0-9.]+),([0-9.]+) L([0-9.]+),([0-9.]+)\"")))
      << svg;
  EXPECT_EQ(std::stod(m[1]), 70.0) << "the first point at the left axis";
  EXPECT_EQ(std::stod(m[5]), 550.0) << "the last at the right end";
  EXPECT_LT(std::stod(m[4]), std::stod(m[6])) << "the larger value higher";
  EXPECT_NE(svg.find("00:00:00"), std::string::npos);
  EXPECT_NE(svg.find("00:01:00 UTC"), std::string::npos);
}

}  // namespace
}  // namespace imapstage::testing

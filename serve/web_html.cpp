#include "serve/web_html.h"

#include <cmath>
#include <ctime>

#include <fmt/format.h>

namespace imapstage::serve::html {

std::string esc(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string when(double t) {
  std::time_t s = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string size_text(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} bytes", bytes);
  if (bytes < 1024 * 1024) return fmt::format("{:.1f} KiB", bytes / 1024.0);
  if (bytes < 1024ull * 1024 * 1024) return fmt::format("{:.1f} MiB", bytes / 1048576.0);
  return fmt::format("{:.2f} GiB", bytes / 1073741824.0);
}

std::string rate_text(double r) {
  if (r < 0) r = 0;
  if (r < 1024) return fmt::format("{:.0f} bytes/s", r);
  if (r < 1024 * 1024) return fmt::format("{:.1f} KiB/s", r / 1024.0);
  return fmt::format("{:.1f} MiB/s", r / 1048576.0);
}

std::string duration_text(double s) {
  if (s < 0 || !std::isfinite(s)) return "unknown";
  if (s < 60) return fmt::format("{:.0f} s", s);
  if (s < 3600) return fmt::format("{:.0f} min", std::ceil(s / 60));
  auto m = static_cast<uint64_t>(std::ceil(s / 60));
  return fmt::format("{} h {:02} min", m / 60, m % 60);
}

bool same(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

std::string csv(const std::string& f) {
  if (f.find_first_of(",\"\r\n") == std::string::npos) return f;
  std::string out = "\"";
  for (char c : f) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace imapstage::serve::html

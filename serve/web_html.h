// What the web pages' files share (serve/web.cpp, serve/web_console.cpp):
// escaping, the page's figures as people read them, a constant-time
// comparison of tokens.
#pragma once

#include <cstdint>
#include <string>

namespace imapstage::serve::html {

// Text for HTML content and attribute values (& < > " ').
std::string esc(const std::string& s);
// "2026-12-03 14:05 UTC".
std::string when(double unix_seconds);
// "812 bytes", "1.5 KiB", "3.2 MiB", "1.25 GiB".
std::string size_text(uint64_t bytes);
// "4.2 MiB/s".
std::string rate_text(double bytes_per_second);
// "45 s", "12 min", "3 h 05 min"; "unknown" below 0.
std::string duration_text(double seconds);
// The same bytes, in time independent of where they differ.
bool same(const std::string& a, const std::string& b);
// A CSV field: quoted when it holds a comma, quote or line break.
std::string csv(const std::string& field);

}  // namespace imapstage::serve::html

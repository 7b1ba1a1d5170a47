// How events reach people and machines.
//   TerminalSink: a live progress line on stderr when it is a terminal,
//                 plus one line per finished folder, warning and error.
//   JsonLinesSink: every event as one JSON object per line on a stream (and
//                  warnings and errors as text on stderr).
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include "common/events.h"

namespace imapstage::cli {

class TerminalSink : public EventSink {
 public:
  // `verbosity`: -1 quiet (errors only), 0 normal, 1 verbose.
  explicit TerminalSink(int verbosity = 0, std::FILE* out = stderr);
  void emit(const nlohmann::json& event) override;
  // Clears the live line (before printing a summary).
  void finish();

 private:
  void print_line(const std::string& text);
  std::mutex mutex_;
  std::FILE* out_;
  int verbosity_;
  bool live_;  // out_ is a terminal: redraw a progress line in place
  bool line_shown_ = false;
  std::chrono::steady_clock::time_point last_draw_{};
  // The latest progress of each folder being exported or imported now (by
  // "account\nfolder"): folders worked on side by side share the line.
  std::map<std::string, nlohmann::json> active_;
};

class JsonLinesSink : public EventSink {
 public:
  // Every event goes to `out`; warnings and errors are also written as text
  // lines to `diagnostics` (unless null), so people and logs see them too.
  explicit JsonLinesSink(std::FILE* out = stdout, std::FILE* diagnostics = stderr)
      : out_(out), diagnostics_(diagnostics) {}
  void emit(const nlohmann::json& event) override;

 private:
  std::mutex mutex_;
  std::FILE* out_;
  std::FILE* diagnostics_;
};

// Where a command's events go: JSON lines on stdout with `json`, else a
// terminal display of type T (TerminalSink or a subclass-like sink taking a
// verbosity). `terminal` is that display, or null in JSON mode.
template <class T>
struct CommandSink {
  std::unique_ptr<EventSink> sink;
  T* terminal = nullptr;

  CommandSink(bool json, int verbosity) {
    if (json) {
      sink = std::make_unique<JsonLinesSink>(stdout);
    } else {
      auto t = std::make_unique<T>(verbosity);
      terminal = t.get();
      sink = std::move(t);
    }
  }
};

// `text` as it may be shown on a terminal or written to a text log: every
// control character (C0 including NUL, CR, LF and ESC; DEL; C1) and every
// byte that is not part of valid UTF-8 is written as \xNN. Names and texts
// from a server or an archive can hold anything; only this reaches a screen.
std::string printable(std::string_view text);

namespace detail {
inline std::string shown(std::string_view s) { return printable(s); }
inline std::string shown(const std::string& s) { return printable(s); }
inline std::string shown(const char* s) { return printable(s ? s : ""); }
template <class T>
  requires(!std::is_convertible_v<const T&, std::string_view>)
const T& shown(const T& v) {
  return v;
}
}  // namespace detail

// Writes human output to `out`: `format` (fmt syntax) with every string
// argument passed through printable() first.
template <class... Args>
void say(std::FILE* out, fmt::format_string<decltype(detail::shown(std::declval<const Args&>()))...> format,
         const Args&... args) {
  std::string text = fmt::format(format, detail::shown(args)...);
  std::fwrite(text.data(), 1, text.size(), out);
}

// `text` followed by spaces up to `width` terminal columns (UTF-8 aware: a
// code point is one column, East Asian wide ones two); longer text is kept whole.
std::string pad(std::string_view text, size_t width);

// "1.5 MB", "820 B", "3.2 GB" (decimal units).
std::string human_bytes(double bytes);
// "1:02:03" or "4:05".
std::string human_duration(double seconds);

}  // namespace imapstage::cli

// How events reach people and machines.
//   TerminalSink: live account and folder progress on stderr (redrawn in place
//                 on a terminal, periodic plain lines otherwise), plus one line
//                 per finished folder, warning and error.
//   JsonLinesSink: every event as one JSON object per line on a stream (and
//                  warnings and errors as text on stderr).
#pragma once

#include <chrono>
#include <functional>
#include <optional>
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
  struct Settings {
    // Redraw a block of lines in place; unset: whether `out` is a terminal.
    std::optional<bool> live;
    // Without a terminal, one plain progress line per account at most this often (seconds).
    double plain_interval = 10;
    // Seconds on a monotonic clock (tests pass their own); unset: steady_clock.
    std::function<double()> clock;
  };
  // `verbosity`: -1 quiet (errors only), 0 normal, 1 verbose.
  explicit TerminalSink(int verbosity = 0, std::FILE* out = stderr);
  TerminalSink(int verbosity, std::FILE* out, Settings settings);
  // On a terminal: an account line (messages and bytes done of the totals
  // announced by a "totals" event, percentage, rate, elapsed, ETA) with one
  // line per folder being worked on below it, redrawn in place at most five
  // times a second. Otherwise the account line as a plain line every
  // plain_interval seconds. Finished folders, warnings and errors are lines.
  void emit(const nlohmann::json& event) override;
  // Clears the live lines (before printing a summary).
  void finish();

 private:
  // What one account has to do and has done, from "totals" and "progress".
  struct Account {
    std::string command;         // "export", "import", "verify"
    bool totals_known = false;
    uint64_t messages_total = 0, bytes_total = 0;
    uint64_t messages_done = 0, bytes_done = 0;  // of folders finished
    double started = 0;          // clock() at the totals event
    double last_plain = -1e300;  // clock() of the last plain line
  };
  double now() const;
  void print_line(const std::string& text);
  void clear_block();
  void draw_block();
  void on_progress(const nlohmann::json& e);
  // A step's own line (verify, bundle steps): `what` then percentage, rate,
  // elapsed and ETA of `done` of `total`; live in place on a terminal (gone
  // when final), else a plain line every plain_interval seconds and at the end.
  void show_step(Account& a, double done, double total, const std::string& what, bool final);
  std::string account_line(const std::string& name, const Account& a) const;
  std::mutex mutex_;
  std::FILE* out_;
  int verbosity_;
  bool live_;  // out_ is a terminal: redraw the block in place
  Settings settings_;
  int drawn_ = 0;  // lines of the live block on screen
  double last_draw_ = -1e300;
  std::string extra_line_;  // a live line of its own (verify)
  std::map<std::string, Account> accounts_;
  // The latest progress of each folder being exported or imported now (by
  // "account\nfolder"): folders worked on side by side get a line each.
  std::map<std::string, nlohmann::json> active_;
};

// Writes every event as one JSON line to a file it owns (--log-file), opened
// for appending; throws Error(io) naming the file when it cannot be opened.
class LogFileSink : public EventSink {
 public:
  explicit LogFileSink(const std::string& path);
  ~LogFileSink() override;
  LogFileSink(const LogFileSink&) = delete;
  LogFileSink& operator=(const LogFileSink&) = delete;
  void emit(const nlohmann::json& event) override;

 private:
  std::mutex mutex_;
  std::FILE* file_;
};

// Every event to each of its sinks in turn.
class TeeSink : public EventSink {
 public:
  TeeSink(std::unique_ptr<EventSink> first, std::unique_ptr<EventSink> second)
      : first_(std::move(first)), second_(std::move(second)) {}
  void emit(const nlohmann::json& event) override {
    first_->emit(event);
    second_->emit(event);
  }

 private:
  std::unique_ptr<EventSink> first_, second_;
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

  // With a `log_file`, every event is also appended to it as a JSON line.
  CommandSink(bool json, int verbosity, const std::string& log_file = {}) {
    if (json) {
      sink = std::make_unique<JsonLinesSink>(stdout);
    } else {
      auto t = std::make_unique<T>(verbosity);
      terminal = t.get();
      sink = std::move(t);
    }
    if (!log_file.empty()) sink = std::make_unique<TeeSink>(std::make_unique<LogFileSink>(log_file), std::move(sink));
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
// "1:02:03" or "0:04:05" (h:mm:ss).
std::string human_duration(double seconds);

}  // namespace imapstage::cli

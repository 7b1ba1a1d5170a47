#include "cli/display.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"

namespace imapstage::cli {

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) {
    bytes /= 1000;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", bytes, units[u]) : fmt::format("{:.1f} {}", bytes, units[u]);
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  auto escape = [&](unsigned char c) { out += fmt::format("\\x{:02x}", c); };
  for (size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) escape(c);
      else out += static_cast<char>(c);
      ++i;
      continue;
    }
    // A UTF-8 sequence: shortest form, no surrogates, not a C1 control.
    size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    bool ok = len > 0 && i + len <= text.size();
    uint32_t cp = ok ? c & (0x7F >> len) : 0;
    for (size_t k = 1; ok && k < len; ++k) {
      auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))))
      ok = false;
    if (ok && cp >= 0x80 && cp <= 0x9F) ok = false;  // C1 controls (U+0080..U+009F)
    if (!ok) {
      escape(c);
      ++i;
      continue;
    }
    out.append(text.substr(i, len));
    i += len;
  }
  return out;
}

std::string pad(std::string_view text, size_t width) {
  size_t columns = 0;
  for (size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    uint32_t cp = c;
    size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (len > 1 && i + len <= text.size()) {
      cp = c & (0xFF >> (len + 1));
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    }
    i += len;
    bool wide = (cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0xA4CF) || (cp >= 0xAC00 && cp <= 0xD7A3) ||
                (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
                (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x1F300 && cp <= 0x1FAFF) || (cp >= 0x20000 && cp <= 0x3FFFD);
    columns += wide ? 2 : 1;
  }
  std::string out(text);
  if (columns < width) out.append(width - columns, ' ');
  return out;
}

std::string human_duration(double seconds) {
  if (seconds < 0) seconds = 0;
  auto s = static_cast<long long>(seconds + 0.5);
  return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
}

TerminalSink::TerminalSink(int verbosity, std::FILE* out) : TerminalSink(verbosity, out, Settings{}) {}

TerminalSink::TerminalSink(int verbosity, std::FILE* out, Settings settings)
    : out_(out),
      verbosity_(verbosity),
      live_(settings.live.value_or(isatty(fileno(out)) != 0)),
      settings_(std::move(settings)) {}

double TerminalSink::now() const {
  if (settings_.clock) return settings_.clock();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void TerminalSink::clear_block() {
  if (drawn_ == 0) return;
  std::fputs("\r", out_);
  for (int i = 1; i < drawn_; ++i) std::fputs("\033[A", out_);
  std::fputs("\033[J", out_);
  drawn_ = 0;
}

void TerminalSink::print_line(const std::string& text) {
  clear_block();
  std::string shown = printable(text);
  std::fwrite(shown.data(), 1, shown.size(), out_);
  std::fputc('\n', out_);
  if (live_ && verbosity_ >= 0) draw_block();
  std::fflush(out_);
}

void TerminalSink::finish() {
  std::lock_guard lock(mutex_);
  clear_block();
  active_.clear();
  accounts_.clear();
  extra_line_.clear();
  std::fflush(out_);
}

static std::string str(const nlohmann::json& e, const char* key) {
  auto it = e.find(key);
  if (it == e.end() || it->is_null()) return {};
  return it->is_string() ? it->get<std::string>() : it->dump();
}

static double num(const nlohmann::json& e, const char* key) {
  auto it = e.find(key);
  return it != e.end() && it->is_number() ? it->get<double>() : 0.0;
}

std::string TerminalSink::account_line(const std::string& name, const Account& a) const {
  uint64_t messages = a.messages_done, bytes = a.bytes_done;
  for (auto& [key, p] : active_) {
    if (key.substr(0, key.find('\n')) != name) continue;
    messages += static_cast<uint64_t>(num(p, "messages"));
    bytes += static_cast<uint64_t>(num(p, "bytes"));
  }
  double elapsed = now() - a.started;
  double fraction = a.bytes_total > 0 ? double(bytes) / double(a.bytes_total)
                    : a.messages_total > 0 ? double(messages) / double(a.messages_total)
                                           : 1.0;
  fraction = std::min(fraction, 1.0);
  double rate = elapsed > 0 ? bytes / elapsed : 0;
  std::string eta = "-";
  if (fraction >= 1.0) eta = human_duration(0);
  else if (rate > 0 && a.bytes_total > bytes) eta = human_duration(double(a.bytes_total - bytes) / rate);
  else if (elapsed > 0 && messages > 0 && a.messages_total > messages)
    eta = human_duration(elapsed * double(a.messages_total - messages) / double(messages));
  std::string prefix = name.empty() ? "" : name + ": ";
  return fmt::format("{}{} {}/{} messages  {}/{}  {:.1f}%  {}/s  elapsed {}  ETA {}", prefix, a.command, messages,
                     a.messages_total, human_bytes(double(bytes)), human_bytes(double(a.bytes_total)),
                     100 * fraction, human_bytes(rate), human_duration(elapsed), eta);
}

void TerminalSink::draw_block() {
  std::vector<std::string> lines;
  for (auto& [name, a] : accounts_)
    if (a.totals_known) lines.push_back(account_line(name, a));
  for (auto& [key, p] : active_) {
    double elapsed = num(p, "elapsed");
    double rate = elapsed > 0 ? num(p, "bytes") / elapsed : 0;
    std::string account = accounts_.size() > 1 ? str(p, "account") + " " : "";
    lines.push_back(fmt::format("  {}[{}/{}] {}  {:.0f}/{:.0f}  {}/{}  {}/s", account, num(p, "folder_index"),
                                num(p, "folders"), str(p, "folder"), num(p, "messages"), num(p, "messages_total"),
                                human_bytes(num(p, "bytes")), human_bytes(num(p, "bytes_total")),
                                human_bytes(rate)));
  }
  if (!extra_line_.empty()) lines.push_back(extra_line_);
  if (lines.empty()) return;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) std::fputc('\n', out_);
    std::fputs(printable(lines[i]).c_str(), out_);
  }
  drawn_ = static_cast<int>(lines.size());
  last_draw_ = now();
}

void TerminalSink::on_progress(const nlohmann::json& e) {
  std::string name = str(e, "account");
  std::string key = name + "\n" + str(e, "folder");
  bool final = e.value("final", false);
  if (final) {
    active_.erase(key);
    auto& a = accounts_[name];
    a.messages_done += static_cast<uint64_t>(num(e, "messages"));
    a.bytes_done += static_cast<uint64_t>(num(e, "bytes"));
  } else {
    active_[key] = e;
  }
  if (verbosity_ < 0) return;
  double t = now();
  if (live_) {
    if (t - last_draw_ < 0.2 && !final) return;
    clear_block();
    draw_block();
    std::fflush(out_);
    return;
  }
  auto it = accounts_.find(name);
  if (it == accounts_.end() || !it->second.totals_known) return;
  if (t - it->second.last_plain < settings_.plain_interval) return;
  it->second.last_plain = t;
  std::fputs(printable(account_line(name, it->second)).c_str(), out_);
  std::fputc('\n', out_);
  std::fflush(out_);
}

void TerminalSink::show_step(Account& a, double done, double total, const std::string& what, bool final) {
  double t = now();
  double elapsed = t - a.started;
  double rate = elapsed > 0 ? done / elapsed : 0;
  std::string eta = done >= total ? human_duration(0) : rate > 0 ? human_duration((total - done) / rate) : "-";
  std::string line = fmt::format("{}  {:.1f}%  {}/s  elapsed {}  ETA {}", what, total > 0 ? 100 * done / total : 100.0,
                                 human_bytes(rate), human_duration(elapsed), eta);
  if (live_) {
    extra_line_ = final ? std::string() : line;
    if (t - last_draw_ < 0.2 && !final) return;
    clear_block();
    draw_block();
    std::fflush(out_);
  } else if (final || t - a.last_plain >= settings_.plain_interval) {
    a.last_plain = t;
    std::fputs(printable(line).c_str(), out_);
    std::fputc('\n', out_);
    std::fflush(out_);
  }
}

void TerminalSink::emit(const nlohmann::json& e) {
  std::lock_guard lock(mutex_);
  const std::string name = str(e, "event");
  std::string prefix = e.contains("account") && verbosity_ >= 0 ? str(e, "account") + ": " : "";
  if (name == "totals") {
    auto& a = accounts_[str(e, "account")];
    a.command = str(e, "command");
    a.totals_known = true;
    a.messages_total = static_cast<uint64_t>(num(e, "messages_total"));
    a.bytes_total = static_cast<uint64_t>(num(e, "bytes_total"));
    a.messages_done = a.bytes_done = 0;
    a.started = now();
    if (verbosity_ < 0) return;
    std::string verb = a.command == "import"    ? "to append"
                       : a.command == "export"  ? "to fetch"
                       : a.command == "extract" ? "to write"
                                                : "to check";
    print_line(fmt::format("{}{} messages, {} {} in {:.0f} folders", prefix, a.messages_total,
                           human_bytes(double(a.bytes_total)), verb, num(e, "folders")));
    if (!live_) a.last_plain = now();
    return;
  }
  if (name == "progress") {
    on_progress(e);
    return;
  }
  if (name == "step_progress") {  // one long step of a command (bundle create, verify, apply)
    if (verbosity_ < 0) return;
    auto& a = accounts_["\n" + str(e, "command") + "\n" + str(e, "step")];
    if (a.command.empty()) {
      a.command = str(e, "command");
      a.started = now();
    }
    double done = num(e, "done"), total = num(e, "total");
    show_step(a, done, total,
              fmt::format("{}: {} {}/{}", a.command, str(e, "step"), human_bytes(done), human_bytes(total)),
              e.value("final", false));
    return;
  }
  if (name == "verify_progress") {
    if (verbosity_ < 0) return;
    auto& a = accounts_[""];
    if (a.command.empty()) {
      a.command = "verify";
      a.started = now();
    }
    double read = num(e, "stored_bytes_read"), total = num(e, "stored_bytes_total");
    show_step(a, read, total,
              fmt::format("verify: pack {:.0f}/{:.0f}  {:.0f} objects re-hashed  {}/{} read", num(e, "packs_done"),
                          num(e, "packs"), num(e, "objects_checked"), human_bytes(read), human_bytes(total)),
              e.value("final", false));
    return;
  }
  if (name == "folder_done") {
    if (verbosity_ < 0) return;
    std::string text = str(e, "text");
    if (e.contains("bytes_fetched") && e.contains("new")) {
      // An exported folder: the text in human units.
      text = fmt::format("{}: {} new, {:.0f} flag changes, {:.0f} expunged, {} fetched", str(e, "folder"),
                         str(e, "new"), num(e, "flags_updated"), num(e, "expunged"),
                         human_bytes(num(e, "bytes_fetched")));
      if (num(e, "failed") > 0) text += fmt::format(", {:.0f} not delivered", num(e, "failed"));
    } else if (e.value("dry_run", false) && e.contains("bytes") && e.contains("messages")) {
      text = fmt::format("{}: {:.0f} messages to fetch, {}", str(e, "folder"), num(e, "messages"),
                         human_bytes(num(e, "bytes")));
    }
    print_line(prefix + (text.empty() ? str(e, "folder") : text));
    return;
  }
  if (name == "warning" || name == "message_error" || name == "folder_error" || name == "reconnect" ||
      name == "account_error") {
    std::string text = str(e, "text");
    if (text.empty()) text = str(e, "error");
    std::string label = name == "warning" || name == "reconnect" ? "warning: " : "error: ";
    print_line(prefix + label + text);
    return;
  }
  if ((name == "info" || name == "mapping") && verbosity_ >= 0) {
    print_line(prefix + str(e, "text"));
    return;
  }
  if (verbosity_ > 0 && e.contains("text")) print_line(prefix + str(e, "text"));
}

LogFileSink::LogFileSink(const std::string& path) : file_(std::fopen(path.c_str(), "a")) {
  if (!file_)
    throw Error(ErrorKind::io, fmt::format("cannot open the log file: {}", std::strerror(errno)), Retry::never,
                {.file = path});
}

LogFileSink::~LogFileSink() { std::fclose(file_); }

void LogFileSink::emit(const nlohmann::json& e) {
  std::string line = e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

void JsonLinesSink::emit(const nlohmann::json& e) {
  std::string line = e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::lock_guard lock(mutex_);
  std::fputs(line.c_str(), out_);
  std::fputc('\n', out_);
  std::fflush(out_);
  if (!diagnostics_) return;
  const std::string name = str(e, "event");
  if (name == "warning" || name.ends_with("_error")) {
    std::string text = str(e, "text");
    if (text.empty()) text = str(e, "error");
    std::string prefix = e.contains("account") ? str(e, "account") + ": " : "";
    say(diagnostics_, "imapstage: {}{}{}\n", prefix, name == "warning" ? "warning: " : "error: ", text);
    std::fflush(diagnostics_);
  }
}

}  // namespace imapstage::cli

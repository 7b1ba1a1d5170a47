#include "cli/display.h"

#include <unistd.h>

#include <fmt/format.h>

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
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

TerminalSink::TerminalSink(int verbosity, std::FILE* out)
    : out_(out), verbosity_(verbosity), live_(isatty(fileno(out)) != 0) {}

void TerminalSink::print_line(const std::string& text) {
  if (line_shown_) std::fputs("\r\033[K", out_);
  line_shown_ = false;
  std::string shown = printable(text);
  std::fwrite(shown.data(), 1, shown.size(), out_);
  std::fputc('\n', out_);
  std::fflush(out_);
}

void TerminalSink::finish() {
  std::lock_guard lock(mutex_);
  if (line_shown_) {
    std::fputs("\r\033[K", out_);
    std::fflush(out_);
    line_shown_ = false;
  }
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

void TerminalSink::emit(const nlohmann::json& e) {
  std::lock_guard lock(mutex_);
  const std::string name = str(e, "event");
  std::string prefix = e.contains("account") && verbosity_ >= 0 ? str(e, "account") + ": " : "";
  if (name == "progress") {
    if (!live_ || verbosity_ < 0) return;
    std::string key = str(e, "account") + "\n" + str(e, "folder");
    bool final = e.value("final", false);
    if (final) active_.erase(key);
    else active_[key] = e;
    auto now = std::chrono::steady_clock::now();
    if (now - last_draw_ < std::chrono::milliseconds(200) && !final) return;
    last_draw_ = now;
    auto describe = [&](const nlohmann::json& p, bool full) {
      double done = num(p, "messages"), total = num(p, "messages_total");
      double bytes = num(p, "bytes"), bytes_total = num(p, "bytes_total");
      double elapsed = num(p, "elapsed");
      double rate = elapsed > 0 ? bytes / elapsed : 0;
      std::string eta = rate > 0 && bytes_total > bytes ? human_duration((bytes_total - bytes) / rate) : "-";
      if (full)
        return fmt::format("[{}/{}] {}  {:.0f}/{:.0f} msgs  {}/{}  {}/s  ETA {}", num(p, "folder_index"),
                           num(p, "folders"), str(p, "folder"), done, total, human_bytes(bytes),
                           human_bytes(bytes_total), human_bytes(rate), eta);
      return fmt::format("[{}/{}] {} {:.0f}/{:.0f} {}/s", num(p, "folder_index"), num(p, "folders"),
                         str(p, "folder"), done, total, human_bytes(rate));
    };
    std::string line;
    if (active_.size() <= 1) {
      line = prefix + describe(active_.empty() ? e : active_.begin()->second, true);
    } else {
      line = prefix;
      for (auto& [k, p] : active_) line += (line.size() > prefix.size() ? "  |  " : "") + describe(p, false);
    }
    std::fputs("\r\033[K", out_);
    line = printable(line);
    std::fwrite(line.data(), 1, line.size(), out_);
    std::fflush(out_);
    line_shown_ = true;
    return;
  }
  if (name == "verify_progress") {
    if (!live_ || verbosity_ < 0) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_draw_ < std::chrono::milliseconds(200) && !e.value("final", false)) return;
    last_draw_ = now;
    double read = num(e, "stored_bytes_read"), total = num(e, "stored_bytes_total");
    std::string line = fmt::format("verify: pack {:.0f}/{:.0f}  {:.0f} objects re-hashed  {}/{} read ({:.0f}%)",
                                   num(e, "packs_done"), num(e, "packs"), num(e, "objects_checked"),
                                   human_bytes(read), human_bytes(total), total > 0 ? 100 * read / total : 100.0);
    std::fputs("\r\033[K", out_);
    std::fputs(line.c_str(), out_);
    std::fflush(out_);
    line_shown_ = true;
    return;
  }
  if (name == "folder_done") {
    if (verbosity_ < 0) return;
    std::string text = str(e, "text");
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

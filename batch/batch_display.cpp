#include "batch/batch_display.h"

#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

#include "cli/display.h"

namespace imapstage::batch {

namespace {

std::string str(const nlohmann::json& e, const char* key) {
  auto it = e.find(key);
  if (it == e.end() || it->is_null()) return {};
  return it->is_string() ? it->get<std::string>() : it->dump();
}

double num(const nlohmann::json& e, const char* key) {
  auto it = e.find(key);
  return it != e.end() && it->is_number() ? it->get<double>() : 0.0;
}

}  // namespace

BatchTerminalSink::BatchTerminalSink(int verbosity, std::FILE* out) : BatchTerminalSink(verbosity, out, Settings{}) {}

BatchTerminalSink::BatchTerminalSink(int verbosity, std::FILE* out, Settings settings)
    : out_(out),
      verbosity_(verbosity),
      live_(settings.live.value_or(isatty(fileno(out)) != 0)),
      settings_(std::move(settings)) {
  started_ = now();
}

double BatchTerminalSink::now() const {
  if (settings_.clock) return settings_.clock();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double BatchTerminalSink::fraction(const std::string& account) const {
  auto it = work_.find(account);
  if (it == work_.end() || !it->second.known) return 0;
  const Work& w = it->second;
  if (w.bytes_total == 0) return 1;
  uint64_t done = w.bytes_finished;
  for (auto& [folder, bytes] : w.active) done += bytes;
  return std::min(1.0, double(done) / double(w.bytes_total));
}

std::string BatchTerminalSink::total_line() const {
  double share = double(done_ + failed_);
  for (auto& [account, text] : running_) share += fraction(account);
  double f = accounts_ ? std::min(1.0, share / double(accounts_)) : 0;
  double elapsed = now() - started_;
  std::string eta = f >= 1 ? cli::human_duration(0) : f > 0 ? cli::human_duration(elapsed * (1 - f) / f) : "-";
  return fmt::format("total: {}/{} accounts done, {} failed, {} running, {} messages, {}  {:.1f}%  elapsed {}  ETA {}",
                     done_, accounts_, failed_, running_.size(), messages_, cli::human_bytes(double(bytes_)),
                     100 * f, cli::human_duration(elapsed), eta);
}

void BatchTerminalSink::clear_block() {
  for (int i = 0; i < drawn_; ++i) std::fputs("\033[1A\r\033[K", out_);
  drawn_ = 0;
}

void BatchTerminalSink::draw_block() {
  if (!live_ || verbosity_ < 0) return;
  clear_block();
  for (auto& [account, text] : running_) {
    cli::say(out_, "  {}: {}\n", account, text);
    ++drawn_;
  }
  std::fputs((total_line() + "\n").c_str(), out_);
  ++drawn_;
  std::fflush(out_);
  last_draw_ = now();
}

void BatchTerminalSink::print_line(const std::string& text) {
  clear_block();
  cli::say(out_, "{}\n", text);
  draw_block();
  std::fflush(out_);
}

void BatchTerminalSink::finish() {
  std::lock_guard lock(mutex_);
  clear_block();
  std::fflush(out_);
}

void BatchTerminalSink::emit(const nlohmann::json& e) {
  std::lock_guard lock(mutex_);
  const std::string name = str(e, "event");
  const std::string account = str(e, "account");
  if (name == "batch_start") {
    accounts_ = static_cast<size_t>(num(e, "selected"));
    started_ = now();
    if (verbosity_ >= 0) print_line(str(e, "text"));
    return;
  }
  if (name == "account_start") {
    running_[account] = "logging in";
    if (!live_ && verbosity_ >= 0) print_line(str(e, "text"));
    else draw_block();
    return;
  }
  if (name == "totals") {
    auto& w = work_[account];
    w = {};
    w.known = true;
    w.bytes_total = static_cast<uint64_t>(num(e, "bytes_total"));
    w.messages_total = static_cast<uint64_t>(num(e, "messages_total"));
    return;
  }
  if (name == "progress") {
    if (!running_.count(account)) return;
    auto& w = work_[account];
    if (e.value("final", false)) {
      w.active.erase(str(e, "folder"));
      w.bytes_finished += static_cast<uint64_t>(num(e, "bytes"));
    } else {
      w.active[str(e, "folder")] = static_cast<uint64_t>(num(e, "bytes"));
    }
    double bytes = num(e, "bytes"), bytes_total = num(e, "bytes_total"), elapsed = num(e, "elapsed");
    double rate = elapsed > 0 ? bytes / elapsed : 0;
    std::string share = w.known ? fmt::format("{:.0f}% of {}  ", 100 * fraction(account),
                                              cli::human_bytes(double(w.bytes_total)))
                                : "";
    running_[account] = fmt::format("{}[{}/{}] {}  {:.0f}/{:.0f} msgs  {}/{}  {}/s", share, num(e, "folder_index"),
                                    num(e, "folders"), str(e, "folder"), num(e, "messages"),
                                    num(e, "messages_total"), cli::human_bytes(bytes), cli::human_bytes(bytes_total),
                                    cli::human_bytes(rate));
    double t = now();
    if (live_ && t - last_draw_ > 0.2) draw_block();
    if (!live_ && verbosity_ >= 0 && t - last_plain_ >= settings_.plain_interval) {
      last_plain_ = t;
      std::fputs((total_line() + "\n").c_str(), out_);
      std::fflush(out_);
    }
    return;
  }
  if (name == "account_done" || name == "account_error") {
    running_.erase(account);
    work_.erase(account);
    if (name == "account_done") {
      ++done_;
      messages_ += static_cast<uint64_t>(num(e, "messages"));
      bytes_ += static_cast<uint64_t>(num(e, "bytes"));
      if (verbosity_ >= 0) print_line(str(e, "text"));
      else draw_block();
    } else {
      ++failed_;
      print_line("error: " + str(e, "text"));
    }
    return;
  }
  if (name == "throttled" || name == "parked") {
    // The account gave its slot back: shown as throttled/parked with the time it resumes.
    running_.erase(account);
    work_.erase(account);
    print_line(str(e, "text"));
    return;
  }
  if (name == "line_error") {
    print_line("error: " + str(e, "text"));
    return;
  }
  if (name == "warning" || name == "message_error" || name == "folder_error" || name == "reconnect") {
    std::string text = str(e, "text");
    if (text.empty()) text = str(e, "error");
    std::string label = name == "warning" || name == "reconnect" ? "warning: " : "error: ";
    print_line((account.empty() ? "" : account + ": ") + label + text);
    return;
  }
  if ((name == "held" || name == "batch_done" || name == "account_skip" || name == "shard") && verbosity_ >= 0) {
    if (name == "account_skip" && verbosity_ < 1) return;
    print_line(str(e, "text"));
    return;
  }
  if (name == "folder_done" && verbosity_ > 0) print_line(account + ": " + str(e, "text"));
}

}  // namespace imapstage::batch

#include "batch/batch_display.h"

#include <unistd.h>

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

BatchTerminalSink::BatchTerminalSink(int verbosity, std::FILE* out)
    : out_(out), verbosity_(verbosity), live_(isatty(fileno(out)) != 0) {}

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
  std::fputs(fmt::format("total: {}/{} accounts done, {} failed, {} running, {} messages, {}\n", done_, accounts_,
                         failed_, running_.size(), messages_, cli::human_bytes(double(bytes_)))
                 .c_str(),
             out_);
  ++drawn_;
  std::fflush(out_);
  last_draw_ = std::chrono::steady_clock::now();
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
    if (verbosity_ >= 0) print_line(str(e, "text"));
    return;
  }
  if (name == "account_start") {
    running_[account] = "logging in";
    if (!live_ && verbosity_ >= 0) print_line(str(e, "text"));
    else draw_block();
    return;
  }
  if (name == "progress") {
    if (!running_.count(account)) return;
    double bytes = num(e, "bytes"), bytes_total = num(e, "bytes_total"), elapsed = num(e, "elapsed");
    double rate = elapsed > 0 ? bytes / elapsed : 0;
    running_[account] = fmt::format("[{}/{}] {}  {:.0f}/{:.0f} msgs  {}/{}  {}/s", num(e, "folder_index"),
                                    num(e, "folders"), str(e, "folder"), num(e, "messages"),
                                    num(e, "messages_total"), cli::human_bytes(bytes), cli::human_bytes(bytes_total),
                                    cli::human_bytes(rate));
    if (live_ && std::chrono::steady_clock::now() - last_draw_ > std::chrono::milliseconds(200)) draw_block();
    return;
  }
  if (name == "account_done" || name == "account_error") {
    running_.erase(account);
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
  if ((name == "held" || name == "batch_done" || name == "account_skip") && verbosity_ >= 0) {
    if (name == "account_skip" && verbosity_ < 1) return;
    print_line(str(e, "text"));
    return;
  }
  if (name == "folder_done" && verbosity_ > 0) print_line(account + ": " + str(e, "text"));
}

}  // namespace imapstage::batch

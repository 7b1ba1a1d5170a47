// The terminal display of a batch: one live line per running account and a
// total line (redrawn in place on a terminal), plus one line per finished
// account, error and warning. Without a terminal only those lines are written.
#pragma once

#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>

#include "common/events.h"

namespace imapstage::batch {

class BatchTerminalSink : public EventSink {
 public:
  // `verbosity`: -1 errors only, 0 normal, 1 every folder too.
  explicit BatchTerminalSink(int verbosity = 0, std::FILE* out = stderr);
  void emit(const nlohmann::json& event) override;
  // Clears the live lines (before printing a summary).
  void finish();

 private:
  void clear_block();
  void draw_block();
  void print_line(const std::string& text);

  std::mutex mutex_;
  std::FILE* out_;
  int verbosity_;
  bool live_;
  int drawn_ = 0;  // lines of the live block on screen
  std::map<std::string, std::string> running_;  // account -> its progress text
  size_t accounts_ = 0, done_ = 0, failed_ = 0;
  uint64_t messages_ = 0, bytes_ = 0;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace imapstage::batch

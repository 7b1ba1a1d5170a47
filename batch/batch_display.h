// The terminal display of a batch: one live line per running account and a
// total line across accounts with elapsed time and ETA (redrawn in place on a
// terminal), plus one line per finished account, error and warning. Without a
// terminal those lines, and the total line every plain_interval seconds.
#pragma once

#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>
#include <map>
#include <mutex>
#include <string>

#include "common/events.h"

namespace imapstage::batch {

class BatchTerminalSink : public EventSink {
 public:
  // `verbosity`: -1 errors only, 0 normal, 1 every folder too.
  struct Settings {
    std::optional<bool> live;        // unset: whether `out` is a terminal
    double plain_interval = 10;      // seconds between total lines without a terminal
    std::function<double()> clock;   // monotonic seconds; unset: steady_clock
  };
  explicit BatchTerminalSink(int verbosity = 0, std::FILE* out = stderr);
  BatchTerminalSink(int verbosity, std::FILE* out, Settings settings);
  void emit(const nlohmann::json& event) override;
  // Clears the live lines (before printing a summary).
  void finish();

 private:
  void clear_block();
  void draw_block();
  void print_line(const std::string& text);
  double now() const;
  // "total: ..." with the share of the accounts this run selected that is done
  // (finished accounts, and the bytes done of running ones' totals), elapsed and ETA.
  std::string total_line() const;
  // How much of a running account is done, 0..1 (0 before its totals are known).
  double fraction(const std::string& account) const;

  std::mutex mutex_;
  std::FILE* out_;
  int verbosity_;
  bool live_;
  int drawn_ = 0;  // lines of the live block on screen
  std::map<std::string, std::string> running_;  // account -> its progress text
  size_t accounts_ = 0, done_ = 0, failed_ = 0;
  uint64_t messages_ = 0, bytes_ = 0;
  Settings settings_;
  double started_ = 0;            // clock() at batch_start
  double last_draw_ = -1e300;
  double last_plain_ = -1e300;
  // Per running account: bytes to do (from "totals"), bytes of finished
  // folders, and the latest bytes of each folder being worked on.
  struct Work {
    uint64_t bytes_total = 0, messages_total = 0;
    bool known = false;
    uint64_t bytes_finished = 0;
    std::map<std::string, uint64_t> active;
  };
  std::map<std::string, Work> work_;
};

}  // namespace imapstage::batch

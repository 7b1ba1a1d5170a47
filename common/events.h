// Structured progress and result events. Engines (export, import, verify)
// emit events; the command line decides how to show them: a live terminal
// display, or JSON lines for machines. Events never carry secrets.
#pragma once

#include <mutex>
#include <nlohmann/json.hpp>

namespace imapstage {

// Receives events. Implementations must be thread-safe: batches emit from
// several threads.
class EventSink {
 public:
  virtual ~EventSink() = default;
  // `event` has at least "event" (a name such as "folder_start") and may
  // have any other fields. Called often: keep it cheap.
  virtual void emit(const nlohmann::json& event) = 0;
};

// Discards everything (tests, --quiet).
class NullSink : public EventSink {
 public:
  void emit(const nlohmann::json&) override {}
};

// Keeps every event in memory (tests).
class RecordingSink : public EventSink {
 public:
  void emit(const nlohmann::json& event) override {
    std::lock_guard lock(mutex_);
    events_.push_back(event);
  }
  std::vector<nlohmann::json> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<nlohmann::json> events_;
};

// Seconds since the epoch, with milliseconds, for event timestamps.
double now_seconds();

}  // namespace imapstage

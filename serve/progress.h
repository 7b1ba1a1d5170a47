// The progress of one attempt of a serve job, from the engines' own JSON
// events (the ones `export --json` and `import --json` print: totals,
// folder_start, progress, folder_done), which export and import lanes emit
// from several threads. What it hands on is the job record's "progress"
// (serve/jobs.h), at most once a second, so a mailbox of many small
// messages does not turn into as many updates.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace imapstage::serve {

class ProgressTracker {
 public:
  // Gets the progress and the bytes moved since its previous call.
  using Publish = std::function<void(nlohmann::json progress, uint64_t moved_since)>;
  // `clock`: unix seconds (common/events.h now_seconds unless a test gives another).
  explicit ProgressTracker(Publish publish, std::function<double()> clock = {});

  // A new phase ("export", "import", "verify") begins: its counts start
  // from zero (the bytes moved so far stay in "moved"); published at once.
  void phase(const std::string& name);
  // One engine event. Counts of the export and import phases; the first 20
  // problems (message_error, folder_error, warning, message_skipped) with
  // their folder and UID. Publishes when a second has passed since the last time.
  void observe(const nlohmann::json& event);

  // [{"event", "phase", "folder", "uid", "text"}...]
  nlohmann::json problems() const;
  // At most `most` of the attempt's samples [[unix seconds, bytes moved]...],
  // evenly thinned, the last one kept.
  nlohmann::json samples(size_t most) const;

  static constexpr size_t kMaxSamples = 240;  // kept over the attempt; halved in resolution beyond

 private:
  uint64_t phase_bytes() const;  // under mutex_
  void publish(bool force);      // under mutex_

  Publish publish_;
  std::function<double()> clock_;
  mutable std::mutex mutex_;
  std::string phase_;
  uint64_t folders_ = 0, folders_done_ = 0, messages_total_ = 0, bytes_total_ = 0;
  bool have_totals_ = false;
  std::map<std::string, std::pair<uint64_t, uint64_t>> folder_now_;  // messages, bytes of this phase
  uint64_t moved_before_ = 0, published_ = 0;
  double last_ = 0;
  std::vector<std::pair<double, uint64_t>> samples_;
  nlohmann::json problems_ = nlohmann::json::array();
};

}  // namespace imapstage::serve

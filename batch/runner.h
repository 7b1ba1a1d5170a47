// The account loop of a batch, independent of what is done per account:
// chooses what to run from the saved state (resume), runs the accounts under
// the scheduler's caps with a deadline each, and records every start, end and
// error in the state file. export_batch.cpp and import_batch.cpp plug the
// engines in.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "batch/scheduler.h"
#include "batch/state.h"
#include "common/events.h"

namespace imapstage::batch {

struct BatchItem {
  std::string key;       // unique in the batch
  std::string account;   // archived account name
  std::string server;    // host:port, for the per-server cap
  std::string target;    // import: target identity
  size_t line = 0;
};

// What one account's work reports when it returns normally.
struct ItemOutcome {
  uint64_t messages = 0;
  uint64_t bytes = 0;
  bool complete = true;      // false: some folder or message failed (recorded as an error, retried on resume)
  std::string incomplete;    // what was not done, when !complete
};

// The work for one account. `cancelled()` turns true when the account's
// deadline has passed or the batch is being stopped; the work should then
// throw Error(interrupted) at the next safe point. Any Error thrown marks the
// account as error with its message.
using ItemWork = std::function<ItemOutcome(const BatchItem& item, const std::function<bool()>& cancelled)>;

struct RunnerOptions {
  SchedulerOptions scheduler;
  std::chrono::seconds account_timeout{24 * 3600};  // 0: none
  bool retry_errors = false;   // run only the accounts whose last attempt ended in error
  bool new_batch = false;      // forget the saved state and run every account
  std::function<bool()> interrupted;  // e.g. SIGINT seen: stop starting accounts, cancel running ones
  // An account whose work throws Error(throttled) is `throttled`: it gives
  // its slot to others and starts again when the server's wait
  // (retry_after(), else 60 s) is over, at most `max_throttles` times in a
  // row; a wait above `max_throttle_wait`, or one throttle too many, parks
  // it instead (this run leaves it; a run after its resume time continues).
  std::chrono::milliseconds max_throttle_wait{15 * 60 * 1000};
  int max_throttles = 12;
};

struct BatchResult {
  bool resumed = false;      // an unfinished batch was continued
  size_t total = 0;          // accounts in the batch
  size_t selected = 0;       // accounts this run started or meant to start
  size_t skipped = 0;        // done earlier (or not an error with retry_errors): not run
  size_t done = 0;
  size_t failed = 0;
  size_t not_started = 0;    // selected but never started (stopped)
  size_t parked = 0;         // left parked until a later time (daily budget, long throttling), now or earlier
  BatchState state;          // the state at the end
};

// "2026-12-03 17:45:00 UTC" for unix seconds (resume times in reports).
std::string resume_text(int64_t unix_seconds);

// Runs `items` of batch kind `kind` ("export", "import") with the state in
// `state_file`. A state that is unfinished (some account not done) is
// resumed: done accounts are skipped, new items are added as queued. A
// finished state (or new_batch) starts a fresh batch where every item runs.
// Emits batch_start, account_start, account_done, account_error,
// account_skip, throttled, parked, held and batch_done events, each with "account" where it applies;
// throttled and parked carry "seconds" (the wait), "resume_at" (unix
// seconds) and "reason";
// account_start, account_done and account_error also carry "time" (unix
// seconds with milliseconds), taken while the account holds its scheduler slot.
BatchResult run_batch(const std::string& kind, const std::filesystem::path& state_file,
                      const std::vector<BatchItem>& items, const RunnerOptions& options, EventSink& events,
                      const ItemWork& work);

}  // namespace imapstage::batch

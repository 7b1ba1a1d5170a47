// Bounded retries with exponential backoff for work that can be resumed:
// export and import wrap each folder in it, so a dropped connection costs a
// reconnect, not a run.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "common/error.h"

namespace imapstage {

struct RetryPolicy {
  int max_attempts = 6;                              // failures in a row without progress
  std::chrono::milliseconds backoff{500};            // first wait, doubled each time...
  std::chrono::milliseconds max_backoff{30000};      // ...up to this
};

// Calls `work` until it returns. An Error with retry() == Retry::now is
// retried: `recover` is called at once (commit what is safe, drop the dead
// connection), then `on_retry(error, attempt, delay)` (to report it), then
// the wait. The failure count resets whenever `progress()` has grown since
// the previous attempt. After max_attempts failures in a row the last error
// is rethrown with Retry::later and "(gave up after N attempts)". Any other
// error propagates at once.
void run_with_retries(const RetryPolicy& policy, const std::function<void()>& work,
                      const std::function<void()>& recover,
                      const std::function<void(const Error&, int attempt, std::chrono::milliseconds delay)>& on_retry,
                      const std::function<uint64_t()>& progress);

}  // namespace imapstage

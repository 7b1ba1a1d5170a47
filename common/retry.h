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

  // Throttling (Error kind throttled): the server's suggested wait when it
  // names one, else `throttle_backoff` doubled per throttle in a row with
  // full jitter (a uniform wait between half and all of it); never more
  // than `max_throttle_wait` (--max-backoff).
  std::chrono::milliseconds throttle_backoff{2000};
  std::chrono::milliseconds max_throttle_wait{15 * 60 * 1000};
  // Throttles in a row without progress before giving up (the error then
  // propagates with Retry::later; the run is resumable).
  int max_throttles = 12;
  // False (batches): a throttled account does not wait in place; the
  // throttled Error propagates at once, carrying the wait in retry_after(),
  // after `recover` committed what arrived, so the batch gives the slot to
  // another account and resumes this one when the wait is over.
  bool wait_when_throttled = true;
  // Told of every throttling wait before it starts (the "throttled" event);
  // may be empty.
  std::function<void(const Error& error, std::chrono::milliseconds wait)> on_throttled;
};

// The wait for the `attempt`-th throttle in a row (1, 2, ...) under
// `policy`: the server's suggestion (error.retry_after()) or exponential
// backoff with full jitter, capped at policy.max_throttle_wait. An Error
// whose retry_after() is above the cap is not waited for at all:
// run_with_retries lets it propagate (the account is resumable later).
std::chrono::milliseconds throttle_wait(const RetryPolicy& policy, const Error& error, int attempt);

// Calls `work` until it returns. An Error of kind throttled is handled as
// RetryPolicy describes (recover, on_throttled, wait, again; or propagate
// when !wait_when_throttled). An Error with retry() == Retry::now is
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

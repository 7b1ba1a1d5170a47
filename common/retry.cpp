#include "common/retry.h"

#include <algorithm>
#include <thread>

#include <fmt/format.h>

namespace imapstage {

void run_with_retries(const RetryPolicy& policy, const std::function<void()>& work,
                      const std::function<void()>& recover,
                      const std::function<void(const Error&, int, std::chrono::milliseconds)>& on_retry,
                      const std::function<uint64_t()>& progress) {
  int failures = 0;
  auto delay = policy.backoff;
  for (;;) {
    uint64_t before = progress();
    try {
      work();
      return;
    } catch (const Error& e) {
      if (e.retry() != Retry::now) throw;
      recover();
      if (progress() != before) {
        failures = 0;
        delay = policy.backoff;
      }
      if (++failures >= policy.max_attempts)
        throw Error(e.kind(), fmt::format("{} (gave up after {} attempts)", e.message(), failures), Retry::later,
                    e.where());
      on_retry(e, failures, delay);
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, policy.max_backoff);
    }
  }
}

}  // namespace imapstage

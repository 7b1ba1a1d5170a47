#include "common/retry.h"

#include <algorithm>
#include <random>
#include <thread>

#include <fmt/format.h>

namespace imapstage {

std::chrono::milliseconds throttle_wait(const RetryPolicy& policy, const Error& error, int attempt) {
  using ms = std::chrono::milliseconds;
  ms wait;
  if (error.retry_after()) {
    wait = *error.retry_after();
  } else {
    ms full = policy.throttle_backoff;
    for (int i = 1; i < attempt && full < policy.max_throttle_wait; ++i) full *= 2;
    full = std::min(full, policy.max_throttle_wait);
    static thread_local std::mt19937_64 random{std::random_device{}()};
    std::uniform_int_distribution<int64_t> pick(full.count() / 2, std::max<int64_t>(full.count() / 2, full.count()));
    wait = ms(pick(random));
  }
  return std::clamp(wait, ms(0), policy.max_throttle_wait);
}

void run_with_retries(const RetryPolicy& policy, const std::function<void()>& work,
                      const std::function<void()>& recover,
                      const std::function<void(const Error&, int, std::chrono::milliseconds)>& on_retry,
                      const std::function<uint64_t()>& progress) {
  int failures = 0;
  int throttles = 0;
  auto delay = policy.backoff;
  for (;;) {
    uint64_t before = progress();
    try {
      work();
      return;
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::throttled) {
        recover();
        if (progress() != before) throttles = 0;
        ++throttles;
        auto wait = throttle_wait(policy, e, throttles);
        // Longer than we may wait (a spent daily budget, a server asking for hours): resumable later.
        if (e.retry_after() && *e.retry_after() > policy.max_throttle_wait) throw;
        if (!policy.wait_when_throttled) throw e.with_retry_after(wait);
        if (throttles > policy.max_throttles)
          throw Error(e.kind(), fmt::format("{} (still throttled after {} waits)", e.message(), throttles - 1),
                      Retry::later, e.where())
              .with_retry_after(wait);
        if (policy.on_throttled) policy.on_throttled(e, wait);
        std::this_thread::sleep_for(wait);
        continue;
      }
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

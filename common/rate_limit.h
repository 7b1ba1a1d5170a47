// A cap on bytes and messages per second, shared by the threads of one
// account (or one server) so production servers are spared.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

namespace imapstage {

class RateLimiter {
 public:
  // 0 for either cap means none. `burst` is how far ahead of the cap a
  // sender may get after being idle (0: never ahead, so what was sent since
  // the first acquire never exceeds the cap, however short the run).
  RateLimiter(double bytes_per_second, double messages_per_second,
              std::chrono::milliseconds burst = std::chrono::milliseconds(0));

  bool limited() const { return bytes_per_second_ > 0 || messages_per_second_ > 0; }
  // Blocks until `bytes` and `messages` are paid for at the capped rates
  // (after everything acquired before them), then returns: the caller sends
  // them. Thread-safe; calls are served in order of arrival.
  void acquire(uint64_t bytes, uint64_t messages);
  // The largest amount one acquire should ask for so the pace stays even
  // (a quarter second's worth of the cap): callers split their sends to it.
  uint64_t bytes_per_send() const;
  uint64_t messages_per_send() const;

 private:
  double bytes_per_second_;
  double messages_per_second_;
  std::chrono::steady_clock::duration burst_;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point paid_until_{};  // when what was acquired so far is paid for
};

}  // namespace imapstage

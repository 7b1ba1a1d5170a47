#include "common/rate_limit.h"

#include <algorithm>
#include <limits>
#include <thread>

namespace imapstage {

RateLimiter::RateLimiter(double bytes_per_second, double messages_per_second, std::chrono::milliseconds burst)
    : bytes_per_second_(bytes_per_second), messages_per_second_(messages_per_second), burst_(burst) {}

void RateLimiter::acquire(uint64_t bytes, uint64_t messages) {
  if (!limited()) return;
  double cost = 0;
  if (bytes_per_second_ > 0) cost = std::max(cost, double(bytes) / bytes_per_second_);
  if (messages_per_second_ > 0) cost = std::max(cost, double(messages) / messages_per_second_);
  std::chrono::steady_clock::time_point paid;
  {
    std::lock_guard lock(mutex_);
    auto now = std::chrono::steady_clock::now();
    // An idle sender gets at most `burst` of credit.
    if (paid_until_ < now - burst_) paid_until_ = now - burst_;
    paid_until_ += std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(cost));
    paid = paid_until_;
  }
  std::this_thread::sleep_until(paid);
}

uint64_t RateLimiter::bytes_per_send() const {
  if (bytes_per_second_ <= 0) return std::numeric_limits<uint64_t>::max();
  return std::max<uint64_t>(1, static_cast<uint64_t>(bytes_per_second_ / 4));
}

uint64_t RateLimiter::messages_per_send() const {
  if (messages_per_second_ <= 0) return std::numeric_limits<uint64_t>::max();
  return std::max<uint64_t>(1, static_cast<uint64_t>(messages_per_second_ / 4));
}

}  // namespace imapstage

// Daily byte budgets per account, kept in the archive directory so that
// they survive restarts (batch/STATE.md):
//
//   DIR/batches/budgets.json:
//   {"version": 1, "accounts": {"export alice@imap.example.org":
//                                 {"window_start": <unix>, "bytes": <n>}, ...}}
//
// A window is 24 hours from the first byte counted in it; when it has
// passed, the next charge opens a new one. The file is written crash-safely
// (batch/state.h write_state_file; sealed in an encrypted archive) whenever
// another MiB was counted, and
// when the budget is spent; a crash forgets at most the last MiB counted.
//
// Test hook: IMAPSTAGE_CLOCK_OFFSET (seconds, may be negative) is added to
// the clock the windows are measured with, so a test can move past a window.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "batch/profiles.h"
#include "batch/state.h"
#include "common/rate_limit.h"

namespace imapstage::batch {

class BudgetStore {
 public:
  // Reads DIR/batches/budgets.json (absent: empty; sealed in an encrypted
  // archive, whose keys are unlocked here). Throws Error(corrupt) naming the file if unreadable.
  explicit BudgetStore(std::filesystem::path archive_dir);
  ~BudgetStore();  // saves what was counted (errors ignored)
  BudgetStore(const BudgetStore&) = delete;
  BudgetStore& operator=(const BudgetStore&) = delete;

  // Counts `bytes` for `key` ("export ACCOUNT", "import ACCOUNT -> TARGET")
  // under a budget of `limit` bytes per 24 h (0: none, nothing counted).
  // Once the window holds `limit` bytes or more, throws Error(throttled)
  // "daily budget of N spent" whose retry_after() is the time until the
  // window reopens. Thread-safe.
  // With `throw_when_spent` false it only counts (an upload counted after
  // it was sent; check() before the next one stops it).
  void charge(const std::string& key, uint64_t bytes, uint64_t limit, bool throw_when_spent = true);
  // Throws that same Error when `key`'s budget is already spent (before an
  // account starts); otherwise returns.
  void check(const std::string& key, uint64_t limit);
  // Bytes counted in `key`'s current window (0 when it has passed).
  uint64_t spent(const std::string& key);

  // Unix seconds, with IMAPSTAGE_CLOCK_OFFSET added.
  static int64_t now();

 private:
  struct Window {
    int64_t start = 0;
    uint64_t bytes = 0;
  };
  Window& current(const std::string& key);
  [[noreturn]] void spent_error(const std::string& key, const Window& w, uint64_t limit);
  void save();

  std::filesystem::path dir_;
  std::filesystem::path path_;
  std::shared_ptr<const archive::ArchiveKeys> keys_;  // an encrypted archive's: the file is sealed
  std::mutex mutex_;
  std::map<std::string, Window> windows_;
  uint64_t unsaved_ = 0;
};

// One rate limiter per server, shared by every account of a batch against
// it (--server-max-bandwidth, --server-max-messages-per-second, or the
// profile's server_max_* keys). Thread-safe.
class ServerLimiters {
 public:
  // The limiter of `server`, made with these caps at its first use;
  // nullptr when both are 0.
  std::shared_ptr<RateLimiter> get(const std::string& server, double bytes_per_second, double messages_per_second);

 private:
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<RateLimiter>> limiters_;
};

// The limits a batch's command line puts on its accounts (export and import
// alike); a 0 takes the value of each account's profile.
struct BatchLimits {
  uint64_t daily_budget = 0;                 // --daily-budget
  double server_max_bytes_per_second = 0;    // --server-max-bandwidth
  double server_max_messages_per_second = 0;  // --server-max-messages-per-second

  // The account's daily budget: this one, or the profile's (upload: an
  // import's, else an export's); 0: none.
  uint64_t budget(const Profile& profile, bool upload) const;
  // The budget once the server gave away its provider (`detected`, e.g.
  // "gmail" for X-GM-EXT-1): budget() when that is set or the profile names
  // a provider, else the detected provider's (0 for "" or a provider without one).
  uint64_t detected_budget(const Profile& profile, bool upload, const std::string& detected) const;
  // Adopts detected_budget() for an account whose budget so far is `budget`,
  // counted under `key` in the store `store()` gives (opened only when
  // needed): "" when it changes nothing; else sets `budget`, checks the
  // account against it (throws as BudgetStore::check when it is spent) and
  // says what changed, for the provider event ("daily upload budget N MB").
  std::string adopt_detected_budget(const Profile& profile, bool upload, const std::string& detected, uint64_t& budget,
                                    const std::function<BudgetStore&()>& store, const std::string& key) const;
  // The limiter every account of `server` shares in this batch, with these
  // caps or the profile's; nullptr when there are none.
  std::shared_ptr<RateLimiter> server_limiter(ServerLimiters& limiters, const std::string& server,
                                              const Profile& profile) const;
};

}  // namespace imapstage::batch

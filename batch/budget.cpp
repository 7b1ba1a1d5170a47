#include "batch/budget.h"

#include <chrono>
#include <cstdlib>
#include <ctime>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "archive-format/keys.h"
#include "batch/state.h"
#include "common/error.h"

namespace imapstage::batch {

namespace {

constexpr int64_t kWindow = 24 * 3600;

std::string utc(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

}  // namespace

int64_t BudgetStore::now() {
  int64_t t = static_cast<int64_t>(std::time(nullptr));
  if (const char* offset = std::getenv("IMAPSTAGE_CLOCK_OFFSET")) t += std::strtoll(offset, nullptr, 10);
  return t;
}

BudgetStore::BudgetStore(std::filesystem::path archive_dir)
    : dir_(std::move(archive_dir)), path_(dir_ / "batches" / "budgets.json"), keys_(state_keys(dir_)) {
  auto text = read_archive_state(dir_, path_, "budget state", keys_.get());
  if (!text) return;
  try {
    auto j = nlohmann::json::parse(*text);
    if (j.value("version", 0) != 1) throw std::runtime_error("unknown version");
    for (auto& [key, w] : j.at("accounts").items())
      windows_[key] = {w.at("window_start").get<int64_t>(), w.at("bytes").get<uint64_t>()};
  } catch (const std::exception& e) {
    throw Error(ErrorKind::corrupt, fmt::format("not a budget state file: {}", e.what()), Retry::never,
                {.file = path_.string()});
  }
}

BudgetStore::~BudgetStore() {
  try {
    std::lock_guard lock(mutex_);
    if (unsaved_) save();
  } catch (...) {
  }
}

BudgetStore::Window& BudgetStore::current(const std::string& key) {
  Window& w = windows_[key];
  int64_t t = now();
  if (w.start == 0 || t >= w.start + kWindow || t < w.start - kWindow) w = {t, 0};
  return w;
}

void BudgetStore::spent_error(const std::string& key, const Window& w, uint64_t limit) {
  int64_t reopens = w.start + kWindow;
  auto wait = std::chrono::seconds(std::max<int64_t>(1, reopens - now()));
  throw Error(ErrorKind::throttled,
              fmt::format("daily budget of {} bytes spent ({} bytes since {}); the window reopens at {}", limit,
                          w.bytes, utc(w.start), utc(reopens)),
              Retry::later, {.account = key.substr(key.find(' ') + 1)})
      .with_retry_after(std::chrono::duration_cast<std::chrono::milliseconds>(wait));
}

void BudgetStore::charge(const std::string& key, uint64_t bytes, uint64_t limit, bool throw_when_spent) {
  if (limit == 0) return;
  std::lock_guard lock(mutex_);
  Window& w = current(key);
  w.bytes += bytes;
  unsaved_ += bytes;
  if (w.bytes >= limit) {
    save();
    if (throw_when_spent) spent_error(key, w, limit);
  }
  if (unsaved_ >= (1u << 20)) save();
}

void BudgetStore::check(const std::string& key, uint64_t limit) {
  if (limit == 0) return;
  std::lock_guard lock(mutex_);
  Window& w = current(key);
  if (w.bytes >= limit) spent_error(key, w, limit);
}

uint64_t BudgetStore::spent(const std::string& key) {
  std::lock_guard lock(mutex_);
  return current(key).bytes;
}

void BudgetStore::save() {
  nlohmann::json accounts = nlohmann::json::object();
  for (auto& [key, w] : windows_) accounts[key] = {{"window_start", w.start}, {"bytes", w.bytes}};
  nlohmann::json j = {{"version", 1}, {"accounts", accounts}};
  write_archive_state(dir_, path_, j.dump(2) + "\n", "budget state", keys_.get());
  unsaved_ = 0;
}

std::shared_ptr<RateLimiter> ServerLimiters::get(const std::string& server, double bytes_per_second,
                                                 double messages_per_second) {
  if (bytes_per_second <= 0 && messages_per_second <= 0) return nullptr;
  std::lock_guard lock(mutex_);
  auto& l = limiters_[server];
  if (!l) l = std::make_shared<RateLimiter>(bytes_per_second, messages_per_second);
  return l;
}

uint64_t BatchLimits::budget(const Profile& profile, bool upload) const {
  return daily_budget ? daily_budget : profile.budget(upload);
}

uint64_t BatchLimits::detected_budget(const Profile& profile, bool upload, const std::string& detected) const {
  uint64_t chosen = budget(profile, upload);
  if (chosen || !profile.provider.empty() || detected.empty()) return chosen;
  Profile p = profile;
  p.apply_provider(detected);
  return p.budget(upload);
}

std::string BatchLimits::adopt_detected_budget(const Profile& profile, bool upload, const std::string& detected,
                                               uint64_t& budget, const std::function<BudgetStore&()>& store,
                                               const std::string& key) const {
  uint64_t adopted = detected_budget(profile, upload, detected);
  if (adopted == budget) return "";
  budget = adopted;
  store().check(key, budget);
  return fmt::format("daily {} budget {} MB", upload ? "upload" : "download", budget / 1000000);
}

std::shared_ptr<RateLimiter> BatchLimits::server_limiter(ServerLimiters& limiters, const std::string& server,
                                                         const Profile& profile) const {
  return limiters.get(server,
                      server_max_bytes_per_second ? server_max_bytes_per_second : profile.server_max_bytes_per_second,
                      server_max_messages_per_second ? server_max_messages_per_second
                                                     : profile.server_max_messages_per_second);
}

}  // namespace imapstage::batch

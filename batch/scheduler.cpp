#include "batch/scheduler.h"

#include <algorithm>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>

namespace imapstage::batch {

int default_jobs() {
  int cpus = static_cast<int>(std::thread::hardware_concurrency());
  if (cpus <= 0) cpus = 1;
  return std::min(cpus + 1, 6);
}

double load_per_cpu() {
  std::ifstream in("/proc/loadavg");
  double one = 0;
  if (!(in >> one)) return 0;
  int cpus = static_cast<int>(std::thread::hardware_concurrency());
  return one / (cpus > 0 ? cpus : 1);
}

SchedulerCaps::SchedulerCaps(const SchedulerOptions& options)
    : options_(options), jobs_(options.jobs > 0 ? options.jobs : default_jobs()) {
  if (!options_.load_per_cpu) options_.load_per_cpu = load_per_cpu;
}

bool SchedulerCaps::server_full(const std::string& server) const {
  if (options_.per_server <= 0) return false;
  auto it = per_server_.find(server);
  return it != per_server_.end() && it->second >= options_.per_server;
}

std::string SchedulerCaps::load_hold() const {
  if (options_.max_load <= 0 || running_ == 0) return "";
  double l = options_.load_per_cpu();
  if (l <= options_.max_load) return "";
  return fmt::format("load {:.2f} per CPU is above {:.2f}: holding back new accounts", l, options_.max_load);
}

void SchedulerCaps::take(const std::string& server) {
  ++running_;
  ++per_server_[server];
}

void SchedulerCaps::give_back(const std::string& server) {
  --running_;
  if (--per_server_[server] <= 0) per_server_.erase(server);
}

size_t run_scheduled(const std::vector<SchedulerTask>& tasks, const SchedulerOptions& options,
                     const std::function<void(size_t)>& work, const std::function<void(const std::string&)>& on_held) {
  return run_scheduled_again(
      tasks, options,
      [&](size_t i) -> std::optional<std::chrono::steady_clock::time_point> {
        work(i);
        return std::nullopt;
      },
      on_held);
}

size_t run_scheduled_again(const std::vector<SchedulerTask>& tasks, const SchedulerOptions& options,
                           const std::function<std::optional<std::chrono::steady_clock::time_point>(size_t)>& work,
                           const std::function<void(const std::string&)>& on_held) {
  using Clock = std::chrono::steady_clock;
  SchedulerCaps caps(options);
  int jobs = caps.jobs();

  std::mutex mutex;
  std::condition_variable changed;
  std::vector<bool> taken(tasks.size(), false);
  std::vector<bool> ever(tasks.size(), false);
  std::vector<Clock::time_point> not_before(tasks.size(), Clock::time_point::min());
  size_t started = 0;
  bool stopping = false;
  std::string last_held;

  // Under the lock: the next task that may start now, or tasks.size();
  // `wake` gets the earliest time a waiting task may start.
  auto next_ready = [&](Clock::time_point& wake) -> size_t {
    auto now = Clock::now();
    wake = Clock::time_point::max();
    for (size_t i = 0; i < tasks.size(); ++i) {
      if (taken[i]) continue;
      if (not_before[i] > now) {
        wake = std::min(wake, not_before[i]);
        continue;
      }
      if (caps.server_full(tasks[i].server)) continue;
      return i;
    }
    return tasks.size();
  };
  auto all_taken = [&] { return std::all_of(taken.begin(), taken.end(), [](bool t) { return t; }); };

  auto worker = [&] {
    std::unique_lock lock(mutex);
    for (;;) {
      if (stopping || all_taken()) return;
      if (options.stop_requested && options.stop_requested()) {
        stopping = true;
        changed.notify_all();
        return;
      }
      Clock::time_point wake;
      size_t i = next_ready(wake);
      if (i == tasks.size()) {
        auto until = std::min(wake, Clock::now() + options.load_poll);
        changed.wait_until(lock, until);
        continue;
      }
      if (std::string reason = caps.load_hold(); !reason.empty()) {
        if (on_held && reason != last_held) {
          last_held = reason;
          on_held(reason);
        }
        changed.wait_for(lock, options.load_poll);
        continue;
      }
      taken[i] = true;
      caps.take(tasks[i].server);
      if (!ever[i]) ++started;
      ever[i] = true;
      lock.unlock();
      std::optional<Clock::time_point> again;
      try {
        again = work(i);
      } catch (...) {
      }
      lock.lock();
      caps.give_back(tasks[i].server);
      if (again) {
        taken[i] = false;
        not_before[i] = *again;
      }
      changed.notify_all();
    }
  };

  int threads = std::max(1, std::min<int>(jobs, static_cast<int>(tasks.size())));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  return started;
}

}  // namespace imapstage::batch

// Runs a list of tasks on worker threads under three caps: at most `jobs` at
// once, at most `per_server` at once against one server, and no new task
// while the load average per CPU is above `max_load` (one task always may
// run, so a busy machine slows a batch down but never stalls it).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace imapstage::batch {

struct SchedulerOptions {
  int jobs = 0;                  // 0: default_jobs()
  int per_server = 4;            // 0: no cap per server
  double max_load = 0.7;         // load average (1 min) per CPU; 0: off
  // Reads the load per CPU; default: /proc/loadavg divided by the CPU count.
  std::function<double()> load_per_cpu;
  std::chrono::milliseconds load_poll{2000};  // how often to look again while held back
  // Asked before each task starts; true stops starting new tasks (running ones finish).
  std::function<bool()> stop_requested;
};

struct SchedulerTask {
  std::string server;  // tasks with the same server share its cap
};

// The caps of SchedulerOptions as bookkeeping, for a caller that starts
// tasks itself (run_scheduled, and the daemon's dispatcher, whose queue
// grows while it runs). Not thread-safe: the caller holds its own lock.
class SchedulerCaps {
 public:
  explicit SchedulerCaps(const SchedulerOptions& options);
  // The jobs cap in force (options.jobs, or default_jobs()).
  int jobs() const { return jobs_; }
  int running() const { return running_; }
  // True when `jobs` tasks run.
  bool full() const { return running_ >= jobs_; }
  // True when the per-server cap of `server` is reached.
  bool server_full(const std::string& server) const;
  // When a new task must wait for the load: why ("load 0.93 per CPU is above
  // 0.70: holding back new accounts"); "" when it may start (always while
  // nothing runs, or with max_load 0). Reads the load.
  std::string load_hold() const;
  // Records a start and an end of a task against `server`.
  void take(const std::string& server);
  void give_back(const std::string& server);

 private:
  SchedulerOptions options_;
  int jobs_ = 1;
  int running_ = 0;
  std::map<std::string, int> per_server_;
};

// min(CPUs + 1, 6).
int default_jobs();

// The 1-minute load average divided by the number of CPUs; 0 if /proc/loadavg is unreadable.
double load_per_cpu();

// Calls `work(i)` once for every task i (in list order as far as the caps
// allow) from worker threads, and returns when all started tasks are done.
// `on_held(reason)` (optional) is called when a task is held back by the load.
// `work` must not throw (exceptions are caught and ignored); returns the
// number of tasks started (fewer than tasks.size() only after stop_requested).
size_t run_scheduled(const std::vector<SchedulerTask>& tasks, const SchedulerOptions& options,
                     const std::function<void(size_t index)>& work,
                     const std::function<void(const std::string& reason)>& on_held = nullptr);

// As run_scheduled, but `work(i)` may return a time: task i then gives its
// slot back (other tasks go on) and is started again, under the same caps,
// once that time has come (a throttled account). Returns the number of
// tasks started at least once. While stop_requested, tasks waiting to be
// started again are not.
size_t run_scheduled_again(const std::vector<SchedulerTask>& tasks, const SchedulerOptions& options,
                           const std::function<std::optional<std::chrono::steady_clock::time_point>(size_t index)>& work,
                           const std::function<void(const std::string& reason)>& on_held = nullptr);

}  // namespace imapstage::batch

// The scheduler's caps, with fake work functions: concurrency and per-server
// limits are never exceeded, the load gate holds new tasks back, stop works.
#include <atomic>
#include <map>
#include <mutex>
#include <algorithm>
#include <optional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "batch/scheduler.h"

namespace imapstage::batch {
namespace {

struct Watch {
  std::mutex mutex;
  int running = 0, max_running = 0;
  std::map<std::string, int> per, max_per;
  void enter(const std::string& s) {
    std::lock_guard l(mutex);
    max_running = std::max(max_running, ++running);
    max_per[s] = std::max(max_per[s], ++per[s]);
  }
  void leave(const std::string& s) {
    std::lock_guard l(mutex);
    --running;
    --per[s];
  }
};

TEST(Scheduler, CapsAreNeverExceeded) {
  std::vector<SchedulerTask> tasks;
  for (int i = 0; i < 30; ++i) tasks.push_back({i % 3 == 0 ? "a:993" : (i % 3 == 1 ? "b:993" : "c:993")});
  Watch w;
  std::vector<std::atomic<int>> calls(tasks.size());
  SchedulerOptions o;
  o.jobs = 5;
  o.per_server = 2;
  o.max_load = 0;
  o.load_poll = std::chrono::milliseconds(5);
  size_t started = run_scheduled(tasks, o, [&](size_t i) {
    ++calls[i];
    w.enter(tasks[i].server);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    w.leave(tasks[i].server);
  });
  EXPECT_EQ(started, tasks.size());
  for (auto& c : calls) EXPECT_EQ(c.load(), 1);
  EXPECT_LE(w.max_running, 5);
  EXPECT_GE(w.max_running, 4);  // the caps allow 5 (2+2+1): the pool is actually used
  for (auto& [s, m] : w.max_per) EXPECT_LE(m, 2) << s;
}

TEST(Scheduler, OneServerIsLimitedToItsCap) {
  std::vector<SchedulerTask> tasks(12, SchedulerTask{"only:993"});
  Watch w;
  SchedulerOptions o;
  o.jobs = 6;
  o.per_server = 3;
  o.max_load = 0;
  o.load_poll = std::chrono::milliseconds(5);
  run_scheduled(tasks, o, [&](size_t i) {
    w.enter(tasks[i].server);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    w.leave(tasks[i].server);
  });
  EXPECT_EQ(w.max_per["only:993"], 3);
}

TEST(Scheduler, HighLoadHoldsBackNewTasksButNeverStalls) {
  std::vector<SchedulerTask> tasks(6, SchedulerTask{"s"});
  Watch w;
  std::atomic<double> load{5.0};
  SchedulerOptions o;
  o.jobs = 4;
  o.per_server = 0;
  o.max_load = 0.7;
  o.load_poll = std::chrono::milliseconds(5);
  o.load_per_cpu = [&] { return load.load(); };
  std::atomic<int> held{0};
  run_scheduled(
      tasks, o,
      [&](size_t i) {
        w.enter(tasks[i].server);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        w.leave(tasks[i].server);
      },
      [&](const std::string&) { ++held; });
  EXPECT_EQ(w.max_running, 1);  // only the one task that may always run
  EXPECT_GE(held.load(), 1);

  Watch w2;
  load = 0.1;
  run_scheduled(tasks, o, [&](size_t i) {
    w2.enter(tasks[i].server);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    w2.leave(tasks[i].server);
  });
  EXPECT_GT(w2.max_running, 1);
}

TEST(Scheduler, StopRequestedStartsNoMore) {
  std::vector<SchedulerTask> tasks(10, SchedulerTask{"s"});
  std::atomic<int> ran{0};
  SchedulerOptions o;
  o.jobs = 1;
  o.max_load = 0;
  o.stop_requested = [&] { return ran.load() >= 3; };
  size_t started = run_scheduled(tasks, o, [&](size_t) { ++ran; });
  EXPECT_EQ(started, 3u);
  EXPECT_EQ(ran.load(), 3);
}

TEST(Scheduler, DefaultJobs) {
  // min(CPUs + 1, 6), whatever the machine.
  int cpus = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(default_jobs(), std::min(std::max(cpus, 1) + 1, 6));
}

TEST(Scheduler, ATaskThatAsksToWaitGivesItsSlotAndRunsAgainAfterTheWait) {
  using Clock = std::chrono::steady_clock;
  SchedulerOptions o;
  o.jobs = 1;
  o.max_load = 0;
  o.load_poll = std::chrono::milliseconds(10);
  std::mutex m;
  std::vector<std::pair<size_t, Clock::time_point>> runs;
  int first_runs = 0;
  auto t0 = Clock::now();
  size_t started = run_scheduled_again({{"a"}, {"a"}, {"a"}}, o, [&](size_t i) -> std::optional<Clock::time_point> {
    std::lock_guard lock(m);
    runs.emplace_back(i, Clock::now());
    if (i == 0 && first_runs++ == 0) return Clock::now() + std::chrono::milliseconds(150);
    return std::nullopt;
  });
  EXPECT_EQ(started, 3u);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].first, 0u);
  EXPECT_EQ(runs[1].first, 1u);  // the slot went to the others meanwhile
  EXPECT_EQ(runs[2].first, 2u);
  EXPECT_EQ(runs[3].first, 0u);
  EXPECT_GE(runs[3].second - t0, std::chrono::milliseconds(150));
}

}  // namespace
}  // namespace imapstage::batch

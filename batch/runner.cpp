#include "batch/runner.h"

#include <atomic>
#include <ctime>
#include <random>

#include <fmt/format.h>

#include "batch/budget.h"
#include "common/error.h"

namespace imapstage::batch {

namespace {

using Clock = std::chrono::steady_clock;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string new_batch_id() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}", rd(), rd());
}

// "2026-12-03 17:45:00 UTC"
std::string utc_text(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string duration_text(std::chrono::seconds s) {
  auto n = s.count();
  if (n % 3600 == 0) return fmt::format("{} h", n / 3600);
  if (n % 60 == 0) return fmt::format("{} min", n / 60);
  return fmt::format("{} s", n);
}

}  // namespace

std::string resume_text(int64_t unix_seconds) { return utc_text(unix_seconds); }

BatchResult run_batch(const std::string& kind, const std::filesystem::path& state_file,
                      const std::vector<BatchItem>& items, const RunnerOptions& options, EventSink& events,
                      const ItemWork& work) {
  BatchResult result;
  result.total = items.size();
  auto previous = options.new_batch ? std::nullopt : load_state(state_file);

  BatchState state;
  if (previous && previous->kind == kind && previous->unfinished()) {
    state = *previous;
    result.resumed = true;
  } else {
    state.kind = kind;
    state.batch_id = new_batch_id();
    state.created = unix_now();
  }
  // Every item has an entry; entries of accounts no longer in the file stay as they were.
  for (auto& item : items) {
    AccountState* a = state.find(item.key);
    if (!a) {
      AccountState fresh;
      fresh.key = item.key;
      state.accounts.push_back(fresh);
      a = &state.accounts.back();
    }
    a->account = item.account;
    a->server = item.server;
    a->target = item.target;
    a->line = item.line;
  }
  ++state.invocations;

  std::vector<const BatchItem*> selected;
  size_t parked_earlier = 0;
  for (auto& item : items) {
    const AccountState* a = state.find(item.key);
    bool run = options.retry_errors ? (a->status == AccountStatus::error || a->status == AccountStatus::running)
                                    : a->status != AccountStatus::done;
    if (run && a->status == AccountStatus::parked && a->resume_at > BudgetStore::now()) {
      ++parked_earlier;
      events.emit({{"event", "account_skip"}, {"account", item.account}, {"key", item.key},
                   {"status", to_string(a->status)}, {"resume_at", a->resume_at},
                   {"text", fmt::format("{}: parked until {} ({}), skipped", item.key, utc_text(a->resume_at),
                                        a->error)}});
      continue;
    }
    if (run) {
      selected.push_back(&item);
    } else {
      ++result.skipped;
      events.emit({{"event", "account_skip"}, {"account", item.account}, {"key", item.key},
                   {"status", to_string(a->status)},
                   {"text", fmt::format("{}: {} earlier, skipped", item.key, to_string(a->status))}});
    }
  }
  result.selected = selected.size();
  save_state(state_file, state);
  StateStore store(state_file, state);

  events.emit({{"event", "batch_start"}, {"command", kind}, {"batch", state.batch_id}, {"resumed", result.resumed},
               {"accounts", items.size()}, {"selected", selected.size()}, {"skipped", result.skipped},
               {"jobs", options.scheduler.jobs > 0 ? options.scheduler.jobs : default_jobs()},
               {"per_server", options.scheduler.per_server},
               {"text", fmt::format("{} batch {}: {} accounts, {} to run, {} done earlier", kind,
                                    result.resumed ? "resumed" : "started", items.size(), selected.size(),
                                    result.skipped)}});

  std::vector<SchedulerTask> tasks;
  for (auto* item : selected) tasks.push_back({item->server});
  std::atomic<size_t> done{0}, failed{0}, parked{parked_earlier};
  std::vector<int> throttles(selected.size(), 0);  // throttled in a row, per selected account
  auto stop = [&] { return options.interrupted && options.interrupted(); };
  SchedulerOptions sched = options.scheduler;
  sched.stop_requested = stop;

  size_t started = run_scheduled_again(
      tasks, sched,
      [&](size_t i) -> std::optional<Clock::time_point> {
        const BatchItem& item = *selected[i];
        auto t0 = Clock::now();
        auto deadline = options.account_timeout.count() > 0 ? t0 + options.account_timeout : Clock::time_point::max();
        std::atomic<bool> timed_out{false};
        auto cancelled = [&]() -> bool {
          if (Clock::now() >= deadline) {
            timed_out = true;
            return true;
          }
          return stop();
        };
        store.update(item.key, [&](AccountState& a) {
          a.status = AccountStatus::running;
          ++a.attempts;
          a.started = unix_now();
          a.finished = 0;
          a.error.clear();
          a.error_kind.clear();
        });
        events.emit({{"event", "account_start"}, {"account", item.account}, {"key", item.key},
                     {"server", item.server}, {"line", item.line}, {"time", now_seconds()},
                     {"text", fmt::format("{}: started", item.key)}});
        ItemOutcome outcome;
        std::string error, error_kind;
        std::optional<Error> throttle;
        try {
          outcome = work(item, cancelled);
          throttles[i] = 0;
          if (!outcome.complete) {
            error = "incomplete: " + outcome.incomplete;
            error_kind = "incomplete";
          }
        } catch (const Error& e) {
          if (e.kind() == ErrorKind::throttled && !timed_out && !stop()) throttle = e;
          error_kind = to_string(e.kind());
          error = e.what();
          if (timed_out || (e.kind() == ErrorKind::interrupted && Clock::now() >= deadline)) {
            error = fmt::format("timed out after {} (the next run continues where it stopped)",
                                duration_text(options.account_timeout));
            error_kind = "timeout";
          }
        } catch (const std::exception& e) {
          error_kind = "internal";
          error = std::string("internal error: ") + e.what();
        }
        double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        if (throttle) {
          // The server asked this account to wait: its slot goes to others meanwhile.
          auto wait = throttle->retry_after().value_or(std::chrono::milliseconds(60000));
          bool park = wait > options.max_throttle_wait || ++throttles[i] > options.max_throttles;
          int64_t resume_at = BudgetStore::now() + (wait.count() + 999) / 1000;  // the budgets' clock
          store.update(item.key, [&](AccountState& a) {
            a.status = park ? AccountStatus::parked : AccountStatus::throttled;
            a.finished = unix_now();
            a.seconds = seconds;
            a.messages = outcome.messages;
            a.bytes = outcome.bytes;
            a.error = throttle->what();
            a.error_kind = error_kind;
            a.resume_at = resume_at;
          });
          double wait_s = wait.count() / 1000.0;
          events.emit({{"event", park ? "parked" : "throttled"}, {"account", item.account}, {"key", item.key},
                       {"server", item.server}, {"seconds", wait_s}, {"resume_at", resume_at},
                       {"reason", throttle->message()}, {"time", now_seconds()},
                       {"text", park ? fmt::format("{}: parked until {}: {}", item.key, utc_text(resume_at),
                                                   throttle->message())
                                     : fmt::format("{}: throttled, resumes in {:.1f} s at {}: {}", item.key, wait_s,
                                                   utc_text(resume_at), throttle->message())}});
          if (park) {
            ++parked;
            return std::nullopt;
          }
          return Clock::now() + wait;
        }
        store.update(item.key, [&](AccountState& a) {
          a.resume_at = 0;
          a.status = error.empty() ? AccountStatus::done : AccountStatus::error;
          a.finished = unix_now();
          a.seconds = seconds;
          a.messages = outcome.messages;
          a.bytes = outcome.bytes;
          a.error = error;
          a.error_kind = error_kind;
        });
        if (error.empty()) {
          ++done;
          events.emit({{"event", "account_done"}, {"account", item.account}, {"key", item.key},
                       {"messages", outcome.messages}, {"bytes", outcome.bytes}, {"seconds", seconds},
                       {"time", now_seconds()},
                       {"text", fmt::format("{}: done, {} messages, {} bytes", item.key, outcome.messages,
                                            outcome.bytes)}});
        } else {
          ++failed;
          events.emit({{"event", "account_error"}, {"account", item.account}, {"key", item.key},
                       {"line", item.line}, {"error", error}, {"error_kind", error_kind}, {"seconds", seconds},
                       {"time", now_seconds()},
                       {"text", fmt::format("{} (line {}): {}", item.key, item.line, error)}});
        }
        return std::nullopt;
      },
      [&](const std::string& reason) { events.emit({{"event", "held"}, {"text", reason}}); });

  result.done = done;
  result.failed = failed;
  result.not_started = selected.size() - started;
  result.parked = parked;
  result.state = store.snapshot();
  events.emit({{"event", "batch_done"}, {"command", kind}, {"batch", state.batch_id}, {"done", result.done},
               {"failed", result.failed}, {"skipped", result.skipped}, {"not_started", result.not_started},
               {"parked", result.parked},
               {"text", fmt::format("{} batch: {} done, {} failed, {} skipped, {} not started{}", kind, result.done,
                                    result.failed, result.skipped, result.not_started,
                                    result.parked ? fmt::format(", {} parked (resumable later)", result.parked)
                                                  : std::string())}});
  return result;
}

}  // namespace imapstage::batch

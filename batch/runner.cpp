#include "batch/runner.h"

#include <atomic>
#include <random>

#include <fmt/format.h>

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

std::string duration_text(std::chrono::seconds s) {
  auto n = s.count();
  if (n % 3600 == 0) return fmt::format("{} h", n / 3600);
  if (n % 60 == 0) return fmt::format("{} min", n / 60);
  return fmt::format("{} s", n);
}

}  // namespace

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
  for (auto& item : items) {
    const AccountState* a = state.find(item.key);
    bool run = options.retry_errors ? (a->status == AccountStatus::error || a->status == AccountStatus::running)
                                    : a->status != AccountStatus::done;
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
  std::atomic<size_t> done{0}, failed{0};
  auto stop = [&] { return options.interrupted && options.interrupted(); };
  SchedulerOptions sched = options.scheduler;
  sched.stop_requested = stop;

  size_t started = run_scheduled(
      tasks, sched,
      [&](size_t i) {
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
        try {
          outcome = work(item, cancelled);
          if (!outcome.complete) {
            error = "incomplete: " + outcome.incomplete;
            error_kind = "incomplete";
          }
        } catch (const Error& e) {
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
        store.update(item.key, [&](AccountState& a) {
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
      },
      [&](const std::string& reason) { events.emit({{"event", "held"}, {"text", reason}}); });

  result.done = done;
  result.failed = failed;
  result.not_started = selected.size() - started;
  result.state = store.snapshot();
  events.emit({{"event", "batch_done"}, {"command", kind}, {"batch", state.batch_id}, {"done", result.done},
               {"failed", result.failed}, {"skipped", result.skipped}, {"not_started", result.not_started},
               {"text", fmt::format("{} batch: {} done, {} failed, {} skipped, {} not started", kind, result.done,
                                    result.failed, result.skipped, result.not_started)}});
  return result;
}

}  // namespace imapstage::batch

// Batch state: round trip, crash safety of the file, and the runner's
// resume, retry-errors and timeout behaviour with fake work functions.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "batch/runner.h"
#include "batch/state.h"
#include "common/error.h"
#include "tests/support/test_server.h"

namespace imapstage::batch {
namespace {

TEST(BatchState, RoundTrip) {
  testing::TempDir dir;
  auto path = state_path(dir.path(), "export");
  EXPECT_FALSE(load_state(path));
  BatchState s;
  s.kind = "export";
  s.batch_id = "abc";
  s.created = 1700000000;
  s.invocations = 2;
  AccountState a;
  a.key = "alice@h";
  a.account = "alice@h";
  a.server = "h:993";
  a.line = 3;
  a.status = AccountStatus::error;
  a.attempts = 2;
  a.started = 1700000001;
  a.finished = 1700000002;
  a.seconds = 1.5;
  a.messages = 42;
  a.bytes = 4242;
  a.error = "login refused";
  a.error_kind = "auth";
  s.accounts.push_back(a);
  save_state(path, s);
  auto back = load_state(path);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->to_json(), s.to_json());
  EXPECT_EQ(back->accounts[0].status, AccountStatus::error);
  EXPECT_EQ(back->accounts[0].bytes, 4242u);
}

TEST(BatchState, CrashSafety) {
  testing::TempDir dir;
  auto path = state_path(dir.path(), "export");
  BatchState s;
  s.kind = "export";
  AccountState first;
  first.key = "a";
  s.accounts.push_back(first);
  save_state(path, s);
  // A crash mid-save leaves a temp file beside it: the state is the old one.
  std::ofstream(path.string() + ".tmp.99999") << "{\"version\": 1, \"accounts\": [{\"ke";
  auto back = load_state(path);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->accounts.size(), 1u);
  // Saving replaces the whole file, never leaving a temp file of its own.
  AccountState second;
  second.key = "b";
  s.accounts.push_back(second);
  save_state(path, s);
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(path.parent_path()))
    if (e.path().string().find(".tmp." + std::to_string(::getpid())) != std::string::npos) ++files;
  EXPECT_EQ(files, 0u);
  EXPECT_EQ(load_state(path)->accounts.size(), 2u);
  // A damaged file is reported as corrupt, naming it.
  std::ofstream(path, std::ios::trunc) << "{\"version\": 1, \"acc";
  try {
    load_state(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt);
    EXPECT_EQ(e.where().file, path.string());
  }
}

std::vector<BatchItem> items(std::initializer_list<const char*> names) {
  std::vector<BatchItem> out;
  size_t line = 1;
  for (auto* n : names) out.push_back({n, n, "s:993", "", line++});
  return out;
}

RunnerOptions quick() {
  RunnerOptions o;
  o.scheduler.jobs = 2;
  o.scheduler.max_load = 0;
  return o;
}

TEST(BatchState, LinksAndFifosInTheArchiveAreRefused) {
  testing::TempDir dir;
  std::filesystem::path root = dir.path() + "/archive";
  std::filesystem::path outside = dir.path() + "/outside";
  std::filesystem::create_directories(root);
  std::filesystem::create_directories(outside);
  std::ofstream(outside / "decoy") << "keep me\n";
  BatchState s;
  s.kind = "export";
  // batches/ pointing outside: nothing is written there.
  std::filesystem::create_directory_symlink(outside, root / "batches");
  auto path = state_path(root, "export");
  EXPECT_THROW(save_state(path, s), Error);
  EXPECT_THROW(load_state(path), Error);
  EXPECT_FALSE(std::filesystem::exists(outside / "export.json"));
  // The state file a link to a file outside: neither read nor written through.
  std::filesystem::remove(root / "batches");
  std::filesystem::create_directory(root / "batches");
  std::filesystem::create_symlink(outside / "decoy", path);
  try {
    load_state(path);
    FAIL() << "a link was read";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt);
  }
  EXPECT_THROW(save_state(path, s), Error);
  std::ifstream decoy(outside / "decoy");
  std::string line;
  std::getline(decoy, line);
  EXPECT_EQ(line, "keep me");
  // A FIFO is refused at once, not waited on.
  std::filesystem::remove(path);
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  EXPECT_THROW(load_state(path), Error);
}

TEST(BatchRunner, ErrorsAreResumedAndFinishedWorkIsNotRepeated) {
  testing::TempDir dir;
  auto path = state_path(dir.path(), "export");
  auto list = items({"a", "b", "c"});
  std::map<std::string, int> runs;
  std::mutex m;
  bool b_fails = true;
  auto work = [&](const BatchItem& item, const std::function<bool()>&) {
    {
      std::lock_guard l(m);
      ++runs[item.key];
    }
    if (item.key == "b" && b_fails)
      throw Error(ErrorKind::auth, "authentication failed for b", Retry::never);
    return ItemOutcome{10, 100, true, ""};
  };
  RecordingSink events;
  auto r1 = run_batch("export", path, list, quick(), events, work);
  EXPECT_FALSE(r1.resumed);
  EXPECT_EQ(r1.done, 2u);
  EXPECT_EQ(r1.failed, 1u);
  auto s1 = load_state(path);
  EXPECT_EQ(s1->find("b")->status, AccountStatus::error);
  EXPECT_EQ(s1->find("b")->error_kind, "auth");
  EXPECT_NE(s1->find("b")->error.find("authentication failed"), std::string::npos);
  EXPECT_EQ(s1->find("a")->status, AccountStatus::done);
  EXPECT_EQ(s1->find("a")->messages, 10u);

  b_fails = false;
  auto r2 = run_batch("export", path, list, quick(), events, work);
  EXPECT_TRUE(r2.resumed);
  EXPECT_EQ(r2.skipped, 2u);
  EXPECT_EQ(r2.done, 1u);
  EXPECT_EQ(runs["a"], 1);
  EXPECT_EQ(runs["b"], 2);
  EXPECT_EQ(runs["c"], 1);
  auto s2 = load_state(path);
  EXPECT_EQ(s2->find("b")->attempts, 2);
  EXPECT_EQ(s2->find("a")->attempts, 1);
  EXPECT_EQ(s2->invocations, 2);

  // Everything done: the next run is a fresh batch (a new incremental pass).
  auto r3 = run_batch("export", path, list, quick(), events, work);
  EXPECT_FALSE(r3.resumed);
  EXPECT_EQ(r3.done, 3u);
  EXPECT_EQ(runs["a"], 2);
}

TEST(BatchRunner, RetryErrorsRunsOnlyTheErrors) {
  testing::TempDir dir;
  auto path = state_path(dir.path(), "export");
  auto list = items({"a", "b", "c"});
  std::atomic<bool> stop{false};
  std::vector<std::string> ran;
  std::mutex m;
  auto work = [&](const BatchItem& item, const std::function<bool()>&) -> ItemOutcome {
    std::lock_guard l(m);
    ran.push_back(item.key);
    if (item.key == "a") throw Error(ErrorKind::network, "unreachable", Retry::later);
    stop = true;  // "b" runs, then the batch is stopped: "c" stays queued
    return {};
  };
  RunnerOptions o = quick();
  o.scheduler.jobs = 1;
  o.interrupted = [&] { return stop.load(); };
  RecordingSink events;
  auto r1 = run_batch("export", path, list, o, events, work);
  EXPECT_EQ(r1.not_started, 1u);
  EXPECT_EQ(load_state(path)->find("c")->status, AccountStatus::queued);

  ran.clear();
  stop = false;
  o.interrupted = nullptr;
  o.retry_errors = true;
  run_batch("export", path, list, o, events, work);
  EXPECT_EQ(ran, std::vector<std::string>{"a"});
}

TEST(BatchRunner, TimeoutMarksErrorAndTheNextRunContinues) {
  testing::TempDir dir;
  auto path = state_path(dir.path(), "export");
  auto list = items({"slow", "fast"});
  int progress = 0;  // the "work" of slow: units done so far, kept like the archive keeps messages
  auto work = [&](const BatchItem& item, const std::function<bool()>& cancelled) -> ItemOutcome {
    if (item.key == "fast") return {1, 1, true, ""};
    while (progress < 10) {
      if (cancelled()) throw Error(ErrorKind::interrupted, "stopped", Retry::later);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      ++progress;
    }
    return {10, 10, true, ""};
  };
  RunnerOptions o = quick();
  o.account_timeout = std::chrono::seconds(1);
  RecordingSink events;
  auto r1 = run_batch("export", path, list, o, events, work);
  EXPECT_EQ(r1.failed, 1u);
  auto s = load_state(path);
  EXPECT_EQ(s->find("slow")->status, AccountStatus::error);
  EXPECT_EQ(s->find("slow")->error_kind, "timeout");
  EXPECT_NE(s->find("slow")->error.find("timed out after 1 s"), std::string::npos);
  EXPECT_EQ(s->find("fast")->status, AccountStatus::done);
  int after_first = progress;
  EXPECT_GT(after_first, 0);
  EXPECT_LT(after_first, 10);

  o.account_timeout = std::chrono::seconds(0);  // none
  auto r2 = run_batch("export", path, list, o, events, work);
  EXPECT_TRUE(r2.resumed);
  EXPECT_EQ(r2.done, 1u);
  EXPECT_EQ(r2.skipped, 1u);
  EXPECT_EQ(load_state(path)->find("slow")->status, AccountStatus::done);
  // The events carry the account.
  bool saw = false;
  for (auto& e : events.events())
    if (e["event"] == "account_error") {
      saw = true;
      EXPECT_EQ(e["account"], "slow");
    }
  EXPECT_TRUE(saw);
}

}  // namespace
}  // namespace imapstage::batch

// Batch state: round trip, crash safety of the file, and the runner's
// resume, retry-errors and timeout behaviour with fake work functions.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "archive-format/keys.h"
#include "batch/budget.h"
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

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// In an encrypted archive the batch and budget files are sealed: nothing of
// their accounts, servers or errors is on disk, they open only with the
// archive's passphrase and only under their own name.
TEST(BatchState, SealedInAnEncryptedArchive) {
  namespace fs = std::filesystem;
  testing::TempDir dir;
  fs::path archive_dir = fs::path(dir.path()) / "archive";
  const std::string passphrase = "state passphrase";
  archive::Archive::Options open;
  open.passphrase = [&](const fs::path&) { return passphrase; };
  archive::Archive::create_encrypted(archive_dir, passphrase, archive::ScryptParams{10, 8, 1}, open);
  archive::set_default_passphrase_source([&](const fs::path&) { return passphrase; });

  BatchState s;
  s.kind = "export";
  s.batch_id = "b1";
  AccountState a;
  a.key = a.account = "zebulon.secret@mail.hidden-host.example";
  a.server = "mail.hidden-host.example:993";
  a.error = "login refused for zebulon";
  s.accounts.push_back(a);
  auto path = state_path(archive_dir, "export");
  save_state(path, s);
  {
    BudgetStore budgets(archive_dir);
    budgets.charge("export zebulon.secret@mail.hidden-host.example", 3u << 20, 1ull << 40);
  }
  for (auto& file : {path, archive_dir / "batches" / "budgets.json"}) {
    std::string bytes = file_bytes(file);
    ASSERT_FALSE(bytes.empty()) << file;
    EXPECT_EQ(bytes.substr(0, 4), "ISA1") << file;
    for (const char* secret : {"zebulon", "hidden-host", "login refused", "accounts"})
      EXPECT_EQ(bytes.find(secret), std::string::npos) << file << " shows " << secret;
  }
  auto back = load_state(path);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->to_json(), s.to_json());
  EXPECT_GE(BudgetStore(archive_dir).spent("export zebulon.secret@mail.hidden-host.example"), 3u << 20);

  // Under another name (import.json) the sealed export state does not open.
  fs::copy_file(path, state_path(archive_dir, "import"));
  try {
    load_state(state_path(archive_dir, "import"));
    ADD_FAILURE() << "a sealed state opened under another name";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
  }
  // A wrong passphrase: refused, the file untouched.
  std::string sealed = file_bytes(path);
  archive::set_default_passphrase_source([](const fs::path&) { return std::string("not the passphrase"); });
  try {
    load_state(path);
    ADD_FAILURE() << "a wrong passphrase opened the state";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::auth) << e.what();
  }
  EXPECT_EQ(file_bytes(path), sealed);
  archive::set_default_passphrase_source([&](const fs::path&) { return passphrase; });

  // A plain file written before state files were sealed is read, and sealed at the next write.
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << s.to_json().dump() << "\n";
  }
  back = load_state(path);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->batch_id, "b1");
  StateStore store(path, *back);
  store.update(a.key, [](AccountState& st) { st.status = AccountStatus::done; });
  EXPECT_EQ(file_bytes(path).substr(0, 4), "ISA1");
  EXPECT_EQ(load_state(path)->accounts[0].status, AccountStatus::done);
  archive::set_default_passphrase_source({});
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

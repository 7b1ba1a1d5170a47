// Daily byte budgets: counted across restarts in DIR/batches/budgets.json,
// an account parked when its budget is spent, the batch reporting it as
// resumable (exit 6), and a run after the window reopens continuing it.
// The window is moved with the documented test hook IMAPSTAGE_CLOCK_OFFSET.
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "archive-format/archive.h"
#include "batch/budget.h"
#include "batch/state.h"
#include "common/error.h"
#include "tests/support/fake_imap_server.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::FakeImapServer;
using testing::TempDir;

std::string message(int n) {
  std::string body = "Message-ID: <b" + std::to_string(n) + "@fake>\r\nSubject: budget " + std::to_string(n) + "\r\n\r\n";
  for (int i = 0; i < 4; ++i) body += "budget line " + std::to_string(n) + "\r\n";
  return body;
}

TEST(BudgetStore, CountsAcrossRestartsAndReopensAfterADay) {
  TempDir dir;
  ::unsetenv("IMAPSTAGE_CLOCK_OFFSET");
  {
    batch::BudgetStore store(dir.path());
    store.charge("export a", 600, 1000);
    EXPECT_EQ(store.spent("export a"), 600u);
    EXPECT_NO_THROW(store.check("export a", 1000));
  }
  batch::BudgetStore store(dir.path());  // read back from the file
  EXPECT_EQ(store.spent("export a"), 600u);
  try {
    store.charge("export a", 500, 1000);
    FAIL() << "a spent budget was not reported";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::throttled);
    ASSERT_TRUE(e.retry_after());
    EXPECT_GT(e.retry_after()->count(), 23 * 3600 * 1000LL);
    EXPECT_LE(e.retry_after()->count(), 24 * 3600 * 1000LL);
    EXPECT_NE(std::string(e.what()).find("daily budget"), std::string::npos) << e.what();
  }
  EXPECT_THROW(store.check("export a", 1000), Error);
  EXPECT_NO_THROW(store.check("export b", 1000));  // per account
  ::setenv("IMAPSTAGE_CLOCK_OFFSET", "90000", 1);   // a day and an hour later
  EXPECT_NO_THROW(store.check("export a", 1000));
  EXPECT_EQ(store.spent("export a"), 0u);
  ::unsetenv("IMAPSTAGE_CLOCK_OFFSET");
}

TEST(BatchState, ThrottledAndParkedKeepTheirResumeTime) {
  batch::AccountState a;
  a.key = "alice";
  a.status = batch::AccountStatus::parked;
  a.resume_at = 1764800000;
  auto back = batch::AccountState::from_json(a.to_json());
  EXPECT_EQ(back.status, batch::AccountStatus::parked);
  EXPECT_EQ(back.resume_at, 1764800000);
  EXPECT_EQ(batch::parse_account_status("throttled"), batch::AccountStatus::throttled);
  // A state written before resume_at existed reads as 0.
  auto old = batch::AccountState::from_json({{"key", "bob"}, {"status", "error"}});
  EXPECT_EQ(old.resume_at, 0);
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') out.push_back(nlohmann::json::parse(line));
  return out;
}

size_t archived(const std::string& archive_dir, const std::string& account) {
  auto a = archive::Archive::open(archive_dir, archive::Archive::Mode::read);
  auto acc = a->find_account(account);
  if (!acc) return 0;
  auto f = a->find_folder(acc->id, "INBOX");
  if (!f) return 0;
  size_t n = 0;
  a->for_each_message(acc->id, f->id, f->uidvalidity, [&](const archive::MessageRecord& m) {
    if (m.state == archive::MessageState::present) ++n;
    return true;
  });
  return n;
}

TEST(DailyBudget, ABatchParksSpentAccountsAndALaterRunContinuesThem) {
  FakeImapServer server;
  for (int i = 1; i <= 6; ++i) server.add_message("INBOX", message(i));
  TempDir dir;
  std::string archive = dir.path() + "/archive";
  std::string accounts = dir.path() + "/accounts.txt";
  std::ofstream(accounts) << "alice;pw\nbob;pw\n";
  auto args = [&](const std::string& budget) {
    return std::vector<std::string>{"export", "--archive", archive, "--accounts", accounts, "--host", "127.0.0.1",
                                    "--port", std::to_string(server.port()), "--tls", "none", "--daily-budget",
                                    budget, "--jobs", "1", "--max-load", "0", "--json"};
  };
  // About 100 bytes a message: 250 bytes are spent after the third.
  auto first = testing::run_imapstage(args("250"));
  EXPECT_EQ(first.exit_code, 6) << first.out << first.err;
  int parked = 0;
  for (auto& e : json_lines(first.out))
    if (e.value("event", "") == "parked") {
      ++parked;
      EXPECT_GT(e.value("seconds", 0.0), 23 * 3600.0) << e.dump();
      EXPECT_NE(e.value("reason", "").find("daily budget"), std::string::npos) << e.dump();
    }
  EXPECT_EQ(parked, 2);
  auto state = batch::load_state(batch::state_path(archive, "export"));
  ASSERT_TRUE(state);
  for (auto& a : state->accounts) {
    EXPECT_EQ(a.status, batch::AccountStatus::parked) << a.key;
    EXPECT_GT(a.resume_at, 0);
  }
  EXPECT_EQ(archived(archive, "alice@127.0.0.1"), 3u);
  auto status = testing::run_imapstage({"status", "--archive", archive});
  EXPECT_EQ(status.exit_code, 1) << status.out << status.err;  // the batch is not done
  EXPECT_NE(status.out.find("parked until"), std::string::npos) << status.out << status.err;
  EXPECT_NE(status.out.find("2 accounts: 0 done, 0 error, 0 running, 0 queued, 0 throttled, 2 parked"),
            std::string::npos)
      << status.out;

  // Before the window reopens: nothing runs, nothing is fetched.
  size_t logins = 0;
  for (auto& c : server.commands()) logins += c.text.rfind("LOGIN", 0) == 0;
  auto early = testing::run_imapstage(args("250"));
  EXPECT_EQ(early.exit_code, 6) << early.out << early.err;
  size_t logins_after = 0;
  for (auto& c : server.commands()) logins_after += c.text.rfind("LOGIN", 0) == 0;
  EXPECT_EQ(logins_after, logins);

  // A day later (IMAPSTAGE_CLOCK_OFFSET) the batch continues: everything, nothing twice.
  auto later = testing::run_imapstage(args("100MB"), {"IMAPSTAGE_CLOCK_OFFSET=90000"});
  EXPECT_EQ(later.exit_code, 0) << later.out << later.err;
  EXPECT_EQ(archived(archive, "alice@127.0.0.1"), 6u);
  EXPECT_EQ(archived(archive, "bob@127.0.0.1"), 6u);
  state = batch::load_state(batch::state_path(archive, "export"));
  for (auto& a : state->accounts) EXPECT_EQ(a.status, batch::AccountStatus::done) << a.key;
}

}  // namespace
}  // namespace imapstage

// Export batches against the harness Dovecot: master-user, SASL PLAIN with
// authorization id, magic password and per-user passwords; one wrong
// password ends in error while the others finish, and a re-run with it
// fixed runs only that account.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "batch/batch_jobs.h"
#include "common/error.h"
#include "common/message_filter.h"
#include "tests/support/test_server.h"

namespace imapstage::batch {
namespace {

using testing::TempDir;
using testing::TestServer;

class BatchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.users = {"alice", "bob", "carol"};
    server_ = new TestServer(o);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  Profile profile(AuthMode mode, const std::string& secret_file) {
    Profile p;
    p.name = "harness";
    p.host = server_->host();
    p.port = server_->imaps_port();
    p.tls = "implicit";
    p.ca_file = server_->ca_file();
    p.timeout_seconds = 30;
    p.auth = mode;
    if (mode == AuthMode::admin_plain) p.mechanism = imap::AuthMechanism::plain;
    p.admin_user = server_->master_user();
    p.master_separator = server_->master_separator();
    p.password_file = secret_file;
    return p;
  }

  ExportBatchOptions options(const std::string& archive, const std::string& accounts, const Profile& p) {
    ExportBatchOptions o;
    o.archive_dir = archive;
    o.accounts_file = accounts;
    o.routing.fixed = p;
    o.runner.scheduler.jobs = 3;
    o.runner.scheduler.max_load = 0;
    o.retry.backoff = std::chrono::milliseconds(50);
    return o;
  }

  static std::string write(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
    return path;
  }

  static std::map<std::string, int> export_runs(const std::string& archive) {
    std::map<std::string, int> out;
    auto a = archive::Archive::open(archive, archive::Archive::Mode::read);
    for (auto& r : a->runs())
      if (r.kind == "export") ++out[r.account];
    return out;
  }

  static TestServer* server_;
};

TestServer* BatchTest::server_ = nullptr;

TEST_F(BatchTest, MasterUserModeArchivesUnderTheMailboxName) {
  TempDir dir;
  std::string master = write(dir.path() + "/master.secret", server_->master_password() + "\n");
  std::string accounts = write(dir.path() + "/accounts.csv", "source_user\nalice\nbob\ncarol\n");
  RecordingSink events;
  auto report = run_export_batch(options(dir.path() + "/archive", accounts, profile(AuthMode::master_user, master)),
                                 events);
  EXPECT_TRUE(report.complete());
  EXPECT_EQ(report.result.done, 3u);
  auto a = archive::Archive::open(dir.path() + "/archive", archive::Archive::Mode::read);
  for (std::string user : {"alice", "bob", "carol"}) {
    auto account = a->find_account(user + "@" + server_->host());
    ASSERT_TRUE(account) << user;
    EXPECT_FALSE(a->folders(account->id).empty());
  }
  EXPECT_EQ(a->accounts().size(), 3u);  // nothing under "alice*admin"
  for (auto& e : events.events())
    EXPECT_EQ(e.dump().find(server_->master_password()), std::string::npos) << e.dump();
}

TEST_F(BatchTest, AdminPlainWithAuthorizationId) {
  TempDir dir;
  std::string master = write(dir.path() + "/master.secret", server_->master_password() + "\n");
  std::string accounts = write(dir.path() + "/accounts.csv", "alice\nbob\ncarol\n");
  RecordingSink events;
  auto report = run_export_batch(options(dir.path() + "/archive", accounts, profile(AuthMode::admin_plain, master)),
                                 events);
  EXPECT_TRUE(report.complete());
  auto state = load_state(state_path(dir.path() + "/archive", "export"));
  ASSERT_TRUE(state);
  for (auto& s : state->accounts) {
    EXPECT_EQ(s.status, AccountStatus::done) << s.key << ": " << s.error;
    EXPECT_GT(s.messages, 0u) << s.key;
  }
}

TEST_F(BatchTest, WrongPasswordFailsAloneAndTheRerunResumesOnlyIt) {
  TempDir dir;
  std::string archive = dir.path() + "/archive";
  auto line = [&](const std::string& user, const std::string& pw) { return user + ";" + pw + "\n"; };
  std::string accounts = write(dir.path() + "/accounts.txt", line("alice", server_->password("alice")) +
                                                                 line("bob", "WRONG-PASSWORD-123") +
                                                                 line("carol", server_->password("carol")) +
                                                                 "bad\"line,SECRET-X\n" +
                                                                 line("mallory@elsewhere.example", "x"));
  Profile p = profile(AuthMode::user, "");
  p.domains = {"localhost"};  // the fixed profile refuses other domains
  RecordingSink events;
  auto report = run_export_batch(options(archive, accounts, p), events);
  EXPECT_FALSE(report.complete());
  EXPECT_EQ(report.result.done, 2u);
  EXPECT_EQ(report.result.failed, 1u);
  ASSERT_EQ(report.refused.size(), 2u);
  EXPECT_EQ(report.refused[0].line, 4u);
  EXPECT_EQ(report.refused[1].line, 5u);
  EXPECT_NE(report.refused[1].message.find("mallory@elsewhere.example"), std::string::npos);

  auto state = load_state(state_path(archive, "export"));
  auto* bob = state->find("bob@" + server_->host());
  ASSERT_TRUE(bob);
  EXPECT_EQ(bob->status, AccountStatus::error);
  EXPECT_EQ(bob->error_kind, "auth");
  EXPECT_NE(bob->error.find("bob"), std::string::npos) << bob->error;
  EXPECT_NE(bob->error.find("login"), std::string::npos) << bob->error;  // the mechanism is named
  EXPECT_EQ(bob->line, 2u);
  for (auto& e : events.events()) {
    EXPECT_EQ(e.dump().find("WRONG-PASSWORD-123"), std::string::npos) << e.dump();
    EXPECT_EQ(e.dump().find("SECRET-X"), std::string::npos) << e.dump();
  }
  {
    std::ifstream in(state_path(archive, "export"));
    std::string text((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(text.find("WRONG-PASSWORD-123"), std::string::npos);
    EXPECT_EQ(text.find(server_->password("alice")), std::string::npos);
  }
  // Nor anywhere else in the archive: index (run history), packs, batch files.
  for (auto& entry : std::filesystem::recursive_directory_iterator(archive)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    for (const std::string& secret : {std::string("WRONG-PASSWORD-123"), std::string("SECRET-X"),
                                      server_->password("alice"), server_->password("carol")})
      EXPECT_EQ(bytes.find(secret), std::string::npos) << secret << " in " << entry.path();
  }
  auto runs1 = export_runs(archive);
  EXPECT_EQ(runs1["alice@" + server_->host()], 1);
  EXPECT_EQ(runs1["carol@" + server_->host()], 1);

  write(accounts, line("alice", server_->password("alice")) + line("bob", server_->password("bob")) +
                      line("carol", server_->password("carol")));
  auto report2 = run_export_batch(options(archive, accounts, p), events);
  EXPECT_TRUE(report2.complete());
  EXPECT_TRUE(report2.result.resumed);
  EXPECT_EQ(report2.result.done, 1u);
  EXPECT_EQ(report2.result.skipped, 2u);
  auto runs2 = export_runs(archive);
  EXPECT_EQ(runs2["alice@" + server_->host()], 1);  // not fetched again
  EXPECT_EQ(runs2["carol@" + server_->host()], 1);
  EXPECT_EQ(runs2["bob@" + server_->host()], 1);
  auto after = load_state(state_path(archive, "export"));
  EXPECT_EQ(after->find("bob@" + server_->host())->status, AccountStatus::done);
  EXPECT_EQ(after->find("bob@" + server_->host())->attempts, 2);
  EXPECT_EQ(after->find("alice@" + server_->host())->attempts, 1);
}

// The export policies reach every account of a batch, each on its own: one
// that reaches --max-errors ends as an error of kind policy, with what it
// fetched before archived, and the others finish.
TEST_F(BatchTest, MaxErrorsStopsOneAccountAndTheOthersGoOn) {
  server_->add_user("dave");
  std::string big = "Subject: big\r\nMessage-ID: <big@x>\r\n\r\n" + std::string(5 * 1024 * 1024, 'b') + "\r\n";
  server_->append("dave", "INBOX", "Subject: small\r\nMessage-ID: <small@x>\r\n\r\nsmall\r\n", "",
                  "01-Jan-2024 10:00:00 +0000");
  server_->append("dave", "Large", big, "", "02-Jan-2024 10:00:00 +0000");
  server_->append("dave", "Large", big + "2", "", "03-Jan-2024 10:00:00 +0000");
  TempDir dir;
  std::string archive = dir.path() + "/archive";
  auto line = [&](const std::string& user) { return user + ";" + server_->password(user) + "\n"; };
  std::string accounts = write(dir.path() + "/accounts.txt", line("alice") + line("dave"));
  Profile p = profile(AuthMode::user, "");
  p.max_message_mib = 4;  // dave's two big ones fail (the harness's own messages are smaller)
  auto o = options(archive, accounts, p);
  o.policy.max_errors = 2;
  o.policy.filter.before = parse_day("2100-01-01");
  RecordingSink events;
  auto report = run_export_batch(o, events);
  EXPECT_EQ(report.result.done, 1u);
  EXPECT_EQ(report.result.failed, 1u);
  auto state = load_state(state_path(archive, "export"));
  auto* dave = state->find("dave@" + server_->host());
  ASSERT_TRUE(dave);
  EXPECT_EQ(dave->status, AccountStatus::error);
  EXPECT_EQ(dave->error_kind, "policy");
  EXPECT_NE(dave->error.find("--max-errors 2"), std::string::npos) << dave->error;
  EXPECT_EQ(state->find("alice@" + server_->host())->status, AccountStatus::done)
      << state->find("alice@" + server_->host())->error;
  auto a = archive::Archive::open(archive, archive::Archive::Mode::read);
  auto account = a->find_account("dave@" + server_->host());
  ASSERT_TRUE(account);
  auto inbox = a->find_folder(account->id, "INBOX");
  ASSERT_TRUE(inbox);
  size_t archived = 0;
  a->for_each_message(account->id, inbox->id, inbox->uidvalidity, [&](const archive::MessageRecord&) {
    ++archived;
    return true;
  });
  EXPECT_EQ(archived, 1u);  // the small one, exported before the folder of the big ones
  for (auto& r : a->runs()) {
    if (r.kind != "export") continue;
    auto details = nlohmann::json::parse(r.details);
    EXPECT_EQ(details["policy"]["max_errors"], 2) << r.account;
    EXPECT_EQ(details["policy"]["filter"]["before"], "2100-01-01") << r.account;
  }
}

TEST_F(BatchTest, MagicPassword) {
  // The harness gives every account its own password; accounts added with the
  // same password stand for a server with one magic password.
  const std::string magic = "magic-Pa55-shared";
  for (std::string u : {"mg1", "mg2", "mg3"}) server_->run({"add-user", server_->dir(), u, magic});
  TempDir dir;
  std::string secret = write(dir.path() + "/magic.secret", magic + "\n");
  std::string accounts = write(dir.path() + "/accounts.csv", "mg1\nmg2\nmg3\n");
  RecordingSink events;
  auto report =
      run_export_batch(options(dir.path() + "/archive", accounts, profile(AuthMode::magic, secret)), events);
  EXPECT_TRUE(report.complete());
  EXPECT_EQ(report.result.done, 3u);
}

}  // namespace
}  // namespace imapstage::batch

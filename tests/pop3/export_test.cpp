// export --protocol pop3 end to end, through the binary: Dovecot's POP3 (full
// export, re-run fetches nothing, new mail, deleted mail marked expunged,
// bad password, import into IMAP and a deep verify against the target,
// --delete-after-verify, a master-user batch) and the scripted fake (no UIDL,
// duplicate UIDLs, a connection dropped mid-message, STLS not offered).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "batch/state.h"
#include "tests/support/fake_pop3_server.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::FakePop3Server;
using testing::run_imapstage;
using testing::TempDir;
using testing::TestServer;
using testing::TestServerOptions;

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> events;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') events.push_back(nlohmann::json::parse(line));
  return events;
}

// The "summary" event's INBOX entry.
nlohmann::json inbox_summary(const std::string& out) {
  for (auto& e : json_lines(out))
    if (e["event"] == "summary")
      for (auto& f : e["per_folder"])
        if (f["folder"] == "INBOX") return f;
  return {};
}

struct Archived {
  std::vector<archive::MessageRecord> present, expunged;
};

Archived archived(const std::string& dir, const std::string& account) {
  Archived out;
  auto a = archive::Archive::open(dir, archive::Archive::Mode::read);
  auto acc = a->find_account(account);
  if (!acc) return out;
  for (auto& f : a->folders(acc->id))
    a->for_each_message(acc->id, f.id, std::nullopt, [&](const archive::MessageRecord& m) {
      (m.state == archive::MessageState::present ? out.present : out.expunged).push_back(m);
      return true;
    });
  return out;
}

std::string write_secret(const TempDir& dir, const std::string& name, const std::string& secret) {
  std::string path = dir.path() + "/" + name;
  std::ofstream(path) << secret << "\n";
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return path;
}

class Pop3ExportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TestServerOptions o;
    o.users = {"alice", "carol"};
    o.target_users = {"target"};
    server_ = new TestServer(o);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  // export --protocol pop3 over POP3S as `user`, with `extra` arguments.
  static std::vector<std::string> pop3_export(const std::string& archive, const std::string& user,
                                              std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"export", "--archive", archive, "--protocol", "pop3", "--host", server_->host(),
                                     "--port", std::to_string(server_->pop3s_port()), "--ca-file", server_->ca_file(),
                                     "--json"};
    if (!user.empty()) {
      args.insert(args.end(), {"--user", user, "--password-file", server_->password_file(user)});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  static nlohmann::json imap_inbox(const std::string& user) {
    auto summary = server_->summary(user);
    for (auto& f : summary["folders"])
      if (f["name"] == "INBOX") return f;
    return {};
  }
  static TestServer* server_;
};

TestServer* Pop3ExportTest::server_ = nullptr;

TEST_F(Pop3ExportTest, FullExportRerunNewMailExpungeThenImportAndDeepVerify) {
  ASSERT_NE(server_->pop3s_port(), 0) << "dovecot-pop3d is not installed (tools/setup)";
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  const std::string account = "alice@" + server_->host();

  // Full export: every INBOX message, the bytes IMAP serves.
  auto first = run_imapstage(pop3_export(archive_dir, "alice"));
  ASSERT_EQ(first.exit_code, 0) << first.err << first.out;
  auto inbox = imap_inbox("alice");
  size_t n = inbox["messages"].size();
  ASSERT_GT(n, 10u);
  EXPECT_EQ(inbox_summary(first.out)["new"], n);
  auto a = archived(archive_dir, account);
  ASSERT_EQ(a.present.size(), n);
  std::multiset<std::string> imap_hashes, pop3_hashes;
  for (auto& m : inbox["messages"]) imap_hashes.insert(m["sha256"].get<std::string>());
  size_t from_received = 0;
  for (auto& m : a.present) {
    pop3_hashes.insert(archive::to_hex(m.hash));
    EXPECT_FALSE(m.source_id.empty());  // the UIDL
    EXPECT_NE(m.date_source, archive::DateSource::server);
    if (m.date_source == archive::DateSource::received) ++from_received;
  }
  EXPECT_EQ(pop3_hashes, imap_hashes);
  EXPECT_GT(from_received, 0u);

  // A re-run fetches nothing.
  auto again = run_imapstage(pop3_export(archive_dir, "alice"));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(inbox_summary(again.out)["new"], 0);
  EXPECT_EQ(inbox_summary(again.out)["bytes_fetched"], 0);

  // New mail is fetched; a message deleted on the server is marked expunged.
  std::string fresh =
      "Received: from a by b; Tue, 3 Feb 2026 10:00:00 +0100\r\nDate: Mon, 2 Feb 2026 09:00:00 +0000\r\n"
      "Subject: fresh\r\n\r\nnew mail\r\n";
  server_->append("alice", "INBOX", fresh);
  uint32_t first_uid = inbox["messages"][0]["uid"].get<uint32_t>();
  server_->expunge("alice", "INBOX", {first_uid});
  auto third = run_imapstage(pop3_export(archive_dir, "alice"));
  ASSERT_EQ(third.exit_code, 0) << third.err;
  EXPECT_EQ(inbox_summary(third.out)["new"], 1);
  EXPECT_EQ(inbox_summary(third.out)["expunged"], 1);
  a = archived(archive_dir, account);
  EXPECT_EQ(a.present.size(), n);
  ASSERT_EQ(a.expunged.size(), 1u);
  EXPECT_EQ(archive::to_hex(a.expunged[0].hash), inbox["messages"][0]["sha256"].get<std::string>());
  bool found = false;
  for (auto& m : a.present)
    if (m.size == fresh.size()) {
      found = true;
      EXPECT_EQ(m.date_source, archive::DateSource::received);
      EXPECT_EQ(m.internaldate, 1770109200);  // 2026-02-03 09:00:00 UTC
      EXPECT_EQ(m.internaldate_tz, 60);
    }
  EXPECT_TRUE(found);

  // Import into IMAP, then a deep verify against the target is equal.
  std::vector<std::string> target = {"--host", server_->host(), "--port", std::to_string(server_->imaps_port()),
                                     "--ca-file", server_->ca_file(), "--user", "target", "--password-file",
                                     server_->password_file("target")};
  std::vector<std::string> import = {"import", "--archive", archive_dir, "--account", account, "--json"};
  import.insert(import.end(), target.begin(), target.end());
  auto imported = run_imapstage(import);
  ASSERT_EQ(imported.exit_code, 0) << imported.err << imported.out;
  std::vector<std::string> verify = {"verify", "--archive", archive_dir, "--account", account, "--against", "target",
                                     "--deep", "--json"};
  verify.insert(verify.end(), target.begin(), target.end());
  auto verified = run_imapstage(verify);
  EXPECT_EQ(verified.exit_code, 0) << verified.err << verified.out;
  EXPECT_EQ(imap_inbox("target")["messages"].size(), n);
}

TEST_F(Pop3ExportTest, BadPasswordIsExitThreeAndLeavesNoTrace) {
  TempDir dir;
  std::string wrong = write_secret(dir, "wrong", "not-the-password");
  auto r = run_imapstage({"export", "--archive", dir.path() + "/archive", "--protocol", "pop3", "--host",
                          server_->host(), "--port", std::to_string(server_->pop3s_port()), "--ca-file",
                          server_->ca_file(), "--user", "alice", "--password-file", wrong});
  EXPECT_EQ(r.exit_code, 3) << r.err << r.out;
  EXPECT_NE(r.err.find("alice"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("not-the-password"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/archive/FORMAT"));
}

TEST_F(Pop3ExportTest, StlsAndUntrustedCertificate) {
  TempDir dir;
  auto stls = run_imapstage({"export", "--archive", dir.path() + "/a", "--protocol", "pop3", "--tls", "starttls",
                             "--host", server_->host(), "--port", std::to_string(server_->pop3_port()), "--ca-file",
                             server_->ca_file(), "--user", "carol", "--password-file",
                             server_->password_file("carol")});
  EXPECT_EQ(stls.exit_code, 0) << stls.err;
  auto untrusted = run_imapstage({"export", "--archive", dir.path() + "/b", "--protocol", "pop3", "--host",
                                  server_->host(), "--port", std::to_string(server_->pop3s_port()), "--user", "carol",
                                  "--password-file", server_->password_file("carol")});
  EXPECT_EQ(untrusted.exit_code, 4) << untrusted.err;
  EXPECT_NE(untrusted.err.find("certificate"), std::string::npos) << untrusted.err;
}

TEST_F(Pop3ExportTest, MasterUserBatchThenDeleteAfterVerify) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  std::string accounts = dir.path() + "/accounts.csv";
  std::ofstream(accounts) << "carol\n";
  std::string master = write_secret(dir, "master", server_->master_password());
  size_t n = imap_inbox("carol")["messages"].size();
  ASSERT_GT(n, 0u);
  auto batch = run_imapstage({"export", "--archive", archive_dir, "--protocol", "pop3", "--host", server_->host(),
                              "--port", std::to_string(server_->pop3s_port()), "--ca-file", server_->ca_file(),
                              "--accounts", accounts, "--auth-mode", "master-user", "--auth-user",
                              server_->master_user(), "--password-file", master, "--max-load", "0", "--json",
                              "--delete-after-verify"});
  ASSERT_EQ(batch.exit_code, 0) << batch.err << batch.out;
  auto a = archived(archive_dir, "carol@" + server_->host());
  EXPECT_EQ(a.present.size(), n);
  uint64_t deleted = 0;
  for (auto& e : json_lines(batch.out))
    if (e["event"] == "pop3_deleted") deleted = e["deleted"].get<uint64_t>();
  EXPECT_EQ(deleted, n);
  EXPECT_TRUE(imap_inbox("carol")["messages"].empty()) << "the server still holds carol's mail";
  // The archive keeps every message (and verifies offline).
  auto offline = run_imapstage({"verify", "--archive", archive_dir});
  EXPECT_EQ(offline.exit_code, 0) << offline.out << offline.err;
}

TEST_F(Pop3ExportTest, ImapExportRefusesDeleteAfterVerify) {
  TempDir dir;
  auto r = run_imapstage({"export", "--archive", dir.path() + "/a", "--host", server_->host(), "--port",
                          std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", "alice",
                          "--password-file", server_->password_file("alice"), "--delete-after-verify"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

// --- the scripted fake ---

std::vector<std::string> fake_export(const FakePop3Server& fake, const std::string& archive,
                                     const std::string& password_file) {
  return {"export", "--archive", archive, "--protocol", "pop3", "--tls", "none", "--host", "127.0.0.1", "--port",
          std::to_string(fake.port()), "--user", "alice", "--password-file", password_file, "--timeout", "3",
          "--json"};
}

TEST(Pop3FakeExportTest, WithoutUidlEverythingIsFetchedAndNothingStoredTwice) {
  FakePop3Server fake;
  fake.set_uidl(false);
  std::string same = "Date: Wed, 1 Jan 2025 10:00:00 +0000\r\nSubject: same\r\n\r\nbody\r\n";
  fake.set_messages({{"", same}, {"", "Subject: no date\r\n\r\nx\r\n"}, {"", same}});
  TempDir dir;
  std::string pw = write_secret(dir, "pw", "secret");
  auto first = run_imapstage(fake_export(fake, dir.path() + "/a", pw));
  ASSERT_EQ(first.exit_code, 0) << first.err << first.out;
  EXPECT_EQ(inbox_summary(first.out)["new"], 3);
  EXPECT_NE(first.out.find("has no UIDL"), std::string::npos) << first.out;
  auto a = archived(dir.path() + "/a", "alice@127.0.0.1");
  ASSERT_EQ(a.present.size(), 3u);  // the two identical messages are both kept
  size_t dated = 0, fetch_time = 0;
  for (auto& m : a.present) {
    EXPECT_EQ(m.source_id.rfind("sha256:", 0), 0u) << m.source_id;
    dated += m.date_source == archive::DateSource::date_header;
    fetch_time += m.date_source == archive::DateSource::fetch_time;
  }
  EXPECT_EQ(dated, 2u);
  EXPECT_EQ(fetch_time, 1u);
  auto again = run_imapstage(fake_export(fake, dir.path() + "/a", pw));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(inbox_summary(again.out)["new"], 0);
  EXPECT_EQ(archived(dir.path() + "/a", "alice@127.0.0.1").present.size(), 3u);
  // --delete-after-verify cannot match without UIDL: nothing is deleted.
  auto del = fake_export(fake, dir.path() + "/a", pw);
  del.push_back("--delete-after-verify");
  auto deleting = run_imapstage(del);
  EXPECT_EQ(deleting.exit_code, 0) << deleting.err;
  EXPECT_EQ(fake.messages().size(), 3u);
  for (auto& c : fake.commands()) EXPECT_EQ(c.rfind("DELE", 0), std::string::npos) << c;
}

TEST(Pop3FakeExportTest, DuplicateUidlsLoseNothing) {
  FakePop3Server fake;
  fake.set_messages({{"dup", "Subject: one\r\n\r\n1\r\n"}, {"dup", "Subject: two\r\n\r\n2\r\n"},
                     {"x", "Subject: three\r\n\r\n3\r\n"}});
  TempDir dir;
  std::string pw = write_secret(dir, "pw", "secret");
  auto first = run_imapstage(fake_export(fake, dir.path() + "/a", pw));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto a = archived(dir.path() + "/a", "alice@127.0.0.1");
  ASSERT_EQ(a.present.size(), 3u);
  std::set<std::string> ids;
  for (auto& m : a.present) ids.insert(m.source_id);
  EXPECT_EQ(ids, (std::set<std::string>{"dup", "dup#2", "x"}));
  auto again = run_imapstage(fake_export(fake, dir.path() + "/a", pw));
  EXPECT_EQ(inbox_summary(again.out)["new"], 0);
  // Only the DELE of archived, re-hashed messages, then QUIT.
  auto del = fake_export(fake, dir.path() + "/a", pw);
  del.push_back("--delete-after-verify");
  fake.set_messages({{"dup", "Subject: one\r\n\r\n1\r\n"}, {"dup", "Subject: two\r\n\r\n2\r\n"},
                     {"x", "Subject: three\r\n\r\n3\r\n"}, {"late", "Subject: late\r\n\r\n4\r\n"}});
  auto deleting = run_imapstage(del);
  ASSERT_EQ(deleting.exit_code, 0) << deleting.err;
  // "late" was archived by this very run, so it goes too; nothing is left.
  EXPECT_TRUE(fake.messages().empty());
}

TEST(Pop3FakeExportTest, ConnectionDroppedMidMessageIsResumed) {
  FakePop3Server fake;
  fake.set_messages({{"a", "Subject: a\r\n\r\n" + std::string(20000, 'a') + "\r\n"},
                     {"b", "Subject: b\r\n\r\n" + std::string(20000, 'b') + "\r\n"},
                     {"c", "Subject: c\r\n\r\nc\r\n"}});
  fake.drop_during_retr(2, 5000);
  TempDir dir;
  std::string pw = write_secret(dir, "pw", "secret");
  auto r = run_imapstage(fake_export(fake, dir.path() + "/a", pw));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(archived(dir.path() + "/a", "alice@127.0.0.1").present.size(), 3u);
  EXPECT_GE(fake.connections(), 2u);
}

TEST(Pop3FakeExportTest, StlsNotOfferedIsRefused) {
  FakePop3Server fake;
  TempDir dir;
  std::string pw = write_secret(dir, "pw", "secret");
  auto args = fake_export(fake, dir.path() + "/a", pw);
  for (auto& a : args)
    if (a == "none") a = "starttls";
  auto r = run_imapstage(args);
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("STLS"), std::string::npos) << r.err;
  for (auto& c : fake.commands()) EXPECT_EQ(c.rfind("USER", 0), std::string::npos) << c;
}

// Provider limits on a POP3 source (the scripted fake notes when each command arrives): the rate caps
// pace the RETR commands (per account, and per server in a batch), measured over those commands
// only; a spent daily budget stops the account (exit 6, parked in a batch) until its window reopens.
namespace limits {

size_t archived(const std::string& dir, const std::string& account) {
  auto a = archive::Archive::open(dir, archive::Archive::Mode::read);
  auto acc = a->find_account(account);
  if (!acc) return 0;
  size_t n = 0;
  for (auto& f : a->folders(acc->id))
    a->for_each_message(acc->id, f.id, std::nullopt, [&](const archive::MessageRecord& m) {
      n += m.state == archive::MessageState::present;
      return true;
    });
  return n;
}

// `count` messages of about `size` bytes each.
std::vector<testing::FakePop3Message> maildrop(int count, size_t size) {
  std::vector<testing::FakePop3Message> out;
  for (int i = 1; i <= count; ++i) {
    std::string head = fmt::format("Message-ID: <cap{}@pop3>\r\nSubject: cap {}\r\n\r\n", i, i);
    std::string body;
    while (head.size() + body.size() + 2 < size) body += static_cast<char>('a' + i % 26);
    out.push_back({fmt::format("u{}", i), head + body + "\r\n"});
  }
  return out;
}

std::vector<std::string> fake_export(const FakePop3Server& fake, const std::string& archive,
                                     const std::string& password_file, std::vector<std::string> extra) {
  std::vector<std::string> args = {"export", "--archive", archive, "--protocol", "pop3", "--tls", "none",
                                   "--host", "127.0.0.1", "--port", std::to_string(fake.port()), "--user", "alice",
                                   "--password-file", password_file, "--timeout", "10", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// The pace of the RETR commands the fake received. Messages are paid for in
// groups (a quarter second's worth of the cap), each just before its first
// RETR is sent, so the RETRs of the first group arrive together at the
// first RETR's time, and what was paid for between the first RETR and the
// last is every group after the first.
struct Pace {
  size_t retrs = 0;
  size_t first_group = 0;  // RETRs that came with the first one (within 50 ms)
  double seconds = 0;      // from the first RETR to the last
  uint64_t bytes = 0;      // of the messages after the first group
  double messages_per_second() const { return double(retrs - first_group) / seconds; }
  double bytes_per_second() const { return double(bytes) / seconds; }
};

Pace pace_of(const FakePop3Server& fake) {
  auto commands = fake.commands();
  auto times = fake.command_times();
  auto messages = fake.messages();
  Pace p;
  std::chrono::steady_clock::time_point first, last;
  for (size_t i = 0; i < commands.size(); ++i) {
    if (commands[i].rfind("RETR ", 0) != 0) continue;
    if (p.retrs++ == 0) first = times[i];
    if (times[i] - first < std::chrono::milliseconds(50)) ++p.first_group;
    else p.bytes += messages.at(std::stoul(commands[i].substr(5)) - 1).bytes.size();
    last = times[i];
  }
  p.seconds = std::chrono::duration<double>(last - first).count();
  return p;
}

TEST(Pop3Limits, MessagesPerSecondCapPacesTheRetrCommands) {
  FakePop3Server fake;
  fake.set_messages(maildrop(41, 300));
  TempDir dir;
  std::string pw = write_secret(dir, "pw", "secret");
  auto r = run_imapstage(fake_export(fake, dir.path() + "/a", pw, {"--max-messages-per-second", "20"}));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(archived(dir.path() + "/a", "alice@127.0.0.1"), 41u);
  auto p = pace_of(fake);
  ASSERT_EQ(p.retrs, 41u);
  double rate = p.messages_per_second();
  std::printf("measured: %zu RETRs, %zu after the first group in %.3f s = %.2f/s (cap 20/s)\n", p.retrs,
              p.retrs - p.first_group, p.seconds, rate);
  EXPECT_EQ(p.first_group, 5u);  // a quarter second's worth
  EXPECT_NEAR(rate, 20.0, 2.0) << p.retrs << " RETRs in " << p.seconds << " s";
}

TEST(Pop3Limits, BandwidthCapPacesTheRetrCommands) {
  FakePop3Server fake;
  fake.set_messages(maildrop(21, 50000));
  TempDir dir;
  std::string pw = write_secret(dir, "pw", "secret");
  // 500 KiB/s, paid two messages at a time (a quarter second's worth is 128,000 bytes).
  auto r = run_imapstage(fake_export(fake, dir.path() + "/a", pw, {"--max-bandwidth", "500KB"}));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(archived(dir.path() + "/a", "alice@127.0.0.1"), 21u);
  auto p = pace_of(fake);
  ASSERT_EQ(p.retrs, 21u);
  double rate = p.bytes_per_second();
  std::printf("measured: %llu bytes after the first group in %.3f s = %.0f B/s (cap %d B/s)\n",
              static_cast<unsigned long long>(p.bytes), p.seconds, rate, 500 * 1024);
  EXPECT_EQ(p.first_group, 2u);
  EXPECT_NEAR(rate, 500.0 * 1024, 50.0 * 1024) << p.bytes << " bytes in " << p.seconds << " s";
}

TEST(Pop3Limits, WithoutACapTheRetrsArePipelined) {
  FakePop3Server fake;
  fake.set_messages(maildrop(41, 300));
  TempDir dir;
  std::string pw = write_secret(dir, "pw", "secret");
  auto r = run_imapstage(fake_export(fake, dir.path() + "/a", pw, {}));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto p = pace_of(fake);
  ASSERT_EQ(p.retrs, 41u);
  EXPECT_LT(p.seconds, 1.0);  // far faster than the capped 2 s
}

TEST(Pop3Limits, ServerCapOfABatchPacesItsPop3Accounts) {
  FakePop3Server fake;
  fake.set_messages(maildrop(31, 300));
  TempDir dir;
  std::string accounts = dir.path() + "/accounts.txt";
  std::ofstream(accounts) << "alice;secret\n";
  auto r = run_imapstage({"export", "--archive", dir.path() + "/a", "--protocol", "pop3", "--tls", "none", "--host",
                          "127.0.0.1", "--port", std::to_string(fake.port()), "--timeout", "10", "--accounts",
                          accounts, "--server-max-messages-per-second", "15", "--max-load", "0", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(archived(dir.path() + "/a", "alice@127.0.0.1"), 31u);
  auto p = pace_of(fake);
  ASSERT_EQ(p.retrs, 31u);
  double rate = p.messages_per_second();
  std::printf("measured: %zu RETRs, %zu after the first group in %.3f s = %.2f/s (server cap 15/s)\n", p.retrs,
              p.retrs - p.first_group, p.seconds, rate);
  EXPECT_EQ(p.first_group, 3u);
  EXPECT_NEAR(rate, 15.0, 1.5) << p.retrs << " RETRs in " << p.seconds << " s";
}

TEST(Pop3Limits, SpentDailyBudgetStopsTheAccountUntilItsWindowReopens) {
  FakePop3Server fake;
  fake.set_messages(maildrop(10, 10000));
  TempDir dir;
  std::string archive = dir.path() + "/a";
  std::string pw = write_secret(dir, "pw", "secret");
  // 35,000 bytes: spent by the fourth message, which is kept.
  auto first = run_imapstage(fake_export(fake, archive, pw, {"--daily-budget", "35000"}));
  EXPECT_EQ(first.exit_code, 6) << first.err << first.out;
  EXPECT_NE(first.err.find("daily budget"), std::string::npos) << first.err;
  EXPECT_EQ(archived(archive, "alice@127.0.0.1"), 4u);
  EXPECT_TRUE(std::filesystem::exists(archive + "/batches/budgets.json"));

  // Before the window reopens: refused before logging in.
  size_t before = fake.commands().size();
  auto early = run_imapstage(fake_export(fake, archive, pw, {"--daily-budget", "35000"}));
  EXPECT_EQ(early.exit_code, 6) << early.err;
  EXPECT_EQ(fake.commands().size(), before);

  // A day later it continues where it stopped: nothing fetched twice.
  auto later = run_imapstage(fake_export(fake, archive, pw, {"--daily-budget", "35000"}),
                             {"IMAPSTAGE_CLOCK_OFFSET=90000"});
  EXPECT_EQ(later.exit_code, 6) << later.err;
  EXPECT_EQ(archived(archive, "alice@127.0.0.1"), 8u);
  auto last = run_imapstage(fake_export(fake, archive, pw, {"--daily-budget", "35000"}),
                            {"IMAPSTAGE_CLOCK_OFFSET=180000"});
  EXPECT_EQ(last.exit_code, 0) << last.err;
  EXPECT_EQ(archived(archive, "alice@127.0.0.1"), 10u);
  size_t retrs = 0;
  for (auto& c : fake.commands()) retrs += c.rfind("RETR ", 0) == 0;
  EXPECT_LE(retrs, 10u + 2 * 15u);  // at most the window of pipelined RETRs read past the stop, per stopped run
}

TEST(Pop3Limits, ABatchParksAPop3AccountWhoseBudgetIsSpent) {
  FakePop3Server fake;
  fake.set_messages(maildrop(6, 10000));
  TempDir dir;
  std::string archive = dir.path() + "/a";
  std::string accounts = dir.path() + "/accounts.txt";
  std::ofstream(accounts) << "alice;secret\n";
  auto args = [&](const std::string& budget) {
    return std::vector<std::string>{"export", "--archive", archive, "--protocol", "pop3", "--tls", "none", "--host",
                                    "127.0.0.1", "--port", std::to_string(fake.port()), "--timeout", "10",
                                    "--accounts", accounts, "--daily-budget", budget, "--max-load", "0", "--json"};
  };
  auto first = run_imapstage(args("25000"));
  EXPECT_EQ(first.exit_code, 6) << first.out << first.err;
  bool parked = false;
  for (auto& e : json_lines(first.out))
    if (e.value("event", "") == "parked") parked = e.value("reason", "").find("daily budget") != std::string::npos;
  EXPECT_TRUE(parked) << first.out;
  EXPECT_EQ(archived(archive, "alice@127.0.0.1"), 3u);
  auto state = batch::load_state(batch::state_path(archive, "export"));
  ASSERT_TRUE(state);
  ASSERT_EQ(state->accounts.size(), 1u);
  EXPECT_EQ(state->accounts[0].status, batch::AccountStatus::parked);
  auto later = run_imapstage(args("100MB"), {"IMAPSTAGE_CLOCK_OFFSET=90000"});
  EXPECT_EQ(later.exit_code, 0) << later.out << later.err;
  EXPECT_EQ(archived(archive, "alice@127.0.0.1"), 6u);
}

// The message filter on a POP3 source: the size LIST announces decides
// before a RETR; the date is known only from the message, so a message the
// size lets through is read and then archived or counted as filtered out.
// A later run with another filter, or none, takes what it adds; --max-errors
// stops the account.
TEST(Pop3Filters, SizeDecidesBeforeRetrDateAfterAndLaterRunsTakeTheRest) {
  // u1-u3 dated 2019, u4-u6 dated 2021; u1, u2, u4, u5 about 3,000 bytes, u3 and u6 about 400.
  std::vector<testing::FakePop3Message> drop;
  for (int i = 1; i <= 6; ++i) {
    std::string head = fmt::format("Message-ID: <f{}@pop3>\r\nDate: Mon, 1 Jul {} 10:00:00 +0000\r\n"
                                   "Subject: filter {}\r\n\r\n", i, i <= 3 ? 2019 : 2021, i);
    size_t size = (i == 3 || i == 6) ? 400 : 3000;
    std::string body(size - head.size() - 2, static_cast<char>('a' + i));
    drop.push_back({fmt::format("u{}", i), head + body + "\r\n"});
  }
  FakePop3Server fake;
  fake.set_messages(drop);
  TempDir dir;
  std::string archive = dir.path() + "/a";
  std::string pw = write_secret(dir, "pw", "secret");
  auto retrs = [&] {
    std::vector<std::string> out;
    for (auto& c : fake.commands())
      if (c.rfind("RETR ", 0) == 0) out.push_back(c.substr(5));
    return out;
  };

  auto large = run_imapstage(limits::fake_export(fake, archive, pw, {"--larger", "1000"}));
  ASSERT_EQ(large.exit_code, 0) << large.err << large.out;
  EXPECT_EQ(limits::archived(archive, "alice@127.0.0.1"), 4u);
  EXPECT_EQ(retrs(), (std::vector<std::string>{"1", "2", "4", "5"}));  // the small ones were never read
  EXPECT_EQ(inbox_summary(large.out)["filtered_out"], 2);

  auto recent = run_imapstage(limits::fake_export(fake, archive, pw, {"--since", "2020-01-01"}));
  ASSERT_EQ(recent.exit_code, 0) << recent.err << recent.out;
  EXPECT_EQ(limits::archived(archive, "alice@127.0.0.1"), 5u);  // u6 added; u3 read, left out by its date
  EXPECT_EQ(retrs(), (std::vector<std::string>{"1", "2", "4", "5", "3", "6"}));
  EXPECT_EQ(inbox_summary(recent.out)["filtered_out"], 1);

  // The run history has the filter: offline verify names the selection.
  auto verify = run_imapstage({"verify", "--archive", archive, "--json"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_NE(verify.out.find("\"since\":\"2020-01-01\""), std::string::npos) << verify.out;

  auto all = run_imapstage(limits::fake_export(fake, archive, pw, {}));
  ASSERT_EQ(all.exit_code, 0) << all.err << all.out;
  EXPECT_EQ(limits::archived(archive, "alice@127.0.0.1"), 6u);
  EXPECT_EQ(inbox_summary(all.out)["new"], 1);
  EXPECT_EQ(inbox_summary(all.out)["filtered_out"], 0);
}

// Without UIDL a message is known only by its bytes, so the filter cannot
// leave it out before reading it: a message archived earlier and outside
// today's filter is recognised and stays present, never marked expunged.
TEST(Pop3Filters, WithoutUidlArchivedMessagesOutsideTheFilterStayPresent) {
  FakePop3Server fake;
  fake.set_uidl(false);
  auto drop = limits::maildrop(4, 300);
  drop[3] = limits::maildrop(4, 3000)[3];
  fake.set_messages(drop);
  TempDir dir;
  std::string archive = dir.path() + "/a";
  std::string pw = write_secret(dir, "pw", "secret");
  auto first = run_imapstage(limits::fake_export(fake, archive, pw, {}));
  ASSERT_EQ(first.exit_code, 0) << first.err << first.out;
  EXPECT_EQ(imapstage::archived(archive, "alice@127.0.0.1").present.size(), 4u);

  auto large = run_imapstage(limits::fake_export(fake, archive, pw, {"--larger", "1000"}));
  ASSERT_EQ(large.exit_code, 0) << large.err << large.out;
  auto a = imapstage::archived(archive, "alice@127.0.0.1");
  EXPECT_EQ(a.present.size(), 4u);
  EXPECT_EQ(a.expunged.size(), 0u);
  EXPECT_EQ(inbox_summary(large.out)["expunged"], 0);
  EXPECT_EQ(inbox_summary(large.out)["new"], 0);
}

TEST(Pop3Filters, MaxErrorsStopsTheAccount) {
  FakePop3Server fake;
  auto drop = limits::maildrop(3, 300);
  auto big = limits::maildrop(3, 1100000);  // over --max-message-size 1 (MiB): each fails
  for (size_t i = 0; i < big.size(); ++i) {
    big[i].uidl = fmt::format("big{}", i);
    drop.insert(drop.begin() + static_cast<long>(i), big[i]);
  }
  fake.set_messages(drop);
  TempDir dir;
  std::string archive = dir.path() + "/a";
  std::string pw = write_secret(dir, "pw", "secret");
  auto r = run_imapstage(limits::fake_export(fake, archive, pw, {"--max-message-size", "1", "--max-errors", "2"}));
  EXPECT_EQ(r.exit_code, 1) << r.err << r.out;
  EXPECT_NE((r.out + r.err).find("failed messages (--max-errors 2); what was read is archived"), std::string::npos)
      << r.out << r.err;
  size_t retrs = 0;
  for (auto& c : fake.commands()) retrs += c.rfind("RETR ", 0) == 0;
  EXPECT_EQ(retrs, 0u);  // the second failure came while listing: nothing was read
}

}  // namespace limits

}  // namespace
}  // namespace imapstage

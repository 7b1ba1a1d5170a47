// Online comparison against the harness Dovecot: export account A, import
// into B, then compare the archive with A (source) and B (target); damage B
// and check that exactly the damage is named.
#include <fstream>
#include <map>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"
#include "verify/compare.h"

namespace imapstage {
namespace {

using testing::TempDir;
using testing::TestServer;

class CompareTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.users = {"alice"};
    o.target_users = {"alice_copy"};
    server_ = new TestServer(o);
    dir_ = new TempDir();
    archive_ = dir_->path() + "/archive";

    exporting::ExportOptions e;
    e.archive_dir = archive_;
    e.endpoint = endpoint();
    e.credentials = credentials("alice");
    NullSink quiet;
    auto s = exporting::run_export(e, quiet);
    ASSERT_TRUE(s.complete());

    importing::ImportOptions i;
    i.archive_dir = archive_;
    i.endpoint = endpoint();
    i.credentials = credentials("alice_copy");
    auto r = importing::run_import(i, quiet);
    ASSERT_TRUE(r.complete());
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
    server_ = nullptr;
    dir_ = nullptr;
  }

  static imap::Endpoint endpoint() {
    imap::Endpoint e;
    e.host = server_->host();
    e.port = server_->imaps_port();
    e.ca_file = server_->ca_file();
    e.timeout = std::chrono::seconds(30);
    return e;
  }
  static imap::Credentials credentials(const std::string& user) {
    imap::Credentials c;
    c.user = user;
    c.secret = server_->password(user);
    return c;
  }
  static verify::Comparison compare(verify::Against against, const std::string& user, bool deep) {
    verify::CompareOptions o;
    o.archive_dir = archive_;
    o.endpoint = endpoint();
    o.credentials = credentials(user);
    o.against = against;
    o.deep = deep;
    NullSink quiet;
    return verify::compare_online(o, quiet);
  }

  // The UIDs of `user`'s INBOX, as the harness reads them.
  static std::vector<uint32_t> inbox_uids(const std::string& user) {
    std::vector<uint32_t> uids;
    auto summary = server_->summary(user, false);
    for (auto& f : summary["folders"])
      if (f["name"] == "INBOX")
        for (auto& m : f["messages"]) uids.push_back(m["uid"].get<uint32_t>());
    return uids;
  }

  static TestServer* server_;
  static TempDir* dir_;
  static std::string archive_;
};

TestServer* CompareTest::server_ = nullptr;
TempDir* CompareTest::dir_ = nullptr;
std::string CompareTest::archive_;

std::string describe(const verify::Comparison& c) {
  std::string out;
  for (auto& f : c.folders) {
    if (!f.error.empty()) out += f.folder + ": " + f.error + "\n";
    for (auto& d : f.differences)
      out += f.folder + ": " + d.kind + " archive UID " + std::to_string(d.archive_uid) + " server UID " +
             std::to_string(d.server_uid) + " " + d.detail + "\n";
  }
  return out;
}

uint64_t total_messages(const verify::Comparison& c) {
  uint64_t n = 0;
  for (auto& f : c.folders) n += f.archive_messages;
  return n;
}

// Runs in order: equality first, then damage to the target.
TEST_F(CompareTest, ThreeWayEqualThenExactlyTheDamageIsNamed) {
  auto source = compare(verify::Against::source, "alice", true);
  EXPECT_TRUE(source.equal()) << describe(source);
  EXPECT_GT(total_messages(source), 50u);
  uint64_t hashed = 0;
  for (auto& f : source.folders) hashed += f.hashes_compared;
  EXPECT_EQ(hashed, total_messages(source));

  auto target = compare(verify::Against::target, "alice_copy", true);
  EXPECT_TRUE(target.equal()) << describe(target);
  EXPECT_EQ(total_messages(target), total_messages(source));

  // Damage the target: one message gone from INBOX, one flag changed in another message.
  auto target_uids = inbox_uids("alice_copy");
  ASSERT_GE(target_uids.size(), 3u);
  uint32_t deleted = target_uids[0];
  uint32_t flagged = target_uids[1];
  server_->expunge("alice_copy", "INBOX", {deleted});
  server_->store("alice_copy", "INBOX", flagged, "+FLAGS", "$Audited");

  auto damaged = compare(verify::Against::target, "alice_copy", false);
  EXPECT_FALSE(damaged.equal());
  std::vector<verify::MessageDifference> diffs;
  for (auto& f : damaged.folders) {
    for (auto& d : f.differences) {
      EXPECT_EQ(f.server_folder, "INBOX") << describe(damaged);
      diffs.push_back(d);
    }
  }
  ASSERT_EQ(diffs.size(), 2u) << describe(damaged);
  std::sort(diffs.begin(), diffs.end(), [](auto& a, auto& b) { return a.kind < b.kind; });
  EXPECT_EQ(diffs[0].kind, "differs") << describe(damaged);
  EXPECT_EQ(diffs[0].server_uid, flagged);
  EXPECT_NE(diffs[0].detail.find("$Audited"), std::string::npos) << diffs[0].detail;
  EXPECT_EQ(diffs[1].kind, "missing") << describe(damaged);
  EXPECT_NE(diffs[1].archive_uid, 0u);
  EXPECT_FALSE(diffs[1].message_id.empty());

  // The command line says the same, exits 1 and writes the auditor's report.
  TempDir out;
  auto r = testing::run_imapstage({"verify", "--archive", archive_, "--against", "target", "--host",
                                   server_->host(), "--port", std::to_string(server_->imaps_port()), "--ca-file",
                                   server_->ca_file(), "--user", "alice_copy", "--password-file",
                                   server_->password_file("alice_copy"), "--report", out.path() + "/r.json",
                                   "--csv", out.path() + "/r.csv"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("missing"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("DIFFERENT"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(server_->password("alice_copy")), std::string::npos);
  std::ifstream report(out.path() + "/r.json");
  auto j = nlohmann::json::parse(report);
  EXPECT_EQ(j["equal"], false) << j.dump(2);
  std::ifstream csv(out.path() + "/r.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header.rfind("archive_folder,", 0), 0u) << header;
}


// Runs after the test above (same servers): the source changes after the
// export; the comparison names the new message (with its Message-ID, read
// from the server), the one expunged, and the flag change; a message only the
// target holds is "extra", named by its Message-ID too.
TEST_F(CompareTest, SourceChangesAndTargetExtrasAreNamedWithMessageIds) {
  auto uids = inbox_uids("alice");
  ASSERT_GE(uids.size(), 3u);
  uint32_t expunged = uids[0];
  uint32_t flagged = uids[1];
  server_->expunge("alice", "INBOX", {expunged});
  server_->store("alice", "INBOX", flagged, "+FLAGS", "$Reviewed");
  std::string fresh =
      "From: Carol <carol@example.org>\r\nTo: alice@example.org\r\nSubject: after the export\r\n"
      "Message-ID: <after-export-1@example.org>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nnew\r\n";
  uint32_t added = server_->append("alice", "INBOX", fresh);

  for (bool deep : {false, true}) {
    auto c = compare(verify::Against::source, "alice", deep);
    EXPECT_FALSE(c.equal());
    std::map<std::string, verify::MessageDifference> by_kind;
    for (auto& f : c.folders)
      for (auto& d : f.differences) {
        EXPECT_EQ(f.folder, "INBOX") << describe(c);
        EXPECT_FALSE(by_kind.count(d.kind)) << describe(c);
        by_kind[d.kind] = d;
      }
    ASSERT_EQ(by_kind.size(), 3u) << describe(c);
    EXPECT_EQ(by_kind["missing"].server_uid, added);
    EXPECT_EQ(by_kind["missing"].message_id, "<after-export-1@example.org>") << describe(c);
    EXPECT_EQ(by_kind["extra"].archive_uid, expunged);
    EXPECT_FALSE(by_kind["extra"].message_id.empty());
    EXPECT_EQ(by_kind["differs"].archive_uid, flagged);
    EXPECT_NE(by_kind["differs"].detail.find("$Reviewed"), std::string::npos) << by_kind["differs"].detail;
  }

  std::string stray =
      "From: Dave <dave@example.org>\r\nSubject: only on the target\r\n"
      "Message-ID: <target-only-1@example.org>\r\n\r\nstray\r\n";
  uint32_t stray_uid = server_->append("alice_copy", "INBOX", stray);
  auto target = compare(verify::Against::target, "alice_copy", false);
  bool found = false;
  for (auto& f : target.folders)
    for (auto& d : f.differences)
      if (d.kind == "extra") {
        EXPECT_EQ(d.server_uid, stray_uid);
        EXPECT_EQ(d.message_id, "<target-only-1@example.org>");
        found = true;
      }
  EXPECT_TRUE(found) << describe(target);
}

}  // namespace
}  // namespace imapstage

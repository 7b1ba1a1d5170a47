// verify against servers that change what they store, on the harness Dovecot:
// messages a server stored in a known rewritten form (as Cyrus and Courier
// do) are notes, a real change is a difference; a message expunged on the
// source after the import is a note; folders are compared by the mapping
// import used; an admin credential (master user, SASL PLAIN authzid) verifies
// a mailbox.
//
// Dovecot stores what it is sent. A rewrite is put on the target the way such
// a server would have stored it: the imported copy is replaced by the
// rewritten bytes (same flags and INTERNALDATE) and the import's record is
// pointed at the new UID, as import records the UID the server answers.
#include <fstream>
#include <map>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "common/server_rewrites.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"
#include "verify/compare.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::TempDir;
using testing::TestServer;

constexpr const char* kFlags = "\\Seen $Label1";
constexpr const char* kDate = "03-Feb-2024 10:20:30 +0100";

std::string message(const std::string& id, const std::string& subject, const std::string& body) {
  return "From: Carol <carol@example.org>\r\nTo: alice@example.org\r\nSubject: " + subject + "\r\nMessage-ID: <" + id +
         "@example.org>\r\nDate: Sat, 03 Feb 2024 10:20:30 +0100\r\n\r\n" + body;
}

// The archived messages of the source, and their copies on the target.
const std::string kEightBit = message("eightbit", "caf\xc3\xa9 cr\xc3\xa8me", "8-bit header\r\n");
const std::string kEightBitCyrus = message("eightbit", "cafXX crXXme", "8-bit header\r\n");
const std::string kNoFinalCrlf = message("nocrlf", "no final CRLF", "last line");
const std::string kNoFinalCrlfCourier = message("nocrlf", "no final CRLF", "last line\r\n");
const std::string kBareCr = message("barecr", "bare CR", "one\rtwo\r\n");
const std::string kBareCrChanged = message("barecr", "bare CR", "onetwo\r\n");
const std::string kVictim = message("victim", "changed for real", "the original text\r\n");
const std::string kVictimChanged = message("victim", "changed for real", "the original text!\r\n");

class InteropTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.seed = "none";
    o.users = {"alice"};
    o.target_users = {"alice_copy"};
    server_ = new TestServer(o);
    dir_ = new TempDir();
    archive_ = dir_->path() + "/archive";

    uids_ = new std::map<std::string, uint32_t>();
    auto& u = *uids_;
    u["plain"] = server_->append("alice", "INBOX", message("plain", "plain", "nothing special\r\n"), kFlags, kDate);
    u["eightbit"] = server_->append("alice", "INBOX", kEightBit, kFlags, kDate);
    u["nocrlf"] = server_->append("alice", "INBOX", kNoFinalCrlf, kFlags, kDate);
    u["barecr"] = server_->append("alice", "INBOX", kBareCr, kFlags, kDate);
    u["victim"] = server_->append("alice", "INBOX", kVictim, kFlags, kDate);
    for (int i = 1; i <= 3; ++i)
      u["p" + std::to_string(i)] = server_->append(
          "alice", "Projects", message("p" + std::to_string(i), "project " + std::to_string(i), "plan\r\n"), kFlags,
          kDate);
    for (int i = 1; i <= 2; ++i)
      u["n" + std::to_string(i)] =
          server_->append("alice", "Notes", message("n" + std::to_string(i), "note", "note\r\n"), kFlags, kDate);

    export_source();
    importing::ImportOptions i;
    i.archive_dir = archive_;
    i.endpoint = endpoint();
    i.credentials = credentials("alice_copy");
    i.map = {{"Projects", "Work"}};
    NullSink quiet;
    auto r = importing::run_import(i, quiet);
    ASSERT_TRUE(r.complete());
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
    delete uids_;
    server_ = nullptr;
    dir_ = nullptr;
    uids_ = nullptr;
  }

  static void export_source() {
    exporting::ExportOptions e;
    e.archive_dir = archive_;
    e.endpoint = endpoint();
    e.credentials = credentials("alice");
    NullSink quiet;
    auto s = exporting::run_export(e, quiet);
    ASSERT_TRUE(s.complete());
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
  static verify::Comparison compare(const std::string& folder, bool deep) {
    verify::CompareOptions o;
    o.archive_dir = archive_;
    o.endpoint = endpoint();
    o.credentials = credentials("alice_copy");
    o.against = verify::Against::target;
    o.deep = deep;
    o.include = {folder};
    NullSink quiet;
    return verify::compare_online(o, quiet);
  }
  static std::vector<std::string> cli(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"verify", "--archive", archive_, "--against", "target", "--host",
                                     server_->host(), "--port", std::to_string(server_->imaps_port()), "--ca-file",
                                     server_->ca_file()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // The import's record of source message `uid` of `folder`.
  static archive::AppendRecord record_of(const std::string& folder, uint32_t uid) {
    auto a = Archive::open(archive_, Archive::Mode::read);
    auto account = a->accounts().at(0);
    auto f = a->find_folder(account.id, folder);
    EXPECT_TRUE(f.has_value()) << folder;
    auto target = a->find_target("alice_copy@" + endpoint().address());
    EXPECT_TRUE(target.has_value());
    auto r = a->append({*target, {account.id, f->id, f->uidvalidity, uid}});
    EXPECT_TRUE(r.has_value()) << folder << " " << uid;
    return *r;
  }

  // Replaces the target's copy of INBOX message `uid` by `bytes` (same flags
  // and date) and points the import's record at it; returns the new UID.
  static uint32_t replace_on_target(uint32_t uid, const std::string& bytes) {
    auto r = record_of("INBOX", uid);
    server_->expunge("alice_copy", "INBOX", {r.target_uid});
    uint32_t fresh = server_->append("alice_copy", "INBOX", bytes, kFlags, kDate);
    r.target_uid = fresh;
    auto a = Archive::open(archive_, Archive::Mode::write);
    archive::Batch batch(*a);
    batch.put_append(r);
    batch.commit();
    return fresh;
  }

  static TestServer* server_;
  static TempDir* dir_;
  static std::string archive_;
  static std::map<std::string, uint32_t>* uids_;  // source UIDs by name
};

TestServer* InteropTest::server_ = nullptr;
TempDir* InteropTest::dir_ = nullptr;
std::string InteropTest::archive_;
std::map<std::string, uint32_t>* InteropTest::uids_ = nullptr;

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

// The differences and notes by source UID.
std::map<uint32_t, verify::MessageDifference> by_archive_uid(const verify::Comparison& c) {
  std::map<uint32_t, verify::MessageDifference> out;
  for (auto& f : c.folders)
    for (auto& d : f.differences) {
      EXPECT_FALSE(out.count(d.archive_uid)) << describe(c);
      out[d.archive_uid] = d;
    }
  return out;
}

nlohmann::json summary_event(const std::string& out) {
  nlohmann::json last;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t eol = out.find('\n', pos);
    if (eol == std::string::npos) eol = out.size();
    auto line = out.substr(pos, eol - pos);
    if (!line.empty()) {
      auto j = nlohmann::json::parse(line);
      if (j.value("event", "") == "summary") last = j;
    }
    pos = eol + 1;
  }
  return last;
}

TEST_F(InteropTest, KnownRewritesAreNotesRealChangesAreDifferences) {
  auto& u = *uids_;
  auto before = compare("INBOX", true);
  ASSERT_TRUE(before.equal()) << describe(before);
  EXPECT_EQ(before.notes(), 0u);

  // What the source holds (and the archive keeps) is what a Cyrus or Courier target would change.
  {
    auto a = Archive::open(archive_, Archive::Mode::read);
    auto account = a->accounts().at(0);
    auto inbox = a->find_folder(account.id, "INBOX");
    for (const char* name : {"eightbit", "nocrlf", "barecr"}) {
      auto m = a->message({account.id, inbox->id, inbox->uidvalidity, u[name]});
      ASSERT_TRUE(m.has_value()) << name;
      EXPECT_TRUE(at_risk(a->read_object(m->hash))) << name;
    }
  }
  uint32_t eightbit = replace_on_target(u["eightbit"], kEightBitCyrus);
  replace_on_target(u["nocrlf"], kNoFinalCrlfCourier);
  replace_on_target(u["barecr"], kBareCrChanged);
  uint32_t victim = replace_on_target(u["victim"], kVictimChanged);

  // Deep: every message fetched; three known rewrites, one real difference.
  auto deep = compare("INBOX", true);
  EXPECT_FALSE(deep.equal());
  auto diffs = by_archive_uid(deep);
  ASSERT_EQ(diffs.size(), 4u) << describe(deep);
  EXPECT_EQ(diffs[u["eightbit"]].kind, verify::kRewritten) << describe(deep);
  EXPECT_EQ(diffs[u["eightbit"]].rewrite, "8-bit header bytes replaced");
  EXPECT_EQ(diffs[u["eightbit"]].server_uid, eightbit);
  EXPECT_EQ(diffs[u["eightbit"]].message_id, "<eightbit@example.org>");
  EXPECT_EQ(diffs[u["nocrlf"]].kind, verify::kRewritten) << describe(deep);
  EXPECT_EQ(diffs[u["nocrlf"]].rewrite, "final CRLF added");
  EXPECT_EQ(diffs[u["barecr"]].kind, verify::kRewritten) << describe(deep);
  EXPECT_EQ(diffs[u["barecr"]].rewrite, "bare CR changed");
  EXPECT_EQ(diffs[u["victim"]].kind, verify::kDiffers) << describe(deep);
  EXPECT_EQ(diffs[u["victim"]].server_uid, victim);
  EXPECT_EQ(diffs[u["victim"]].rewrite, "");
  EXPECT_NE(diffs[u["victim"]].detail.find("SHA-256"), std::string::npos) << diffs[u["victim"]].detail;
  EXPECT_EQ(deep.count(verify::kRewritten), 3u);
  EXPECT_EQ(deep.failures(), 1u);

  // Without --deep only the messages whose size changed are fetched: the
  // header munge keeps the size and is not seen; the others are classified.
  auto shallow = compare("INBOX", false);
  diffs = by_archive_uid(shallow);
  ASSERT_EQ(diffs.size(), 3u) << describe(shallow);
  EXPECT_EQ(diffs[u["nocrlf"]].rewrite, "final CRLF added") << describe(shallow);
  EXPECT_EQ(diffs[u["barecr"]].kind, verify::kRewritten) << describe(shallow);
  EXPECT_EQ(diffs[u["victim"]].kind, verify::kDiffers) << describe(shallow);
  EXPECT_FALSE(shallow.equal());

  // The command line: exit 1 for the real difference, the rewrites shown apart.
  TempDir out;
  auto r = testing::run_imapstage(cli({"--user", "alice_copy", "--password-file", server_->password_file("alice_copy"),
                                       "--folder", "INBOX", "--deep", "--report", out.path() + "/r.json"}));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("rewritten: INBOX"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("8-bit header bytes replaced"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("differs: INBOX"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("DIFFERENT"), std::string::npos) << r.out;
  std::ifstream report_file(out.path() + "/r.json");
  auto report = nlohmann::json::parse(report_file);
  EXPECT_EQ(report["differences"], 1) << report.dump(2);
  EXPECT_EQ(report["rewritten"], 3) << report.dump(2);
  EXPECT_EQ(report["equal"], false);

  // The real difference undone: only the rewrites are left, and they are no failure.
  replace_on_target(u["victim"], kVictim);
  r = testing::run_imapstage(cli({"--user", "alice_copy", "--password-file", server_->password_file("alice_copy"),
                                  "--folder", "INBOX", "--deep", "--json"}));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  auto summary = summary_event(r.out);
  EXPECT_EQ(summary["equal"], true) << r.out;
  EXPECT_EQ(summary["differences"], 0) << r.out;
  EXPECT_EQ(summary["rewritten"], 3) << r.out;
  bool classes_listed = false;
  for (auto& f : summary["folders"])
    for (auto& d : f["differences"])
      if (d["kind"] == "rewritten" && d["rewrite"] == "final CRLF added" && d["note"] == true) classes_listed = true;
  EXPECT_TRUE(classes_listed) << summary.dump(2);
  r = testing::run_imapstage(cli({"--user", "alice_copy", "--password-file", server_->password_file("alice_copy"),
                                  "--folder", "INBOX", "--deep"}));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("EQUAL (notes: 3 stored by the server in a known rewritten form)"), std::string::npos) << r.out;
}

TEST_F(InteropTest, ExpungedOnTheSourceIsANoteAStrayIsNot) {
  auto& u = *uids_;
  // Projects went to Work on import (--map); verify compares them with each other.
  auto before = compare("Projects", true);
  ASSERT_EQ(before.folders.size(), 1u) << describe(before);
  EXPECT_EQ(before.folders[0].server_folder, "Work");
  EXPECT_EQ(before.folders[0].hashes_compared, 3u);
  ASSERT_TRUE(before.equal()) << describe(before);

  // The source expunges p2; the next export marks it expunged in the archive.
  auto p2_target = record_of("Projects", u["p2"]).target_uid;
  server_->expunge("alice", "Projects", {u["p2"]});
  export_source();
  {
    auto a = Archive::open(archive_, Archive::Mode::read);
    auto account = a->accounts().at(0);
    auto f = a->find_folder(account.id, "Projects");
    auto m = a->message({account.id, f->id, f->uidvalidity, u["p2"]});
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->state, archive::MessageState::expunged);
  }

  auto after = compare("Projects", true);
  auto diffs = by_archive_uid(after);
  ASSERT_EQ(diffs.size(), 1u) << describe(after);
  EXPECT_EQ(diffs[u["p2"]].kind, verify::kExpungedOnSource) << describe(after);
  EXPECT_EQ(diffs[u["p2"]].server_uid, p2_target);
  EXPECT_EQ(diffs[u["p2"]].message_id, "<p2@example.org>");
  EXPECT_TRUE(after.equal()) << describe(after);
  EXPECT_EQ(after.folders[0].archive_messages, 3u);
  EXPECT_EQ(after.folders[0].server_messages, 3u);

  auto r = testing::run_imapstage(cli({"--user", "alice_copy", "--password-file", server_->password_file("alice_copy"),
                                       "--folder", "Projects"}));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("expunged on source: Projects"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("EQUAL (notes: 1 expunged on the source, still on the target)"), std::string::npos) << r.out;

  // A message no import put there stays a difference.
  uint32_t stray = server_->append("alice_copy", "Work", message("stray", "stray", "stray\r\n"), kFlags, kDate);
  auto strayed = compare("Projects", false);
  EXPECT_FALSE(strayed.equal());
  bool found = false;
  for (auto& f : strayed.folders)
    for (auto& d : f.differences)
      if (d.kind == verify::kExtra) {
        EXPECT_EQ(d.server_uid, stray);
        EXPECT_NE(d.detail.find("not imported from this archive"), std::string::npos) << d.detail;
        found = true;
      }
  EXPECT_TRUE(found) << describe(strayed);
  EXPECT_EQ(strayed.count(verify::kExpungedOnSource), 1u) << describe(strayed);
  r = testing::run_imapstage(cli({"--user", "alice_copy", "--password-file", server_->password_file("alice_copy"),
                                  "--folder", "Projects"}));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
}

TEST_F(InteropTest, AdminCredentialsVerifyAMailbox) {
  TempDir dir;
  std::string master_file = dir.path() + "/master.secret";
  std::ofstream(master_file) << server_->master_password() << "\n";
  std::string wrong_file = dir.path() + "/wrong.secret";
  std::ofstream(wrong_file) << "not-the-password\n";
  const std::string target_name = "alice_copy@" + endpoint().address();

  for (const char* mode : {"master-user", "admin-plain"}) {
    SCOPED_TRACE(mode);
    std::string report = dir.path() + "/" + mode + ".json";
    auto r = testing::run_imapstage(
        cli({"--user", "alice_copy", "--auth-mode", mode, "--auth-user", server_->master_user(), "--master-separator",
             server_->master_separator(), "--password-file", master_file, "--folder", "Notes", "--deep", "--report",
             report}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    std::ifstream in(report);
    auto j = nlohmann::json::parse(in);
    EXPECT_EQ(j["server"], target_name) << j.dump(2);  // the mailbox, not the master login
    ASSERT_EQ(j["folders"].size(), 1u) << j.dump(2);
    EXPECT_EQ(j["folders"][0]["server_folder"], "Notes");
    EXPECT_EQ(j["folders"][0]["hashes_compared"], 2) << j.dump(2);
    EXPECT_EQ(j["equal"], true);
    EXPECT_EQ(r.out.find(server_->master_password()), std::string::npos);
    EXPECT_EQ(r.err.find(server_->master_password()), std::string::npos);
  }

  // The source, through the master user too.
  auto source = testing::run_imapstage(
      {"verify", "--archive", archive_, "--against", "source", "--host", server_->host(), "--port",
       std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", "alice", "--auth-mode",
       "master-user", "--auth-user", server_->master_user(), "--password-file", master_file, "--folder", "Notes",
       "--deep"});
  EXPECT_EQ(source.exit_code, 0) << source.out << source.err;
  EXPECT_NE(source.out.find("alice@" + endpoint().address()), std::string::npos) << source.out;

  // Master-user mode without the admin name is a usage error, before any connection.
  auto usage = testing::run_imapstage(
      cli({"--user", "alice_copy", "--auth-mode", "master-user", "--password-file", master_file}));
  EXPECT_EQ(usage.exit_code, 2) << usage.out << usage.err;
  EXPECT_NE(usage.err.find("--auth-user"), std::string::npos) << usage.err;

  // A refused master login is a refused login, named with the mode.
  auto refused = testing::run_imapstage(cli({"--user", "alice_copy", "--auth-mode", "master-user", "--auth-user",
                                             server_->master_user(), "--password-file", wrong_file, "--folder",
                                             "Notes"}));
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("master-user"), std::string::npos) << refused.err;
}

}  // namespace
}  // namespace imapstage

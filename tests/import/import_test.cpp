// Import against the harness Dovecot: export account A, import into account
// B, and compare both through the harness's own IMAP client.
#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <iterator>
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "archive-format/hash.h"
#include "archive-format/rebuild.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "verify/compare.h"
#include "verify/offline.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::TempDir;
using testing::TestServer;

// One message as a comparable string: hash, flags (sorted, no \Recent), INTERNALDATE.
std::string fingerprint(const nlohmann::json& m) {
  std::vector<std::string> flags;
  for (auto& f : m["flags"])
    if (f != "\\Recent") flags.push_back(f);
  std::sort(flags.begin(), flags.end());
  std::string out = m["sha256"].get<std::string>() + " " + std::to_string(m["internaldate_unix"].get<int64_t>());
  for (auto& f : flags) out += " " + f;
  return out;
}

// folder name (UTF-8) -> sorted fingerprints
std::map<std::string, std::vector<std::string>> mailbox_view(const nlohmann::json& summary) {
  std::map<std::string, std::vector<std::string>> out;
  for (auto& f : summary["folders"]) {
    if (!f.contains("messages") || !f["messages"].is_array()) continue;
    auto& v = out[f["name"].get<std::string>()];
    for (auto& m : f["messages"]) v.push_back(fingerprint(m));
    std::sort(v.begin(), v.end());
  }
  return out;
}

// Every source folder's messages are on the target, exactly once each, with
// the same bytes, flags and INTERNALDATE. `renames` maps source to target names.
void expect_same_mail(const nlohmann::json& source, const nlohmann::json& target,
                      const std::map<std::string, std::string>& renames = {}) {
  auto src = mailbox_view(source);
  auto dst = mailbox_view(target);
  size_t compared = 0;
  for (auto& [name, messages] : src) {
    if (messages.empty()) continue;
    std::string target_name = renames.count(name) ? renames.at(name) : name;
    ASSERT_TRUE(dst.count(target_name)) << "folder " << target_name << " missing on the target";
    EXPECT_EQ(dst[target_name], messages) << "folder " << name << " -> " << target_name;
    compared += messages.size();
  }
  size_t target_total = 0;
  for (auto& [name, messages] : dst) target_total += messages.size();
  EXPECT_EQ(target_total, compared) << "the target holds messages the source does not (duplicates?)";
  EXPECT_GT(compared, 50u);
}

class ImportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.users = {"alice", "bob"};
    server_ = new TestServer(o);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  static imap::Endpoint endpoint() { return server_->endpoint(); }

  static void export_user(const std::string& user, const std::string& archive_dir) {
    exporting::ExportOptions o;
    o.archive_dir = archive_dir;
    o.endpoint = endpoint();
    o.credentials.user = user;
    o.credentials.secret = server_->password(user);
    NullSink quiet;
    auto s = exporting::run_export(o, quiet);
    ASSERT_TRUE(s.complete());
  }

  static importing::ImportOptions import_options(const std::string& archive_dir, const std::string& target_user) {
    importing::ImportOptions o;
    o.archive_dir = archive_dir;
    o.endpoint = endpoint();
    o.credentials.user = target_user;
    o.credentials.secret = server_->password(target_user);
    o.retry.backoff = std::chrono::milliseconds(50);
    return o;
  }

  std::vector<std::string> import_args(const std::string& archive_dir, const std::string& target_user) {
    return {"import", "--archive", archive_dir, "--host", server_->host(), "--port",
            std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", target_user,
            "--password-file", server_->password_file(target_user), "--json"};
  }

  static TestServer* server_;
};

TestServer* ImportTest::server_ = nullptr;

TEST_F(ImportTest, ImportEqualsSourceAndRerunAppendsNothing) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  export_user("alice", archive_dir);
  server_->add_user("alice2");

  RecordingSink events;
  auto first = importing::run_import(import_options(archive_dir, "alice2"), events);
  EXPECT_TRUE(first.complete());
  auto source = server_->summary("alice");
  auto target = server_->summary("alice2");
  expect_same_mail(source, target);
  EXPECT_GT(first.total(&importing::ImportFolderResult::appended), 50u);

  // Subscriptions carried over.
  std::set<std::string> subscribed_src, subscribed_dst;
  for (auto& f : source["folders"])
    if (f["subscribed"].get<bool>()) subscribed_src.insert(f["name"]);
  for (auto& f : target["folders"])
    if (f["subscribed"].get<bool>()) subscribed_dst.insert(f["name"]);
  for (auto& name : subscribed_src) EXPECT_TRUE(subscribed_dst.count(name)) << name << " not subscribed";

  // The mapping is reported.
  bool mapping_seen = false;
  for (auto& e : events.events())
    if (e["event"] == "mapping") mapping_seen = true;
  EXPECT_TRUE(mapping_seen);

  // Each append is recorded with its target UID.
  {
    auto a = Archive::open(archive_dir, Archive::Mode::read);
    auto target_id = a->find_target("alice2@" + server_->host() + ":" + std::to_string(server_->imaps_port()));
    ASSERT_TRUE(target_id);
    size_t done = 0;
    a->for_each_append(*target_id, [&](const archive::AppendRecord& r) {
      EXPECT_EQ(r.state, archive::AppendState::done);
      EXPECT_NE(r.target_uid, 0u);
      ++done;
      return true;
    });
    EXPECT_EQ(done, first.total(&importing::ImportFolderResult::appended));
  }

  NullSink quiet;
  auto again = importing::run_import(import_options(archive_dir, "alice2"), quiet);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(again.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::already_there),
            first.total(&importing::ImportFolderResult::appended));
  expect_same_mail(source, server_->summary("alice2"));
}

// An interrupted import can leave a subfolder created before its parent;
// Dovecot then lists the parent as "\Noselect \HasChildren". The next run
// creates the parent and imports everything.
TEST_F(ImportTest, AParentListedAsNoselectAfterAnInterruptedRunIsCreated) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  export_user("alice", archive_dir);
  server_->add_user("alice6");
  server_->run({"create", "--", server_->dir(), "alice6", "Archive/2019"});
  bool listed_noselect = false;
  auto before = server_->summary("alice6", false);
  for (auto& f : before["folders"]) {
    if (f["name"] != "Archive") continue;
    for (auto& a : f["attributes"]) listed_noselect |= a == "\\Noselect";
  }
  ASSERT_TRUE(listed_noselect) << "the harness Dovecot should list Archive as \\Noselect: " << before.dump();

  NullSink quiet;
  auto s = importing::run_import(import_options(archive_dir, "alice6"), quiet);
  EXPECT_TRUE(s.complete());
  expect_same_mail(server_->summary("alice"), server_->summary("alice6"));
}

// Folders side by side: three connections give the same target as one, and
// the no-change re-run (from the append records read in one pass) appends
// nothing and counts everything as already there.
TEST_F(ImportTest, ConnectionsSideBySideImportTheSameAndRerunAppendsNothing) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  export_user("alice", archive_dir);
  server_->add_user("sidebyside");

  RecordingSink events;
  auto o = import_options(archive_dir, "sidebyside");
  o.connections = 3;
  o.append_batch = 7;  // many groups per folder
  auto first = importing::run_import(o, events);
  EXPECT_TRUE(first.complete());
  EXPECT_EQ(first.reconnects, 0);
  auto source = server_->summary("alice");
  expect_same_mail(source, server_->summary("sidebyside"));
  // Three sessions logged in: each folder's events name one folder, and every folder was done once.
  std::map<std::string, int> done;
  for (auto& e : events.events())
    if (e["event"] == "folder_done") ++done[e["folder"].get<std::string>()];
  EXPECT_EQ(done.size(), first.folders.size());
  for (auto& [folder, n] : done) EXPECT_EQ(n, 1) << folder;

  o.connections = 2;
  NullSink quiet;
  auto again = importing::run_import(o, quiet);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(again.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::reconciled), 0u);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::already_there),
            first.total(&importing::ImportFolderResult::appended));
  expect_same_mail(source, server_->summary("sidebyside"));
}

// Messages are recorded as in flight a window ahead of sending them; an import
// stopped between groups (a batch's deadline) forgets what it recorded but
// never sent, so the next run sends it without reconciling and duplicates nothing.
TEST_F(ImportTest, StoppedImportLeavesNothingInFlightAndResumesWithoutDuplicates) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  export_user("alice", archive_dir);
  server_->add_user("stopped");

  auto o = import_options(archive_dir, "stopped");
  o.append_batch = 5;
  int asked = 0;
  o.cancelled = [&asked] { return ++asked > 6; };
  NullSink quiet;
  try {
    importing::run_import(o, quiet);
    FAIL() << "the import was not stopped";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::interrupted) << e.what();
  }
  size_t done = 0;
  {
    auto a = Archive::open(archive_dir, Archive::Mode::read);
    auto target_id = a->find_target("stopped@" + server_->host() + ":" + std::to_string(server_->imaps_port()));
    ASSERT_TRUE(target_id);
    a->for_each_append(*target_id, [&](const archive::AppendRecord& r) {
      EXPECT_EQ(r.state, archive::AppendState::done) << "UID " << r.key.source.uid << " left in flight";
      ++done;
      return true;
    });
  }
  EXPECT_GT(done, 0u);

  o.cancelled = nullptr;
  auto rest = importing::run_import(o, quiet);
  EXPECT_TRUE(rest.complete());
  EXPECT_EQ(rest.total(&importing::ImportFolderResult::reconciled), 0u);
  EXPECT_EQ(rest.total(&importing::ImportFolderResult::already_there), done);
  expect_same_mail(server_->summary("alice"), server_->summary("stopped"));
}

TEST_F(ImportTest, NewMailAndFlagChangesReachTheTarget) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  server_->add_user("erin");
  server_->add_user("erin2");
  uint32_t u1 = server_->append("erin", "INBOX", "Subject: a\r\nMessage-ID: <a@erin>\r\n\r\nA\r\n", "", "");
  server_->append("erin", "INBOX", "Subject: b\r\nMessage-ID: <b@erin>\r\n\r\nB\r\n", "\\Seen", "");
  export_user("erin", archive_dir);
  NullSink quiet;
  auto first = importing::run_import(import_options(archive_dir, "erin2"), quiet);
  EXPECT_EQ(first.total(&importing::ImportFolderResult::appended), 2u);

  server_->append("erin", "INBOX", "Subject: c\r\nMessage-ID: <c@erin>\r\n\r\nC\r\n", "\\Flagged", "");
  server_->store("erin", "INBOX", u1, "+FLAGS", "\\Answered $Label2");
  export_user("erin", archive_dir);
  auto second = importing::run_import(import_options(archive_dir, "erin2"), quiet);
  EXPECT_TRUE(second.complete());
  EXPECT_EQ(second.total(&importing::ImportFolderResult::appended), 1u);
  EXPECT_EQ(second.total(&importing::ImportFolderResult::flags_updated), 1u);
  auto src = server_->summary("erin");
  auto dst = server_->summary("erin2");
  auto sv = mailbox_view(src), dv = mailbox_view(dst);
  EXPECT_EQ(sv["INBOX"], dv["INBOX"]);
  EXPECT_EQ(sv["INBOX"].size(), 3u);
}

// A re-run reads and sends nothing for a folder whose archived messages and
// target folder are both as an earlier import left them (import marks), and
// only for such a folder: a change on either side, a filter or a rebuilt
// index means the folder is read again.
TEST_F(ImportTest, AReRunSkipsOnlyFoldersNeitherSideChanged) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  server_->add_user("gina");
  server_->add_user("gina2");
  server_->run({"create", server_->dir(), "gina", "Work"});
  uint32_t a = server_->append("gina", "INBOX", "Subject: a\r\nMessage-ID: <a@gina>\r\n\r\nA\r\n", "", "");
  server_->append("gina", "INBOX", "Subject: b\r\nMessage-ID: <b@gina>\r\n\r\nB\r\n", "\\Seen", "");
  server_->append("gina", "Work", "Subject: w\r\nMessage-ID: <w@gina>\r\n\r\nW\r\n", "", "");
  export_user("gina", archive_dir);
  NullSink quiet;
  // Folder name -> unchanged, and the run's totals.
  auto run = [&](importing::ImportOptions o) {
    auto s = importing::run_import(o, quiet);
    EXPECT_TRUE(s.complete());
    std::map<std::string, bool> unchanged;
    for (auto& f : s.folders) unchanged[f.source] = f.unchanged;
    return std::pair{unchanged, s};
  };
  using Unchanged = std::map<std::string, bool>;
  using R = importing::ImportFolderResult;
  auto [first, s1] = run(import_options(archive_dir, "gina2"));
  EXPECT_EQ(first, (Unchanged{{"INBOX", false}, {"Work", false}}));
  EXPECT_EQ(s1.total(&R::appended), 3u);

  auto [again, s2] = run(import_options(archive_dir, "gina2"));
  EXPECT_EQ(again, (Unchanged{{"INBOX", true}, {"Work", true}}));
  EXPECT_EQ(s2.total(&R::appended), 0u);
  EXPECT_EQ(s2.total(&R::already_there), 3u);
  EXPECT_EQ(s2.total(&R::source_messages), 3u);

  // The target changed (a message expunged there): that folder is read again, the other not.
  auto target_work = mailbox_view(server_->summary("gina2"))["Work"];
  ASSERT_EQ(target_work.size(), 1u);
  uint32_t target_uid = 0;
  auto target_summary = server_->summary("gina2");
  for (auto& f : target_summary["folders"])
    if (f["name"] == "Work") target_uid = f["messages"][0]["uid"].get<uint32_t>();
  server_->expunge("gina2", "Work", {target_uid});
  auto [target_changed, s3] = run(import_options(archive_dir, "gina2"));
  EXPECT_EQ(target_changed, (Unchanged{{"INBOX", true}, {"Work", false}}));
  EXPECT_EQ(s3.total(&R::appended), 0u);  // as without marks: what was delivered once is not sent again
  auto [settled, s4] = run(import_options(archive_dir, "gina2"));
  EXPECT_EQ(settled, (Unchanged{{"INBOX", true}, {"Work", true}}));

  // An append record put in flight (what a crash mid-APPEND leaves) takes its
  // folder's mark with it: the next run reconciles it.
  {
    auto arch = Archive::open(archive_dir, Archive::Mode::write);
    std::optional<archive::AppendRecord> one;
    arch->for_each_append(*arch->find_target("gina2@" + server_->host() + ":" + std::to_string(server_->imaps_port())),
                          [&](const archive::AppendRecord& r) {
                            auto f = arch->folder(r.key.source.account_id, r.key.source.folder_id);
                            if (f && f->name_raw == "INBOX") one = r;
                            return !one;
                          });
    ASSERT_TRUE(one);
    one->state = archive::AppendState::in_flight;
    archive::Batch batch(*arch);
    batch.put_append(*one);
    batch.commit();
  }
  auto [in_flight, s4b] = run(import_options(archive_dir, "gina2"));
  EXPECT_EQ(in_flight, (Unchanged{{"INBOX", false}, {"Work", true}}));
  EXPECT_EQ(s4b.total(&R::reconciled), 1u);
  EXPECT_EQ(s4b.total(&R::appended), 0u);

  // The source changed: new mail in INBOX, a flag in Work.
  server_->append("gina", "INBOX", "Subject: c\r\nMessage-ID: <c@gina>\r\n\r\nC\r\n", "", "");
  export_user("gina", archive_dir);
  auto [new_mail, s5] = run(import_options(archive_dir, "gina2"));
  EXPECT_EQ(new_mail, (Unchanged{{"INBOX", false}, {"Work", true}}));
  EXPECT_EQ(s5.total(&R::appended), 1u);
  server_->store("gina", "INBOX", a, "+FLAGS", "\\Answered");
  export_user("gina", archive_dir);
  auto [flags, s6] = run(import_options(archive_dir, "gina2"));
  EXPECT_EQ(flags, (Unchanged{{"INBOX", false}, {"Work", true}}));
  EXPECT_EQ(s6.total(&R::flags_updated), 1u);
  auto sv = mailbox_view(server_->summary("gina")), dv = mailbox_view(server_->summary("gina2"));
  EXPECT_EQ(sv["INBOX"], dv["INBOX"]);

  // A filtered run neither relies on marks nor writes them.
  auto filtered = import_options(archive_dir, "gina2");
  filtered.policy.filter.since = 0;
  auto [with_filter, s7] = run(filtered);
  EXPECT_EQ(with_filter, (Unchanged{{"INBOX", false}, {"Work", false}}));
  auto [after_filter, s8] = run(import_options(archive_dir, "gina2"));
  EXPECT_EQ(after_filter, (Unchanged{{"INBOX", true}, {"Work", true}}));

  // A rebuilt index has no marks: every folder is read once more, nothing sent.
  archive::rebuild_index(archive_dir, Archive::Options{});
  auto [rebuilt, s9] = run(import_options(archive_dir, "gina2"));
  EXPECT_EQ(rebuilt, (Unchanged{{"INBOX", false}, {"Work", false}}));
  EXPECT_EQ(s9.total(&R::appended), 0u);
  EXPECT_EQ(s9.total(&R::already_there), 4u);
}

TEST_F(ImportTest, SyncExpungesIsOptInAndRemovesOnlyWhatTheSourceExpunged) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  server_->add_user("frank");
  server_->add_user("frank2");
  uint32_t gone = server_->append("frank", "INBOX", "Subject: a\r\nMessage-ID: <a@frank>\r\n\r\nA\r\n", "", "");
  server_->append("frank", "INBOX", "Subject: b\r\nMessage-ID: <b@frank>\r\n\r\nB\r\n", "\\Seen", "");
  // On the target already, not from this archive: never touched.
  server_->append("frank2", "INBOX", "Subject: own\r\nMessage-ID: <own@frank2>\r\n\r\nO\r\n", "", "");
  export_user("frank", archive_dir);
  NullSink quiet;
  importing::run_import(import_options(archive_dir, "frank2"), quiet);
  server_->expunge("frank", "INBOX", {gone});
  export_user("frank", archive_dir);

  auto kept = importing::run_import(import_options(archive_dir, "frank2"), quiet);
  EXPECT_EQ(kept.total(&importing::ImportFolderResult::expunged), 0u);
  EXPECT_EQ(mailbox_view(server_->summary("frank2"))["INBOX"].size(), 3u);

  auto options = import_options(archive_dir, "frank2");
  options.sync_expunges = true;
  auto synced = importing::run_import(options, quiet);
  EXPECT_TRUE(synced.complete());
  EXPECT_EQ(synced.total(&importing::ImportFolderResult::expunged), 1u);
  auto target = mailbox_view(server_->summary("frank2"))["INBOX"];
  ASSERT_EQ(target.size(), 2u);
  auto source = mailbox_view(server_->summary("frank"))["INBOX"];
  ASSERT_EQ(source.size(), 1u);
  EXPECT_NE(std::find(target.begin(), target.end(), source[0]), target.end());
  // Again: nothing more to expunge, nothing appended.
  auto again = importing::run_import(options, quiet);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::expunged), 0u);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(mailbox_view(server_->summary("frank2"))["INBOX"].size(), 2u);
}

TEST_F(ImportTest, SpecialUseFoldersMapToTheTargetsNames) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  export_user("bob", archive_dir);
  server_->add_user("bob_de");
  server_->run({"create", server_->dir(), "bob_de", "Gesendet"});
  server_->run({"create", server_->dir(), "bob_de", "Papierkorb"});
  RecordingSink events;
  auto s = importing::run_import(import_options(archive_dir, "bob_de"), events);
  EXPECT_TRUE(s.complete());
  for (auto& f : s.folders) {
    if (f.source == "Sent") {
      EXPECT_EQ(f.target, "Gesendet");
      EXPECT_EQ(f.reason, "special-use \\Sent");
    }
    if (f.source == "Trash") {
      EXPECT_EQ(f.target, "Papierkorb");
    }
  }
  auto target = server_->summary("bob_de");
  for (auto& f : target["folders"]) {
    EXPECT_NE(f["name"], "Sent") << "a Sent folder was created although the target has Gesendet";
    EXPECT_NE(f["name"], "Trash");
  }
  expect_same_mail(server_->summary("bob"), target, {{"Sent", "Gesendet"}, {"Trash", "Papierkorb"}});
}

TEST_F(ImportTest, KilledImportResumesWithoutDuplicates) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  export_user("alice", archive_dir);
  auto source = server_->summary("alice");
  int kills = 0;
  for (int trial = 0; trial < 3; ++trial) {
    std::string user = "kill" + std::to_string(trial);
    server_->add_user(user);
    size_t k = 1 + 3 * trial;
    auto killed = testing::run_imapstage(import_args(archive_dir, user), {}, std::nullopt, [k](const std::string& out) {
      size_t n = 0, pos = 0;
      while ((pos = out.find("\"progress\"", pos)) != std::string::npos) ++n, ++pos;
      return n >= k;
    });
    if (killed.signal == SIGKILL) ++kills;
    auto rerun = testing::run_imapstage(import_args(archive_dir, user));
    ASSERT_EQ(rerun.exit_code, 0) << rerun.err;
    expect_same_mail(source, server_->summary(user));
  }
  EXPECT_GE(kills, 2);
}

TEST_F(ImportTest, CorruptedObjectIsNamedAndTheRestImports) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  export_user("bob", archive_dir);
  // Damage one object that exactly one message refers to.
  uint32_t victim_uid = 0;
  std::string victim_hash;
  {
    auto a = Archive::open(archive_dir, Archive::Mode::read);
    std::map<std::string, int> refs;
    a->for_each_message([&](const archive::MessageRecord& m) {
      ++refs[archive::to_hex(m.hash)];
      return true;
    });
    auto account = a->find_account("bob@" + server_->host());
    auto inbox = a->find_folder(account->id, "INBOX");
    a->for_each_message(account->id, inbox->id, inbox->uidvalidity, [&](const archive::MessageRecord& m) {
      if (refs[archive::to_hex(m.hash)] != 1 || m.size < 2000) return true;
      victim_uid = m.key.uid;
      victim_hash = archive::to_hex(m.hash);
      return false;
    });
    ASSERT_NE(victim_uid, 0u);
    auto loc = a->object(*archive::hash_from_hex(victim_hash));
    ASSERT_TRUE(loc);
    std::fstream pack(a->pack_path(loc->pack_id), std::ios::in | std::ios::out | std::ios::binary);
    uint64_t at = loc->offset + loc->record_size - 12;
    pack.seekg(static_cast<std::streamoff>(at));
    char c = 0;
    pack.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    pack.seekp(static_cast<std::streamoff>(at));
    pack.write(&c, 1);
  }
  server_->add_user("bob_c");
  auto r = testing::run_imapstage(import_args(archive_dir, "bob_c"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("UID " + std::to_string(victim_uid)), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(victim_hash), std::string::npos) << r.err;
  std::string last = r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
  auto summary = nlohmann::json::parse(last);
  EXPECT_EQ(summary["failed_messages"], 1);
  // Everything else arrived.
  auto src = mailbox_view(server_->summary("bob"));
  auto dst = mailbox_view(server_->summary("bob_c"));
  size_t src_total = 0, dst_total = 0;
  for (auto& [n, v] : src) src_total += v.size();
  for (auto& [n, v] : dst) dst_total += v.size();
  EXPECT_EQ(dst_total + 1, src_total);
}

TEST_F(ImportTest, TargetFolderRenumberedOrRecreatedNeverDuplicatesNorLoses) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  export_user("bob", archive_dir);
  server_->add_user("bob_uv");
  NullSink quiet;
  auto first = importing::run_import(import_options(archive_dir, "bob_uv"), quiet);
  ASSERT_TRUE(first.complete());
  auto source = server_->summary("bob");
  auto folder_of = [](const importing::ImportSummary& s, const std::string& name) {
    for (auto& f : s.folders)
      if (f.source == name) return f;
    return importing::ImportFolderResult{};
  };
  size_t inbox = folder_of(first, "INBOX").appended;
  size_t junk = folder_of(first, "Junk").appended;
  ASSERT_GT(inbox, 0u);
  ASSERT_GT(junk, 0u);

  // INBOX gets a new UIDVALIDITY with its messages kept (as after a server
  // rebuilds its index); Junk is deleted and recreated empty.
  server_->run({"bump-uidvalidity", server_->dir(), "bob_uv", "INBOX"});
  server_->run({"delete-folder", server_->dir(), "bob_uv", "Junk"});
  server_->run({"create", server_->dir(), "bob_uv", "Junk"});

  auto again = importing::run_import(import_options(archive_dir, "bob_uv"), quiet);
  EXPECT_TRUE(again.complete());
  // INBOX: every message found again by its bytes, none appended.
  EXPECT_EQ(folder_of(again, "INBOX").appended, 0u);
  EXPECT_EQ(folder_of(again, "INBOX").reconciled, inbox);
  // Junk: every message appended again, into the new folder.
  EXPECT_EQ(folder_of(again, "Junk").appended, junk);
  expect_same_mail(source, server_->summary("bob_uv"));

  // And the records now name the new UIDVALIDITY: a third run does nothing.
  auto third = importing::run_import(import_options(archive_dir, "bob_uv"), quiet);
  EXPECT_EQ(third.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(third.total(&importing::ImportFolderResult::reconciled), 0u);
  expect_same_mail(source, server_->summary("bob_uv"));
}

// An import of the larger half of the messages below a subfolder: only
// those arrive, all below it, and verify against the target finds it equal,
// naming what the import's filter left out as notes.
TEST_F(ImportTest, FilteredImportUnderASubfolderVerifiesEqualWithTheSelectionNoted) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  export_user("alice", archive_dir);
  server_->add_user("alice5");
  std::vector<uint64_t> sizes;
  {
    auto a = Archive::open(archive_dir, Archive::Mode::read);
    a->for_each_message([&](const archive::MessageRecord& m) {
      if (m.state == archive::MessageState::present) sizes.push_back(m.size);
      return true;
    });
  }
  std::sort(sizes.begin(), sizes.end());
  uint64_t threshold = sizes[sizes.size() / 2];
  size_t selected = std::count_if(sizes.begin(), sizes.end(), [&](uint64_t n) { return n > threshold; });
  ASSERT_GT(selected, 0u);
  ASSERT_LT(selected, sizes.size());

  auto o = import_options(archive_dir, "alice5");
  o.policy.subfolder.path = {"Old", "server"};
  o.policy.filter.larger = threshold;
  NullSink quiet;
  auto s = importing::run_import(o, quiet);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(s.total(&importing::ImportFolderResult::appended), selected);
  EXPECT_EQ(s.total(&importing::ImportFolderResult::filtered_out), sizes.size() - selected);

  size_t on_target = 0;
  auto target_summary = server_->summary("alice5", false);
  for (auto& f : target_summary["folders"]) {
    std::string name = f["name"];
    size_t n = f["exists"].is_number() ? f["exists"].get<size_t>() : 0;
    if (n) {
      EXPECT_TRUE(name.starts_with("Old/server/")) << name;
    }
    on_target += n;
  }
  EXPECT_EQ(on_target, selected) << target_summary.dump(1).substr(0, 3000);

  verify::CompareOptions c;
  c.archive_dir = archive_dir;
  c.endpoint = endpoint();
  c.credentials.user = "alice5";
  c.credentials.secret = server_->password("alice5");
  c.against = verify::Against::target;
  c.deep = true;
  auto cmp = verify::compare_online(c, quiet);
  EXPECT_TRUE(cmp.equal()) << cmp.to_json().dump(1);
  EXPECT_EQ(cmp.count(verify::kFilteredOut), sizes.size() - selected);
  EXPECT_EQ(cmp.count(verify::kNotImported), 0u);
  EXPECT_EQ(cmp.selection["filter"]["larger"], threshold);
}

// Bodies of kStreamedObject bytes or more are never held whole: export
// spools them, import streams them from the pack, verify hashes them as they
// come. What arrives must still be exactly what was sent, stored once, and
// a re-run must send nothing.
TEST_F(ImportTest, MessagesTooLargeToHoldArriveExactlyThroughExportImportAndVerify) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  server_->add_user("huge1");
  server_->add_user("huge2");
  auto text = [](size_t size, const std::string& subject) {
    std::string m = "From: a@example.org\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject +
                    "@example.org>\r\n\r\n";
    for (size_t i = 0; m.size() < size; ++i) m += "line " + std::to_string(i * 7919 % 100003) + " of " + subject + "\r\n";
    return m;
  };
  std::string a = text(6u << 20, "a");
  a.resize(a.size() - 2);  // no final CRLF: a known server rewrite risk, so import fetches it back to compare
  std::string b = text(5u << 20, "b");
  std::string small = text(3000, "small");
  server_->append("huge1", "INBOX", a);
  server_->append("huge1", "INBOX", small);
  server_->append("huge1", "Archive", b);
  server_->append("huge1", "Archive", a);  // the same bytes again: stored once
  auto source = server_->summary("huge1");
  std::map<std::string, std::multiset<std::string>> source_hashes;
  for (auto& f : source["folders"])
    if (f["messages"].is_array())
      for (auto& m : f["messages"]) source_hashes[f["name"]].insert(m["sha256"].get<std::string>());
  ASSERT_EQ(source_hashes["INBOX"].size(), 2u);
  ASSERT_EQ(source_hashes["Archive"].size(), 2u);

  // A session told to stream hands the large bodies to sinks, whole and in order.
  {
    struct Hashing final : imap::BodySink {
      void write(std::string_view piece) override { sha.update(piece), bytes += piece.size(); }
      archive::Sha256 sha;
      uint64_t bytes = 0;
    };
    auto session = imap::Session::connect(endpoint());
    session->login({"huge1", server_->password("huge1")});
    session->stream_large_bodies({archive::kStreamedObject, [](uint64_t) -> std::unique_ptr<imap::BodySink> {
                                    return std::make_unique<Hashing>();
                                  }});
    session->select("INBOX");
    size_t streamed = 0, held = 0;
    session->fetch_messages({{1, 0}}, [&](imap::FetchedMessage&& m) {
      if (m.large_body) {
        ++streamed;
        auto& h = static_cast<Hashing&>(*m.large_body);
        EXPECT_TRUE(m.body.empty());
        EXPECT_EQ(h.bytes, a.size());
        EXPECT_EQ(m.body_size, a.size());
        EXPECT_EQ(h.sha.finish(), archive::sha256(a));
      } else {
        ++held;
        EXPECT_EQ(m.body, small);
      }
    });
    EXPECT_EQ(streamed, 1u);
    EXPECT_EQ(held, 1u);
  }

  exporting::ExportOptions eo;
  eo.archive_dir = archive_dir;
  eo.endpoint = endpoint();
  eo.credentials.user = "huge1";
  eo.credentials.secret = server_->password("huge1");
  NullSink quiet;
  auto exported = exporting::run_export(eo, quiet);
  ASSERT_TRUE(exported.complete());
  EXPECT_EQ(exported.total(&exporting::FolderResult::new_messages), 4u);
  EXPECT_EQ(exported.total(&exporting::FolderResult::bytes_deduplicated), a.size());
  {
    auto ar = Archive::open(archive_dir, Archive::Mode::read);
    size_t objects = 0;
    ar->for_each_object([&](const archive::Hash&, const archive::ObjectLocation&) { return ++objects, true; });
    EXPECT_EQ(objects, 3u);
    EXPECT_EQ(ar->read_object(archive::sha256(a)), a);
    EXPECT_EQ(ar->read_object(archive::sha256(b)), b);
    // Nothing but packs under packs/ (the spools had no name and are gone).
    for (auto& e : std::filesystem::recursive_directory_iterator(archive_dir + "/packs"))
      if (!e.is_directory()) EXPECT_EQ(e.path().extension(), ".pack") << e.path();
  }
  auto offline = verify::verify_offline({.archive_dir = archive_dir}, quiet);
  EXPECT_TRUE(offline.ok()) << offline.to_json().dump(1);

  auto first = importing::run_import(import_options(archive_dir, "huge2"), quiet);
  EXPECT_TRUE(first.complete());
  EXPECT_EQ(first.total(&importing::ImportFolderResult::appended), 4u);
  EXPECT_EQ(first.total(&importing::ImportFolderResult::bytes_appended), 2 * a.size() + b.size() + small.size());
  EXPECT_EQ(first.total(&importing::ImportFolderResult::altered), 0u);
  std::map<std::string, std::multiset<std::string>> target_hashes;
  auto target = server_->summary("huge2");
  for (auto& f : target["folders"])
    if (f["messages"].is_array())
      for (auto& m : f["messages"]) target_hashes[f["name"]].insert(m["sha256"].get<std::string>());
  EXPECT_EQ(target_hashes, source_hashes);
  auto again = importing::run_import(import_options(archive_dir, "huge2"), quiet);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::already_there), 4u);

  for (auto [user, against] : {std::pair{"huge1", verify::Against::source}, std::pair{"huge2", verify::Against::target}}) {
    verify::CompareOptions c;
    c.archive_dir = archive_dir;
    c.endpoint = endpoint();
    c.credentials.user = user;
    c.credentials.secret = server_->password(user);
    c.against = against;
    c.deep = true;
    auto cmp = verify::compare_online(c, quiet);
    EXPECT_TRUE(cmp.equal()) << user << ": " << cmp.to_json().dump(1);
  }
}

TEST_F(ImportTest, DryRunShowsMappingAndWritesNothing) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  export_user("bob", archive_dir);
  server_->add_user("bob_dry");
  // Every file of the archive but the lock files, with its bytes.
  auto snapshot = [&] {
    std::map<std::string, std::string> files;
    for (auto& e : std::filesystem::recursive_directory_iterator(archive_dir)) {
      if (!e.is_regular_file()) continue;
      std::string name = e.path().filename().string();
      if (name == "lock" || name == "lock.mdb") continue;
      std::ifstream in(e.path(), std::ios::binary);
      std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      files[std::filesystem::relative(e.path(), archive_dir).string()] = archive::to_hex(archive::sha256(bytes));
    }
    return files;
  };
  auto before = snapshot();
  ASSERT_FALSE(before.empty());
  size_t runs_before = Archive::open(archive_dir, Archive::Mode::read)->runs().size();

  auto o = import_options(archive_dir, "bob_dry");
  o.dry_run = true;
  NullSink quiet;
  auto s = importing::run_import(o, quiet);
  EXPECT_GT(s.total(&importing::ImportFolderResult::to_append), 50u);
  EXPECT_EQ(s.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_TRUE(mailbox_view(server_->summary("bob_dry"))["INBOX"].empty());
  auto a = Archive::open(archive_dir, Archive::Mode::read);
  EXPECT_FALSE(a->find_target("bob_dry@" + server_->host() + ":" + std::to_string(server_->imaps_port())));
  EXPECT_EQ(a->runs().size(), runs_before);
  EXPECT_EQ(snapshot(), before);

  // The command line prints the mapping it would use.
  auto r = testing::run_imapstage({"import", "--archive", archive_dir, "--host", server_->host(), "--port",
                                   std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user",
                                   "bob_dry", "--password-file", server_->password_file("bob_dry"), "--dry-run",
                                   "--map", "Projects=Old Projects"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Old Projects"), std::string::npos) << r.out;
  EXPECT_EQ(snapshot(), before);
  EXPECT_TRUE(mailbox_view(server_->summary("bob_dry"))["INBOX"].empty());
}

}  // namespace
}  // namespace imapstage

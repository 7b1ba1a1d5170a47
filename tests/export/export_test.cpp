// Export against the harness Dovecot: completeness, incremental re-runs,
// interruption, errors and TLS. The server's view comes from the harness
// (its own IMAP client), never from imapstage's code.
#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "common/error.h"
#include "common/message_filter.h"
#include "export/exporter.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"
#include "verify/compare.h"
#include "verify/offline.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::TempDir;
using testing::TestServer;

std::set<std::string> flag_set(const nlohmann::json& flags) {
  std::set<std::string> out;
  for (auto& f : flags) {
    std::string s = f.get<std::string>();
    if (s != "\\Recent") out.insert(s);
  }
  return out;
}

std::set<std::string> flag_set(const archive::MessageRecord& m) {
  auto v = archive::flags_to_imap(m.flags, m.keywords);
  return {v.begin(), v.end()};
}

class ExportTest : public testing::SharedServerTest {
 protected:

  exporting::ExportOptions options(const std::string& user, const std::string& archive_dir) {
    exporting::ExportOptions o;
    o.archive_dir = archive_dir;
    o.endpoint.host = server_->host();
    o.endpoint.port = server_->imaps_port();
    o.endpoint.tls = imap::TlsMode::implicit;
    o.endpoint.ca_file = server_->ca_file();
    o.endpoint.timeout = std::chrono::seconds(30);
    o.credentials.user = user;
    o.credentials.secret = server_->password(user);
    o.retry.backoff = std::chrono::milliseconds(50);
    return o;
  }

  // Every selectable folder of the server equals the archive's current
  // generation: same UIDs, hashes, sizes, flags, keywords and INTERNALDATEs.
  static void expect_archive_matches_server(const Archive& a, const std::string& account_name,
                                            const nlohmann::json& summary, size_t min_folders = 6) {
    auto account = a.find_account(account_name);
    ASSERT_TRUE(account) << account_name;
    size_t folders_checked = 0;
    for (auto& sf : summary["folders"]) {
      std::string raw = sf["raw"];
      auto folder = a.find_folder(account->id, raw);
      ASSERT_TRUE(folder) << "folder missing from the archive: " << sf["name"];
      EXPECT_EQ(folder->name_utf8, sf["name"].get<std::string>());
      if (!sf.contains("messages") || sf["messages"].is_null()) continue;
      EXPECT_EQ(folder->uidvalidity, sf["uidvalidity"].get<uint32_t>()) << raw;
      std::map<uint32_t, archive::MessageRecord> archived;
      a.for_each_message(account->id, folder->id, folder->uidvalidity, [&](const archive::MessageRecord& m) {
        if (m.state == archive::MessageState::present) archived[m.key.uid] = m;
        return true;
      });
      EXPECT_EQ(archived.size(), sf["messages"].size()) << "message count of " << raw;
      for (auto& sm : sf["messages"]) {
        uint32_t uid = sm["uid"];
        auto it = archived.find(uid);
        ASSERT_NE(it, archived.end()) << raw << " UID " << uid << " not archived";
        const auto& m = it->second;
        EXPECT_EQ(archive::to_hex(m.hash), sm["sha256"].get<std::string>()) << raw << " UID " << uid;
        EXPECT_EQ(m.size, sm["size"].get<uint64_t>()) << raw << " UID " << uid;
        EXPECT_EQ(m.internaldate, sm["internaldate_unix"].get<int64_t>()) << raw << " UID " << uid;
        EXPECT_EQ(flag_set(m), flag_set(sm["flags"])) << raw << " UID " << uid;
      }
      ++folders_checked;
    }
    EXPECT_GE(folders_checked, min_folders);
  }

  static size_t server_message_count(const nlohmann::json& summary) {
    size_t n = 0;
    for (auto& f : summary["folders"])
      if (f.contains("messages") && f["messages"].is_array()) n += f["messages"].size();
    return n;
  }

};

TEST_F(ExportTest, FullExportMatchesServerAndRerunFetchesNothing) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  RecordingSink events;
  auto summary = exporting::run_export(options("alice", archive_dir), events);
  EXPECT_TRUE(summary.complete());
  auto server_view = server_->summary("alice");
  EXPECT_EQ(summary.total(&exporting::FolderResult::new_messages), server_message_count(server_view));

  {
    auto a = Archive::open(archive_dir, Archive::Mode::read);
    expect_archive_matches_server(*a, "alice@" + server_->host(), server_view);

    // Nested, non-ASCII, special-use and \Noselect folders are recorded as such.
    auto account = a->find_account("alice@" + server_->host());
    auto folders = a->folders(account->id);
    bool non_ascii = false, nested = false, sent = false;
    for (auto& f : folders) {
      if (f.name_utf8 != f.name_raw) non_ascii = true;
      if (f.delimiter && f.name_utf8.find(f.delimiter) != std::string::npos) nested = true;
      if (f.special_use() == "\\Sent") sent = true;
    }
    EXPECT_TRUE(non_ascii);
    EXPECT_TRUE(nested);
    EXPECT_TRUE(sent);

    // Identical bytes in several folders are stored once.
    size_t messages = 0;
    std::set<std::string> hashes;
    a->for_each_message([&](const archive::MessageRecord& m) {
      ++messages;
      hashes.insert(archive::to_hex(m.hash));
      return true;
    });
    size_t objects = 0;
    a->for_each_object([&](const archive::Hash&, const archive::ObjectLocation&) {
      ++objects;
      return true;
    });
    EXPECT_EQ(objects, hashes.size());
    EXPECT_LT(objects, messages) << "the seed has duplicates; they must be stored once";
    EXPECT_GT(summary.total(&exporting::FolderResult::bytes_deduplicated), 0u);

    // The largest message (several MB) reads back byte for byte.
    uint64_t largest = 0;
    archive::Hash largest_hash{};
    a->for_each_message([&](const archive::MessageRecord& m) {
      if (m.size > largest) {
        largest = m.size;
        largest_hash = m.hash;
      }
      return true;
    });
    EXPECT_GE(largest, 3u << 20);
    EXPECT_EQ(archive::sha256(a->read_object(largest_hash)), largest_hash);

    auto runs = a->runs();
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_EQ(runs[0].kind, "export");
    EXPECT_EQ(runs[0].result, "ok");
  }

  // An immediate re-run fetches nothing and changes nothing.
  RecordingSink again_events;
  auto again = exporting::run_export(options("alice", archive_dir), again_events);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(again.total(&exporting::FolderResult::new_messages), 0u);
  EXPECT_EQ(again.total(&exporting::FolderResult::bytes_fetched), 0u);
  EXPECT_EQ(again.total(&exporting::FolderResult::flags_updated), 0u);
  EXPECT_EQ(again.total(&exporting::FolderResult::expunged), 0u);
  for (auto& f : again.folders) {
    if (f.noselect) continue;
    EXPECT_TRUE(f.unchanged) << f.name << " was examined although nothing changed";
  }
}

TEST_F(ExportTest, SeveralConnectionsExportTheSameAsOne) {
  TempDir dir;
  auto server_view = server_->summary("alice");
  std::map<std::string, std::string> listing[2];
  for (int connections : {1, 3}) {
    std::string archive_dir = dir.path() + "/archive" + std::to_string(connections);
    auto o = options("alice", archive_dir);
    o.connections = connections;
    RecordingSink events;
    auto summary = exporting::run_export(o, events);
    EXPECT_TRUE(summary.complete());
    EXPECT_EQ(summary.total(&exporting::FolderResult::new_messages), server_message_count(server_view));
    auto a = Archive::open(archive_dir, Archive::Mode::read);
    expect_archive_matches_server(*a, "alice@" + server_->host(), server_view);
    // Each folder's messages, by UID and hash, and each object once.
    a->for_each_message([&](const archive::MessageRecord& m) {
      auto folder = a->folder(m.key.account_id, m.key.folder_id);
      listing[connections == 1 ? 0 : 1][folder->name_raw + "/" + std::to_string(m.key.uid)] = archive::to_hex(m.hash);
      return true;
    });
    size_t objects = 0;
    std::set<std::string> hashes;
    a->for_each_object([&](const archive::Hash& h, const archive::ObjectLocation&) {
      ++objects;
      hashes.insert(archive::to_hex(h));
      return true;
    });
    EXPECT_EQ(objects, hashes.size());
    // Folder events come from the connections side by side, each folder done once.
    std::map<std::string, int> done;
    for (auto& e : events.events())
      if (e.value("event", "") == "folder_done") ++done[e["folder"].get<std::string>()];
    EXPECT_EQ(done.size(), summary.folders.size());
    for (auto& [name, n] : done) EXPECT_EQ(n, 1) << name;
  }
  EXPECT_EQ(listing[0], listing[1]);
}

TEST_F(ExportTest, RerunReflectsNewMailFlagChangeAndExpunge) {
  server_->add_user("carol");
  // carol starts empty: give her three messages in two folders.
  std::string m1 = "From: a@example.org\r\nSubject: one\r\nMessage-ID: <one@x>\r\n\r\nbody one\r\n";
  std::string m2 = "From: a@example.org\r\nSubject: two\r\nMessage-ID: <two@x>\r\n\r\nbody two\r\n";
  std::string m3 = "From: a@example.org\r\nSubject: three\r\nMessage-ID: <three@x>\r\n\r\nbody three\r\n";
  uint32_t u1 = server_->append("carol", "INBOX", m1, "\\Seen", "01-Feb-2010 10:00:00 +0100");
  uint32_t u2 = server_->append("carol", "INBOX", m2, "", "02-Mar-2015 11:30:00 -0500");
  server_->append("carol", "Work/Reports", m3, "$Label1", "");

  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  NullSink quiet;
  auto first = exporting::run_export(options("carol", archive_dir), quiet);
  EXPECT_EQ(first.total(&exporting::FolderResult::new_messages), 3u);

  // On the server: one new message, one flag change, one expunge.
  std::string m4 = "From: b@example.org\r\nSubject: four\r\nMessage-ID: <four@x>\r\n\r\nbody four\r\n";
  server_->append("carol", "INBOX", m4, "\\Flagged", "");
  server_->store("carol", "INBOX", u2, "+FLAGS", "\\Answered $Forwarded");
  server_->expunge("carol", "INBOX", {u1});

  auto second = exporting::run_export(options("carol", archive_dir), quiet);
  EXPECT_TRUE(second.complete());
  EXPECT_EQ(second.total(&exporting::FolderResult::new_messages), 1u);
  EXPECT_EQ(second.total(&exporting::FolderResult::flags_updated), 1u);
  EXPECT_EQ(second.total(&exporting::FolderResult::expunged), 1u);

  auto a = Archive::open(archive_dir, Archive::Mode::read);
  expect_archive_matches_server(*a, "carol@" + server_->host(), server_->summary("carol"), 2);
  // The expunged message stays in the archive, marked.
  auto account = a->find_account("carol@" + server_->host());
  auto inbox = a->find_folder(account->id, "INBOX");
  auto gone = a->message({account->id, inbox->id, inbox->uidvalidity, u1});
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->state, archive::MessageState::expunged);
  EXPECT_EQ(a->read_object(gone->hash), m1);
}

// A filtered export takes exactly the messages whose INTERNALDATE (set by
// APPEND) falls in the days asked for; verify against the source names the
// others as filtered out; an unfiltered run then fetches exactly the rest,
// although their UIDs are below what was fetched, and an expunge of a
// message left out is not taken for one of an archived message.
TEST_F(ExportTest, FilteredExportThenUnfilteredFetchesExactlyTheRest) {
  server_->add_user("fiona");
  auto msg = [](int n, size_t pad) {
    return "From: a@example.org\r\nSubject: dated " + std::to_string(n) + "\r\nMessage-ID: <dated" +
           std::to_string(n) + "@x>\r\n\r\n" + std::string(pad, 'x') + "\r\n";
  };
  // In UID order: 2019, 2024 (just after midnight UTC, late on 2023-12-31 in
  // the zone given), 2024, 2025 (late on 2024-12-31 in the zone given), 2024 (big).
  std::vector<uint32_t> uids = {
      server_->append("fiona", "INBOX", msg(1, 10), "", "15-Mar-2019 08:00:00 +0000"),
      server_->append("fiona", "INBOX", msg(2, 10), "", "31-Dec-2023 20:30:00 -0400"),
      server_->append("fiona", "INBOX", msg(3, 10), "\\Seen", "10-Jun-2024 12:00:00 +0200"),
      server_->append("fiona", "INBOX", msg(4, 10), "", "31-Dec-2024 23:30:00 -0100"),
      server_->append("fiona", "INBOX", msg(5, 5000), "", "11-Jun-2024 12:00:00 +0000")};
  server_->append("fiona", "Archive", msg(6, 10), "", "01-Jan-2018 00:00:00 +0000");

  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  std::string account = "fiona@" + server_->host();
  NullSink quiet;
  auto o = options("fiona", archive_dir);
  o.policy.filter.since = parse_day("2024-01-01");
  o.policy.filter.before = parse_day("2025-01-01");
  o.policy.filter.smaller = 1000;
  RecordingSink events;
  auto first = exporting::run_export(o, events);
  EXPECT_TRUE(first.complete());
  EXPECT_EQ(first.total(&exporting::FolderResult::new_messages), 2u);  // 2 and 3
  EXPECT_EQ(first.total(&exporting::FolderResult::filtered_out), 4u);
  auto summary = events.events().back();
  EXPECT_EQ(summary["event"], "summary");
  EXPECT_EQ(summary["messages"], 2);
  EXPECT_EQ(summary["filtered_out"], 4);
  EXPECT_EQ(summary["policy"]["filter"]["since"], "2024-01-01");
  {
    auto a = Archive::open(archive_dir, Archive::Mode::read);
    auto acc = a->find_account(account);
    ASSERT_TRUE(acc);
    auto inbox = a->find_folder(acc->id, "INBOX");
    ASSERT_TRUE(inbox);
    std::set<uint32_t> got;
    a->for_each_message(acc->id, inbox->id, inbox->uidvalidity, [&](const archive::MessageRecord& m) {
      got.insert(m.key.uid);
      return true;
    });
    EXPECT_EQ(got, (std::set<uint32_t>{uids[1], uids[2]}));
    // The run history records the selection.
    auto runs = a->runs();
    ASSERT_FALSE(runs.empty());
    auto details = nlohmann::json::parse(runs.back().details);
    EXPECT_EQ(details["policy"]["filter"]["before"], "2025-01-01");
    EXPECT_EQ(details["policy"]["filter"]["smaller"], 1000);
  }

  // Verify against the source compares the same selection: equal, the
  // messages left out are notes.
  verify::CompareOptions c;
  c.archive_dir = archive_dir;
  c.endpoint = o.endpoint;
  c.credentials = o.credentials;
  c.account = account;
  c.against = verify::Against::source;
  auto cmp = verify::compare_online(c, quiet);
  EXPECT_TRUE(cmp.equal()) << cmp.to_json().dump(1);
  EXPECT_EQ(cmp.count(verify::kFilteredOut), 4u);
  EXPECT_EQ(cmp.count(verify::kMissing), 0u);
  EXPECT_EQ(cmp.selection["filter"]["since"], "2024-01-01");
  auto report = cmp.to_json();
  EXPECT_EQ(report["filtered_out"], 4);
  size_t listed = 0;
  for (auto& f : report["folders"])
    for (auto& d : f["differences"])
      if (d["kind"] == verify::kFilteredOut) {
        ++listed;
        EXPECT_TRUE(d["note"].get<bool>());
      }
  EXPECT_EQ(listed, 4u);

  // Offline verify names each folder's selection too.
  {
    auto offline = verify::verify_offline({.archive_dir = archive_dir}, quiet).to_json();
    std::set<std::string> with_selection;
    for (auto& f : offline["folders"])
      if (f.contains("selection")) {
        with_selection.insert(f["folder"].get<std::string>());
        EXPECT_EQ(f["selection"]["filter"]["smaller"], 1000);
      }
    EXPECT_TRUE(with_selection.count("INBOX") && with_selection.count("Archive")) << offline["folders"].dump();
  }

  // The same filter again: nothing new, nothing expunged.
  auto same = exporting::run_export(o, quiet);
  EXPECT_EQ(same.total(&exporting::FolderResult::new_messages), 0u);
  EXPECT_EQ(same.total(&exporting::FolderResult::expunged), 0u);
  EXPECT_EQ(same.total(&exporting::FolderResult::filtered_out), 4u);

  // A message left out is expunged on the server: no expunge in the archive.
  server_->expunge("fiona", "INBOX", {uids[0]});
  RecordingSink all_events;
  auto rest = exporting::run_export(options("fiona", archive_dir), all_events);
  EXPECT_TRUE(rest.complete());
  EXPECT_EQ(rest.total(&exporting::FolderResult::new_messages), 3u);  // 4, 5 and the one in Archive
  EXPECT_EQ(rest.total(&exporting::FolderResult::filtered_out), 0u);
  EXPECT_EQ(rest.total(&exporting::FolderResult::expunged), 0u);
  EXPECT_EQ(all_events.events().back()["messages"], 3);
  {
    auto a = Archive::open(archive_dir, Archive::Mode::read);
    expect_archive_matches_server(*a, account, server_->summary("fiona"), 2);
  }
  // And verify now compares everything: equal, no notes.
  auto whole = verify::compare_online(c, quiet);
  EXPECT_TRUE(whole.equal()) << whole.to_json().dump(1);
  EXPECT_EQ(whole.count(verify::kFilteredOut), 0u);
  EXPECT_TRUE(whole.selection.empty()) << whole.selection.dump();

  // An archived message expunged on the server is marked, by a filtered run too.
  server_->expunge("fiona", "INBOX", {uids[4]});
  auto later = exporting::run_export(o, quiet);
  EXPECT_EQ(later.total(&exporting::FolderResult::expunged), 1u);
  EXPECT_EQ(later.total(&exporting::FolderResult::new_messages), 0u);
}

// Without a prior archive, a filtered export of a folder whose messages are
// all outside the selection, then a wider filter: the wider run fetches what
// it adds and only that.
TEST_F(ExportTest, WiderFilterFetchesOnlyWhatItAdds) {
  server_->add_user("gita");
  for (int y = 2019; y <= 2024; ++y)
    server_->append("gita", "INBOX",
                    "Subject: year " + std::to_string(y) + "\r\nMessage-ID: <y" + std::to_string(y) + "@x>\r\n\r\nyear\r\n",
                    "", fmt::format("01-Jul-{} 12:00:00 +0000", y));
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  NullSink quiet;
  auto o = options("gita", archive_dir);
  // The command line: --since, the summary's counts and the selection in it.
  auto r = testing::run_imapstage({"export", "--archive", archive_dir, "--host", server_->host(), "--port",
                                   std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user",
                                   "gita", "--password-env", "GITA_PASSWORD", "--account", o.credentials.user + "@" +
                                   server_->host(), "--since", "2023-01-01", "--json"},
                                  {"GITA_PASSWORD=" + server_->password("gita")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string out = r.out.substr(0, r.out.find_last_not_of('\n') + 1);
  auto summary = nlohmann::json::parse(out.substr(out.rfind('\n') + 1));
  EXPECT_EQ(summary["event"], "summary");
  EXPECT_EQ(summary["messages"], 2);
  EXPECT_EQ(summary["filtered_out"], 4);
  EXPECT_EQ(summary["policy"]["filter"]["since"], "2023-01-01");
  // A dry run of a wider selection counts what it would add.
  o.policy.filter.since = parse_day("2021-01-01");
  o.dry_run = true;
  auto plan = exporting::run_export(o, quiet);
  EXPECT_EQ(plan.total(&exporting::FolderResult::to_fetch), 2u);
  EXPECT_EQ(plan.total(&exporting::FolderResult::filtered_out), 2u);
  o.dry_run = false;
  auto wider = exporting::run_export(o, quiet);
  EXPECT_EQ(wider.total(&exporting::FolderResult::new_messages), 2u);
  EXPECT_EQ(wider.total(&exporting::FolderResult::filtered_out), 2u);
  o.policy.filter = {};
  o.policy.filter.before = parse_day("2020-01-01");
  auto older = exporting::run_export(o, quiet);
  EXPECT_EQ(older.total(&exporting::FolderResult::new_messages), 1u);
  EXPECT_EQ(older.total(&exporting::FolderResult::filtered_out), 1u);  // 2020
  auto all = exporting::run_export(options("gita", archive_dir), quiet);
  EXPECT_EQ(all.total(&exporting::FolderResult::new_messages), 1u);
  auto a = Archive::open(archive_dir, Archive::Mode::read);
  expect_archive_matches_server(*a, "gita@" + server_->host(), server_->summary("gita"), 1);
}

TEST_F(ExportTest, UidvalidityChangeKeepsOldGeneration) {
  server_->add_user("dora");
  std::string m = "From: a@example.org\r\nSubject: gen\r\nMessage-ID: <gen@x>\r\n\r\ngeneration\r\n";
  server_->append("dora", "Lists", m, "", "");
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  NullSink quiet;
  exporting::run_export(options("dora", archive_dir), quiet);
  uint32_t old_validity = 0;
  {
    auto a = Archive::open(archive_dir, Archive::Mode::read);
    auto account = a->find_account("dora@" + server_->host());
    old_validity = a->find_folder(account->id, "Lists")->uidvalidity;
  }
  server_->run({"bump-uidvalidity", server_->dir(), "dora", "Lists"});
  auto second = exporting::run_export(options("dora", archive_dir), quiet);
  EXPECT_TRUE(second.complete());
  auto a = Archive::open(archive_dir, Archive::Mode::read);
  auto account = a->find_account("dora@" + server_->host());
  auto folder = a->find_folder(account->id, "Lists");
  EXPECT_NE(folder->uidvalidity, old_validity);
  size_t old_gen = 0, new_gen = 0;
  a->for_each_message(account->id, folder->id, std::nullopt, [&](const archive::MessageRecord& r) {
    if (r.key.uidvalidity == old_validity) {
      ++old_gen;
      EXPECT_EQ(r.state, archive::MessageState::expunged);
    } else {
      ++new_gen;
      EXPECT_EQ(r.state, archive::MessageState::present);
    }
    return true;
  });
  EXPECT_EQ(old_gen, 1u);
  EXPECT_EQ(new_gen, 1u);
  expect_archive_matches_server(*a, "dora@" + server_->host(), server_->summary("dora"), 2);
}

TEST_F(ExportTest, DryRunWritesNothing) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  auto o = options("bob", archive_dir);
  o.dry_run = true;
  NullSink quiet;
  auto plan = exporting::run_export(o, quiet);
  EXPECT_EQ(plan.total(&exporting::FolderResult::to_fetch), server_message_count(server_->summary("bob", false)));
  EXPECT_GT(plan.total(&exporting::FolderResult::to_fetch_bytes), 0u);
  EXPECT_FALSE(std::filesystem::exists(archive_dir));
}

TEST_F(ExportTest, WrongPasswordFailsAndLeavesNoTrace) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  std::string pwfile = dir.path() + "/pw";
  std::ofstream(pwfile) << "not-the-password\n";
  auto r = testing::run_imapstage({"export", "--archive", archive_dir, "--host", server_->host(), "--port",
                                   std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user",
                                   "alice", "--password-file", pwfile});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  std::string expected = "authentication failed for alice at " + server_->host() + ":" + std::to_string(server_->imaps_port());
  EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("not-the-password"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(archive_dir));
}

TEST_F(ExportTest, StartTlsWithTestCaAndJsonEvents) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  auto r = testing::run_imapstage({"export", "--archive", archive_dir, "--host", server_->host(), "--port",
                                   std::to_string(server_->imap_port()), "--tls", "starttls", "--ca-file",
                                   server_->ca_file(), "--user", "bob", "--password-env", "BOB_PASSWORD",
                                   "--folder", "INBOX", "--json"},
                                  {"BOB_PASSWORD=" + server_->password("bob")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find(server_->password("bob")), std::string::npos);
  // Every stdout line is a JSON event; the last is the summary.
  std::istringstream lines(r.out);
  std::string line, last;
  size_t n = 0;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_TRUE(j.contains("event"));
    last = line;
    ++n;
  }
  ASSERT_GT(n, 1u);
  auto summary = nlohmann::json::parse(last);
  EXPECT_EQ(summary["event"], "summary");
  EXPECT_EQ(summary["folders"], 1);
  EXPECT_GT(summary["messages"].get<int>(), 0);
}

TEST_F(ExportTest, UntrustedCertificateIsRefused) {
  TempDir dir;
  // A CA that did not sign the server's certificate.
  std::string other_ca = dir.path() + "/other-ca.pem";
  auto gen = testing::run_process({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                                   dir.path() + "/other-ca.key", "-out", other_ca, "-days", "2", "-subj",
                                   "/CN=Other Test CA"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  std::string archive_dir = dir.path() + "/archive";
  for (std::string tls : {"implicit", "starttls"}) {
    auto port = tls == "implicit" ? server_->imaps_port() : server_->imap_port();
    auto r = testing::run_imapstage({"export", "--archive", archive_dir, "--host", server_->host(), "--port",
                                     std::to_string(port), "--tls", tls, "--ca-file", other_ca, "--user", "bob",
                                     "--password-env", "BOB_PASSWORD"},
                                    {"BOB_PASSWORD=" + server_->password("bob")});
    EXPECT_EQ(r.exit_code, 4) << tls << ": " << r.err;
    EXPECT_NE(r.err.find("certificate"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(archive_dir));
  }
}

TEST_F(ExportTest, KilledExportResumesWithoutRefetching) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  std::string pwfile = server_->password_file("alice");
  std::vector<std::string> args = {"export", "--archive", archive_dir, "--host", server_->host(), "--port",
                                   std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(),
                                   "--user", "alice", "--password-file", pwfile, "--json"};
  auto server_view = server_->summary("alice");
  size_t total = server_message_count(server_view);
  // Kill after the k-th finished folder (certainly mid-export), and at seeded random moments.
  std::mt19937 rng(20261124);
  int kills = 0;
  for (int trial = 0; trial < 6; ++trial) {
    testing::ProcessResult killed;
    if (trial < 3) {
      size_t k = 2 + 3 * trial;
      killed = testing::run_imapstage(args, {}, std::nullopt, [k](const std::string& out) {
        size_t n = 0, pos = 0;
        while ((pos = out.find("\"folder_done\"", pos)) != std::string::npos) ++n, ++pos;
        return n >= k;
      });
    } else {
      killed = testing::run_imapstage(args, {}, std::chrono::milliseconds(30 + rng() % 300));
    }
    if (killed.signal != SIGKILL) {
      std::filesystem::remove_all(archive_dir);
      continue;  // finished before the kill: nothing to resume
    }
    ++kills;
    // What the killed run committed is readable and correct.
    size_t committed = 0;
    if (std::filesystem::exists(archive_dir + "/FORMAT")) {
      auto a = Archive::open(archive_dir, Archive::Mode::read);
      a->for_each_message([&](const archive::MessageRecord& m) {
        EXPECT_EQ(archive::sha256(a->read_object(m.hash)), m.hash);
        ++committed;
        return true;
      });
    }
    auto rerun = testing::run_imapstage(args);
    ASSERT_EQ(rerun.exit_code, 0) << rerun.err;
    std::string last = rerun.out.substr(rerun.out.rfind('\n', rerun.out.size() - 2) + 1);
    auto summary = nlohmann::json::parse(last);
    EXPECT_EQ(summary["messages"].get<size_t>(), total - committed) << "trial " << trial;
    {
      auto a = Archive::open(archive_dir, Archive::Mode::read);
      expect_archive_matches_server(*a, "alice@" + server_->host(), server_view);
    }
    // And the archive verifies: every object re-hashed, index and packs agree.
    verify::OfflineOptions vo;
    vo.archive_dir = archive_dir;
    NullSink quiet;
    auto report = verify::verify_offline(vo, quiet);
    EXPECT_TRUE(report.ok()) << report.to_json().dump(2);
    EXPECT_EQ(report.objects_checked, report.objects);
    std::filesystem::remove_all(archive_dir);
  }
  EXPECT_GE(kills, 3);
}

}  // namespace
}  // namespace imapstage

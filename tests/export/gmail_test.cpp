// Gmail, against the scripted fake server speaking Gmail's dialect
// (X-GM-EXT-1, X-GM-MSGID/X-GM-THRID/X-GM-LABELS, "[Gmail]/All Mail" with
// \All, label folders sharing messages; developers.google.com/gmail/imap/
// imap-extensions), and into the harness Dovecot: each body fetched once,
// labels in the index, incremental re-runs, import into Gmail (one APPEND
// per message, labels by UID STORE, no duplicates on re-runs), and into
// another server as folders or one primary folder per message.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <map>
#include <mutex>
#include <set>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "archive-format/keys.h"
#include "bundle/bundle.h"
#include "common/events.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "tests/support/fake_imap_server.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"
#include "verify/compare.h"

namespace imapstage {
namespace {

using archive::Archive;
using archive::MessageRecord;
using testing::FakeExchange;
using testing::FakeImapServer;
using testing::TempDir;

std::string message(const std::string& name) {
  return "From: a@example.org\r\nMessage-ID: <" + name + "@gmail.test>\r\nSubject: " + name + "\r\n\r\nbody of " +
         name + "\r\n";
}

// A small Gmail: six messages, one in Spam, the others in All Mail and their labels' folders.
struct Mailbox {
  FakeImapServer server;
  std::map<std::string, uint64_t> ids;  // message name -> X-GM-MSGID
  std::mutex mutex;
  std::vector<std::pair<std::string, uint32_t>> bodies;  // (folder, UID) of every body the server sent
  Mailbox() {
    server.set_gmail();
    ids["m1"] = server.add_gmail_message(message("m1"), {"\\Inbox", "Work"}, {"\\Seen"});
    ids["m2"] = server.add_gmail_message(message("m2"), {"\\Inbox"});
    ids["m3"] = server.add_gmail_message(message("m3"), {"Work", "Personal"}, {"\\Flagged"});
    ids["m4"] = server.add_gmail_message(message("m4"), {});
    ids["m5"] = server.add_gmail_message(message("m5"), {}, {}, "01-Jan-2024 10:00:00 +0000", "[Gmail]/Spam");
    ids["m6"] = server.add_gmail_message(message("m6"), {"\\Sent", "\\Important"}, {"\\Seen"});
    server.on("UID FETCH .*BODY\\.PEEK\\[\\]", [this](FakeExchange& x) {
      x.standard_fetch([this](FakeExchange& x, uint32_t uid) {
        std::lock_guard lock(mutex);
        bodies.emplace_back(x.selected(), uid);
        return true;
      });
    });
  }
  size_t body_count() {
    std::lock_guard lock(mutex);
    return bodies.size();
  }
};

exporting::ExportOptions export_options(const FakeImapServer& server, const std::string& archive_dir,
                                        int connections) {
  exporting::ExportOptions o;
  o.archive_dir = archive_dir;
  o.endpoint = server.endpoint(10);
  o.credentials.user = "me@gmail.test";
  o.credentials.secret = "secret";
  o.account_name = "gmail";
  o.connections = connections;
  return o;
}

// Every record of the account by canonical folder name.
std::map<std::string, std::vector<MessageRecord>> records(const std::string& archive_dir) {
  std::map<std::string, std::vector<MessageRecord>> out;
  auto a = Archive::open(archive_dir, Archive::Mode::read);
  auto acc = a->find_account("gmail");
  EXPECT_TRUE(acc);
  if (!acc) return out;
  for (auto& f : a->folders(acc->id))
    a->for_each_message(acc->id, f.id, std::nullopt, [&](const MessageRecord& m) {
      out[f.canonical_name()].push_back(m);
      return true;
    });
  return out;
}

std::set<std::string> subjects(const std::vector<testing::FakeMessage>& messages) {
  std::set<std::string> out;
  for (auto& m : messages) {
    auto at = m.body.find("Subject: ");
    out.insert(m.body.substr(at + 9, m.body.find('\r', at) - at - 9));
  }
  return out;
}

TEST(GmailExport, EachBodyIsFetchedOnceAndTheLabelsAreInTheIndex) {
  Mailbox gmail;
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  RecordingSink events;
  auto summary = exporting::run_export(export_options(gmail.server, archive_dir, 2), events);
  ASSERT_TRUE(summary.complete());

  // Six bodies: five from All Mail, one from Spam; none from INBOX, Work, Personal, Sent, Important.
  EXPECT_EQ(gmail.body_count(), 6u);
  for (auto& [folder, uid] : gmail.bodies)
    EXPECT_TRUE(folder == FakeImapServer::kAllMail || folder == "[Gmail]/Spam") << folder << " UID " << uid;
  EXPECT_EQ(summary.total(&exporting::FolderResult::new_messages), 6u);
  EXPECT_EQ(summary.total(&exporting::FolderResult::gmail_linked), 7u);  // INBOX 2, Work 2, Personal 1, Sent 1, Important 1
  // The label folders were asked for ids and flags only.
  bool ids_asked = false;
  for (auto& c : gmail.server.commands())
    if (c.text.find("X-GM-MSGID FLAGS") != std::string::npos) ids_asked = true;
  EXPECT_TRUE(ids_asked);

  auto recs = records(archive_dir);
  std::map<std::string, size_t> counts;
  for (auto& [folder, list] : recs) counts[folder] = list.size();
  EXPECT_EQ(counts, (std::map<std::string, size_t>{{"INBOX", 2}, {"Personal", 1}, {"Work", 2},
                                                   {"[Gmail]/All Mail", 5}, {"[Gmail]/Important", 1},
                                                   {"[Gmail]/Sent Mail", 1}, {"[Gmail]/Spam", 1}}));
  // One X-GM-MSGID, one hash; the labels as Gmail sent them.
  std::map<uint64_t, archive::Hash> hash_of;
  for (auto& [folder, list] : recs)
    for (auto& m : list) {
      ASSERT_NE(m.gm_msgid, 0u) << folder;
      auto [it, fresh] = hash_of.emplace(m.gm_msgid, m.hash);
      EXPECT_EQ(it->second, m.hash) << folder;
      EXPECT_EQ(m.gm_thrid, m.gm_msgid);
    }
  EXPECT_EQ(hash_of.size(), 6u);
  for (auto& m : recs["[Gmail]/All Mail"]) {
    if (m.gm_msgid == gmail.ids["m1"]) {
      EXPECT_EQ(m.gm_labels, (std::vector<std::string>{"\\Inbox", "Work"}));
    }
    if (m.gm_msgid == gmail.ids["m4"]) {
      EXPECT_TRUE(m.gm_labels.empty());
    }
  }
  for (auto& m : recs["Work"]) {  // the label folders' own flags, the body's date and size
    if (m.gm_msgid == gmail.ids["m3"]) {
      EXPECT_EQ(m.flags, archive::kFlagged);
    }
    if (m.gm_msgid == gmail.ids["m1"]) {
      EXPECT_EQ(m.flags, archive::kSeen);
    }
    EXPECT_EQ(m.size, message(m.gm_msgid == gmail.ids["m1"] ? "m1" : "m3").size());
  }
  bool provider = false;
  int totals = 0;
  for (auto& e : events.events()) {
    if (e["event"] == "provider" && e["provider"] == "gmail") provider = true;
    if (e["event"] == "totals") {
      ++totals;
      EXPECT_EQ(e["messages_total"], 6) << "the label copies are links, not downloads: " << e.dump();
    }
  }
  EXPECT_TRUE(provider);
  EXPECT_EQ(totals, 1);
}

// --dry-run says what a run would download (the bodies from All Mail and
// Spam) and what it would link (the label copies).
TEST(GmailExport, ADryRunCountsLabelCopiesAsLinks) {
  Mailbox gmail;
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  auto o = export_options(gmail.server, archive_dir, 1);
  o.dry_run = true;
  NullSink quiet;
  auto plan = exporting::run_export(o, quiet);
  EXPECT_EQ(plan.total(&exporting::FolderResult::to_fetch), 6u);
  EXPECT_EQ(plan.total(&exporting::FolderResult::gmail_linked), 7u);
  EXPECT_EQ(gmail.body_count(), 0u);
}

TEST(GmailExport, ARerunFetchesOnlyNewBodiesAndRefreshesLabels) {
  Mailbox gmail;
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  NullSink quiet;
  ASSERT_TRUE(exporting::run_export(export_options(gmail.server, archive_dir, 1), quiet).complete());
  ASSERT_EQ(gmail.body_count(), 6u);

  uint64_t m7 = gmail.server.add_gmail_message(message("m7"), {"\\Inbox", "Work"});
  // A label added to m4 on the server: it appears in the folder Later.
  {
    imap::Endpoint e = gmail.server.endpoint();
    auto s = imap::Session::connect(e);
    imap::Credentials who;
    who.user = "me";
    who.secret = "x";
    s->login(who);
    s->select(FakeImapServer::kAllMail);
    uint32_t uid = 0;
    for (auto& [folder, u] : gmail.server.gmail_copies(gmail.ids["m4"]))
      if (folder == FakeImapServer::kAllMail) uid = u;
    s->store_gmail_labels(uid, {"Later"});
    s->logout();
  }
  auto again = exporting::run_export(export_options(gmail.server, archive_dir, 2), quiet);
  ASSERT_TRUE(again.complete());
  EXPECT_EQ(gmail.body_count(), 7u);  // only m7's
  EXPECT_EQ(gmail.bodies.back().first, FakeImapServer::kAllMail);
  EXPECT_EQ(again.total(&exporting::FolderResult::new_messages), 1u);
  EXPECT_EQ(again.total(&exporting::FolderResult::gmail_linked), 3u);  // m7 in INBOX and Work, m4 in Later
  auto recs = records(archive_dir);
  EXPECT_EQ(recs["Later"].size(), 1u);
  EXPECT_EQ(recs["INBOX"].size(), 3u);
  bool labels_refreshed = false, m7_labelled = false;
  for (auto& m : recs["[Gmail]/All Mail"]) {
    if (m.gm_msgid == gmail.ids["m4"]) labels_refreshed = m.gm_labels == std::vector<std::string>{"Later"};
    if (m.gm_msgid == m7) m7_labelled = m.gm_labels == std::vector<std::string>{"\\Inbox", "Work"};
  }
  EXPECT_TRUE(labels_refreshed);
  EXPECT_TRUE(m7_labelled);

  // Nothing new: no body at all.
  auto third = exporting::run_export(export_options(gmail.server, archive_dir, 1), quiet);
  EXPECT_TRUE(third.complete());
  EXPECT_EQ(gmail.body_count(), 7u);
  EXPECT_EQ(third.total(&exporting::FolderResult::new_messages) + third.total(&exporting::FolderResult::gmail_linked),
            0u);
}

TEST(GmailExport, ADetectedGmailGetsItsProfileApplied) {
  Mailbox gmail;
  TempDir dir;
  auto o = export_options(gmail.server, dir.path() + "/archive", 1);
  std::vector<std::string> seen;
  o.on_provider = [&](const std::string& provider) {
    seen.push_back(provider);
    return std::string("daily download budget 2500 MB");
  };
  RecordingSink events;
  ASSERT_TRUE(exporting::run_export(o, events).complete());
  EXPECT_EQ(seen, std::vector<std::string>{"gmail"});
  bool applied = false;
  for (auto& e : events.events())
    if (e["event"] == "provider") applied = e["applied"] == "daily download budget 2500 MB";
  EXPECT_TRUE(applied);
}

// The command line: a server that turns out to be Gmail gets Gmail's daily
// download budget (counted in DIR/batches/budgets.json) unless one was given.
TEST(GmailExport, TheExportCommandAppliesGmailsBudgetWhenItDetectsGmail) {
  Mailbox gmail;
  TempDir dir;
  std::string pw = dir.path() + "/pw";
  {
    std::ofstream out(pw);
    out << "secret\n";
  }
  auto args = [&](const std::string& archive) {
    return std::vector<std::string>{"export", "--archive", archive, "--host", gmail.server.host(), "--port",
                                    std::to_string(gmail.server.port()), "--tls", "none", "--user", "me@gmail.test",
                                    "--password-file", pw, "--json"};
  };
  auto detected = testing::run_imapstage(args(dir.path() + "/a"));
  ASSERT_EQ(detected.exit_code, 0) << detected.err;
  EXPECT_NE(detected.out.find("daily download budget 2500 MB"), std::string::npos) << detected.out;
  std::ifstream budgets(dir.path() + "/a/batches/budgets.json");
  ASSERT_TRUE(budgets) << "no budget was counted";
  auto counted = nlohmann::json::parse(budgets);
  EXPECT_EQ(counted["accounts"]["export me@gmail.test@127.0.0.1"]["bytes"].get<uint64_t>(),
            message("m1").size() * 6);  // the six bodies fetched

  // An explicit budget wins.
  auto chosen = args(dir.path() + "/b");
  chosen.insert(chosen.end(), {"--daily-budget", "1GB"});
  auto explicit_budget = testing::run_imapstage(chosen);
  ASSERT_EQ(explicit_budget.exit_code, 0) << explicit_budget.err;
  EXPECT_EQ(explicit_budget.out.find("daily download budget"), std::string::npos);
}

TEST(GmailExport, ABundleCarriesTheIdsAndLabels) {
  Mailbox gmail;
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  NullSink quiet;
  ASSERT_TRUE(exporting::run_export(export_options(gmail.server, archive_dir, 1), quiet).complete());
  std::string file = dir.path() + "/gmail.bundle";
  {
    auto a = Archive::open(archive_dir, Archive::Mode::write);
    bundle::CreateOptions o;
    o.out = file;
    bundle::create(*a, o);
  }
  std::string copy = dir.path() + "/copy";
  bundle::apply(file, copy, "");
  auto original = records(archive_dir), carried = records(copy);
  ASSERT_EQ(original.size(), carried.size());
  for (auto& [folder, list] : original) {
    ASSERT_EQ(list.size(), carried[folder].size()) << folder;
    for (size_t i = 0; i < list.size(); ++i) {
      EXPECT_EQ(carried[folder][i].gm_msgid, list[i].gm_msgid) << folder;
      EXPECT_EQ(carried[folder][i].gm_thrid, list[i].gm_thrid) << folder;
      EXPECT_EQ(carried[folder][i].gm_labels, list[i].gm_labels) << folder;
      EXPECT_EQ(carried[folder][i].hash, list[i].hash) << folder;
    }
  }
}

// Every file below `dir` as one string.
std::string all_bytes(const std::string& dir) {
  std::string out;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    out += s.str();
  }
  return out;
}

TEST(GmailExport, InAnEncryptedArchiveTheIdsAndLabelsAreSealed) {
  Mailbox gmail;
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  archive::Archive::Options keyed;
  keyed.passphrase = [](const std::filesystem::path&) { return std::string("gmail passphrase"); };
  Archive::create_encrypted(archive_dir, "gmail passphrase", archive::ScryptParams{10, 8, 1}, keyed);
  auto o = export_options(gmail.server, archive_dir, 1);
  o.archive_options = keyed;
  NullSink quiet;
  ASSERT_TRUE(exporting::run_export(o, quiet).complete());
  auto a = Archive::open(archive_dir, Archive::Mode::read, keyed);
  auto acc = a->find_account("gmail");
  ASSERT_TRUE(acc);
  size_t labelled = 0;
  for (auto& f : a->folders(acc->id))
    a->for_each_message(acc->id, f.id, std::nullopt, [&](const MessageRecord& m) {
      EXPECT_NE(m.gm_msgid, 0u);
      if (m.gm_labels == std::vector<std::string>{"Work", "Personal"}) ++labelled;
      return true;
    });
  EXPECT_EQ(labelled, 3u);  // m3 in All Mail, Work and Personal
  std::string raw = all_bytes(archive_dir);
  EXPECT_EQ(raw.find("Personal"), std::string::npos);
  uint64_t id = gmail.ids["m3"];  // as a value holds it: u64 little-endian
  std::string id_bytes;
  for (int k = 0; k < 8; ++k) id_bytes.push_back(static_cast<char>((id >> (8 * k)) & 0xff));
  EXPECT_EQ(raw.find(id_bytes), std::string::npos);
}

importing::ImportOptions import_options(const std::string& archive_dir, const imap::Endpoint& endpoint,
                                        const std::string& user, const std::string& secret) {
  importing::ImportOptions o;
  o.archive_dir = archive_dir;
  o.endpoint = endpoint;
  o.credentials.user = user;
  o.credentials.secret = secret;
  o.account = "gmail";
  o.connections = 1;
  o.retry.backoff = std::chrono::milliseconds(50);
  return o;
}

size_t appended_messages(const FakeImapServer& server) {
  size_t n = 0;
  for (auto& c : server.commands())
    if (c.text.rfind("APPEND", 0) == 0) n += c.literals.size();
  return n;
}

TEST(GmailImport, IntoGmailEachMessageIsAppendedOnceAndLabelled) {
  Mailbox gmail;
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  NullSink quiet;
  ASSERT_TRUE(exporting::run_export(export_options(gmail.server, archive_dir, 1), quiet).complete());

  FakeImapServer target;
  target.set_gmail();
  RecordingSink events;
  auto first = importing::run_import(import_options(archive_dir, target.endpoint(10), "you", "x"), events);
  for (auto& f : first.folders) EXPECT_TRUE(f.error.empty()) << f.source << ": " << f.error;
  EXPECT_TRUE(first.complete());
  EXPECT_EQ(appended_messages(target), 6u);  // five into All Mail, one into Spam
  EXPECT_EQ(first.total(&importing::ImportFolderResult::appended), 6u);
  EXPECT_EQ(first.total(&importing::ImportFolderResult::gmail_elsewhere), 7u);
  size_t stores = 0;
  for (auto& c : target.commands())
    if (c.text.find("+X-GM-LABELS") != std::string::npos) ++stores;
  EXPECT_EQ(stores, 4u);  // m1, m2, m3, m6; m4 (no label) and m5 (Spam) get none

  auto same_as_source = [&] {
    for (const char* folder : {"INBOX", "Work", "Personal", "[Gmail]/Sent Mail", "[Gmail]/Important",
                               FakeImapServer::kAllMail, "[Gmail]/Spam"})
      EXPECT_EQ(subjects(target.folder(folder).messages), subjects(gmail.server.folder(folder).messages)) << folder;
  };
  same_as_source();
  for (auto& m : target.folder("INBOX").messages)
    if (m.body == message("m1")) {
      EXPECT_EQ(m.gm_labels, (std::vector<std::string>{"\\Inbox", "Work"}));
      EXPECT_EQ(m.flags, std::vector<std::string>{"\\Seen"});
    }

  // Re-run: nothing appended, nothing labelled again.
  auto again = importing::run_import(import_options(archive_dir, target.endpoint(10), "you", "x"), quiet);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(appended_messages(target), 6u);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::already_there), 6u);
  same_as_source();
}

TEST(GmailImport, AnInterruptedLabellingIsFinishedByTheNextRun) {
  Mailbox gmail;
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  NullSink quiet;
  ASSERT_TRUE(exporting::run_export(export_options(gmail.server, archive_dir, 1), quiet).complete());
  FakeImapServer target;
  target.set_gmail();
  // The connection drops at the first label STORE: the APPEND went through, its record stays in flight.
  target.on("X-GM-LABELS", [](FakeExchange& x) { x.close(); }, 1);
  auto o = import_options(archive_dir, target.endpoint(10), "you", "x");
  o.retry.max_attempts = 1;
  EXPECT_ANY_THROW(importing::run_import(o, quiet));
  size_t sent = appended_messages(target);
  EXPECT_GT(sent, 0u);
  auto again = importing::run_import(import_options(archive_dir, target.endpoint(10), "you", "x"), quiet);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(appended_messages(target), 6u) << "a message appended before the drop was sent again";
  EXPECT_GT(again.total(&importing::ImportFolderResult::reconciled), 0u);
  for (const char* folder : {"INBOX", "Work", "Personal", FakeImapServer::kAllMail})
    EXPECT_EQ(subjects(target.folder(folder).messages), subjects(gmail.server.folder(folder).messages)) << folder;
}

class GmailIntoDovecot : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.seed = "none";
    o.users = {"folders", "primary"};
    server_ = new testing::TestServer(o);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static imap::Endpoint endpoint() { return server_->endpoint(); }
  // Subjects by canonical folder name on the target.
  static std::map<std::string, std::set<std::string>> target(const std::string& user) {
    std::map<std::string, std::set<std::string>> out;
    nlohmann::json summary = server_->summary(user);
    for (auto& f : summary["folders"]) {
      if (f["messages"].is_null()) continue;
      for (auto& m : f["messages"]) {
        std::string id = m["message_id"];
        out[f["canonical"]].insert(id.substr(1, id.find('@') - 1));
      }
    }
    return out;
  }
  static testing::TestServer* server_;
};

testing::TestServer* GmailIntoDovecot::server_ = nullptr;

TEST_F(GmailIntoDovecot, FoldersByDefaultOrOnePrimaryFolderPerMessage) {
  Mailbox gmail;
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  NullSink quiet;
  ASSERT_TRUE(exporting::run_export(export_options(gmail.server, archive_dir, 1), quiet).complete());

  // Default: every folder as exported, All Mail included.
  auto folders = importing::run_import(
      import_options(archive_dir, endpoint(), "folders", server_->password("folders")), quiet);
  EXPECT_TRUE(folders.complete());
  EXPECT_EQ(folders.total(&importing::ImportFolderResult::appended), 13u);
  auto by_folder = target("folders");
  EXPECT_EQ(by_folder["INBOX"], (std::set<std::string>{"m1", "m2"}));
  EXPECT_EQ(by_folder["Work"], (std::set<std::string>{"m1", "m3"}));
  size_t total = 0;
  for (auto& [name, ids] : by_folder) total += ids.size();
  EXPECT_EQ(total, 13u);

  // Primary: each message once, by the documented priority.
  auto o = import_options(archive_dir, endpoint(), "primary", server_->password("primary"));
  o.policy.gmail_labels = importing::GmailLabels::primary;
  auto primary = importing::run_import(o, quiet);
  EXPECT_TRUE(primary.complete());
  EXPECT_EQ(primary.total(&importing::ImportFolderResult::appended), 6u);
  auto by_primary = target("primary");
  std::map<std::string, std::string> home;
  for (auto& [name, ids] : by_primary)
    for (auto& id : ids) {
      EXPECT_FALSE(home.count(id)) << id << " is in " << home[id] << " and " << name;
      home[id] = name;
    }
  EXPECT_EQ(home["m1"], "INBOX");       // INBOX before a label
  EXPECT_EQ(home["m2"], "INBOX");
  EXPECT_EQ(home["m3"], "Personal");    // two labels: the first by name
  EXPECT_TRUE(home["m6"].find("Sent") != std::string::npos) << home["m6"];  // \Sent before \Important
  EXPECT_EQ(home.size(), 6u);
  EXPECT_TRUE(home["m4"].find("All Mail") != std::string::npos) << home["m4"];  // unlabelled: All Mail
  EXPECT_TRUE(home["m5"].find("Spam") != std::string::npos || home["m5"] == "Junk") << home["m5"];

  // verify against each target: equal, the other folders' copies noted.
  for (const char* user : {"folders", "primary"}) {
    verify::CompareOptions v;
    v.archive_dir = archive_dir;
    v.endpoint = endpoint();
    v.credentials.user = user;
    v.credentials.secret = server_->password(user);
    v.against = verify::Against::target;
    v.account = "gmail";
    auto c = verify::compare_online(v, quiet);
    EXPECT_TRUE(c.equal()) << user << ": " << c.to_json().dump();
    EXPECT_EQ(c.count(verify::kGmailElsewhere), std::string(user) == "primary" ? 7u : 0u) << user;
  }

  // Re-runs append nothing.
  auto again = importing::run_import(o, quiet);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(again.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(target("primary"), by_primary);
}

}  // namespace
}  // namespace imapstage

// The interop matrix: every direction among Dovecot, Cyrus IMAP and
// Courier-IMAP (export -> import -> verify --against target --deep ->
// re-import appends nothing), checked independently of imapstage: the
// harness's own client reads both mailboxes and each target folder must hold
// exactly the source folder's messages (by canonical folder name), with the
// same flags and INTERNALDATE, and the bytes the target's kind is known to
// store for them (tools/testserver records each server's rewrites). Then
// dropped connections and kill -9 during import on each server (nothing
// lost, nothing duplicated, also for messages the server rewrites), other
// users' and shared folders on Cyrus, and folder names Cyrus refuses.
//
// Runs in the interop stage (ctest label "interop", tools/test --interop).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>

#include "archive-format/archive.h"
#include "archive-format/hash.h"
#include "common/error.h"
#include "common/message_id.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "tests/support/fault_proxy.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::FaultProxy;
using testing::FaultProxyOptions;
using testing::TempDir;
using testing::TestServer;
using testing::TestServerOptions;
using Clock = std::chrono::steady_clock;

const std::vector<std::string> kKinds = {"dovecot", "cyrus", "courier"};
const std::vector<std::string> kTargets = {"from_dovecot", "from_cyrus", "from_courier", "cut_target", "kill_target",
                                           "names_target"};

// Messages some server changes on APPEND, added to every source INBOX.
const std::vector<std::string> kAtRisk = {
    "Message-ID: <8bit@interop.test>\r\nFrom: a@example.test\r\nSubject: Gr\xc3\xbc\xc3\x9f"
    "e aus K\xc3\xb6ln\r\n\r\nA header with raw 8-bit bytes.\r\n",
    "Message-ID: <nocrlf@interop.test>\r\nFrom: a@example.test\r\nSubject: no final CRLF\r\n\r\n"
    "The last line has no line end.",
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Servers {
  std::map<std::string, std::unique_ptr<TestServer>> by_kind;
  TestServer& operator[](const std::string& kind) { return *by_kind.at(kind); }
};
Servers* servers_ = nullptr;

class InteropEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    servers_ = new Servers;
    for (auto& kind : kKinds) {
      TestServerOptions o;
      o.kind = kind;
      o.users = {"alice", "bob"};
      o.target_users = kTargets;
      auto started = Clock::now();
      auto server = std::make_unique<TestServer>(o);
      for (auto& bytes : kAtRisk) server->append("alice", "INBOX", bytes, "\\Seen", "02-Mar-2021 10:11:12 +0100");
      std::printf("[ figures ] %s started and seeded in %.1f s\n", kind.c_str(), seconds_since(started));
      servers_->by_kind[kind] = std::move(server);
    }
  }
  void TearDown() override {
    delete servers_;
    servers_ = nullptr;
  }
};
const auto* const environment = ::testing::AddGlobalTestEnvironment(new InteropEnvironment);

imap::Endpoint endpoint(const TestServer& s) { return s.endpoint(); }

imap::Credentials credentials(const TestServer& s, const std::string& user) {
  imap::Credentials c;
  c.user = s.login(user);
  c.secret = s.password(user);
  return c;
}

RetryPolicy short_backoff() {
  RetryPolicy r;
  r.backoff = std::chrono::milliseconds(50);
  r.max_backoff = std::chrono::milliseconds(200);
  r.max_attempts = 8;
  return r;
}

exporting::ExportSummary export_alice(TestServer& source, const std::string& archive_dir,
                                      std::vector<imap::Namespace::Kind> namespaces = {imap::Namespace::personal}) {
  exporting::ExportOptions o;
  o.archive_dir = archive_dir;
  o.endpoint = endpoint(source);
  o.credentials = credentials(source, "alice");
  o.account_name = "alice@" + source.kind();
  o.namespaces = std::move(namespaces);
  NullSink quiet;
  return exporting::run_export(o, quiet);
}

importing::ImportOptions import_options(TestServer& target, const std::string& user, const std::string& archive_dir) {
  importing::ImportOptions o;
  o.archive_dir = archive_dir;
  o.endpoint = endpoint(target);
  o.credentials = credentials(target, user);
  o.retry = short_backoff();
  return o;
}

// One message as the harness sees it: "sha256 internaldate flags...".
std::string line_of(const std::string& sha256, int64_t internaldate, std::vector<std::string> flags) {
  std::erase(flags, "\\Recent");
  std::sort(flags.begin(), flags.end());
  std::string out = sha256 + " " + std::to_string(internaldate);
  for (auto& f : flags) out += " " + f;
  return out;
}

// canonical folder name -> sorted message lines, personal namespace only.
std::map<std::string, std::vector<std::string>> view(const nlohmann::json& summary) {
  std::map<std::string, std::vector<std::string>> out;
  for (auto& f : summary["folders"]) {
    if (f.value("namespace", "personal") != "personal" || !f["messages"].is_array()) continue;
    auto& v = out[f["canonical"].get<std::string>()];
    for (auto& m : f["messages"])
      v.push_back(line_of(m["sha256"], m["internaldate_unix"], m["flags"].get<std::vector<std::string>>()));
    std::sort(v.begin(), v.end());
  }
  return out;
}

struct Expected {
  std::map<std::string, std::vector<std::string>> folders;
  size_t messages = 0;
  size_t rewritten = 0;  // messages whose bytes the target stores changed
};

// What the target must hold after importing `archive_dir`'s account from
// `source`: the source's folders under the same canonical names, each message
// with the bytes the target's kind stores for it (from the archived bytes).
Expected expected_on(TestServer& source, TestServer& target, const std::string& archive_dir) {
  auto archive = archive::Archive::open(archive_dir, archive::Archive::Mode::read);
  Expected e;
  auto summary = source.summary("alice");
  for (auto& f : summary["folders"]) {
    if (f.value("namespace", "personal") != "personal" || !f["messages"].is_array() || f["messages"].empty())
      continue;
    auto& v = e.folders[f["canonical"].get<std::string>()];
    for (auto& m : f["messages"]) {
      auto hash = archive::hash_from_hex(m["sha256"].get<std::string>());
      EXPECT_TRUE(hash && archive->object(*hash)) << "the archive lacks " << m["sha256"];
      if (!hash || !archive->object(*hash)) continue;
      std::string bytes = archive->read_object(*hash);
      auto stored = target.expected_after_append(bytes);
      EXPECT_TRUE(stored.has_value()) << target.kind() << " refuses a message of " << source.kind();
      if (!stored) continue;
      if (*stored != bytes) ++e.rewritten;
      v.push_back(line_of(archive::to_hex(archive::sha256(*stored)), m["internaldate_unix"],
                          m["flags"].get<std::vector<std::string>>()));
      ++e.messages;
    }
    std::sort(v.begin(), v.end());
  }
  return e;
}

// The target account holds exactly `expected`: every folder, every message once, nothing else.
void expect_target_holds(TestServer& target, const std::string& user, const Expected& expected) {
  auto actual = view(target.summary(user));
  size_t total = 0;
  for (auto& [name, messages] : actual) total += messages.size();
  for (auto& [name, messages] : expected.folders) {
    ASSERT_TRUE(actual.count(name)) << "folder " << name << " missing on " << target.kind() << " " << user;
    EXPECT_EQ(actual[name], messages) << "folder " << name << " on " << target.kind() << " " << user;
  }
  EXPECT_EQ(total, expected.messages) << target.kind() << " " << user << " holds other or duplicate messages";
}

int verify_deep(TestServer& target, const std::string& user, const std::string& archive_dir, std::string* out) {
  auto r = testing::run_imapstage({"verify", "--archive", archive_dir, "--against", "target", "--deep", "--host",
                                   target.host(), "--port", std::to_string(target.imaps_port()), "--ca-file",
                                   target.ca_file(), "--user", target.login(user), "--password-file",
                                   target.password_file(user), "--json"});
  if (out) *out = r.out + r.err;
  return r.exit_code;
}

class InteropMatrix : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(InteropMatrix, ExportImportVerifyReimport) {
  auto [from, to] = GetParam();
  TestServer& source = (*servers_)[from];
  TestServer& target = (*servers_)[to];
  std::string user = "from_" + from;
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";

  auto t0 = Clock::now();
  auto exported = export_alice(source, archive_dir);
  double export_seconds = seconds_since(t0);
  ASSERT_TRUE(exported.complete());

  RecordingSink events;
  t0 = Clock::now();
  auto imported = importing::run_import(import_options(target, user, archive_dir), events);
  double import_seconds = seconds_since(t0);
  EXPECT_TRUE(imported.complete()) << imported.to_json().dump(2);
  for (auto& e : events.events())
    if (e["event"] == "mapping") {
      // "same name" only where the name is unchanged.
      if (e["reason"] == "same name") EXPECT_EQ(e["source_raw"], e["target_raw"]) << e.dump();
      EXPECT_FALSE(e["target_raw"].get<std::string>().starts_with("INBOX.INBOX")) << e.dump();
      if (from != "dovecot" && to == "dovecot")
        EXPECT_FALSE(e["target_raw"].get<std::string>().starts_with("INBOX/")) << e.dump();
    }

  Expected expected = expected_on(source, target, archive_dir);
  EXPECT_GT(expected.messages, 150u);
  expect_target_holds(target, user, expected);
  uint64_t appended = imported.total(&importing::ImportFolderResult::appended);
  EXPECT_EQ(appended, expected.messages);
  // Every message the target changed was reported as a known rewrite.
  EXPECT_EQ(imported.total(&importing::ImportFolderResult::rewritten), expected.rewritten);
  EXPECT_EQ(imported.total(&importing::ImportFolderResult::altered), 0u);

  // Special-use folders keep their use where the target has SPECIAL-USE
  // (created with CREATE-SPECIAL-USE; Courier's are recognised by name).
  if (target.special_use()) {
    auto listed = target.summary(user, false);
    std::map<std::string, std::vector<std::string>> attributes;
    for (auto& f : listed["folders"]) attributes[f["canonical"]] = f["attributes"].get<std::vector<std::string>>();
    for (auto [name, use] : std::map<std::string, std::string>{
             {"Sent", "\\Sent"}, {"Drafts", "\\Drafts"}, {"Trash", "\\Trash"}, {"Junk", "\\Junk"},
             {"Archive", "\\Archive"}}) {
      auto& a = attributes[name];
      EXPECT_NE(std::find(a.begin(), a.end(), use), a.end()) << name << " on " << to << " lacks " << use;
    }
  }

  std::string report;
  t0 = Clock::now();
  EXPECT_EQ(verify_deep(target, user, archive_dir, &report), 0) << report;
  double verify_seconds = seconds_since(t0);

  NullSink quiet;
  auto again = importing::run_import(import_options(target, user, archive_dir), quiet);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(again.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::already_there), expected.messages);
  expect_target_holds(target, user, expected);

  std::printf("[ matrix ] %s -> %s: %zu messages in %zu folders; export %.2f s, import %.2f s, "
              "verify --deep %.2f s; %zu stored rewritten by %s\n",
              from.c_str(), to.c_str(), expected.messages, expected.folders.size(), export_seconds, import_seconds,
              verify_seconds, expected.rewritten, to.c_str());
}

std::vector<std::pair<std::string, std::string>> directions() {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& a : kKinds)
    for (auto& b : kKinds) out.emplace_back(a, b);
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllDirections, InteropMatrix, ::testing::ValuesIn(directions()),
                         [](const auto& info) { return info.param.first + "_to_" + info.param.second; });

// Faults during import into each kind of server, from a Dovecot export that
// holds messages Cyrus and Courier rewrite.
class InteropFaults : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    archive_ = new TempDir;
    auto s = export_alice((*servers_)["dovecot"], archive_dir());
    ASSERT_TRUE(s.complete());
  }
  static void TearDownTestSuite() {
    delete archive_;
    archive_ = nullptr;
  }
  static std::string archive_dir() { return archive_->path() + "/archive"; }
  static TempDir* archive_;
};
TempDir* InteropFaults::archive_ = nullptr;

TEST_P(InteropFaults, DroppedConnectionsDuringImportLoseAndDuplicateNothing) {
  TestServer& target = (*servers_)[GetParam()];
  // A separate copy of the archive: each kind's import keeps its own records.
  TempDir dir;
  std::filesystem::copy(archive_dir(), dir.path() + "/archive", std::filesystem::copy_options::recursive);
  std::string archive_dir = dir.path() + "/archive";
  FaultProxyOptions p;
  p.target_port = target.imaps_port();
  p.cut_random = std::make_pair(uint64_t{60'000}, uint64_t{600'000});
  p.cuts = 8;
  p.seed = "interop-import-cuts-" + GetParam();
  p.max_seconds = 600;
  FaultProxy proxy(p);
  auto o = import_options(target, "cut_target", archive_dir);
  o.endpoint.host = proxy.host();
  o.endpoint.port = proxy.port();
  o.target_name = "cut_target@" + GetParam();
  o.retry.max_attempts = 20;
  o.append_batch = 20;
  RecordingSink events;
  importing::ImportSummary s;
  ASSERT_NO_THROW(s = importing::run_import(o, events));
  EXPECT_TRUE(s.complete());
  EXPECT_GE(proxy.count("cut"), 3u);
  auto expected = expected_on((*servers_)["dovecot"], target, archive_dir);
  uint64_t settled = s.total(&importing::ImportFolderResult::appended) +
                     s.total(&importing::ImportFolderResult::reconciled);
  EXPECT_EQ(settled, expected.messages);
  expect_target_holds(target, "cut_target", expected);
  std::printf("[ figures ] import into %s through %zu cuts: %d reconnects, %llu appended + %llu reconciled\n",
              GetParam().c_str(), proxy.count("cut"), s.reconnects,
              (unsigned long long)s.total(&importing::ImportFolderResult::appended),
              (unsigned long long)s.total(&importing::ImportFolderResult::reconciled));
}

TEST_P(InteropFaults, KilledImportsResumeWithoutLossOrDuplicates) {
  TestServer& target = (*servers_)[GetParam()];
  TempDir dir;
  std::filesystem::copy(archive_dir(), dir.path() + "/archive", std::filesystem::copy_options::recursive);
  std::string archive_dir = dir.path() + "/archive";
  std::vector<std::string> args = {"import", "--archive", archive_dir, "--host", target.host(), "--port",
                                   std::to_string(target.imaps_port()), "--ca-file", target.ca_file(), "--user",
                                   target.login("kill_target"), "--password-file", target.password_file("kill_target"),
                                   "--json"};
  // Killed after the 1st, 3rd, 6th ... progress event: mid-folder, with APPENDs in flight.
  int kills = 0;
  for (int round = 0; round < 4; ++round) {
    int seen = 0;
    int wanted = 1 + round * 2;
    auto r = testing::run_imapstage(args, {}, std::nullopt, [&](const std::string& out) {
      seen = 0;
      for (size_t at = out.find("\"progress\""); at != std::string::npos; at = out.find("\"progress\"", at + 1)) ++seen;
      return seen >= wanted;
    });
    if (r.signal == SIGKILL) ++kills;
    else break;
  }
  auto last = testing::run_imapstage(args);
  EXPECT_EQ(last.exit_code, 0) << last.err;
  EXPECT_GE(kills, 1);
  auto expected = expected_on((*servers_)["dovecot"], target, archive_dir);
  expect_target_holds(target, "kill_target", expected);
  std::printf("[ figures ] import into %s killed %d times, then completed: %zu messages, each once\n",
              GetParam().c_str(), kills, expected.messages);
}

TEST_P(InteropFaults, InterruptedAppendsOfRewrittenMessagesAreRecognised) {
  // The state a crash leaves when the server stored a message and the reply
  // never arrived: its record in flight. Cyrus and Courier stored the
  // at-risk messages changed, so only the rewrite fingerprint finds them.
  TestServer& target = (*servers_)[GetParam()];
  TempDir dir;
  std::filesystem::copy(archive_dir(), dir.path() + "/archive", std::filesystem::copy_options::recursive);
  std::string archive_dir = dir.path() + "/archive";
  std::string user = "rw_target";
  target.add_user(user);
  NullSink quiet;
  auto first = importing::run_import(import_options(target, user, archive_dir), quiet);
  ASSERT_TRUE(first.complete());
  auto expected = expected_on((*servers_)["dovecot"], target, archive_dir);
  expect_target_holds(target, user, expected);
  {
    auto a = archive::Archive::open(archive_dir, archive::Archive::Mode::write);
    std::set<archive::Hash> at_risk;
    for (auto& bytes : kAtRisk) at_risk.insert(archive::sha256(bytes));
    std::vector<archive::AppendRecord> records;
    std::optional<archive::AppendRecord> no_message_id;  // a draft: found by date and bytes
    a->for_each_append(*a->find_target(target.login(user) + "@" + target.host() + ":" +
                                       std::to_string(target.imaps_port())),
                       [&](const archive::AppendRecord& r) {
                         auto m = a->message(r.key.source);
                         if (m && at_risk.count(m->hash)) records.push_back(r);
                         else if (m && !no_message_id && extract_message_id(a->read_object(m->hash)).empty())
                           no_message_id = r;
                         return true;
                       });
    ASSERT_EQ(records.size(), kAtRisk.size());
    ASSERT_TRUE(no_message_id) << "the seed has a draft without Message-ID";
    no_message_id->target_uid = no_message_id->target_uidvalidity = 0;
    records.push_back(*no_message_id);
    archive::Batch batch(*a);
    for (size_t i = 0; i < records.size(); ++i) {
      auto r = records[i];
      r.state = archive::AppendState::in_flight;
      r.when -= 3600;
      if (i == 1) r.target_uidvalidity = r.target_uid = 0;  // no UID hint: found by Message-ID
      // (the last, without Message-ID, has no hint either)
      batch.put_append(r);
    }
    batch.commit();
  }
  auto again = importing::run_import(import_options(target, user, archive_dir), quiet);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(again.total(&importing::ImportFolderResult::reconciled), kAtRisk.size() + 1);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::appended), 0u);
  expect_target_holds(target, user, expected);
}

INSTANTIATE_TEST_SUITE_P(EachServer, InteropFaults, ::testing::ValuesIn(kKinds),
                         [](const auto& info) { return info.param; });

TEST(InteropCyrus, OtherUsersAndSharedFoldersStayOutUnlessAsked) {
  TestServer& cyrus = (*servers_)["cyrus"];
  TestServer& dovecot = (*servers_)["dovecot"];
  cyrus.setacl("bob", "INBOX", "alice", "lrs");
  cyrus.setacl("bob", "Sent", "alice", "lrs");
  cyrus.create_shared("Team Notes", {"alice"}, "Message-ID: <shared@interop.test>\r\nSubject: shared\r\n\r\nS\r\n");

  size_t own = 0;
  std::set<std::string> namespaces_listed;
  auto alice = cyrus.summary("alice", false);
  for (auto& f : alice["folders"]) {
    namespaces_listed.insert(f.value("namespace", "personal"));
    if (f.value("namespace", "personal") == "personal" && f["messages"].is_array()) own += f["messages"].size();
  }
  ASSERT_TRUE(namespaces_listed.count("other")) << "the ACL grant is not visible to alice";
  ASSERT_TRUE(namespaces_listed.count("shared")) << "the shared folder is not visible to alice";

  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  auto s = export_alice(cyrus, archive_dir);
  ASSERT_TRUE(s.complete());
  EXPECT_EQ(s.total(&exporting::FolderResult::new_messages), own);
  {
    auto a = archive::Archive::open(archive_dir, archive::Archive::Mode::read);
    for (auto& f : a->folders(a->accounts().at(0).id)) {
      EXPECT_EQ(f.ns_kind, archive::NamespaceKind::personal) << f.name_raw;
      EXPECT_FALSE(f.name_raw.starts_with("user.")) << f.name_raw;
    }
  }

  // Asked for: separate trees, which import leaves out without a --map.
  TempDir all;
  std::string all_dir = all.path() + "/archive";
  auto s2 = export_alice(cyrus, all_dir,
                         {imap::Namespace::personal, imap::Namespace::other_users, imap::Namespace::shared});
  ASSERT_TRUE(s2.complete());
  EXPECT_GT(s2.total(&exporting::FolderResult::new_messages), own);
  std::set<std::string> names;
  for (auto& f : s2.folders) names.insert(f.name);
  EXPECT_TRUE(names.count("#other/bob")) << "bob's INBOX";
  EXPECT_TRUE(names.count("#other/bob/Sent"));
  EXPECT_TRUE(names.count("#shared/Team Notes"));

  dovecot.add_user("alice_all");
  RecordingSink events;
  auto imported = importing::run_import(import_options(dovecot, "alice_all", all_dir), events);
  EXPECT_TRUE(imported.complete());
  size_t skipped = 0;
  for (auto& e : events.events())
    if (e["event"] == "mapping" && e.value("skipped", false)) ++skipped;
  EXPECT_GE(skipped, 3u);
  auto alice_all = dovecot.summary("alice_all", false);
  for (auto& f : alice_all["folders"]) {
    std::string raw = f["raw"];
    EXPECT_FALSE(raw.starts_with("user") || raw.find("bob") != std::string::npos || raw.starts_with("#") ||
                 raw.find("Team Notes") != std::string::npos)
        << "another user's or a shared folder became alice's own: " << raw;
  }
}

TEST(InteropCyrus, SubfoldersFollowTheirSpecialUseParent) {
  TestServer& cyrus = (*servers_)["cyrus"];
  std::string user = "archives_target";
  cyrus.add_user(user);
  {
    auto session = imap::Session::connect(endpoint(cyrus));
    session->login(credentials(cyrus, user));
    session->create("INBOX.Archives", "\\Archive");
    session->logout();
  }
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  ASSERT_TRUE(export_alice((*servers_)["dovecot"], archive_dir).complete());
  RecordingSink events;
  auto s = importing::run_import(import_options(cyrus, user, archive_dir), events);
  EXPECT_TRUE(s.complete());
  std::map<std::string, std::string> target_of;
  for (auto& e : events.events())
    if (e["event"] == "mapping" && e.contains("target_raw")) target_of[e["source"]] = e["target_raw"];
  EXPECT_EQ(target_of["Archive"], "INBOX.Archives");
  EXPECT_EQ(target_of["Archive/2019"], "INBOX.Archives.2019");
  auto source = view((*servers_)["dovecot"].summary("alice"));
  auto target = view(cyrus.summary(user));
  EXPECT_EQ(target["Archives/2019"].size(), source["Archive/2019"].size());
  EXPECT_GT(target["Archives/2019"].size(), 0u);
  EXPECT_FALSE(target.count("Archive/2019")) << "the child was left behind under the old name";
}

TEST(InteropCyrus, FolderPatternsMatchTheNamesPeopleSee) {
  TestServer& cyrus = (*servers_)["cyrus"];
  auto run = [&](std::vector<std::string> include, bool allow_unmatched, RecordingSink& events) {
    TempDir dir;
    exporting::ExportOptions o;
    o.archive_dir = dir.path() + "/archive";
    o.endpoint = endpoint(cyrus);
    o.credentials = credentials(cyrus, "alice");
    o.include = std::move(include);
    o.allow_unmatched = allow_unmatched;
    return exporting::run_export(o, events);
  };
  RecordingSink events;
  auto s = run({"Projects/*"}, false, events);
  std::set<std::string> names;
  for (auto& f : s.folders) names.insert(f.name);
  EXPECT_TRUE(names.count("Projects/2024/Q1")) << "Cyrus INBOX.Projects.2024.Q1";
  EXPECT_TRUE(names.count("Projects/2024/Q2"));
  EXPECT_FALSE(names.count("INBOX"));
  for (auto& n : names) EXPECT_TRUE(n.starts_with("Projects/")) << n;

  RecordingSink refused;
  try {
    run({"Nope/*"}, false, refused);
    FAIL() << "a pattern that matches nothing was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage);
    EXPECT_NE(std::string(e.what()).find("Nope/*"), std::string::npos);
  }
  RecordingSink warned;
  auto w = run({"Nope/*", "INBOX"}, true, warned);
  EXPECT_EQ(w.folders.size(), 1u);
  bool warning = false;
  for (auto& e : warned.events())
    if (e["event"] == "warning" && e.value("pattern", "") == "Nope/*") warning = true;
  EXPECT_TRUE(warning);
}

TEST(InteropCyrus, NamesCyrusRefusesAreImportedUnderAcceptableNames) {
  TestServer& dovecot = (*servers_)["dovecot"];
  TestServer& cyrus = (*servers_)["cyrus"];
  dovecot.add_user("odd_names");
  dovecot.append("odd_names", "Say \"hi\"", "Message-ID: <q@interop.test>\r\nSubject: q\r\n\r\nQ\r\n");
  dovecot.append("odd_names", "50% off", "Message-ID: <p@interop.test>\r\nSubject: p\r\n\r\nP\r\n");
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  {
    exporting::ExportOptions o;
    o.archive_dir = archive_dir;
    o.endpoint = endpoint(dovecot);
    o.credentials = credentials(dovecot, "odd_names");
    NullSink quiet;
    ASSERT_TRUE(exporting::run_export(o, quiet).complete());
  }
  RecordingSink events;
  auto s = importing::run_import(import_options(cyrus, "names_target", archive_dir), events);
  EXPECT_TRUE(s.complete()) << s.to_json().dump(2);
  std::map<std::string, std::string> renamed;
  for (auto& e : events.events())
    if (e["event"] == "warning" && e.contains("refused")) renamed[e["refused"]] = e["target"];
  auto canonical = view(cyrus.summary("names_target"));
  for (std::string source : {"Say \"hi\"", "50% off"}) {
    std::string refused = "INBOX." + source;
    ASSERT_TRUE(renamed.count(refused)) << "Cyrus accepted " << refused << " or the rename was not reported";
    std::string shown = renamed[refused].substr(6);  // the canonical name, without "INBOX."
    EXPECT_EQ(shown.find_first_of("\"%"), std::string::npos) << shown;
    ASSERT_TRUE(canonical.count(shown)) << source << " is not on the target as " << shown;
    EXPECT_EQ(canonical[shown].size(), 1u) << shown;
  }
  std::printf("[ figures ] Cyrus refused %zu of 2 folder names; imported under acceptable names\n", renamed.size());
}

}  // namespace
}  // namespace imapstage

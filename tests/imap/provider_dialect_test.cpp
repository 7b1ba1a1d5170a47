// Provider dialects against the scripted fake server: Gmail's X-GM-EXT-1
// detection, Microsoft 365's limit on command length ("BAD Command Argument
// Error. 11") and its loss of \Flagged on APPEND; and the provider profiles.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "batch/profiles.h"
#include "batch/providers.h"
#include "common/error.h"
#include "common/events.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "tests/support/fake_imap_server.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::FakeExchange;
using testing::FakeImapServer;
using testing::TempDir;

std::string message(int n) {
  return "Message-ID: <p" + std::to_string(n) + "@fake>\r\nSubject: provider " + std::to_string(n) +
         "\r\n\r\nbody " + std::to_string(n) + "\r\n";
}

// Microsoft 365 refuses command lines beyond ~10,000 characters.
void refuse_long_lines(FakeImapServer& server) {
  server.on("^UID ", [](FakeExchange& x) {
    if (x.command().text.size() > 10000) x.tagged("BAD Command Argument Error. 11");
    else x.standard();
  });
}

std::unique_ptr<imap::Session> logged_in(FakeImapServer& server) {
  auto s = imap::Session::connect(server.endpoint());
  s->login({"alice", "pw"});
  return s;
}

TEST(SplitSequenceSet, PartsStayUnderTheLimitInOrder) {
  std::vector<imap::UidRange> ranges;
  for (uint32_t u = 1; u < 20000; u += 2) ranges.push_back({u, u});
  auto parts = imap::split_sequence_set(ranges, 1000);
  ASSERT_GT(parts.size(), 1u);
  std::vector<imap::UidRange> joined;
  for (auto& p : parts) {
    EXPECT_LE(imap::to_sequence_set(p).size(), 1000u);
    joined.insert(joined.end(), p.begin(), p.end());
  }
  ASSERT_EQ(joined.size(), ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) EXPECT_EQ(joined[i].first, ranges[i].first);
  EXPECT_TRUE(imap::split_sequence_set({}, 1000).empty());
}

TEST(ProviderDialect, LongUidSetsAreSplitUnderTheLimit) {
  FakeImapServer server;
  for (int i = 1; i <= 12; ++i) server.add_message("INBOX", message(i));
  refuse_long_lines(server);
  auto s = logged_in(server);
  s->examine("INBOX");
  // Every other UID up to 6000: about 17,000 characters as one set.
  std::vector<imap::UidRange> odd;
  for (uint32_t u = 1; u < 6000; u += 2) odd.push_back({u, u});
  ASSERT_GT(imap::to_sequence_set(odd).size(), 10000u);
  std::vector<uint32_t> sizes, flags, bodies;
  s->fetch_sizes(odd, [&](uint32_t uid, uint64_t) { sizes.push_back(uid); });
  s->fetch_flags(odd, std::nullopt, [&](imap::FlagUpdate&& f) { flags.push_back(f.uid); });
  s->fetch_batches({odd}, [&](size_t, imap::FetchedMessage&& m) { bodies.push_back(m.uid); }, {});
  std::vector<uint32_t> want = {1, 3, 5, 7, 9, 11};
  EXPECT_EQ(sizes, want);
  EXPECT_EQ(flags, want);
  EXPECT_EQ(bodies, want);
  size_t fetches = 0;
  for (auto& c : server.commands()) {
    EXPECT_LE(c.text.size(), 8000u) << c.text.substr(0, 40);
    if (c.text.rfind("UID FETCH", 0) == 0) ++fetches;
  }
  EXPECT_GE(fetches, 6u);  // two or more commands each
  // A smaller limit makes more commands.
  auto e = server.endpoint();
  e.max_command_length = 2000;
  auto small = imap::Session::connect(e);
  small->login({"alice", "pw"});
  small->examine("INBOX");
  size_t before = server.commands().size();
  sizes.clear();
  small->fetch_sizes(odd, [&](uint32_t uid, uint64_t) { sizes.push_back(uid); });
  EXPECT_EQ(sizes, want);
  EXPECT_GE(server.commands().size() - before, 8u);  // 14,000 characters in parts of 1,900
}

TEST(ProviderDialect, GmailIsDetectedByXGmExt1) {
  FakeImapServer server;
  server.add_message("INBOX", message(1));
  EXPECT_EQ(logged_in(server)->detected_provider(), "");
  server.set_capabilities("IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS NAMESPACE X-GM-EXT-1 APPENDLIMIT=35651584");
  auto s = logged_in(server);
  EXPECT_EQ(s->detected_provider(), "gmail");
  EXPECT_EQ(s->append_limit(), 35651584u);

  TempDir dir;
  exporting::ExportOptions o;
  o.archive_dir = dir.path() + "/archive";
  o.endpoint = server.endpoint();
  o.credentials = {"alice", "pw"};
  o.account_name = "alice";
  RecordingSink events;
  auto summary = exporting::run_export(o, events);
  EXPECT_TRUE(summary.complete());
  int said = 0;
  for (auto& e : events.events())
    if (e.value("event", "") == "provider") {
      ++said;
      EXPECT_EQ(e.value("provider", ""), "gmail");
      EXPECT_NE(e.value("text", "").find("X-GM-EXT-1"), std::string::npos);
    }
  EXPECT_EQ(said, 1);
}

class FlaggedQuirkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    source_.add_message("INBOX", message(1), {"\\Flagged", "\\Seen"});
    source_.add_message("INBOX", message(2), {"\\Seen"});
    source_.add_message("INBOX", message(3), {"\\Flagged", "$Work"});
    exporting::ExportOptions o;
    o.archive_dir = dir_.path() + "/archive";
    o.endpoint = source_.endpoint();
    o.credentials = {"alice", "pw"};
    o.account_name = "alice";
    NullSink sink;
    ASSERT_TRUE(exporting::run_export(o, sink).complete());
    // Microsoft 365: \Flagged given with APPEND is dropped.
    target_.on("^APPEND", [](FakeExchange& x) {
      x.standard();
      auto inbox = x.server().folder("INBOX");
      for (auto& m : inbox.messages) {
        auto flags = m.flags;
        std::erase(flags, "\\Flagged");
        x.server().set_flags("INBOX", m.uid, flags);
      }
    });
  }

  importing::ImportSummary import(bool restore) {
    importing::ImportOptions o;
    o.archive_dir = dir_.path() + "/archive";
    o.endpoint = target_.endpoint();
    o.credentials = {"bob", "pw"};
    o.account = "alice";
    o.policy.restore_flagged = restore;
    NullSink sink;
    return importing::run_import(o, sink);
  }

  std::map<std::string, std::vector<std::string>> target_flags() {
    std::map<std::string, std::vector<std::string>> out;
    for (auto& m : target_.folder("INBOX").messages) {
      auto f = m.flags;
      std::sort(f.begin(), f.end());
      out[m.body] = f;
    }
    return out;
  }

  TempDir dir_;
  FakeImapServer source_, target_;
};

TEST_F(FlaggedQuirkTest, WithoutTheQuirkTheFlagIsLost) {
  ASSERT_TRUE(import(false).complete());
  auto flags = target_flags();
  EXPECT_EQ(flags[message(1)], (std::vector<std::string>{"\\Seen"}));
}

TEST_F(FlaggedQuirkTest, FlaggedIsStoredAgainAfterAppend) {
  auto summary = import(true);
  ASSERT_TRUE(summary.complete());
  auto flags = target_flags();
  ASSERT_EQ(flags.size(), 3u);
  EXPECT_EQ(flags[message(1)], (std::vector<std::string>{"\\Flagged", "\\Seen"}));
  EXPECT_EQ(flags[message(2)], (std::vector<std::string>{"\\Seen"}));
  EXPECT_EQ(flags[message(3)], (std::vector<std::string>{"$Work", "\\Flagged"}));
  size_t stores = 0;
  for (auto& c : target_.commands())
    if (c.text.rfind("UID STORE", 0) == 0) {
      ++stores;
      EXPECT_NE(c.text.find("\\Flagged"), std::string::npos) << c.text;
    }
  EXPECT_EQ(stores, 2u);  // only the flagged messages
}

TEST(ProviderProfiles, DefaultsAndOverrides) {
  auto config = batch::parse_config(R"(
[profiles.g]
provider = "gmail"
token_cmd = "print-token"
domains = ["example.org"]

[profiles.m]
provider = "microsoft365"
host = "imap.tenant.example"
restore_flagged = false
max_command_length = 4000
daily_budget = "1GB"
server_max_bandwidth = "10MB"
server_max_messages_per_second = 20
)");
  const auto& g = config.profile("g");
  EXPECT_EQ(g.provider, "gmail");
  EXPECT_EQ(g.host, "imap.gmail.com");
  EXPECT_EQ(g.tls, "implicit");
  EXPECT_EQ(g.mechanism, imap::AuthMechanism::xoauth2);
  EXPECT_EQ(g.max_message_mib, 34u);  // 35 MB
  EXPECT_EQ(g.endpoint().effective_port(), 993);
  EXPECT_EQ(g.endpoint().max_command_length, 8000u);
  const auto& m = config.profile("m");
  EXPECT_EQ(m.host, "imap.tenant.example");
  EXPECT_FALSE(m.restore_flagged);
  EXPECT_EQ(m.endpoint().max_command_length, 4000u);
  EXPECT_EQ(m.daily_budget, 1ull << 30);
  EXPECT_EQ(m.server_max_bytes_per_second, double(10 << 20));
  EXPECT_EQ(m.server_max_messages_per_second, 20.0);
  auto m2 = batch::parse_config("[profiles.x]\nprovider = \"m365\"\n").profile("x");
  EXPECT_TRUE(m2.restore_flagged);
  EXPECT_EQ(m2.host, "outlook.office365.com");
  EXPECT_THROW(batch::parse_config("[profiles.y]\nprovider = \"yahoo\"\n"), Error);
  EXPECT_NE(batch::providers_table().find("microsoft365"), std::string::npos);
}

TEST(ProviderProfiles, FolderNameQuirksComeFromTheProviderAndCanBeOverridden) {
  auto config = batch::parse_config(R"(
[profiles.g]
provider = "gmail"
[profiles.m]
provider = "microsoft365"
[profiles.plain]
host = "imap.example.org"
[profiles.forced]
host = "imap.example.org"
case_insensitive_names = true
reserved_folders = ["Public Folders/", "Chats"]
[profiles.off]
provider = "gmail"
case_insensitive_names = false
reserved_folders = []
)");
  EXPECT_TRUE(config.profile("g").case_insensitive_names);
  EXPECT_EQ(config.profile("g").reserved_folders, (std::vector<std::string>{"[Gmail]/", "[Google Mail]/"}));
  EXPECT_TRUE(config.profile("m").case_insensitive_names);
  EXPECT_TRUE(config.profile("m").reserved_folders.empty());
  EXPECT_FALSE(config.profile("plain").case_insensitive_names);
  EXPECT_TRUE(config.profile("forced").case_insensitive_names);
  EXPECT_EQ(config.profile("forced").reserved_folders, (std::vector<std::string>{"Public Folders/", "Chats"}));
  EXPECT_FALSE(config.profile("off").case_insensitive_names);
  EXPECT_TRUE(config.profile("off").reserved_folders.empty());
  EXPECT_THROW(batch::parse_config("[profiles.x]\nhost = \"h\"\ncase_insensitive_names = \"yes\"\n"), Error);
}

// Folder names on targets that ignore case or reserve names (Gmail, Microsoft 365): the fake acting
// as such a target, and the harness Dovecot (case-sensitive) without the rules and with them forced.
namespace folder_names {

using testing::FakeImapServer;
using testing::TempDir;
using testing::TestServer;

std::string message(const std::string& tag) {
  return "Message-ID: <" + tag + "@names>\r\nSubject: " + tag + "\r\n\r\nbody of " + tag + "\r\n";
}

importing::TargetNames gmail_names() {
  importing::TargetNames n;
  n.case_insensitive = true;
  n.reserved = {"[Gmail]/"};
  return n;
}

// target folder -> the subjects of its messages, sorted
std::map<std::string, std::vector<std::string>> contents(const FakeImapServer& server,
                                                         const std::vector<std::string>& folders) {
  std::map<std::string, std::vector<std::string>> out;
  for (auto& name : folders) {
    if (!server.has_folder(name)) continue;
    auto f = server.folder(name);
    auto& v = out[f.name];
    for (auto& m : f.messages) {
      size_t from = m.body.find("Subject: ") + 9;
      v.push_back(m.body.substr(from, m.body.find("\r\n", from) - from));
    }
    std::sort(v.begin(), v.end());
  }
  return out;
}

class CaseInsensitiveTargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The source tells the folders apart (as Dovecot and Cyrus do).
    source_.add_folder("Projects");
    source_.add_folder("projects");
    source_.add_folder("projects/2024");
    source_.add_folder("[Gmail]");
    source_.add_folder("[Gmail]/Foo");
    source_.add_message("Projects", message("upper"));
    source_.add_message("projects", message("lower"));
    source_.add_message("projects/2024", message("lower-2024"));
    source_.add_message("[Gmail]/Foo", message("foo"));
    export_source();
    // Gmail: names compared ignoring case, "[Gmail]/..." its own.
    target_.set_case_insensitive_names(true);
    target_.set_reserved_names({"[Gmail]/"});
    target_.add_folder("[Gmail]", 1, {"\\Noselect"});
    target_.add_folder("[Gmail]/All Mail", 1, {"\\All"});
  }

  void export_source() {
    exporting::ExportOptions o;
    o.archive_dir = archive_;
    o.endpoint = source_.endpoint();
    o.credentials = {"alice", "pw"};
    o.account_name = "alice";
    NullSink sink;
    ASSERT_TRUE(exporting::run_export(o, sink).complete());
  }

  importing::ImportSummary import(const importing::TargetNames& names, EventSink& events,
                                  std::vector<std::string> include = {}) {
    importing::ImportOptions o;
    o.archive_dir = archive_;
    o.endpoint = target_.endpoint();
    o.credentials = {"bob", "pw"};
    o.account = "alice";
    o.include = std::move(include);
    o.connections = 1;
    o.policy.names = names;
    return importing::run_import(o, events);
  }

  const importing::ImportFolderResult& folder(const importing::ImportSummary& s, const std::string& source) {
    for (auto& f : s.folders)
      if (f.source == source) return f;
    throw std::runtime_error("no folder " + source);
  }

  TempDir dir_;
  std::string archive_ = dir_.path() + "/archive";
  FakeImapServer source_, target_;
  const std::vector<std::string> names_ = {"Projects", "projects (2)", "projects (2)/2024", "[Gmail] (imported)",
                                           "[Gmail] (imported)/Foo", "[Gmail]/Foo", "projects/2024"};
};

TEST_F(CaseInsensitiveTargetTest, WithoutTheRuleFoldersMergeSilently) {
  NullSink sink;
  auto s = import({}, sink);
  // The target took "projects" to be "Projects": two source folders in one.
  EXPECT_EQ(contents(target_, {"Projects"})["Projects"], (std::vector<std::string>{"lower", "upper"}));
}

TEST_F(CaseInsensitiveTargetTest, FoldersDifferingInCaseOrReservedGetDistinctNamesEveryRun) {
  RecordingSink events;
  auto first = import(gmail_names(), events);
  ASSERT_TRUE(first.complete());
  auto seen = contents(target_, names_);
  EXPECT_EQ(seen["Projects"], (std::vector<std::string>{"upper"}));
  EXPECT_EQ(seen["projects (2)"], (std::vector<std::string>{"lower"}));
  EXPECT_EQ(seen["projects (2)/2024"], (std::vector<std::string>{"lower-2024"}));
  EXPECT_EQ(seen["[Gmail] (imported)/Foo"], (std::vector<std::string>{"foo"}));
  EXPECT_TRUE(target_.folder("[Gmail]/All Mail").messages.empty());
  // Reported: the summary (and its JSON, kept in the run history) and the mapping events.
  EXPECT_EQ(folder(first, "projects").target, "projects (2)");
  EXPECT_TRUE(folder(first, "projects").reason.starts_with("renamed: projects differs only in case"));
  EXPECT_TRUE(folder(first, "[Gmail]/Foo").reason.starts_with("renamed: [Gmail]/Foo is reserved by the target"));
  EXPECT_EQ(folder(first, "Projects").reason, "same name");
  auto json = first.to_json();
  bool in_json = false;
  for (auto& f : json["per_folder"])
    if (f["folder"] == "projects")
      in_json = f["target"] == "projects (2)" && f["reason"].get<std::string>().starts_with("renamed:");
  EXPECT_TRUE(in_json);
  int renamed_events = 0;
  for (auto& e : events.events())
    if (e["event"] == "mapping" && e["reason"].get<std::string>().starts_with("renamed:")) ++renamed_events;
  EXPECT_EQ(renamed_events, 4);  // projects, projects/2024, [Gmail], [Gmail]/Foo

  // Again: the same names, nothing sent twice, nothing created.
  NullSink quiet;
  auto again = import(gmail_names(), quiet);
  ASSERT_TRUE(again.complete());
  EXPECT_EQ(again.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::already_there), 4u);
  for (auto& f : again.folders) {
    EXPECT_EQ(f.target, folder(first, f.source).target);
    EXPECT_FALSE(f.created) << f.source;
  }

  // A run of "projects" alone, with new mail, still goes to "projects (2)".
  source_.add_message("projects", message("lower-new"));
  export_source();
  auto alone = import(gmail_names(), quiet, {"projects"});
  ASSERT_TRUE(alone.complete());
  ASSERT_EQ(alone.folders.size(), 1u);
  EXPECT_EQ(alone.folders[0].target, "projects (2)");
  EXPECT_EQ(alone.folders[0].appended, 1u);
  EXPECT_EQ(contents(target_, {"projects (2)"})["projects (2)"],
            (std::vector<std::string>{"lower", "lower-new"}));
  EXPECT_EQ(contents(target_, {"Projects"})["Projects"], (std::vector<std::string>{"upper"}));
}

// A target that turns out to be Gmail (X-GM-EXT-1) gets Gmail's name rules
// when none were chosen, and says so in its provider event.
TEST_F(CaseInsensitiveTargetTest, ATargetFoundToBeGmailGetsGmailsNameRulesUnasked) {
  target_.set_gmail();
  RecordingSink events;
  auto s = import({}, events);
  ASSERT_TRUE(s.complete());
  EXPECT_TRUE(s.policy.names.case_insensitive);
  EXPECT_EQ(folder(s, "projects").target, "projects (2)");
  EXPECT_EQ(folder(s, "[Gmail]/Foo").target, "[Gmail] (imported)/Foo");
  auto seen = contents(target_, names_);
  EXPECT_EQ(seen["Projects"], (std::vector<std::string>{"upper"}));
  EXPECT_EQ(seen["projects (2)"], (std::vector<std::string>{"lower"}));
  EXPECT_EQ(seen["[Gmail] (imported)/Foo"], (std::vector<std::string>{"foo"}));
  std::string applied;
  for (auto& e : events.events())
    if (e["event"] == "provider") applied = e["applied"];
  EXPECT_NE(applied.find("folder names compared without case"), std::string::npos) << applied;
  EXPECT_NE(applied.find("[Gmail]/ reserved"), std::string::npos) << applied;
}

// The harness Dovecot tells names apart: without the rules every folder keeps
// its name; forced by option, they apply there too.
class DovecotFolderNamesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.seed = "none";
    o.users = {"alice"};
    o.target_users = {"plain", "forced"};
    server_ = new TestServer(o);
    server_->append("alice", "Projects", message("upper"));
    server_->append("alice", "projects", message("lower"));
    server_->append("alice", "[Gmail]/Foo", message("foo"));
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static imap::Endpoint endpoint() { return server_->endpoint(); }
  static importing::ImportSummary import(const std::string& archive, const std::string& user,
                                         const importing::TargetNames& names) {
    importing::ImportOptions o;
    o.archive_dir = archive;
    o.endpoint = endpoint();
    o.credentials = {user, server_->password(user)};
    o.policy.names = names;
    NullSink sink;
    return importing::run_import(o, sink);
  }
  // folder name -> number of messages
  static std::map<std::string, size_t> folders_of(const std::string& user) {
    std::map<std::string, size_t> out;
    auto summary = server_->summary(user, false);
    for (auto& f : summary["folders"])
      if (f.contains("messages") && f["messages"].is_array() && !f["messages"].empty())
        out[f["name"].get<std::string>()] = f["messages"].size();
    return out;
  }
  static TestServer* server_;
};

TestServer* DovecotFolderNamesTest::server_ = nullptr;

// The command line: --provider gmail brings the rules (its host, TLS and
// XOAUTH2 overridden here), --case-insensitive-names and --reserved-folder
// force them; the summary lists what was renamed.
TEST_F(CaseInsensitiveTargetTest, TheProviderOrTheOptionsBringTheRulesToTheCommandLine) {
  std::string pw = dir_.path() + "/pw";
  std::ofstream(pw) << "pw\n";
  std::filesystem::permissions(pw, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto args = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"import", "--archive", archive_, "--host", "127.0.0.1", "--port",
                                  std::to_string(target_.port()), "--tls", "none", "--auth", "login", "--user", "bob",
                                  "--password-file", pw, "--connections", "1", "--timeout", "5"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  auto r = testing::run_imapstage(args({"--provider", "gmail"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("folders renamed for the target's names"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("projects -> projects (2)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[Gmail]/Foo -> [Gmail] (imported)/Foo"), std::string::npos) << r.out;
  EXPECT_EQ(contents(target_, {"projects (2)"})["projects (2)"], (std::vector<std::string>{"lower"}));

  // Forced without a provider, into a fresh target; --reserved-folder replaces the list.
  FakeImapServer other;
  other.set_case_insensitive_names(true);
  std::vector<std::string> extra = {"--case-insensitive-names", "--reserved-folder", "[Gmail]/", "--json"};
  auto a = args(extra);
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] == "--port") a[i + 1] = std::to_string(other.port());
  auto forced = testing::run_imapstage(a);
  ASSERT_EQ(forced.exit_code, 0) << forced.out << forced.err;
  EXPECT_TRUE(other.has_folder("projects (2)"));
  EXPECT_TRUE(other.has_folder("[Gmail] (imported)/Foo"));
  EXPECT_NE(forced.out.find("\"reason\":\"renamed: projects differs only in case"), std::string::npos) << forced.out;
}

TEST_F(DovecotFolderNamesTest, NamesAreKeptWithoutTheRulesAndRenamedWithThem) {
  TempDir dir;
  std::string archive = dir.path() + "/archive";
  {
    exporting::ExportOptions o;
    o.archive_dir = archive;
    o.endpoint = endpoint();
    o.credentials = {"alice", server_->password("alice")};
    NullSink sink;
    ASSERT_TRUE(exporting::run_export(o, sink).complete());
  }
  auto plain = import(archive, "plain", {});
  ASSERT_TRUE(plain.complete());
  EXPECT_EQ(folders_of("plain"),
            (std::map<std::string, size_t>{{"Projects", 1}, {"projects", 1}, {"[Gmail]/Foo", 1}}));
  for (auto& f : plain.folders) EXPECT_FALSE(f.reason.starts_with("renamed")) << f.source << ": " << f.reason;

  auto forced = import(archive, "forced", gmail_names());
  ASSERT_TRUE(forced.complete());
  auto got = folders_of("forced");
  EXPECT_EQ(got.size(), 3u);
  EXPECT_EQ(got["[Gmail] (imported)/Foo"], 1u);
  // Which of the two keeps its name is the archive's folder order; the other is numbered.
  EXPECT_EQ(got.count("Projects") + got.count("projects"), 1u);
  EXPECT_EQ(got.count("Projects (2)") + got.count("projects (2)"), 1u);
  auto again = import(archive, "forced", gmail_names());
  EXPECT_EQ(again.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(folders_of("forced"), got);
}

}  // namespace folder_names

}  // namespace
}  // namespace imapstage

// The file sources end to end against the harness Dovecot: a Maildir (the
// server's own, holding the harness corpus), an mbox tree written by Python's
// `mailbox` and an EML tree, each exported with `imapstage export --source`,
// imported into an empty account, checked with `verify --against target
// --deep`, and compared message by message (bytes, flags, keywords,
// INTERNALDATE) with what the source holds; a re-run adds nothing; manifest,
// offline verify, extract and mount work on the result.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "archive-format/archive.h"
#include "tests/support/mount_helpers.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::TestServer;

// folder -> sorted "sha256 internaldate flags..." of each message
using MailView = std::map<std::string, std::vector<std::string>>;

std::string fingerprint(const std::string& sha, int64_t date, std::vector<std::string> flags) {
  std::sort(flags.begin(), flags.end());
  std::string out = sha + " " + std::to_string(date);
  for (auto& f : flags) out += " " + f;
  return out;
}

MailView server_view(const nlohmann::json& summary) {
  MailView out;
  for (auto& f : summary["folders"]) {
    if (!f["messages"].is_array() || f["messages"].empty()) continue;
    auto& v = out[f["canonical"].get<std::string>()];
    for (auto& m : f["messages"]) {
      std::vector<std::string> flags;
      for (auto& x : m["flags"])
        if (x != "\\Recent") flags.push_back(x);
      v.push_back(fingerprint(m["sha256"], m["internaldate_unix"], flags));
    }
    std::sort(v.begin(), v.end());
  }
  return out;
}

MailView archive_view(const fs::path& dir, const std::string& account) {
  auto a = archive::Archive::open(dir, archive::Archive::Mode::read);
  auto acc = a->find_account(account);
  EXPECT_TRUE(acc) << account;
  MailView out;
  if (!acc) return out;
  for (auto& f : a->folders(acc->id)) {
    std::vector<std::string> v;
    a->for_each_message(acc->id, f.id, f.uidvalidity, [&](const archive::MessageRecord& m) {
      if (m.state == archive::MessageState::present)
        v.push_back(fingerprint(archive::to_hex(m.hash), m.internaldate, archive::flags_to_imap(m.flags, m.keywords)));
      return true;
    });
    std::sort(v.begin(), v.end());
    if (!v.empty()) out[f.canonical_name()] = v;
  }
  return out;
}

MailView expected_view(const fs::path& file) {
  std::ifstream in(file);
  nlohmann::json j;
  in >> j;
  MailView out;
  for (auto& [folder, messages] : j.items()) {
    if (messages.empty()) continue;
    auto& v = out[folder];
    for (auto& m : messages) v.push_back(fingerprint(m["sha256"], m["internaldate"], m["flags"]));
    std::sort(v.begin(), v.end());
  }
  return out;
}

// Runs tests/sources/write_corpus.py KIND OUT EXPECTED with the interpreter the harness uses.
testing::ProcessResult write_corpus(const std::string& kind, const std::string& out, const std::string& expected) {
  auto argv = TestServer::script_command();
  argv.back() = std::string(IMAPSTAGE_SOURCE_DIR) + "/tests/sources/write_corpus.py";
  argv.insert(argv.end(), {kind, out, expected});
  return testing::run_process(argv);
}

size_t count(const MailView& v) {
  size_t n = 0;
  for (auto& [f, m] : v) n += m.size();
  return n;
}

nlohmann::json summary_event(const std::string& out) {
  std::istringstream lines(out);
  std::string line;
  nlohmann::json last;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("event", "") == "summary") last = j;
  }
  return last;
}

class FileSourcesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.users = {"alice"};
    o.target_users = {"t_maildir", "t_mbox", "t_eml"};
    server_ = new TestServer(o);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  static nlohmann::json export_files(const std::string& archive, const std::string& spec, const std::string& account) {
    auto r = testing::run_imapstage({"export", "--archive", archive, "--source", spec, "--account", account, "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
    auto s = summary_event(r.out);
    EXPECT_EQ(s.value("source", ""), spec.substr(0, spec.find(':')));
    return s;
  }

  // Imports `account` into `target`, then compares the target with the archive (--deep).
  static void import_and_verify(const std::string& archive, const std::string& account, const std::string& target) {
    std::vector<std::string> server = {"--host", server_->host(), "--port", std::to_string(server_->imaps_port()),
                                       "--ca-file", server_->ca_file(), "--user", target, "--password-file",
                                       server_->password_file(target)};
    std::vector<std::string> import = {"import", "--archive", archive, "--account", account, "--json"};
    import.insert(import.end(), server.begin(), server.end());
    auto r = testing::run_imapstage(import);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::string> verify = {"verify", "--archive", archive, "--account", account, "--against", "target",
                                       "--deep", "--json"};
    verify.insert(verify.end(), server.begin(), server.end());
    auto v = testing::run_imapstage(verify);
    EXPECT_EQ(v.exit_code, 0) << v.err << v.out;
  }

  static void rerun_adds_nothing(const std::string& archive, const std::string& spec, const std::string& account) {
    auto s = export_files(archive, spec, account);
    EXPECT_EQ(s["messages"], 0) << s.dump();
    EXPECT_EQ(s["expunged"], 0) << s.dump();
    EXPECT_EQ(s["flags_updated"], 0) << s.dump();
  }

  static TestServer* server_;
};

TestServer* FileSourcesTest::server_ = nullptr;

TEST_F(FileSourcesTest, MaildirOfTheServerArchivesWhatItsImapShows) {
  TempDir tmp;
  std::string archive = tmp.path() + "/archive";
  std::string maildir = server_->dir() + "/mail/alice/Maildir";
  auto source = server_view(server_->summary("alice"));
  ASSERT_GT(count(source), 150u);

  auto s = export_files(archive, "maildir:" + maildir, "alice-files");
  EXPECT_EQ(s["complete"], true) << s.dump();
  // Every message with the bytes, flags, keywords and INTERNALDATE Dovecot serves for it.
  EXPECT_EQ(archive_view(archive, "alice-files"), source);
  rerun_adds_nothing(archive, "maildir:" + maildir, "alice-files");

  // The same mail exported over IMAP into the same archive is the same objects (nothing new stored).
  auto r = testing::run_imapstage({"export", "--archive", archive, "--host", server_->host(), "--port",
                                   std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user",
                                   "alice", "--password-file", server_->password_file("alice"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto imap = summary_event(r.out);
  EXPECT_EQ(imap["bytes_stored"], 0) << imap.dump();
  EXPECT_EQ(imap["bytes_deduplicated"], imap["bytes_fetched"]);

  import_and_verify(archive, "alice-files", "t_maildir");
  EXPECT_EQ(server_view(server_->summary("t_maildir")), source);

  // The archive's own checks and the manifest take the new records as they are.
  auto offline = testing::run_imapstage({"verify", "--archive", archive, "--json"});
  EXPECT_EQ(offline.exit_code, 0) << offline.err;
  auto manifest = testing::run_imapstage({"manifest", "--archive", archive, "--out", tmp.path() + "/m.json"});
  EXPECT_EQ(manifest.exit_code, 0) << manifest.err;
  auto check = testing::run_imapstage({"manifest", "check", "--archive", archive, "--manifest", tmp.path() + "/m.json"});
  EXPECT_EQ(check.exit_code, 0) << check.err << check.out;
  // ls names the kind of source.
  auto ls = testing::run_imapstage({"ls", "--archive", archive});
  EXPECT_NE(ls.out.find("maildir"), std::string::npos) << ls.out;
}

TEST_F(FileSourcesTest, MboxWrittenByPythonMailboxRoundTrips) {
  TempDir tmp;
  std::string archive = tmp.path() + "/archive";
  std::string mbox = tmp.path() + "/mbox";
  auto w = write_corpus("mbox", mbox, tmp.path() + "/expected.json");
  ASSERT_EQ(w.exit_code, 0) << w.err;
  auto expected = expected_view(tmp.path() + "/expected.json");
  ASSERT_GT(count(expected), 150u);

  auto s = export_files(archive, "mbox:" + mbox, "carol-mbox");
  EXPECT_EQ(s["complete"], true) << s.dump();
  EXPECT_EQ(archive_view(archive, "carol-mbox"), expected);
  rerun_adds_nothing(archive, "mbox:" + mbox, "carol-mbox");

  import_and_verify(archive, "carol-mbox", "t_mbox");
  EXPECT_EQ(server_view(server_->summary("t_mbox")), expected);

  // extract writes the account out as a Maildir, which exports back to the same messages and objects.
  auto x = testing::run_imapstage({"extract", "--archive", archive, "--account", "carol-mbox", "--to", "maildir",
                                   "--out", tmp.path() + "/extracted"});
  ASSERT_EQ(x.exit_code, 0) << x.err;
  auto back = export_files(archive, "maildir:" + tmp.path() + "/extracted/carol-mbox", "carol-extracted");
  EXPECT_EQ(back["bytes_stored"], 0) << back.dump();
  EXPECT_EQ(archive_view(archive, "carol-extracted"), expected);
  // So does extract --to eml: its index.csv keeps the flags, keywords and INTERNALDATE.
  x = testing::run_imapstage({"extract", "--archive", archive, "--account", "carol-mbox", "--to", "eml", "--out",
                              tmp.path() + "/eml-out"});
  ASSERT_EQ(x.exit_code, 0) << x.err;
  back = export_files(archive, "eml:" + tmp.path() + "/eml-out/carol-mbox", "carol-eml-again");
  EXPECT_EQ(back["bytes_stored"], 0) << back.dump();
  EXPECT_EQ(archive_view(archive, "carol-eml-again"), expected);

  // Mail appended to an mbox is the only thing a re-run adds.
  {
    std::ofstream out(mbox + "/INBOX.mbox", std::ios::app | std::ios::binary);
    out << "From someone@example.org Mon Feb  3 04:05:06 2025\nSubject: late\nStatus: RO\n\nFrom here on, late.\n\n";
  }
  auto again = export_files(archive, "mbox:" + mbox, "carol-mbox");
  EXPECT_EQ(again["messages"], 1) << again.dump();
  EXPECT_EQ(again["expunged"], 0);
}

TEST_F(FileSourcesTest, EmlDirectoryRoundTrips) {
  TempDir tmp;
  std::string archive = tmp.path() + "/archive";
  std::string eml = tmp.path() + "/eml";
  auto w = write_corpus("eml", eml, tmp.path() + "/expected.json");
  ASSERT_EQ(w.exit_code, 0) << w.err;
  auto expected = expected_view(tmp.path() + "/expected.json");

  auto s = export_files(archive, "eml:" + eml, "carol-eml");
  EXPECT_EQ(s["complete"], true) << s.dump();
  EXPECT_EQ(archive_view(archive, "carol-eml"), expected);
  rerun_adds_nothing(archive, "eml:" + eml, "carol-eml");
  import_and_verify(archive, "carol-eml", "t_eml");
  EXPECT_EQ(server_view(server_->summary("t_eml")), expected);

  // The account through `imapstage mount` is a Maildir that exports back to the same messages.
  fs::path mnt = tmp.path() + "/mnt";
  fs::create_directory(mnt);
  testing::Mount mount(archive, mnt);
  ASSERT_TRUE(mount.ok()) << mount.result().err;
  std::string again = tmp.path() + "/archive-again";
  export_files(again, "maildir:" + (mnt / "carol-eml").string(), "through-mount");
  EXPECT_EQ(archive_view(again, "through-mount"), expected);
  EXPECT_EQ(mount.unmount(), 0);
}

}  // namespace
}  // namespace imapstage

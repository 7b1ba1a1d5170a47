// Real readers on a real export: the harness Dovecot is exported by the
// imapstage binary (run_imapstage), the archive is mounted, and a private
// Dovecot (its imap binary with mail_location on the mount), Python's
// mailbox.Maildir and grep read every message: bytes (SHA-256), flags,
// keywords and INTERNALDATE equal the archive's. A mount made while an export
// runs shows committed messages only.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "filesystem/names.h"
#include "tests/filesystem/python_readers.h"
#include "tests/support/mount_helpers.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

namespace fs = std::filesystem;
using testing::Mount;
using testing::TempDir;

std::string fingerprint(const std::string& sha256, int64_t date, uint64_t size, std::vector<std::string> flags) {
  std::sort(flags.begin(), flags.end());
  std::string out = fmt::format("{} {} {}", sha256, date, size);
  for (auto& f : flags) out += " " + f;
  return out;
}

// Every present message of the current generations, as fingerprints.
std::multiset<std::string> archive_fingerprints(const fs::path& dir, size_t* folders = nullptr) {
  std::multiset<std::string> out;
  auto a = archive::Archive::open(dir, archive::Archive::Mode::read);
  if (folders) *folders = 0;
  for (auto& account : a->accounts())
    for (auto& f : a->folders(account.id)) {
      if (f.noselect) continue;
      if (folders) ++*folders;
      a->for_each_message(account.id, f.id, f.uidvalidity, [&](const archive::MessageRecord& m) {
        if (m.state == archive::MessageState::present)
          out.insert(fingerprint(archive::to_hex(m.hash), m.internaldate, m.size,
                                 archive::flags_to_imap(m.flags, m.keywords)));
        return true;
      });
    }
  return out;
}

class ReadersTest : public testing::SharedServerTest {
 protected:
  std::vector<std::string> export_args(const std::string& archive) {
    return {"export", "--archive", archive, "--host", server_->host(), "--port",
            std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", "alice",
            "--password-file", server_->password_file("alice"), "--account-name", "alice", "--json"};
  }
  void export_alice(const std::string& archive) {
    auto r = testing::run_imapstage(export_args(archive));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
};

// Maildir flag letters and keywords (from Python) as IMAP flags.
std::vector<std::string> imap_flags(const nlohmann::json& m) {
  std::vector<std::string> out = m["keywords"].get<std::vector<std::string>>();
  for (char c : m["flags"].get<std::string>()) {
    if (c == 'D') out.push_back("\\Draft");
    if (c == 'F') out.push_back("\\Flagged");
    if (c == 'R') out.push_back("\\Answered");
    if (c == 'S') out.push_back("\\Seen");
    if (c == 'T') out.push_back("\\Deleted");
  }
  return out;
}

TEST_F(ReadersTest, DovecotPythonAndGrepReadTheMountedArchive) {
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);  // the Dovecot reader runs as nobody
  std::string archive = dir.path() + "/archive";
  export_alice(archive);
  size_t folders = 0;
  auto expected = archive_fingerprints(archive, &folders);
  ASSERT_GT(expected.size(), 100u);

  // Maildir++ for Dovecot: INBOX at the account root, .A.B folders beside it.
  {
    Mount mount(archive, dir.path() + "/mnt", {"--layout", "maildir++", "--allow-other"});
    ASSERT_TRUE(mount.ok()) << mount.result().err;
    std::string root = dir.path() + "/mnt/alice";
    // Dovecot keeps dovecot-uidlist and its keywords in the CONTROL directory
    // (the mount is read-only): each folder's dovecot-keywords is copied there.
    std::string work = dir.path() + "/dovecot";
    fs::create_directories(work + "/home");
    fs::create_directories(work + "/index");
    fs::create_directories(work + "/control");
    for (auto& e : fs::recursive_directory_iterator(root)) {
      if (e.path().filename() != "dovecot-keywords") continue;
      fs::path rel = e.path().lexically_relative(root);
      // INBOX's control directory is CONTROL/.INBOX.
      if (rel.parent_path().empty()) rel = ".INBOX" / rel;
      fs::path to = fs::path(work + "/control") / rel;
      fs::create_directories(to.parent_path());
      fs::copy_file(e.path(), to);
    }
    { std::ofstream(work + "/dovecot.conf") << testing::dovecot_reader_config(work); }
    ASSERT_EQ(testing::run_process({"/bin/chown", "-R", "nobody:nogroup", work}).exit_code, 0);
    auto boxes = testing::run_python(testing::kReadWithDovecot,
                                     {work + "/dovecot.conf", work + "/home",
                                      "maildir:" + root + ":UTF-8:INDEX=" + work + "/index:CONTROL=" + work + "/control"});
    std::multiset<std::string> seen;
    for (auto& [name, messages] : boxes.items())
      for (auto& m : messages)
        seen.insert(fingerprint(m["sha256"], m["internaldate"], m["size"], m["flags"].get<std::vector<std::string>>()));
    EXPECT_EQ(boxes.size(), folders);
    EXPECT_EQ(seen, expected);
    bool keywords = false;
    for (auto& s : seen) keywords |= s.find("$Label1") != std::string::npos;
    EXPECT_TRUE(keywords);
  }

  // Nested directories for Python's mailbox.Maildir, and grep; a small cache,
  // so the seed's 1.7 MB message is read through a temporary file.
  Mount mount(archive, dir.path() + "/mnt", {"--cache-size", "4"});
  ASSERT_TRUE(mount.ok()) << mount.result().err;
  auto maildirs = testing::run_python(testing::kReadMaildirs, {dir.path() + "/mnt"});
  std::multiset<std::string> seen;
  for (auto& [path, messages] : maildirs.items())
    for (auto& m : messages) seen.insert(fingerprint(m["sha256"], m["date"], m["size"], imap_flags(m)));
  EXPECT_EQ(maildirs.size(), folders);
  EXPECT_EQ(seen, expected);

  // grep -rl finds a message by its Message-ID, through the kernel.
  auto a = archive::Archive::open(archive, archive::Archive::Mode::read);
  std::string message_id, hash;
  a->for_each_message([&](const archive::MessageRecord& m) {
    std::string raw = a->read_object(m.hash);
    auto pos = raw.find("\r\nMessage-ID: ");
    if (pos == std::string::npos) pos = raw.find("\r\nMessage-Id: ");
    if (pos == std::string::npos) return true;
    message_id = raw.substr(pos + 2, raw.find("\r\n", pos + 2) - pos - 2);
    hash = archive::to_hex(m.hash);
    return false;
  });
  ASSERT_FALSE(message_id.empty());
  auto g = testing::run_process({"/bin/grep", "-rlF", message_id, dir.path() + "/mnt"});
  ASSERT_EQ(g.exit_code, 0) << message_id;
  std::istringstream files(g.out);
  std::string file;
  size_t found = 0;
  while (std::getline(files, file)) {
    EXPECT_EQ(testing::file_sha256(file), hash) << file;
    ++found;
  }
  EXPECT_GE(found, 1u);
}

TEST_F(ReadersTest, DovecotReadsAnExtractedMaildirPlusPlusWithItsKeywords) {
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  std::string archive = dir.path() + "/archive";
  export_alice(archive);
  size_t folders = 0;
  auto expected = archive_fingerprints(archive, &folders);
  auto r = testing::run_imapstage({"extract", "--archive", archive, "--to", "maildir", "--layout", "maildir++",
                                   "--out", dir.path() + "/out", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // A writable copy, so Dovecot keeps its files (dovecot-uidlist, indexes) beside the mail and
  // reads each folder's dovecot-keywords where extract wrote it.
  std::string work = dir.path() + "/dovecot";
  fs::create_directories(work + "/home");
  { std::ofstream(work + "/dovecot.conf") << testing::dovecot_reader_config(work); }
  for (auto& d : {work, dir.path() + "/out"})
    ASSERT_EQ(testing::run_process({"/bin/chown", "-R", "nobody:nogroup", d}).exit_code, 0);
  auto boxes = testing::run_python(testing::kReadWithDovecot,
                                   {work + "/dovecot.conf", work + "/home", "maildir:" + dir.path() + "/out/alice:UTF-8"});
  std::multiset<std::string> seen;
  for (auto& [name, messages] : boxes.items())
    for (auto& m : messages)
      seen.insert(fingerprint(m["sha256"], m["internaldate"], m["size"], m["flags"].get<std::vector<std::string>>()));
  EXPECT_EQ(boxes.size(), folders);
  EXPECT_EQ(seen, expected);
}

TEST_F(ReadersTest, MountWhileExportRunsShowsOnlyCommittedMessages) {
  TempDir dir;
  std::string archive = dir.path() + "/archive";
  export_alice(archive);
  size_t before = archive_fingerprints(archive).size();
  // New mail for a second, incremental export.
  std::string body(40000, 'x');
  for (int i = 0; i < 60; ++i)
    server_->append("alice", "Incoming", fmt::format("Subject: new {}\r\nMessage-ID: <new{}@x>\r\n\r\n{}{}\r\n", i, i, body, i));
  auto args = export_args(archive);
  args.insert(args.begin(), testing::imapstage_binary());
  pid_t pid = testing::spawn(args);
  size_t mounts = 0, largest = 0;
  int status = 0;
  while (true) {
    pid_t done = ::waitpid(pid, &status, WNOHANG);
    Mount mount(archive, dir.path() + "/mnt");
    ASSERT_TRUE(mount.ok()) << mount.result().err;
    size_t files = 0;
    for (auto& e : fs::recursive_directory_iterator(dir.path() + "/mnt")) {
      if (!e.is_regular_file() || e.path().filename() == "dovecot-keywords") continue;
      EXPECT_EQ(testing::file_sha256(e.path()).size(), 64u);  // every file shown reads (and is checked)
      ++files;
    }
    EXPECT_GE(files, before);
    EXPECT_LE(files, before + 60);
    largest = std::max(largest, files);
    ++mounts;
    if (done == pid) break;
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);  // the export succeeded beside the mounts
  EXPECT_GE(mounts, 2u);
  size_t after = archive_fingerprints(archive).size();
  EXPECT_EQ(after, before + 60);
  EXPECT_LE(largest, after);
  // A new mount shows everything the export committed.
  Mount mount(archive, dir.path() + "/mnt");
  ASSERT_TRUE(mount.ok());
  size_t files = 0;
  for (auto& e : fs::recursive_directory_iterator(dir.path() + "/mnt"))
    files += e.is_regular_file() && e.path().filename() != "dovecot-keywords";
  EXPECT_EQ(files, after);
}

}  // namespace
}  // namespace imapstage

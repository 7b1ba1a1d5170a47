// Reliability of the archive's disk: an export onto a small filesystem that
// fills up fails with a clear error (exit code 5, naming the file and the
// full disk), leaves an archive that opens and verifies, and completes once
// space is freed; an import whose archive disk is full neither loses nor
// duplicates anything once re-run with space; a read-only archive gives a
// clear error, never a crash. Uses tmpfs mounts, so it needs root (as the
// CI has); without root the tests are skipped.
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "common/error.h"
#include "tests/support/mail_view.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"
#include "verify/offline.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::TempDir;
using testing::TestServer;


using testing::archive_view;
using testing::compare;
using testing::count;
using testing::Difference;
using testing::MultisetView;
using testing::multiset;
using testing::server_view;
using testing::UidView;
using testing::verify_archive;
// A tmpfs mounted for one test, detached at destruction.
class Tmpfs {
 public:
  Tmpfs(std::string path, const std::string& size) : path_(std::move(path)) {
    std::filesystem::create_directories(path_);
    std::string data = "size=" + size + ",mode=0755";
    if (::mount("tmpfs", path_.c_str(), "tmpfs", 0, data.c_str()) != 0) error_ = std::strerror(errno);
    else mounted_ = true;
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& path() const { return path_; }
  // Remounts with new options ("size=64m", "ro", "rw"); returns "" or the error.
  std::string remount(const std::string& options, bool read_only = false) {
    unsigned long flags = MS_REMOUNT | (read_only ? MS_RDONLY : 0);
    if (::mount("tmpfs", path_.c_str(), "tmpfs", flags, options.c_str()) != 0) return std::strerror(errno);
    return "";
  }

 private:
  std::string path_;
  std::string error_;
  bool mounted_ = false;
};

class DiskTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.users = {"alice"};
    server_ = new TestServer(o);
    source_ = new UidView(server_view(server_->summary("alice")));
  }
  static void TearDownTestSuite() {
    delete source_;
    delete server_;
    source_ = nullptr;
    server_ = nullptr;
  }

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root (the CI runs these tests as root)";
  }

  static std::string account_name() { return "alice@" + server_->host(); }

  static std::vector<std::string> export_args(const std::string& archive_dir) {
    return {"export", "--archive", archive_dir, "--host", server_->host(), "--port",
            std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", "alice",
            "--password-file", server_->password_file("alice"), "-q"};
  }
  static std::vector<std::string> import_args(const std::string& archive_dir, const std::string& target_user) {
    return {"import", "--archive", archive_dir, "--host", server_->host(), "--port",
            std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", target_user,
            "--password-file", server_->password_file(target_user), "-q"};
  }

  static void expect_archive_equals_source(const std::string& dir) {
    auto report = verify_archive(dir);
    EXPECT_TRUE(report.ok()) << report.to_json().dump(2);
    auto archived = archive_view(dir, account_name());
    EXPECT_EQ(count(archived), count(*source_));
    EXPECT_TRUE(archived == *source_) << "the archive differs from the source";
  }

  static TestServer* server_;
  static UidView* source_;
};

TestServer* DiskTest::server_ = nullptr;
UidView* DiskTest::source_ = nullptr;

TEST_F(DiskTest, ExportOntoAFullDiskFailsCleanlyAndCompletesWhenSpaceIsFreed) {
  TempDir dir;
  Tmpfs fs(dir.path() + "/mnt", "2m");  // the account is ~10 MB raw, ~7 MB stored
  ASSERT_TRUE(fs.mounted()) << "mount -t tmpfs failed as root: " << fs.error();
  std::string archive_dir = fs.path() + "/archive";

  auto full = testing::run_imapstage(export_args(archive_dir));
  std::printf("[ figures ] export onto a 2 MB disk: exit %d, signal %d: %s", full.exit_code, full.signal,
              full.err.c_str());
  EXPECT_EQ(full.signal, 0) << "a full disk must not crash the export";
  EXPECT_EQ(full.exit_code, 5) << full.err;
  EXPECT_NE(full.err.find("No space left on device"), std::string::npos) << full.err;
  EXPECT_NE(full.err.find(archive_dir), std::string::npos) << "the error names the file: " << full.err;

  // What was committed is readable and sound.
  size_t committed = 0;
  {
    auto report = verify_archive(archive_dir);
    EXPECT_TRUE(report.ok()) << report.to_json().dump(2);
    auto a = Archive::open(archive_dir, Archive::Mode::read);
    a->for_each_message([&](const archive::MessageRecord& m) {
      EXPECT_EQ(archive::sha256(a->read_object(m.hash)), m.hash);
      ++committed;
      return true;
    });
  }
  EXPECT_LT(committed, count(*source_));

  ASSERT_EQ(fs.remount("size=64m"), "");
  auto again = testing::run_imapstage(export_args(archive_dir));
  EXPECT_EQ(again.exit_code, 0) << again.err;
  std::printf("[ figures ] %zu of %zu messages committed before the disk filled; the re-run completed\n", committed,
              count(*source_));
  expect_archive_equals_source(archive_dir);
}

TEST_F(DiskTest, ImportWithAFullArchiveDiskLosesAndDuplicatesNothing) {
  TempDir dir;
  Tmpfs fs(dir.path() + "/mnt", "64m");
  ASSERT_TRUE(fs.mounted()) << "mount -t tmpfs failed as root: " << fs.error();
  std::string archive_dir = fs.path() + "/archive";
  auto exported = testing::run_imapstage(export_args(archive_dir));
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  // Shrink the disk to what the archive uses: the import's records find no room.
  uint64_t used = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(archive_dir))
    if (e.is_regular_file()) used += e.file_size();
  std::string tight = std::to_string((used + 4095) / 4096 * 4096 / 1024 + 8) + "k";
  ASSERT_EQ(fs.remount("size=" + tight), "");
  // And fill what is left.
  {
    std::ofstream filler(fs.path() + "/filler", std::ios::binary);
    std::string block(4096, 'x');
    while (filler.write(block.data(), block.size())) {
    }
  }
  server_->add_user("disk_target");
  auto full = testing::run_imapstage(import_args(archive_dir, "disk_target"));
  std::printf("[ figures ] import with a full archive disk (%s): exit %d, signal %d: %s", tight.c_str(),
              full.exit_code, full.signal, full.err.c_str());
  EXPECT_EQ(full.signal, 0) << "a full disk must not crash the import";
  EXPECT_EQ(full.exit_code, 5) << full.err;
  EXPECT_NE(full.err.find("No space left on device"), std::string::npos) << full.err;

  std::filesystem::remove(fs.path() + "/filler");
  ASSERT_EQ(fs.remount("size=64m"), "");
  auto again = testing::run_imapstage(import_args(archive_dir, "disk_target"));
  EXPECT_EQ(again.exit_code, 0) << again.err;
  auto d = compare(multiset(*source_), multiset(server_view(server_->summary("disk_target"))));
  EXPECT_EQ(d.lost, 0u);
  EXPECT_EQ(d.duplicated, 0u);
  auto report = verify_archive(archive_dir);
  EXPECT_TRUE(report.ok()) << report.to_json().dump(2);
}

// bundle apply onto a disk that fills up: a clear error (exit 5), the
// receiving archive still at its base (no message; the objects already
// committed are not referenced yet), and a re-apply with space finishes it.
TEST_F(DiskTest, BundleApplyOntoAFullDiskLeavesTheBaseAndAReapplyFinishes) {
  TempDir dir;
  std::string source_dir = dir.path() + "/a";
  auto exported = testing::run_imapstage(export_args(source_dir));
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  std::string file = dir.path() + "/full.bundle";
  auto made = testing::run_imapstage({"bundle", "create", "--archive", source_dir, "--out", file, "--full"});
  ASSERT_EQ(made.exit_code, 0) << made.err;

  Tmpfs fs(dir.path() + "/mnt", "2m");  // the bundle's objects need ~7 MB
  ASSERT_TRUE(fs.mounted()) << "mount -t tmpfs failed as root: " << fs.error();
  std::string target_dir = fs.path() + "/b";
  auto full = testing::run_imapstage({"bundle", "apply", file, "--archive", target_dir});
  std::printf("[ figures ] bundle apply onto a 2 MB disk: exit %d, signal %d\n", full.exit_code, full.signal);
  EXPECT_EQ(full.signal, 0) << "a full disk must not crash the apply";
  EXPECT_EQ(full.exit_code, 5) << full.err;
  EXPECT_NE(full.err.find("No space left on device"), std::string::npos) << full.err;
  {
    auto report = verify_archive(target_dir);
    EXPECT_TRUE(report.ok()) << report.to_json().dump(2);
    EXPECT_EQ(report.messages, 0u) << "the archive left the bundle's base";
  }

  ASSERT_EQ(fs.remount("size=64m"), "");
  auto again = testing::run_imapstage({"bundle", "apply", file, "--archive", target_dir});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  auto archived = archive_view(target_dir, account_name());
  EXPECT_TRUE(archived == *source_) << "the applied archive differs from the source";
  auto report = verify_archive(target_dir);
  EXPECT_TRUE(report.ok()) << report.to_json().dump(2);
  EXPECT_TRUE(report.orphans.empty()) << report.to_json().dump(2);
}

TEST_F(DiskTest, ReadOnlyArchiveGivesAClearErrorNotACrash) {
  TempDir dir;
  Tmpfs fs(dir.path() + "/mnt", "64m");
  ASSERT_TRUE(fs.mounted()) << "mount -t tmpfs failed as root: " << fs.error();
  std::string archive_dir = fs.path() + "/archive";
  auto exported = testing::run_imapstage(export_args(archive_dir));
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  ASSERT_EQ(fs.remount("", true), "");

  server_->add_user("ro_target");
  struct Case {
    std::string what;
    std::vector<std::string> args;
  };
  std::vector<Case> cases = {
      {"export into the read-only archive", export_args(archive_dir)},
      {"export creating an archive on a read-only disk", export_args(fs.path() + "/new")},
      {"import from the read-only archive", import_args(archive_dir, "ro_target")},
  };
  for (auto& c : cases) {
    auto r = testing::run_imapstage(c.args);
    std::printf("[ figures ] %s: exit %d: %s", c.what.c_str(), r.exit_code, r.err.c_str());
    EXPECT_EQ(r.signal, 0) << c.what;
    EXPECT_EQ(r.exit_code, 5) << c.what << ": " << r.err;
    EXPECT_NE(r.err.find("Read-only file system"), std::string::npos) << c.what << ": " << r.err;
    EXPECT_NE(r.err.find(fs.path()), std::string::npos) << c.what << " names the path: " << r.err;
  }
  // Nothing reached the target, and the archive is untouched.
  auto d = compare(MultisetView{}, multiset(server_view(server_->summary("ro_target"))));
  EXPECT_EQ(d.duplicated, 0u) << "an import that cannot record its appends must not send them";
  ASSERT_EQ(fs.remount("", false), "");
  expect_archive_equals_source(archive_dir);
}

// Reading (verify, ls) an archive on a read-only filesystem works: readers
// need neither the writer lock nor a writable LMDB lock file there.
TEST_F(DiskTest, ReadOnlyArchiveCanStillBeVerified) {
  TempDir dir;
  Tmpfs fs(dir.path() + "/mnt", "64m");
  ASSERT_TRUE(fs.mounted()) << "mount -t tmpfs failed as root: " << fs.error();
  std::string archive_dir = fs.path() + "/archive";
  auto exported = testing::run_imapstage(export_args(archive_dir));
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  ASSERT_EQ(fs.remount("", true), "");
  auto r = testing::run_imapstage({"verify", "--archive", archive_dir, "-q"});
  EXPECT_EQ(r.signal, 0) << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto ls = testing::run_imapstage({"ls", "--archive", archive_dir});
  EXPECT_EQ(ls.signal, 0) << ls.err;
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
}

}  // namespace
}  // namespace imapstage

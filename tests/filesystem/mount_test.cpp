// `imapstage mount` on an archive written with the library's own writer,
// holding hostile folder and account names: every message is readable through
// the kernel, byte for byte, with its size, INTERNALDATE and flags; nothing
// leaves the mount point; writes get EROFS; signals and fusermount3 unmount
// it; a damaged object gives EIO. The real binary runs (run_imapstage).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>
#include <atomic>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "filesystem/names.h"
#include "tests/filesystem/sample_archive.h"
#include "tests/support/mount_helpers.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

namespace fs = std::filesystem;
using testing::Mount;
using testing::TempDir;

// Every regular file below `root`, each checked to resolve inside `root`.
std::vector<fs::path> files_inside(const fs::path& root) {
  std::vector<fs::path> out;
  std::string prefix = fs::canonical(root).string() + "/";
  for (auto& e : fs::recursive_directory_iterator(root)) {
    std::string real = fs::canonical(e.path()).string();
    EXPECT_TRUE(real.starts_with(prefix)) << e.path();
    for (auto& part : e.path().lexically_relative(root)) {
      EXPECT_NE(part, "..");
      EXPECT_NE(part, ".");
      EXPECT_LE(part.string().size(), 255u);
    }
    if (e.is_regular_file()) out.push_back(e.path());
  }
  return out;
}

std::string flags_of(const fs::path& file) {
  std::string name = file.filename().string();
  auto pos = name.find(":2,");
  return pos == std::string::npos ? "?" : name.substr(pos + 3);
}

TEST(MountTest, EveryMessageReadableInsideTheMountWithSizeDateAndFlags) {
  TempDir dir;
  auto sample = testing::make_sample_archive(dir.path() + "/archive");
  Mount mount(dir.path() + "/archive", dir.path() + "/mnt");
  ASSERT_TRUE(mount.ok()) << mount.result().err;
  std::string options;
  ASSERT_TRUE(testing::is_mounted(dir.path() + "/mnt", &options));
  EXPECT_TRUE(options.starts_with("ro")) << options;

  std::multiset<std::string> seen;
  size_t messages = 0;
  for (auto& f : files_inside(dir.path() + "/mnt")) {
    if (f.filename() == "dovecot-keywords") continue;
    ASSERT_EQ(f.parent_path().filename(), "cur") << f;
    std::string hash = testing::file_sha256(f);
    auto it = sample.by_hash.find(hash);
    ASSERT_NE(it, sample.by_hash.end()) << f;
    const auto& m = it->second;
    struct stat st{};
    ASSERT_EQ(::stat(f.c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), m.size) << f;
    EXPECT_EQ(st.st_mtim.tv_sec, m.internaldate) << f;
    EXPECT_EQ(st.st_mode & 0777, 0444u);
    seen.insert(hash);
    ++messages;
  }
  EXPECT_EQ(messages, sample.current_messages);
  // Every hostile folder is there, escaped, one level below its account.
  std::string acct = dir.path() + "/mnt/" + filesystem::escape_level(testing::kSampleAccount);
  for (auto& level : testing::sample_hostile_levels()) {
    fs::path d = fs::path(acct) / filesystem::escape_level(level);
    EXPECT_TRUE(fs::is_directory(d / "cur")) << d;
    EXPECT_TRUE(fs::is_directory(d / "new") && fs::is_empty(d / "new")) << d;
    EXPECT_TRUE(fs::is_directory(d / "tmp") && fs::is_empty(d / "tmp")) << d;
  }
  EXPECT_TRUE(fs::is_directory(dir.path() + "/mnt/" + filesystem::escape_level(testing::kHostileAccount)));
  // Flags and keywords: INBOX UID 1 is \Seen \Flagged $Label1 Work; the table is sorted.
  {
    std::ifstream kw(acct + "/INBOX/dovecot-keywords");
    std::stringstream text;
    text << kw.rdbuf();
    EXPECT_EQ(text.str(), "0 $Label1\n1 Work\n");
  }
  std::set<std::string> inbox_flags;
  for (auto& e : fs::directory_iterator(acct + "/INBOX/cur")) inbox_flags.insert(flags_of(e.path()));
  EXPECT_EQ(inbox_flags, (std::set<std::string>{"FSab", "R", "b"}));
  // Expunged messages and the old generation are not shown by default.
  EXPECT_FALSE(fs::exists(dir.path() + "/mnt/all-generations"));
  EXPECT_EQ(mount.unmount(), 0);
}

TEST(MountTest, AllGenerationsShowsExpungedAndOldGenerationsApart) {
  TempDir dir;
  auto sample = testing::make_sample_archive(dir.path() + "/archive");
  Mount mount(dir.path() + "/archive", dir.path() + "/mnt", {"--all-generations", "--account", testing::kSampleAccount});
  ASSERT_TRUE(mount.ok()) << mount.result().err;
  fs::path gens = fs::path(dir.path()) / "mnt/all-generations" / filesystem::escape_level(testing::kSampleAccount) / "INBOX";
  ASSERT_TRUE(fs::is_directory(gens)) << gens;
  size_t old_gen = 0, current = 0;
  for (auto& e : fs::directory_iterator(gens / "uidvalidity-5/cur")) old_gen += e.is_regular_file();
  for (auto& e : fs::directory_iterator(gens / "uidvalidity-7/cur")) current += e.is_regular_file();
  EXPECT_EQ(old_gen, 2u);
  EXPECT_EQ(current, 4u);  // three present and one expunged
  // Only the named account.
  EXPECT_FALSE(fs::exists(dir.path() + "/mnt/" + filesystem::escape_level(testing::kHostileAccount)));
  size_t all = files_inside(dir.path() + "/mnt").size();
  EXPECT_GT(all, current + old_gen);
}

TEST(MountTest, ReadersSideBySideGetTheRightBytesWithATinyCache) {
  TempDir dir;
  auto sample = testing::make_sample_archive(dir.path() + "/archive");
  Mount mount(dir.path() + "/archive", dir.path() + "/mnt", {"--cache-size", "1"});
  ASSERT_TRUE(mount.ok()) << mount.result().err;
  std::vector<fs::path> files;
  for (auto& f : files_inside(dir.path() + "/mnt"))
    if (f.filename() != "dovecot-keywords") files.push_back(f);
  ASSERT_EQ(files.size(), sample.current_messages);
  std::atomic<size_t> good{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t)
    readers.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round)
        for (size_t i = 0; i < files.size(); ++i) {
          const auto& f = files[(i * (t + 1) + round) % files.size()];
          if (sample.by_hash.count(testing::file_sha256(f))) ++good;
        }
    });
  for (auto& r : readers) r.join();
  EXPECT_EQ(good.load(), 4 * 5 * files.size());
}

TEST(MountTest, EveryWriteIsRefusedWithErofs) {
  TempDir dir;
  testing::make_sample_archive(dir.path() + "/archive");
  Mount mount(dir.path() + "/archive", dir.path() + "/mnt");
  ASSERT_TRUE(mount.ok()) << mount.result().err;
  fs::path inbox = fs::path(dir.path()) / "mnt" / filesystem::escape_level(testing::kSampleAccount) / "INBOX";
  fs::path file = fs::directory_iterator(inbox / "cur")->path();
  auto refused = [](int rc) { return rc == -1 && errno == EROFS; };
  EXPECT_TRUE(refused(::open(file.c_str(), O_WRONLY)));
  EXPECT_TRUE(refused(::open(file.c_str(), O_RDWR)));
  EXPECT_TRUE(refused(::open((inbox / "new/x").c_str(), O_CREAT | O_WRONLY, 0600)));
  EXPECT_TRUE(refused(::truncate(file.c_str(), 0)));
  EXPECT_TRUE(refused(::unlink(file.c_str())));
  EXPECT_TRUE(refused(::rename(file.c_str(), (inbox / "cur/renamed").c_str())));
  EXPECT_TRUE(refused(::chmod(file.c_str(), 0600)));
  EXPECT_TRUE(refused(::mkdir((inbox / "sub").c_str(), 0700)));
  EXPECT_TRUE(refused(::rmdir((inbox / "tmp").c_str())));
  EXPECT_TRUE(refused(::symlink("x", (inbox / "link").c_str())));
  // And the file still reads.
  EXPECT_EQ(testing::file_sha256(file).size(), 64u);
  EXPECT_TRUE(fs::is_empty(inbox / "new"));
}

TEST(MountTest, SigtermSigintAndFusermountUnmountCleanly) {
  TempDir dir;
  testing::make_sample_archive(dir.path() + "/archive");
  fs::path mnt = dir.path() + "/mnt";
  fs::create_directories(mnt);
  for (int how : {SIGTERM, SIGINT, 0}) {
    std::string err = dir.path() + "/err";
    pid_t pid = testing::spawn({testing::imapstage_binary(), "mount", "--archive", dir.path() + "/archive",
                                mnt.string(), "--foreground"}, "", err);
    ASSERT_TRUE(testing::wait_mounted(mnt, true)) << how;
    EXPECT_FALSE(fs::is_empty(mnt));
    if (how) ::kill(pid, how);
    else EXPECT_EQ(testing::run_process({"/usr/bin/fusermount3", "-u", mnt.string()}).exit_code, 0);
    int code = testing::wait_exit(pid, 30);
    std::ifstream e(err);
    std::stringstream text;
    text << e.rdbuf();
    EXPECT_EQ(code, 0) << "signal " << how << ": " << text.str();
    EXPECT_FALSE(testing::is_mounted(mnt)) << how;
    EXPECT_TRUE(fs::is_empty(mnt));
  }
}

// Every file of the archive but LMDB's lock file (readers register there), with its SHA-256.
std::map<std::string, std::string> archive_files(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != "lock.mdb")
      out[e.path().lexically_relative(dir).string()] = testing::file_sha256(e.path());
  return out;
}

TEST(MountTest, KilledMountLeavesTheArchiveUntouched) {
  TempDir dir;
  testing::make_sample_archive(dir.path() + "/archive");
  auto before = archive_files(dir.path() + "/archive");
  fs::path mnt = dir.path() + "/mnt";
  fs::create_directories(mnt);
  pid_t pid = testing::spawn({testing::imapstage_binary(), "mount", "--archive", dir.path() + "/archive",
                              mnt.string(), "--foreground"});
  ASSERT_TRUE(testing::wait_mounted(mnt, true));
  size_t files = 0;
  for (auto& e : fs::recursive_directory_iterator(mnt))
    if (e.is_regular_file()) files += testing::file_sha256(e.path()).size() == 64;
  EXPECT_GT(files, 10u);
  ::kill(pid, SIGKILL);
  EXPECT_EQ(testing::wait_exit(pid, 30), -SIGKILL);
  // What a crashed FUSE server leaves: a dead mount, removed with fusermount3 -u.
  EXPECT_EQ(testing::run_process({"/usr/bin/fusermount3", "-u", mnt.string()}).exit_code, 0);
  EXPECT_FALSE(testing::is_mounted(mnt));
  EXPECT_EQ(archive_files(dir.path() + "/archive"), before);
  // And it mounts again.
  Mount again(dir.path() + "/archive", mnt);
  EXPECT_TRUE(again.ok()) << again.result().err;
}

TEST(MountTest, DamagedObjectFailsItsOpenWithEioOthersStillRead) {
  TempDir dir;
  auto sample = testing::make_sample_archive(dir.path() + "/archive", false);  // one record per message
  // Damage one byte inside the stored payload of INBOX UID 1's object.
  const auto& victim = sample.inbox_uid1;
  {
    auto a = archive::Archive::open(dir.path() + "/archive", archive::Archive::Mode::read);
    auto loc = a->object(victim.hash);
    ASSERT_TRUE(loc);
    fs::path pack = a->pack_path(loc->pack_id);
    std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(loc->offset + loc->record_size - 12));
    char c;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(loc->offset + loc->record_size - 12));
    f.put(static_cast<char>(c ^ 0x5a));
  }
  Mount mount(dir.path() + "/archive", dir.path() + "/mnt");
  ASSERT_TRUE(mount.ok()) << mount.result().err;
  fs::path cur = fs::path(dir.path()) / "mnt" / filesystem::escape_level(testing::kSampleAccount) / "INBOX/cur";
  size_t good = 0, bad = 0;
  for (auto& e : fs::directory_iterator(cur)) {
    std::string name = e.path().filename().string();
    int fd = ::open(e.path().c_str(), O_RDONLY);
    if (name.find(fmt::format(".U7_1.")) != std::string::npos) {
      EXPECT_EQ(fd, -1);
      EXPECT_EQ(errno, EIO);
      ++bad;
    } else {
      EXPECT_GE(fd, 0) << name;
      ++good;
    }
    if (fd >= 0) ::close(fd);
  }
  EXPECT_EQ(bad, 1u);
  EXPECT_EQ(good, 2u);
}

TEST(MountTest, MissingArchiveOrMountPointFailsWithDocumentedCodes) {
  TempDir dir;
  auto r = testing::run_imapstage({"mount", "--archive", dir.path() + "/none", dir.path()});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  testing::make_sample_archive(dir.path() + "/archive");
  r = testing::run_imapstage({"mount", "--archive", dir.path() + "/archive", dir.path() + "/no-such-dir"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = testing::run_imapstage({"mount", "--archive", dir.path() + "/archive", dir.path(), "--account", "nobody"});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_FALSE(testing::is_mounted(dir.path()));
}

}  // namespace
}  // namespace imapstage

// Hostile and damaged archives: each case is made from a good archive (written
// with the library's own writer), then every command runs on it as the real
// binary (and the writer in-process, as export and import open it). Each must
// end with a clear error or a correct partial result, by a normal exit, within
// a memory bound, and nothing outside the archive may change.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "archive-format/archive.h"
#include "archive-format/codec.h"
#include "archive-format/index.h"
#include "archive-format/layout.h"
#include "archive-format/pack.h"
#include "common/error.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage::archive {
namespace {

namespace fs = std::filesystem;
using testing::ProcessResult;
using testing::TempDir;

constexpr auto kCommandTimeout = std::chrono::seconds(120);
const std::string kAccount = "alice@imap.example.org";

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>('a' + rng() % 26);
  return s;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Everything about a tree that a write through a link would change: names,
// types, modes, sizes, link targets and contents.
std::string tree_digest(const fs::path& root) {
  std::string out;
  std::vector<fs::path> paths{root};
  for (auto& e : fs::recursive_directory_iterator(root)) paths.push_back(e.path());
  std::sort(paths.begin(), paths.end());
  for (auto& p : paths) {
    struct stat st{};
    if (::lstat(p.c_str(), &st) != 0) continue;
    out += fmt::format("{} {:o} {}", p.string(), st.st_mode, S_ISDIR(st.st_mode) ? 0 : st.st_size);
    if (S_ISLNK(st.st_mode)) out += " -> " + fs::read_symlink(p).string();
    if (S_ISREG(st.st_mode)) out += " " + to_hex(sha256(read_all(p)));
    out += "\n";
  }
  return out;
}

// A good archive: two accounts, two folders each, spread over several packs.
uint64_t make_good(const fs::path& root) {
  Archive::Options o;
  o.group_small_objects = false;  // damage to one record touches one object
  o.pack_size_limit = 16 << 10;
  o.map_size = 64ull << 20;
  auto a = Archive::open(root, Archive::Mode::create, o);
  Batch b(*a);
  uint64_t messages = 0;
  for (int acc = 0; acc < 2; ++acc) {
    AccountRecord account;
    account.name = acc == 0 ? kAccount : "bob@imap.example.org";
    account.host = "imap.example.org";
    account.user = acc == 0 ? "alice" : "bob";
    b.put_account(account);
    for (int f = 0; f < 2; ++f) {
      FolderRecord folder;
      folder.account_id = account.id;
      folder.name_raw = f == 0 ? "INBOX" : "Archive";
      folder.name_utf8 = folder.name_raw;
      folder.delimiter = '/';
      folder.uidvalidity = 7;
      folder.uidnext = 31;
      b.put_folder(folder);
      for (uint32_t uid = 1; uid <= 30; ++uid) {
        std::string raw = "Subject: " + std::to_string(uid) + "\r\n\r\n" + random_bytes(2000 + uid * 37, acc * 100 + f * 40 + uid);
        MessageRecord m;
        m.key = {account.id, folder.id, folder.uidvalidity, uid};
        m.hash = sha256(raw);
        m.size = raw.size();
        m.flags = kSeen;
        m.internaldate = 1700000000 + uid;
        b.put_object(m.hash, raw);
        b.put_message(m);
        ++messages;
        if (uid % 10 == 0) b.commit();
      }
    }
  }
  b.commit();
  a->end_run(a->begin_run("export", kAccount, "{}"), "ok", "{}");
  return messages;
}

ProcessResult run(const std::vector<std::string>& args) {
  return testing::run_imapstage(args, {}, std::chrono::duration_cast<std::chrono::milliseconds>(kCommandTimeout));
}

// A normal end: no signal, no timeout, an exit code the README documents for these commands.
void expect_normal_end(const ProcessResult& r, const std::string& what) {
  EXPECT_EQ(r.signal, 0) << what << ": killed by signal " << r.signal << "\n" << r.err;
  EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1 || r.exit_code == 5)
      << what << ": exit " << r.exit_code << "\n" << r.err;
  if (r.exit_code == 5) {
    EXPECT_NE(r.err.find("imapstage: "), std::string::npos) << what << ": no error text";
  }
}

struct Results {
  std::map<std::string, ProcessResult> by_name;
  int exit(const std::string& name) const { return by_name.at(name).exit_code; }
  const std::string& err(const std::string& name) const { return by_name.at(name).err; }
};

class HostileArchive : public ::testing::Test {
 protected:
  void SetUp() override {
    good_ = fs::path(dir_.path()) / "good";
    messages_ = make_good(good_);
    outside_ = fs::path(dir_.path()) / "outside";
    fs::create_directories(outside_);
    std::ofstream(outside_ / "decoy") << "a file the archive must never change\n";
    auto m = run({"manifest", "--archive", good_.string(), "--out", (outside_ / "good-manifest.json").string()});
    ASSERT_EQ(m.exit_code, 0) << m.err;
  }

  // A fresh copy of the good archive.
  fs::path copy(const std::string& name) {
    fs::path to = fs::path(dir_.path()) / name;
    fs::copy(good_, to, fs::copy_options::recursive);
    return to;
  }

  // The pack files of an archive, largest first.
  static std::vector<fs::path> packs(const fs::path& root) {
    std::vector<fs::path> out;
    for (auto& e : fs::recursive_directory_iterator(root / "packs"))
      if (e.path().extension() == ".pack") out.push_back(e.path());
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return fs::file_size(a) > fs::file_size(b); });
    return out;
  }

  // Runs every reading command and repair on `archive`, then a writer in
  // process; checks that each ends normally and that nothing outside changed.
  Results run_all(const fs::path& archive, const std::string& label, bool with_repair = true) {
    std::string before = tree_digest(outside_);
    std::string a = archive.string();
    std::string scratch = (fs::path(dir_.path()) / ("out-" + label)).string();
    fs::create_directories(scratch);
    std::vector<std::pair<std::string, std::vector<std::string>>> commands = {
        {"ls", {"ls", "--archive", a}},
        {"ls-account", {"ls", "--archive", a, kAccount}},
        {"ls-folder", {"ls", "--archive", a, kAccount, "INBOX"}},
        {"cat", {"cat", "--archive", a, kAccount, "INBOX", "3"}},
        {"verify", {"verify", "--archive", a, "--report", scratch + "/verify.json"}},
        {"manifest", {"manifest", "--archive", a, "--out", scratch + "/manifest.json"}},
        {"check", {"manifest", "check", "--archive", a, "--manifest", (outside_ / "good-manifest.json").string()}},
    };
    if (with_repair) {
      commands.push_back({"repair", {"repair", "--archive", a, "--rebuild-index"}});
      commands.push_back({"verify-after-repair", {"verify", "--archive", a}});
    }
    Results results;
    for (auto& [name, args] : commands) {
      auto r = run(args);
      expect_normal_end(r, label + ": " + name);
      results.by_name[name] = std::move(r);
    }
    // What export and import do once logged in: open for writing and commit a batch.
    try {
      auto w = Archive::open(archive, Archive::Mode::write);
      Batch b(*w);
      std::string raw = "Subject: new\r\n\r\nnew";
      b.put_object(sha256(raw), raw);
      b.commit();
    } catch (const Error&) {
      // refused with a clear error: fine
    }
    EXPECT_EQ(tree_digest(outside_), before) << label << ": something outside the archive changed";
    return results;
  }

  TempDir dir_;
  fs::path good_, outside_;
  uint64_t messages_ = 0;
};

TEST_F(HostileArchive, GoodArchivePassesEveryCommand) {
  fs::path archive = copy("plain");
  auto r = run_all(archive, "plain");
  for (auto& [name, result] : r.by_name) EXPECT_EQ(result.exit_code, 0) << name << ": " << result.err;
  // However the archive directory is spelled.
  auto slash = run({"cat", "--archive", archive.string() + "/", kAccount, "INBOX", "3"});
  EXPECT_EQ(slash.exit_code, 0) << slash.err;
  auto dotted = run({"verify", "--archive", (archive / "." / "").string()});
  EXPECT_EQ(dotted.exit_code, 0) << dotted.err;
}

TEST_F(HostileArchive, SymbolicLinksAreNeverFollowed) {
  struct Case {
    std::string name;
    std::string path;       // inside the archive
    std::string target;     // what it points to, outside
    bool readers_refuse;    // ls and verify fail on it
  };
  fs::copy(good_ / "index", outside_ / "index-copy", fs::copy_options::recursive);
  fs::copy(good_ / "packs", outside_ / "packs-copy", fs::copy_options::recursive);
  fs::copy_file(good_ / "FORMAT", outside_ / "format-copy");
  fs::copy_file(good_ / "index" / "data.mdb", outside_ / "data-copy");
  fs::path a_pack = packs(good_).front();
  fs::copy_file(a_pack, outside_ / "pack-copy");
  std::vector<Case> cases = {
      {"lock", "lock", "decoy", false},
      {"index", "index", "index-copy", true},
      {"data", "index/data.mdb", "data-copy", true},
      {"lockmdb", "index/lock.mdb", "decoy", true},
      {"packs", "packs", "packs-copy", true},
      {"pack", fs::relative(a_pack, good_).string(), "pack-copy", false},
      {"format", "FORMAT", "format-copy", true},
      // The index's check stamp and its temporary file: read only if regular, replaced, never followed.
      {"stamp", "index/checked", "decoy", false},
      {"stamp-tmp", "index/checked.tmp", "decoy", false},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    fs::path archive = copy("link-" + c.name);
    fs::remove_all(archive / c.path);
    fs::create_symlink(outside_ / c.target, archive / c.path);
    auto r = run_all(archive, "link-" + c.name);
    if (c.readers_refuse) {
      EXPECT_EQ(r.exit("ls"), 5) << r.err("ls");
      EXPECT_NE(r.err("ls").find("symbolic link"), std::string::npos) << r.err("ls");
      EXPECT_NE(r.exit("verify"), 0);
    }
    if (c.name == "lock") {
      EXPECT_EQ(r.exit("repair"), 5) << r.err("repair");
    }
    if (c.name == "pack") {
      EXPECT_EQ(r.exit("verify"), 1);
    }
  }
  // A hard link at the stamp's temporary name is replaced, not written through.
  fs::path archive = copy("hardlink-stamp-tmp");
  fs::create_hard_link(outside_ / "decoy", archive / "index" / "checked.tmp");
  run_all(archive, "hardlink-stamp-tmp");
  EXPECT_TRUE(fs::exists(archive / "index" / "checked"));
}

TEST_F(HostileArchive, LinksAndHardLinksAreRefusedToWriters) {
  // A hard link to a file outside (same filesystem) in place of the lock or a pack.
  fs::path archive = copy("hard");
  fs::remove(archive / "lock");
  fs::create_hard_link(outside_ / "decoy", archive / "lock");
  std::string before = tree_digest(outside_);
  try {
    Archive::open(archive, Archive::Mode::write);
    FAIL() << "a hard-linked lock file was opened for writing";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt);
    EXPECT_NE(std::string(e.what()).find("hard links"), std::string::npos) << e.what();
  }
  EXPECT_EQ(tree_digest(outside_), before);

  // A copy made of hard links (cp -al, rsync --link-dest) reads like the
  // original; only writing to it is refused (it would change both).
  fs::path snapshot = fs::path(dir_.path()) / "snapshot";
  fs::copy(good_, snapshot, fs::copy_options::recursive | fs::copy_options::create_hard_links);
  fs::remove(snapshot / "index" / "lock.mdb");  // LMDB writes its lock file, readers too
  for (auto args : std::vector<std::vector<std::string>>{{"ls", "--archive", snapshot.string()},
                                                         {"cat", "--archive", snapshot.string(), kAccount, "INBOX", "3"},
                                                         {"verify", "--archive", snapshot.string()}}) {
    auto r = run(args);
    EXPECT_EQ(r.exit_code, 0) << args[0] << ": " << r.err;
  }
  auto refused = run({"repair", "--archive", snapshot.string(), "--rebuild-index"});
  EXPECT_EQ(refused.exit_code, 5) << refused.out;
  EXPECT_NE(refused.err.find("hard links"), std::string::npos) << refused.err;
}

TEST_F(HostileArchive, FifosNeverHangACommand) {
  fs::path a_pack = packs(good_).front();
  std::vector<std::pair<std::string, std::string>> cases = {
      {"lock", "lock"}, {"lockmdb", "index/lock.mdb"}, {"data", "index/data.mdb"},
      {"format", "FORMAT"}, {"pack", fs::relative(a_pack, good_).string()},
  };
  for (auto& [name, path] : cases) {
    SCOPED_TRACE(name);
    fs::path archive = copy("fifo-" + name);
    fs::remove(archive / path);
    ASSERT_EQ(::mkfifo((archive / path).c_str(), 0600), 0);
    auto r = run_all(archive, "fifo-" + name);
    if (name == "pack") {
      EXPECT_EQ(r.exit("verify"), 1);
    } else if (name == "lock") {
      EXPECT_EQ(r.exit("repair"), 5);
    } else {
      EXPECT_EQ(r.exit("ls"), 5) << r.err("ls");
    }
  }
}

TEST_F(HostileArchive, DevicesAreNeverOpened) {
  fs::path a_pack = packs(good_).front();
  for (auto& [name, path] : std::vector<std::pair<std::string, std::string>>{
           {"data", "index/data.mdb"}, {"pack", fs::relative(a_pack, good_).string()}}) {
    SCOPED_TRACE(name);
    fs::path archive = copy("dev-" + name);
    fs::remove(archive / path);
    if (::mknod((archive / path).c_str(), S_IFCHR | 0600, makedev(1, 5)) != 0)
      GTEST_SKIP() << "making a device node needs root";
    auto r = run_all(archive, "dev-" + name);
    EXPECT_NE(r.exit("verify"), 0);
    if (name == "data") {
      EXPECT_EQ(r.exit("ls"), 5);
    }
  }
}

// A record of 1.25 GiB of zeros in 40 KiB: zstd RLE blocks, hand-made.
std::string bomb_frame(uint64_t raw_size) {
  std::string f;
  auto le = [&](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) f.push_back(static_cast<char>(v >> (8 * i)));
  };
  le(0xFD2FB528u, 4);
  f.push_back(static_cast<char>(0xC0));  // 8-byte content size, window descriptor follows
  f.push_back(static_cast<char>(7 << 3));  // window 128 KiB
  le(raw_size, 8);
  constexpr uint64_t kBlock = 128 << 10;
  for (uint64_t left = raw_size; left > 0;) {
    uint64_t n = std::min(left, kBlock);
    left -= n;
    le((left == 0 ? 1 : 0) | (1 << 1) | (n << 3), 3);  // RLE block
    f.push_back('\0');
  }
  return f;
}

TEST_F(HostileArchive, DecompressionBombsStayWithinMemory) {
  constexpr uint64_t kClaim = 1280ull << 20;
  fs::path archive = copy("bomb");
  {
    // INBOX UID 3 of alice now points at a record whose frame really holds 1.25 GiB.
    auto index = Index::open(archive / "index", 64ull << 20, false);
    auto txn = index->write();
    auto account = codec::decode_u32_key(*txn.get(Index::account_names, codec::name_key(kAccount)));
    auto folder = codec::decode_u32_key(*txn.get(Index::folder_names, codec::folder_name_key(account, "INBOX")));
    std::string key = codec::message_key({account, folder, 7, 3});
    auto m = codec::decode_message(key, *txn.get(Index::messages, key));
    uint64_t pack_id = 0x00b0b0b0b0b0b0b0ull;
    fs::path file = pack_file(archive, pack_id);
    auto w = PackWriter::create(file, pack_id, archive);
    auto info = w.append(RecordKind::object, m.hash, kClaim, bomb_frame(kClaim));
    w.sync();
    EXPECT_LT(info.record_size, 64u << 10);
    txn.put(Index::objects, std::string(reinterpret_cast<const char*>(m.hash.data()), 32),
            codec::encode_object({pack_id, info.offset, info.record_size, kClaim}));
    txn.put(Index::packs, codec::u64_key(pack_id), codec::encode_pack({pack_id, w.size(), 1, true}));
    txn.commit();
  }
  auto r = run_all(archive, "bomb");
  EXPECT_EQ(r.exit("cat"), 5);
  EXPECT_TRUE(r.by_name.at("cat").out.empty()) << "cat wrote unverified bytes";
  EXPECT_NE(r.err("cat").find("SHA-256"), std::string::npos) << r.err("cat");
  EXPECT_EQ(r.exit("verify"), 1);
  EXPECT_EQ(r.exit("check"), 1);
  // In process, reading it whole is refused before anything is decoded.
  auto a = Archive::open(archive, Archive::Mode::read);
  auto m = a->message({1, 1, 7, 3});
  ASSERT_TRUE(m);
  try {
    a->read_object(m->hash);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("held in memory"), std::string::npos) << e.what();
  }
  // Every command so far (each child process) stayed far below the claimed size.
  struct rusage usage{};
  ASSERT_EQ(::getrusage(RUSAGE_CHILDREN, &usage), 0);
  EXPECT_LT(usage.ru_maxrss, 400 * 1024) << "peak RSS of a command, KiB";
}

TEST_F(HostileArchive, MissingAndDamagedPacksAreReportedAndRepairKeepsTheIndex) {
  auto damage_cases = std::vector<std::pair<std::string, std::function<void(const fs::path&)>>>{
      {"missing", [](const fs::path& p) { fs::remove(p); }},
      {"zeroed", [](const fs::path& p) {
         auto size = fs::file_size(p);
         std::ofstream(p, std::ios::binary | std::ios::trunc) << std::string(size, '\0');
       }},
      {"half", [](const fs::path& p) { fs::resize_file(p, fs::file_size(p) / 2); }},
      {"header-crc", [](const fs::path& p) {
         std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
         f.seekp(kPackHeaderSize + 60);
         f.put('\x5a');
       }},
      {"payload", [](const fs::path& p) {
         std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
         f.seekp(kPackHeaderSize + kRecordHeaderSize + 20);
         f.put('\x5a');
       }},
  };
  for (auto& [name, damage] : damage_cases) {
    SCOPED_TRACE(name);
    fs::path archive = copy("pack-" + name);
    damage(packs(archive).front());
    auto r = run_all(archive, "pack-" + name);
    EXPECT_EQ(r.exit("ls"), 0) << r.err("ls");
    EXPECT_EQ(r.exit("verify"), 1);
    EXPECT_EQ(r.exit("check"), 1) << r.by_name.at("check").out;
    EXPECT_NE(r.by_name.at("check").out.find("missing or damaged"), std::string::npos) << r.by_name.at("check").out;
    // Asked to compare the index alone, it says plainly that the mail was not read.
    auto metadata = run({"manifest", "check", "--archive", archive.string(), "--manifest",
                         (outside_ / "good-manifest.json").string(), "--metadata-only"});
    EXPECT_EQ(metadata.exit_code, 0) << metadata.out;
    EXPECT_NE(metadata.out.find("bytes were not read"), std::string::npos) << metadata.out;
    EXPECT_EQ(r.exit("repair"), 1) << r.by_name.at("repair").out;
    EXPECT_NE(r.by_name.at("repair").out.find("NOT INSTALLED"), std::string::npos) << r.by_name.at("repair").out;
    EXPECT_EQ(r.exit("verify-after-repair"), 1) << "the index that knew what was lost must stay";
    // Every message is still listed after the repair.
    {
      auto a = Archive::open(archive, Archive::Mode::read);
      uint64_t listed = 0;
      a->for_each_message([&](const MessageRecord&) { return ++listed, true; });
      EXPECT_EQ(listed, messages_);
    }
    // Forced, the rebuilt index goes in; verify still knows journal records are gone.
    auto forced = run({"repair", "--archive", archive.string(), "--rebuild-index", "--force"});
    EXPECT_EQ(forced.exit_code, 1) << forced.out;
    auto after = run({"verify", "--archive", archive.string()});
    EXPECT_EQ(after.exit_code, 1) << after.out;
    if (name != "payload") {
      EXPECT_NE(after.out.find("journal records"), std::string::npos) << name << ": " << after.out;
    }
  }
}

TEST_F(HostileArchive, ImpossibleSizesAreErrorsNotWrappedTotals) {
  fs::path archive = copy("sizes");
  {
    auto index = Index::open(archive / "index", 64ull << 20, false);
    auto txn = index->write();
    std::string key = codec::message_key({1, 1, 7, 1});
    auto m = codec::decode_message(key, *txn.get(Index::messages, key));
    m.size = ~uint64_t{0};
    txn.put(Index::messages, key, codec::encode_message(m));
    txn.commit();
  }
  auto r = run_all(archive, "sizes", false);
  EXPECT_EQ(r.exit("manifest"), 5);
  EXPECT_NE(r.err("manifest").find("exceeds 2^64"), std::string::npos) << r.err("manifest");
  EXPECT_EQ(r.exit("ls"), 5);
  EXPECT_EQ(r.exit("verify"), 5);
  fs::path listing = fs::path(dir_.path()) / "leaves.tsv";
  auto m = run({"manifest", "--archive", archive.string(), "--out", (fs::path(dir_.path()) / "m.json").string(),
                "--listing", listing.string()});
  EXPECT_EQ(m.exit_code, 5);
  EXPECT_FALSE(fs::exists(listing)) << "a partial listing was left";
  EXPECT_NE(r.err("verify").find("exceeds 2^64"), std::string::npos) << r.err("verify");
}

TEST_F(HostileArchive, FlippedIndexBytesNeverCrashOrListPartially) {
  std::mt19937_64 rng(20261203);
  std::string data = read_all(good_ / "index" / "data.mdb");
  uint64_t page = 4096;
  int refused = 0, rounds = 24;
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE(round);
    fs::path archive = copy(fmt::format("flip-{}", round));
    std::string damaged = data;
    int flips = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < flips; ++i) {
      // Half the flips land in page headers and node tables, where LMDB is most fragile.
      size_t at = rng() % 2 ? rng() % damaged.size() : (rng() % (damaged.size() / page)) * page + rng() % 64;
      damaged[at] = static_cast<char>(damaged[at] ^ (1u << (rng() % 8)));
    }
    std::ofstream(archive / "index" / "data.mdb", std::ios::binary | std::ios::trunc) << damaged;
    auto r = run_all(archive, fmt::format("flip-{}", round), false);
    if (r.exit("ls") == 5) ++refused;
    if (r.exit("manifest") == 0) {
      auto m = nlohmann::json::parse(read_all(fs::path(dir_.path()) / fmt::format("out-flip-{}", round) / "manifest.json"));
      EXPECT_EQ(m["messages"].get<uint64_t>(), messages_) << "a manifest of part of the archive";
    } else {
      EXPECT_NE(r.err("manifest").find("index"), std::string::npos) << r.err("manifest");
    }
  }
  EXPECT_GT(refused, 0);
}

// export and import, the real binaries against the harness Dovecot, on
// archives with links and FIFOs where their files are.
class HostileArchiveWriters : public testing::SharedServerTest {
 protected:
  std::vector<std::string> server_args(const std::string& user) {
    return {"--host", server_->host(), "--port", std::to_string(server_->imaps_port()), "--ca-file",
            server_->ca_file(), "--user", user, "--password-file", server_->password_file(user)};
  }
  std::vector<std::string> with(std::vector<std::string> head, const std::vector<std::string>& tail) {
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  }
};

TEST_F(HostileArchiveWriters, ExportAndImportNeverWriteOutsideTheArchive) {
  TempDir dir;
  fs::path good = fs::path(dir.path()) / "good";
  fs::path outside = fs::path(dir.path()) / "outside";
  fs::create_directories(outside);
  std::ofstream(outside / "decoy") << "a file the archive must never change\n";
  auto exported = run(with({"export", "--archive", good.string()}, server_args("alice")));
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  server_->add_user("hostile_target");
  fs::copy(good / "index", outside / "index-copy", fs::copy_options::recursive);
  fs::copy(good / "packs", outside / "packs-copy", fs::copy_options::recursive);
  fs::copy_file(good / "index" / "data.mdb", outside / "data-copy");
  fs::path a_pack;
  for (auto& e : fs::recursive_directory_iterator(good / "packs"))
    if (e.path().extension() == ".pack") a_pack = e.path();
  fs::copy_file(a_pack, outside / "pack-copy");
  fs::copy_file(good / "FORMAT", outside / "format-copy");
  struct Case {
    std::string name, path, target;  // target empty: a FIFO
  };
  std::vector<Case> cases = {
      {"lock", "lock", "decoy"},          {"index", "index", "index-copy"},
      {"data", "index/data.mdb", "data-copy"}, {"lockmdb", "index/lock.mdb", "decoy"},
      {"packs", "packs", "packs-copy"},   {"pack", fs::relative(a_pack, good).string(), "pack-copy"},
      {"format", "FORMAT", "format-copy"}, {"lock-fifo", "lock", ""},
      {"lockmdb-fifo", "index/lock.mdb", ""},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    fs::path archive = fs::path(dir.path()) / ("w-" + c.name);
    fs::copy(good, archive, fs::copy_options::recursive);
    fs::remove_all(archive / c.path);
    if (c.target.empty()) ASSERT_EQ(::mkfifo((archive / c.path).c_str(), 0600), 0);
    else fs::create_symlink(outside / c.target, archive / c.path);
    std::string before = tree_digest(outside);
    auto e = run(with({"export", "--archive", archive.string()}, server_args("alice")));
    expect_normal_end(e, c.name + ": export");
    auto i = run(with({"import", "--archive", archive.string()}, server_args("hostile_target")));
    expect_normal_end(i, c.name + ": import");
    auto r = run({"repair", "--archive", archive.string(), "--rebuild-index"});
    expect_normal_end(r, c.name + ": repair");
    EXPECT_EQ(tree_digest(outside), before) << c.name << ": something outside the archive changed";
    if (c.name != "pack") {
      EXPECT_EQ(e.exit_code, 5) << e.err;
      EXPECT_EQ(i.exit_code, 5) << i.err;
    }
  }
}

TEST(ArchivePermissions, EverythingWrittenIsOwnerOnlyWhateverTheUmask) {
  TempDir dir;
  mode_t old = ::umask(0);
  fs::path root = fs::path(dir.path()) / "archive";
  fs::path out = fs::path(dir.path()) / "out";
  fs::create_directories(out);
  ::chmod(out.c_str(), 0700);
  make_good(root);
  auto verify = run({"verify", "--archive", root.string(), "--report", (out / "verify.json").string(), "--csv",
                     (out / "verify.csv").string()});
  auto manifest = run({"manifest", "--archive", root.string(), "--out", (out / "m.json").string(), "--listing",
                       (out / "leaves.tsv").string()});
  auto repair = run({"repair", "--archive", root.string(), "--rebuild-index"});
  ::umask(old);
  ASSERT_EQ(verify.exit_code, 0) << verify.err;
  ASSERT_EQ(manifest.exit_code, 0) << manifest.err;
  ASSERT_EQ(repair.exit_code, 0) << repair.out;
  size_t checked = 0;
  for (auto base : {root, out}) {
    for (auto& e : fs::recursive_directory_iterator(base)) {
      struct stat st{};
      ASSERT_EQ(::lstat(e.path().c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 077, 0u) << e.path() << fmt::format(" is {:o}", st.st_mode & 0777);
      ++checked;
    }
  }
  struct stat st{};
  ASSERT_EQ(::stat(root.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u) << "the archive directory";
  EXPECT_GT(checked, 20u);
}

}  // namespace
}  // namespace imapstage::archive

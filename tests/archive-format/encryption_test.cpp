// Encryption at rest (FORMAT.md, "Encryption"), on real files and LMDB:
// everything written reads back, nothing of the mail, its names or its
// hashes appears in any file, a wrong passphrase writes nothing, key slots
// change only the key file, and the index rebuilds from the sealed packs.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "archive-format/archive.h"
#include "archive-format/keys.h"
#include "archive-format/rebuild.h"
#include "common/error.h"
#include "common/events.h"
#include "tests/support/test_server.h"
#include "verify/manifest.h"
#include "verify/offline.h"

namespace imapstage::archive {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr const char* kPassphrase = "correct horse battery staple";
const ScryptParams kCheapKdf{10, 8, 1};  // tests: 1 MiB per try

Archive::Options with_passphrase(std::string passphrase) {
  Archive::Options o;
  o.passphrase = [passphrase](const fs::path&) { return passphrase; };
  return o;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every regular file below `dir` and its bytes.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = read_file(e.path());
  return out;
}

struct Mail {
  std::string subject = "Quarterly figures for Zanzibar-Holding 4711";
  std::string sender = "treasurer.kwame@zanzibar-holding.example";
  std::string message_id = "<a9f3e1c2-secret-7731@zanzibar-holding.example>";
  std::string folder = "Vorstand/Geheimsache-Nordlicht";
  std::string account = "kwame.secret-account@zanzibar.example";
  std::string host = "imap.zanzibar-internal.example";
  std::string user = "kwame-login-name";
  std::string message(int n, size_t body) const {
    std::string m = "From: " + sender + "\r\nSubject: " + subject + " #" + std::to_string(n) +
                    "\r\nMessage-ID: " + message_id + std::to_string(n) + "\r\n\r\n";
    for (size_t i = 0; m.size() < body; ++i) m += "line " + std::to_string(i * 7919 % 10007) + " of the body\r\n";
    return m;
  }
};

// Writes an account, a folder and `sizes.size()` messages; returns their hashes.
std::vector<Hash> fill(Archive& a, const Mail& mail, const std::vector<size_t>& sizes) {
  Batch b(a);
  AccountRecord acc;
  acc.name = mail.account;
  acc.host = mail.host;
  acc.user = mail.user;
  b.put_account(acc);
  FolderRecord f;
  f.account_id = acc.id;
  f.name_raw = f.name_utf8 = mail.folder;
  f.delimiter = '/';
  f.path = {"Vorstand", "Geheimsache-Nordlicht"};
  f.uidvalidity = 42;
  f.uidnext = static_cast<uint32_t>(sizes.size() + 1);
  b.put_folder(f);
  std::vector<Hash> hashes;
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::string bytes = mail.message(static_cast<int>(i), sizes[i]);
    MessageRecord m;
    m.key = {acc.id, f.id, 42, static_cast<uint32_t>(i + 1)};
    m.hash = sha256(bytes);
    m.size = bytes.size();
    m.keywords = {"$Nordlicht-Label"};
    m.internaldate = 1700000000 + static_cast<int64_t>(i);
    if (bytes.size() >= kStreamedObject) {  // as export stores a large body
      FrameSpool spool = b.spool(bytes.size());
      for (size_t at = 0; at < bytes.size(); at += 300000) spool.write(std::string_view(bytes).substr(at, 300000));
      b.put_spooled(spool);
    } else {
      b.put_object(m.hash, bytes);
    }
    b.put_message(m);
    hashes.push_back(m.hash);
  }
  b.commit();
  return hashes;
}

void expect_nothing_visible(const fs::path& dir, const Mail& mail, const std::vector<Hash>& hashes) {
  for (auto& [name, bytes] : snapshot(dir)) {
    for (const std::string& secret : {mail.subject, mail.sender, mail.message_id, mail.folder, std::string("Nordlicht"),
                                      mail.account, mail.host, mail.user, std::string("line 7919 of the body")})
      EXPECT_EQ(bytes.find(secret), std::string::npos) << name << " shows \"" << secret << "\"";
    for (auto& h : hashes) {
      std::string raw(reinterpret_cast<const char*>(h.data()), h.size());
      EXPECT_EQ(bytes.find(raw), std::string::npos) << name << " holds a message's SHA-256";
      EXPECT_EQ(bytes.find(to_hex(h)), std::string::npos) << name << " holds a message's SHA-256 in hex";
    }
  }
}

TEST(Encryption, WhatIsWrittenReadsBackAndNothingPlainIsOnDisk) {
  TempDir tmp;
  fs::path dir = fs::path(tmp.path()) / "enc";
  Mail mail;
  // Small ones go into groups, a middle one alone, a large one streamed into the pack.
  std::vector<size_t> sizes = {900, 1500, 2500, 70000, 5u << 20};
  std::vector<Hash> hashes;
  {
    auto a = Archive::create_encrypted(dir, kPassphrase, kCheapKdf, with_passphrase(kPassphrase));
    EXPECT_TRUE(a->encrypted());
    hashes = fill(*a, mail, sizes);
  }
  // Owner-only, whatever the umask.
  struct stat st{};
  ASSERT_EQ(::stat((dir / "keys").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(read_file(dir / "FORMAT"), "imapstage-archive 7\n");

  auto a = Archive::open(dir, Archive::Mode::read, with_passphrase(kPassphrase));
  auto acc = a->find_account(mail.account);
  ASSERT_TRUE(acc);
  EXPECT_EQ(acc->host, mail.host);
  auto folder = a->find_folder(acc->id, mail.folder);
  ASSERT_TRUE(folder);
  size_t n = 0;
  a->for_each_message([&](const MessageRecord& m) {
    EXPECT_EQ(m.hash, hashes[n]);
    EXPECT_EQ(m.keywords, std::vector<std::string>{"$Nordlicht-Label"});
    std::string bytes = a->read_object(m.hash);
    EXPECT_EQ(sha256(bytes), m.hash);
    EXPECT_EQ(bytes, mail.message(static_cast<int>(n), sizes[n]));
    ++n;
    return true;
  });
  EXPECT_EQ(n, sizes.size());
  EXPECT_TRUE(a->object(hashes[0])->grouped);
  size_t objects = 0;
  a->for_each_object([&](const Hash&, const ObjectLocation&) { return ++objects, true; });
  EXPECT_EQ(objects, sizes.size());
  NullSink events;
  set_default_passphrase_source([](const fs::path&) { return std::string(kPassphrase); });
  auto report = verify::verify_offline({.archive_dir = dir}, events);
  set_default_passphrase_source({});
  EXPECT_TRUE(report.ok()) << report.to_json().dump(2);

  expect_nothing_visible(dir, mail, hashes);

  // The manifest is that of the same mail in a plain archive.
  fs::path plain_dir = fs::path(tmp.path()) / "plain";
  {
    auto p = Archive::open(plain_dir, Archive::Mode::create);
    fill(*p, mail, sizes);
  }
  auto plain = Archive::open(plain_dir, Archive::Mode::read);
  EXPECT_EQ(verify::compute_manifest(*a, nullptr, {}).root, verify::compute_manifest(*plain, nullptr, {}).root);
}

// The bytes of this process's open files that have no name any more (a
// spool's temporary file), read through /proc/self/fd.
std::string unnamed_files_of_this_process() {
  std::string all;
  for (auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = fs::read_symlink(e.path(), ec);
    if (ec || target.string().find("(deleted)") == std::string::npos) continue;
    std::ifstream in(e.path(), std::ios::binary);
    all += std::string(std::istreambuf_iterator<char>(in), {});
  }
  return all;
}

TEST(Encryption, ASpoolOfAnEncryptedArchiveHoldsNothingPlain) {
  TempDir tmp;
  Mail mail;
  // Random bytes do not compress: zstd stores them as they are, so a plain
  // spool shows any run of them, and a sealed one must not.
  std::string bytes = mail.message(1, 1000);
  std::mt19937_64 rng(5);
  while (bytes.size() < (6u << 20)) bytes.push_back(static_cast<char>(rng()));
  const std::string marker = bytes.substr(3u << 20, 64);
  for (bool encrypted : {false, true}) {
    SCOPED_TRACE(encrypted ? "encrypted" : "plain");
    fs::path dir = fs::path(tmp.path()) / (encrypted ? "enc" : "plain");
    auto a = encrypted ? Archive::create_encrypted(dir, kPassphrase, kCheapKdf, with_passphrase(kPassphrase))
                       : Archive::open(dir, Archive::Mode::create);
    Batch b(*a);
    FrameSpool spool = b.spool(bytes.size());
    spool.write(bytes);
    ASSERT_EQ(spool.finish(), sha256(bytes));
    std::string on_disk = unnamed_files_of_this_process();
    EXPECT_GT(on_disk.size(), 1000u);
    EXPECT_EQ(on_disk.find(marker) != std::string::npos, !encrypted);
    EXPECT_TRUE(b.put_spooled(spool));
    b.commit();
    EXPECT_EQ(a->read_object(sha256(bytes)), bytes);
  }
}

TEST(Encryption, AWrongPassphraseIsAnAuthErrorAndWritesNothing) {
  TempDir tmp;
  fs::path dir = fs::path(tmp.path()) / "enc";
  Mail mail;
  { fill(*Archive::create_encrypted(dir, kPassphrase, kCheapKdf, with_passphrase(kPassphrase)), mail, {1000}); }
  auto before = snapshot(dir);
  for (auto mode : {Archive::Mode::read, Archive::Mode::write, Archive::Mode::create}) {
    try {
      Archive::open(dir, mode, with_passphrase("Correct horse battery staple"));
      FAIL() << "opened with a wrong passphrase";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::auth) << e.what();
      EXPECT_NE(std::string(e.what()).find("wrong passphrase"), std::string::npos) << e.what();
    }
  }
  try {
    rebuild_index(dir, with_passphrase("nope"));
    FAIL() << "rebuilt with a wrong passphrase";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::auth);
  }
  EXPECT_EQ(snapshot(dir), before);
  // No passphrase at all: a usage error, nothing written either.
  set_default_passphrase_source({});
  try {
    Archive::open(dir, Archive::Mode::write);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage);
  }
  EXPECT_EQ(snapshot(dir), before);
}

TEST(Encryption, KeySlotsChangeOnlyTheKeyFile) {
  TempDir tmp;
  fs::path dir = fs::path(tmp.path()) / "enc";
  Mail mail;
  { fill(*Archive::create_encrypted(dir, kPassphrase, kCheapKdf, with_passphrase(kPassphrase)), mail, {1000, 3000}); }
  auto before = snapshot(dir);
  KeyFile file = read_key_file(dir);
  ASSERT_EQ(file.slots.size(), 1u);
  uint32_t slot = 0;
  std::string master = unlock_master(file, kPassphrase, dir, &slot);
  EXPECT_EQ(slot, 1u);
  file.slots.push_back(make_slot(2, master, file.key_id, "second passphrase", kCheapKdf));
  file.slots.erase(file.slots.begin());
  write_key_file(dir, file);
  auto after = snapshot(dir);
  for (auto& [name, bytes] : before)
    if (name != "keys") EXPECT_EQ(after[name], bytes) << name << " changed";
  EXPECT_NE(after["keys"], before["keys"]);
  EXPECT_THROW(Archive::open(dir, Archive::Mode::read, with_passphrase(kPassphrase)), Error);
  auto a = Archive::open(dir, Archive::Mode::read, with_passphrase("second passphrase"));
  EXPECT_TRUE(a->find_account(mail.account));
}

TEST(Encryption, TheIndexRebuildsFromSealedPacks) {
  TempDir tmp;
  fs::path dir = fs::path(tmp.path()) / "enc";
  Mail mail;
  std::vector<Hash> hashes;
  { hashes = fill(*Archive::create_encrypted(dir, kPassphrase, kCheapKdf, with_passphrase(kPassphrase)), mail, {800, 900, 90000}); }
  auto report = rebuild_index(dir, with_passphrase(kPassphrase), RebuildOptions{.force = true});
  EXPECT_EQ(report.objects, 3u) << report.to_json().dump(2);
  EXPECT_EQ(report.messages, 3u);
  auto a = Archive::open(dir, Archive::Mode::read, with_passphrase(kPassphrase));
  for (auto& h : hashes) EXPECT_EQ(sha256(a->read_object(h)), h);
  EXPECT_EQ(a->find_folder(a->find_account(mail.account)->id, mail.folder)->name_utf8, mail.folder);
  expect_nothing_visible(dir, mail, hashes);
}

TEST(Encryption, AnEncryptedArchiveIsChosenAtCreationOnly) {
  TempDir tmp;
  fs::path dir = fs::path(tmp.path()) / "plain";
  Archive::open(dir, Archive::Mode::create);
  try {
    Archive::create_encrypted(dir, kPassphrase, kCheapKdf, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage);
  }
  EXPECT_FALSE(has_key_file(dir));
  // A missing key file is refused, not read as plain.
  fs::path enc = fs::path(tmp.path()) / "enc";
  { Archive::create_encrypted(enc, kPassphrase, kCheapKdf, with_passphrase(kPassphrase)); }
  fs::remove(enc / "keys");
  try {
    Archive::open(enc, Archive::Mode::read);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format) << e.what();
  }
}

}  // namespace
}  // namespace imapstage::archive

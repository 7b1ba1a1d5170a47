#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include <fmt/format.h>

#include "archive-format/archive.h"
#include "archive-format/pack.h"
#include "archive-format/rebuild.h"
#include "common/error.h"
#include "tests/support/test_server.h"

namespace imapstage::archive {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Everything the index holds that a rebuild must bring back, as comparable text.
struct Snapshot {
  std::vector<std::string> accounts, folders, messages, appends, targets, objects;
  bool operator==(const Snapshot&) const = default;
};

Snapshot snapshot(const Archive& a) {
  Snapshot s;
  for (auto& acc : a.accounts()) {
    s.accounts.push_back(fmt::format("{} {} {} {} {}", acc.id, acc.name, acc.host, acc.user, acc.created));
    for (auto& f : a.folders(acc.id)) {
      std::string attrs;
      for (auto& x : f.attributes) attrs += x + ",";
      s.folders.push_back(fmt::format("{} {} {} {} {} {} {} {} {} {} {} {} {}", f.account_id, f.id, f.name_raw,
                                      f.name_utf8, int(f.delimiter), attrs, f.subscribed, f.noselect, f.gone,
                                      f.uidvalidity, f.uidnext, f.highestmodseq, f.last_export));
    }
  }
  a.for_each_message([&](const MessageRecord& m) {
    std::string kw;
    for (auto& k : m.keywords) kw += k + ",";
    s.messages.push_back(fmt::format("{} {} {} {} {} {} {} {} {} {} {} {}", m.key.account_id, m.key.folder_id,
                                     m.key.uidvalidity, m.key.uid, to_hex(m.hash), m.flags, kw, m.internaldate,
                                     m.internaldate_tz, m.size, m.modseq, int(m.state)));
    return true;
  });
  for (uint32_t t = 1; t < 10; ++t) {
    a.for_each_append(t, [&](const AppendRecord& r) {
      s.appends.push_back(fmt::format("{} {} {} {} {} {} {} {}", r.key.target_id, r.key.source.uid, int(r.state),
                                      r.target_folder, r.target_uidvalidity, r.target_uid, r.flags, r.when));
      return true;
    });
  }
  for (auto name : {"t1@host:993", "t2@host:143"})
    if (auto id = a.find_target(name)) s.targets.push_back(fmt::format("{} {}", *id, name));
  a.for_each_object([&](const Hash& h, const ObjectLocation& l) {
    s.objects.push_back(fmt::format("{} {} {} {}", to_hex(h), l.pack_id, l.offset, l.raw_size));
    return true;
  });
  return s;
}

// An archive with two accounts, folders renamed and changed, messages
// updated and expunged, appends made and erased, across several packs.
void populate(const fs::path& root) {
  Archive::Options o;
  o.group_small_objects = false;  // damage to one record touches one object
  o.pack_size_limit = 24 << 10;
  o.map_size = 64ull << 20;
  auto a = Archive::open(root, Archive::Mode::create, o);
  Batch b(*a);
  for (int acc = 0; acc < 2; ++acc) {
    AccountRecord account;
    account.name = fmt::format("user{}@example.org", acc);
    account.host = "imap.example.org";
    account.user = fmt::format("user{}", acc);
    account.created = 1700000000 + acc;
    b.put_account(account);
    for (int f = 0; f < 3; ++f) {
      FolderRecord folder;
      folder.account_id = account.id;
      folder.name_raw = f == 0 ? "INBOX" : fmt::format("Folder{}", f);
      folder.name_utf8 = folder.name_raw;
      folder.delimiter = '.';
      folder.attributes = {"\\HasNoChildren"};
      folder.uidvalidity = 100 + f;
      b.put_folder(folder);
      for (uint32_t uid = 1; uid <= 12; ++uid) {
        std::string raw = uid % 4 == 0 ? random_bytes(1500, 42)  // shared by many messages
                                       : random_bytes(1500 + uid, acc * 1000 + f * 100 + uid);
        MessageRecord m;
        m.key = {account.id, folder.id, folder.uidvalidity, uid};
        m.hash = sha256(raw);
        m.size = raw.size();
        parse_flags({"\\Seen", "$Label" + std::to_string(uid % 3)}, m.flags, m.keywords);
        m.internaldate = 1600000000 + uid;
        m.internaldate_tz = 120;
        m.modseq = uid * 3;
        b.put_object(m.hash, raw);
        b.put_message(m);
        if (uid % 5 == 0) b.commit();
      }
      folder.uidnext = 13;
      folder.last_export = 1700000100;
      b.put_folder(folder);
      b.commit();
    }
  }
  // Later changes that replay must apply in order.
  auto acc = *a->find_account("user0@example.org");
  auto folder = *a->find_folder(acc.id, "Folder1");
  folder.name_raw = "Renamed";
  folder.gone = true;
  b.put_folder(folder);
  auto m = *a->message({acc.id, folder.id, folder.uidvalidity, 3});
  m.state = MessageState::expunged;
  m.flags |= kDeleted;
  b.put_message(m);
  b.commit();
  uint32_t t1 = a->put_target("t1@host:993");
  a->put_target("t2@host:143");
  for (uint32_t uid = 1; uid <= 6; ++uid) {
    AppendRecord r;
    r.key = {t1, {acc.id, folder.id, folder.uidvalidity, uid}};
    r.state = uid % 2 ? AppendState::done : AppendState::in_flight;
    r.target_folder = "Renamed";
    r.target_uid = uid + 10;
    r.when = 1700000200;
    b.put_append(r);
  }
  b.commit();
  b.erase_append({t1, {acc.id, folder.id, folder.uidvalidity, 2}});
  b.commit();
  a->end_run(a->begin_run("export", acc.name, "{}"), "ok", "{}");
}

TEST(Rebuild, RestoresWhatTheIndexHeld) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  populate(root);
  Snapshot before;
  std::string id;
  {
    auto a = Archive::open(root, Archive::Mode::read);
    before = snapshot(*a);
    id = a->archive_id();
    ASSERT_GT(a->packs().size(), 2u);
  }
  // What a writer killed while creating a pack (before creation was atomic)
  // could leave: no record, so no problem, and not counted as a pack.
  fs::create_directories(root / "packs/7a");
  std::ofstream(root / "packs/7a/7a00000000000001.pack", std::ios::binary)
      << pack_header(0x7a00000000000001ull).substr(0, 20);
  size_t packs_before = 0;
  {
    auto a = Archive::open(root, Archive::Mode::read);
    packs_before = a->packs().size();
  }
  auto report = rebuild_index(root);
  EXPECT_EQ(report.packs, packs_before);
  EXPECT_TRUE(report.problems.empty()) << report.to_json().dump(2);
  EXPECT_TRUE(report.not_restored.empty()) << report.to_json().dump(2);
  EXPECT_FALSE(report.old_index.empty());
  EXPECT_TRUE(fs::exists(fs::path(report.old_index) / "data.mdb"));
  EXPECT_EQ(report.accounts, 2u);
  EXPECT_EQ(report.folders, 6u);
  EXPECT_EQ(report.messages, 72u);
  EXPECT_EQ(report.targets, 2u);
  EXPECT_EQ(report.appends, 5u);
  EXPECT_EQ(report.runs, 1u);
  EXPECT_EQ(report.objects, before.objects.size());
  EXPECT_EQ(report.torn_tails, 0u);

  auto a = Archive::open(root, Archive::Mode::read);
  EXPECT_EQ(a->archive_id(), id);
  Snapshot after = snapshot(*a);
  EXPECT_EQ(after.accounts, before.accounts);
  EXPECT_EQ(after.folders, before.folders);
  EXPECT_EQ(after.messages, before.messages);
  EXPECT_EQ(after.appends, before.appends);
  EXPECT_EQ(after.targets, before.targets);
  EXPECT_EQ(after.objects, before.objects);
  EXPECT_TRUE(a->find_folder(1, "Renamed"));
  EXPECT_FALSE(a->find_folder(1, "Folder1"));
  EXPECT_EQ(a->runs().size(), 1u);
  a->for_each_message([&](const MessageRecord& m) {
    EXPECT_EQ(sha256(a->read_object(m.hash)), m.hash);
    return true;
  });
  a.reset();

  // The rebuilt archive takes new writes in a new pack, and new ids never collide.
  {
    auto w = Archive::open(root, Archive::Mode::write);
    Batch b(*w);
    AccountRecord acc;
    acc.name = "third@example.org";
    EXPECT_EQ(b.put_account(acc), 3u);
    FolderRecord f;
    f.account_id = 1;
    f.name_raw = "New";
    EXPECT_EQ(b.put_folder(f), 4u);
    std::string raw = random_bytes(100, 7);
    b.put_object(sha256(raw), raw);
    b.commit();
    EXPECT_EQ(w->put_target("t3@host:1"), 3u);
  }
  auto report2 = rebuild_index(root);
  EXPECT_TRUE(report2.problems.empty()) << report2.to_json().dump(2);
  auto again = Archive::open(root, Archive::Mode::read);
  EXPECT_TRUE(again->find_account("third@example.org"));
  EXPECT_TRUE(again->find_folder(1, "New"));
  EXPECT_EQ(again->find_target("t3@host:1"), 3u);
}

TEST(Rebuild, WorksWithoutAnyIndexAndReportsTornTails) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  populate(root);
  Snapshot before;
  fs::path last_pack;
  {
    auto a = Archive::open(root, Archive::Mode::read);
    before = snapshot(*a);
    for (auto& p : a->packs())
      if (!p.sealed) last_pack = a->pack_path(p.id);
  }
  ASSERT_FALSE(last_pack.empty());
  fs::remove_all(root / "index");
  {
    std::ofstream out(last_pack, std::ios::binary | std::ios::app);
    out << std::string(kRecordHeaderSize - 5, 'z');  // half a header: a torn tail
  }
  auto report = rebuild_index(root);
  EXPECT_TRUE(report.old_index.empty());
  EXPECT_EQ(report.torn_tails, 1u);
  ASSERT_EQ(report.problems.size(), 1u) << report.to_json().dump(2);
  EXPECT_NE(report.problems[0].find(last_pack.string()), std::string::npos);
  EXPECT_FALSE(report.not_restored.empty());  // run history, archive id
  auto a = Archive::open(root, Archive::Mode::read);
  Snapshot after = snapshot(*a);
  EXPECT_EQ(after.accounts, before.accounts);
  EXPECT_EQ(after.folders, before.folders);
  EXPECT_EQ(after.messages, before.messages);
  EXPECT_EQ(after.appends, before.appends);
  EXPECT_EQ(after.objects, before.objects);
  EXPECT_TRUE(a->runs().empty());
}

TEST(Rebuild, NamesDamagedObjectsAndLostJournals) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  populate(root);
  Hash victim{};
  {
    auto a = Archive::open(root, Archive::Mode::read);
    a->for_each_message([&](const MessageRecord& m) {
      victim = m.hash;
      return false;
    });
    auto loc = a->object(victim);
    ASSERT_TRUE(loc);
    std::fstream f(a->pack_path(loc->pack_id), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(loc->offset + loc->record_size - 12));
    f.write("\x01\x02\x03", 3);
  }
  auto report = rebuild_index(root);
  EXPECT_EQ(report.bad_objects, 1u);
  bool named = false;
  for (auto& p : report.problems) named |= p.find(to_hex(victim)) != std::string::npos;
  EXPECT_TRUE(named) << report.to_json().dump(2);
  EXPECT_GE(report.messages_without_object, 1u);
  EXPECT_FALSE(report.not_restored.empty());
  // The readable index knew the object: it stays in place, the rebuilt one is set aside.
  EXPECT_FALSE(report.installed);
  EXPECT_EQ(report.lost_objects, 1u);
  EXPECT_TRUE(report.old_index.empty());
  EXPECT_TRUE(fs::exists(root / "index.rebuild" / "data.mdb"));
  {
    auto a = Archive::open(root, Archive::Mode::read);
    EXPECT_TRUE(a->object(victim));
  }
  // Asked to, the rebuild installs what it could restore.
  auto forced = rebuild_index(root, {}, {.force = true});
  EXPECT_TRUE(forced.installed);
  EXPECT_EQ(forced.lost_objects, 1u);
  EXPECT_FALSE(forced.old_index.empty());
  auto a = Archive::open(root, Archive::Mode::read);
  EXPECT_FALSE(a->object(victim));
}

TEST(Rebuild, RefusesWhileAWriterHoldsTheArchive) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  auto a = Archive::open(root, Archive::Mode::create);
  try {
    rebuild_index(root);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::locked);
  }
  try {
    rebuild_index(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
  }
}

}  // namespace
}  // namespace imapstage::archive

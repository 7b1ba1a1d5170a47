#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "archive-format/archive.h"
#include "archive-format/index.h"
#include "archive-format/pack.h"
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

std::string message_text(int i) {
  return "From: a@example.org\r\nSubject: message " + std::to_string(i) + "\r\n\r\n" +
         std::string(200 + i % 50, 'x') + "\r\n";
}

Archive::Options small_packs(uint64_t limit) {
  Archive::Options o;
  o.pack_size_limit = limit;
  o.map_size = 64ull << 20;
  return o;
}

uint64_t size_of(const fs::path& p) { return fs::file_size(p); }

AccountRecord account_named(const std::string& name, const std::string& host = "") {
  AccountRecord a;
  a.name = name;
  a.host = host;
  return a;
}

FolderRecord folder_named(uint32_t account_id, const std::string& name_raw) {
  FolderRecord f;
  f.account_id = account_id;
  f.name_raw = name_raw;
  return f;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

MessageRecord make_message(uint32_t account, uint32_t folder, uint32_t uid, const std::string& raw) {
  MessageRecord m;
  m.key = {account, folder, 777, uid};
  m.hash = sha256(raw);
  m.size = raw.size();
  m.flags = kSeen;
  m.internaldate = 1700000000 + uid;
  return m;
}

// Every message's object reads back and hashes right; every object has a sane location.
void expect_consistent(const Archive& a) {
  a.for_each_message([&](const MessageRecord& m) {
    EXPECT_EQ(sha256(a.read_object(m.hash)), m.hash);
    return true;
  });
  std::map<uint64_t, PackInfo> packs;
  for (auto& p : a.packs()) packs[p.id] = p;
  a.for_each_object([&](const Hash& h, const ObjectLocation& loc) {
    EXPECT_TRUE(packs.count(loc.pack_id));
    EXPECT_LE(loc.offset + loc.record_size, packs[loc.pack_id].committed_size);
    EXPECT_EQ(a.read_object(h).size(), loc.raw_size);
    return true;
  });
}

TEST(Archive, OpenRefusesWhatIsNotAnArchive) {
  TempDir dir;
  try {
    Archive::open(dir.path(), Archive::Mode::read);
    FAIL() << "opened an empty directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
  }
  try {
    Archive::open(dir.path() + "/missing", Archive::Mode::write);
    FAIL() << "opened a missing directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
  }
  std::ofstream(dir.path() + "/unrelated") << "x";
  EXPECT_THROW(Archive::open(dir.path(), Archive::Mode::create), Error);
}

TEST(Archive, CreateThenReopenKeepsItsId) {
  TempDir dir;
  std::string id;
  {
    auto a = Archive::open(dir.path() + "/a", Archive::Mode::create, small_packs(1 << 20));
    id = a->archive_id();
    EXPECT_EQ(id.size(), 32u);
    EXPECT_TRUE(a->writable());
  }
  EXPECT_EQ(read_file(dir.path() + "/a/FORMAT"), "imapstage-archive " + std::to_string(kFormatVersion) + "\n");
  auto a = Archive::open(dir.path() + "/a", Archive::Mode::read);
  EXPECT_EQ(a->archive_id(), id);
  EXPECT_FALSE(a->writable());
}

TEST(Archive, NewerFormatIsRefused) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  Archive::open(root, Archive::Mode::create);
  std::string newer = std::to_string(kFormatVersion + 1);
  std::ofstream(root / "FORMAT", std::ios::trunc) << "imapstage-archive " << newer << "\n";
  for (auto mode : {Archive::Mode::read, Archive::Mode::write, Archive::Mode::create}) {
    try {
      Archive::open(root, mode);
      FAIL() << "opened a version " << newer << " archive";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::format) << e.what();
      EXPECT_NE(std::string(e.what()).find(newer), std::string::npos);
    }
  }
  std::ofstream(root / "FORMAT", std::ios::trunc) << "something else\n";
  try {
    Archive::open(root, Archive::Mode::read);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
  }
}

TEST(Archive, CreationKilledBeforeFormatIsTakenOverAndNeverHalfOpen) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  // What a creator killed just before writing FORMAT leaves: the lock, an
  // index without its archive id, an empty packs directory.
  fs::create_directories(root / "packs");
  std::ofstream(root / "lock") << "12345\n";
  archive::Index::open(root / "index", 1 << 20, true).reset();
  ASSERT_TRUE(fs::exists(root / "index" / "data.mdb"));
  for (auto mode : {Archive::Mode::read, Archive::Mode::write}) {
    try {
      Archive::open(root, mode);
      FAIL() << "opened a half-created archive";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::not_found) << e.what();
    }
  }
  std::string id;
  {
    auto a = Archive::open(root, Archive::Mode::create);
    id = a->archive_id();
    EXPECT_FALSE(id.empty());
  }
  EXPECT_EQ(read_file((root / "FORMAT").string()), "imapstage-archive " + std::to_string(kFormatVersion) + "\n");
  EXPECT_EQ(Archive::open(root, Archive::Mode::read)->archive_id(), id);

  // Anything else in the index directory is not ours: refused.
  fs::path other = dir.path() + "/b";
  fs::create_directories(other / "index");
  std::ofstream(other / "index" / "notes.txt") << "mine\n";
  try {
    Archive::open(other, Archive::Mode::create);
    FAIL() << "took over a directory that is not an interrupted archive";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage) << e.what();
  }
  EXPECT_FALSE(fs::exists(other / "FORMAT"));
}

TEST(Archive, EveryRecordTypeRoundTrips) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  AccountRecord account;
  FolderRecord folder, other;
  MessageRecord message;
  AppendRecord append;
  uint32_t target = 0;
  uint64_t run = 0;
  std::string raw = message_text(1);
  {
    auto a = Archive::open(root, Archive::Mode::create);
    Batch b(*a);
    account.name = "alice@mail.example.org";
    account.host = "mail.example.org";
    account.user = "alice";
    account.created = 1700000000;
    EXPECT_EQ(b.put_account(account), 1u);

    folder.account_id = account.id;
    folder.name_raw = "Entw&APw-rfe";
    folder.name_utf8 = "Entwürfe";
    folder.delimiter = '/';
    folder.attributes = {"\\HasNoChildren", "\\Drafts"};
    folder.subscribed = true;
    folder.gone = true;
    folder.uidvalidity = 1234;
    folder.uidnext = 99;
    folder.highestmodseq = 1ull << 40;
    folder.last_export = -5;
    EXPECT_EQ(b.put_folder(folder), 1u);
    other.account_id = account.id;
    other.name_raw = "Archive";
    other.noselect = true;
    EXPECT_EQ(b.put_folder(other), 2u);

    message.key = {account.id, folder.id, 1234, 42};
    message.hash = sha256(raw);
    message.flags = kSeen | kDraft;
    message.keywords = {"$Label1", "Junk"};
    message.internaldate = 1600000000;
    message.internaldate_tz = -300;
    message.size = raw.size();
    message.modseq = 77;
    message.state = MessageState::expunged;
    EXPECT_TRUE(b.put_object(message.hash, raw));
    b.put_message(message);
    EXPECT_EQ(b.pending_changes(), 5u);
    EXPECT_GT(b.pending_bytes(), 0u);
    b.commit();
    EXPECT_EQ(b.pending_changes(), 0u);
    EXPECT_EQ(b.pending_bytes(), 0u);

    target = a->put_target("bob@target.example:993");
    EXPECT_EQ(a->put_target("bob@target.example:993"), target);
    EXPECT_NE(a->put_target("carol@target.example:993"), target);
    append.key = {target, message.key};
    append.state = AppendState::done;
    append.target_folder = "Drafts";
    append.target_uidvalidity = 5;
    append.target_uid = 6;
    append.flags = kSeen;
    append.keywords = {"$Label1"};
    append.when = 1700000001;
    b.put_append(append);
    AppendRecord gone = append;
    gone.key.source.uid = 43;
    b.put_append(gone);
    b.erase_append(gone.key);
    b.commit();

    run = a->begin_run("export", account.name, R"({"a":1})");
    a->end_run(run, "ok", R"({"b":2})");
  }
  auto a = Archive::open(root, Archive::Mode::read);
  auto accounts = a->accounts();
  ASSERT_EQ(accounts.size(), 1u);
  EXPECT_EQ(accounts[0].name, account.name);
  EXPECT_EQ(accounts[0].host, account.host);
  EXPECT_EQ(accounts[0].user, account.user);
  EXPECT_EQ(accounts[0].created, account.created);
  EXPECT_EQ(a->find_account(account.name)->id, account.id);
  EXPECT_FALSE(a->find_account("nobody"));

  auto folders = a->folders(account.id);
  ASSERT_EQ(folders.size(), 2u);
  EXPECT_EQ(folders[0].name_raw, "Archive");  // sorted by raw name
  EXPECT_TRUE(folders[0].noselect);
  auto f = a->find_folder(account.id, "Entw&APw-rfe");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->id, folder.id);
  EXPECT_EQ(f->name_utf8, folder.name_utf8);
  EXPECT_EQ(f->delimiter, '/');
  EXPECT_EQ(f->attributes, folder.attributes);
  EXPECT_TRUE(f->subscribed);
  EXPECT_FALSE(f->noselect);
  EXPECT_TRUE(f->gone);
  EXPECT_EQ(f->uidvalidity, 1234u);
  EXPECT_EQ(f->uidnext, 99u);
  EXPECT_EQ(f->highestmodseq, 1ull << 40);
  EXPECT_EQ(f->last_export, -5);
  EXPECT_EQ(f->special_use(), "\\Drafts");
  EXPECT_EQ(a->folder(account.id, folder.id)->name_raw, folder.name_raw);
  EXPECT_FALSE(a->folder(account.id, 99));

  auto m = a->message(message.key);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->key, message.key);
  EXPECT_EQ(m->hash, message.hash);
  EXPECT_EQ(m->flags, message.flags);
  EXPECT_EQ(m->keywords, message.keywords);
  EXPECT_EQ(m->internaldate, message.internaldate);
  EXPECT_EQ(m->internaldate_tz, -300);
  EXPECT_EQ(m->size, raw.size());
  EXPECT_EQ(m->modseq, 77u);
  EXPECT_EQ(m->state, MessageState::expunged);
  EXPECT_EQ(a->read_object(message.hash), raw);
  auto loc = a->object(message.hash);
  ASSERT_TRUE(loc);
  EXPECT_EQ(loc->raw_size, raw.size());

  EXPECT_EQ(a->find_target("bob@target.example:993"), target);
  EXPECT_FALSE(a->find_target("nobody"));
  auto ap = a->append(append.key);
  ASSERT_TRUE(ap);
  EXPECT_EQ(ap->state, AppendState::done);
  EXPECT_EQ(ap->target_folder, "Drafts");
  EXPECT_EQ(ap->target_uidvalidity, 5u);
  EXPECT_EQ(ap->target_uid, 6u);
  EXPECT_EQ(ap->flags, kSeen);
  EXPECT_EQ(ap->keywords, append.keywords);
  EXPECT_EQ(ap->when, append.when);
  int appends = 0;
  a->for_each_append(target, [&](const AppendRecord&) { return ++appends, true; });
  EXPECT_EQ(appends, 1);  // the erased one is gone

  auto runs = a->runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].id, run);
  EXPECT_EQ(runs[0].kind, "export");
  EXPECT_EQ(runs[0].account, account.name);
  EXPECT_EQ(runs[0].result, "ok");
  EXPECT_EQ(runs[0].details, R"({"b":2})");
  EXPECT_GT(runs[0].started, 0);
  EXPECT_GE(runs[0].finished, runs[0].started);
  expect_consistent(*a);
}

TEST(Archive, IdsAreReusedForKnownNamesAndNeverForNewOnes) {
  TempDir dir;
  auto a = Archive::open(dir.path() + "/a", Archive::Mode::create);
  Batch b(*a);
  AccountRecord acc = account_named("x");
  b.put_account(acc);
  b.commit();
  AccountRecord again = account_named("x", "h2");
  EXPECT_EQ(b.put_account(again), acc.id);
  AccountRecord second = account_named("y");
  EXPECT_EQ(b.put_account(second), acc.id + 1);
  FolderRecord f1 = folder_named(acc.id, "INBOX");
  FolderRecord f2 = folder_named(acc.id, "INBOX");
  FolderRecord f3 = folder_named(second.id, "INBOX");
  EXPECT_EQ(b.put_folder(f1), 1u);
  EXPECT_EQ(b.put_folder(f2), 1u);  // same name, same batch
  EXPECT_EQ(b.put_folder(f3), 1u);  // ids are per account
  b.commit();
  FolderRecord f4 = folder_named(acc.id, "Sent");
  EXPECT_EQ(b.put_folder(f4), 2u);
  b.commit();
  EXPECT_EQ(a->find_account("x")->host, "h2");
  EXPECT_EQ(a->folders(acc.id).size(), 2u);
}

TEST(Archive, MessagesIterateInKeyOrder) {
  TempDir dir;
  auto a = Archive::open(dir.path() + "/a", Archive::Mode::create);
  Batch b(*a);
  std::vector<MessageKey> keys;
  // More than one scan chunk, inserted out of order, across generations and folders.
  for (uint32_t uid = 600; uid >= 1; --uid)
    for (uint32_t v : {7u, 3u}) keys.push_back({1, 2, v, uid});
  keys.push_back({1, 1, 9, 1});
  keys.push_back({1, 3, 1, 1});
  keys.push_back({2, 0, 0, 1});
  keys.push_back({1, 2, 0x80000000u, 5});  // big-endian keys sort numerically
  for (auto& k : keys) {
    MessageRecord m;
    m.key = k;
    b.put_message(m);
  }
  b.commit();
  std::vector<MessageKey> all;
  a->for_each_message([&](const MessageRecord& m) { return all.push_back(m.key), true; });
  auto sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(all, sorted);

  std::vector<MessageKey> folder;
  a->for_each_message(1, 2, std::nullopt, [&](const MessageRecord& m) { return folder.push_back(m.key), true; });
  ASSERT_EQ(folder.size(), 1201u);
  EXPECT_TRUE(std::is_sorted(folder.begin(), folder.end()));
  EXPECT_EQ(folder.front(), (MessageKey{1, 2, 3, 1}));
  EXPECT_EQ(folder.back(), (MessageKey{1, 2, 0x80000000u, 5}));

  size_t gen = 0;
  a->for_each_message(1, 2, 7u, [&](const MessageRecord& m) {
    EXPECT_EQ(m.key.uidvalidity, 7u);
    return ++gen, true;
  });
  EXPECT_EQ(gen, 600u);
  size_t stopped = 0;
  a->for_each_message(1, 2, 7u, [&](const MessageRecord&) { return ++stopped < 10; });
  EXPECT_EQ(stopped, 10u);
}

TEST(Archive, SameBytesAreStoredOnce) {
  TempDir dir;
  auto a = Archive::open(dir.path() + "/a", Archive::Mode::create);
  std::string raw = message_text(7);
  Hash h = sha256(raw);
  {
    Batch b(*a);
    EXPECT_TRUE(b.put_object(h, raw));
    uint64_t bytes = b.pending_bytes();
    EXPECT_FALSE(b.put_object(h, raw));  // this batch has it
    EXPECT_EQ(b.pending_bytes(), bytes);
    b.commit();
    EXPECT_FALSE(b.put_object(h, raw));  // the index has it
  }
  // Two batches that both saw it as new before either committed.
  std::string raw2 = message_text(8);
  Batch b1(*a), b2(*a);
  EXPECT_TRUE(b1.put_object(sha256(raw2), raw2));
  EXPECT_TRUE(b2.put_object(sha256(raw2), raw2));
  b1.commit();
  b2.commit();
  int objects = 0;
  a->for_each_object([&](const Hash&, const ObjectLocation&) { return ++objects, true; });
  EXPECT_EQ(objects, 2);
  uint64_t records = 0;
  for (auto& p : a->packs()) records += p.records;
  EXPECT_EQ(records, 2u);  // no journal: nothing but objects was committed
}

TEST(Archive, LargeObjectsAreStreamedIntoThePackAndReadBack) {
  TempDir dir;
  auto a = Archive::open(dir.path() + "/a", Archive::Mode::create);
  std::string big = random_bytes(6u << 20, 41);         // over the large-object threshold
  std::string text;
  for (int i = 0; text.size() < (5u << 20); ++i) text += "compressible line " + std::to_string(i % 977) + "\r\n";
  std::string small = message_text(3);
  {
    Batch b(*a);
    EXPECT_TRUE(b.put_object(sha256(small), small));   // staged, written before the large one
    uint64_t before = b.pending_bytes();
    EXPECT_TRUE(b.put_object(sha256(big), big));
    EXPECT_GE(b.pending_bytes() - before, big.size());  // random bytes do not shrink
    before = b.pending_bytes();
    EXPECT_TRUE(b.put_object(sha256(text), text));
    EXPECT_LT(b.pending_bytes() - before, text.size() / 4);
    EXPECT_FALSE(b.put_object(sha256(big), big));       // stored once
    b.put_message(make_message(1, 1, 1, small));
    b.put_message(make_message(1, 1, 2, big));
    b.put_message(make_message(1, 1, 3, text));
    b.put_message(make_message(1, 1, 4, big));
    b.commit();
  }
  EXPECT_EQ(a->read_object(sha256(big)), big);
  EXPECT_EQ(a->read_object(sha256(text)), text);
  EXPECT_EQ(a->read_object(sha256(small)), small);
  expect_consistent(*a);
  a.reset();
  auto r = Archive::open(dir.path() + "/a", Archive::Mode::read);
  EXPECT_EQ(r->read_object(sha256(text)), text);
  expect_consistent(*r);
}

// Files in the packs directory tree (a spool must leave none).
size_t files_under(const fs::path& dir) {
  size_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (!e.is_directory()) ++n;
  return n;
}

// Feeds `bytes` to a spool in pieces of uneven sizes.
void spool_in_pieces(FrameSpool& spool, std::string_view bytes) {
  for (size_t at = 0, step = 1; at < bytes.size(); at += step, step = step * 3 % 200003 + 1)
    spool.write(bytes.substr(at, step));
}

TEST(Archive, SpooledObjectsAreStoredOnceAndReadBack) {
  TempDir dir;
  auto a = Archive::open(dir.path() + "/a", Archive::Mode::create);
  std::string text;
  for (int i = 0; text.size() < (9u << 20); ++i) text += "spooled line " + std::to_string(i % 1013) + "\r\n";
  std::string big = random_bytes(5u << 20, 7);
  const fs::path packs = fs::path(dir.path()) / "a" / "packs";
  {
    Batch b(*a);
    FrameSpool s = b.spool(text.size());
    spool_in_pieces(s, text);
    EXPECT_EQ(s.received(), text.size());
    EXPECT_EQ(s.finish(), sha256(text));
    EXPECT_LT(s.frame_size(), text.size() / 4);  // compressed on the way
    EXPECT_TRUE(b.put_spooled(s));
    b.put_message(make_message(1, 1, 1, text));
    // The same bytes again, from this batch and after a commit: stored once.
    FrameSpool again = b.spool(text.size());
    spool_in_pieces(again, text);
    EXPECT_FALSE(b.put_spooled(again));
    b.commit();
    uint64_t packed = 0;
    for (auto& p : a->packs()) packed += p.committed_size;
    FrameSpool third = b.spool(text.size());
    spool_in_pieces(third, text);
    EXPECT_FALSE(b.put_spooled(third));
    FrameSpool other = b.spool(big.size());
    spool_in_pieces(other, big);
    EXPECT_TRUE(b.put_spooled(other));
    b.put_message(make_message(1, 1, 2, big));
    b.commit();
    uint64_t after = 0;
    for (auto& p : a->packs()) after += p.committed_size;
    EXPECT_GE(after - packed, big.size());
    EXPECT_LT(after - packed, big.size() + big.size() / 50);  // the text was not written a second time
  }
  // A spool dropped half way, or ended short or long, leaves nothing behind.
  {
    Batch b(*a);
    FrameSpool half = b.spool(1u << 20);
    half.write(std::string(1000, 'x'));
    EXPECT_THROW(half.finish(), Error);
    FrameSpool over = b.spool(10);
    EXPECT_THROW(over.write(std::string(11, 'x')), Error);
  }
  EXPECT_EQ(files_under(packs), a->packs().size());
  EXPECT_EQ(a->read_object(sha256(text)), text);
  EXPECT_EQ(a->read_object(sha256(big)), big);
  expect_consistent(*a);
  a.reset();
  auto r = Archive::open(dir.path() + "/a", Archive::Mode::read);
  EXPECT_EQ(r->read_object(sha256(text)), text);
  auto loc = r->object(sha256(text));
  ASSERT_TRUE(loc);
  EXPECT_FALSE(loc->grouped);
  EXPECT_EQ(loc->raw_size, text.size());
  expect_consistent(*r);
}

TEST(Archive, UncommittedBatchIsDiscarded) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  std::string kept = message_text(1), dropped = message_text(2);
  uint64_t committed = 0;
  {
    auto a = Archive::open(root, Archive::Mode::create);
    {
      Batch b(*a);
      b.put_object(sha256(kept), kept);
      b.put_message(make_message(1, 1, 1, kept));
      b.commit();
    }
    {
      Batch b(*a);
      b.put_object(sha256(dropped), dropped);
      b.put_message(make_message(1, 1, 2, dropped));
    }  // destroyed without commit
    auto packs = a->packs();
    ASSERT_EQ(packs.size(), 1u);
    committed = packs[0].committed_size;
    EXPECT_EQ(size_of(a->pack_path(packs[0].id)), committed);
  }
  auto a = Archive::open(root, Archive::Mode::read);
  EXPECT_TRUE(a->message({1, 1, 777, 1}));
  EXPECT_FALSE(a->message({1, 1, 777, 2}));
  EXPECT_FALSE(a->object(sha256(dropped)));
  EXPECT_EQ(a->read_object(sha256(kept)), kept);
}

// Objects a batch holds are committed early once they reach its limit: by
// default they wait (8 MiB), told to hold little a batch commits as it goes.
TEST(Archive, HoldAtMostCommitsObjectsEarlyOnceTheBatchHoldsThatMuch) {
  TempDir dir;
  auto a = Archive::open(dir.path() + "/a", Archive::Mode::create);
  // Incompressible and past the size of group members: each is a record of its own.
  std::vector<std::string> objects;
  for (uint64_t k = 0; k < 3; ++k) objects.push_back(random_bytes(300u << 10, k + 1));
  {
    Batch b(*a);
    for (auto& o : objects) b.put_object(sha256(o), o);
    for (auto& o : objects) EXPECT_FALSE(a->object(sha256(o)));
  }  // destroyed without commit: nothing stays
  Batch b(*a);
  b.hold_at_most(512u << 10);
  b.put_object(sha256(objects[0]), objects[0]);
  EXPECT_FALSE(a->object(sha256(objects[0])));  // about 300 KiB held
  b.put_object(sha256(objects[1]), objects[1]);
  EXPECT_TRUE(a->object(sha256(objects[0])));   // about 600 KiB: both committed
  EXPECT_TRUE(a->object(sha256(objects[1])));
  b.put_object(sha256(objects[2]), objects[2]);
  EXPECT_FALSE(a->object(sha256(objects[2])));  // held again, until commit()
  b.commit();
  for (auto& o : objects) EXPECT_EQ(a->read_object(sha256(o)), o);
}

TEST(Archive, BytesPastTheCommittedSizeAreCutOnReopen) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  fs::path pack;
  uint64_t committed = 0;
  std::string raw = message_text(1);
  {
    auto a = Archive::open(root, Archive::Mode::create);
    Batch b(*a);
    b.put_object(sha256(raw), raw);
    b.put_message(make_message(1, 1, 1, raw));
    b.commit();
    auto packs = a->packs();
    ASSERT_EQ(packs.size(), 1u);
    pack = a->pack_path(packs[0].id);
    committed = packs[0].committed_size;
  }
  // A crash in the middle of writing the next batch: a whole record and half of another.
  {
    std::ofstream out(pack, std::ios::binary | std::ios::app);
    std::string tail = read_file(pack).substr(kPackHeaderSize);
    out << tail << tail.substr(0, 30);
  }
  ASSERT_GT(size_of(pack), committed);
  {
    // A reader beside the damage sees only committed data.
    auto r = Archive::open(root, Archive::Mode::read);
    expect_consistent(*r);
  }
  {
    auto a = Archive::open(root, Archive::Mode::write);
    EXPECT_EQ(size_of(pack), committed);
    expect_consistent(*a);
    std::string raw2 = message_text(2);
    Batch b(*a);
    b.put_object(sha256(raw2), raw2);
    b.put_message(make_message(1, 1, 2, raw2));
    b.commit();
    EXPECT_GT(size_of(pack), committed);
  }
  auto a = Archive::open(root, Archive::Mode::read);
  expect_consistent(*a);
  EXPECT_EQ(a->read_object(sha256(message_text(2))), message_text(2));
  // The pack scans cleanly front to back.
  PackReader reader(pack);
  int records = 0;
  while (reader.next()) ++records;
  EXPECT_EQ(records, 4);  // object, journal, object, journal
}

TEST(Archive, KilledWriterLeavesAValidArchive) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  Archive::open(root, Archive::Mode::create, small_packs(64 << 10));
  for (int round = 0; round < 3; ++round) {
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      close(pipefd[0]);
      try {
        auto a = Archive::open(root, Archive::Mode::write, small_packs(64 << 10));
        Batch b(*a);
        for (int i = 0;; ++i) {
          std::string raw = random_bytes(3000 + i % 700, round * 100000 + i);
          MessageRecord m = make_message(1, 1 + round, i + 1, raw);
          b.put_object(m.hash, raw);
          b.put_message(m);
          if (i % 5 == 4) {
            b.commit();
            if (i == 9 && write(pipefd[1], "x", 1) != 1) _exit(3);
          }
        }
      } catch (...) {
        _exit(2);
      }
    }
    close(pipefd[1]);
    char c;
    ASSERT_EQ(read(pipefd[0], &c, 1), 1);  // two commits done
    usleep(20000 + round * 15000);
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    close(pipefd[0]);
    ASSERT_TRUE(WIFSIGNALED(status));

    auto a = Archive::open(root, Archive::Mode::write, small_packs(64 << 10));
    for (auto& p : a->packs()) {
      if (!p.sealed) {
        EXPECT_EQ(size_of(a->pack_path(p.id)), p.committed_size);
      }
    }
    expect_consistent(*a);
    size_t messages = 0;
    a->for_each_message(1, 1 + round, std::nullopt, [&](const MessageRecord& m) {
      EXPECT_TRUE(a->object(m.hash));
      return ++messages, true;
    });
    EXPECT_GE(messages, 10u);
    EXPECT_EQ(messages % 5, 0u);  // whole batches only
  }
}

TEST(Archive, PacksAreSealedAtTheLimitAndNeverChangeAgain) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  auto a = Archive::open(root, Archive::Mode::create, small_packs(16 << 10));
  std::map<uint64_t, std::string> sealed_contents;
  for (int round = 0; round < 6; ++round) {
    Batch b(*a);
    for (int i = 0; i < 4; ++i) {
      std::string raw = random_bytes(3000, round * 10 + i);
      b.put_object(sha256(raw), raw);
      b.put_message(make_message(1, 1, round * 10 + i + 1, raw));
    }
    b.commit();
    for (auto& p : a->packs()) {
      auto path = a->pack_path(p.id);
      if (p.sealed) {
        EXPECT_GE(p.committed_size, 16u << 10);
        EXPECT_EQ(size_of(path), p.committed_size);
        auto it = sealed_contents.find(p.id);
        if (it == sealed_contents.end()) sealed_contents[p.id] = read_file(path);
        else EXPECT_EQ(read_file(path), it->second) << "sealed pack changed";
      } else {
        EXPECT_LT(p.committed_size, 16u << 10);
      }
      EXPECT_EQ(path.parent_path().filename().string(), path.stem().string().substr(0, 2));
      EXPECT_EQ(path.stem().string().size(), 16u);
    }
  }
  auto packs = a->packs();
  EXPECT_GE(packs.size(), 4u);
  EXPECT_LE(std::count_if(packs.begin(), packs.end(), [](auto& p) { return !p.sealed; }), 1);
  EXPECT_GE(sealed_contents.size(), 3u);
  expect_consistent(*a);

  a->seal_current_pack();
  for (auto& p : a->packs()) EXPECT_TRUE(p.sealed || p.records == 0);
  std::string raw = random_bytes(100, 99);
  Batch b(*a);
  b.put_object(sha256(raw), raw);
  b.commit();
  auto loc = a->object(sha256(raw));
  ASSERT_TRUE(loc);
  EXPECT_FALSE(sealed_contents.count(loc->pack_id));
}

TEST(Archive, SecondWriterIsRefusedNamingThePid) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  auto writer = Archive::open(root, Archive::Mode::create);
  // Another process.
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipefd[0]);
    std::string report;
    try {
      Archive::open(root, Archive::Mode::write);
      report = "opened";
    } catch (const Error& e) {
      report = std::string(to_string(e.kind())) + "|" + e.what();
    }
    ssize_t n = write(pipefd[1], report.data(), report.size());
    _exit(n == static_cast<ssize_t>(report.size()) ? 0 : 1);
  }
  close(pipefd[1]);
  std::string report;
  char buf[512];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0) report.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_EQ(report.substr(0, 7), "locked|") << report;
  EXPECT_NE(report.find("pid " + std::to_string(getpid())), std::string::npos) << report;

  // The same process, through a second open file description.
  try {
    Archive::open(root, Archive::Mode::write);
    FAIL() << "a second writer opened the archive";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::locked);
  }
  // Readers need no lock.
  auto reader = Archive::open(root, Archive::Mode::read);
  EXPECT_EQ(reader->archive_id(), writer->archive_id());
  writer.reset();
  EXPECT_NO_THROW(Archive::open(root, Archive::Mode::write));
}

TEST(Archive, CorruptedRecordIsNamed) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  Archive::Options o;
  o.group_small_objects = false;  // one record per object
  auto a = Archive::open(root, Archive::Mode::create, o);
  std::string raw = random_bytes(5000, 1), other = random_bytes(5000, 2);
  Batch b(*a);
  b.put_object(sha256(raw), raw);
  b.put_object(sha256(other), other);
  b.commit();
  auto loc = a->object(sha256(raw));
  ASSERT_TRUE(loc);
  fs::path pack = a->pack_path(loc->pack_id);
  for (uint64_t at : {loc->offset + loc->record_size - 12, loc->offset + 20, loc->offset + kRecordHeaderSize + 3}) {
    std::string original = read_file(pack);
    {
      std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(static_cast<std::streamoff>(at));
      char c = static_cast<char>(original[at] ^ 0x5a);
      f.write(&c, 1);
    }
    try {
      a->read_object(sha256(raw));
      FAIL() << "damage at " << at << " went unnoticed";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
      EXPECT_EQ(e.where().hash, to_hex(sha256(raw))) << e.what();
      EXPECT_EQ(e.where().file, pack.string());
      EXPECT_NE(e.message().find(std::to_string(loc->offset)), std::string::npos) << e.what();
    }
    EXPECT_EQ(a->read_object(sha256(other)), other);  // its neighbour is fine
    std::ofstream(pack, std::ios::binary | std::ios::trunc) << original;
  }
  EXPECT_EQ(a->read_object(sha256(raw)), raw);
  try {
    a->read_object(sha256("not there"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
  }
}

TEST(Archive, ConcurrentBatchesFromSeveralThreads) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  auto a = Archive::open(root, Archive::Mode::create, small_packs(40 << 10));
  constexpr int kThreads = 3, kMessages = 120;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        Batch b(*a);
        FolderRecord f = folder_named(1, "F" + std::to_string(t));
        b.put_folder(f);
        for (int i = 0; i < kMessages; ++i) {
          // Every third message is shared by all threads.
          std::string raw = i % 3 == 0 ? random_bytes(2000, 5000 + i) : random_bytes(2000, t * 1000 + i);
          MessageRecord m = make_message(1, f.id, i + 1, raw);
          b.put_object(m.hash, raw);
          b.put_message(m);
          if (i % 7 == 6) b.commit();
        }
        b.commit();
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures, 0);
  std::set<uint32_t> folder_ids;
  for (auto& f : a->folders(1)) folder_ids.insert(f.id);
  EXPECT_EQ(folder_ids.size(), size_t{kThreads});
  size_t messages = 0;
  a->for_each_message([&](const MessageRecord&) { return ++messages, true; });
  EXPECT_EQ(messages, size_t{kThreads * kMessages});
  size_t objects = 0;
  a->for_each_object([&](const Hash&, const ObjectLocation&) { return ++objects, true; });
  EXPECT_EQ(objects, size_t{kMessages / 3 + kThreads * (kMessages - kMessages / 3)});
  expect_consistent(*a);
  // Every record in every pack is whole, and each pack holds exactly what the index says.
  for (auto& p : a->packs()) {
    PackReader r(a->pack_path(p.id));
    uint64_t records = 0, end = kPackHeaderSize;
    while (auto info = r.next()) {
      ++records;
      end = info->offset + info->record_size;
      decode_payload(*info, r.read_payload(), a->pack_path(p.id));
    }
    EXPECT_EQ(records, p.records);
    EXPECT_EQ(end, p.committed_size);
  }
}

// A small file system, to run out of space for real.
// Archives on a 2 MB tmpfs. Mounting it needs root (as in CI): skipped otherwise.
class ArchiveOnSmallDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    disk_ = dir_.path() + "/disk";
    fs::create_directories(disk_);
    mounted_ = ::mount("tmpfs", disk_.c_str(), "tmpfs", 0, "size=2m") == 0;
    if (!mounted_) GTEST_SKIP() << "cannot mount a tmpfs here (needs root)";
  }
  void TearDown() override {
    if (mounted_) ::umount2(disk_.c_str(), MNT_DETACH);
  }

  fs::path root() const { return fs::path(disk_) / "a"; }
  // Options that fit the disk.
  static Archive::Options options() {
    Archive::Options o = small_packs(1ull << 30);
    o.map_size = 16ull << 20;
    return o;
  }
  std::unique_ptr<Archive> open(Archive::Mode mode) const { return Archive::open(root(), mode, options()); }

 private:
  TempDir dir_;
  std::string disk_;
  bool mounted_ = false;
};

TEST_F(ArchiveOnSmallDisk, DiskFullFailsTheBatchAndKeepsTheArchiveValid) {
  auto a = open(Archive::Mode::create);
  int committed = 0;
  bool failed = false;
  for (int round = 0; round < 100 && !failed; ++round) {
    Batch b(*a);
    for (int i = 0; i < 10; ++i) {
      std::string raw = random_bytes(20000, round * 100 + i);
      b.put_object(sha256(raw), raw);
      b.put_message(make_message(1, 1, round * 100 + i + 1, raw));
    }
    try {
      b.commit();
      ++committed;
    } catch (const Error& e) {
      failed = true;
      EXPECT_EQ(e.kind(), ErrorKind::io) << e.what();
      EXPECT_EQ(e.retry(), Retry::later) << e.what();
      // Nothing of the failed batch is indexed.
      EXPECT_FALSE(a->message({1, 1, 777, static_cast<uint32_t>(round * 100 + 1)}));
      EXPECT_FALSE(a->object(sha256(random_bytes(20000, round * 100))));
    }
  }
  ASSERT_TRUE(failed) << "the disk never filled";
  EXPECT_GT(committed, 0);
  for (auto& p : a->packs()) {
    if (!p.sealed) {
      EXPECT_EQ(size_of(a->pack_path(p.id)), p.committed_size);
    }
  }
  expect_consistent(*a);
  a.reset();
  auto r = open(Archive::Mode::write);
  size_t messages = 0;
  r->for_each_message([&](const MessageRecord&) { return ++messages, true; });
  EXPECT_EQ(messages, static_cast<size_t>(committed * 10));
  expect_consistent(*r);
}

TEST_F(ArchiveOnSmallDisk, DiskFullWhileStreamingALargeObjectKeepsTheArchiveValid) {
  auto a = open(Archive::Mode::create);
  std::string big = random_bytes(5u << 20, 99);  // larger than the 2 MB disk
  std::string small = message_text(5);
  Batch b(*a);
  EXPECT_TRUE(b.put_object(sha256(small), small));
  b.put_message(make_message(1, 1, 1, small));
  try {
    b.put_object(sha256(big), big);
    FAIL() << "a 5 MB object fitted on a 2 MB disk";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io) << e.what();
    EXPECT_EQ(e.retry(), Retry::later) << e.what();
  }
  EXPECT_FALSE(a->object(sha256(big)));
  // The batch goes on without it: what was staged before commits.
  b.commit();
  EXPECT_EQ(a->read_object(sha256(small)), small);
  for (auto& p : a->packs()) {
    if (!p.sealed) {
      EXPECT_EQ(size_of(a->pack_path(p.id)), p.committed_size);
    }
  }
  expect_consistent(*a);
}

TEST(Flags, ParseAndFormat) {
  uint32_t bits = 99;
  std::vector<std::string> keywords{"stale"};
  parse_flags({"\\Seen", "\\recent", "$Label1", "\\FLAGGED", "\\Draft", "\\Answered", "\\Deleted", "Junk", "$label1"},
              bits, keywords);
  EXPECT_EQ(bits, uint32_t{kSeen | kFlagged | kDraft | kAnswered | kDeleted});
  EXPECT_EQ(keywords, (std::vector<std::string>{"$Label1", "Junk"}));
  EXPECT_EQ(flags_to_imap(bits, keywords),
            (std::vector<std::string>{"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Label1", "Junk"}));
  parse_flags({}, bits, keywords);
  EXPECT_EQ(bits, 0u);
  EXPECT_TRUE(keywords.empty());
  EXPECT_TRUE(flags_to_imap(0, {}).empty());
  parse_flags({"\\Recent"}, bits, keywords);
  EXPECT_EQ(bits, 0u);
  EXPECT_TRUE(keywords.empty());
  parse_flags({"\\Answered", "\\Seen"}, bits, keywords);
  EXPECT_EQ(flags_to_imap(bits, keywords), (std::vector<std::string>{"\\Seen", "\\Answered"}));
}

TEST(Flags, SpecialUse) {
  FolderRecord f;
  EXPECT_EQ(f.special_use(), "");
  f.attributes = {"\\HasNoChildren", "\\sent"};
  EXPECT_EQ(f.special_use(), "\\Sent");
  f.attributes = {"\\Junk"};
  EXPECT_EQ(f.special_use(), "\\Junk");
  f.attributes = {"\\Noselect"};
  EXPECT_EQ(f.special_use(), "");
}

TEST(Archive, SmallObjectsShareGroupRecordsAndReadBackExactly) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  auto a = Archive::open(root, Archive::Mode::create);
  std::vector<std::string> raws;
  for (int i = 0; i < 300; ++i) raws.push_back(random_bytes(500 + (i * 37) % 3000, 100 + i) + "Subject: message " + std::to_string(i));
  raws.push_back("");                         // an empty message is an object too
  raws.push_back(random_bytes(70u << 10, 7));  // over 64 KiB: a record of its own
  Batch b(*a);
  for (auto& r : raws) EXPECT_TRUE(b.put_object(sha256(r), r));
  EXPECT_FALSE(b.put_object(sha256(raws[5]), raws[5]));  // staged already
  b.commit();
  std::set<std::pair<uint64_t, uint64_t>> groups;
  for (size_t i = 0; i < raws.size(); ++i) {
    auto loc = a->object(sha256(raws[i]));
    ASSERT_TRUE(loc) << i;
    EXPECT_EQ(loc->raw_size, raws[i].size());
    EXPECT_EQ(loc->grouped, raws[i].size() < (64u << 10)) << i;
    if (loc->grouped) groups.insert({loc->pack_id, loc->offset});
  }
  // About 256 KiB of raw bytes per group.
  EXPECT_GE(groups.size(), 2u);
  EXPECT_LE(groups.size(), 5u);
  // Read back in an order that defeats the cache of decoded groups.
  for (size_t k = 0; k < raws.size(); ++k) {
    size_t i = (k * 97) % raws.size();
    EXPECT_EQ(a->read_object(sha256(raws[i])), raws[i]) << i;
    std::string streamed;
    a->read_object_to(sha256(raws[i]), [&](std::string_view piece) { streamed.append(piece); });
    EXPECT_EQ(streamed, raws[i]) << i;
  }
  // Reopened (no cache), and after a second batch dedupes against the groups.
  a.reset();
  a = Archive::open(root, Archive::Mode::write);
  Batch again(*a);
  EXPECT_FALSE(again.put_object(sha256(raws[10]), raws[10]));
  std::string fresh = "a new message";
  EXPECT_TRUE(again.put_object(sha256(fresh), fresh));
  again.commit();
  auto lone = a->object(sha256(fresh));
  ASSERT_TRUE(lone);
  EXPECT_FALSE(lone->grouped);  // a group of one is written as an object record
  EXPECT_EQ(a->read_object(sha256(raws[200])), raws[200]);
}

// Every copy of every object in the packs: group members and object records.
std::map<Hash, int> copies_in_packs(Archive& a) {
  std::map<Hash, int> copies;
  for (auto& p : a.packs()) {
    auto path = a.pack_path(p.id);
    archive::PackReader reader(path, a.dir());
    while (auto rec = reader.next()) {
      if (rec->kind == archive::RecordKind::object) ++copies[rec->hash];
      if (rec->kind != archive::RecordKind::group) continue;
      for (auto& m : archive::decode_group_table(*rec, reader.read_payload(), path)) ++copies[m.hash];
    }
  }
  return copies;
}

TEST(Archive, BatchesSideBySideWriteEachObjectOnce) {
  TempDir dir;
  auto a = Archive::open(dir.path() + "/a", Archive::Mode::create);
  std::vector<std::string> raws;
  for (int i = 0; i < 6; ++i) raws.push_back(random_bytes(800 + 100 * i, 40 + i) + "Subject: " + std::to_string(i));
  // Both batches stage 0..2 before either commits (as two connections
  // fetching the same messages from two folders); the second also 3 and 4.
  // A third stages only what the first has: its whole group goes.
  Batch first(*a), second(*a), third(*a);
  for (int i : {0, 1, 2, 5}) EXPECT_TRUE(first.put_object(sha256(raws[i]), raws[i]));
  for (int i : {0, 1, 2, 3, 4}) EXPECT_TRUE(second.put_object(sha256(raws[i]), raws[i]));
  for (int i : {1, 5}) EXPECT_TRUE(third.put_object(sha256(raws[i]), raws[i]));
  first.commit();
  second.commit();
  third.commit();
  auto copies = copies_in_packs(*a);
  for (size_t i = 0; i < raws.size(); ++i) {
    EXPECT_EQ(copies[sha256(raws[i])], 1) << "object " << i;
    EXPECT_EQ(a->read_object(sha256(raws[i])), raws[i]) << i;
  }
  // Reopened, the index still finds every object where it is.
  a.reset();
  a = Archive::open(dir.path() + "/a", Archive::Mode::read);
  for (size_t i = 0; i < raws.size(); ++i) EXPECT_EQ(a->read_object(sha256(raws[i])), raws[i]) << i;
}

TEST(Archive, DamageInAGroupIsNamedForEachOfItsObjects) {
  TempDir dir;
  fs::path root = dir.path() + "/a";
  std::vector<std::string> raws;
  {
    auto a = Archive::open(root, Archive::Mode::create);
    Batch b(*a);
    for (int i = 0; i < 20; ++i) {
      raws.push_back(random_bytes(2000, 500 + i));
      b.put_object(sha256(raws.back()), raws.back());
    }
    b.commit();
  }
  auto a = Archive::open(root, Archive::Mode::read);
  auto loc = a->object(sha256(raws[3]));
  ASSERT_TRUE(loc && loc->grouped);
  fs::path pack = a->pack_path(loc->pack_id);
  std::string original = read_file(pack);
  {
    std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
    uint64_t at = loc->offset + loc->record_size - 40;
    f.seekp(static_cast<std::streamoff>(at));
    char c = static_cast<char>(original[at] ^ 0x5a);
    f.write(&c, 1);
  }
  for (auto& raw : raws) {
    try {
      a->read_object(sha256(raw));
      FAIL() << "damage in the group went unnoticed";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
      EXPECT_EQ(e.where().hash, to_hex(sha256(raw))) << e.what();
      EXPECT_EQ(e.where().file, pack.string());
      EXPECT_NE(e.message().find(std::to_string(loc->offset)), std::string::npos) << e.what();
    }
  }
}

// index/checked (FORMAT.md, "Index"): the stamp of a snapshot a writer walked
// or committed spares the next open its walk of every page, and only for the
// very file it names, unchanged since.
TEST(Archive, TheCheckStampSparesTheWalkOnlyForTheFileItNames) {
  TempDir dir;
  fs::path root = fs::path(dir.path()) / "a";
  {
    auto a = Archive::open(root, Archive::Mode::create);
    for (int i = 0; i < 3; ++i) {
      Batch b(*a);
      std::string raw = "Subject: " + std::to_string(i) + "\r\n\r\nbody";
      b.put_object(sha256(raw), raw);
      b.commit();
    }
  }
  fs::path data = root / "index" / "data.mdb", stamp = root / "index" / "checked";
  auto read_file = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  // The stamp names the last commit and the file as it is now.
  auto stamp_for = [&](uint64_t txnid) {
    struct stat st{};
    EXPECT_EQ(::stat(data.c_str(), &st), 0);
    return fmt::format("imapstage-index-checked 1 {} {} {} {} {}.{:09} {}.{:09}\n", txnid, uint64_t(st.st_dev),
                       uint64_t(st.st_ino), int64_t(st.st_size), int64_t(st.st_mtim.tv_sec), st.st_mtim.tv_nsec,
                       int64_t(st.st_ctim.tv_sec), st.st_ctim.tv_nsec);
  };
  std::string text = read_file(stamp);
  ASSERT_FALSE(text.empty());
  uint64_t txnid = std::stoull(text.substr(std::string("imapstage-index-checked 1 ").size()));
  EXPECT_EQ(text, stamp_for(txnid));
  EXPECT_NO_THROW(Archive::open(root, Archive::Mode::read));
  EXPECT_EQ(read_file(stamp), text);  // readers never write it

  // Damage that LMDB reads past but the walk refuses: the main database's
  // entry count in both meta pages (page size at byte 40 of page 0; the
  // count at byte 120 of each meta page).
  std::string bytes = read_file(data);
  uint32_t psize = 0;
  std::memcpy(&psize, bytes.data() + 40, 4);
  ASSERT_EQ(psize, 4096u);
  for (size_t meta : {size_t{0}, size_t{psize}}) {
    uint64_t entries = 0;
    std::memcpy(&entries, bytes.data() + meta + 120, 8);
    ++entries;
    std::memcpy(bytes.data() + meta + 120, &entries, 8);
  }
  {
    std::fstream out(data, std::ios::binary | std::ios::in | std::ios::out);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  // The write moved the file's change time: the stamp no longer matches, and the walk finds the damage.
  auto refused = [&] {
    try {
      Archive::open(root, Archive::Mode::read);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
      EXPECT_NE(std::string(e.what()).find("entries"), std::string::npos) << e.what();
      return true;
    }
    return false;
  };
  EXPECT_TRUE(refused());
  // A stamp that vouches for the file as it is now spares the walk (so the damage goes unseen) ...
  {
    std::ofstream out(stamp, std::ios::binary | std::ios::trunc);
    out << stamp_for(txnid);
  }
  EXPECT_FALSE(refused());
  // ... for that snapshot only ...
  {
    std::ofstream out(stamp, std::ios::binary | std::ios::trunc);
    out << stamp_for(txnid - 1);
  }
  EXPECT_TRUE(refused());
  // ... and for that file only: a copy is another file.
  {
    std::ofstream out(stamp, std::ios::binary | std::ios::trunc);
    out << stamp_for(txnid);
  }
  fs::path copy = fs::path(dir.path()) / "copy";
  fs::copy(root, copy, fs::copy_options::recursive);
  try {
    Archive::open(copy, Archive::Mode::read);
    ADD_FAILURE() << "a copy of a damaged index was opened";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
  }
}

}  // namespace
}  // namespace imapstage::archive

// Archives written by older versions of the format stay readable, and a
// writer upgrades them. tests/fixtures/archive-v1 was written by the version
// 1 code (two accounts: Dovecot-style names with '/', Cyrus-style names under
// "INBOX." with '.'); tests/fixtures/archive-v2 by the version 2 code (24
// small messages exported from Dovecot, imported into a second account);
// tests/fixtures/archive-v3 by the version 3 code (the same, in group records);
// tests/fixtures/archive-v4 by the version 4 code (6 small messages, 5
// distinct, in 6 folders, flags and keywords, imported into a second account);
// tests/fixtures/archive-v5 by the version 5 code (6 small messages, 5
// distinct, in 5 folders and a \Noselect parent, flags and keywords,
// imported into a second account); tests/fixtures/archive-v6 by the version 6
// code (7 small messages, 6 distinct, in 5 folders and a \Noselect parent,
// one expunged, a folder whose UIDVALIDITY changed, imported into a second
// account, and a Gmail message value).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "archive-format/archive.h"
#include "archive-format/rebuild.h"
#include "common/error.h"
#include "common/events.h"
#include "tests/support/test_server.h"
#include "verify/offline.h"

namespace imapstage::archive {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

fs::path copy_fixture(const TempDir& tmp, const std::string& name) {
  fs::path to = fs::path(tmp.path()) / name;
  fs::copy(fs::path(IMAPSTAGE_SOURCE_DIR) / "tests/fixtures" / name, to, fs::copy_options::recursive);
  return to;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::map<std::string, FolderRecord> folders_by_raw(const Archive& a, const std::string& account) {
  std::map<std::string, FolderRecord> out;
  auto acc = a.find_account(account);
  EXPECT_TRUE(acc.has_value()) << account;
  if (!acc) return out;
  for (auto& f : a.folders(acc->id)) out[f.name_raw] = f;
  return out;
}

TEST(FormatVersions, Version1IsReadWithCanonicalPaths) {
  TempDir tmp;
  auto dir = copy_fixture(tmp, "archive-v1");
  ASSERT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 1\n");
  auto a = Archive::open(dir, Archive::Mode::read);

  auto cyrus = folders_by_raw(*a, "cyrus-style");
  ASSERT_EQ(cyrus.size(), 6u);
  EXPECT_EQ(cyrus["INBOX"].path, std::vector<std::string>{"INBOX"});
  EXPECT_EQ(cyrus["INBOX.Sent"].path, std::vector<std::string>{"Sent"});
  EXPECT_EQ(cyrus["INBOX.Sent"].ns_prefix, "INBOX.");
  EXPECT_EQ(cyrus["INBOX.Archive.2023"].canonical_name(), "Archive/2023");
  // A '/' inside a level of a '.'-separated name stays inside the level.
  EXPECT_EQ(cyrus["INBOX.Projects.a/b"].path, (std::vector<std::string>{"Projects", "a/b"}));
  for (auto& [raw, f] : cyrus) EXPECT_EQ(f.ns_kind, NamespaceKind::personal) << raw;

  auto dovecot = folders_by_raw(*a, "dovecot-style");
  ASSERT_EQ(dovecot.size(), 5u);
  EXPECT_EQ(dovecot["Archive/2023"].path, (std::vector<std::string>{"Archive", "2023"}));
  EXPECT_EQ(dovecot["Archive/2023"].ns_prefix, "");
  EXPECT_EQ(dovecot["&AMk-l&AOk-ments envoy&AOk-s"].canonical_name(), "Éléments envoyés");

  // Every message of the old archive reads back and hashes right.
  size_t messages = 0;
  a->for_each_message([&](const MessageRecord& m) {
    std::string bytes = a->read_object(m.hash);
    EXPECT_EQ(sha256(bytes), m.hash);
    EXPECT_EQ(bytes.size(), m.size);
    ++messages;
    return true;
  });
  EXPECT_EQ(messages, 20u);

  NullSink events;
  auto report = verify::verify_offline({.archive_dir = dir}, events);
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.objects_checked, 18u);  // the two INBOXes hold the same two messages
  // A reader changes nothing: the archive stays at version 1.
  EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 1\n");
}

TEST(FormatVersions, AWriterUpgradesVersion1AndKeepsItsRecords) {
  TempDir tmp;
  auto dir = copy_fixture(tmp, "archive-v1");
  {
    auto a = Archive::open(dir, Archive::Mode::write);
    EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive " + std::to_string(kFormatVersion) + "\n");
    auto acc = a->find_account("cyrus-style");
    ASSERT_TRUE(acc);
    auto sent = a->find_folder(acc->id, "INBOX.Sent");
    ASSERT_TRUE(sent);
    // A folder record rewritten by the new code carries its namespace.
    FolderRecord updated = *sent;
    updated.ns_kind = NamespaceKind::personal;
    updated.ns_prefix = "INBOX.";
    updated.path = {"Sent"};
    FolderRecord bob;
    bob.account_id = acc->id;
    bob.name_raw = bob.name_utf8 = "user.bob.Sent";
    bob.delimiter = '.';
    bob.ns_kind = NamespaceKind::other_users;
    bob.ns_prefix = "user.";
    bob.path = {"bob", "Sent"};
    Batch b(*a);
    b.put_folder(updated);
    b.put_folder(bob);
    b.commit();
  }
  auto a = Archive::open(dir, Archive::Mode::read);
  auto cyrus = folders_by_raw(*a, "cyrus-style");
  EXPECT_EQ(cyrus["user.bob.Sent"].ns_kind, NamespaceKind::other_users);
  EXPECT_EQ(cyrus["user.bob.Sent"].canonical_name(), "#other/bob/Sent");
  EXPECT_EQ(cyrus["INBOX.Sent"].path, std::vector<std::string>{"Sent"});
  EXPECT_EQ(cyrus["INBOX.Archive.2023"].canonical_name(), "Archive/2023");  // still a layout 1 value

  // The journals of both layouts rebuild the same index.
  a.reset();
  auto report = rebuild_index(dir, Archive::Options{});
  auto rebuilt = Archive::open(dir, Archive::Mode::read);
  auto again = folders_by_raw(*rebuilt, "cyrus-style");
  EXPECT_EQ(again["user.bob.Sent"].canonical_name(), "#other/bob/Sent");
  EXPECT_EQ(again["INBOX.Archive.2023"].canonical_name(), "Archive/2023");
  EXPECT_EQ(again.size(), 7u);
}

TEST(FormatVersions, Version2IsReadAndAWriterAddsGroupsBesideItsRecords) {
  TempDir tmp;
  auto dir = copy_fixture(tmp, "archive-v2");
  ASSERT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 2\n");
  std::map<Hash, std::string> bytes;
  {
    auto a = Archive::open(dir, Archive::Mode::read);
    auto acc = a->find_account("fixture");
    ASSERT_TRUE(acc);
    EXPECT_EQ(a->folders(acc->id).size(), 21u);
    a->for_each_message([&](const MessageRecord& m) {
      std::string b = a->read_object(m.hash);
      EXPECT_EQ(sha256(b), m.hash);
      EXPECT_EQ(b.size(), m.size);
      EXPECT_FALSE(a->object(m.hash)->grouped);
      bytes[m.hash] = std::move(b);
      return true;
    });
    EXPECT_EQ(bytes.size(), 24u);
    size_t appends = 0;
    a->for_each_append(1, [&](const AppendRecord&) { return ++appends, true; });
    EXPECT_EQ(appends, 24u);  // the import's records
    NullSink events;
    auto report = verify::verify_offline({.archive_dir = dir}, events);
    EXPECT_TRUE(report.ok());
    EXPECT_EQ(report.objects_checked, 24u);
  }
  EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 2\n");  // readers change nothing

  // A writer upgrades it; new small objects go into a group beside the old records.
  std::vector<std::string> added;
  {
    auto a = Archive::open(dir, Archive::Mode::write);
    EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive " + std::to_string(kFormatVersion) + "\n");
    Batch b(*a);
    for (int i = 0; i < 10; ++i) {
      added.push_back("Subject: added " + std::to_string(i) + "\r\n\r\nbody\r\n");
      EXPECT_TRUE(b.put_object(sha256(added.back()), added.back()));
    }
    b.commit();
    EXPECT_TRUE(a->object(sha256(added[0]))->grouped);
  }
  auto check = [&](const Archive& a) {
    for (auto& [hash, b] : bytes) EXPECT_EQ(a.read_object(hash), b);
    for (auto& b : added) EXPECT_EQ(a.read_object(sha256(b)), b);
  };
  check(*Archive::open(dir, Archive::Mode::read));
  NullSink events;
  auto report = verify::verify_offline({.archive_dir = dir}, events);
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.objects_checked, 34u);
  // Both kinds of record rebuild the same index.
  rebuild_index(dir, Archive::Options{});
  auto rebuilt = Archive::open(dir, Archive::Mode::read);
  check(*rebuilt);
  EXPECT_FALSE(rebuilt->object(bytes.begin()->first)->grouped);
  EXPECT_TRUE(rebuilt->object(sha256(added[3]))->grouped);
}

TEST(FormatVersions, Version3IsReadAndAWriterAddsSourceRecordsBesideIt) {
  TempDir tmp;
  auto dir = copy_fixture(tmp, "archive-v3");
  ASSERT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 3\n");
  std::map<Hash, std::string> bytes;
  size_t messages = 0;
  {
    auto a = Archive::open(dir, Archive::Mode::read);
    auto acc = a->find_account("fixture");
    ASSERT_TRUE(acc);
    EXPECT_EQ(acc->source, SourceKind::imap);  // accounts of older versions came from IMAP
    EXPECT_EQ(a->folders(acc->id).size(), 21u);
    a->for_each_message([&](const MessageRecord& m) {
      std::string b = a->read_object(m.hash);
      EXPECT_EQ(sha256(b), m.hash);
      EXPECT_EQ(b.size(), m.size);
      EXPECT_TRUE(m.source_id.empty());
      EXPECT_EQ(m.date_source, DateSource::server);
      bytes[m.hash] = std::move(b);
      ++messages;
      return true;
    });
    EXPECT_EQ(messages, 24u);
    EXPECT_TRUE(a->object(bytes.begin()->first)->grouped);
    size_t appends = 0;
    a->for_each_append(1, [&](const AppendRecord&) { return ++appends, true; });
    EXPECT_EQ(appends, 24u);
    NullSink events;
    EXPECT_TRUE(verify::verify_offline({.archive_dir = dir}, events).ok());
  }
  EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 3\n");  // readers change nothing

  // A writer upgrades it and adds an account of another source kind, whose
  // messages carry their source identity and date source.
  MessageRecord added;
  {
    auto a = Archive::open(dir, Archive::Mode::write);
    EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive " + std::to_string(kFormatVersion) + "\n");
    Batch b(*a);
    AccountRecord acc;
    acc.name = "files";
    acc.host = "/srv/mail/alice.mbox";
    acc.source = SourceKind::mbox;
    b.put_account(acc);
    FolderRecord f;
    f.account_id = acc.id;
    f.name_raw = f.name_utf8 = "INBOX";
    f.path = {"INBOX"};
    f.uidvalidity = 7;
    b.put_folder(f);
    std::string body = "Subject: from a file\r\n\r\nbody\r\n";
    added.key = {acc.id, f.id, 7, 1};
    added.hash = sha256(body);
    added.size = body.size();
    added.internaldate = 1700000000;
    added.source_id = "h:0123456789abcdef#1";
    added.date_source = DateSource::from_line;
    b.put_object(added.hash, body);
    b.put_message(added);
    b.commit();
  }
  auto check = [&](const Archive& a) {
    auto acc = a.find_account("files");
    ASSERT_TRUE(acc);
    EXPECT_EQ(acc->source, SourceKind::mbox);
    EXPECT_EQ(a.find_account("fixture")->source, SourceKind::imap);
    auto m = a.message(added.key);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->source_id, added.source_id);
    EXPECT_EQ(m->date_source, DateSource::from_line);
    for (auto& [hash, b] : bytes) EXPECT_EQ(a.read_object(hash), b);
  };
  check(*Archive::open(dir, Archive::Mode::read));
  NullSink events;
  EXPECT_TRUE(verify::verify_offline({.archive_dir = dir}, events).ok());
  // The journals of every layout rebuild the same index.
  rebuild_index(dir, Archive::Options{});
  check(*Archive::open(dir, Archive::Mode::read));
}

TEST(FormatVersions, Version4IsReadAndAWriterUpgradesItKeepingItPlain) {
  TempDir tmp;
  auto dir = copy_fixture(tmp, "archive-v4");
  ASSERT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 4\n");
  std::map<std::string, size_t> per_folder;
  std::map<Hash, std::string> bytes;
  auto read_all = [&](const Archive& a) {
    per_folder.clear();
    auto acc = a.find_account("fixture");
    ASSERT_TRUE(acc);
    EXPECT_EQ(acc->source, SourceKind::imap);
    for (auto& f : a.folders(acc->id))
      a.for_each_message(acc->id, f.id, std::nullopt, [&](const MessageRecord& m) {
        std::string b = a.read_object(m.hash);
        EXPECT_EQ(sha256(b), m.hash);
        EXPECT_EQ(b.size(), m.size);
        bytes[m.hash] = b;
        ++per_folder[f.canonical_name()];
        return true;
      });
  };
  {
    auto a = Archive::open(dir, Archive::Mode::read);
    EXPECT_FALSE(a->encrypted());
    read_all(*a);
    EXPECT_EQ(per_folder, (std::map<std::string, size_t>{{"Archive", 1}, {"Café & Co", 1}, {"INBOX", 2},
                                                          {"Projects/2024", 2}}));
    EXPECT_EQ(bytes.size(), 5u);  // the same bytes in Archive and Projects/2024 are stored once
    auto acc = a->find_account("fixture");
    auto inbox = a->find_folder(acc->id, "INBOX");
    ASSERT_TRUE(inbox);
    bool labelled = false;
    a->for_each_message(acc->id, inbox->id, std::nullopt, [&](const MessageRecord& m) {
      if ((m.flags & kFlagged) && m.keywords == std::vector<std::string>{"$Label1"}) labelled = true;
      return true;
    });
    EXPECT_TRUE(labelled);
    size_t appends = 0;
    a->for_each_append(1, [&](const AppendRecord&) { return ++appends, true; });
    EXPECT_EQ(appends, 6u);
    NullSink events;
    EXPECT_TRUE(verify::verify_offline({.archive_dir = dir}, events).ok());
  }
  EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 4\n");  // readers change nothing
  {
    auto a = Archive::open(dir, Archive::Mode::write);
    EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 7\n");
    EXPECT_FALSE(a->encrypted());
  }
  EXPECT_FALSE(fs::exists(dir / "keys"));
  auto before = bytes;
  read_all(*Archive::open(dir, Archive::Mode::read));
  EXPECT_EQ(bytes, before);
  rebuild_index(dir, Archive::Options{});
  read_all(*Archive::open(dir, Archive::Mode::read));
  EXPECT_EQ(bytes, before);
}

TEST(FormatVersions, Version5IsReadAndAWriterUpgradesItAndAddsGmailRecords) {
  TempDir tmp;
  auto dir = copy_fixture(tmp, "archive-v5");
  ASSERT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 5\n");
  std::map<std::string, size_t> per_folder;
  std::map<Hash, std::string> bytes;
  size_t gmail_records = 0;
  auto read_all = [&](const Archive& a) {
    per_folder.clear();
    gmail_records = 0;
    auto acc = a.find_account("fixture");
    ASSERT_TRUE(acc);
    EXPECT_EQ(acc->source, SourceKind::imap);
    for (auto& f : a.folders(acc->id))
      a.for_each_message(acc->id, f.id, std::nullopt, [&](const MessageRecord& m) {
        std::string b = a.read_object(m.hash);
        EXPECT_EQ(sha256(b), m.hash);
        EXPECT_EQ(b.size(), m.size);
        bytes[m.hash] = b;
        if (m.gm_msgid) ++gmail_records;
        else ++per_folder[f.canonical_name()];
        return true;
      });
  };
  {
    auto a = Archive::open(dir, Archive::Mode::read);
    EXPECT_FALSE(a->encrypted());
    read_all(*a);
    EXPECT_EQ(per_folder, (std::map<std::string, size_t>{{"Archive", 1}, {"Café", 1}, {"INBOX", 2},
                                                          {"Projects/2025", 1}, {"Sent", 1}}));
    EXPECT_EQ(bytes.size(), 5u);  // the same bytes in Archive and Projects/2025 are stored once
    EXPECT_EQ(gmail_records, 0u);
    auto acc = a->find_account("fixture");
    auto inbox = a->find_folder(acc->id, "INBOX");
    ASSERT_TRUE(inbox);
    bool labelled = false;
    a->for_each_message(acc->id, inbox->id, std::nullopt, [&](const MessageRecord& m) {
      if ((m.flags & kFlagged) && m.keywords == std::vector<std::string>{"$Label1"}) labelled = true;
      return true;
    });
    EXPECT_TRUE(labelled);
    size_t appends = 0;
    a->for_each_append(1, [&](const AppendRecord&) { return ++appends, true; });
    EXPECT_EQ(appends, 6u);
    NullSink events;
    EXPECT_TRUE(verify::verify_offline({.archive_dir = dir}, events).ok());
  }
  EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 5\n");  // readers change nothing
  Hash gmail_hash{};
  {
    auto a = Archive::open(dir, Archive::Mode::write);
    EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 7\n");
    // A Gmail message beside the version 5 records: a message value of layout 3.
    auto acc = a->find_account("fixture");
    auto inbox = a->find_folder(acc->id, "INBOX");
    Batch batch(*a);
    std::string raw = "Subject: from Gmail\r\n\r\nhello\r\n";
    gmail_hash = sha256(raw);
    batch.put_object(gmail_hash, raw);
    MessageRecord m;
    m.key = {acc->id, inbox->id, inbox->uidvalidity, 1000};
    m.hash = gmail_hash;
    m.size = raw.size();
    m.internaldate = 1700000000;
    m.gm_msgid = 1600000000000000123ull;
    m.gm_thrid = 1600000000000000100ull;
    m.gm_labels = {"\\Inbox", "Work", "&AMk-t&AOk-"};
    batch.put_message(m);
    batch.commit();
  }
  auto check_gmail = [&](const Archive& a) {
    auto acc = a.find_account("fixture");
    auto inbox = a.find_folder(acc->id, "INBOX");
    auto m = a.message({acc->id, inbox->id, inbox->uidvalidity, 1000});
    ASSERT_TRUE(m);
    EXPECT_EQ(m->hash, gmail_hash);
    EXPECT_EQ(m->gm_msgid, 1600000000000000123ull);
    EXPECT_EQ(m->gm_thrid, 1600000000000000100ull);
    EXPECT_EQ(m->gm_labels, (std::vector<std::string>{"\\Inbox", "Work", "&AMk-t&AOk-"}));
  };
  auto before = bytes;
  read_all(*Archive::open(dir, Archive::Mode::read));
  EXPECT_EQ(gmail_records, 1u);
  check_gmail(*Archive::open(dir, Archive::Mode::read));
  before[gmail_hash] = bytes[gmail_hash];
  EXPECT_EQ(bytes, before);
  rebuild_index(dir, Archive::Options{});  // the journal replays the layout 3 value
  read_all(*Archive::open(dir, Archive::Mode::read));
  EXPECT_EQ(bytes, before);
  check_gmail(*Archive::open(dir, Archive::Mode::read));
}

// Records and present messages of a folder generation.
using Counts = std::pair<uint64_t, uint64_t>;
using Generation = std::tuple<uint32_t, uint32_t, uint32_t>;  // account, folder, uidvalidity

// The counts of every folder generation, from the message records themselves.
std::map<Generation, Counts> counted(const Archive& a) {
  std::map<Generation, Counts> out;
  a.for_each_message([&](const MessageRecord& m) {
    auto& c = out[{m.key.account_id, m.key.folder_id, m.key.uidvalidity}];
    ++c.first;
    c.second += m.state == MessageState::present;
    return true;
  });
  return out;
}

// The same, from message_counts (nullopt where the archive has none).
std::map<Generation, std::optional<Counts>> kept(const Archive& a, const std::map<Generation, Counts>& like) {
  std::map<Generation, std::optional<Counts>> out;
  for (auto& [k, c] : like) {
    auto m = a.message_counts(std::get<0>(k), std::get<1>(k), std::get<2>(k));
    out[k] = m ? std::optional<Counts>(Counts{m->records, m->present}) : std::nullopt;
  }
  return out;
}

TEST(FormatVersions, Version6IsReadWithoutCountsAndAWriterCountsItsMessages) {
  TempDir tmp;
  auto dir = copy_fixture(tmp, "archive-v6");
  ASSERT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 6\n");
  std::map<Generation, Counts> before;
  uint32_t account = 0, inbox_id = 0, inbox_uidvalidity = 0;
  {
    auto a = Archive::open(dir, Archive::Mode::read);
    before = counted(*a);
    auto acc = a->find_account("fixture");
    ASSERT_TRUE(acc);
    account = acc->id;
    auto inbox = a->find_folder(acc->id, "INBOX");
    ASSERT_TRUE(inbox);
    inbox_id = inbox->id;
    inbox_uidvalidity = inbox->uidvalidity;
    // INBOX: UIDs 1 and 2, 3 expunged on the server, and the Gmail message 1000.
    EXPECT_EQ((before[{account, inbox_id, inbox_uidvalidity}]), (Counts{4, 3}));
    // Sent has a generation before its UIDVALIDITY changed, and one after.
    auto sent = a->find_folder(acc->id, "Sent");
    ASSERT_TRUE(sent);
    size_t generations = 0;
    for (auto& [k, c] : before) generations += std::get<1>(k) == sent->id;
    EXPECT_EQ(generations, 2u);
    // A version 6 index keeps no counts: a reader counts, and finds nothing to check.
    for (auto& [k, c] : kept(*a, before)) EXPECT_FALSE(c.has_value());
    EXPECT_TRUE(a->check_message_counts().empty());
    NullSink events;
    auto r = verify::verify_offline({.archive_dir = dir}, events);
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r.messages, 9u);
    std::string text;
    for (auto& f : a->folders(acc->id)) text += f.canonical_name() + " ";
    EXPECT_EQ(text, "Archive Archive/2025 Café INBOX Sent ");
  }
  EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 6\n");  // readers change nothing
  EXPECT_FALSE(fs::exists(dir / "index" / "checked"));

  {
    auto a = Archive::open(dir, Archive::Mode::write);
    EXPECT_EQ(read_text(dir / "FORMAT"), "imapstage-archive 7\n");
    // The upgrade counted every generation.
    for (auto& [k, c] : kept(*a, before)) {
      ASSERT_TRUE(c.has_value());
      EXPECT_EQ(*c, before[k]);
    }
    // A new message and an expunge move the counts with the commit.
    auto m = a->message({account, inbox_id, inbox_uidvalidity, 1});
    ASSERT_TRUE(m);
    Batch batch(*a);
    m->state = MessageState::expunged;
    batch.put_message(*m);
    MessageRecord added = *m;
    added.key.uid = 7;
    added.state = MessageState::present;
    batch.put_message(added);
    batch.put_message(added);  // the same record twice in a batch counts once
    batch.commit();
    auto inbox_counts = a->message_counts(account, inbox_id, inbox_uidvalidity);
    ASSERT_TRUE(inbox_counts);
    EXPECT_EQ(inbox_counts->records, 5u);
    EXPECT_EQ(inbox_counts->present, 3u);
    // Three more message values written: the change count moved by three.
    EXPECT_EQ(inbox_counts->changes, (before[{account, inbox_id, inbox_uidvalidity}].first + 3));
    auto none = a->message_counts(account, inbox_id, inbox_uidvalidity + 1);
    ASSERT_TRUE(none);
    EXPECT_EQ(none->records, 0u);
    EXPECT_EQ(none->changes, 0u);
    EXPECT_TRUE(a->check_message_counts().empty());
  }
  auto after = counted(*Archive::open(dir, Archive::Mode::read));
  EXPECT_EQ((after[{account, inbox_id, inbox_uidvalidity}]), (Counts{5, 3}));
  for (auto& [k, c] : kept(*Archive::open(dir, Archive::Mode::read), after)) EXPECT_EQ(c, after[k]);

  // A rebuild counts again from the journal, to the same numbers.
  rebuild_index(dir, Archive::Options{});
  {
    auto a = Archive::open(dir, Archive::Mode::read);
    for (auto& [k, c] : kept(*a, after)) EXPECT_EQ(c, after[k]);
    EXPECT_TRUE(a->check_message_counts().empty());
    NullSink events;
    EXPECT_TRUE(verify::verify_offline({.archive_dir = dir}, events).ok());
  }
}

TEST(FormatVersions, ANewerVersionIsRefused) {
  TempDir tmp;
  auto dir = copy_fixture(tmp, "archive-v1");
  {
    std::ofstream out(dir / "FORMAT", std::ios::trunc);
    out << "imapstage-archive " << (kFormatVersion + 1) << "\n";
  }
  for (auto mode : {Archive::Mode::read, Archive::Mode::write}) {
    try {
      Archive::open(dir, mode);
      FAIL() << "opened a newer archive";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::format);
    }
  }
}

}  // namespace
}  // namespace imapstage::archive

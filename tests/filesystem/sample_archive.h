// A small archive for the filesystem tests, written with the library's own
// writer: one account with flags, keywords, an expunged message, an older
// UIDVALIDITY generation, a nested folder and folders with hostile names, and
// a second account whose name is hostile too.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "archive-format/archive.h"

namespace imapstage::testing {

inline const std::string kSampleAccount = "alice@example.org";
inline const std::string kHostileAccount = "../../hostile/acct";

// Folder names (one level each) that must stay inside the tree.
inline std::vector<std::string> sample_hostile_levels() {
  return {"../../etc", "a/b", std::string("x\0y", 3), std::string(300, 'L'), "Grüße ✓ 日本", "cur", ".", "..",
          "", ".hidden", "%41", "dovecot-keywords", "all-generations", "uidvalidity-7", "\xff\xfe bad utf-8",
          std::string(120, 'x') + "/" + std::string(200, 'y'), "A.B"};
}

struct SampleArchive {
  std::map<std::string, archive::MessageRecord> by_hash;  // every message, by hex hash
  size_t current_messages = 0;                            // present, current generation, every account
  archive::MessageRecord inbox_uid1;
  std::map<std::string, std::string> bytes;               // hex hash -> raw bytes
};

// The raw message `n` of a folder: headers, then a body with a From line.
inline std::string sample_message(const std::string& folder_tag, int n, bool final_newline = true) {
  std::string m = fmt::format(
      "Message-ID: <{}.{}@example.org>\r\nFrom: Sender {} <s{}@example.org>\r\nSubject: Sample {} of {}\r\n"
      "Date: Mon, 2 Jan 2023 10:00:00 +0000\r\n\r\nHello {}.\r\nFrom here on, lines start with From.\r\n"
      ">From quoted once\r\n>>From quoted twice\r\nFrom\r\nFrom the end",
      n, folder_tag, n, n, n, folder_tag, n);
  if (final_newline) m += "\r\n";
  return m;
}

// `groups`: small messages share group records (as exports write them); false
// gives each its own record, so damaging one record touches one message.
inline SampleArchive make_sample_archive(const std::filesystem::path& dir, bool groups = true) {
  using namespace archive;
  SampleArchive out;
  Archive::Options o;
  o.map_size = 64ull << 20;
  o.group_small_objects = groups;
  auto a = Archive::open(dir, Archive::Mode::create, o);
  Batch b(*a);
  int tag = 0;
  auto put = [&](AccountRecord& acct, FolderRecord& f, uint32_t gen, uint32_t uid, uint32_t flags,
                 std::vector<std::string> keywords, MessageState state, bool final_newline = true) {
    std::string raw = sample_message(fmt::format("f{}", tag), static_cast<int>(uid), final_newline);
    ++tag;
    MessageRecord m;
    m.key = {acct.id, f.id, gen, uid};
    m.hash = sha256(raw);
    m.size = raw.size();
    m.flags = flags;
    m.keywords = std::move(keywords);
    m.internaldate = 1672650000 + tag * 3600;
    m.state = state;
    b.put_object(m.hash, raw);
    b.put_message(m);
    out.by_hash[to_hex(m.hash)] = m;
    out.bytes[to_hex(m.hash)] = raw;
    if (state == MessageState::present && gen == f.uidvalidity) ++out.current_messages;
    return m;
  };
  auto folder = [&](AccountRecord& acct, std::string raw, std::vector<std::string> path) {
    FolderRecord f;
    f.account_id = acct.id;
    f.name_raw = std::move(raw);
    f.name_utf8 = f.name_raw;
    f.delimiter = '/';
    f.path = std::move(path);
    f.uidvalidity = 7;
    f.uidnext = 10;
    b.put_folder(f);
    return f;
  };

  AccountRecord alice;
  alice.name = kSampleAccount;
  alice.host = "imap.example.org";
  alice.user = "alice";
  b.put_account(alice);
  auto inbox = folder(alice, "INBOX", {"INBOX"});
  out.inbox_uid1 = put(alice, inbox, 7, 1, kSeen | kFlagged, {"Work", "$Label1"}, MessageState::present);
  put(alice, inbox, 7, 2, kAnswered, {}, MessageState::present, false);
  put(alice, inbox, 7, 3, 0, {"Work"}, MessageState::present);
  put(alice, inbox, 7, 4, kSeen, {}, MessageState::expunged);
  put(alice, inbox, 5, 1, kSeen, {}, MessageState::present);
  put(alice, inbox, 5, 2, 0, {}, MessageState::present);
  auto nested = folder(alice, "Archive/2023", {"Archive", "2023"});
  put(alice, nested, 7, 1, kSeen, {}, MessageState::present);
  int k = 0;
  for (auto& level : sample_hostile_levels()) {
    auto f = folder(alice, fmt::format("hostile-{}", k++), {level});
    put(alice, f, 7, 1, kSeen | kDraft | kDeleted, {}, MessageState::present);
  }
  AccountRecord hostile;
  hostile.name = kHostileAccount;
  b.put_account(hostile);
  auto hinbox = folder(hostile, "INBOX", {"INBOX"});
  put(hostile, hinbox, 7, 1, 0, {}, MessageState::present);
  b.commit();
  return out;
}

}  // namespace imapstage::testing

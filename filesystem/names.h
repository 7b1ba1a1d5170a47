// How archived folders and messages are named as files: the one naming
// scheme shared by `mount` and `extract` (documented in README.md, "The
// archive as files").
//
//   level escaping (escape_level): every byte that could leave the directory
//   or confuse a reader is written as %XX (upper-case hex): '/', NUL and other
//   control bytes, DEL, '%', bytes that are not valid UTF-8, and with the
//   Maildir++ layout '.'. A leading '.' is always escaped (no ".", ".." or
//   hidden names), an empty level is "%", and the reserved names "cur", "new",
//   "tmp", "dovecot-keywords", "index.csv", "all-generations" and names
//   starting "uidvalidity-" get their first byte escaped. A result longer than
//   255 bytes keeps its first 200 bytes (never a split %XX or UTF-8 sequence)
//   followed by "~" and the first 16 hex digits of the level's SHA-256.
//
//   message file (maildir_base + maildir_info):
//     <INTERNALDATE unix seconds>.U<uidvalidity>_<uid>.imapstage,S=<size>:2,<flags>
//   with flags the sorted letters D (\Draft) F (\Flagged) R (\Answered)
//   S (\Seen) T (\Deleted) and a..z for the folder's first 26 keywords as
//   listed in its dovecot-keywords file ("<n> <keyword>" lines, n = letter - 'a').
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "archive-format/archive.h"

namespace imapstage::filesystem {

// Where a folder's Maildir sits below its account directory.
enum class Layout {
  nested,       // one real directory per level: ACCOUNT/Archive/2023/cur
  maildir_plus, // Maildir++: INBOX is ACCOUNT/cur, others ACCOUNT/.Archive.2023/cur
};

// The level as one safe file name (see the top of this file). Never empty,
// never "." or "..", never holds '/' or NUL, at most 255 bytes; distinct
// levels give distinct names (up to the truncation's 64-bit hash).
std::string escape_level(std::string_view level, Layout layout = Layout::nested);

// The path levels below the account directory for `folder`: the namespace
// ("#other", "#shared") and path levels, escaped; for Maildir++ one ".A.B"
// level, or none for INBOX.
std::vector<std::string> folder_dirs(const archive::FolderRecord& folder, Layout layout);

// A folder's keyword table: its keywords sorted, the first 26 getting letters a..z.
std::vector<std::string> keyword_table(const std::vector<archive::MessageRecord>& messages);

// "<internaldate>.U<uidvalidity>_<uid>.imapstage,S=<size>": unique within a folder.
std::string maildir_base(const archive::MessageRecord& m);
// ":2,<flags>" for `m`, keyword letters from the table `keywords` (letter
// 'a' + index; keywords not among its first 26 get no letter).
std::string maildir_info(const archive::MessageRecord& m, const std::vector<std::string>& keywords);
// The dovecot-keywords file for a keyword table ("0 $Label1\n1 Work\n").
std::string dovecot_keywords(const std::vector<std::string>& keywords);

}  // namespace imapstage::filesystem

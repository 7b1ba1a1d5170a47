// Online comparison of the archive with a server, folder by folder.
//
// Against the source: each archived folder (current UIDVALIDITY generation,
// messages present on the source at the last export) versus the server's
// folder of the same name: counts, total bytes, UIDs, sizes and flags; with
// `deep`, every message is fetched and its SHA-256 and INTERNALDATE compared too.
// A message on the server that the archive lacks and that the selection of
// the last export of the folder (--since, ... as recorded in the run
// history) leaves out is a note ("filtered out"), not counted on either side.
//
// Against a target: what import recorded (source message -> target folder and
// UID, so folders are compared by the mapping import used) versus the
// target's folders: messages missing on the target, messages there that no
// import put there, and messages whose size, flags (or, deep, bytes and
// INTERNALDATE) differ from the archived source. Messages the last import
// left out by its filter (--since, ...) or skipped as too big (--too-big
// skip) are notes of their own kinds, so a filtered import verifies equal
// and says what it left out; so are the copies of a Gmail message in its
// other folders when the message was imported once (into Gmail with labels,
// or --gmail-labels primary).
//
// Bytes that differ are checked against the known server rewrites
// (common/server_rewrites.h): a copy the server stored in a known rewritten
// form is a note ("rewritten"), not a difference. With `deep` every message
// is checked; without it, only those whose size differs (each fetched once,
// at most kRewriteChecks per folder). A message expunged on the source after
// it was imported, still on the target, is a note too ("expunged on source").
//
// Read-only on the server: EXAMINE and BODY.PEEK only.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/events.h"
#include "common/retry.h"
#include "imap/session.h"

namespace imapstage::verify {

enum class Against { source, target };

struct CompareOptions {
  std::filesystem::path archive_dir;
  imap::Endpoint endpoint;
  imap::Credentials credentials;
  Against against = Against::source;
  std::string account;       // archived account; "" means the only one
  std::string target_name;   // target identity as import recorded it; "" means MAILBOX@HOST:PORT
  std::string mailbox;       // the mailbox compared, for naming the server; "" means credentials.user
  bool deep = false;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  RetryPolicy retry;
};

// Kinds of MessageDifference. The first four are differences; the others
// are notes: expected, they leave a folder equal.
inline constexpr const char* kMissing = "missing";
inline constexpr const char* kExtra = "extra";
inline constexpr const char* kDiffers = "differs";
inline constexpr const char* kNotImported = "not imported";
inline constexpr const char* kRewritten = "rewritten";                  // a known server rewrite, nothing else
inline constexpr const char* kExpungedOnSource = "expunged on source";  // imported, expunged on the source since
inline constexpr const char* kFilteredOut = "filtered out";             // outside the last import's (or export's) --since/--before/--larger/--smaller
inline constexpr const char* kSkippedByPolicy = "skipped by policy";    // refused as too big, left out by --too-big skip
// A Gmail message (X-GM-MSGID) imported once from another of its folders: a
// label on a Gmail target, or its primary folder (--gmail-labels primary).
inline constexpr const char* kGmailElsewhere = "imported from another folder";

// Messages whose size differs that a comparison without `deep` fetches to
// check for a known rewrite, per folder.
inline constexpr int kRewriteChecks = 200;

struct MessageDifference {
  std::string kind;          // one of the kinds above
  uint32_t archive_uid = 0;  // source UID in the archive, 0 if none
  uint32_t server_uid = 0;   // UID on the compared server, 0 if none
  std::string message_id;    // when known
  std::string detail;        // what differs
  std::string rewrite{};     // the rewrite classes (classify_rewrite) when the bytes are a known rewrite, else ""
  // Whether this is a note (rewritten, expunged on source) rather than a difference.
  bool note() const;
};

struct FolderComparison {
  std::string folder;         // archive folder(s), UTF-8
  std::string server_folder;  // folder on the server, UTF-8
  uint64_t archive_messages = 0;
  uint64_t server_messages = 0;
  uint64_t archive_bytes = 0;
  uint64_t server_bytes = 0;
  uint64_t hashes_compared = 0;  // deep only
  int64_t rewritten_bytes = 0;   // server minus archive size, summed over the notes with a rewrite
  std::vector<MessageDifference> differences;  // differences and notes
  std::string error;          // the folder could not be compared
  // Against the source: the filter of the last export of the folder (empty: everything).
  nlohmann::json selection = nlohmann::json::object();
  // Entries of `differences` of this kind.
  uint64_t count(std::string_view kind) const;
  // Entries that are differences, not notes.
  uint64_t failures() const;
  // No error, no difference, the same number of messages on both sides and
  // the same bytes once the sizes of rewritten messages are accounted for.
  // Notes leave a folder equal.
  bool equal() const;
};

struct Comparison {
  std::string account;
  std::string against;        // "source" or "target"
  std::string server;         // identity compared with
  bool deep = false;
  // Against a target: the selection of the last import into it (its message
  // filter and --too-big policy, as import recorded them in the run
  // history); messages it left out are notes, not differences. Against the
  // source: the exports' filter when every folder's is the same, else
  // {"per_folder": true} (each row has its own). Empty: all.
  nlohmann::json selection = nlohmann::json::object();
  std::vector<FolderComparison> folders;
  double seconds = 0;
  // Every folder equal (notes allowed).
  bool equal() const;
  // Summed over the folders.
  uint64_t count(std::string_view kind) const;
  uint64_t failures() const;
  uint64_t notes() const;
  // The report: every folder with its differences and notes; "differences"
  // counts the differences, "rewritten" and "expunged_on_source" the notes.
  nlohmann::json to_json() const;
};

// Throws Error for what stops the whole comparison (login refused, archive
// unreadable, no import recorded for that target).
Comparison compare_online(const CompareOptions& options, EventSink& events);

}  // namespace imapstage::verify

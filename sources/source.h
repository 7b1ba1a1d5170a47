// A mail source export reads from: a small store interface in the spirit of
// isync's drivers. POP3 (pop3/), Maildir, mbox and EML directories
// (sources/) implement it; export/source_export.h runs any of them into the
// archive with the same archive-side code as the IMAP export (commit policy,
// events, summary, deduplication, expunge marking). The IMAP export keeps its
// own pipelined path (export/exporter.h).
//
// The archive keys messages by (account, folder, UIDVALIDITY, UID). A source
// without IMAP UIDs gives each message an *identity* instead (a POP3 UIDL, a
// Maildir base name, ...): the export keeps it in the message record
// (FORMAT.md, "Sources") and hands out UIDs itself, in listing order, so a
// re-run finds every archived message by its identity and fetches only the
// others; identities that no longer appear are marked expunged.
//
// Threading: one Source is used by one thread at a time, not always the same
// one (the export lists on its main thread and fetches on a reading thread
// of its own, never both at once). Calls happen in this order per run:
// kind()/location() any time, folders() once, then per folder list() and
// fetch() (fetch only with messages of the last list() of that folder); after
// a call threw an Error with Retry::now, the same call may come again (a
// network source reconnects then).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "archive-format/archive.h"
#include "common/error.h"

namespace imapstage::sources {

struct SourceFolder {
  // UTF-8 levels, as FolderRecord::path: {"INBOX"} for the inbox,
  // {"Archive", "2023"} below it. Unique within the source; never empty, no
  // level empty.
  std::vector<std::string> path;
  // What to name in messages about the folder: its directory or file, or
  // "INBOX on host:port".
  std::string location;
  // The folder's identity validity. 0: the source has none; the archive picks
  // one at the folder's first export and keeps it (identities are then
  // compared across every run). Non-zero (a source with real UIDVALIDITY):
  // when it differs from the archived one, the old generation is kept,
  // marked expunged, and the folder is exported afresh.
  uint32_t uidvalidity = 0;
  // A level that holds no messages itself (a directory with only subfolders).
  bool noselect = false;
  // IMAP-style attributes, e.g. "\\Sent" for a folder the source marks as
  // such; usually empty.
  std::vector<std::string> attributes;
  // The driver's own handle (an index into its table); opaque to the caller.
  uint64_t handle = 0;
};

// One message as a listing sees it.
struct SourceMessage {
  // The identity: stable across runs for as long as the message is unchanged
  // on the source, and unique within one listing of the folder (a driver that
  // sees the same identity twice makes the later ones unique, e.g. "X#2").
  // At most 1,000 bytes. "" means the source cannot name the message without
  // its bytes (POP3 without UIDL): the export then fetches it on every run and
  // its identity becomes "sha256:<hex>#<n>" (n-th message with these bytes in
  // the listing), so archived ones are recognised, not stored again.
  std::string id;
  // The size the source announces, for totals and the maximum message size.
  // The archived size is what fetch() delivers (it may differ, e.g. when line
  // ends are made CRLF).
  uint64_t size = 0;
  // Flags the source keeps beside the message (archive::Flag bits, and
  // keywords as IMAP atoms). A re-run updates them on archived messages.
  uint32_t flags = 0;
  std::vector<std::string> keywords;
  // INTERNALDATE when the listing knows it (file mtime, mbox From line);
  // otherwise fetch() supplies it.
  std::optional<int64_t> internaldate;  // unix seconds, UTC
  int32_t internaldate_tz = 0;          // minutes east of UTC
  archive::DateSource date_source = archive::DateSource::server;
  // The driver's own locator (an offset, a message number, an index into its
  // table); opaque to the caller, handed back in fetch().
  uint64_t locator = 0;
  uint64_t locator2 = 0;
};

// A message's bytes as fetch() delivers them.
struct FetchedMessage {
  // The message as it is archived: its exact bytes, except that a source
  // whose files end lines with a bare LF gives them CRLF, as an IMAP server
  // serving those files would (FORMAT.md, "Sources").
  std::string bytes;
  // INTERNALDATE found while reading, when the listing had none (or a better
  // one); when both are empty the export uses the time it read the message.
  std::optional<int64_t> internaldate;
  int32_t internaldate_tz = 0;
  archive::DateSource date_source = archive::DateSource::server;
  // What the source held that could not be kept as it was (e.g. an
  // unreadable date), one text each; archived anyway, reported per message.
  std::vector<std::string> anomalies;
};

// Something in a folder that is not a message the listing could hand out: a
// non-mail file, a malformed mbox region. Reported (account, folder, `where`)
// and counted as not archived; the rest of the folder goes on.
struct SourceProblem {
  std::string where;  // a file, or "FILE at byte N"
  std::string what;
};

struct Listing {
  std::vector<SourceMessage> messages;  // in the order UIDs are given out (oldest first where known)
  std::vector<SourceProblem> problems;
  // A note on how the folder was read (e.g. "mboxrd"), shown once per folder; may be empty.
  std::string note;
};

// Receives fetched messages, in the order asked for.
class FetchSink {
 public:
  virtual ~FetchSink() = default;
  // A message read whole. `message` is the listing's entry.
  virtual void deliver(const SourceMessage& message, FetchedMessage&& fetched) = 0;
  // A message that could not be read (changed or vanished while read,
  // malformed, over `max_size`): `error` says what and names the file (and
  // byte offset) or message. The fetch goes on with the next one.
  virtual void failed(const SourceMessage& message, const Error& error) = 0;
  // Asked between messages; true stops the fetch (it returns normally).
  virtual bool stop() { return false; }
};

class Source {
 public:
  virtual ~Source() = default;

  virtual archive::SourceKind kind() const = 0;
  // Where the mail comes from, for the account record and reports: the path
  // given, or host:port. Never holds a secret.
  virtual std::string location() const = 0;

  // Every folder, parents before children, INBOX first when there is one.
  // Throws Error for what makes the whole source unreadable (a missing path:
  // not_found; a server that refuses: auth / protocol / network).
  virtual std::vector<SourceFolder> folders() = 0;

  // The folder's messages now. Reads only what identities, sizes and flags
  // need (headers, names, a scan for message boundaries), never keeps message
  // bodies in memory. Throws Error for what stops the folder (it is then
  // reported and the others go on).
  virtual Listing list(const SourceFolder& folder) = 0;

  // Reads the messages `wanted` (entries of the last list() of this folder,
  // in listing order) and hands each to `sink`, whole, in that order; one
  // that cannot be read, has changed since it was listed, or is larger than
  // `max_size` bytes goes to sink.failed and the rest go on. Memory is
  // bounded by the largest message. Throws Error only for what stops the
  // folder (a dropped connection: Retry::now or later).
  virtual void fetch(const SourceFolder& folder, const std::vector<const SourceMessage*>& wanted,
                     uint64_t max_size, FetchSink& sink) = 0;
};

}  // namespace imapstage::sources

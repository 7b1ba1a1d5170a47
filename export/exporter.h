// The export engine: pulls every folder of one IMAP account into the archive.
//
// Read-only towards the server (STATUS, EXAMINE, BODY.PEEK). Incremental: what
// the archive already holds for the folder's UIDVALIDITY is never fetched
// again; flags are refreshed (CHANGEDSINCE with CONDSTORE), messages gone from
// the server are marked expunged and kept. Resumable: progress is committed in
// batches, and a re-run (or a reconnect after a dropped connection) derives
// what is left from the archive itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "archive-format/archive.h"
#include "common/events.h"
#include "common/message_filter.h"
#include "common/retry.h"
#include "imap/session.h"

namespace imapstage::exporting {

// A NOOP taking at least this long makes an export with connections = 0 use four connections.
inline constexpr std::chrono::milliseconds kFarRoundTrip{5};

// What an export takes and how hard it pulls: the same for one account and
// for every account of a batch.
struct ExportPolicy {
  // Only messages it matches are fetched (--since, --before on INTERNALDATE,
  // --larger, --smaller on RFC822.SIZE): chosen by UID SEARCH on the server
  // among the UIDs the archive lacks, then checked on each message's
  // INTERNALDATE and size (the server's dates are days in its own time zone;
  // a server refusing the search leaves the whole choice to that check).
  // The others are counted as filtered out, never marked expunged, and taken
  // by a later run whose selection includes them. The run history records
  // the filter so verify compares the same selection.
  MessageFilter filter;
  // Once this many messages have failed (not delivered, over the maximum
  // size), the account stops with Error(policy) after committing what was
  // fetched (0: never).
  uint64_t max_errors = 0;
  // Caps on what is fetched (0: none): message bytes and messages per
  // second, over the whole account (every connection together).
  double max_bytes_per_second = 0;
  double max_messages_per_second = 0;
};

struct ExportOptions {
  std::filesystem::path archive_dir;
  imap::Endpoint endpoint;
  imap::Credentials credentials;
  std::string account_name;              // archived account name; "" means USER@HOST
  // Glob patterns on canonical folder names (UTF-8, levels joined with '/',
  // no personal-namespace prefix: "Projects/*" on every server; see
  // FolderRecord::canonical_name). Empty include: every folder.
  std::vector<std::string> include;
  std::vector<std::string> exclude;      // applied after include
  // An --folder pattern that matches no folder is an Error(usage) unless this
  // is set (then a warning): batches where not every account has every folder.
  bool allow_unmatched = false;
  // Namespaces to export (RFC 2342). Other users' and shared folders are
  // archived as their own trees ("#other/...", "#shared/...") only when asked.
  std::vector<imap::Namespace::Kind> namespaces = {imap::Namespace::personal};
  bool dry_run = false;                  // report what would be fetched; write nothing
  ExportPolicy policy;                   // selection, error and rate policies
  RetryPolicy retry;                     // reconnects after a dropped connection
  // Connections to the server. Each takes whole folders, in LIST order, while
  // any are left, so folders are exported side by side; memory is bounded by
  // the largest message per connection. A connection the server refuses
  // beyond the first is reported and the others go on.
  // Connections exporting folders side by side. 0: two, or four when a
  // NOOP on the first one takes kFarRoundTrip or more (on a slow link the
  // round trips per folder, not the bytes, set the pace).
  int connections = 1;
  uint32_t fetch_batch = 500;            // UIDs per UID FETCH command
  // A commit makes what a lane fetched durable (an fsync of the pack and of
  // the index): it comes after this many compressed bytes, this many index
  // changes or this much time, whichever is first. Work since the last commit
  // is fetched again after a crash.
  uint64_t commit_bytes = 32ull << 20;
  size_t commit_messages = 10000;
  std::chrono::milliseconds commit_interval{2000};
  archive::Archive::Options archive_options;
  // Asked between folders and between FETCH commands; when it returns true
  // the export stops with Error(interrupted) after committing what arrived
  // (a batch's per-account deadline). Empty: never.
  std::function<bool()> cancelled;
  // Called after each message is archived with its size, from the lane's
  // thread: may block (a per-server rate cap shared by a batch) or throw
  // (Error(throttled) when a daily budget is spent: the message is kept, the
  // account stops as resumable). Empty: nothing.
  std::function<void(uint64_t bytes)> after_message;
  // Called once, after login and before anything is fetched, when the
  // server gives away the hosted service it is (imap::Session::
  // detected_provider: "gmail" for X-GM-EXT-1), so that service's profile
  // applies where nothing was chosen (its daily budget). Returns what it
  // applied, for the "provider" event ("" nothing); may throw (a budget
  // already spent). Empty: only the event.
  std::function<std::string(const std::string& provider)> on_provider;
};

struct FolderResult {
  std::string name;                      // canonical name (UTF-8), as patterns match it
  std::string name_raw;                  // as on the server
  bool noselect = false;                 // holds no messages; recorded only
  bool unchanged = false;                // STATUS showed nothing new: not even EXAMINEd
  bool uidvalidity_changed = false;      // the old generation was kept, the folder exported anew
  uint32_t uidvalidity = 0;
  uint64_t server_messages = 0;          // messages on the server at EXAMINE
  uint64_t new_messages = 0;             // fetched and archived in this run
  // Gmail (X-GM-EXT-1): archived in this run without fetching the body,
  // which the archive holds under the message's X-GM-MSGID (from All Mail).
  uint64_t gmail_linked = 0;
  uint64_t bytes_fetched = 0;            // raw bytes of those
  uint64_t bytes_stored = 0;             // compressed bytes newly written to packs
  uint64_t bytes_deduplicated = 0;       // raw bytes not stored because the archive had them
  uint64_t flags_updated = 0;
  uint64_t expunged = 0;                 // newly marked expunged on the source
  uint64_t filtered_out = 0;             // on the server, not archived, outside the filter (ExportPolicy::filter)
  bool finished = false;                 // examined to the end in this run (or found unchanged)
  uint64_t to_fetch = 0;                 // --dry-run: messages that would be fetched
  uint64_t to_fetch_bytes = 0;           // --dry-run: their size
  std::vector<uint32_t> failed_uids;     // the server listed them but did not deliver them, or they were refused
  std::map<uint32_t, std::string> refused;  // of failed_uids, those refused and why (over the maximum message size)
  // Messages archived with something the server sent replaced by what can be
  // kept (an impossible INTERNALDATE stored as none, invalid flags or
  // keywords beyond the limit left out): UID and what, one entry each.
  std::vector<std::pair<uint32_t, std::string>> anomalies;
  // Sources without IMAP UIDs (export/source_export.h): messages or files
  // that could not be archived (they get no UID), each named by where it is
  // (a file, "FILE at byte N", a POP3 message) and why.
  std::vector<std::pair<std::string, std::string>> failed_items;
  std::string error;                     // the folder could not be exported at all
};

struct ExportSummary {
  std::string account;
  std::string server;                    // host:port, or the path of a file source
  archive::SourceKind source = archive::SourceKind::imap;
  uint64_t run_id = 0;                   // history entry, 0 for --dry-run
  bool dry_run = false;
  ExportPolicy policy;                   // what the run selected, in to_json (and so in the run history)
  std::vector<FolderResult> folders;
  double seconds = 0;
  int reconnects = 0;

  uint64_t total(uint64_t FolderResult::*field) const;
  uint64_t failed_messages() const;
  uint64_t failed_folders() const;
  // True when every selectable folder and every message was exported.
  bool complete() const { return failed_messages() == 0 && failed_folders() == 0; }
  // The whole summary as JSON (the "summary" event and the run's history details).
  nlohmann::json to_json() const;
};

// From a Gmail server (X-GM-EXT-1 offered) each message's body is fetched
// once, keyed by X-GM-MSGID: the \All folder (All Mail) is exported first
// (other folders wait for it), with X-GM-MSGID, X-GM-THRID and X-GM-LABELS
// beside every body; in every other folder, the messages the archive lacks
// are first asked for only UID X-GM-MSGID FLAGS, and those whose X-GM-MSGID
// the account's records already have are recorded with that body (counted
// in FolderResult::gmail_linked); only the others (Spam, Trash, messages
// that arrived meanwhile) are fetched whole. Labels are refreshed with the
// flags (FORMAT.md, "Gmail").
//
// Logs in first (so a refused login leaves no trace in the archive), then
// opens or creates the archive and exports the account. Emits events
// (folder_start, progress, folder_done, message_error, folder_error,
// reconnect, summary). Throws Error for what stops the whole run (auth,
// archive locked or unwritable, connection lost beyond the retry budget);
// folder and message failures are in the summary instead.
ExportSummary run_export(const ExportOptions& options, EventSink& events);

// Does the same with an archive that is already open for writing (batches
// share one Archive across threads), using `session` if given, already
// logged in.
ExportSummary export_account(archive::Archive& archive, const ExportOptions& options, EventSink& events,
                             std::unique_ptr<imap::Session> session = nullptr);

// Compresses a sorted UID list into ranges of at most `max_count` UIDs each,
// one vector of ranges per FETCH command.
std::vector<std::vector<imap::UidRange>> uid_batches(const std::vector<uint32_t>& sorted_uids, size_t max_count);
// The same, each command also asking for at most `max_bytes` by `size_of`
// (one message at least, however big).
std::vector<std::vector<imap::UidRange>> uid_batches(const std::vector<uint32_t>& sorted_uids, size_t max_count,
                                                     uint64_t max_bytes,
                                                     const std::function<uint64_t(uint32_t)>& size_of);

}  // namespace imapstage::exporting

// The import engine: pushes one archived account into a target IMAP server.
//
// Never duplicates: before a group of APPENDs is sent, each message is
// recorded in the archive as in flight (with the target folder's UIDVALIDITY
// and UIDNEXT), durably; one archive commit records a window of messages
// ahead (import_folder). When the server confirms, the record becomes done
// with the UID from APPENDUID, made durable by the next commit; until then a
// crash leaves it in flight, which the next run reconciles. A run that stops
// between groups forgets the in-flight records of what it never sent.
// A re-run appends only messages with no record; in-flight
// records (a crash or a dropped connection mid-APPEND) are reconciled first:
// the target's messages from the recorded UIDNEXT on (or, without that, the
// ones with the same Message-ID) are fetched and matched by SHA-256, or, for
// a server that stored the message changed (common/server_rewrites.h), by
// rewrite fingerprint and INTERNALDATE, so a message that did arrive is
// recorded, and only one that did not is sent again.
// Bytes are checked against their hash before they are sent, and sent as they
// are: no header is ever added.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "archive-format/archive.h"
#include "common/events.h"
#include "common/message_filter.h"
#include "common/retry.h"
#include "import/folder_map.h"
#include "imap/session.h"

namespace imapstage::importing {

// What an import takes and how hard it pushes: the same for one account
// and for every account of a batch.
// Where messages of a Gmail source (records with an X-GM-MSGID) go on a
// target that is not Gmail (--gmail-labels).
enum class GmailLabels {
  folders,  // one copy in every folder (label) that holds it, All Mail included: the folders as exported
  primary,  // one copy per message, in its primary folder (gmail_primary_rank); All Mail only when it has no other
};

// The priority of a source folder as a Gmail message's one home
// (--gmail-labels primary, and the folder a message is appended from into
// Gmail when All Mail is not imported): lower first. INBOX 0, \Sent 1,
// \Drafts 2, a user label (no special use) 3, \Flagged (Starred) 4,
// \Important 5, \Junk 6, \Trash 7, \All 8; ties go to the folder whose
// canonical name sorts first.
int gmail_primary_rank(const archive::FolderRecord& folder);

struct ImportPolicy {
  TargetSubfolder subfolder;                    // --target-subfolder: the whole account below it
  // How the target compares and reserves folder names (folder_map.h rules
  // 7-8; the provider's, --case-insensitive-names, --reserved-folder). Left
  // empty, a target found to be Gmail (X-GM-EXT-1) gets Gmail's rules, and
  // the summary's policy says which applied.
  TargetNames names;
  // Only messages it matches are sent (--since, --before, --larger,
  // --smaller); the others are counted as filtered out, and the run's
  // history records the filter so verify can compare the same selection.
  MessageFilter filter;
  // A message the target refuses as too big (over its APPENDLIMIT, or an
  // APPEND answered [TOOBIG]/[LIMIT]): skipped by policy (true: listed in
  // the summary and events, the run still complete) or failed (false).
  bool skip_too_big = false;
  // Once this many messages have failed, the account stops with
  // Error(policy) after recording what was sent (0: never).
  uint64_t max_errors = 0;
  // Caps on what is sent (0: none): bytes and messages per second, over the
  // whole account (every connection together).
  double max_bytes_per_second = 0;
  double max_messages_per_second = 0;
  // Provider quirk (Microsoft 365 drops \Flagged given with APPEND): after
  // an APPEND that returned a UID, the message's flags are STOREd again
  // when they include \Flagged.
  bool restore_flagged = false;
  // Called before each APPEND group with its bytes and messages: may block
  // (a per-server rate cap shared by a batch) or throw (Error(throttled)
  // when a daily budget is spent: nothing of the group is sent, the account
  // stops as resumable). Empty: nothing.
  std::function<void(uint64_t bytes, uint64_t messages)> before_append;
  // A Gmail source into a target that is not Gmail: see GmailLabels. Into
  // Gmail (the target offers X-GM-EXT-1) each message is appended once,
  // into All Mail when it is imported (else its primary folder), and its
  // other folders become labels (UID STORE +X-GM-LABELS), whatever this says.
  GmailLabels gmail_labels = GmailLabels::folders;
};

struct ImportOptions {
  std::filesystem::path archive_dir;
  imap::Endpoint endpoint;
  imap::Credentials credentials;
  std::string account;                          // archived account; "" means the only one
  std::string target_name;                      // identity of the target in the archive; "" means USER@HOST:PORT
  std::map<std::string, std::string> map;       // --map SOURCE=TARGET (UTF-8)
  std::vector<std::string> include;             // glob patterns on source folder names
  std::vector<std::string> exclude;
  ImportPolicy policy;                          // subfolder, filter, too-big, error and rate policies
  bool dry_run = false;
  // Messages expunged on the source since they were imported are expunged
  // on the target too (UID EXPUNGE; needs UIDPLUS). Off by default: the
  // target keeps everything ever imported.
  bool sync_expunges = false;
  RetryPolicy retry;
  // Connections to the target. Each takes whole folders, in mapping order,
  // while any are left, so folders are imported side by side (a server that
  // syncs each message to disk keeps one disk busy per connection). A
  // connection the server refuses beyond the first is reported as a warning
  // and the others go on. The dry run uses one. 0: two, or four when a NOOP
  // on the first connection takes exporting::kFarRoundTrip or more (on a far
  // link the round trip per APPEND group, not the bytes, sets the pace).
  int connections = 1;
  size_t append_batch = 100;                    // messages per MULTIAPPEND
  uint64_t append_batch_bytes = 16ull << 20;    // and at most this many bytes (less when
                                                // connections share the memory for messages)
  // Asked between folders and between APPEND groups; when it returns true the
  // import stops with Error(interrupted), everything sent so far recorded
  // (a batch's per-account deadline). Empty: never. With several
  // connections it is called from each connection's thread.
  std::function<bool()> cancelled;
  // As exporting::ExportOptions::on_provider, for the target: called once
  // when the target gives away its provider ("gmail"), before anything is
  // sent; returns what it applied (its daily upload budget). Empty: only the event.
  std::function<std::string(const std::string& provider)> on_provider;
};

// A message the target refused as too big and --too-big skip left out.
struct SkippedMessage {
  uint32_t uid = 0;          // source UID
  std::string hash;          // hex
  uint64_t size = 0;
  uint64_t limit = 0;        // the target's APPENDLIMIT, 0 when it answered TOOBIG without one
  std::string reason;
};

struct MessageFailure {
  uint32_t uid = 0;          // source UID
  std::string hash;          // hex
  std::string error;
};

struct ImportFolderResult {
  std::string source;                 // UTF-8
  std::string target;                 // UTF-8
  std::string reason;                 // why this target (see folder_map.h)
  bool created = false;
  uint64_t source_messages = 0;       // present in the archive's current generation
  uint64_t appended = 0;
  uint64_t bytes_appended = 0;
  uint64_t already_there = 0;         // appended by an earlier run
  // Gmail source: present here but sent once from another folder (into
  // Gmail with this folder as a label, or --gmail-labels primary).
  uint64_t gmail_elsewhere = 0;
  uint64_t gmail_labelled = 0;        // into Gmail: messages whose labels were set (UID STORE +X-GM-LABELS)
  uint64_t reconciled = 0;            // in flight after an interruption, found on the target
  uint64_t flags_updated = 0;         // UID STORE on messages appended earlier
  uint64_t to_append = 0;             // --dry-run
  uint64_t expunged = 0;              // --sync-expunges: expunged on the target
  uint64_t rewritten = 0;             // stored changed by a known server rewrite (common/server_rewrites.h)
  uint64_t altered = 0;               // stored changed otherwise (a warning each)
  std::vector<std::string> dropped_flags;  // flags the target cannot keep (not in PERMANENTFLAGS)
  uint64_t filtered_out = 0;          // present but not selected by the message filter
  std::vector<SkippedMessage> skipped;  // --too-big skip
  std::vector<MessageFailure> failed;
  std::string error;                  // the folder could not be imported at all
  // Neither the archived folder nor the target folder changed since an
  // earlier import finished it (archive::ImportMark): nothing was read or sent.
  bool unchanged = false;
};

struct ImportSummary {
  std::string account;
  std::string target;                 // target identity
  ImportPolicy policy;                // what the run selected and its policies (filter, too-big) in to_json
  uint64_t run_id = 0;
  bool dry_run = false;
  std::vector<ImportFolderResult> folders;
  double seconds = 0;
  int reconnects = 0;

  uint64_t total(uint64_t ImportFolderResult::*field) const;
  uint64_t failed_messages() const;
  uint64_t skipped_messages() const;
  uint64_t failed_folders() const;
  bool complete() const { return failed_messages() == 0 && failed_folders() == 0; }
  nlohmann::json to_json() const;
};

// Logs in to the target, then opens the archive for writing (for the
// dry run: reading) and imports. Emits events (mapping, folder_start,
// progress, folder_done, message_error, folder_error, reconnect, warning,
// summary). Throws Error for what stops the whole run.
ImportSummary run_import(const ImportOptions& options, EventSink& events);

// Does the same with an archive that is already open for writing (batches
// share one Archive across threads). options.archive_dir and dry_run are
// ignored: the import is real.
ImportSummary import_account(archive::Archive& archive, const ImportOptions& options, EventSink& events);

}  // namespace imapstage::importing

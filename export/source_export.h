// Export from any sources::Source (POP3, Maildir, mbox, EML directory) into
// the archive: the generic loop beside the IMAP export's pipelined one, with
// the same archive-side behaviour (export/export_common.h): commit policy,
// events, summary and run history, deduplication, expunge marking.
//
// Per folder: list(); identities the archive has for the folder (message
// records' source_id, FORMAT.md "Sources") are not fetched again, only their
// flags refreshed; new ones get the next UIDs in listing order and are
// fetched, hashed, deduplicated and stored; archived identities the listing
// lacks are marked expunged (and present again if they come back). A re-run
// of an unchanged source writes no message.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "archive-format/archive.h"
#include "common/events.h"
#include "common/retry.h"
#include "export/exporter.h"
#include "sources/source.h"

namespace imapstage::exporting {

struct SourceExportOptions {
  std::filesystem::path archive_dir;
  // The archived account name. Required: a file source has no user@host.
  std::string account_name;
  // Glob patterns on canonical folder names (levels joined with '/'), as for
  // the IMAP export; an --folder pattern that matches nothing is an
  // Error(usage) unless allow_unmatched.
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  bool allow_unmatched = false;
  bool dry_run = false;                  // list and report what would be fetched; write nothing
  uint64_t max_message_size = 1024ull << 20;  // larger messages are named as failed, not archived
  // A folder whose list() or fetch() throws an Error with Retry::now is
  // committed and tried again (the source may reconnect), as the IMAP export does.
  RetryPolicy retry;
  uint64_t commit_bytes = 32ull << 20;   // commit policy, as ExportOptions
  size_t commit_messages = 10000;
  std::chrono::milliseconds commit_interval{2000};
  archive::Archive::Options archive_options;
  std::function<bool()> cancelled;       // as ExportOptions::cancelled
  // Called after each message is archived with its size: may throw
  // (Error(throttled) when a daily budget is spent): the message is kept,
  // what arrived is committed and the export stops with that error (the
  // account resumable). Empty: nothing.
  std::function<void(uint64_t bytes)> after_message;
  // Only messages it matches are archived (--since, --before, --larger,
  // --smaller): the size the listing announces decides before a message is
  // read (one without an identity is read first, to be recognised); the
  // date decides before it is read when the listing knows it (file time,
  // mbox From line), otherwise once it is read (POP3: the Date or Received
  // header, as archived). The others are counted as filtered out,
  // never marked expunged, and taken by a later run whose filter includes
  // them. The run history records the filter, so verify reports the
  // selection (as for the IMAP export, ExportPolicy::filter).
  MessageFilter filter;
  // Once this many messages have failed (unreadable, over the maximum size,
  // listed but not delivered), the account stops with Error(policy) after
  // committing what was archived (0: never).
  uint64_t max_errors = 0;
};

// Calls source.folders() first (so a source that cannot be read, or a server
// that refuses the login, leaves no trace in the archive), then opens or
// creates the archive and exports. The account is recorded with the source's
// kind and location; an existing account of another kind is refused
// (Error(usage)). Emits the IMAP export's events (totals, folder_start,
// progress, folder_done, message_error, folder_error, warning, summary).
// Throws Error for what stops the whole run; folder and message failures are
// in the summary (failed_items name files and byte offsets).
ExportSummary run_source_export(const SourceExportOptions& options, sources::Source& source, EventSink& events);

// The same with an archive already open for writing (or for reading, with
// dry_run).
ExportSummary export_source(archive::Archive& archive, const SourceExportOptions& options, sources::Source& source,
                            EventSink& events);

}  // namespace imapstage::exporting

// `imapstage extract`: the archive's messages written out as Maildir (the
// mount's naming, filesystem/names.h), mboxrd (one file per folder) or EML
// (one file per message plus index.csv per folder), byte for byte.
//
// Output rules: nothing that exists is overwritten (a Maildir message counts
// as present when a file with its base name, any flags, is in cur/ or new/;
// an mbox holds a message when one of its From lines names it); each file
// gets its final name only when complete (a message file is linked in from
// an unnamed O_TMPFILE, other files are renamed from a temporary name), so
// an interrupted run leaves no partial file under a final name; every name
// is escaped (escape_level), and no symbolic link below --out is followed.
//
// mboxrd: each message is preceded by
//   From <uidvalidity>.<uid>@imapstage.invalid <INTERNALDATE as asctime, UTC>
// and followed by an empty line; a line of the message matching ^>*From  gets
// one more '>' (undone by removing one '>' from such lines); a message not
// ending in a line feed gets one (the only byte added).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/events.h"
#include "filesystem/catalog.h"

namespace imapstage::filesystem {

enum class ExtractFormat { maildir, mbox, eml };

struct ExtractOptions {
  std::filesystem::path archive_dir;
  std::filesystem::path out_dir;
  ExtractFormat format = ExtractFormat::maildir;
  CatalogOptions catalog;  // accounts, folder globs, dates; layout for Maildir
};

struct ExtractSummary {
  uint64_t folders = 0;
  uint64_t messages = 0;          // selected
  uint64_t written = 0;           // written now
  uint64_t already_present = 0;   // found in the output and left alone
  uint64_t bytes_written = 0;     // message bytes written now
  std::vector<std::string> failed;  // messages not written, each with why
  double seconds = 0;
  bool complete() const { return failed.empty(); }
  nlohmann::json to_json() const;  // {"event": "summary", ...}
};

// Writes every selected message that the output does not hold yet. Emits
// "totals", "progress", "folder_done", "message_error" and a final summary
// event. A message whose object fails its checks is named in `failed` (and
// left out); the run goes on. Throws Error(not_found/format) for the archive,
// Error(io) when the output cannot be written (disk full, permissions), and
// Error(corrupt) for a symbolic link or a file where a directory belongs.
ExtractSummary run_extract(const ExtractOptions& options, EventSink& events);

// The mboxrd From line for a message (with its line feed).
std::string mbox_from_line(const archive::MessageRecord& m);

}  // namespace imapstage::filesystem

// The archive side every export shares, whatever it reads from: the IMAP
// export (export/exporter.h) and the generic loop over sources::Source
// (export/source_export.h). Commit policy, the account record, the run
// history, folders gone from the source, expunge marking and the events that
// report them are done here once.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "archive-format/archive.h"
#include "export/exporter.h"

namespace imapstage::exporting {

using Clock = std::chrono::steady_clock;

// When staged work is made durable: after this many compressed bytes, this
// many index changes or this much time, whichever comes first.
struct CommitLimits {
  uint64_t bytes = 32ull << 20;
  size_t changes = 10000;
  std::chrono::milliseconds interval{2000};
};

// A Batch with the commit policy applied to it. One per thread (Batch is not
// thread-safe); several may write to one archive side by side.
struct Staging {
  std::unique_ptr<archive::Batch> batch;  // null for --dry-run
  uint64_t progress_marker = 0;           // grows with every commit (resets retry budgets)
  Clock::time_point last_commit = Clock::now();

  // Commits the batch when `force` or a limit is reached and it holds
  // anything. Throws Error(io) (nothing of the batch indexed) like Batch::commit.
  void commit_if_due(const CommitLimits& limits, bool force = false);
};

// The id of the account `wanted.name`, creating it (with wanted's host, user,
// source kind and the current time) through `staging` and committing it when
// it is new. Throws Error(usage) when the archive already has the account
// from another kind of source: mail from two kinds of source never mixes in
// one account.
uint32_t ensure_account(archive::Archive& archive, Staging& staging, archive::AccountRecord wanted);

// Begins the run in the history ("export", account, details); the run id.
uint64_t begin_export_run(archive::Archive& archive, const ExportSummary& summary, nlohmann::json details);
// Ends it: "failed" when `error` is given (its text added to the details),
// else "ok" when the summary is complete, else "partial". Never throws: a run
// that cannot be ended stays "running", and a later run supersedes it.
void end_export_run(archive::Archive& archive, const ExportSummary& summary, const char* error = nullptr);

// Marks every folder of the account that is not `gone` yet and whose
// name_raw is not in `listed` as gone (staged in `batch`), with a warning
// event for each, via `emit`.
void mark_gone_folders(archive::Archive& archive, archive::Batch& batch, uint32_t account_id,
                       const std::unordered_set<std::string>& listed,
                       const std::function<void(nlohmann::json)>& emit);

// Stages `record` as expunged on the source (kept in the archive). Returns
// false when it was already marked.
bool mark_expunged(archive::Batch& batch, archive::MessageRecord record);

// The "policy" of an export's history entry and summary: {"filter": {...}}
// (no "filter" when it takes everything), the --max-errors and rate caps
// when set.
nlohmann::json policy_json(const ExportPolicy& policy);

// What the export runs of one account selected, read from the run history
// (each run records its policy when it begins, and at its end which folders
// it finished and how many messages of each its filter left out).
class ExportSelections {
 public:
  // Every export run of `account` except `current_run`.
  ExportSelections(const archive::Archive& archive, const std::string& account, uint64_t current_run = 0);
  // The filter of the last run that finished folder `name_raw` (empty when
  // that run took everything, or no run finished it): the messages on the
  // source it leaves out are not expected in the archive.
  MessageFilter last_filter(const std::string& name_raw) const;
  // Whether the archive may lack messages of folder `name_raw` that an
  // export with `current` takes although the folder's UIDNEXT and
  // HIGHESTMODSEQ are unchanged: a run with another filter left some out
  // since the folder was last taken whole. Such a folder is examined again
  // (its UIDs searched over the whole range), never skipped as unchanged.
  bool may_lack(const std::string& name_raw, const MessageFilter& current) const;

 private:
  std::vector<std::pair<uint64_t, MessageFilter>> filtered_runs_;  // run id, its non-empty filter
  std::map<std::string, uint64_t> last_whole_;                     // name_raw -> last run that left nothing out
  std::map<std::string, MessageFilter> last_filter_;               // name_raw -> filter of the last run that finished it
};

// The "folder_done" event of a folder that was exported (not --dry-run).
nlohmann::json folder_done_event(const FolderResult& result);

// The current time in unix seconds.
int64_t unix_now();

}  // namespace imapstage::exporting

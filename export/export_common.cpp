#include "export/export_common.h"

#include <fmt/format.h>

#include "common/error.h"

namespace imapstage::exporting {

using archive::MessageRecord;
using archive::MessageState;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Staging::commit_if_due(const CommitLimits& limits, bool force) {
  if (!batch) return;
  auto now = Clock::now();
  if (force || batch->pending_bytes() >= limits.bytes || batch->pending_changes() >= limits.changes ||
      now - last_commit >= limits.interval) {
    if (batch->pending_changes() > 0 || batch->pending_bytes() > 0) {
      batch->commit();
      ++progress_marker;
    }
    last_commit = now;
  }
}

uint32_t ensure_account(archive::Archive& archive, Staging& staging, archive::AccountRecord wanted) {
  if (auto existing = archive.find_account(wanted.name)) {
    if (existing->source != wanted.source)
      throw Error(ErrorKind::usage,
                  fmt::format("the archive's account {} was exported from {} ({}), not from {}: give another "
                              "account name", wanted.name, archive::source_kind_name(existing->source),
                              existing->host, archive::source_kind_name(wanted.source)),
                  Retry::never, {.account = wanted.name});
    return existing->id;
  }
  wanted.id = 0;
  wanted.created = unix_now();
  uint32_t id = staging.batch->put_account(wanted);
  staging.commit_if_due({}, true);
  return id;
}

uint64_t begin_export_run(archive::Archive& archive, const ExportSummary& summary, nlohmann::json details) {
  return archive.begin_run("export", summary.account, details.dump());
}

void end_export_run(archive::Archive& archive, const ExportSummary& summary, const char* error) {
  if (!summary.run_id) return;
  auto details = summary.to_json();
  std::string result = summary.complete() ? "ok" : "partial";
  if (error) {
    details["error"] = error;
    result = "failed";
  }
  try {
    archive.end_run(summary.run_id, result, details.dump());
  } catch (...) {
    // The run stays "running" in the history: a later run supersedes it.
  }
}

void mark_gone_folders(archive::Archive& archive, archive::Batch& batch, uint32_t account_id,
                       const std::unordered_set<std::string>& listed,
                       const std::function<void(nlohmann::json)>& emit) {
  for (auto folder : archive.folders(account_id)) {
    if (folder.gone || listed.count(folder.name_raw)) continue;
    folder.gone = true;
    batch.put_folder(folder);
    emit({{"event", "warning"}, {"folder", folder.canonical_name()}, {"gone", true},
          {"text", fmt::format("{}: no longer on the source (deleted or renamed there); the archive keeps its "
                               "messages. A renamed folder is exported under its new name as a new folder, and "
                               "import creates it beside the old one", folder.canonical_name())}});
  }
}

bool mark_expunged(archive::Batch& batch, MessageRecord record) {
  if (record.state == MessageState::expunged) return false;
  record.state = MessageState::expunged;
  batch.put_message(record);
  return true;
}

nlohmann::json folder_done_event(const FolderResult& result) {
  std::string text = fmt::format("{}: {} new, {} flag changes, {} expunged, {} fetched", result.name,
                                 result.new_messages, result.flags_updated, result.expunged, result.bytes_fetched);
  size_t failed = result.failed_uids.size() + result.failed_items.size();
  if (failed) text += fmt::format(", {} not archived", failed);
  if (!result.anomalies.empty()) text += fmt::format(", {} anomalies (see the warnings)", result.anomalies.size());
  return {{"event", "folder_done"}, {"folder", result.name}, {"new", result.new_messages},
          {"flags_updated", result.flags_updated}, {"expunged", result.expunged},
          {"bytes_fetched", result.bytes_fetched}, {"bytes_stored", result.bytes_stored},
          {"failed", failed}, {"text", text}};
}

}  // namespace imapstage::exporting

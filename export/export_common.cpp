#include "export/export_common.h"

#include <algorithm>
#include <limits>

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
  details["policy"] = policy_json(summary.policy);
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

nlohmann::json policy_json(const ExportPolicy& policy) {
  nlohmann::json out = nlohmann::json::object();
  if (!policy.filter.empty()) out["filter"] = policy.filter.to_json();
  if (policy.max_errors) out["max_errors"] = policy.max_errors;
  if (policy.max_bytes_per_second > 0) out["max_bytes_per_second"] = policy.max_bytes_per_second;
  if (policy.max_messages_per_second > 0) out["max_messages_per_second"] = policy.max_messages_per_second;
  return out;
}

ExportSelections::ExportSelections(const archive::Archive& archive, const std::string& account, uint64_t current_run) {
  auto runs = archive.runs();
  std::sort(runs.begin(), runs.end(), [](auto& a, auto& b) { return a.id < b.id; });
  for (auto& run : runs) {
    if (run.kind != "export" || run.account != account || run.id == current_run) continue;
    auto details = nlohmann::json::parse(run.details, nullptr, false);
    if (!details.is_object()) continue;
    MessageFilter filter;
    auto policy = details.value("policy", nlohmann::json::object());
    if (policy.is_object() && policy.contains("filter")) {
      try {
        filter = MessageFilter::from_json(policy["filter"]);
      } catch (const Error&) {
        // Unreadable: count the run as one that may have left anything out.
        filter.larger = std::numeric_limits<uint64_t>::max();
      }
    }
    if (!filter.empty()) filtered_runs_.emplace_back(run.id, filter);
    auto folders = details.value("per_folder", nlohmann::json::array());
    if (!folders.is_array()) continue;
    for (auto& f : folders) {
      if (!f.is_object() || !f.value("finished", false)) continue;
      std::string raw = f.value("raw", "");
      last_filter_[raw] = filter;
      // Left nothing out: no filter, or one that found nothing to leave out
      // (an unchanged folder was not searched, so it says nothing).
      if (filter.empty() || (!f.value("unchanged", false) && f.value("filtered_out", uint64_t{1}) == 0))
        last_whole_[raw] = run.id;
    }
  }
}

MessageFilter ExportSelections::last_filter(const std::string& name_raw) const {
  auto it = last_filter_.find(name_raw);
  return it == last_filter_.end() ? MessageFilter{} : it->second;
}

bool ExportSelections::may_lack(const std::string& name_raw, const MessageFilter& current) const {
  auto it = last_whole_.find(name_raw);
  uint64_t whole = it == last_whole_.end() ? 0 : it->second;
  for (auto& [id, filter] : filtered_runs_)
    if (id > whole && !(filter == current)) return true;
  return false;
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
  if (result.gmail_linked)
    text += fmt::format(", {} recorded by X-GM-MSGID without fetching their bodies again", result.gmail_linked);
  size_t failed = result.failed_uids.size() + result.failed_items.size();
  if (failed) text += fmt::format(", {} not archived", failed);
  if (!result.anomalies.empty()) text += fmt::format(", {} anomalies (see the warnings)", result.anomalies.size());
  return {{"event", "folder_done"}, {"folder", result.name}, {"new", result.new_messages},
          {"flags_updated", result.flags_updated}, {"expunged", result.expunged},
          {"bytes_fetched", result.bytes_fetched}, {"bytes_stored", result.bytes_stored},
          {"gmail_linked", result.gmail_linked}, {"failed", failed}, {"text", text}};
}

}  // namespace imapstage::exporting

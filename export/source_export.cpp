#include "export/source_export.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

#include "archive-format/hash.h"
#include "common/error.h"
#include "common/glob.h"
#include "export/export_common.h"
#include "imap/utf7.h"

namespace imapstage::exporting {

using archive::Archive;
using archive::Batch;
using archive::FolderRecord;
using archive::MessageRecord;
using archive::MessageState;
using sources::SourceFolder;
using sources::SourceMessage;

namespace {

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string joined(const std::vector<std::string>& path) {
  std::string out;
  for (auto& level : path) {
    if (!out.empty()) out += '/';
    out += level;
  }
  return out;
}

bool same_keywords(std::vector<std::string> a, std::vector<std::string> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

// What the first pass decided for one folder, kept until its messages are fetched.
struct FolderPlan {
  FolderRecord folder;                        // as it will be stored (id 0 until first stored)
  bool new_generation = false;
  std::vector<SourceMessage> wanted;          // to fetch, in listing order
  uint64_t wanted_bytes = 0;
  // Identities of the generation's records and whether the listing showed them.
  std::unordered_map<std::string, MessageRecord> archived;
  std::unordered_set<std::string> seen;
  uint32_t next_uid = 1;
  bool listed = false;                        // list() succeeded
};

class SourceExport {
 public:
  SourceExport(Archive* archive, const SourceExportOptions& options, sources::Source& source, EventSink& events,
               ExportSummary& summary)
      : archive_(archive), options_(options), source_(source), events_(events), summary_(summary),
        limits_{options.commit_bytes, options.commit_messages, options.commit_interval} {}

  void run(std::vector<SourceFolder> folders);

 private:
  void run_body(std::vector<SourceFolder> folders);
  void emit(nlohmann::json event) {
    event["account"] = summary_.account;
    events_.emit(event);
  }
  bool too_many_errors() const { return options_.max_errors && failures_ >= options_.max_errors; }
  void check_cancelled(const std::string& folder) {
    if (too_many_errors())
      throw Error(ErrorKind::policy,
                  fmt::format("stopped after {} failed messages (--max-errors {}); what was read is archived",
                              failures_, options_.max_errors),
                  Retry::never, {.account = summary_.account, .folder = folder});
    if (options_.cancelled && options_.cancelled())
      throw Error(ErrorKind::interrupted, "stopped before the export was complete", Retry::later,
                  {.account = summary_.account, .folder = folder});
  }
  void with_retries(const std::string& folder, const std::function<void()>& work);
  void fail_item(FolderResult& result, const std::string& where, const std::string& why);
  // The first pass over folder i: list, compare with the archive, update flags and plan the fetch.
  void plan_folder(size_t i);
  // The second pass: fetch what the plan wants, mark what vanished, store the folder.
  void export_folder(size_t i);
  void folder_error(size_t i, const Error& e);

  Archive* archive_;  // null for --dry-run without an archive
  const SourceExportOptions& options_;
  sources::Source& source_;
  EventSink& events_;
  ExportSummary& summary_;
  CommitLimits limits_;
  Staging staging_;
  uint32_t account_id_ = 0;
  bool run_ended_ = false;
  std::vector<SourceFolder> selected_;
  std::vector<FolderPlan> plans_;
  uint64_t failures_ = 0;  // fail_item calls, for --max-errors
};

void SourceExport::with_retries(const std::string& folder, const std::function<void()>& work) {
  run_with_retries(
      options_.retry, work, [&] { staging_.commit_if_due(limits_, true); },
      [&](const Error& e, int attempt, std::chrono::milliseconds delay) {
        ++summary_.reconnects;
        emit({{"event", "reconnect"}, {"folder", folder}, {"attempt", attempt}, {"delay", delay.count() / 1000.0},
              {"error", e.what()},
              {"text", fmt::format("{}; trying again in {:.1f} s (attempt {} of {})", e.what(),
                                   delay.count() / 1000.0, attempt + 1, options_.retry.max_attempts)}});
      },
      [&] { return staging_.progress_marker; });
}

void SourceExport::fail_item(FolderResult& result, const std::string& where, const std::string& why) {
  ++failures_;
  result.failed_items.emplace_back(where, why);
  emit({{"event", "message_error"}, {"folder", result.name}, {"where", where}, {"error", why},
        {"text", fmt::format("account {}, folder {}, {}: {}", summary_.account, result.name, where, why)}});
}

void SourceExport::folder_error(size_t i, const Error& e) {
  FolderResult& result = summary_.folders[i];
  result.error = e.what();
  emit({{"event", "folder_error"}, {"folder", result.name}, {"error", e.what()},
        {"text", fmt::format("folder {}: {}", result.name, e.what())}});
}

void SourceExport::run(std::vector<SourceFolder> folders) {
  try {
    run_body(std::move(folders));
  } catch (const std::exception& e) {
    if (archive_ && !options_.dry_run && !run_ended_) end_export_run(*archive_, summary_, e.what());
    throw;
  }
}

void SourceExport::run_body(std::vector<SourceFolder> folders) {
  auto started = Clock::now();
  summary_.policy.filter = options_.filter;
  summary_.policy.max_errors = options_.max_errors;
  if (archive_ && !options_.dry_run) {
    staging_.batch = std::make_unique<Batch>(*archive_);
    account_id_ = ensure_account(*archive_, staging_,
                                 {.name = summary_.account, .host = summary_.server, .user = "", .source = source_.kind()});
    summary_.run_id = begin_export_run(*archive_, summary_,
                                       {{"server", summary_.server},
                                        {"source", archive::source_kind_name(source_.kind())}});
  } else if (archive_) {
    if (auto existing = archive_->find_account(summary_.account)) account_id_ = existing->id;
  }

  std::vector<bool> pattern_used(options_.include.size(), false);
  std::unordered_set<std::string> listed;
  for (auto& f : folders) {
    std::string name = joined(f.path);
    if (!listed.insert(imap::utf7_encode(name)).second) {
      // Two files or directories that name the same folder ("a.mbox" and "a/" with messages of its own).
      emit({{"event", "warning"}, {"folder", name}, {"where", f.location},
            {"text", fmt::format("{}: {} names a folder already read from another file or directory; not exported",
                                 name, f.location)}});
      continue;
    }
    for (size_t k = 0; k < options_.include.size(); ++k)
      if (glob_matches(options_.include[k], name)) pattern_used[k] = true;
    if (folder_selected(name, options_.include, options_.exclude)) selected_.push_back(std::move(f));
  }
  for (size_t k = 0; k < options_.include.size(); ++k) {
    if (pattern_used[k]) continue;
    std::string text = fmt::format("--folder '{}' matches no folder of {} ({})", options_.include[k],
                                   summary_.account, summary_.server);
    if (!options_.allow_unmatched) throw Error(ErrorKind::usage, text, Retry::never, {.account = summary_.account});
    emit({{"event", "warning"}, {"pattern", options_.include[k]}, {"text", text}});
  }
  if (staging_.batch && options_.include.empty() && options_.exclude.empty())
    mark_gone_folders(*archive_, *staging_.batch, account_id_, listed, [&](nlohmann::json e) { emit(std::move(e)); });

  summary_.folders.resize(selected_.size());
  plans_.resize(selected_.size());
  for (size_t i = 0; i < selected_.size(); ++i) {
    summary_.folders[i].name = joined(selected_[i].path);
    summary_.folders[i].name_raw = imap::utf7_encode(summary_.folders[i].name);
    summary_.folders[i].noselect = selected_[i].noselect;
  }

  // First pass: every folder listed and compared, so the totals are known before any message is read.
  uint64_t messages_total = 0, bytes_total = 0;
  for (size_t i = 0; i < selected_.size(); ++i) {
    check_cancelled(summary_.folders[i].name);
    plan_folder(i);
    messages_total += plans_[i].wanted.size();
    bytes_total += plans_[i].wanted_bytes;
    staging_.commit_if_due(limits_);
  }
  if (!options_.dry_run)
    emit({{"event", "totals"}, {"command", "export"}, {"folders", selected_.size()},
          {"messages_total", messages_total}, {"bytes_total", bytes_total}});

  // Second pass: the messages.
  for (size_t i = 0; i < selected_.size() && !options_.dry_run; ++i) {
    if (!plans_[i].listed) continue;
    check_cancelled(summary_.folders[i].name);
    export_folder(i);
    plans_[i] = {};  // its memory
  }
  staging_.commit_if_due(limits_, true);

  summary_.seconds = seconds_since(started);
  if (archive_ && !options_.dry_run) {
    run_ended_ = true;
    end_export_run(*archive_, summary_);
  }
}

void SourceExport::plan_folder(size_t i) {
  const SourceFolder& source_folder = selected_[i];
  FolderResult& result = summary_.folders[i];
  FolderPlan& plan = plans_[i];

  std::optional<FolderRecord> stored;
  if (archive_ && account_id_) stored = archive_->find_folder(account_id_, result.name_raw);
  FolderRecord& folder = plan.folder;
  folder = stored ? *stored : FolderRecord{};
  folder.account_id = account_id_;
  folder.name_raw = result.name_raw;
  folder.name_utf8 = result.name;
  folder.delimiter = '/';
  folder.ns_kind = archive::NamespaceKind::personal;
  folder.ns_prefix.clear();
  folder.path = source_folder.path;
  folder.attributes = source_folder.attributes;
  folder.subscribed = !source_folder.noselect;
  folder.noselect = source_folder.noselect;
  folder.gone = false;
  if (source_folder.noselect) {
    if (staging_.batch) staging_.batch->put_folder(folder);
    emit({{"event", "folder_done"}, {"folder", result.name}, {"noselect", true},
          {"text", fmt::format("{}: no messages (a folder of folders)", result.name)}});
    return;
  }

  sources::Listing listing;
  try {
    with_retries(result.name, [&] { listing = source_.list(source_folder); });
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::interrupted || e.kind() == ErrorKind::auth) throw;
    folder_error(i, e);  // an unreadable folder is reported; the others go on
    return;
  }
  plan.listed = true;
  if (!listing.note.empty())
    emit({{"event", "info"}, {"folder", result.name}, {"note", listing.note},
          {"text", fmt::format("{}: {}", result.name, listing.note)}});
  for (auto& p : listing.problems) fail_item(result, p.where, p.what);

  // The generation: the source's UIDVALIDITY, or the one chosen at the first export.
  uint32_t uidvalidity = folder.uidvalidity;
  if (source_folder.uidvalidity != 0 && folder.uidvalidity != 0 && source_folder.uidvalidity != folder.uidvalidity) {
    plan.new_generation = true;
    result.uidvalidity_changed = true;
    emit({{"event", "warning"}, {"folder", result.name},
          {"text", fmt::format("{}: UIDVALIDITY changed from {} to {}; exporting the folder again, the old "
                               "generation stays in the archive", result.name, folder.uidvalidity,
                               source_folder.uidvalidity)}});
    if (staging_.batch && folder.id)
      archive_->for_each_message(account_id_, folder.id, folder.uidvalidity, [&](const MessageRecord& r) {
        mark_expunged(*staging_.batch, r);
        return true;
      });
    uidvalidity = source_folder.uidvalidity;
    folder.uidnext = 0;
  } else if (uidvalidity == 0) {
    uidvalidity = source_folder.uidvalidity ? source_folder.uidvalidity
                                            : static_cast<uint32_t>(std::max<int64_t>(1, unix_now() & 0xffffffff));
  }
  folder.uidvalidity = uidvalidity;
  result.uidvalidity = uidvalidity;
  result.server_messages = listing.messages.size();

  // What the archive holds of this generation, by identity.
  plan.next_uid = std::max<uint32_t>(1, folder.uidnext);
  if (folder.id && !plan.new_generation && archive_)
    archive_->for_each_message(account_id_, folder.id, uidvalidity, [&](const MessageRecord& r) {
      plan.next_uid = std::max(plan.next_uid, r.key.uid + 1);
      if (!r.source_id.empty()) plan.archived.emplace(r.source_id, r);
      return true;
    });

  const uint64_t max_size = options_.max_message_size;
  for (auto& m : listing.messages) {
    if (!m.id.empty()) {
      if (!plan.seen.insert(m.id).second) {
        fail_item(result, m.id, "the source listed this message twice; the second is not archived");
        continue;
      }
      auto it = plan.archived.find(m.id);
      if (it != plan.archived.end()) {
        // Archived before: flags may have changed, and a message marked expunged may be back.
        MessageRecord& r = it->second;
        bool flags_changed = r.flags != m.flags || !same_keywords(r.keywords, m.keywords);
        bool back = r.state == MessageState::expunged;
        if ((flags_changed || back) && staging_.batch) {
          r.flags = m.flags;
          r.keywords = m.keywords;
          r.state = MessageState::present;
          staging_.batch->put_message(r);
          staging_.commit_if_due(limits_);
        }
        if (flags_changed) ++result.flags_updated;
        continue;
      }
    }
    // The filter on what the listing knows: the size, and the date when it
    // has one (an unknown date passes here and is checked once read). A
    // message without an identity is known only by its bytes: it is read
    // first, so that one archived earlier is recognised, not taken for gone.
    const MessageFilter& filter = options_.filter;
    int64_t date = m.internaldate ? *m.internaldate : filter.since.value_or(0);
    if (!filter.empty() && !m.id.empty() && !filter.matches(date, m.size)) {
      ++result.filtered_out;
      continue;
    }
    if (m.size > max_size) {
      fail_item(result, m.id.empty() ? fmt::format("message {}", m.locator) : m.id,
                fmt::format("{} bytes is over the maximum message size of {} bytes (--max-message-size); not read",
                            m.size, max_size));
      continue;
    }
    plan.wanted_bytes += m.size;
    plan.wanted.push_back(std::move(m));
  }
  result.to_fetch = plan.wanted.size();
  result.to_fetch_bytes = plan.wanted_bytes;
  if (options_.dry_run)
    emit({{"event", "folder_done"}, {"folder", result.name}, {"dry_run", true},
          {"messages", result.to_fetch}, {"bytes", result.to_fetch_bytes},
          {"text", fmt::format("{}: {} of {} messages to read, {} bytes", result.name, result.to_fetch,
                               result.server_messages, result.to_fetch_bytes)}});
}

// Runs a source's fetch() on a thread of its own and hands what it delivers
// to the calling thread in order, holding at most kReadAheadBytes of
// messages (always at least one), so that reading the source overlaps
// hashing, compressing and writing. The source is still used by one thread
// at a time.
class ReadAhead : public sources::FetchSink {
 public:
  static constexpr uint64_t kReadAheadBytes = 16ull << 20;
  struct Item {
    const SourceMessage* message = nullptr;
    std::optional<sources::FetchedMessage> fetched;
    archive::Hash hash{};  // of fetched->bytes, computed on the reading thread
    std::optional<Error> error;
  };

  // Producer side (the fetch thread).
  void deliver(const SourceMessage& message, sources::FetchedMessage&& fetched) override {
    uint64_t size = fetched.bytes.size();
    archive::Hash hash = archive::sha256(fetched.bytes);
    push({&message, std::move(fetched), hash, std::nullopt}, size);
  }
  void failed(const SourceMessage& message, const Error& error) override { push({&message, std::nullopt, {}, error}, 0); }
  bool stop() override { return stopping_; }
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    cv_.notify_all();
  }

  // Consumer side. False once the producer closed and everything was taken.
  bool pop(Item& out) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !items_.empty() || closed_; });
    if (items_.empty()) return false;
    out = std::move(items_.front().first);
    bytes_ -= items_.front().second;
    items_.pop_front();
    cv_.notify_all();
    return true;
  }
  // Asks the producer to stop at the next message, and stops waiting for room.
  void request_stop() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    items_.clear();
    bytes_ = 0;
    cv_.notify_all();
  }

 private:
  void push(Item&& item, uint64_t size) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return stopping_ || items_.empty() || bytes_ + size <= kReadAheadBytes; });
    if (stopping_) return;
    items_.emplace_back(std::move(item), size);
    bytes_ += size;
    cv_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::pair<Item, uint64_t>> items_;
  uint64_t bytes_ = 0;
  bool closed_ = false;
  std::atomic<bool> stopping_{false};
};

void SourceExport::export_folder(size_t i) {
  const SourceFolder& source_folder = selected_[i];
  FolderResult& result = summary_.folders[i];
  FolderPlan& plan = plans_[i];
  FolderRecord& folder = plan.folder;
  Batch& batch = *staging_.batch;
  if (folder.id == 0) batch.put_folder(folder);  // assigns the id

  const size_t count = selected_.size();
  emit({{"event", "folder_start"}, {"folder", result.name}, {"folder_index", i + 1}, {"folders", count},
        {"messages_total", plan.wanted.size()}, {"bytes_total", plan.wanted_bytes}});
  auto started = Clock::now();
  auto last_progress = Clock::now() - std::chrono::seconds(1);
  uint64_t done = 0, done_bytes = 0;
  auto progress = [&](bool final) {
    emit({{"event", "progress"}, {"folder", result.name}, {"folder_index", i + 1}, {"folders", count},
          {"messages", done}, {"messages_total", plan.wanted.size()}, {"bytes", done_bytes},
          {"bytes_total", plan.wanted_bytes}, {"elapsed", seconds_since(started)}, {"final", final}});
  };
  const uint64_t stored_before = batch.stored_bytes();
  const uint64_t late_before = batch.late_duplicate_bytes();
  std::map<archive::Hash, uint32_t> occurrences;  // content identities: n-th message with these bytes
  bool content_failed = false;
  size_t next = 0;  // wanted[next] is the first not yet delivered or failed (a retry resumes there)

  std::exception_ptr archive_failure;  // stops the fetch; rethrown after it
  std::exception_ptr hook_stop;        // after_message threw: stops the fetch, rethrown after a commit
  auto store = [&](const SourceMessage& m, sources::FetchedMessage&& fetched, const archive::Hash& hash) {
    ++next;
    ++done;
    done_bytes += m.size;
    MessageRecord record;
    record.hash = hash;
    std::string id = m.id;
    if (id.empty()) {
      id = fmt::format("sha256:{}#{}", archive::to_hex(record.hash), ++occurrences[record.hash]);
      if (!plan.seen.insert(id).second) return;
      if (auto it = plan.archived.find(id); it != plan.archived.end()) {
        // Known by its bytes: archived before.
        if (it->second.state == MessageState::expunged) {
          it->second.state = MessageState::present;
          batch.put_message(it->second);
        }
        return;
      }
    }
    if (fetched.internaldate) {
      record.internaldate = *fetched.internaldate;
      record.internaldate_tz = fetched.internaldate_tz;
      record.date_source = fetched.date_source;
    } else if (m.internaldate) {
      record.internaldate = *m.internaldate;
      record.internaldate_tz = m.internaldate_tz;
      record.date_source = m.date_source;
    } else {
      record.internaldate = unix_now();
      record.date_source = archive::DateSource::fetch_time;
    }
    if (!options_.filter.matches(record.internaldate, m.size)) {  // a date only reading could tell
      ++result.filtered_out;
      return;
    }
    record.key = {account_id_, folder.id, folder.uidvalidity, plan.next_uid++};
    record.flags = m.flags;
    record.keywords = m.keywords;
    record.size = fetched.bytes.size();
    record.source_id = std::move(id);
    record.state = MessageState::present;
    for (auto& a : fetched.anomalies) {
      result.anomalies.emplace_back(record.key.uid, a);
      emit({{"event", "warning"}, {"folder", result.name}, {"uid", record.key.uid}, {"where", record.source_id},
            {"anomaly", a},
            {"text", fmt::format("account {}, folder {}, {}: {}", summary_.account, result.name, record.source_id,
                                 a)}});
    }
    bool fresh = batch.put_object(record.hash, fetched.bytes);
    batch.put_message(record);
    if (!fresh) result.bytes_deduplicated += record.size;
    result.bytes_fetched += record.size;
    ++result.new_messages;
    // UIDs handed out are kept even if the folder record is not stored yet (a crash): the
    // next run starts above the largest archived UID.
    folder.uidnext = plan.next_uid;
    staging_.commit_if_due(limits_);
    if (options_.after_message) {
      try {
        options_.after_message(record.size);
      } catch (...) {
        hook_stop = std::current_exception();  // after a commit, once the fetch has stopped
      }
    }
    if (Clock::now() - last_progress > std::chrono::milliseconds(250)) {
      last_progress = Clock::now();
      progress(false);
    }
  };
  auto deliver = [&](const SourceMessage& m, sources::FetchedMessage&& fetched, const archive::Hash& hash) {
    if (archive_failure) return;
    try {
      store(m, std::move(fetched), hash);
    } catch (...) {
      archive_failure = std::current_exception();
    }
  };
  auto failed = [&](const SourceMessage& m, const Error& e) {
    ++next;
    if (m.id.empty()) content_failed = true;
    std::string where = !e.where().file.empty() ? e.where().file
                        : !m.id.empty()         ? m.id
                                                : fmt::format("message {}", m.locator + 1);
    fail_item(result, where, e.message());
  };
  bool stopped = false;
  auto stop = [&] {
    if ((options_.cancelled && options_.cancelled()) || too_many_errors()) stopped = true;
    return stopped || archive_failure != nullptr || hook_stop != nullptr;
  };
  // Reads what is left of the plan through a ReadAhead; a retry (after a dropped connection) starts
  // again after the last message handed over.
  auto fetch_rest = [&] {
    std::vector<const SourceMessage*> wanted;
    wanted.reserve(plan.wanted.size() - next);
    for (size_t k = next; k < plan.wanted.size(); ++k) wanted.push_back(&plan.wanted[k]);
    if (wanted.empty()) return;
    ReadAhead pipe;
    std::exception_ptr source_error;
    std::thread reader([&] {
      try {
        source_.fetch(source_folder, wanted, options_.max_message_size, pipe);
      } catch (...) {
        source_error = std::current_exception();
      }
      pipe.close();
    });
    struct Join {
      ReadAhead& pipe;
      std::thread& reader;
      ~Join() {
        if (!reader.joinable()) return;
        pipe.request_stop();
        reader.join();
      }
    } join{pipe, reader};
    ReadAhead::Item item;
    while (pipe.pop(item)) {
      if (item.fetched) deliver(*item.message, std::move(*item.fetched), item.hash);
      else failed(*item.message, *item.error);
      if (stop()) pipe.request_stop();
    }
    pipe.request_stop();
    reader.join();
    reader = std::thread();
    if (source_error) std::rethrow_exception(source_error);
  };
  try {
    with_retries(result.name, fetch_rest);
  } catch (const Error& e) {
    if (archive_failure) std::rethrow_exception(archive_failure);
    if (hook_stop) {
      staging_.commit_if_due(limits_, true);
      std::rethrow_exception(hook_stop);
    }
    if (e.kind() == ErrorKind::interrupted || e.kind() == ErrorKind::auth) throw;
    staging_.commit_if_due(limits_, true);  // what arrived is kept
    folder_error(i, e);
    return;
  }
  if (archive_failure) std::rethrow_exception(archive_failure);
  if (hook_stop) {
    staging_.commit_if_due(limits_, true);  // the message that spent the budget is kept
    std::rethrow_exception(hook_stop);
  }
  if (stopped) {
    staging_.commit_if_due(limits_, true);
    check_cancelled(result.name);
  }
  // Anything the source promised but neither delivered nor reported.
  for (size_t k = next; k < plan.wanted.size(); ++k) {
    if (plan.wanted[k].id.empty()) content_failed = true;
    fail_item(result, plan.wanted[k].id, "the source listed this message but did not deliver it");
  }
  progress(true);
  batch.close_group();
  result.bytes_stored = batch.stored_bytes() - stored_before;
  result.bytes_deduplicated += batch.late_duplicate_bytes() - late_before;

  // Identities the source no longer lists: kept, marked expunged. A message
  // known only by its bytes that could not be read leaves them all in place.
  if (content_failed) {
    emit({{"event", "warning"}, {"folder", result.name},
          {"text", fmt::format("{}: messages known only by their bytes could not all be read; none is marked "
                               "expunged this time", result.name)}});
  } else {
    for (auto& [id, record] : plan.archived)
      if (!plan.seen.count(id) && mark_expunged(batch, record)) ++result.expunged;
  }

  folder.uidnext = plan.next_uid;
  folder.last_export = unix_now();
  batch.put_folder(folder);
  staging_.commit_if_due(limits_);
  result.finished = true;  // read to the end: the run history's selection for the folder (ExportSelections)
  emit(folder_done_event(result));
}

ExportSummary make_summary(const SourceExportOptions& options, const sources::Source& source) {
  if (options.account_name.empty())
    throw Error(ErrorKind::usage, fmt::format("give --account NAME: the name the {} source {} is archived under",
                                              archive::source_kind_name(source.kind()), source.location()));
  ExportSummary summary;
  summary.account = options.account_name;
  summary.server = source.location();
  summary.source = source.kind();
  summary.dry_run = options.dry_run;
  return summary;
}

}  // namespace

ExportSummary export_source(Archive& archive, const SourceExportOptions& options, sources::Source& source,
                            EventSink& events) {
  ExportSummary summary = make_summary(options, source);
  try {
    auto folders = source.folders();
    SourceExport(&archive, options, source, events, summary).run(std::move(folders));
  } catch (const Error& e) {
    throw e.with({.account = summary.account});
  }
  events.emit(summary.to_json());
  return summary;
}

ExportSummary run_source_export(const SourceExportOptions& options, sources::Source& source, EventSink& events) {
  ExportSummary summary = make_summary(options, source);
  try {
    // The source first: one that cannot be read leaves no trace in the archive.
    auto folders = source.folders();
    std::unique_ptr<Archive> archive;
    if (options.dry_run) {
      std::error_code ec;
      if (std::filesystem::exists(options.archive_dir / "FORMAT", ec))
        archive = Archive::open(options.archive_dir, Archive::Mode::read, options.archive_options);
    } else {
      archive = Archive::open(options.archive_dir, Archive::Mode::create, options.archive_options);
    }
    SourceExport(archive.get(), options, source, events, summary).run(std::move(folders));
  } catch (const Error& e) {
    throw e.with({.account = summary.account});
  }
  events.emit(summary.to_json());
  return summary;
}

}  // namespace imapstage::exporting

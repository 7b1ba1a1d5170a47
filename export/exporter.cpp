#include "export/exporter.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <numeric>
#include <thread>
#include <unordered_set>

#include <fmt/format.h>

#include "common/error.h"
#include "common/glob.h"
#include "common/rate_limit.h"
#include "imap/mailbox_names.h"
#include "common/retry.h"
#include "export/export_common.h"

namespace imapstage::exporting {

using archive::Archive;
using archive::Batch;
using archive::FolderRecord;
using archive::MessageRecord;
using archive::MessageState;

namespace {

// Compressed messages the lanes of one account hold in memory before they
// commit them, all together: each lane's batch holds an equal share, between
// kMinHeldBytes and kMaxHeldBytes (a batch's default). One or two lanes hold
// 8 MiB each; the four of a far link hold 4 MiB each, no more than two.
constexpr uint64_t kHeldBytes = 16ull << 20;
constexpr uint64_t kMinHeldBytes = 2ull << 20;
constexpr uint64_t kMaxHeldBytes = 8ull << 20;

static_assert(static_cast<int>(archive::NamespaceKind::other_users) == imap::Namespace::other_users &&
              static_cast<int>(archive::NamespaceKind::shared) == imap::Namespace::shared);

std::string canonical_name(const imap::Placement& placed) {
  FolderRecord f;
  f.ns_kind = static_cast<archive::NamespaceKind>(placed.kind);
  f.path = placed.path;
  return f.canonical_name();
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::unique_ptr<imap::Session> connect_and_login(const ExportOptions& options) {
  auto session = imap::Session::connect(options.endpoint);
  session->login(options.credentials);
  return session;
}

// Sorted difference a \ b of two sorted vectors.
std::vector<uint32_t> minus(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  std::vector<uint32_t> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

bool same_flags(const MessageRecord& r, uint32_t bits, const std::vector<std::string>& keywords) {
  if (r.flags != bits) return false;
  auto a = r.keywords, b = keywords;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

// A message body too large to hold, spooled as it arrives (Batch::spool).
struct SpoolSink final : imap::BodySink {
  explicit SpoolSink(archive::FrameSpool s) : spool(std::move(s)) {}
  void write(std::string_view piece) override { spool.write(piece); }
  archive::FrameSpool spool;
};

// One connection's share of an account's export: its session, and the
// batch that what it fetches is staged in. Lanes take whole folders.
struct Lane : Staging {
  std::unique_ptr<imap::Session> session;
};

// The state of one account's export while it runs.
class AccountExport {
 public:
  AccountExport(Archive* archive, const ExportOptions& options, EventSink& events, ExportSummary& summary)
      : archive_(archive), options_(options), events_(events), summary_(summary),
        limiter_(options.policy.max_bytes_per_second, options.policy.max_messages_per_second) {}

  void run(std::unique_ptr<imap::Session> session);

 private:
  // The run itself; run() records it as failed in the history when it throws before the end.
  void run_body(std::unique_ptr<imap::Session> session);
  bool run_ended_ = false;  // end_run was called
  void ensure_session(Lane& lane);
  void drop_session(Lane& lane);
  // Runs `work` with reconnects: a dropped connection commits what was
  // received, waits, reconnects and calls `work` again, which resumes from
  // the archive. Gives up after max_attempts failures in a row without progress.
  void with_retries(Lane& lane, const std::string& folder, const std::function<void()>& work);
  // Exports (or plans) folder `index` of `selected_` on `lane`. Returns false
  // when the whole run has to stop (the error is kept in fatal_); a folder
  // the server refuses is reported and the lane goes on.
  bool export_one(Lane& lane, size_t index);
  // Takes folders until none is left or the run stops, then commits.
  void run_lane(Lane& lane);
  void export_folder(Lane& lane, const imap::ListEntry& entry, FolderResult& result, size_t index, size_t count);
  void plan_folder(Lane& lane, size_t index, FolderResult& result);
  // Gmail with All Mail selected: folder `index` (a label, not Spam or Trash,
  // which Gmail keeps out of All Mail) links its messages to bodies from All
  // Mail instead of fetching them, so totals and --dry-run count it as links.
  bool gmail_links(size_t index) const;
  // The size pass before the folders are exported, shared out among the lanes
  // like the folders: for every selected folder the UIDs the archive lacks and
  // their sizes (one UID SEARCH and FETCH RFC822.SIZE per folder, none for a
  // folder CONDSTORE shows unchanged). Returns once every folder is sized (the
  // lane that sizes the last one emits a "totals" event with the account's
  // messages and bytes to fetch) or the run stops.
  void size_pass(Lane& lane);
  // Counts folder `i` as sized; the last one emits "totals" and wakes the lanes.
  void sized(size_t i);
  // The size pass of folder `i` of selected_ into sized_[i].
  void size_folder(Lane& lane, size_t i);
  // The UIDs the archive holds for folder `folder_id` (0: none yet) in
  // generation `uidvalidity`, from one pass over its records: every one, and
  // the present ones (both ascending).
  struct ArchivedUids {
    std::vector<uint32_t> all, present;
  };
  ArchivedUids archived_uids(uint32_t folder_id, uint32_t uidvalidity) const;
  // How many of the folder's archived messages are present (as
  // archived_uids(...).present.size(), from the index's counts).
  uint64_t archived_present(uint32_t folder_id, uint32_t uidvalidity) const;
  void commit_if_due(Lane& lane, bool force = false);
  void emit(nlohmann::json event);
  // Reports (event and summary) what the server sent for one message that could not be kept as sent.
  void note_anomalies(FolderResult& result, uint32_t uid, const std::vector<std::string>& anomalies);
  void check_cancelled(const std::string& folder);
  // Of `candidates` (ascending UIDs the archive lacks), those the filter
  // leaves out go to `left_out` (ascending), the sizes of the others the
  // server reports to `sizes`: a UID SEARCH over their range, then the exact
  // check on each one's INTERNALDATE and RFC822.SIZE. Without a filter,
  // every candidate's size.
  void select(imap::Session& session, const std::string& folder, const std::vector<uint32_t>& candidates,
              std::vector<std::pair<uint32_t, uint64_t>>& sizes, std::vector<uint32_t>& left_out);
  // Whether folder `name_raw` may be skipped when STATUS shows it unchanged
  // (no run with another filter left messages out since it was last taken whole).
  bool may_skip(const std::string& name_raw) const {
    return !history_ || !history_->may_lack(name_raw, options_.policy.filter);
  }
  // Counts one failed message towards --max-errors.
  void count_failure() { ++failures_; }
  void keep_fatal(std::exception_ptr error);

  Archive* archive_;  // null for --dry-run without an archive
  const ExportOptions& options_;
  EventSink& events_;
  ExportSummary& summary_;
  uint32_t account_id_ = 0;
  std::vector<imap::ListEntry> selected_;
  std::vector<imap::Placement> placed_;  // where each of selected_ sits in the server's namespaces
  // Per folder of selected_, what the size pass saw: the UIDVALIDITY and the
  // size of each UID to fetch (sorted); export_folder asks only for the others.
  struct Sized {
    uint32_t uidvalidity = 0;
    std::vector<std::pair<uint32_t, uint64_t>> sizes;
    std::vector<uint32_t> left_out;  // UIDs the filter leaves out (ascending)
    // STATUS showed the folder unchanged (its messages on the server): the
    // export pass takes that answer instead of asking and counting again.
    std::optional<uint64_t> unchanged_messages;
  };
  std::vector<Sized> sized_;
  bool sizing_ = false;                  // a size pass precedes the export (not for --dry-run)
  std::atomic<size_t> next_size_{0};     // the next index of selected_ a lane sizes
  size_t sized_count_ = 0;               // folders sized (guarded by ready_mutex_)
  // Extra lanes log in while the first lists the folders, then wait for this.
  std::mutex ready_mutex_;
  std::condition_variable ready_cv_;
  bool ready_ = false;                   // selected_ and the archive are set up (or the run stopped)
  void release_lanes();
  std::atomic<size_t> next_folder_{0};   // the next position in order_ a lane takes
  // The order lanes take folders in: LIST order, or with several lanes and a
  // size pass, the most bytes to fetch first (so no lane is left alone with a
  // big folder at the end while the others have finished).
  std::vector<size_t> order_;
  int lane_count_ = 1;
  // A batch for one lane, holding its share of kHeldBytes.
  std::unique_ptr<Batch> new_batch() {
    auto batch = std::make_unique<Batch>(*archive_);
    batch->hold_at_most(std::clamp<uint64_t>(kHeldBytes / std::max(1, lane_count_), kMinHeldBytes, kMaxHeldBytes));
    return batch;
  }
  std::atomic<bool> stop_{false};        // a lane failed for good: the others stop too
  std::atomic<int> reconnects_{0};
  std::mutex fatal_mutex_;
  std::exception_ptr fatal_;             // the first error that stopped the run
  std::unique_ptr<ExportSelections> history_;  // earlier runs' selections (null without an archive)
  RateLimiter limiter_;                        // --max-bandwidth, --max-messages-per-second: every lane
  std::atomic<uint64_t> failures_{0};          // messages failed in this run, every lane

  // Gmail (X-GM-EXT-1): each body once, keyed by X-GM-MSGID.
  struct GmailKnown {
    archive::Hash hash{};
    uint64_t size = 0;
    int64_t internaldate = 0;
    int32_t internaldate_tz = 0;
    uint64_t thrid = 0;
    std::vector<std::string> labels;
  };
  bool gmail_ = false;
  size_t all_mail_ = SIZE_MAX;           // the \All folder's index in selected_, if selected
  bool all_mail_done_ = false;           // exported (or failed); guarded by ready_mutex_
  mutable std::mutex gmail_mutex_;
  std::unordered_map<uint64_t, GmailKnown> gmail_known_;  // every archived message of the account by X-GM-MSGID
  // Reads the account's records with an X-GM-MSGID into gmail_known_.
  void load_gmail_known();
  void remember_gmail(const MessageRecord& r);
  std::optional<GmailKnown> gmail_known(uint64_t msgid) const {
    std::lock_guard lock(gmail_mutex_);
    auto it = gmail_known_.find(msgid);
    if (it == gmail_known_.end()) return std::nullopt;
    return it->second;
  }
  // Puts All Mail first in order_.
  void all_mail_first() {
    auto it = std::find(order_.begin(), order_.end(), all_mail_);
    if (it != order_.end()) std::rotate(order_.begin(), it, it + 1);
  }
  // Gmail: in folder `index` (lane's session, folder selected), records
  // the UIDs of `wanted` whose X-GM-MSGID the archive has (without their
  // bodies) and takes them out of `wanted`.
  void link_gmail(Lane& lane, const FolderRecord& folder, FolderResult& result, std::vector<uint32_t>& wanted);
};

void AccountExport::remember_gmail(const MessageRecord& r) {
  if (!r.gm_msgid) return;
  std::lock_guard lock(gmail_mutex_);
  auto& k = gmail_known_[r.gm_msgid];
  k.hash = r.hash;
  k.size = r.size;
  k.internaldate = r.internaldate;
  k.internaldate_tz = r.internaldate_tz;
  k.thrid = r.gm_thrid;
  if (!r.gm_labels.empty() || k.labels.empty()) k.labels = r.gm_labels;
}

void AccountExport::load_gmail_known() {
  if (!archive_ || !account_id_) return;
  for (auto& f : archive_->folders(account_id_))
    archive_->for_each_message(account_id_, f.id, std::nullopt, [&](const MessageRecord& r) {
      remember_gmail(r);
      return true;
    });
}

void AccountExport::link_gmail(Lane& lane, const FolderRecord& folder, FolderResult& result,
                               std::vector<uint32_t>& wanted) {
  std::vector<uint32_t> linked;
  for (auto& ranges : uid_batches(wanted, options_.fetch_batch))
    lane.session->fetch_gmail_ids(ranges, [&](imap::FlagUpdate&& u) {
      if (!std::binary_search(wanted.begin(), wanted.end(), u.uid)) return;
      if (!linked.empty() && linked.back() == u.uid) return;
      auto known = gmail_known(u.gm_msgid);
      if (!known) return;
      note_anomalies(result, u.uid, u.anomalies);
      MessageRecord record;
      record.key = {account_id_, folder.id, folder.uidvalidity, u.uid};
      record.hash = known->hash;
      archive::parse_flags(u.flags, record.flags, record.keywords);
      record.internaldate = known->internaldate;
      record.internaldate_tz = known->internaldate_tz;
      record.size = known->size;
      record.modseq = u.modseq;
      record.state = MessageState::present;
      record.gm_msgid = u.gm_msgid;
      record.gm_thrid = known->thrid;
      record.gm_labels = known->labels;
      lane.batch->put_message(record);
      linked.push_back(u.uid);
      ++result.gmail_linked;
      commit_if_due(lane);
    });
  std::sort(linked.begin(), linked.end());
  linked.erase(std::unique(linked.begin(), linked.end()), linked.end());
  wanted = minus(wanted, linked);
}

void AccountExport::emit(nlohmann::json event) {
  event["account"] = summary_.account;
  events_.emit(event);
}

void AccountExport::note_anomalies(FolderResult& result, uint32_t uid, const std::vector<std::string>& anomalies) {
  for (auto& a : anomalies) {
    result.anomalies.emplace_back(uid, a);
    emit({{"event", "warning"}, {"folder", result.name}, {"uid", uid}, {"anomaly", a},
          {"text", fmt::format("account {}, folder {}, UID {}: the server sent {}", summary_.account, result.name,
                               uid, a)}});
  }
}

void AccountExport::check_cancelled(const std::string& folder) {
  if (options_.policy.max_errors && failures_ >= options_.policy.max_errors)
    throw Error(ErrorKind::policy,
                fmt::format("stopped after {} failed messages (--max-errors {}); what was fetched is archived",
                            failures_.load(), options_.policy.max_errors),
                Retry::never, {.account = summary_.account, .folder = folder});
  if ((options_.cancelled && options_.cancelled()) || stop_)
    throw Error(ErrorKind::interrupted, "stopped before the export was complete", Retry::later,
                {.account = summary_.account, .folder = folder});
}

void AccountExport::keep_fatal(std::exception_ptr error) {
  {
    std::lock_guard lock(fatal_mutex_);
    if (!fatal_) fatal_ = error;
    stop_ = true;
  }
  std::lock_guard lock(ready_mutex_);  // lanes waiting for the size pass see stop_
  ready_cv_.notify_all();
}

void AccountExport::ensure_session(Lane& lane) {
  if (!lane.session) lane.session = connect_and_login(options_);
}

void AccountExport::drop_session(Lane& lane) {
  if (lane.session) {
    try {
      lane.session->logout();
    } catch (...) {
    }
    lane.session.reset();
  }
}

void AccountExport::commit_if_due(Lane& lane, bool force) {
  lane.commit_if_due({options_.commit_bytes, options_.commit_messages, options_.commit_interval}, force);
}

void AccountExport::with_retries(Lane& lane, const std::string& folder, const std::function<void()>& work) {
  run_with_retries(
      options_.retry, [&] {
        ensure_session(lane);
        work();
      },
      [&] {
        // Keep every message that arrived whole, then start over from the archive.
        commit_if_due(lane, true);
        drop_session(lane);
      },
      [&](const Error& e, int attempt, std::chrono::milliseconds delay) {
        ++reconnects_;
        emit({{"event", "reconnect"},
              {"folder", folder},
              {"attempt", attempt},
              {"delay", delay.count() / 1000.0},
              {"error", e.what()},
              {"text", fmt::format("{}; reconnecting in {:.1f} s (attempt {} of {})", e.what(),
                                   delay.count() / 1000.0, attempt + 1, options_.retry.max_attempts)}});
      },
      [&] { return lane.progress_marker; });
}

void AccountExport::release_lanes() {
  {
    std::lock_guard lock(ready_mutex_);
    ready_ = true;
  }
  ready_cv_.notify_all();
}

void AccountExport::run(std::unique_ptr<imap::Session> session) {
  try {
    run_body(std::move(session));
  } catch (const std::exception& e) {
    if (archive_ && !options_.dry_run && !run_ended_) end_export_run(*archive_, summary_, e.what());
    throw;
  }
}

void AccountExport::run_body(std::unique_ptr<imap::Session> session) {
  auto started = Clock::now();
  if (!session) session = connect_and_login(options_);  // login before anything touches the archive
  gmail_ = session->has_capability("X-GM-EXT-1");
  if (std::string provider = session->detected_provider(); !provider.empty()) {
    std::string applied = options_.on_provider && !options_.dry_run ? options_.on_provider(provider) : "";
    emit({{"event", "provider"}, {"provider", provider}, {"detected", true}, {"applied", applied},
          {"text", fmt::format("{} is {} (X-GM-EXT-1): its provider profile applies{}{}", summary_.server, provider,
                               applied.empty() ? "" : ": ", applied)}});
  }
  int connections = options_.connections;
  if (connections <= 0) {
    auto t0 = Clock::now();
    session->noop();
    auto round_trip = Clock::now() - t0;
    connections = round_trip >= kFarRoundTrip ? 4 : 2;
    emit({{"event", "connections"}, {"connections", connections},
          {"round_trip_ms", std::chrono::duration<double, std::milli>(round_trip).count()},
          {"text", fmt::format("{} connections (a round trip takes {:.1f} ms)", connections,
                               std::chrono::duration<double, std::milli>(round_trip).count())}});
  }
  lane_count_ = connections;
  std::vector<Lane> lanes(static_cast<size_t>(connections));  // never resized
  Lane& first = lanes[0];
  first.session = std::move(session);

  // The extra connections log in meanwhile. Should this thread fail before
  // they are released, they are stopped and joined on the way out.
  std::vector<std::thread> threads;
  struct Joiner {
    AccountExport& self;
    std::vector<std::thread>& threads;
    ~Joiner() {
      bool running = std::any_of(threads.begin(), threads.end(), [](auto& t) { return t.joinable(); });
      if (!running) return;
      self.stop_ = true;
      self.release_lanes();
      for (auto& t : threads)
        if (t.joinable()) t.join();
    }
  } joiner{*this, threads};
  for (size_t k = 1; k < lanes.size(); ++k) threads.emplace_back([this, &lane = lanes[k]] { run_lane(lane); });

  if (archive_ && !options_.dry_run) {
    first.batch = new_batch();
    account_id_ = ensure_account(*archive_, first, {.name = summary_.account, .host = options_.endpoint.host,
                                                   .user = options_.credentials.user});
    history_ = std::make_unique<ExportSelections>(*archive_, summary_.account);
    summary_.run_id = begin_export_run(*archive_, summary_,
                                       {{"server", summary_.server}, {"user", options_.credentials.user}});
    if (gmail_) load_gmail_known();
  } else if (archive_) {
    if (auto existing = archive_->find_account(summary_.account)) account_id_ = existing->id;
  }

  std::vector<imap::ListEntry> entries;
  std::vector<imap::Namespace> namespaces;
  with_retries(first, "", [&] {
    entries = first.session->list();
    namespaces = first.session->namespaces();
  });

  std::vector<bool> pattern_used(options_.include.size(), false);
  size_t outside = 0;
  for (auto& entry : entries) {
    imap::Placement placed = imap::place_mailbox(entry.name_raw, entry.delimiter, namespaces);
    if (placed.path.empty()) continue;  // a namespace's own root ("user", "#shared")
    if (std::find(options_.namespaces.begin(), options_.namespaces.end(), placed.kind) == options_.namespaces.end()) {
      ++outside;
      continue;
    }
    std::string canonical = canonical_name(placed);
    for (size_t k = 0; k < options_.include.size(); ++k)
      if (glob_matches(options_.include[k], canonical)) pattern_used[k] = true;
    if (!folder_selected(canonical, options_.include, options_.exclude)) continue;
    if (gmail_ && all_mail_ == SIZE_MAX && !entry.noselect &&
        std::any_of(entry.attributes.begin(), entry.attributes.end(),
                    [](const std::string& a) { return a.size() == 4 && (a == "\\All" || a == "\\ALL" || a == "\\all"); }))
      all_mail_ = selected_.size();
    selected_.push_back(entry);
    placed_.push_back(std::move(placed));
  }
  if (outside)
    emit({{"event", "info"}, {"folders", outside},
          {"text", fmt::format("{} folders of other users or shared namespaces are not exported "
                               "(--namespaces other,shared takes them)", outside)}});
  for (size_t k = 0; k < options_.include.size(); ++k) {
    if (pattern_used[k]) continue;
    std::string text = fmt::format("--folder '{}' matches no folder of {} (patterns match names like "
                                   "'Archive/2023', without the server's prefix)", options_.include[k],
                                   summary_.account);
    if (!options_.allow_unmatched) throw Error(ErrorKind::usage, text, Retry::never, {.account = summary_.account});
    emit({{"event", "warning"}, {"pattern", options_.include[k]}, {"text", text}});
  }

  // Folders the archive knows that the server no longer lists are marked gone
  // (only when every folder was asked for: a filtered run sees a subset).
  if (first.batch && options_.include.empty() && options_.exclude.empty()) {
    std::unordered_set<std::string> listed;
    for (auto& entry : entries) listed.insert(entry.name_raw);
    mark_gone_folders(*archive_, *first.batch, account_id_, listed, [&](nlohmann::json e) { emit(std::move(e)); });
  }

  summary_.folders.resize(selected_.size());
  for (size_t i = 0; i < selected_.size(); ++i) {
    summary_.folders[i].name = canonical_name(placed_[i]);
    summary_.folders[i].name_raw = selected_[i].name_raw;
    summary_.folders[i].noselect = selected_[i].noselect;
  }

  sizing_ = archive_ && !options_.dry_run;
  sized_.assign(selected_.size(), {});
  order_.resize(selected_.size());
  std::iota(order_.begin(), order_.end(), size_t{0});
  if (gmail_) all_mail_first();
  if (sizing_ && selected_.empty())
    emit({{"event", "totals"}, {"command", "export"}, {"folders", 0}, {"messages_total", 0}, {"bytes_total", 0}});
  release_lanes();
  run_lane(first);
  for (auto& t : threads) t.join();

  summary_.seconds = seconds_since(started);
  summary_.reconnects = reconnects_;
  if (archive_ && !options_.dry_run) {
    run_ended_ = true;
    std::string error;
    if (fatal_) {
      try {
        std::rethrow_exception(fatal_);
      } catch (const std::exception& e) {
        error = e.what();
      } catch (...) {
        error = "internal error";
      }
    }
    end_export_run(*archive_, summary_, fatal_ ? error.c_str() : nullptr);
  }
  if (fatal_) std::rethrow_exception(fatal_);
}

void AccountExport::run_lane(Lane& lane) {
  if (!lane.session) {
    // An extra connection: it only speeds things up, so one the server
    // refuses leaves the folders to the others.
    try {
      check_cancelled("");
      lane.session = connect_and_login(options_);
    } catch (const Error& e) {
      if (!stop_)
        emit({{"event", "warning"},
              {"error", e.what()},
              {"text", fmt::format("an extra connection failed ({}); going on with fewer", e.what())}});
      return;
    }
  }
  {
    std::unique_lock lock(ready_mutex_);
    ready_cv_.wait(lock, [&] { return ready_; });
  }
  if (stop_) {
    drop_session(lane);
    return;
  }
  if (archive_ && !options_.dry_run && !lane.batch) lane.batch = new_batch();
  if (sizing_) size_pass(lane);
  while (!stop_) {
    size_t k = next_folder_++;
    if (k >= order_.size()) break;
    if (!export_one(lane, order_[k])) break;
  }
  try {
    commit_if_due(lane, true);
  } catch (...) {
    keep_fatal(std::current_exception());
  }
  drop_session(lane);
}

bool AccountExport::export_one(Lane& lane, size_t i) {
  FolderResult& result = summary_.folders[i];
  if (gmail_ && all_mail_ != SIZE_MAX && !options_.dry_run) {
    if (i != all_mail_) {
      // Gmail: the other folders' bodies are All Mail's; wait until it is archived.
      std::unique_lock lock(ready_mutex_);
      ready_cv_.wait(lock, [&] { return all_mail_done_ || stop_; });
    }
  }
  // All Mail's objects are made durable before other lanes record messages that refer to them.
  struct AllMailDone {
    AccountExport& self;
    Lane& lane;
    bool active;
    ~AllMailDone() {
      if (!active) return;
      try {
        self.commit_if_due(lane, true);
      } catch (...) {
        self.keep_fatal(std::current_exception());
      }
      std::lock_guard lock(self.ready_mutex_);
      self.all_mail_done_ = true;
      self.ready_cv_.notify_all();
    }
  } all_mail_done{*this, lane, i == all_mail_ && !options_.dry_run};
  try {
    check_cancelled(result.name);
    with_retries(lane, result.name, [&] {
      if (options_.dry_run) plan_folder(lane, i, result);
      else export_folder(lane, selected_[i], result, i, selected_.size());
    });
    return true;
  } catch (const Error& e) {
    result.error = e.what();
    if (e.kind() == ErrorKind::protocol && e.retry() == Retry::never) {
      // The server refused this folder (EXAMINE NO, ...): report it and go on.
      emit({{"event", "folder_error"}, {"folder", result.name}, {"error", e.what()},
            {"text", fmt::format("folder {}: {}", result.name, e.what())}});
      return true;
    }
    keep_fatal(std::current_exception());
    return false;
  } catch (...) {
    result.error = "internal error";
    keep_fatal(std::current_exception());
    return false;
  }
}

void AccountExport::size_pass(Lane& lane) {
  while (!stop_) {
    size_t i = next_size_++;
    if (i >= selected_.size()) break;
    try {
      if (!selected_[i].noselect) {
        check_cancelled(summary_.folders[i].name);
        size_folder(lane, i);
      }
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::protocol || e.retry() != Retry::never) {
        keep_fatal(std::current_exception());
        break;
      }
      // A folder the server refuses is left out of the totals; its export reports it.
      sized_[i] = {};
    } catch (...) {
      keep_fatal(std::current_exception());
      break;
    }
    sized(i);
  }
  std::unique_lock lock(ready_mutex_);
  ready_cv_.wait(lock, [&] { return sized_count_ == selected_.size() || stop_; });
}

void AccountExport::sized(size_t) {
  std::lock_guard lock(ready_mutex_);
  if (++sized_count_ != selected_.size()) return;
  uint64_t messages = 0, bytes = 0;
  std::vector<uint64_t> folder_bytes;
  for (size_t i = 0; i < sized_.size(); ++i) {
    folder_bytes.push_back(0);
    if (gmail_links(i)) continue;  // linked, not downloaded
    messages += sized_[i].sizes.size();
    for (auto& [uid, size] : sized_[i].sizes) folder_bytes.back() += size;
    bytes += folder_bytes.back();
  }
  if (lane_count_ > 1)
    std::stable_sort(order_.begin(), order_.end(),
                     [&](size_t a, size_t b) { return folder_bytes[a] > folder_bytes[b]; });
  if (gmail_) all_mail_first();
  emit({{"event", "totals"}, {"command", "export"}, {"folders", selected_.size()}, {"messages_total", messages},
        {"bytes_total", bytes}});
  ready_cv_.notify_all();
}

void AccountExport::size_folder(Lane& lane, size_t i) {
  const auto& entry = selected_[i];
  with_retries(lane, summary_.folders[i].name, [&] {
    auto& session = lane.session;
    Sized& sized = sized_[i];
    sized = {};
    auto stored = archive_->find_folder(account_id_, entry.name_raw);
    if (stored && session->has_capability("CONDSTORE") && stored->uidvalidity != 0 && stored->highestmodseq != 0 &&
        stored->last_export != 0 && may_skip(entry.name_raw)) {
      auto st = session->status(entry.name_raw);
      if (st.uidvalidity == stored->uidvalidity && st.uidnext == stored->uidnext &&
          st.highestmodseq == stored->highestmodseq &&
          st.messages == archived_present(stored->id, stored->uidvalidity)) {
        sized.unchanged_messages = st.messages;
        return;  // unchanged: nothing to fetch
      }
    }
    auto info = session->examine(entry.name_raw);
    sized.uidvalidity = info.uidvalidity;
    std::vector<uint32_t> known;
    if (stored && stored->uidvalidity == info.uidvalidity) known = archived_uids(stored->id, info.uidvalidity).all;
    if (known.empty() && options_.policy.filter.empty()) {
      // Nothing archived yet: every size in one command, without a UID SEARCH first (one
      // round trip less per folder, which is what a slow link feels).
      if (info.exists > 0)
        session->fetch_sizes({{1, 0}}, [&](uint32_t uid, uint64_t size) { sized.sizes.emplace_back(uid, size); });
    } else if (info.exists > 0) {
      auto wanted = minus(session->search_all_uids(), known);
      sized.sizes.reserve(wanted.size());
      select(*session, summary_.folders[i].name, wanted, sized.sizes, sized.left_out);
    }
    std::sort(sized.sizes.begin(), sized.sizes.end());
    sized.sizes.erase(std::unique(sized.sizes.begin(), sized.sizes.end(),
                                  [](auto& a, auto& b) { return a.first == b.first; }),
                      sized.sizes.end());
  });
}

uint64_t AccountExport::archived_present(uint32_t folder_id, uint32_t uidvalidity) const {
  if (folder_id == 0) return 0;
  if (auto counts = archive_->message_counts(account_id_, folder_id, uidvalidity)) return counts->present;
  return archived_uids(folder_id, uidvalidity).present.size();  // an older index, read as it is
}

AccountExport::ArchivedUids AccountExport::archived_uids(uint32_t folder_id, uint32_t uidvalidity) const {
  ArchivedUids out;
  if (folder_id == 0) return out;
  archive_->for_each_message_state(account_id_, folder_id, uidvalidity, [&](uint32_t uid, MessageState state) {
    out.all.push_back(uid);
    if (state == MessageState::present) out.present.push_back(uid);
    return true;
  });
  return out;
}

void AccountExport::select(imap::Session& session, const std::string& folder, const std::vector<uint32_t>& candidates,
                           std::vector<std::pair<uint32_t, uint64_t>>& sizes, std::vector<uint32_t>& left_out) {
  if (candidates.empty()) return;
  const MessageFilter& filter = options_.policy.filter;
  if (filter.empty()) {
    for (auto& ranges : uid_batches(candidates, options_.fetch_batch))
      session.fetch_sizes(ranges, [&](uint32_t uid, uint64_t size) {
        if (std::binary_search(candidates.begin(), candidates.end(), uid)) sizes.emplace_back(uid, size);
      });
    return;
  }
  // The server's SINCE and BEFORE compare days in its own time zone: the
  // search takes a day more on each side, the check below the exact UTC days.
  constexpr int64_t kDay = 24 * 60 * 60;
  std::optional<int64_t> since, before;
  if (filter.since) since = *filter.since - kDay;
  if (filter.before) before = *filter.before + kDay;
  std::vector<uint32_t> pool;
  try {
    auto found = session.search_selected({{candidates.front(), candidates.back()}}, since, before, filter.larger,
                                         filter.smaller);
    std::set_intersection(candidates.begin(), candidates.end(), found.begin(), found.end(), std::back_inserter(pool));
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::protocol || e.retry() != Retry::never) throw;
    pool = candidates;
    emit({{"event", "warning"}, {"folder", folder}, {"error", e.what()},
          {"text", fmt::format("account {}, folder {}: the server refused the search ({}); every message's date and "
                               "size are checked here instead", summary_.account, folder, e.what())}});
  }
  std::vector<uint32_t> out = minus(candidates, pool);
  for (auto& ranges : uid_batches(pool, options_.fetch_batch))
    session.fetch_sizes_and_dates(ranges, [&](uint32_t uid, uint64_t size, int64_t internaldate) {
      if (!std::binary_search(pool.begin(), pool.end(), uid)) return;
      if (filter.matches(internaldate, size)) sizes.emplace_back(uid, size);
      else out.push_back(uid);
    });
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  left_out.insert(left_out.end(), out.begin(), out.end());
}

bool AccountExport::gmail_links(size_t index) const {
  if (!gmail_ || all_mail_ == SIZE_MAX || index == all_mail_) return false;
  const std::string& use = selected_[index].special_use;  // the canonical spelling (Session::list)
  return use != "\\Junk" && use != "\\Trash";
}

void AccountExport::plan_folder(Lane& lane, size_t index, FolderResult& result) {
  const imap::ListEntry& entry = selected_[index];
  auto& session = lane.session;
  if (entry.noselect) return;
  auto info = session->examine(entry.name_raw);
  result.uidvalidity = info.uidvalidity;
  result.server_messages = info.exists;
  std::vector<uint32_t> server_uids = session->search_all_uids();
  std::vector<uint32_t> archived;
  auto stored = archive_ && account_id_ ? archive_->find_folder(account_id_, entry.name_raw) : std::nullopt;
  if (stored && stored->uidvalidity == info.uidvalidity) archived = archived_uids(stored->id, info.uidvalidity).all;
  auto candidates = minus(server_uids, archived);
  std::vector<std::pair<uint32_t, uint64_t>> sizes;
  std::vector<uint32_t> left_out;
  select(*session, result.name, candidates, sizes, left_out);
  result.filtered_out = left_out.size();
  result.to_fetch = candidates.size() - left_out.size();
  for (auto& [uid, size] : sizes) result.to_fetch_bytes += size;
  if (gmail_links(index)) {
    result.gmail_linked = result.to_fetch;
    result.to_fetch = result.to_fetch_bytes = 0;
    emit({{"event", "folder_done"}, {"folder", result.name}, {"dry_run", true}, {"messages", 0}, {"bytes", 0},
          {"gmail_linked", result.gmail_linked},
          {"text", fmt::format("{}: {} of {} messages to link to their bodies from All Mail, none to fetch",
                               result.name, result.gmail_linked, result.server_messages)}});
    return;
  }
  emit({{"event", "folder_done"}, {"folder", result.name}, {"dry_run", true},
        {"messages", result.to_fetch}, {"bytes", result.to_fetch_bytes},
        {"text", fmt::format("{}: {} of {} messages to fetch, {} bytes", result.name, result.to_fetch,
                             result.server_messages, result.to_fetch_bytes)}});
}

void AccountExport::export_folder(Lane& lane, const imap::ListEntry& entry, FolderResult& result, size_t index,
                                  size_t count) {
  auto& session = lane.session;
  auto& batch = lane.batch;
  failures_ -= std::min<uint64_t>(failures_, result.failed_uids.size());  // counted again if they fail again
  result.failed_uids.clear();  // a retry asks again for what was not delivered
  result.refused.clear();
  result.filtered_out = 0;
  auto stored = archive_->find_folder(account_id_, entry.name_raw);
  FolderRecord folder = stored ? *stored : FolderRecord{};
  folder.account_id = account_id_;
  folder.name_raw = entry.name_raw;
  folder.name_utf8 = entry.name_utf8;
  folder.delimiter = entry.delimiter;
  folder.ns_kind = static_cast<archive::NamespaceKind>(placed_[index].kind);
  folder.ns_prefix = placed_[index].prefix;
  folder.path = placed_[index].path;
  folder.attributes = entry.attributes;
  folder.subscribed = entry.subscribed;
  folder.noselect = entry.noselect;
  folder.gone = false;
  if (entry.noselect) {
    batch->put_folder(folder);
    commit_if_due(lane);
    result.finished = true;
    emit({{"event", "folder_done"}, {"folder", result.name}, {"noselect", true},
          {"text", fmt::format("{}: no messages (\\Noselect)", result.name)}});
    return;
  }
  bool condstore = session->has_capability("CONDSTORE");

  // Nothing changed since the last export? One STATUS tells, with CONDSTORE
  // (asked by the size pass moments ago when there was one).
  std::optional<uint64_t> unchanged;
  if (sizing_ && sized_[index].unchanged_messages) {
    unchanged = sized_[index].unchanged_messages;
  } else if (stored && condstore && folder.uidvalidity != 0 && folder.highestmodseq != 0 &&
             folder.last_export != 0 && may_skip(entry.name_raw)) {
    auto st = session->status(entry.name_raw);
    if (st.uidvalidity == folder.uidvalidity && st.uidnext == folder.uidnext &&
        st.highestmodseq == folder.highestmodseq &&
        st.messages == archived_present(folder.id, folder.uidvalidity))
      unchanged = st.messages;
  }
  if (unchanged) {
    result.unchanged = true;
    result.finished = true;
    result.uidvalidity = folder.uidvalidity;
    result.server_messages = *unchanged;
    batch->put_folder(folder);  // attributes and subscription may have changed
    emit({{"event", "folder_done"}, {"folder", result.name}, {"unchanged", true},
          {"text", fmt::format("{}: unchanged ({} messages)", result.name, *unchanged)}});
    return;
  }

  auto info = session->examine(entry.name_raw);
  result.uidvalidity = info.uidvalidity;
  result.server_messages = info.exists;
  if (folder.uidvalidity != 0 && folder.uidvalidity != info.uidvalidity) {
    // A new generation: keep the old one's entries, marked as no longer on the source.
    result.uidvalidity_changed = true;
    uint32_t old = folder.uidvalidity;
    archive_->for_each_message(account_id_, folder.id, old, [&](const MessageRecord& r) {
      mark_expunged(*batch, r);
      return true;
    });
    folder.uidnext = 0;
    folder.highestmodseq = 0;
    emit({{"event", "warning"}, {"folder", result.name},
          {"text", fmt::format("{}: UIDVALIDITY changed from {} to {}; exporting the folder again, the old "
                               "generation stays in the archive", result.name, old, info.uidvalidity)}});
  }
  folder.uidvalidity = info.uidvalidity;
  if (folder.id == 0) batch->put_folder(folder);  // assigns the id

  std::vector<uint32_t> server_uids = session->search_all_uids();
  auto [known, present] = archived_uids(folder.id, folder.uidvalidity);

  // Expunged on the source since the last run: kept, marked.
  for (uint32_t uid : minus(present, server_uids)) {
    auto record = archive_->message({account_id_, folder.id, folder.uidvalidity, uid});
    if (!record || !mark_expunged(*batch, *record)) continue;
    ++result.expunged;
    commit_if_due(lane);
  }

  // Flag changes on messages archived before.
  std::vector<uint32_t> still_present;
  std::set_intersection(present.begin(), present.end(), server_uids.begin(), server_uids.end(),
                        std::back_inserter(still_present));
  if (!still_present.empty()) {
    std::optional<uint64_t> since;
    if (condstore && folder.highestmodseq != 0) since = folder.highestmodseq;
    std::vector<imap::UidRange> all{{1, 0}};
    session->fetch_flags(all, since, [&](imap::FlagUpdate&& update) {
      if (!std::binary_search(still_present.begin(), still_present.end(), update.uid)) return;
      note_anomalies(result, update.uid, update.anomalies);
      auto record = archive_->message({account_id_, folder.id, folder.uidvalidity, update.uid});
      if (!record) return;
      uint32_t bits = 0;
      std::vector<std::string> keywords;
      archive::parse_flags(update.flags, bits, keywords);
      bool labels_changed = update.has_labels && record->gm_msgid && update.gm_labels != record->gm_labels;
      if (same_flags(*record, bits, keywords) && (update.modseq == 0 || update.modseq == record->modseq) &&
          !labels_changed)
        return;
      bool changed = !same_flags(*record, bits, keywords) || labels_changed;
      if (labels_changed) {
        record->gm_labels = std::move(update.gm_labels);
        remember_gmail(*record);
      }
      record->flags = bits;
      record->keywords = std::move(keywords);
      if (update.modseq) record->modseq = update.modseq;
      batch->put_message(*record);
      if (changed) ++result.flags_updated;
    });
    commit_if_due(lane);
  }

  // New messages: what the server has and the archive does not, as far as
  // the filter selects them. The whole UID range is searched, not only what
  // arrived since the last run: an earlier run with another filter may have
  // left out messages below the folder's UIDNEXT.
  std::vector<uint32_t> candidates = minus(server_uids, known);
  uint64_t bytes_total = 0;
  // Sizes first: a message over the maximum message size is not fetched. The
  // sizes (and the filter's choice) the size pass saw are kept; only UIDs it
  // did not see (arrived since) are asked for.
  std::vector<std::pair<uint32_t, uint64_t>> sizes;  // ascending UIDs
  std::vector<uint32_t> left_out;                    // outside the filter, ascending
  {
    const Sized* sized =
        index < sized_.size() && sized_[index].uidvalidity == info.uidvalidity ? &sized_[index] : nullptr;
    std::vector<uint32_t> unsized;
    for (uint32_t uid : candidates) {
      if (sized) {
        auto it = std::lower_bound(sized->sizes.begin(), sized->sizes.end(), std::pair<uint32_t, uint64_t>{uid, 0});
        if (it != sized->sizes.end() && it->first == uid) {
          sizes.push_back(*it);
          continue;
        }
        if (std::binary_search(sized->left_out.begin(), sized->left_out.end(), uid)) {
          left_out.push_back(uid);
          continue;
        }
      }
      unsized.push_back(uid);
    }
    select(*session, result.name, unsized, sizes, left_out);
  }
  std::sort(sizes.begin(), sizes.end());
  std::sort(left_out.begin(), left_out.end());
  result.filtered_out = left_out.size();
  std::vector<uint32_t> wanted = minus(candidates, left_out);
  if (gmail_ && !wanted.empty() && (index != all_mail_ || [&] {
        std::lock_guard lock(gmail_mutex_);
        return !gmail_known_.empty();
      }()))
    link_gmail(lane, folder, result, wanted);
  const uint64_t max_size = options_.endpoint.max_message_size;
  std::vector<uint32_t> too_big;
  for (auto& [uid, size] : sizes) {
    if (size <= max_size || !std::binary_search(wanted.begin(), wanted.end(), uid)) continue;
    if (!too_big.empty() && too_big.back() == uid) continue;
    too_big.push_back(uid);
    std::string why = fmt::format("{} bytes is over the maximum message size of {} bytes (--max-message-size); "
                                  "not fetched", size, max_size);
    result.failed_uids.push_back(uid);
    count_failure();
    result.refused[uid] = why;
    emit({{"event", "message_error"}, {"folder", result.name}, {"uid", uid}, {"error", why},
          {"text", fmt::format("account {}, folder {}, UID {}: {}", summary_.account, result.name, uid, why)}});
  }
  wanted = minus(wanted, too_big);
  check_cancelled(result.name);  // --max-errors
  // Under a rate cap, each FETCH asks for at most a quarter second's worth,
  // paid for before it is sent, so the cap holds from the first one on.
  auto size_of = [&](uint32_t uid) -> uint64_t {
    auto it = std::lower_bound(sizes.begin(), sizes.end(), std::pair<uint32_t, uint64_t>{uid, 0});
    return it != sizes.end() && it->first == uid ? it->second : 0;
  };
  auto batches = limiter_.limited()
                     ? uid_batches(wanted, std::min<uint64_t>(options_.fetch_batch, limiter_.messages_per_send()),
                                   limiter_.bytes_per_send(), size_of)
                     : uid_batches(wanted, options_.fetch_batch);
  for (size_t b = 0, k = 0; b < batches.size(); ++b)
    for (auto& r : batches[b])
      for (; k < sizes.size() && sizes[k].first <= r.last; ++k) {
        if (sizes[k].first < r.first || sizes[k].second > max_size) continue;
        bytes_total += sizes[k].second;
      }

  emit({{"event", "folder_start"}, {"folder", result.name}, {"folder_index", index + 1}, {"folders", count},
        {"messages_total", wanted.size()}, {"bytes_total", bytes_total}});
  auto started = Clock::now();
  auto last_progress = Clock::now() - std::chrono::seconds(1);
  uint64_t done = 0, done_bytes = 0;
  auto progress = [&](bool final) {
    emit({{"event", "progress"}, {"folder", result.name}, {"folder_index", index + 1}, {"folders", count},
          {"messages", done}, {"messages_total", wanted.size()}, {"bytes", done_bytes},
          {"bytes_total", bytes_total}, {"elapsed", seconds_since(started)}, {"final", final}});
  };

  const uint64_t stored_before = batch->stored_bytes();
  const uint64_t late_before = batch->late_duplicate_bytes();
  // The UIDs each FETCH asks for, to name the ones the server does not deliver.
  std::vector<std::vector<uint32_t>> asked(batches.size()), received(batches.size());
  for (size_t b = 0, wanted_pos = 0; b < batches.size(); ++b)
    for (auto& r : batches[b])
      while (wanted_pos < wanted.size() && wanted[wanted_pos] <= r.last) asked[b].push_back(wanted[wanted_pos++]);
  check_cancelled(result.name);
  const MessageFilter& filter = options_.policy.filter;
  // A body too large to hold goes into a spool of this lane's batch as it
  // arrives, and from there into a pack.
  session->stream_large_bodies({archive::kStreamedObject, [&batch](uint64_t size) -> std::unique_ptr<imap::BodySink> {
                                  return std::make_unique<SpoolSink>(batch->spool(size));
                                }});
  auto on_message = [&](size_t b, imap::FetchedMessage&& m) {
    if (!std::binary_search(asked[b].begin(), asked[b].end(), m.uid)) return;  // '*' answers or duplicates
    if (!received[b].empty() && received[b].back() == m.uid) return;
    const uint64_t size = m.body_size;
    auto* spooled = dynamic_cast<SpoolSink*>(m.large_body.get());
    if (m.large_body && !spooled) throw Error(ErrorKind::internal, "a streamed body went to an unknown sink");
    if (!filter.empty() && !filter.matches(m.internaldate, m.rfc822_size ? m.rfc822_size : size)) {
      // The server's search and sizes said otherwise: the filter decides.
      received[b].push_back(m.uid);
      ++result.filtered_out;
      return;
    }
    MessageRecord record;
    record.key = {account_id_, folder.id, folder.uidvalidity, m.uid};
    record.hash = spooled ? spooled->spool.finish() : archive::sha256(m.body);
    archive::parse_flags(m.flags, record.flags, record.keywords);
    record.internaldate = m.internaldate;
    record.internaldate_tz = m.internaldate_tz;
    record.size = size;
    record.modseq = m.modseq;
    record.state = MessageState::present;
    record.gm_msgid = m.gm_msgid;
    record.gm_thrid = m.gm_thrid;
    record.gm_labels = std::move(m.gm_labels);
    note_anomalies(result, m.uid, m.anomalies);
    bool fresh = spooled ? batch->put_spooled(spooled->spool) : batch->put_object(record.hash, m.body);
    m.large_body.reset();  // its temporary file goes
    batch->put_message(record);
    remember_gmail(record);
    if (!fresh) result.bytes_deduplicated += size;
    result.bytes_fetched += size;
    ++result.new_messages;
    received[b].push_back(m.uid);
    ++done;
    done_bytes += size;
    commit_if_due(lane);
    if (options_.after_message) options_.after_message(size);
    if (Clock::now() - last_progress > std::chrono::milliseconds(250)) {
      last_progress = Clock::now();
      progress(false);
    }
  };
  auto on_done = [&](size_t b) {
    std::sort(received[b].begin(), received[b].end());
    for (uint32_t uid : minus(asked[b], received[b])) {
      result.failed_uids.push_back(uid);
      count_failure();
      emit({{"event", "message_error"}, {"folder", result.name}, {"uid", uid},
            {"error", "the server did not deliver this message"},
            {"text", fmt::format("{} UID {}: the server listed the message but did not deliver it", result.name, uid)}});
    }
    std::vector<uint32_t>().swap(asked[b]);
    std::vector<uint32_t>().swap(received[b]);
    check_cancelled(result.name);
  };
  // Several batches in flight on the connection (pipelined); each is settled
  // when the server answers it. Under a cap, each is paid for just before it
  // is sent, while the one before it is still arriving.
  if (!limiter_.limited()) {
    session->fetch_batches(batches, on_message, on_done);
  } else {
    session->fetch_batches(batches, on_message, on_done, 2, [&](size_t b) {
      uint64_t bytes = 0;
      for (uint32_t uid : asked[b]) bytes += size_of(uid);
      limiter_.acquire(bytes, asked[b].size());
    });
  }
  progress(true);
  // What this folder's new objects take in the packs (small ones are compressed in groups).
  batch->close_group();
  result.bytes_stored = batch->stored_bytes() - stored_before;
  result.bytes_deduplicated += batch->late_duplicate_bytes() - late_before;

  folder.uidnext = info.uidnext;
  folder.highestmodseq = info.highestmodseq;
  folder.last_export = unix_now();
  batch->put_folder(folder);
  commit_if_due(lane);
  result.finished = true;

  emit(folder_done_event(result));
}

}  // namespace

uint64_t ExportSummary::total(uint64_t FolderResult::*field) const {
  uint64_t sum = 0;
  for (auto& f : folders) sum += f.*field;
  return sum;
}

uint64_t ExportSummary::failed_messages() const {
  uint64_t n = 0;
  for (auto& f : folders) n += f.failed_uids.size() + f.failed_items.size();
  return n;
}

uint64_t ExportSummary::failed_folders() const {
  uint64_t n = 0;
  for (auto& f : folders) n += f.error.empty() ? 0 : 1;
  return n;
}

nlohmann::json ExportSummary::to_json() const {
  nlohmann::json folders_json = nlohmann::json::array();
  for (auto& f : folders) {
    nlohmann::json j = {{"folder", f.name},
                        {"raw", f.name_raw},
                        {"uidvalidity", f.uidvalidity},
                        {"server_messages", f.server_messages},
                        {"new", f.new_messages},
                        {"gmail_linked", f.gmail_linked},
                        {"bytes_fetched", f.bytes_fetched},
                        {"bytes_stored", f.bytes_stored},
                        {"bytes_deduplicated", f.bytes_deduplicated},
                        {"flags_updated", f.flags_updated},
                        {"expunged", f.expunged},
                        {"filtered_out", f.filtered_out},
                        {"failed_uids", f.failed_uids}};
    if (f.finished) j["finished"] = true;
    if (!f.refused.empty()) {
      nlohmann::json refused = nlohmann::json::array();
      for (auto& [uid, why] : f.refused) refused.push_back({{"uid", uid}, {"error", why}});
      j["refused"] = std::move(refused);
    }
    if (!f.failed_items.empty()) {
      nlohmann::json failed = nlohmann::json::array();
      for (auto& [where, why] : f.failed_items) failed.push_back({{"where", where}, {"error", why}});
      j["failed_items"] = std::move(failed);
    }
    if (!f.anomalies.empty()) {
      nlohmann::json anomalies = nlohmann::json::array();
      for (auto& [uid, what] : f.anomalies) anomalies.push_back({{"uid", uid}, {"anomaly", what}});
      j["anomalies"] = std::move(anomalies);
    }
    if (f.noselect) j["noselect"] = true;
    if (f.unchanged) j["unchanged"] = true;
    if (f.uidvalidity_changed) j["uidvalidity_changed"] = true;
    if (dry_run) {
      j["to_fetch"] = f.to_fetch;
      j["to_fetch_bytes"] = f.to_fetch_bytes;
    }
    if (!f.error.empty()) j["error"] = f.error;
    folders_json.push_back(std::move(j));
  }
  return {{"event", "summary"},
          {"command", "export"},
          {"account", account},
          {"server", server},
          {"source", archive::source_kind_name(source)},
          {"run_id", run_id},
          {"dry_run", dry_run},
          {"policy", policy_json(policy)},
          {"complete", complete()},
          {"folders", folders.size()},
          {"messages", total(&FolderResult::new_messages)},
          {"gmail_linked", total(&FolderResult::gmail_linked)},
          {"bytes_fetched", total(&FolderResult::bytes_fetched)},
          {"bytes_stored", total(&FolderResult::bytes_stored)},
          {"bytes_deduplicated", total(&FolderResult::bytes_deduplicated)},
          {"flags_updated", total(&FolderResult::flags_updated)},
          {"expunged", total(&FolderResult::expunged)},
          {"filtered_out", total(&FolderResult::filtered_out)},
          {"failed_messages", failed_messages()},
          {"failed_folders", failed_folders()},
          {"anomalies", std::accumulate(folders.begin(), folders.end(), size_t{0},
                                        [](size_t n, const FolderResult& f) { return n + f.anomalies.size(); })},
          {"to_fetch", total(&FolderResult::to_fetch)},
          {"to_fetch_bytes", total(&FolderResult::to_fetch_bytes)},
          {"reconnects", reconnects},
          {"seconds", seconds},
          {"per_folder", folders_json}};
}

std::vector<std::vector<imap::UidRange>> uid_batches(const std::vector<uint32_t>& uids, size_t max_count,
                                                     uint64_t max_bytes,
                                                     const std::function<uint64_t(uint32_t)>& size_of) {
  std::vector<std::vector<imap::UidRange>> out;
  if (max_count == 0) max_count = 1;
  size_t count = 0;
  uint64_t bytes = 0;
  for (uint32_t uid : uids) {
    uint64_t size = size_of(uid);
    if (out.empty() || count >= max_count || (count > 0 && bytes + size > max_bytes)) {
      out.emplace_back();
      count = 0;
      bytes = 0;
    }
    auto& ranges = out.back();
    if (!ranges.empty() && ranges.back().last + 1 == uid) ranges.back().last = uid;
    else ranges.push_back({uid, uid});
    ++count;
    bytes += size;
  }
  return out;
}

std::vector<std::vector<imap::UidRange>> uid_batches(const std::vector<uint32_t>& uids, size_t max_count) {
  std::vector<std::vector<imap::UidRange>> out;
  if (max_count == 0) max_count = 1;
  for (size_t i = 0; i < uids.size(); i += max_count) {
    std::vector<imap::UidRange> ranges;
    size_t end = std::min(uids.size(), i + max_count);
    for (size_t j = i; j < end; ++j) {
      if (!ranges.empty() && ranges.back().last + 1 == uids[j]) ranges.back().last = uids[j];
      else ranges.push_back({uids[j], uids[j]});
    }
    out.push_back(std::move(ranges));
  }
  return out;
}

static std::string default_account_name(const ExportOptions& options) {
  return options.account_name.empty() ? options.credentials.user + "@" + options.endpoint.host
                                      : options.account_name;
}

ExportSummary export_account(Archive& archive, const ExportOptions& options, EventSink& events,
                             std::unique_ptr<imap::Session> session) {
  ExportSummary summary;
  summary.account = default_account_name(options);
  summary.server = options.endpoint.address();
  summary.dry_run = options.dry_run;
  summary.policy = options.policy;
  AccountExport(&archive, options, events, summary).run(std::move(session));
  events.emit(summary.to_json());
  return summary;
}

ExportSummary run_export(const ExportOptions& options, EventSink& events) {
  ExportSummary summary;
  summary.account = default_account_name(options);
  summary.server = options.endpoint.address();
  summary.dry_run = options.dry_run;
  summary.policy = options.policy;
  ErrorWhere where{.account = summary.account, .server = summary.server};
  try {
    // Log in before the archive is created or touched.
    auto session = connect_and_login(options);
    std::unique_ptr<Archive> archive;
    if (options.dry_run) {
      std::error_code ec;
      if (std::filesystem::exists(options.archive_dir / "FORMAT", ec))
        archive = Archive::open(options.archive_dir, Archive::Mode::read, options.archive_options);
    } else {
      archive = Archive::open(options.archive_dir, Archive::Mode::create, options.archive_options);
    }
    AccountExport(archive.get(), options, events, summary).run(std::move(session));
  } catch (const Error& e) {
    throw e.with(where);
  }
  events.emit(summary.to_json());
  return summary;
}

}  // namespace imapstage::exporting

#include "import/importer.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <deque>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>

#include "archive-format/lookup.h"
#include "common/error.h"
#include "common/glob.h"
#include "common/message_id.h"
#include "common/rate_limit.h"
#include "common/server_rewrites.h"
#include "export/exporter.h"
#include "imap/utf7.h"

namespace imapstage::importing {

using archive::AppendRecord;
using archive::AppendState;
using archive::Archive;
using archive::Batch;
using archive::MessageRecord;

namespace {

using Clock = std::chrono::steady_clock;

// In-flight records younger than this may belong to a session that died a
// moment ago, whose last bytes the server may still be saving. Reconciling
// them waits for the folder's UIDNEXT to move: up to kCrashSettleTime for
// records of an earlier run (killed: its socket buffers can hold megabytes
// the server has yet to save), kRetrySettleTime after a dropped connection
// of this run.
constexpr int64_t kRecentAppendSeconds = 600;
constexpr auto kCrashSettleTime = std::chrono::seconds(5);
constexpr auto kRetrySettleTime = std::chrono::seconds(1);

// Messages recorded as in flight by one archive commit ahead of sending
// them (at least one APPEND group). Each commit fsyncs; a bigger window means
// fewer of them, and more candidates to fetch back after a crash.
constexpr size_t kWindowMessages = 2000;
constexpr uint64_t kWindowBytes = 64ull << 20;
// Message bytes held in memory for APPEND: each connection holds the group
// it sends and the one it reads ahead, together at most its share of
// kHeldBytes, the budget of all of an account's connections together. A
// share is at most kHeldBytesPerConnection and at least kMinHeldBytes, the
// most one held message can be (larger ones are streamed from the archive).
// Groups are cut to the share, so memory does not grow with connections.
constexpr uint64_t kHeldBytes = 24ull << 20;
constexpr uint64_t kHeldBytesPerConnection = 16ull << 20;
constexpr uint64_t kMinHeldBytes = archive::kStreamedObject;

// `name` with the characters servers refuse in mailbox names (Cyrus: \ % * ";
// control characters anywhere) replaced by '_'.
std::string acceptable_name(const std::string& name) {
  std::string out = name;
  for (auto& c : out)
    if (c == '\\' || c == '%' || c == '*' || c == '"' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '_';
  return out;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Which flags the target keeps, from PERMANENTFLAGS.
class FlagFilter {
 public:
  explicit FlagFilter(const std::vector<std::string>& permanent) {
    for (auto& f : permanent) {
      if (f == "\\*") any_keyword_ = true;
      else allowed_.insert(lower(f));
    }
    // A server that sends no PERMANENTFLAGS keeps everything (RFC 3501 §7.1).
    unrestricted_ = permanent.empty();
  }
  bool keeps(const std::string& flag) const {
    if (unrestricted_ || allowed_.count(lower(flag))) return true;
    return any_keyword_ && !flag.starts_with("\\");
  }

 private:
  std::set<std::string> allowed_;
  bool any_keyword_ = false;
  bool unrestricted_ = false;
};

class AccountImport {
 public:
  AccountImport(const ImportOptions& options, EventSink& events, ImportSummary& summary,
                Archive* shared = nullptr)
      : options_(options), events_(events), summary_(summary), shared_(shared) {}

  void run();

 private:
  // What the connections importing folders side by side share.
  struct Folders {
    explicit Folders(std::vector<FolderMapping>& m) : mappings(m) {}
    std::vector<FolderMapping>& mappings;
    std::atomic<size_t> next{0};     // the next folder to take
    std::atomic<bool> stop{false};   // a connection failed for good: take no more
    std::mutex mutex;
    std::exception_ptr fatal;        // the first such failure
  };
  // Another connection of `owner`'s run: same archive, account, target and
  // summary; its own session, batch and APPEND group sizes.
  AccountImport(AccountImport& owner, Folders& folders)
      : options_(owner.options_), events_(owner.events_), summary_(owner.summary_), shared_(owner.archive_) {
    owner_ = &owner;
    folders_ = &folders;
    archive_ = owner.archive_;
    account_ = owner.account_;
    target_id_ = owner.target_id_;
    started_unix_ = owner.started_unix_;
    group_limit_ = owner.group_limit_;
    group_bytes_limit_ = owner.group_bytes_limit_;
    max_group_ = owner.max_group_;
    max_group_bytes_ = owner.max_group_bytes_;
    held_limit_ = owner.held_limit_;
  }
  // Takes folders until none is left or one fails for good; each folder's
  // outcome goes to its summary entry.
  void work_folders(Folders& folders);
  // An extra connection's thread: logs in (a refusal is a warning), then works.
  void work_extra(Folders& folders);

 private:
  // What this target's append records say about one source folder, read in
  // one pass over the records (a no-change re-run does no per-message
  // lookup). `done` is in key order: (source UIDVALIDITY, UID).
  struct DoneAppend {
    uint32_t uidvalidity = 0;
    uint32_t uid = 0;
    uint32_t target_uid = 0;
    uint32_t target_uidvalidity = 0;
    uint32_t flags = 0;
    uint32_t target_name = 0;  // index into FolderAppends::targets
    std::vector<std::string> keywords;
  };
  struct FolderAppends {
    std::vector<std::string> targets;   // distinct raw target folder names of `done`
    std::vector<DoneAppend> done;
    std::vector<AppendRecord> in_flight;
    void add(const AppendRecord& r);
    // The done record of (uidvalidity, uid), or null.
    const DoneAppend* find(uint32_t uidvalidity, uint32_t uid) const;
  };
  // The append records of every folder in `folder_ids`, in one pass; kept
  // until each folder's first attempt takes them (take_appends).
  // The run itself; run() records it as failed in the history when it throws before the end.
  void run_body();
  bool run_ended_ = false;  // end_run was called
  void ensure_session();
  void drop_session();
  // A new connection with `target_raw` selected again, if the last one was
  // closed (an APPEND the server gave up on mid-command closes it).
  void revive(const std::string& target_raw);
  void emit(nlohmann::json event);
  // The folder_done event of a folder imported (or found unchanged), with its counts and `text`.
  void folder_done(const ImportFolderResult& result, const std::string& text);
  void check_cancelled(const std::string& folder);
  void commit();
  void import_folder(FolderMapping& m, ImportFolderResult& result, size_t index, size_t count);
  void plan_folder(const FolderMapping& m, ImportFolderResult& result);
  // CREATE, with the special-use attribute where the mapping has one. A name
  // the server refuses is changed to acceptable_name() and created so
  // (a warning names both); a folder that cannot be created at all throws
  // Error(protocol, never) with the server's own reason.
  void create_folder(FolderMapping& m, ImportFolderResult& result);
  bool target_has(const std::string& name_raw);
  // The selected folder `target_raw`'s UIDNEXT, or a lower bound of it when
  // the server's SELECT reply (`info`) has none (Courier sends no UIDNEXT):
  // STATUS UIDNEXT, else the highest UID + 1 (1 for an empty folder). Every
  // message appended from now on gets a UID at least this high, so in-flight
  // records carry a usable hint on every server.
  uint32_t uidnext_of(const std::string& target_raw, const imap::MailboxInfo& info);
  // The UIDs in the selected folder holding `bytes` (INTERNALDATE `internaldate`)
  // unchanged or in a form a known rewrite explains, not in `claimed`:
  // found by Message-ID, else (no Message-ID, or the search found none) among
  // the messages whose INTERNALDATE is within a day of it. For settling a
  // record without a UID hint.
  std::optional<uint32_t> find_on_target(const std::string& bytes, const archive::Hash& hash, int64_t internaldate,
                                         const std::set<uint32_t>& claimed);
  // Settles in-flight records of this folder (and done records whose target
  // folder was recreated) against what the target actually holds.
  // Returns whether it changed any record (then `fa` is stale).
  bool reconcile(const FolderMapping& m, const imap::MailboxInfo& info, ImportFolderResult& result,
                 const FolderAppends& fa);
  // The candidate UID (removed from `by_fingerprint`) holding in-flight
  // record `p`'s message as the server rewrote it: the same rewrite
  // fingerprint and INTERNALDATE, not yet claimed. nullopt when none.
  std::optional<uint32_t> match_rewritten(
      const AppendRecord& p,
      std::unordered_map<std::string, std::vector<std::pair<uint32_t, int64_t>>>& by_fingerprint,
      const std::set<uint32_t>& claimed);
  // What check_stored needs of a message sent: its bytes, or for a
  // streamed one its size, hash and at_risk().
  struct SentBody {
    const std::string* bytes = nullptr;  // null when streamed
    uint64_t size = 0;
    archive::Hash hash{};
    bool risky = false;
  };
  // After an APPEND that gave UIDs: the bytes of every copy whose message a
  // known server rewrites (at_risk) and, while check_sizes_ holds, of every
  // copy whose size (one UID FETCH per group) differs: a copy the server
  // changed is reported per message as a known rewrite (message_rewritten)
  // or, when no known rewrite explains it, as altered (a warning). Nothing
  // is re-sent.
  // --sync-expunges: expunges on the target what this target received of
  // the folder's messages that the source has expunged since.
  // Returns false when the target refused (a warning says so; the messages stay there).
  bool sync_expunges(const FolderMapping& m, const imap::MailboxInfo& info, ImportFolderResult& result);
  void check_stored(const std::vector<std::pair<uint32_t, const MessageRecord*>>& appended,
                    const std::vector<SentBody>& bodies, ImportFolderResult& result);
  // The messages of one APPEND group, read from the archive and checked (a
  // message with an error is not sent); a pure function of the archive, so
  // the next group is prepared on another thread while this one is sent.
  struct Prepared {
    std::vector<MessageRecord> recs;
    std::vector<std::string> bodies;  // empty for a streamed one
    std::vector<std::string> errors;  // "" or why the message cannot be sent
    // A message of kStreamedObject bytes or more is not held: it was read
    // through once (checked, and scanned for at_risk) and is read again
    // from the archive as it is sent.
    std::vector<char> streamed;
    std::vector<char> risky;          // at_risk() of a streamed message
  };

  Prepared prepare(std::vector<MessageRecord> group) const;
  void append_group(const FolderMapping& m, Prepared& group, const imap::MailboxInfo& info,
                    const FlagFilter& filter, uint32_t& uidnext_hint, ImportFolderResult& result,
                    uint64_t& done, uint64_t& done_bytes);
  std::vector<std::string> target_flags(const MessageRecord& m, const FlagFilter& filter,
                                        ImportFolderResult& result);

  void load_appends(const std::vector<uint32_t>& folder_ids);
  // The folder's records from that pass the first time, else (a retry, or
  // records changed by this run) read afresh.
  FolderAppends take_appends(uint32_t folder_id);
  FolderAppends scan_appends(uint32_t folder_id) const;
  AppendRecord record_of(uint32_t folder_id, const FolderAppends& fa, const DoneAppend& d) const;
  std::unordered_map<uint32_t, FolderAppends> appends_;
  std::mutex appends_mutex_;          // connections side by side take from appends_
  AccountImport* owner_ = nullptr;    // the run's first connection, for an extra one
  AccountImport& root() { return owner_ ? *owner_ : *this; }
  // Kept by root(): messages failed in this run (every connection), for
  // --max-errors, and the rate caps every connection shares.
  std::atomic<uint64_t> failures_{0};
  std::unique_ptr<RateLimiter> limiter_;
  std::atomic<bool> provider_noted_{false};  // the detected provider was reported
  TargetNames detected_names_;               // the detected provider's name rules, when none were chosen
  // Kept by root(): source folders (by id) that neither side changed since
  // an earlier import finished them, with their present messages.
  std::unordered_map<uint32_t, uint64_t> unchanged_;
  // Finds the unchanged folders among `mappings` (one STATUS each on the target).
  void find_unchanged(const std::vector<FolderMapping>& mappings);
  // Whether this run may rely on, and write, import marks: a run that sends
  // every message, without a filter, and no Gmail label handling.
  bool marks_apply() const;
  // After `m` was imported completely: remembers what both sides look like.
  void mark_done(const FolderMapping& m, const std::optional<archive::MessageCounts>& counts,
                 const ImportFolderResult& result);
  // Gmail source (kept by root()): the source folder each X-GM-MSGID is sent
  // from (only messages in more than one folder, when the target is Gmail or
  // --gmail-labels primary), and into Gmail, the labels each gets.
  bool target_gmail_ = false;
  std::unordered_map<uint64_t, uint32_t> gmail_home_;
  std::unordered_map<uint64_t, std::vector<std::string>> gmail_labels_;
  void plan_gmail(const std::vector<FolderMapping>& mappings);
  // Into Gmail: sets the labels of the message just appended (or found) as `uid` of the selected folder.
  void store_labels(const MessageRecord& m, uint32_t uid, ImportFolderResult& result);
  // Whether `m` is sent from another folder than the one it is in.
  bool sent_elsewhere(const MessageRecord& m) const {
    if (!m.gm_msgid) return false;
    auto& home = owner_ ? owner_->gmail_home_ : gmail_home_;
    auto it = home.find(m.gm_msgid);
    return it != home.end() && it->second != m.key.folder_id;
  }
  bool too_many_errors() { return options_.policy.max_errors && root().failures_ >= options_.policy.max_errors; }
  // Not sent, by policy (--too-big skip): its in-flight record goes.
  void skip(ImportFolderResult& result, const MessageRecord& m, uint64_t limit, const std::string& reason);
  Folders* folders_ = nullptr;        // while folders are worked on
  int reconnects_ = 0;
  archive::AppendKey append_key(const MessageRecord& m) const { return {target_id_, m.key}; }
  void fail(ImportFolderResult& result, const MessageRecord& m, const std::string& error);

  const ImportOptions& options_;
  EventSink& events_;
  ImportSummary& summary_;
  Archive* shared_;                  // a batch's archive, or null: open one
  std::unique_ptr<Archive> owned_;
  Archive* archive_ = nullptr;
  std::unique_ptr<Batch> batch_;
  std::unique_ptr<imap::Session> session_;
  archive::AccountRecord account_;
  uint32_t target_id_ = 0;
  int64_t started_unix_ = unix_now();
  // Messages settled (appended, reconciled, failed) and flags restored: what
  // resets the retry budget. Recording messages as in flight is not progress.
  uint64_t settled_ = 0;
  // The MULTIAPPEND group in use: halved after each dropped connection (a
  // link that drops every few MB still gets groups through), grown back by a
  // quarter towards the options after each group that went through.
  size_t group_limit_ = 0;
  size_t max_group_ = 1;                // options_.append_batch, smaller under a rate cap
  uint64_t max_group_bytes_ = 1;        // options_.append_batch_bytes, likewise
  int connections_ = 1;               // options_.connections, or what 0 chose
  uint64_t group_bytes_limit_ = 0;
  uint64_t held_limit_ = kHeldBytesPerConnection;  // this connection's share of kHeldBytes (run_body)
  // Whether check_stored still compares the sizes of every stored copy: at
  // the start of each folder, and for as long as a group shows a difference.
  bool check_sizes_ = true;
};

void AccountImport::plan_gmail(const std::vector<FolderMapping>& mappings) {
  bool into_gmail = target_gmail_;
  if (!into_gmail && options_.policy.gmail_labels != GmailLabels::primary) return;
  // Every selected folder holding each X-GM-MSGID (present, current generation).
  std::unordered_map<uint64_t, std::vector<size_t>> holders;
  for (size_t i = 0; i < mappings.size(); ++i) {
    const auto& f = mappings[i].source;
    archive_->for_each_message(account_.id, f.id, f.uidvalidity, [&](const MessageRecord& r) {
      if (r.gm_msgid && r.state == archive::MessageState::present) holders[r.gm_msgid].push_back(i);
      return true;
    });
  }
  auto better = [&](size_t a, size_t b) {
    int ra = gmail_primary_rank(mappings[a].source), rb = gmail_primary_rank(mappings[b].source);
    if (into_gmail) {  // All Mail first: a message appended there gets only the labels stored
      ra = ra == 8 ? -1 : ra;
      rb = rb == 8 ? -1 : rb;
    }
    if (ra != rb) return ra < rb;
    return mappings[a].source.canonical_name() < mappings[b].source.canonical_name();
  };
  for (auto& [msgid, in] : holders) {
    size_t home = *std::min_element(in.begin(), in.end(), better);
    if (in.size() > 1) gmail_home_[msgid] = mappings[home].source.id;
    if (!into_gmail) continue;
    std::vector<std::string> labels;
    for (size_t i : in) {
      const auto& f = mappings[i].source;
      std::string label;
      switch (gmail_primary_rank(f)) {
        case 0: label = "\\Inbox"; break;
        case 1: label = "\\Sent"; break;
        case 2: label = "\\Draft"; break;
        case 3: label = mappings[i].target_raw; break;
        case 4: label = "\\Starred"; break;
        case 5: label = "\\Important"; break;
        default: break;  // Spam, Trash and All Mail are no labels
      }
      if (!label.empty() && std::find(labels.begin(), labels.end(), label) == labels.end()) labels.push_back(label);
    }
    if (!labels.empty()) gmail_labels_[msgid] = std::move(labels);
  }
}

void AccountImport::store_labels(const MessageRecord& m, uint32_t uid, ImportFolderResult& result) {
  AccountImport& r = root();
  if (!r.target_gmail_ || !m.gm_msgid || !uid) return;
  auto it = r.gmail_labels_.find(m.gm_msgid);
  if (it == r.gmail_labels_.end()) return;
  session_->store_gmail_labels(uid, it->second);
  ++result.gmail_labelled;
}

void AccountImport::emit(nlohmann::json event) {
  event["account"] = summary_.account;
  events_.emit(event);
}

void AccountImport::check_cancelled(const std::string& folder) {
  if (too_many_errors())
    throw Error(ErrorKind::policy,
                fmt::format("stopped after {} failed messages (--max-errors {}); what was sent is recorded",
                            root().failures_.load(), options_.policy.max_errors),
                Retry::never, {.account = summary_.account, .folder = folder});
  if ((options_.cancelled && options_.cancelled()) || (folders_ && folders_->stop))
    throw Error(ErrorKind::interrupted, "stopped before the import was complete", Retry::later,
                {.account = summary_.account, .folder = folder});
}

void AccountImport::ensure_session() {
  if (session_) return;
  session_ = imap::Session::connect(options_.endpoint);
  session_->login(options_.credentials);
  if (std::string provider = session_->detected_provider(); !provider.empty() && !root().provider_noted_.exchange(true)) {
    std::string applied = options_.on_provider && !options_.dry_run ? options_.on_provider(provider) : "";
    // Its folder-name rules, unless rules were chosen (--provider, a profile, the options).
    if (auto n = provider_target_names(provider); options_.policy.names.empty() && !n.empty()) {
      root().detected_names_ = n;
      std::string rules = n.case_insensitive ? "folder names compared without case" : "";
      for (auto& r : n.reserved) rules += (rules.empty() ? "" : ", ") + r + " reserved";
      applied += (applied.empty() ? "" : "; ") + rules;
    }
    emit({{"event", "provider"}, {"provider", provider}, {"detected", true}, {"applied", applied},
          {"text", fmt::format("{} is {} (X-GM-EXT-1): its provider profile applies{}{}",
                               options_.endpoint.address(), provider, applied.empty() ? "" : ": ", applied)}});
  }
}

void AccountImport::revive(const std::string& target_raw) {
  if (session_ && session_->alive()) return;
  drop_session();
  ensure_session();
  session_->select(target_raw);
}

void AccountImport::drop_session() {
  if (!session_) return;
  try {
    session_->logout();
  } catch (...) {
  }
  session_.reset();
}

void AccountImport::commit() {
  if (batch_ && (batch_->pending_changes() > 0)) batch_->commit();
}

void AccountImport::fail(ImportFolderResult& result, const MessageRecord& m, const std::string& error) {
  std::string hash = archive::to_hex(m.hash);
  result.failed.push_back({m.key.uid, hash, error});
  ++settled_;
  ++root().failures_;
  emit({{"event", "message_error"}, {"folder", result.source}, {"uid", m.key.uid}, {"hash", hash},
        {"error", error},
        {"text", fmt::format("account {}, folder {}, UID {}, object {}: {}", summary_.account, result.source,
                             m.key.uid, hash, error)}});
}

void AccountImport::skip(ImportFolderResult& result, const MessageRecord& m, uint64_t limit,
                         const std::string& reason) {
  batch_->erase_append(append_key(m));
  std::string hash = archive::to_hex(m.hash);
  result.skipped.push_back({m.key.uid, hash, m.size, limit, reason});
  ++settled_;
  emit({{"event", "message_skipped"}, {"folder", result.source}, {"uid", m.key.uid}, {"hash", hash},
        {"size", m.size}, {"limit", limit}, {"policy", "--too-big skip"}, {"reason", reason},
        {"text", fmt::format("account {}, folder {}, UID {}, object {}: skipped by policy (--too-big skip): {}",
                             summary_.account, result.source, m.key.uid, hash, reason)}});
}

void AccountImport::FolderAppends::add(const AppendRecord& r) {
  if (r.state != AppendState::done) {
    in_flight.push_back(r);
    return;
  }
  auto t = std::find(targets.begin(), targets.end(), r.target_folder);
  if (t == targets.end()) t = targets.insert(t, r.target_folder);
  done.push_back({r.key.source.uidvalidity, r.key.source.uid, r.target_uid, r.target_uidvalidity, r.flags,
                  static_cast<uint32_t>(t - targets.begin()), r.keywords});
}

const AccountImport::DoneAppend* AccountImport::FolderAppends::find(uint32_t uidvalidity, uint32_t uid) const {
  auto it = std::lower_bound(done.begin(), done.end(), std::pair{uidvalidity, uid},
                             [](const DoneAppend& d, const std::pair<uint32_t, uint32_t>& k) {
                               return std::pair{d.uidvalidity, d.uid} < k;
                             });
  if (it == done.end() || it->uidvalidity != uidvalidity || it->uid != uid) return nullptr;
  return &*it;
}

void AccountImport::load_appends(const std::vector<uint32_t>& folder_ids) {
  appends_.clear();
  if (!target_id_) return;
  std::set<uint32_t> wanted(folder_ids.begin(), folder_ids.end());
  archive_->for_each_append(target_id_, [&](const AppendRecord& r) {
    if (r.key.source.account_id == account_.id && wanted.count(r.key.source.folder_id))
      appends_[r.key.source.folder_id].add(r);
    return true;
  });
  for (uint32_t id : wanted) appends_.try_emplace(id);  // present: read, even when empty
}

AccountImport::FolderAppends AccountImport::scan_appends(uint32_t folder_id) const {
  FolderAppends fa;
  if (!target_id_) return fa;
  // Key order is (account, folder, ...): stop once past this folder.
  archive_->for_each_append(target_id_, [&](const AppendRecord& r) {
    auto k = std::pair{r.key.source.account_id, r.key.source.folder_id};
    if (k > std::pair{account_.id, folder_id}) return false;
    if (k == std::pair{account_.id, folder_id}) fa.add(r);
    return true;
  });
  return fa;
}

AccountImport::FolderAppends AccountImport::take_appends(uint32_t folder_id) {
  AccountImport& o = owner_ ? *owner_ : *this;
  {
    std::lock_guard lock(o.appends_mutex_);
    auto it = o.appends_.find(folder_id);
    if (it != o.appends_.end()) {
      FolderAppends fa = std::move(it->second);
      o.appends_.erase(it);
      return fa;
    }
  }
  return scan_appends(folder_id);
}

AppendRecord AccountImport::record_of(uint32_t folder_id, const FolderAppends& fa, const DoneAppend& d) const {
  AppendRecord r;
  r.key = {target_id_, {account_.id, folder_id, d.uidvalidity, d.uid}};
  r.state = AppendState::done;
  r.target_folder = fa.targets.at(d.target_name);
  r.target_uidvalidity = d.target_uidvalidity;
  r.target_uid = d.target_uid;
  r.flags = d.flags;
  r.keywords = d.keywords;
  return r;
}

std::vector<std::string> AccountImport::target_flags(const MessageRecord& m, const FlagFilter& filter,
                                                     ImportFolderResult& result) {
  std::vector<std::string> kept;
  for (auto& f : archive::flags_to_imap(m.flags, m.keywords)) {
    if (filter.keeps(f)) {
      kept.push_back(f);
    } else if (std::find(result.dropped_flags.begin(), result.dropped_flags.end(), f) == result.dropped_flags.end()) {
      result.dropped_flags.push_back(f);
      emit({{"event", "warning"}, {"folder", result.source}, {"flag", f},
            {"text", fmt::format("folder {} -> {}: the target does not keep the flag {} (not in PERMANENTFLAGS); "
                                 "messages are imported without it", result.source, result.target, f)}});
    }
  }
  return kept;
}

void AccountImport::run() {
  try {
    run_body();
  } catch (const std::exception& e) {
    if (archive_ && !options_.dry_run && summary_.run_id && !run_ended_) {
      auto details = summary_.to_json();
      details["error"] = e.what();
      try {
        archive_->end_run(summary_.run_id, "failed", details.dump());
      } catch (...) {
      }
    }
    throw;
  }
}

void AccountImport::run_body() {
  auto started = Clock::now();
  ensure_session();  // a refused login leaves no trace in the archive
  connections_ = options_.connections;
  if (connections_ <= 0) {
    auto t0 = Clock::now();
    session_->noop();
    auto round_trip = Clock::now() - t0;
    connections_ = round_trip >= exporting::kFarRoundTrip ? 4 : 2;
    double ms = std::chrono::duration<double, std::milli>(round_trip).count();
    emit({{"event", "connections"}, {"connections", connections_}, {"round_trip_ms", ms},
          {"text", fmt::format("{} connections (a round trip takes {:.1f} ms)", connections_, ms)}});
  }
  if (shared_) {
    archive_ = shared_;
  } else {
    owned_ = Archive::open(options_.archive_dir, options_.dry_run ? Archive::Mode::read : Archive::Mode::write);
    archive_ = owned_.get();
  }
  account_ = archive::resolve_account(*archive_, options_.account);
  summary_.account = account_.name;
  if (summary_.target.empty())
    summary_.target = options_.credentials.user + "@" + options_.endpoint.address();

  summary_.policy = options_.policy;
  if (summary_.policy.names.empty()) summary_.policy.names = detected_names_;
  if (!options_.dry_run) {
    batch_ = std::make_unique<Batch>(*archive_);
    target_id_ = archive_->put_target(summary_.target);
    nlohmann::json details = summary_.to_json();
    summary_.run_id = archive_->begin_run("import", summary_.account, details.dump());
  } else if (auto id = archive_->find_target(summary_.target)) {
    target_id_ = *id;
  }

  std::vector<imap::ListEntry> target_list;
  std::vector<imap::Namespace> ns;
  run_with_retries(
      options_.retry,
      [&] {
        ensure_session();
        target_list = session_->list();
        ns = session_->namespaces();
      },
      [&] { drop_session(); }, [](const Error&, int, std::chrono::milliseconds) {}, [] { return uint64_t{0}; });

  std::vector<archive::FolderRecord> source, others;  // others: left out, their names still claimed
  for (auto& f : archive_->folders(account_.id))
    (folder_selected(f.canonical_name(), options_.include, options_.exclude) ? source : others).push_back(f);
  auto mappings = map_folders(source, target_list, ns, options_.map, options_.policy.subfolder, summary_.policy.names,
                              others);
  for (auto& m : mappings) {
    std::string name = m.source.canonical_name();
    if (m.skipped) {
      emit({{"event", "mapping"}, {"source", name}, {"source_raw", m.source.name_raw}, {"skipped", true},
            {"reason", m.reason}, {"text", fmt::format("{}: {}", name, m.reason)}});
      continue;
    }
    std::string extra = m.exists ? "" : (m.create_use.empty() ? ", will be created"
                                                              : ", will be created as " + m.create_use);
    emit({{"event", "mapping"}, {"source", name}, {"source_raw", m.source.name_raw}, {"target", m.target_utf8},
          {"target_raw", m.target_raw}, {"reason", m.reason}, {"exists", m.exists},
          {"text", fmt::format("{} -> {} ({}{})", name, m.target_utf8, m.reason, extra)}});
  }
  std::erase_if(mappings, [](const FolderMapping& m) { return m.skipped; });
  target_gmail_ = session_->has_capability("X-GM-EXT-1");
  plan_gmail(mappings);
  if (!gmail_home_.empty())
    emit({{"event", "info"}, {"messages", gmail_home_.size()},
          {"text", target_gmail_
                       ? fmt::format("{} Gmail messages are in several folders: each is appended once and its "
                                     "other folders set as labels", gmail_home_.size())
                       : fmt::format("{} Gmail messages are in several folders: each is appended once, into its "
                                     "primary folder (--gmail-labels primary)", gmail_home_.size())}});

  if (!options_.dry_run) {
    find_unchanged(mappings);
    std::vector<uint32_t> ids;
    for (auto& m : mappings)
      if (!unchanged_.count(m.source.id)) ids.push_back(m.source.id);
    if (!ids.empty()) load_appends(ids);
    // The account's totals from the index: messages without a confirmed copy on this target.
    uint64_t messages = 0, bytes = 0;
    for (auto& m : mappings) {
      if (unchanged_.count(m.source.id)) continue;
      const FolderAppends& fa = appends_[m.source.id];
      archive_->for_each_message(account_.id, m.source.id, m.source.uidvalidity, [&](const MessageRecord& r) {
        if (r.state != archive::MessageState::present) return true;
        if (fa.find(r.key.uidvalidity, r.key.uid)) return true;
        if (sent_elsewhere(r)) return true;
        if (!options_.policy.filter.matches(r.internaldate, r.size)) return true;
        ++messages;
        bytes += r.size;
        return true;
      });
    }
    emit({{"event", "totals"}, {"command", "import"}, {"folders", mappings.size()}, {"messages_total", messages},
          {"bytes_total", bytes}});
  }
  summary_.folders.resize(mappings.size());
  limiter_ = std::make_unique<RateLimiter>(options_.policy.max_bytes_per_second, options_.policy.max_messages_per_second);
  max_group_ = std::max<size_t>(1, std::min<uint64_t>(options_.append_batch, limiter_->messages_per_send()));
  // The connections that will take folders (this one and the extra ones
  // started below, one per folder at most): each gets an equal share of kHeldBytes.
  const size_t lanes =
      options_.dry_run ? 1 : std::max<size_t>(1, std::min<size_t>(std::max(1, connections_), mappings.size()));
  held_limit_ = std::clamp(kHeldBytes / lanes, kMinHeldBytes, kHeldBytesPerConnection);
  max_group_bytes_ = std::max<uint64_t>(
      1, std::min({options_.append_batch_bytes, limiter_->bytes_per_send(), held_limit_}));
  group_limit_ = max_group_;
  group_bytes_limit_ = max_group_bytes_;
  for (size_t i = 0; i < mappings.size(); ++i) {
    summary_.folders[i].source = mappings[i].source.canonical_name();
    summary_.folders[i].target = mappings[i].target_utf8;
    summary_.folders[i].reason = mappings[i].reason;
  }
  Folders folders(mappings);
  {
    const size_t extra = lanes - 1;  // beside this one
    std::vector<std::unique_ptr<AccountImport>> others;
    std::vector<std::thread> threads;
    for (size_t k = 0; k < extra; ++k) {
      others.push_back(std::unique_ptr<AccountImport>(new AccountImport(*this, folders)));
      threads.emplace_back([&folders, other = others.back().get()] { other->work_extra(folders); });
    }
    work_folders(folders);
    for (auto& t : threads) t.join();
    for (auto& o : others) reconnects_ += o->reconnects_;
  }
  summary_.reconnects += reconnects_;
  std::exception_ptr fatal = folders.fatal;
  summary_.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  if (!options_.dry_run) {
    try {
      commit();
    } catch (...) {
      if (!fatal) fatal = std::current_exception();
    }
    try {
      run_ended_ = true;
      archive_->end_run(summary_.run_id, fatal ? "failed" : (summary_.complete() ? "ok" : "partial"),
                        summary_.to_json().dump());
    } catch (...) {
    }
  }
  drop_session();
  if (fatal) std::rethrow_exception(fatal);
}

void AccountImport::work_extra(Folders& folders) {
  try {
    ensure_session();
  } catch (const std::exception& e) {
    emit({{"event", "warning"}, {"error", e.what()},
          {"text", fmt::format("an extra connection to the target failed ({}); the others go on", e.what())}});
    drop_session();
    return;
  }
  batch_ = std::make_unique<Batch>(*archive_);
  work_folders(folders);
  try {
    commit();
  } catch (...) {
    std::lock_guard lock(folders.mutex);
    if (!folders.fatal) folders.fatal = std::current_exception();
    folders.stop = true;
  }
  drop_session();
}

void AccountImport::work_folders(Folders& folders) {
  folders_ = &folders;
  auto& mappings = folders.mappings;
  while (!folders.stop) {
    size_t i = folders.next++;
    if (i >= mappings.size()) break;
    auto& m = mappings[i];
    auto& result = summary_.folders[i];
    try {
      check_cancelled(result.source);
      run_with_retries(
          options_.retry,
          [&] {
            ensure_session();
            if (options_.dry_run) plan_folder(m, result);
            else import_folder(m, result, i, mappings.size());
          },
          [&] {
            commit();
            drop_session();
            group_limit_ = std::max<size_t>(1, group_limit_ / 2);
            group_bytes_limit_ = std::max<uint64_t>(1, group_bytes_limit_ / 2);
          },
          [&](const Error& e, int attempt, std::chrono::milliseconds delay) {
            ++reconnects_;
            emit({{"event", "reconnect"}, {"folder", result.source}, {"attempt", attempt},
                  {"delay", delay.count() / 1000.0}, {"error", e.what()},
                  {"text", fmt::format("{}; reconnecting in {:.1f} s (attempt {} of {})", e.what(),
                                       delay.count() / 1000.0, attempt + 1, options_.retry.max_attempts)}});
          },
          [&] { return settled_; });
    } catch (const Error& e) {
      result.error = e.what();
      if ((e.kind() == ErrorKind::protocol || e.kind() == ErrorKind::limit) && e.retry() == Retry::never) {
        emit({{"event", "folder_error"}, {"folder", result.source}, {"error", e.what()},
              {"text", fmt::format("folder {} -> {}: {}", result.source, result.target, e.what())}});
        continue;
      }
      std::lock_guard lock(folders.mutex);
      if (!folders.fatal) folders.fatal = std::current_exception();
      folders.stop = true;
      break;
    } catch (...) {
      std::lock_guard lock(folders.mutex);
      if (!folders.fatal) folders.fatal = std::current_exception();
      folders.stop = true;
      break;
    }
  }
  folders_ = nullptr;
}

bool AccountImport::marks_apply() const {
  const AccountImport& r = owner_ ? *owner_ : *this;
  return target_id_ && !options_.dry_run && options_.policy.filter.empty() && !r.target_gmail_ &&
         r.gmail_home_.empty();
}

void AccountImport::find_unchanged(const std::vector<FolderMapping>& mappings) {
  if (!marks_apply()) return;
  for (auto& m : mappings) {
    if (!m.exists || m.source.noselect) continue;
    auto mark = archive_->import_mark(target_id_, account_.id, m.source.id, m.source.uidvalidity);
    if (!mark || mark->target_folder != m.target_raw || (options_.sync_expunges && !mark->expunges_synced)) continue;
    auto counts = archive_->message_counts(account_.id, m.source.id, m.source.uidvalidity);
    if (!counts || counts->changes != mark->changes) continue;
    imap::StatusInfo st;
    run_with_retries(
        options_.retry, [&] {
          ensure_session();
          st = session_->status(m.target_raw);
        },
        [&] { drop_session(); }, [](const Error&, int, std::chrono::milliseconds) {}, [] { return uint64_t{0}; });
    if (st.uidvalidity == mark->target_uidvalidity && st.uidnext == mark->target_uidnext &&
        st.messages == mark->target_messages)
      unchanged_[m.source.id] = counts->present;
  }
}

void AccountImport::mark_done(const FolderMapping& m, const std::optional<archive::MessageCounts>& counts,
                              const ImportFolderResult& result) {
  if (!counts || !marks_apply() || !result.failed.empty() || !result.skipped.empty() || result.filtered_out ||
      result.gmail_elsewhere)
    return;
  commit();  // the done records first: a mark never speaks for records that are not durable
  try {
    // SELECT again: the session's view of the selected folder may not show its own appends' UIDNEXT.
    auto info = session_->select(m.target_raw);
    uint32_t uidnext = uidnext_of(m.target_raw, info);
    if (!info.uidvalidity || !uidnext) return;
    archive::ImportMark mark{counts->changes, m.target_raw, info.uidvalidity, uidnext, info.exists,
                             options_.sync_expunges};
    archive_->put_import_mark(target_id_, account_.id, m.source.id, m.source.uidvalidity, mark);
  } catch (const Error& e) {
    // The folder is imported; without a mark the next run only reads it again.
    if (e.retry() == Retry::now) throw;
  }
}

void AccountImport::plan_folder(const FolderMapping& m, ImportFolderResult& result) {
  archive_->for_each_message(account_.id, m.source.id, m.source.uidvalidity, [&](const MessageRecord& source) {
    if (source.state != archive::MessageState::present) return true;
    ++result.source_messages;
    std::optional<AppendRecord> r;
    if (target_id_) r = archive_->append({target_id_, source.key});
    if (r && r->state == AppendState::done) ++result.already_there;
    else if (!options_.policy.filter.matches(source.internaldate, source.size)) ++result.filtered_out;
    else ++result.to_append;
    return true;
  });
  emit({{"event", "folder_done"}, {"folder", result.source}, {"dry_run", true}, {"to_append", result.to_append},
        {"text", fmt::format("{} -> {}: {} of {} messages to append", result.source, result.target,
                             result.to_append, result.source_messages)}});
}

std::optional<uint32_t> AccountImport::match_rewritten(
    const AppendRecord& p, std::unordered_map<std::string, std::vector<std::pair<uint32_t, int64_t>>>& by_fingerprint,
    const std::set<uint32_t>& claimed) {
  if (by_fingerprint.empty()) return std::nullopt;
  auto source = archive_->message(p.key.source);
  if (!source) return std::nullopt;
  std::string bytes;
  try {
    bytes = archive_->read_object(source->hash);
  } catch (const Error&) {
    return std::nullopt;
  }
  auto it = by_fingerprint.find(archive::to_hex(rewrite_fingerprint(bytes)));
  if (it == by_fingerprint.end()) return std::nullopt;
  for (auto c = it->second.begin(); c != it->second.end(); ++c) {
    if (claimed.count(c->first) || c->second != source->internaldate) continue;
    // Equal fingerprints make a rewrite possible; the bytes confirm it.
    auto fm = session_->fetch_one(c->first);
    if (!fm || !classify_rewrite(bytes, fm->body)) continue;
    uint32_t uid = c->first;
    it->second.erase(c);
    return uid;
  }
  return std::nullopt;
}

bool AccountImport::reconcile(const FolderMapping& m, const imap::MailboxInfo& info, ImportFolderResult& result,
                              const FolderAppends& fa) {
  // Records of this source folder that need settling, and target UIDs already claimed.
  std::vector<AppendRecord> pending;
  std::set<uint32_t> claimed;
  bool changed = false;
  for (auto& r : fa.in_flight) {
    if (r.target_folder == m.target_raw) {
      pending.push_back(r);
    } else {
      batch_->erase_append(r.key);  // the mapping changed since: send it to the current target folder
      changed = true;
    }
  }
  for (auto& d : fa.done)
    if (fa.targets[d.target_name] == m.target_raw && d.target_uidvalidity != info.uidvalidity)
      pending.push_back(record_of(m.source.id, fa, d));  // the target folder was recreated since: is the message still there?
  if (pending.empty()) {
    if (changed) commit();
    return changed;
  }
  for (auto& d : fa.done)
    if (fa.targets[d.target_name] == m.target_raw && d.target_uidvalidity == info.uidvalidity && d.target_uid)
      claimed.insert(d.target_uid);
  emit({{"event", "info"}, {"folder", result.source},
        {"text", fmt::format("{} -> {}: reconciling {} messages whose APPEND was interrupted", result.source,
                             result.target, pending.size())}});

  // Candidates on the target, by hash: the messages from the lowest recorded
  // UIDNEXT on; and by rewrite fingerprint with their INTERNALDATE, for a
  // server that stored a message in a changed form (Cyrus, Courier).
  std::unordered_map<std::string, std::vector<uint32_t>> by_hash;
  std::unordered_map<std::string, std::vector<std::pair<uint32_t, int64_t>>> by_fingerprint;
  uint32_t lowest = 0;
  bool recent = false;       // an interrupted APPEND of the last few minutes: its session may still be saving
  bool earlier_run = false;  // ... sent by a run before this one
  int64_t now = unix_now();
  for (auto& p : pending) {
    if (p.state == AppendState::in_flight && p.target_uidvalidity == info.uidvalidity && p.target_uid) {
      lowest = lowest ? std::min(lowest, p.target_uid) : p.target_uid;
      if (p.when + kRecentAppendSeconds >= now) recent = true;
      if (p.when < started_unix_) earlier_run = true;
    }
  }
  uint32_t fetched_from = lowest;  // the target's messages from here on are in by_hash
  auto fetch_candidates = [&](uint32_t from) {
    session_->fetch_messages({{from, 0}}, [&](imap::FetchedMessage&& fm) {
      if (fm.uid < from || claimed.count(fm.uid)) return;
      by_hash[archive::to_hex(archive::sha256(fm.body))].push_back(fm.uid);
      by_fingerprint[archive::to_hex(rewrite_fingerprint(fm.body))].emplace_back(fm.uid, fm.internaldate);
    });
  };
  if (lowest) {
    fetch_candidates(lowest);
    fetched_from = std::max(lowest, info.uidnext);
  }
  auto settle = [&](AppendRecord r, uint32_t uid) {
    if (root().target_gmail_)
      if (auto source = archive_->message(r.key.source)) store_labels(*source, uid, result);
    r.state = AppendState::done;
    r.target_uid = uid;
    r.target_uidvalidity = info.uidvalidity;
    r.when = unix_now();
    batch_->put_append(r);
    claimed.insert(uid);
    ++result.reconciled;
    ++settled_;
  };
  // In flight with a UID hint: matched by hash among the candidates, else by
  // rewrite fingerprint and INTERNALDATE (the server changed the bytes).
  std::vector<std::pair<AppendRecord, std::string>> unmatched;
  auto match = [&](std::vector<std::pair<AppendRecord, std::string>>& records) {
    std::vector<std::pair<AppendRecord, std::string>> left;
    for (auto& [p, hex] : records) {
      auto it = by_hash.find(hex);
      if (it != by_hash.end())  // a UID the Message-ID search settled meanwhile is taken
        std::erase_if(it->second, [&](uint32_t uid) { return claimed.count(uid) > 0; });
      if (it != by_hash.end() && !it->second.empty()) {
        settle(p, it->second.front());
        it->second.erase(it->second.begin());
        continue;
      }
      if (auto uid = match_rewritten(p, by_fingerprint, claimed)) {
        settle(p, *uid);
        continue;
      }
      left.emplace_back(p, hex);
    }
    records = std::move(left);
  };
  for (auto& p : pending) {
    auto source = archive_->message(p.key.source);
    if (!source) {
      batch_->erase_append(p.key);
      continue;
    }
    std::string hex = archive::to_hex(source->hash);
    if (p.state == AppendState::in_flight && p.target_uidvalidity == info.uidvalidity && p.target_uid) {
      unmatched.emplace_back(p, hex);
      continue;
    }
    // No usable UID hint: look for the message by Message-ID or date, and compare bytes.
    std::string bytes;
    try {
      bytes = archive_->read_object(source->hash);
    } catch (const Error&) {
      batch_->erase_append(p.key);  // the append loop reports the damaged object
      continue;
    }
    if (auto uid = find_on_target(bytes, source->hash, source->internaldate, claimed)) settle(p, *uid);
    else batch_->erase_append(p.key);
  }
  match(unmatched);
  // The session that sent them may have died after its last byte, with the
  // server still saving: the messages appear at its commit, possibly after
  // this session's SELECT. Sending them again then would duplicate them, so
  // wait (a bounded time) for the folder's UIDNEXT to move before giving up.
  if (!unmatched.empty() && recent) {
    auto deadline = Clock::now() + (earlier_run ? kCrashSettleTime : kRetrySettleTime);
    while (!unmatched.empty() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      // SELECT again: STATUS on the selected folder may answer from this session's stale view.
      uint32_t uidnext = uidnext_of(m.target_raw, session_->select(m.target_raw));
      if (uidnext > fetched_from) {
        fetch_candidates(fetched_from);
        fetched_from = uidnext;
        match(unmatched);
      }
    }
  }
  for (auto& [p, hex] : unmatched) batch_->erase_append(p.key);  // never arrived: it will be sent again
  commit();
  return true;
}

AccountImport::Prepared AccountImport::prepare(std::vector<MessageRecord> group) const {
  Prepared p;
  p.recs = std::move(group);
  p.bodies.resize(p.recs.size());
  p.errors.resize(p.recs.size());
  p.streamed.resize(p.recs.size(), 0);
  p.risky.resize(p.recs.size(), 0);
  for (size_t i = 0; i < p.recs.size(); ++i) {
    const MessageRecord& rec = p.recs[i];
    // What the archive holds is checked like anything from outside: a value
    // no server would take fails this message alone, before anything is sent.
    if (rec.keywords.size() > imap::kMaxKeywords) {
      p.errors[i] = fmt::format("it has {} keywords, more than {}; not sent", rec.keywords.size(), imap::kMaxKeywords);
      continue;
    }
    imap::AppendItem probe;
    probe.flags = archive::flags_to_imap(rec.flags, rec.keywords);
    probe.internaldate = rec.internaldate;
    probe.internaldate_tz = rec.internaldate_tz;
    if (auto problem = imap::append_problem(probe)) {
      p.errors[i] = *problem + "; not sent";
      continue;
    }
    if (rec.size > options_.endpoint.max_message_size) {
      p.errors[i] = fmt::format("{} bytes is over the maximum message size of {} bytes (--max-message-size); "
                                "not sent", rec.size, options_.endpoint.max_message_size);
      continue;
    }
    try {
      if (rec.size >= archive::kStreamedObject) {
        AtRiskScan scan;
        uint64_t size = 0;
        archive_->read_object_to(rec.hash, [&](std::string_view piece) {
          scan.add(piece);
          size += piece.size();
        });
        p.streamed[i] = 1;
        p.risky[i] = scan.at_risk();
        p.recs[i].size = size;  // what will be sent
      } else {
        p.bodies[i] = archive_->read_object(rec.hash);
      }
    } catch (const Error& e) {
      p.errors[i] = e.message();
    }
  }
  return p;
}

void AccountImport::append_group(const FolderMapping& m, Prepared& group,
                                 const imap::MailboxInfo& info, const FlagFilter& filter, uint32_t& uidnext_hint,
                                 ImportFolderResult& result, uint64_t& done, uint64_t& done_bytes) {
  if (group.recs.empty()) return;
  std::vector<std::string> bodies;
  std::vector<SentBody> sent;  // sizes, and what check_stored needs
  bodies.reserve(group.recs.size());  // never moves: `sent` points into it
  std::vector<std::vector<std::string>> flags;
  std::vector<MessageRecord> ready;
  revive(m.target_raw);
  uint64_t limit = session_->append_limit();
  // Not sent: its in-flight record goes, and it fails alone.
  auto refuse = [&](const MessageRecord& rec, const std::string& error) {
    batch_->erase_append(append_key(rec));
    fail(result, rec, error);
  };
  for (size_t i = 0; i < group.recs.size(); ++i) {
    const MessageRecord& rec = group.recs[i];
    if (!group.errors[i].empty()) {
      refuse(rec, group.errors[i]);
      continue;
    }
    const uint64_t size = group.streamed[i] ? rec.size : group.bodies[i].size();
    if (limit && size > limit) {
      std::string why = fmt::format("{} bytes is over the target's APPENDLIMIT of {} bytes", size, limit);
      if (options_.policy.skip_too_big) skip(result, rec, limit, why);
      else refuse(rec, why);
      continue;
    }
    flags.push_back(target_flags(rec, filter, result));
    bodies.push_back(std::move(group.bodies[i]));
    sent.push_back({group.streamed[i] ? nullptr : &bodies.back(), size, rec.hash, group.streamed[i] && group.risky[i]});
    ready.push_back(rec);
  }
  group = Prepared{};
  if (ready.empty()) return;

  // Every message here was recorded as in flight, durably, before this group
  // (import_folder's window); the first byte goes out only now.

  auto send = [&](size_t from, size_t to, bool synchronizing) {
    std::vector<imap::AppendItem> items;
    uint64_t bytes = 0;
    for (size_t i = from; i < to; ++i) {
      imap::AppendItem& item = items.emplace_back();
      item.flags = flags[i];
      item.internaldate = ready[i].internaldate;
      item.internaldate_tz = ready[i].internaldate_tz;
      item.bytes = bodies[i];
      if (!sent[i].bytes) {
        item.size = sent[i].size;
        item.produce = [this, hash = sent[i].hash](const std::function<void(std::string_view)>& out) {
          archive_->read_object_to(hash, out);
        };
      }
      bytes += sent[i].size;
    }
    if (options_.policy.before_append) options_.policy.before_append(bytes, to - from);
    root().limiter_->acquire(bytes, to - from);
    return session_->append(m.target_raw, items, synchronizing);
  };
  std::vector<imap::AppendResult> results = send(0, ready.size(), false);
  if (ready.size() > 1 && std::none_of(results.begin(), results.end(), [](auto& r) { return r.ok; })) {
    // A MULTIAPPEND fails as a whole: send one by one, each waiting for the
    // server's go-ahead, so only the bad ones fail.
    results.clear();
    for (size_t i = 0; i < ready.size(); ++i) {
      revive(m.target_raw);
      results.push_back(send(i, i + 1, true).at(0));
    }
  }
  // Into Gmail: the labels first, so a done record means the labels are set
  // too (an interruption before leaves the record in flight; reconcile
  // finds the message and sets them).
  for (size_t i = 0; i < ready.size(); ++i)
    if (results.at(i).ok && (results[i].uidvalidity == 0 || results[i].uidvalidity == info.uidvalidity))
      store_labels(ready[i], results[i].uid, result);
  bool have_uids = false;
  std::vector<std::pair<uint32_t, const MessageRecord*>> stored;
  std::vector<SentBody> stored_bodies;
  for (size_t i = 0; i < ready.size(); ++i) {
    auto& res = results.at(i);
    if (!res.ok) {
      if (res.too_big && options_.policy.skip_too_big) {
        skip(result, ready[i], limit, "the target refused it as too big: " + res.error);
        continue;
      }
      batch_->erase_append(append_key(ready[i]));
      fail(result, ready[i], res.too_big ? "the target refused it as too big: " + res.error
                                         : "the target refused the APPEND: " + res.error);
      continue;
    }
    AppendRecord r;
    r.key = append_key(ready[i]);
    r.state = AppendState::done;
    r.target_folder = m.target_raw;
    r.target_uidvalidity = res.uidvalidity ? res.uidvalidity : info.uidvalidity;
    r.target_uid = res.uid;
    archive::parse_flags(flags[i], r.flags, r.keywords);
    r.when = unix_now();
    batch_->put_append(r);
    if (res.uid) {
      have_uids = true;
      uidnext_hint = std::max(uidnext_hint, res.uid + 1);
      if (res.uidvalidity == 0 || res.uidvalidity == info.uidvalidity) {
        stored.emplace_back(res.uid, &ready[i]);
        stored_bodies.push_back(sent[i]);
      }
    }
    ++result.appended;
    ++settled_;
    result.bytes_appended += sent[i].size;
    ++done;
    done_bytes += sent[i].size;
  }
  if (options_.policy.restore_flagged) {
    // The target drops \Flagged given with APPEND: set the flags again.
    for (size_t i = 0; i < ready.size(); ++i) {
      if (!results.at(i).ok || !results[i].uid) continue;
      if (std::find(flags[i].begin(), flags[i].end(), "\\Flagged") == flags[i].end()) continue;
      if (results[i].uidvalidity && results[i].uidvalidity != info.uidvalidity) continue;
      session_->store_flags(results[i].uid, flags[i]);
    }
  }
  // The done records become durable with the next window's commit (or at the
  // end of the folder): lost in a crash, their in-flight records are
  // reconciled by hash on the next run, so nothing is sent twice.
  check_stored(stored, stored_bodies, result);
  group_limit_ = std::min(max_group_, group_limit_ + (group_limit_ + 3) / 4);
  group_bytes_limit_ = std::min(max_group_bytes_, group_bytes_limit_ + (group_bytes_limit_ + 3) / 4);
  if (!have_uids) uidnext_hint = std::max(uidnext_hint, session_->status(m.target_raw).uidnext);
}

uint32_t AccountImport::uidnext_of(const std::string& target_raw, const imap::MailboxInfo& info) {
  if (info.uidnext) return info.uidnext;
  if (uint32_t n = session_->status(target_raw).uidnext) return n;
  uint32_t highest = 0;  // UID FETCH 4294967295:* answers with the last message, whatever its UID
  if (info.exists)
    session_->fetch_flags({{UINT32_MAX, 0}}, std::nullopt,
                          [&](imap::FlagUpdate&& u) { highest = std::max(highest, u.uid); });
  return highest + 1;
}

std::optional<uint32_t> AccountImport::find_on_target(const std::string& bytes, const archive::Hash& hash,
                                                      int64_t internaldate, const std::set<uint32_t>& claimed) {
  auto same = [&](const imap::FetchedMessage& fm) {
    return archive::sha256(fm.body) == hash || (fm.internaldate == internaldate && classify_rewrite(bytes, fm.body));
  };
  std::string id = extract_message_id(bytes);
  if (!id.empty()) {
    for (uint32_t uid : session_->search_message_id(id)) {
      if (claimed.count(uid)) continue;
      auto fm = session_->fetch_one(uid);
      if (fm && same(*fm)) return uid;
    }
  }
  // Without a Message-ID (drafts often have none), or with one the server
  // changed: the messages of the days around its INTERNALDATE (SEARCH SINCE
  // and BEFORE compare dates in the server's zone, hence a day either side).
  std::vector<imap::UidRange> candidates;
  for (uint32_t uid : session_->search_selected({{1, 0}}, std::max<int64_t>(internaldate - 86400, 0),
                                                internaldate + 2 * 86400, std::nullopt, std::nullopt))
    if (!claimed.count(uid)) candidates.push_back({uid, uid});
  std::optional<uint32_t> found;
  for (size_t at = 0; at < candidates.size() && !found; at += 200) {
    std::vector<imap::UidRange> part(candidates.begin() + at,
                                     candidates.begin() + std::min(candidates.size(), at + 200));
    session_->fetch_messages(part, [&](imap::FetchedMessage&& fm) {
      if (!found && !claimed.count(fm.uid) && same(fm)) found = fm.uid;
    });
  }
  return found;
}

bool AccountImport::target_has(const std::string& name_raw) {
  try {
    session_->status(name_raw);
    return true;
  } catch (const Error& e) {
    if (e.retry() == Retry::now) throw;
    return false;
  }
}

void AccountImport::create_folder(FolderMapping& m, ImportFolderResult& result) {
  try {
    session_->create(m.target_raw, m.create_use);
    result.created = true;
    return;
  } catch (const Error& e) {
    if (e.retry() == Retry::now) throw;
    if (target_has(m.target_raw)) return;  // created meanwhile, or by an interrupted attempt
    // Refused: a name the server accepts, the same on every run.
    std::string safe = acceptable_name(m.target_utf8);
    std::string safe_raw = imap::utf7_encode(safe);
    if (safe != m.target_utf8) {
      try {
        session_->create(safe_raw, m.create_use);
        result.created = true;
      } catch (const Error& again) {
        if (again.retry() == Retry::now) throw;
        if (!target_has(safe_raw)) throw Error(ErrorKind::protocol, e.message(), Retry::never, e.where());
      }
      emit({{"event", "warning"}, {"folder", result.source}, {"target", safe}, {"refused", m.target_utf8},
            {"error", e.message()},
            {"text", fmt::format("folder {}: the target refused the name {} ({}); imported as {} instead",
                                 result.source, m.target_utf8, e.message(), safe)}});
      m.target_utf8 = safe;
      m.target_raw = safe_raw;
      result.target = safe;
      result.reason += ", renamed: the target refused the name";
      return;
    }
    throw Error(ErrorKind::protocol, e.message(), Retry::never, e.where());
  }
}

bool AccountImport::sync_expunges(const FolderMapping& m, const imap::MailboxInfo& info,
                                  ImportFolderResult& result) {
  std::vector<uint32_t> uids;
  std::vector<archive::AppendKey> keys;
  archive_->for_each_message(account_.id, m.source.id, m.source.uidvalidity, [&](const MessageRecord& r) {
    if (r.state != archive::MessageState::expunged) return true;
    auto a = archive_->append(append_key(r));
    if (a && a->state == AppendState::done && a->target_folder == m.target_raw &&
        a->target_uidvalidity == info.uidvalidity && a->target_uid) {
      uids.push_back(a->target_uid);
      keys.push_back(a->key);
    }
    return true;
  });
  constexpr size_t kChunk = 500;
  for (size_t from = 0; from < uids.size(); from += kChunk) {
    size_t to = std::min(uids.size(), from + kChunk);
    try {
      session_->expunge_uids({uids.begin() + from, uids.begin() + to});
    } catch (const Error& e) {
      if (e.retry() == Retry::now) throw;
      emit({{"event", "warning"}, {"folder", result.source}, {"error", e.what()},
            {"text", fmt::format("folder {} -> {}: messages expunged on the source stay on the target: {}",
                                 result.source, result.target, e.what())}});
      return false;
    }
    for (size_t i = from; i < to; ++i) batch_->erase_append(keys[i]);
    result.expunged += to - from;
    settled_ += to - from;
    commit();
  }
  return true;
}

void AccountImport::check_stored(const std::vector<std::pair<uint32_t, const MessageRecord*>>& appended,
                                 const std::vector<SentBody>& bodies, ImportFolderResult& result) {
  if (appended.empty()) return;
  std::unordered_map<uint32_t, size_t> index;
  std::vector<uint32_t> uids;
  for (size_t i = 0; i < appended.size(); ++i) {
    index[appended[i].first] = i;
    uids.push_back(appended[i].first);
  }
  std::sort(uids.begin(), uids.end());
  std::vector<uint32_t> suspects;
  bool noop_sent = false;
  auto risky = [](const SentBody& b) { return b.bytes ? at_risk(*b.bytes) : b.risky; };
  if (check_sizes_) {
    std::set<uint32_t> seen;
    bool size_differs = false;
    auto fetch_sizes = [&] {
      for (auto& ranges : exporting::uid_batches(uids, uids.size()))
        session_->fetch_sizes(ranges, [&](uint32_t uid, uint64_t size) {
          auto it = index.find(uid);
          if (it == index.end() || !seen.insert(uid).second) return;
          const SentBody& body = bodies[it->second];
          if (size != body.size) size_differs = true;
          if (size != body.size || risky(body)) suspects.push_back(uid);
        });
    };
    fetch_sizes();
    if (seen.size() < uids.size()) {
      // Courier shows this session's APPENDs in the selected mailbox only after a NOOP.
      session_->noop();
      noop_sent = true;
      fetch_sizes();
    }
    // A server that changes what it stores does it from the first messages
    // of a folder on: once a group came back unchanged, only the messages a
    // known server rewrites are fetched back for the rest of the folder.
    check_sizes_ = size_differs;
  } else {
    for (auto& [uid, i] : index)
      if (risky(bodies[i])) suspects.push_back(uid);
  }
  // One UID FETCH brings every suspect back (a round trip per message would
  // set the pace on a far link); each copy is compared as it arrives.
  std::sort(suspects.begin(), suspects.end());
  suspects.erase(std::unique(suspects.begin(), suspects.end()), suspects.end());
  std::set<uint32_t> compared;
  auto compare = [&](imap::FetchedMessage&& fm) {
    uint32_t uid = fm.uid;
    if (!std::binary_search(suspects.begin(), suspects.end(), uid) || !compared.insert(uid).second) return;
    size_t i = index.at(uid);
    const MessageRecord& source = *appended[i].second;
    // A streamed message is compared by its hash first; only a copy that
    // differs is held beside the archived bytes to name the difference.
    std::string held;
    if (!bodies[i].bytes && fm.body.size() == bodies[i].size && archive::sha256(fm.body) == bodies[i].hash) return;
    if (!bodies[i].bytes) held = archive_->read_object(bodies[i].hash);
    const std::string& body = bodies[i].bytes ? *bodies[i].bytes : held;
    if (fm.body == body) return;
    std::string hash = archive::to_hex(source.hash);
    auto rewrite = classify_rewrite(body, fm.body);
    if (rewrite) {
      ++result.rewritten;
      emit({{"event", "message_rewritten"}, {"folder", result.source}, {"uid", source.key.uid}, {"hash", hash},
            {"target_uid", uid}, {"rewrite", *rewrite}, {"size", body.size()}, {"stored_size", fm.body.size()},
            {"text", fmt::format("folder {}, UID {}: the target stored it changed as servers of its kind do "
                                 "({}): {} -> {} bytes", result.source, source.key.uid, *rewrite, body.size(),
                                 fm.body.size())}});
    } else {
      ++result.altered;
      emit({{"event", "warning"}, {"folder", result.source}, {"uid", source.key.uid}, {"hash", hash},
            {"target_uid", uid}, {"altered", true},
            {"text", fmt::format("account {}, folder {}, UID {}, object {}: the target stored different bytes "
                                 "({} -> {} bytes), not a known server rewrite", summary_.account, result.source,
                                 source.key.uid, hash, body.size(), fm.body.size())}});
    }
  };
  auto fetch_back = [&] {
    std::vector<uint32_t> left;
    for (uint32_t uid : suspects)
      if (!compared.count(uid)) left.push_back(uid);
    for (auto& ranges : exporting::uid_batches(left, left.size())) session_->fetch_messages(ranges, compare);
  };
  fetch_back();
  if (compared.size() < suspects.size() && !noop_sent) {
    session_->noop();
    fetch_back();
  }
}

void AccountImport::import_folder(FolderMapping& m, ImportFolderResult& result, size_t index, size_t count) {
  result.failed.clear();  // a retry settles again what failed
  check_sizes_ = true;
  result.already_there = 0;
  result.source_messages = 0;
  if (!m.exists) {
    create_folder(m, result);
    m.exists = true;
  }
  if (m.source.subscribed) {
    try {
      session_->subscribe(m.target_raw);
    } catch (const Error& e) {
      if (e.retry() == Retry::now) throw;
      emit({{"event", "warning"}, {"folder", result.source},
            {"text", fmt::format("folder {}: cannot subscribe: {}", result.target, e.what())}});
    }
  }
  if (auto it = root().unchanged_.find(m.source.id); it != root().unchanged_.end()) {
    result.unchanged = true;
    result.source_messages = it->second;
    result.already_there = it->second;
    folder_done(result, fmt::format("{} -> {}: unchanged since the last import ({} messages there)", result.source,
                                    result.target, result.already_there));
    return;
  }
  // Read before the folder's messages: a change after this makes the mark written below stale, never wrong.
  auto counts = archive_->message_counts(account_.id, m.source.id, m.source.uidvalidity);
  auto info = session_->select(m.target_raw);
  FlagFilter filter(info.permanent_flags);
  uint32_t uidnext_hint = uidnext_of(m.target_raw, info);

  FolderAppends fa = take_appends(m.source.id);
  if (reconcile(m, info, result, fa)) fa = scan_appends(m.source.id);

  // The system flags the target keeps, as bits.
  uint32_t kept_system = 0;
  for (auto& f : archive::flags_to_imap(archive::kSeen | archive::kAnswered | archive::kFlagged | archive::kDeleted |
                                            archive::kDraft, {}))
    if (filter.keeps(f)) {
      uint32_t bit = 0;
      std::vector<std::string> none;
      archive::parse_flags({f}, bit, none);
      kept_system |= bit;
    }

  // What to send, and what was sent before whose flags changed since: the
  // folder's messages beside its append records, both in key order.
  std::vector<uint32_t> to_send;
  std::vector<std::pair<AppendRecord, MessageRecord>> to_restore;
  uint64_t bytes_total = 0;
  archive_->for_each_message(account_.id, m.source.id, m.source.uidvalidity, [&](const MessageRecord& source) {
    if (source.state != archive::MessageState::present) return true;
    ++result.source_messages;
    const DoneAppend* d = fa.find(source.key.uidvalidity, source.key.uid);
    if (!d && sent_elsewhere(source)) {
      ++result.gmail_elsewhere;
      return true;
    }
    if (d) {
      ++result.already_there;
      if (source.keywords.size() > imap::kMaxKeywords) return true;  // never sent: see append_group
      if (source.keywords.empty() && d->keywords.empty() && (source.flags & kept_system) == d->flags)
        return true;  // the common case, without building flag lists
      uint32_t bits = 0;
      std::vector<std::string> keywords;
      std::vector<std::string> wanted;
      for (auto& f : archive::flags_to_imap(source.flags, source.keywords))
        if (filter.keeps(f) && imap::valid_flag_name(f)) wanted.push_back(f);
      archive::parse_flags(wanted, bits, keywords);
      auto a = d->keywords, b = keywords;
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      if ((d->flags != bits || a != b) && d->target_uid && fa.targets[d->target_name] == m.target_raw &&
          d->target_uidvalidity == info.uidvalidity)
        to_restore.emplace_back(record_of(m.source.id, fa, *d), source);
      return true;
    }
    if (!options_.policy.filter.matches(source.internaldate, source.size)) {
      ++result.filtered_out;
      return true;
    }
    to_send.push_back(source.key.uid);
    bytes_total += source.size;
    return true;
  });
  fa = FolderAppends{};
  // Appended or reconciled by this run (an earlier attempt before a reconnect) is not "already there".
  result.already_there -= std::min<uint64_t>(result.already_there, result.appended + result.reconciled);

  emit({{"event", "folder_start"}, {"folder", result.source}, {"target", result.target},
        {"folder_index", index + 1}, {"folders", count}, {"messages_total", to_send.size()},
        {"bytes_total", bytes_total}});
  auto started = Clock::now();
  auto last_progress = Clock::now();
  uint64_t done = 0, done_bytes = 0;
  auto progress = [&](bool final) {
    emit({{"event", "progress"}, {"folder", result.source}, {"folder_index", index + 1}, {"folders", count},
          {"messages", done}, {"messages_total", to_send.size()}, {"bytes", done_bytes},
          {"bytes_total", bytes_total}, {"elapsed", std::chrono::duration<double>(Clock::now() - started).count()},
          {"final", final}});
  };

  // The window: messages recorded as in flight, durably, and not sent yet.
  // It is extended (one commit, which also makes the done records of the
  // groups sent before durable) whenever it holds less than a full group,
  // so an archive commit (fsyncs) comes once per window, not twice per group.
  std::deque<MessageRecord> window;
  size_t window_end = 0;  // to_send index past the window
  auto extend_window = [&] {
    size_t want = std::max<size_t>(kWindowMessages, group_limit_);
    uint64_t want_bytes = std::max<uint64_t>(kWindowBytes, group_bytes_limit_);
    uint64_t bytes = 0;
    for (auto& w : window) bytes += w.size;
    bool staged = false;
    while (window_end < to_send.size() && window.size() < want && bytes < want_bytes) {
      auto source = archive_->message({account_.id, m.source.id, m.source.uidvalidity, to_send[window_end++]});
      if (!source) continue;
      AppendRecord r;
      r.key = append_key(*source);
      r.state = AppendState::in_flight;
      r.target_folder = m.target_raw;
      r.target_uidvalidity = info.uidvalidity;
      r.target_uid = uidnext_hint;  // lower bound of the UID it will get
      archive::parse_flags(target_flags(*source, filter, result), r.flags, r.keywords);
      r.when = unix_now();
      batch_->put_append(r);
      bytes += source->size;
      window.push_back(std::move(*source));
      staged = true;
    }
    if (staged) commit();
  };
  // The next group, taken from the window (extended first when it holds less
  // than a full group).
  auto take_group = [&] {
    std::vector<MessageRecord> group;
    if (window.size() < group_limit_ && window_end < to_send.size()) extend_window();
    uint64_t group_bytes = 0;
    while (!window.empty() && (group.empty() || (group.size() < group_limit_ &&
                                                 group_bytes + window.front().size <= group_bytes_limit_))) {
      group_bytes += window.front().size;
      group.push_back(std::move(window.front()));
      window.pop_front();
    }
    return group;
  };
  // Stopping between groups: what is recorded in flight but was never sent
  // (the window, and a group read ahead) is forgotten again, so the next run
  // sends it without reconciling.
  auto stop_if_cancelled = [&](const std::vector<MessageRecord>& ahead) {
    if (!(options_.cancelled && options_.cancelled()) && !(folders_ && folders_->stop) && !too_many_errors()) return;
    for (auto& w : window) batch_->erase_append(append_key(w));
    for (auto& w : ahead) batch_->erase_append(append_key(w));
    window.clear();
    commit();
    check_cancelled(result.source);
  };

  // While one group is sent and the server stores it, the next is read from
  // the archive (decompressed and its hash checked) on another thread, unless
  // the two together would hold more than this connection's share of kHeldBytes.
  Prepared current = prepare(take_group());
  while (!current.recs.empty()) {
    std::vector<MessageRecord> next = take_group();
    std::vector<MessageRecord> next_keys;  // what a stop must forget if `next` was handed away
    uint64_t bytes = 0;
    for (auto& r : current.recs) bytes += r.size;
    for (auto& r : next) bytes += r.size;
    std::future<Prepared> ahead;
    if (!next.empty() && bytes <= held_limit_) {
      next_keys = next;
      ahead = std::async(std::launch::async, [this, group = std::move(next)]() mutable {
        return prepare(std::move(group));
      });
    }
    append_group(m, current, info, filter, uidnext_hint, result, done, done_bytes);
    stop_if_cancelled(ahead.valid() ? next_keys : next);
    current = ahead.valid() ? ahead.get() : prepare(std::move(next));
    if (Clock::now() - last_progress > std::chrono::milliseconds(250)) {
      last_progress = Clock::now();
      progress(false);
    }
  }
  progress(true);

  // Flag changes made on the source since the earlier import.
  for (auto& [r, source] : to_restore) {
    std::vector<std::string> wanted;
    for (auto& f : archive::flags_to_imap(source.flags, source.keywords))
      if (filter.keeps(f) && imap::valid_flag_name(f)) wanted.push_back(f);
    session_->store_flags(r.target_uid, wanted);
    AppendRecord updated = r;
    archive::parse_flags(wanted, updated.flags, updated.keywords);
    updated.when = unix_now();
    batch_->put_append(updated);
    ++result.flags_updated;
    ++settled_;
  }
  commit();
  bool synced = options_.sync_expunges && sync_expunges(m, info, result);
  if (!options_.sync_expunges || synced) mark_done(m, counts, result);

  std::string text = fmt::format("{} -> {}: {} appended, {} already there, {} flag updates", result.source,
                                 result.target, result.appended, result.already_there, result.flags_updated);
  if (result.reconciled) text += fmt::format(", {} reconciled", result.reconciled);
  if (result.gmail_elsewhere)
    text += fmt::format(", {} sent from another folder (Gmail X-GM-MSGID)", result.gmail_elsewhere);
  if (result.gmail_labelled) text += fmt::format(", {} labelled", result.gmail_labelled);
  if (result.expunged) text += fmt::format(", {} expunged as on the source", result.expunged);
  if (result.rewritten) text += fmt::format(", {} stored changed by the server (known rewrites)", result.rewritten);
  if (result.altered) text += fmt::format(", {} ALTERED by the server", result.altered);
  if (!result.failed.empty()) text += fmt::format(", {} FAILED", result.failed.size());
  folder_done(result, text);
}

void AccountImport::folder_done(const ImportFolderResult& result, const std::string& text) {
  nlohmann::json e = {{"event", "folder_done"}, {"folder", result.source}, {"target", result.target},
                      {"appended", result.appended}, {"already_there", result.already_there},
                      {"flags_updated", result.flags_updated}, {"reconciled", result.reconciled},
                      {"failed", result.failed.size()}, {"rewritten", result.rewritten}, {"altered", result.altered},
                      {"text", text}};
  if (result.unchanged) e["unchanged"] = true;
  emit(std::move(e));
}

}  // namespace

int gmail_primary_rank(const archive::FolderRecord& folder) {
  if (folder.ns_kind == archive::NamespaceKind::personal && folder.path.size() == 1 &&
      lower(folder.path[0]) == "inbox")
    return 0;
  int rank = 3;
  for (auto& a : folder.attributes) {
    std::string l = lower(a);
    if (l == "\\sent") rank = std::min(rank, 1);
    else if (l == "\\drafts") rank = std::min(rank, 2);
    else if (l == "\\flagged" && rank == 3) rank = 4;
    else if (l == "\\important" && rank == 3) rank = 5;
    else if (l == "\\junk" && rank == 3) rank = 6;
    else if (l == "\\trash" && rank == 3) rank = 7;
    else if (l == "\\all" && rank == 3) rank = 8;
  }
  return rank;
}

uint64_t ImportSummary::total(uint64_t ImportFolderResult::*field) const {
  uint64_t sum = 0;
  for (auto& f : folders) sum += f.*field;
  return sum;
}

uint64_t ImportSummary::failed_messages() const {
  uint64_t n = 0;
  for (auto& f : folders) n += f.failed.size();
  return n;
}

uint64_t ImportSummary::skipped_messages() const {
  uint64_t n = 0;
  for (auto& f : folders) n += f.skipped.size();
  return n;
}

uint64_t ImportSummary::failed_folders() const {
  uint64_t n = 0;
  for (auto& f : folders) n += f.error.empty() ? 0 : 1;
  return n;
}

nlohmann::json ImportSummary::to_json() const {
  nlohmann::json per_folder = nlohmann::json::array();
  for (auto& f : folders) {
    nlohmann::json failed = nlohmann::json::array();
    for (auto& x : f.failed) failed.push_back({{"uid", x.uid}, {"hash", x.hash}, {"error", x.error}});
    nlohmann::json skipped = nlohmann::json::array();
    for (auto& x : f.skipped)
      skipped.push_back({{"uid", x.uid}, {"hash", x.hash}, {"size", x.size}, {"limit", x.limit}, {"reason", x.reason}});
    nlohmann::json j = {{"folder", f.source}, {"target", f.target}, {"reason", f.reason},
                        {"created", f.created}, {"source_messages", f.source_messages},
                        {"appended", f.appended}, {"bytes_appended", f.bytes_appended},
                        {"already_there", f.already_there}, {"reconciled", f.reconciled},
                        {"gmail_elsewhere", f.gmail_elsewhere}, {"gmail_labelled", f.gmail_labelled},
                        {"flags_updated", f.flags_updated}, {"dropped_flags", f.dropped_flags},
                        {"rewritten", f.rewritten}, {"altered", f.altered}, {"expunged", f.expunged},
                        {"filtered_out", f.filtered_out}, {"skipped", skipped}, {"failed", failed},
                        {"unchanged", f.unchanged}};
    if (dry_run) j["to_append"] = f.to_append;
    if (!f.error.empty()) j["error"] = f.error;
    per_folder.push_back(std::move(j));
  }
  using R = ImportFolderResult;
  nlohmann::json selection = nlohmann::json::object();
  if (!policy.filter.empty()) selection["filter"] = policy.filter.to_json();
  if (!policy.subfolder.path.empty()) selection["target_subfolder"] = fmt::format("{}", fmt::join(policy.subfolder.path, "/"));
  selection["too_big"] = policy.skip_too_big ? "skip" : "fail";
  return {{"event", "summary"}, {"command", "import"}, {"account", account}, {"target", target},
          {"policy", selection},
          {"run_id", run_id}, {"dry_run", dry_run}, {"complete", complete()}, {"folders", folders.size()},
          {"appended", total(&R::appended)}, {"bytes_appended", total(&R::bytes_appended)},
          {"already_there", total(&R::already_there)}, {"reconciled", total(&R::reconciled)},
          {"gmail_elsewhere", total(&R::gmail_elsewhere)}, {"gmail_labelled", total(&R::gmail_labelled)},
          {"flags_updated", total(&R::flags_updated)}, {"to_append", total(&R::to_append)},
          {"rewritten", total(&R::rewritten)}, {"altered", total(&R::altered)}, {"expunged", total(&R::expunged)},
          {"filtered_out", total(&R::filtered_out)}, {"skipped_messages", skipped_messages()},
          {"failed_messages", failed_messages()}, {"failed_folders", failed_folders()},
          {"reconnects", reconnects}, {"seconds", seconds}, {"per_folder", per_folder}};
}

ImportSummary import_account(Archive& archive, const ImportOptions& options, EventSink& events) {
  ImportSummary summary;
  summary.target = options.target_name;
  ImportOptions real = options;
  real.dry_run = false;
  try {
    AccountImport(real, events, summary, &archive).run();
  } catch (const Error& e) {
    throw e.with({.account = summary.account.empty() ? options.account : summary.account,
                  .server = options.endpoint.address()});
  }
  events.emit(summary.to_json());
  return summary;
}

ImportSummary run_import(const ImportOptions& options, EventSink& events) {
  ImportSummary summary;
  summary.dry_run = options.dry_run;
  summary.target = options.target_name;
  try {
    AccountImport(options, events, summary).run();
  } catch (const Error& e) {
    throw e.with({.account = summary.account, .server = options.endpoint.address()});
  }
  events.emit(summary.to_json());
  return summary;
}

}  // namespace imapstage::importing

#include "verify/offline.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "archive-format/archive.h"
#include "archive-format/codec.h"
#include "archive-format/index.h"
#include "archive-format/keys.h"
#include "archive-format/layout.h"
#include "archive-format/pack.h"
#include "common/checked.h"
#include "common/error.h"
#include "export/export_common.h"

namespace imapstage::verify {

namespace fs = std::filesystem;
using archive::Hash;

namespace {

// An object of the index, as this run sees it.
struct Entry {
  Hash hash{};
  archive::ObjectLocation location;
  bool sampled = false;
  bool found = false;       // the scan met its record where the index says (set by the reader)
  bool referenced = false;  // some message refers to it (set by the message pass)
  uint8_t result = 0;       // 0 not checked, 1 sound, 2 bad (set by the one worker that checks it)
};

constexpr uint8_t kUnchecked = 0, kSound = 1, kBad = 2;

// How a report names a message.
std::string message_ref(const FolderCheck& fc, uint32_t uidvalidity, uint32_t uid) {
  return fmt::format("account {}, folder {}, UIDVALIDITY {}, UID {}", fc.account, fc.folder, uidvalidity, uid);
}

// Reproducible per (seed, hash), independent of the order objects are met in.
bool in_sample(const Hash& hash, uint64_t seed, double percent) {
  if (percent >= 100) return true;
  uint64_t x;
  std::memcpy(&x, hash.data(), sizeof x);
  x ^= seed;
  x += 0x9e3779b97f4a7c15ull;  // splitmix64 finaliser
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return double(x >> 11) * 0x1.0p-53 * 100.0 < percent;
}

enum class Role {
  indexed,   // the record the index points to: decode and re-hash
  orphan,    // an object record that is not the indexed copy: decode, report as an orphan
  journal,   // a journal record: decode and re-hash only
  random,    // an indexed object the scan did not meet: read it where the index says
  group,     // a group record holding indexed objects: decode once, re-hash each of them
};

struct Work {
  Role role = Role::indexed;
  size_t entry = 0;                    // indexed, random
  archive::PackRecordInfo info;        // indexed, orphan, journal
  std::string stored;                  // indexed, orphan, journal
  bool streamed = false;               // indexed: too large to hold, read from the file instead of `stored`
  std::shared_ptr<const fs::path> file;
  std::string orphan_problem;          // orphan: what to say about it
  std::vector<std::pair<size_t, archive::GroupMember>> members;  // group: the sampled indexed members
};

// A bounded queue between the pack reader and the workers: at most
// `max_bytes` of stored payload (but always room for one item) and `max_items`.
class WorkQueue {
 public:
  WorkQueue(size_t max_bytes, size_t max_items) : max_bytes_(max_bytes), max_items_(max_items) {}

  void push(Work work) {
    std::unique_lock lock(mutex_);
    size_t size = work.stored.size();
    not_full_.wait(lock, [&] { return items_.empty() || (bytes_ + size <= max_bytes_ && items_.size() < max_items_); });
    bytes_ += size;
    items_.push_back(std::move(work));
    not_empty_.notify_one();
  }

  std::optional<Work> pop() {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return !items_.empty() || closed_; });
    if (items_.empty()) return std::nullopt;
    Work work = std::move(items_.front());
    items_.pop_front();
    bytes_ -= work.stored.size();
    not_full_.notify_one();
    return work;
  }

  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    not_empty_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable not_empty_, not_full_;
  std::deque<Work> items_;
  size_t bytes_ = 0;
  size_t max_bytes_;
  size_t max_items_;
  bool closed_ = false;
};

struct PackToScan {
  uint64_t id = 0;
  fs::path path;
  bool indexed = false;             // listed by the index
  archive::PackInfo info;           // when indexed
};

class Verifier {
 public:
  Verifier(const OfflineOptions& options, EventSink& events) : options_(options), events_(events) {}

  OfflineReport run();

 private:
  void load_index();
  std::vector<PackToScan> list_packs();
  void scan_pack(const PackToScan& pack, WorkQueue& queue);
  void handle_record(const archive::PackRecordInfo& info, const PackToScan& pack,
                     const std::shared_ptr<const fs::path>& file, archive::PackReader& reader, WorkQueue& queue);
  void handle_group(const archive::PackRecordInfo& info, const PackToScan& pack,
                    const std::shared_ptr<const fs::path>& file, archive::PackReader& reader, WorkQueue& queue);
  void queue_unmet(uint64_t pack_id, const fs::path& path, WorkQueue& queue);
  void work(WorkQueue& queue);
  void check(Work& work);
  // The message pass: read_messages() goes through the index's messages
  // (opening sealed values in an encrypted archive) on a thread of its own
  // while packs are scanned; settle_messages() then counts what the scan
  // found for them and names the bad and missing objects and the orphans.
  void read_messages();
  void settle_messages();
  void journal_pass();
  void progress(bool final);

  // The keys that open an encrypted archive's records, or nullptr.
  const archive::RecordKeys* rk() const { return archive_->keys() ? &archive_->keys()->records() : nullptr; }
  // The entry of an object record's header hash (a keyed name in an encrypted archive).
  std::optional<size_t> find_record(const Hash& header) const {
    if (!rk()) return find(header);
    auto it = by_name_.find(archive::to_hex(header));
    if (it == by_name_.end()) return std::nullopt;
    return it->second;
  }
  std::unordered_map<std::string, size_t> by_name_;  // encrypted archives: record name (hex) -> entry
  std::optional<size_t> find(const Hash& hash) const {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), hash,
                               [](const Entry& e, const Hash& h) { return e.hash < h; });
    if (it == entries_.end() || it->hash != hash) return std::nullopt;
    return size_t(it - entries_.begin());
  }
  void add_pack_problem(std::string text) {
    std::lock_guard lock(mutex_);
    report_.pack_problems.push_back(std::move(text));
  }
  void set_bad(size_t entry, std::string problem) {
    std::lock_guard lock(mutex_);
    auto& p = entry_problems_[entry];
    p = p.empty() ? std::move(problem) : p + "; " + problem;
  }

  const OfflineOptions& options_;
  EventSink& events_;
  OfflineReport report_;
  std::unique_ptr<archive::Archive> archive_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_progress_{};

  std::vector<archive::PackInfo> pack_infos_;
  std::vector<Entry> entries_;          // sorted by hash
  std::vector<size_t> by_location_;     // entry indexes sorted by (pack, offset)
  std::set<uint64_t> packs_handled_;

  // One message that refers to an indexed object, as read_messages() left it
  // for settle_messages(): 16 bytes a message.
  struct MessageRef {
    uint32_t folder;  // in report_.folders
    uint32_t entry;   // in entries_
    uint32_t uidvalidity;
    uint32_t uid;
  };
  std::vector<MessageRef> message_refs_;
  std::map<Hash, std::vector<std::pair<size_t, std::string>>> missing_;  // hash -> (folder, reference)

  std::mutex mutex_;  // guards entry_problems_, orphan_records_, report_.pack_problems
  std::unordered_map<size_t, std::string> entry_problems_;
  std::vector<ObjectProblem> orphan_records_;
  std::set<uint64_t> journal_sequences_;  // of the sound journal records met

  std::atomic<uint64_t> objects_checked_{0};
  std::atomic<uint64_t> bytes_checked_{0};
  uint64_t stored_bytes_read_ = 0;
  uint64_t stored_bytes_total_ = 0;
  uint64_t records_ = 0;
  uint64_t packs_done_ = 0;
  uint64_t packs_total_ = 0;
};

void Verifier::load_index() {
  // Packs first, then objects: an object committed in between lies past the
  // committed size seen here and is read where the index says, never taken
  // for an orphan.
  pack_infos_ = archive_->packs();
  archive_->for_each_object([&](const Hash& hash, const archive::ObjectLocation& location) {
    Entry e;
    e.hash = hash;
    e.location = location;
    e.sampled = in_sample(hash, report_.seed, report_.sample_percent);
    entries_.push_back(e);
    return true;
  });
  std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.hash < b.hash; });
  if (rk())
    for (size_t i = 0; i < entries_.size(); ++i) by_name_[archive::to_hex(rk()->name(entries_[i].hash))] = i;
  by_location_.resize(entries_.size());
  for (size_t i = 0; i < entries_.size(); ++i) by_location_[i] = i;
  std::sort(by_location_.begin(), by_location_.end(), [&](size_t a, size_t b) {
    auto& x = entries_[a].location;
    auto& y = entries_[b].location;
    return std::tie(x.pack_id, x.offset) < std::tie(y.pack_id, y.offset);
  });
  report_.objects = entries_.size();
}

std::vector<PackToScan> Verifier::list_packs() {
  std::vector<PackToScan> out;
  std::set<uint64_t> indexed;
  for (auto& p : pack_infos_) {
    PackToScan s;
    s.id = p.id;
    s.path = archive_->pack_path(p.id);
    s.indexed = true;
    s.info = p;
    indexed.insert(p.id);
    out.push_back(std::move(s));
  }
  // Pack files the index does not list: their records are orphans.
  std::error_code ec;
  fs::path packs_dir = options_.archive_dir / "packs";
  std::vector<PackToScan> extra;
  bool packs_dir_sound = false;
  try {
    packs_dir_sound = archive::check_in_archive(options_.archive_dir, packs_dir, true);
  } catch (const Error& e) {
    report_.pack_problems.push_back(e.what());
  }
  if (packs_dir_sound) {
    for (auto it = fs::recursive_directory_iterator(packs_dir, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      auto type = it->symlink_status(ec).type();
      if (type == fs::file_type::directory) continue;
      if (type != fs::file_type::regular) {
        report_.pack_problems.push_back(
            fmt::format("{}: not a regular file (a link, FIFO or device; not read)", it->path().string()));
        continue;
      }
      if (it->path().extension() != ".pack") continue;
      std::string stem = it->path().stem().string();
      uint64_t id = 0;
      bool hex = stem.size() == 16 && std::all_of(stem.begin(), stem.end(), [](char c) {
                   return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                 });
      if (hex) id = std::stoull(stem, nullptr, 16);
      if (hex && indexed.count(id) && it->path().lexically_normal() == archive_->pack_path(id).lexically_normal())
        continue;
      PackToScan s;
      s.id = id;
      s.path = it->path();
      extra.push_back(std::move(s));
    }
    if (ec) report_.pack_problems.push_back(fmt::format("{}: cannot list the pack files: {}", packs_dir.string(), ec.message()));
  }
  std::sort(extra.begin(), extra.end(), [](auto& a, auto& b) { return a.path < b.path; });
  for (auto& s : extra) out.push_back(std::move(s));
  for (auto& s : out) {
    if (s.indexed) {
      stored_bytes_total_ += s.info.committed_size;
    } else {
      if (fs::symlink_status(s.path, ec).type() == fs::file_type::regular) stored_bytes_total_ += fs::file_size(s.path, ec);
      if (ec) ec.clear();
    }
  }
  return out;
}

void Verifier::scan_pack(const PackToScan& pack, WorkQueue& queue) {
  auto file = std::make_shared<const fs::path>(pack.path);
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(pack.path, ec))) {
    // Indexed (only indexed packs reach here without a file): every object in it is lost.
    add_pack_problem(fmt::format("{}: pack {:016x} is missing ({} records indexed)", pack.path.string(), pack.id,
                                 pack.info.records));
    return;
  }
  // A pack file the index does not list that stops inside its own header
  // holds no record: a writer was killed while creating it.
  if (!pack.indexed && pack.id != 0 && archive::is_unfinished_pack(pack.path, pack.id, options_.archive_dir)) return;
  uint64_t scanned = 0;
  uint64_t end_of_last = 0;
  try {
    archive::PackReader reader(pack.path, options_.archive_dir);
    if (pack.indexed && reader.pack_id() != pack.id)
      add_pack_problem(fmt::format("{}: the file header names pack {:016x}, the index {:016x}", pack.path.string(),
                                   reader.pack_id(), pack.id));
    if (pack.indexed && reader.file_size() < pack.info.committed_size)
      add_pack_problem(fmt::format("{}: {} bytes, shorter than the {} bytes the index says were committed "
                                   "(truncated or torn)",
                                   pack.path.string(), reader.file_size(), pack.info.committed_size));
    while (auto info = reader.next()) {
      if (pack.indexed && info->offset >= pack.info.committed_size) break;  // a writer's uncommitted bytes
      if (pack.indexed && info->offset + info->record_size > pack.info.committed_size) {
        add_pack_problem(fmt::format("{}: the record at offset {} runs past the committed size {}",
                                     pack.path.string(), info->offset, pack.info.committed_size));
        break;
      }
      ++scanned;
      ++records_;
      end_of_last = info->offset + info->record_size;
      handle_record(*info, pack, file, reader, queue);
      progress(false);
    }
  } catch (const Error& e) {
    bool uncommitted_tail =
        pack.indexed && (end_of_last >= pack.info.committed_size || (scanned == 0 && pack.info.records == 0));
    if (!uncommitted_tail)
      add_pack_problem(fmt::format("{}: {} (scanning stopped after {} records)", pack.path.string(), e.message(),
                                   scanned));
  } catch (const std::exception& e) {
    add_pack_problem(fmt::format("{}: {} (scanning stopped after {} records)", pack.path.string(), e.what(),
                                 scanned));
  }
}

void Verifier::handle_record(const archive::PackRecordInfo& info, const PackToScan& pack,
                             const std::shared_ptr<const fs::path>& file, archive::PackReader& reader,
                             WorkQueue& queue) {
  if (info.kind == archive::RecordKind::journal) {
    Work w;
    w.role = Role::journal;
    w.info = info;
    w.stored = reader.read_payload();
    w.file = file;
    stored_bytes_read_ += w.stored.size();
    queue.push(std::move(w));
    return;
  }
  if (info.kind == archive::RecordKind::group) {
    handle_group(info, pack, file, reader, queue);
    return;
  }
  if (info.kind != archive::RecordKind::object) {
    add_pack_problem(fmt::format("{}: the record at offset {} is of unknown kind {}", file->string(), info.offset,
                                 int(info.kind)));
    return;
  }
  std::string orphan_problem;
  if (auto idx = find_record(info.hash)) {
    Entry& e = entries_[*idx];
    if (pack.indexed && e.location.pack_id == pack.id && e.location.offset == info.offset) {
      e.found = true;
      if (e.location.record_size != info.record_size || e.location.raw_size != info.raw_size)
        set_bad(*idx, fmt::format("the index says {} bytes ({} raw), the record header {} bytes ({} raw)",
                                  e.location.record_size, e.location.raw_size, info.record_size, info.raw_size));
      if (!e.sampled) return;
      Work w;
      w.role = Role::indexed;
      w.entry = *idx;
      w.info = info;
      // A large record is read from its file by the worker, piece by piece.
      if (info.stored_size < archive::kStreamedObject) w.stored = reader.read_payload();
      else w.streamed = true;
      w.file = file;
      stored_bytes_read_ += info.stored_size;
      queue.push(std::move(w));
      return;
    }
    orphan_problem = fmt::format("redundant copy (the index uses {} at offset {})",
                                 archive_->pack_path(e.location.pack_id).string(), e.location.offset);
  } else {
    orphan_problem = pack.indexed ? "object record not in the index"
                                  : "object record in a pack file the index does not list";
  }
  if (!in_sample(info.hash, report_.seed, report_.sample_percent)) {
    std::lock_guard lock(mutex_);
    orphan_records_.push_back({archive::to_hex(info.hash), file->string(), info.offset, orphan_problem, {}});
    return;
  }
  Work w;
  w.role = Role::orphan;
  w.info = info;
  w.stored = reader.read_payload();
  w.file = file;
  w.orphan_problem = std::move(orphan_problem);
  stored_bytes_read_ += w.stored.size();
  queue.push(std::move(w));
}

void Verifier::handle_group(const archive::PackRecordInfo& info, const PackToScan& pack,
                            const std::shared_ptr<const fs::path>& file, archive::PackReader& reader,
                            WorkQueue& queue) {
  std::string stored = reader.read_payload();
  std::vector<archive::GroupMember> members;
  try {
    // A sealed group is opened once, here: its table and then its members
    // are read from the opened frame.
    if (rk()) {
      stored = archive::open_payload(info, stored, *file, *rk());
      archive::PackRecordInfo opened = info;
      opened.stored_size = stored.size();
      members = archive::decode_group_table(opened, stored, *file, nullptr);
    } else {
      members = archive::decode_group_table(info, stored, *file, nullptr);
    }
  } catch (const Error& e) {
    // The members cannot be located: the indexed ones are read where the index says (and fail there).
    add_pack_problem(fmt::format("{}: the group record at offset {} is damaged: {}", file->string(), info.offset,
                                 e.message()));
    return;
  }
  Work w;
  w.role = Role::group;
  w.info = info;
  w.file = file;
  for (auto& m : members) {
    std::string orphan_problem;
    if (auto idx = find(m.hash)) {
      Entry& e = entries_[*idx];
      if (pack.indexed && e.location.pack_id == pack.id && e.location.offset == info.offset && e.location.grouped &&
          e.location.member_offset == m.offset) {
        e.found = true;
        if (e.location.record_size != info.record_size || e.location.raw_size != m.size)
          set_bad(*idx, fmt::format("the index says {} bytes ({} raw), the group record {} bytes ({} raw)",
                                    e.location.record_size, e.location.raw_size, info.record_size, m.size));
        else if (e.sampled)
          w.members.emplace_back(*idx, m);
        continue;
      }
      orphan_problem = fmt::format("redundant copy in a group (the index uses {} at offset {})",
                                   archive_->pack_path(e.location.pack_id).string(), e.location.offset);
    } else {
      orphan_problem = pack.indexed ? "object in a group record, not in the index"
                                    : "object in a group record in a pack file the index does not list";
    }
    std::lock_guard lock(mutex_);
    orphan_records_.push_back({archive::to_hex(m.hash), file->string(), info.offset, orphan_problem, {}});
  }
  if (w.members.empty()) return;
  w.stored = std::move(stored);
  stored_bytes_read_ += w.stored.size();
  queue.push(std::move(w));
}

void Verifier::queue_unmet(uint64_t pack_id, const fs::path& path, WorkQueue& queue) {
  auto file = std::make_shared<const fs::path>(path);
  auto first = std::lower_bound(by_location_.begin(), by_location_.end(), pack_id,
                                [&](size_t i, uint64_t id) { return entries_[i].location.pack_id < id; });
  for (auto it = first; it != by_location_.end() && entries_[*it].location.pack_id == pack_id; ++it) {
    if (entries_[*it].found) continue;
    Work w;
    w.role = Role::random;
    w.entry = *it;
    w.file = file;
    queue.push(std::move(w));
  }
}

void Verifier::check(Work& w) {
  switch (w.role) {
    case Role::indexed:
      try {
        if (w.streamed)
          archive::read_record_to(*w.file, w.info.offset, archive::RecordKind::object, w.info.hash, w.info.raw_size,
                                  options_.archive_dir, [](std::string_view) {}, rk());
        else
          archive::decode_payload_to(w.info, w.stored, *w.file, [](std::string_view) {}, rk());
        bytes_checked_ += w.info.raw_size;
        entries_[w.entry].result = kSound;
      } catch (const Error& e) {
        set_bad(w.entry, e.message());
        entries_[w.entry].result = kBad;
      }
      ++objects_checked_;
      return;
    case Role::random: {
      Entry& e = entries_[w.entry];
      std::error_code ec;
      if (!fs::exists(fs::symlink_status(*w.file, ec))) {
        set_bad(w.entry, fmt::format("its pack file {} is missing", w.file->string()));
        return;
      }
      try {
        uint64_t size = 0;
        if (e.location.grouped) {
          std::string raw = archive::read_group(*w.file, e.location.offset, options_.archive_dir, rk());
          size = archive::group_member(raw, e.location.member_offset, e.location.raw_size, e.hash, *w.file,
                                       e.location.offset)
                     .size();
        } else {
          archive::read_record_to(*w.file, e.location.offset, archive::RecordKind::object,
                                  rk() ? rk()->name(e.hash) : e.hash, e.location.raw_size, options_.archive_dir,
                                  [&](std::string_view piece) { size += piece.size(); }, rk());
        }
        bytes_checked_ += size;
        e.result = kSound;
        ++objects_checked_;
      } catch (const Error& err) {
        // Not counted as checked: most often there is no record there to re-hash.
        set_bad(w.entry, "no sound record where the index says: " + err.message());
      }
      return;
    }
    case Role::orphan: {
      ObjectProblem p{archive::to_hex(w.info.hash), w.file->string(), w.info.offset, w.orphan_problem, {}};
      try {
        archive::decode_payload_to(w.info, w.stored, *w.file, [](std::string_view) {}, rk());
      } catch (const Error& e) {
        p.problem += "; the record is damaged: " + e.message();
      }
      std::lock_guard lock(mutex_);
      orphan_records_.push_back(std::move(p));
      return;
    }
    case Role::group: {
      std::string raw;
      try {
        raw = rk() ? archive::decode_opened_payload(w.info, w.stored, *w.file, *rk())
                   : archive::decode_payload(w.info, w.stored, *w.file);
      } catch (const Error& e) {
        for (auto& [entry, m] : w.members) {
          set_bad(entry, e.message());
          entries_[entry].result = kBad;
          ++objects_checked_;
        }
        return;
      }
      for (auto& [entry, m] : w.members) {
        Entry& e = entries_[entry];
        try {
          bytes_checked_ += archive::group_member(raw, e.location.member_offset, e.location.raw_size, e.hash,
                                                  *w.file, e.location.offset)
                                .size();
          e.result = kSound;
        } catch (const Error& err) {
          set_bad(entry, err.message());
          e.result = kBad;
        }
        ++objects_checked_;
      }
      return;
    }
    case Role::journal:
      try {
        auto journal = archive::codec::decode_journal(archive::decode_payload(w.info, w.stored, *w.file, rk()));
        std::lock_guard lock(mutex_);
        journal_sequences_.insert(journal.sequence);
      } catch (const Error& e) {
        add_pack_problem(fmt::format("{}: the journal record at offset {} is damaged: {}", w.file->string(),
                                     w.info.offset, e.message()));
      }
      return;
  }
}

void Verifier::work(WorkQueue& queue) {
  while (auto w = queue.pop()) {
    try {
      check(*w);
    } catch (const std::exception& e) {
      // Anything else (e.g. no memory for a bogus size) still names the record.
      if (w->role == Role::indexed || w->role == Role::random) {
        set_bad(w->entry, e.what());
      } else if (w->role == Role::group) {
        for (auto& [entry, m] : w->members) set_bad(entry, e.what());
      } else {
        add_pack_problem(fmt::format("{}: the record at offset {} cannot be checked: {}", w->file->string(),
                                     w->info.offset, e.what()));
      }
    }
  }
}

void Verifier::read_messages() {
  std::map<std::pair<uint32_t, uint32_t>, size_t> folder_index;
  std::map<uint32_t, std::string> account_names;
  auto accounts = archive_->accounts();
  std::sort(accounts.begin(), accounts.end(), [](auto& a, auto& b) { return a.name < b.name; });
  for (auto& account : accounts) {
    account_names[account.id] = account.name;
    exporting::ExportSelections selections(*archive_, account.name);
    for (auto& folder : archive_->folders(account.id)) {
      folder_index[{account.id, folder.id}] = report_.folders.size();
      report_.folders.push_back({account.name, folder.name_utf8.empty() ? folder.name_raw : folder.name_utf8});
      auto filter = selections.last_filter(folder.name_raw);
      if (!filter.empty()) report_.folders.back().selection = filter.to_json();
    }
  }
  archive_->for_each_message([&](const archive::MessageRecord& m) {
    auto fit = folder_index.find({m.key.account_id, m.key.folder_id});
    if (fit == folder_index.end()) {
      auto an = account_names.find(m.key.account_id);
      fit = folder_index.emplace(std::pair{m.key.account_id, m.key.folder_id}, report_.folders.size()).first;
      report_.folders.push_back({an == account_names.end() ? fmt::format("#{}", m.key.account_id) : an->second,
                                 fmt::format("#{}", m.key.folder_id)});
    }
    FolderCheck& fc = report_.folders[fit->second];
    ++fc.messages;
    fc.bytes = checked_add(fc.bytes, m.size, fmt::format("the size of folder {} of account {}", fc.folder, fc.account));
    ++report_.messages;
    auto idx = find(m.hash);
    if (!idx) {
      missing_[m.hash].emplace_back(fit->second, message_ref(fc, m.key.uidvalidity, m.key.uid));
      return true;
    }
    Entry& e = entries_[*idx];
    e.referenced = true;
    if (m.size != e.location.raw_size)
      set_bad(*idx, fmt::format("{} says {} bytes, its object holds {}", message_ref(fc, m.key.uidvalidity, m.key.uid),
                                m.size, e.location.raw_size));
    message_refs_.push_back({static_cast<uint32_t>(fit->second), static_cast<uint32_t>(*idx), m.key.uidvalidity,
                             m.key.uid});
    return true;
  });
}

void Verifier::settle_messages() {
  std::unordered_map<size_t, std::vector<std::string>> refs;
  for (auto& r : message_refs_) {
    FolderCheck& fc = report_.folders[r.folder];
    if (entries_[r.entry].result != kUnchecked) ++fc.checked;
    if (entry_problems_.count(r.entry)) {
      ++fc.bad;
      refs[r.entry].push_back(message_ref(fc, r.uidvalidity, r.uid));
    }
  }
  std::vector<MessageRef>().swap(message_refs_);

  for (auto& [hash, referrers] : missing_) {
    if (archive_->object(hash)) continue;  // committed after this run read the index
    ObjectProblem p{archive::to_hex(hash), "", 0, "not in the index: the archive holds no copy of it", {}};
    for (auto& [folder, ref] : referrers) {
      ++report_.folders[folder].bad;
      p.referenced_by.push_back(std::move(ref));
    }
    report_.bad_objects.push_back(std::move(p));
  }
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    auto problem = entry_problems_.find(i);
    if (e.referenced && problem == entry_problems_.end()) continue;
    ObjectProblem p{archive::to_hex(e.hash), archive_->pack_path(e.location.pack_id).string(), e.location.offset, "",
                    {}};
    if (!e.referenced) {
      p.problem = "no message refers to this object";
      if (problem != entry_problems_.end()) p.problem += "; its record is damaged: " + problem->second;
      report_.orphans.push_back(std::move(p));
    } else {
      p.problem = problem->second;
      p.referenced_by = std::move(refs[i]);
      report_.bad_objects.push_back(std::move(p));
    }
  }
  for (auto& o : orphan_records_) report_.orphans.push_back(std::move(o));
  auto by_place = [](const ObjectProblem& a, const ObjectProblem& b) {
    return std::tie(a.file, a.offset, a.hash) < std::tie(b.file, b.offset, b.hash);
  };
  std::sort(report_.bad_objects.begin(), report_.bad_objects.end(), by_place);
  std::sort(report_.orphans.begin(), report_.orphans.end(), by_place);
}

// Every journal record the index says was committed (1 to journal_sequence)
// must be in the packs: without them, what those batches changed cannot be
// rebuilt, and a pack lost with its index rebuilt shows up here.
void Verifier::journal_pass() {
  uint64_t last = archive_->journal_sequence();
  std::vector<std::string> gaps;
  uint64_t missing = 0;
  uint64_t expected = 1;
  auto gap = [&](uint64_t from, uint64_t to) {
    missing += to - from + 1;
    if (gaps.size() < 10) gaps.push_back(from == to ? std::to_string(from) : fmt::format("{}-{}", from, to));
  };
  for (uint64_t seq : journal_sequences_) {
    if (seq > last) break;
    if (seq > expected) gap(expected, seq - 1);
    expected = std::max(expected, seq + 1);
  }
  if (expected <= last) gap(expected, last);
  if (missing)
    report_.pack_problems.push_back(fmt::format(
        "{} of the {} journal records the index says were committed are missing or damaged (sequence {}{}): the "
        "index changes of those batches are not in the packs",
        missing, last, fmt::join(gaps, ", "), gaps.size() == 10 ? ", ..." : ""));
}

void Verifier::progress(bool final) {
  auto now = std::chrono::steady_clock::now();
  if (!final && now - last_progress_ < std::chrono::milliseconds(500)) return;
  last_progress_ = now;
  events_.emit({{"event", "verify_progress"},
                {"packs_done", packs_done_},
                {"packs", packs_total_},
                {"records", records_},
                {"objects", report_.objects},
                {"objects_checked", objects_checked_.load()},
                {"bytes_checked", bytes_checked_.load()},
                {"stored_bytes_read", stored_bytes_read_},
                {"stored_bytes_total", stored_bytes_total_},
                {"elapsed", std::chrono::duration<double>(now - start_).count()},
                {"final", final}});
}

OfflineReport Verifier::run() {
  start_ = std::chrono::steady_clock::now();
  report_.archive = options_.archive_dir.string();
  double percent = options_.sample_percent;
  if (!(percent > 0)) throw Error(ErrorKind::usage, fmt::format("--sample {} is not above 0 percent", percent));
  report_.sample_percent = std::min(percent, 100.0);
  report_.seed = options_.seed;
  if (report_.seed == 0 && report_.sample_percent < 100) {
    std::random_device rd;
    while (report_.seed == 0) report_.seed = (uint64_t(rd()) << 32) ^ rd();
  }
  archive_ = archive::Archive::open(options_.archive_dir, archive::Archive::Mode::read);
  events_.emit({{"event", "verify_start"},
                {"archive", report_.archive},
                {"sample_percent", report_.sample_percent},
                {"seed", report_.seed}});
  load_index();
  auto packs = list_packs();
  packs_total_ = report_.packs = packs.size();

  unsigned threads = options_.threads ? options_.threads : std::thread::hardware_concurrency();
  threads = std::max(1u, threads);
  WorkQueue queue(4u << 20, 1024);
  std::vector<std::thread> workers;
  std::thread messages;
  std::exception_ptr messages_failed;
  auto finish_workers = [&] {
    queue.close();
    for (auto& t : workers) t.join();
    workers.clear();
    if (messages.joinable()) messages.join();
  };
  try {
    messages = std::thread([&] {
      try {
        read_messages();
      } catch (...) {
        messages_failed = std::current_exception();
      }
    });
    for (unsigned i = 0; i < threads; ++i) workers.emplace_back([&] { work(queue); });
    for (auto& pack : packs) {
      scan_pack(pack, queue);
      if (pack.indexed) {
        packs_handled_.insert(pack.id);
        queue_unmet(pack.id, pack.path, queue);
      }
      ++packs_done_;
      progress(false);
    }
    // Objects in packs the index does not list at all.
    std::set<uint64_t> unlisted;
    for (auto& e : entries_)
      if (!packs_handled_.count(e.location.pack_id)) unlisted.insert(e.location.pack_id);
    for (uint64_t id : unlisted) queue_unmet(id, archive_->pack_path(id), queue);
  } catch (...) {
    finish_workers();
    throw;
  }
  finish_workers();
  if (messages_failed) std::rethrow_exception(messages_failed);

  settle_messages();
  journal_pass();
  report_.index_problems = archive_->check_message_counts();
  report_.records = records_;
  report_.objects_checked = objects_checked_;
  report_.bytes_checked = bytes_checked_;
  report_.stored_bytes_read = stored_bytes_read_;
  report_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  progress(true);
  return std::move(report_);
}

nlohmann::json problems_json(const std::vector<ObjectProblem>& problems) {
  nlohmann::json out = nlohmann::json::array();
  for (auto& p : problems)
    out.push_back({{"hash", p.hash},
                   {"file", p.file},
                   {"offset", p.offset},
                   {"problem", p.problem},
                   {"referenced_by", p.referenced_by}});
  return out;
}

}  // namespace

nlohmann::json OfflineReport::to_json() const {
  nlohmann::json folders_json = nlohmann::json::array();
  for (auto& f : folders) {
    folders_json.push_back({{"account", f.account},
                            {"folder", f.folder},
                            {"messages", f.messages},
                            {"bytes", f.bytes},
                            {"checked", f.checked},
                            {"bad", f.bad}});
    if (!f.selection.empty()) folders_json.back()["selection"] = {{"filter", f.selection}};
  }
  return {{"event", "summary"},
          {"command", "verify"},
          {"mode", "offline"},
          {"archive", archive},
          {"ok", ok()},
          {"seed", seed},
          {"sample_percent", sample_percent},
          {"packs", packs},
          {"records", records},
          {"objects", objects},
          {"objects_checked", objects_checked},
          {"bytes_checked", bytes_checked},
          {"stored_bytes_read", stored_bytes_read},
          {"messages", messages},
          {"bad_objects", problems_json(bad_objects)},
          {"orphans", problems_json(orphans)},
          {"pack_problems", pack_problems},
          {"index_problems", index_problems},
          {"folders", folders_json},
          {"seconds", seconds}};
}

OfflineReport verify_offline(const OfflineOptions& options, EventSink& events) {
  return Verifier(options, events).run();
}

nlohmann::json StructureReport::to_json() const {
  return {{"archive", archive},   {"mode", "structure"}, {"contents_checked", false}, {"packs", packs},
          {"records", records},   {"key_slots", key_slots}, {"problems", problems},      {"ok", ok()}};
}

StructureReport verify_structure(const fs::path& dir) {
  StructureReport r;
  r.archive = dir.string();
  uint32_t version = archive::read_format_file(dir / "FORMAT");
  if (version > archive::kFormatVersion)
    throw Error(ErrorKind::format, fmt::format("archive format version {} is newer than this build", version),
                Retry::never, {.file = dir.string()});
  try {
    r.key_slots = archive::read_key_file(dir).slots.size();
    if (r.key_slots == 0) r.problems.push_back("the key file has no key slot: the archive cannot be opened");
  } catch (const Error& e) {
    r.problems.push_back(e.what());
  }
  std::vector<archive::PackInfo> packs;
  {
    auto index = archive::Index::open(dir / "index", archive::Archive::Options{}.map_size, false);
    auto txn = index->read();
    if (!txn.get(archive::Index::meta, "encryption")) r.problems.push_back("the index does not say it is encrypted");
    txn.scan(archive::Index::packs, "", "", [&](std::string_view k, std::string_view v) {
      packs.push_back(archive::codec::decode_pack(k, v));
      return true;
    });
  }
  for (auto& p : packs) {
    ++r.packs;
    auto path = archive::pack_file(dir, p.id);
    try {
      archive::PackReader reader(path, dir);
      if (reader.pack_id() != p.id)
        r.problems.push_back(fmt::format("{}: the header names pack {:016x}", path.string(), reader.pack_id()));
      if (reader.file_size() < p.committed_size)
        r.problems.push_back(fmt::format("{}: {} bytes, shorter than its committed size {}", path.string(),
                                         reader.file_size(), p.committed_size));
      uint64_t records = 0, end = archive::kPackHeaderSize;
      while (end < p.committed_size) {
        auto info = reader.next();
        if (!info) break;
        if (info->stored_size < archive::kSealOverhead)
          r.problems.push_back(fmt::format("{}: the record at offset {} is too short to be sealed", path.string(),
                                           info->offset));
        end = info->offset + info->record_size;
        ++records;
      }
      r.records += records;
      if (end != p.committed_size)
        r.problems.push_back(fmt::format("{}: records end at {}, the committed size is {}", path.string(), end,
                                         p.committed_size));
      if (records != p.records)
        r.problems.push_back(
            fmt::format("{}: {} records, the index says {}", path.string(), records, p.records));
    } catch (const Error& e) {
      r.problems.push_back(e.what());
    }
  }
  return r;
}

}  // namespace imapstage::verify

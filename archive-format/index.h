// The LMDB index of an archive: the only code that touches LMDB. One
// environment per path per process (shared through Index::open), MDB_NOTLS so
// transactions may move between threads, named databases as listed in
// FORMAT.md ("Index"). Transactions are small RAII owners: a write
// transaction that is not committed is aborted by its destructor.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "archive-format/codec.h"

struct MDB_env;
struct MDB_txn;

namespace imapstage {
class HmacKey;  // common/aead.h
class GcmKey;   // common/aead.h
}  // namespace imapstage

namespace imapstage::archive {

// The keys of an encrypted archive's index (FORMAT.md, "Encryption"): every
// value but those of `meta` and `packs` is sealed (AES-256-GCM under
// `seal_key`, with its database and stored key as associated data, the
// plain key inside), and the keys of `account_names`, `folder_names`,
// `target_names` and `objects` are keyed hashes (HMAC-SHA-256 under
// `name_key`) instead of names and content addresses.
struct IndexKeys {
  std::shared_ptr<const HmacKey> name_key;  // K_iname
  std::shared_ptr<const GcmKey> seal_key;   // K_idx
};

class Index {
 public:
  enum Db : unsigned {
    meta,
    accounts,
    account_names,
    folders,
    folder_names,
    messages,
    objects,
    packs,
    runs,
    targets,
    target_names,
    appends,
    message_counts,  // since format version 7; absent from older indexes opened read-only
    import_marks,    // likewise
    kDbCount,
  };
  static const char* db_name(Db db);

  // Opens (create: creating) the environment in directory `dir`, sharing one
  // per path within the process. Throws Error(not_found) if it does not exist
  // and !create, Error(io)/Error(corrupt) from LMDB. The snapshot to be read
  // is checked page by page first unless `dir/checked` vouches for it
  // (FORMAT.md, "Index"); a writer (create) then writes that stamp, and
  // again after each of its commits, a reader never does.
  static std::shared_ptr<Index> open(const std::filesystem::path& dir, uint64_t map_size, bool create);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  const std::filesystem::path& dir() const { return dir_; }

  // Whether the index has table `db`. Every table exists in an index opened
  // for writing; an older index opened read-only may lack the tables later
  // versions added (message_counts, import_marks), which then read as empty.
  bool has(Db db) const { return has_db_[db]; }

  // From now on every transaction of this environment reads and writes the
  // index as encrypted with `keys` (call before the first transaction).
  // Callers keep using plain keys and values: get, put, del and scan
  // translate them. Scans of a keyed-name database take only an empty
  // `from` and `prefix` (for `folder_names`: at most the 4-byte account id);
  // they visit its records in no meaningful order.
  // Kept once set: an archive's keys never change (thread-safe).
  void set_keys(std::shared_ptr<const IndexKeys> keys);
  bool encrypted() const { return keys_.load() != nullptr; }

  class Txn {
   public:
    Txn(Txn&&) noexcept;
    Txn& operator=(Txn&&) = delete;
    ~Txn();  // aborts unless committed

    // The value under `key`, valid until the transaction ends or writes.
    std::optional<std::string_view> get(Db db, std::string_view key) const;
    void put(Db db, std::string_view key, std::string_view value);
    // Returns whether the key existed.
    bool del(Db db, std::string_view key);
    // Calls fn(key, value) for keys >= `from` that start with `prefix`, in
    // key order, until fn returns false.
    void scan(Db db, std::string_view from, std::string_view prefix,
              const std::function<bool(std::string_view, std::string_view)>& fn) const;
    // The greatest key in `db` that starts with `prefix`, if any.
    std::optional<std::string> last_key(Db db, std::string_view prefix) const;
    // How many entries `db` holds (LMDB keeps the count: no scan).
    uint64_t entries(Db db) const;
    void commit();

   private:
    friend class Index;
    Txn(const Index& index, MDB_txn* txn, bool write) : index_(&index), txn_(txn), write_(write) {}
    // The key as stored: a keyed hash for the keyed-name databases of an encrypted index.
    std::string stored_key(Db db, std::string_view key) const;
    const Index* index_;
    MDB_txn* txn_;
    bool write_;
    // Opened values of an encrypted index, kept as long as the transaction.
    mutable std::deque<std::string> held_;
  };

  Txn read() const;
  // REQUIRES: no other write transaction of this environment in this thread.
  Txn write();

  // Throws the Error for an LMDB return code (what: the operation).
  [[noreturn]] void fail(int rc, const std::string& what) const;

  // Drops this process's mappings of the index pages it has read (they stay
  // in the page cache; the next read maps them again). LMDB reads through a
  // shared file mapping, so every page a long scan or a big write touched
  // would otherwise count in the process's resident memory for as long as
  // it runs. Lookups, writes and scans call it as they go (see
  // note_visits), write transactions after their commit; values handed out
  // stay valid (same file pages).
  void release_pages() const;

 private:
  Index(std::filesystem::path dir, MDB_env* env);
  Txn begin(bool write) const;
  // Counts `weight` page visits (a key a scan steps to: 1; a lookup or
  // write, which may land on any leaf: more); every few MB of them, releases
  // the pages if the process's mapped file pages grew by more than a budget
  // since the last release.
  void note_visits(uint64_t weight) const;
  // release_pages(), then notes the mapped file pages left (released_at_).
  void release_and_note() const;
  // After this process committed a write transaction whose snapshot started
  // from `checked` (kNotChecked: unknown): the snapshot now known to be
  // checked, stamped when `stamp`. A commit that wrote nothing leaves the
  // snapshot as it was; one more than `checked` is this commit's; anything
  // else means another process committed in between (the next open walks).
  static uint64_t after_commit(MDB_env* env, const std::filesystem::path& dir, uint64_t checked, bool stamp);
  // After this process committed a write transaction: when the snapshot
  // before it was checked (or made by this process from a checked one), the
  // new one is too, and index/checked says so.
  void note_commit() const;
  std::filesystem::path dir_;
  MDB_env* env_;
  mutable std::atomic<uint64_t> visits_{0};       // weighted page visits, for release_pages
  mutable std::atomic<uint64_t> released_at_{0};  // mapped file bytes after the last release
  mutable std::mutex map_mutex_;               // guards map_ and the remapping in begin()
  mutable void* map_ = nullptr;                // LMDB's mapping of the data file, found by release_pages
  mutable size_t map_size_ = 0;
  std::shared_ptr<const IndexKeys> keys_owner_;   // guarded by keys_mutex_
  std::mutex keys_mutex_;
  std::atomic<const IndexKeys*> keys_{nullptr};
  unsigned dbi_[kDbCount] = {};
  bool has_db_[kDbCount] = {};
  // The last snapshot of the data file known to be checked: walked at open,
  // matched by index/checked, or committed by this process on top of one.
  // kNotChecked once another process committed in between.
  static constexpr uint64_t kNotChecked = ~uint64_t{0};
  mutable std::mutex checked_mutex_;
  mutable uint64_t checked_txnid_ = kNotChecked;
};

// The changes to message_counts that a transaction's message puts make,
// gathered by apply_op and written once per folder and UIDVALIDITY by
// write(), so a commit of many messages updates each count once.
class CountChanges {
 public:
  // A message value under `message_key` (codec::message_key) was `before`
  // (nullopt: there was none) and is now `after`.
  void note(std::string_view message_key, std::optional<MessageState> before, MessageState after);
  // Adds the gathered changes to message_counts in `txn` and forgets them.
  // Throws Error(corrupt) if a count would drop below zero (the counts
  // disagree with the messages: the index is damaged).
  void write(Index::Txn& txn);
  bool empty() const { return deltas_.empty(); }

 private:
  struct Delta {
    int64_t records = 0;
    int64_t present = 0;
    uint64_t changes = 0;
  };
  std::map<std::string, Delta> deltas_;  // by message_counts key
};

// Applies one journal op to the index inside `txn` (the same code serves a
// commit and a rebuild's replay): puts the record and keeps the name indexes
// (account_names, folder_names, target_names) in step; what a message put
// changes in message_counts goes to `counts`, for counts.write(txn) before the
// commit. REQUIRES: check_op(op).
void apply_op(Index::Txn& txn, const codec::JournalOp& op, CountChanges& counts);

// The records and present messages of every folder generation (the
// message_counts key: the first 12 bytes of its message keys), counted from
// the messages table in key order; `changes` is 0.
std::vector<std::pair<std::string, MessageCounts>> tally_messages(const Index::Txn& txn);

// Fills message_counts from the messages table inside `txn`, replacing
// whatever it held (a writer upgrading an index older than version 7).
void count_messages(Index::Txn& txn);

// The LMDB library this process runs with, e.g. "0.9.24".
std::string lmdb_version();

}  // namespace imapstage::archive

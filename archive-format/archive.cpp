#include "archive-format/archive.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <list>
#include <mutex>
#include <random>
#include <set>
#include <unordered_set>

#include <fmt/format.h>

#include "archive-format/codec.h"
#include "archive-format/index.h"
#include "archive-format/keys.h"
#include "archive-format/layout.h"
#include "archive-format/object_filter.h"
#include "archive-format/pack.h"
#include "common/aead.h"
#include "common/error.h"

namespace imapstage::archive {

namespace fs = std::filesystem;

namespace {

constexpr size_t kScanChunk = 256;

// Objects at least this large (raw) are never staged: they are committed at
// once, with the objects staged before them, their zstd frame written into
// the pack as it is made, so no buffer holds the whole compressed object
// (the size from which export spools a body instead of holding it).
constexpr size_t kLargeObject = kStreamedObject;

// Objects smaller than this are gathered into group records (FORMAT.md, "Group
// records") of about kGroupTarget raw bytes: small messages compress about
// twice as well together, and twice as fast, as one frame each.
constexpr size_t kGroupMemberMax = 64u << 10;
constexpr size_t kGroupTarget = 256u << 10;
static_assert(kGroupTarget + kGroupMemberMax + 40 * 4096 < kMaxGroupRaw);

// Decoded groups kept by a reader: consecutive messages of a folder mostly
// share groups, so each group is decoded about once however its members are read.
constexpr size_t kGroupCache = 8;

// A batch holds at most about this many compressed bytes in memory unless told
// otherwise (Batch::hold_at_most): beyond it, the staged objects are committed
// early (see Batch::Impl::write_objects_early).
constexpr uint64_t kResidentLimit = 8u << 20;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint64_t random_u64() {
  static std::mutex m;
  static std::random_device device;
  std::lock_guard lock(m);
  return static_cast<uint64_t>(device()) << 32 | device();
}

std::string hash_key(const Hash& h) { return std::string(reinterpret_cast<const char*>(h.data()), h.size()); }

std::string le32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}
std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}
uint64_t from_le(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < s.size() && i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(s[i])) << (8 * i);
  return v;
}

struct PendingObject {
  Hash hash{};
  uint64_t raw_size = 0;
  CompressedBytes stored;
  // A group record: its members (hash is then the payload's SHA-256).
  std::vector<GroupMember> members;
  // Or, for a large object, the raw bytes compressed straight into the pack
  // at commit (valid only during the Batch::put_object that commits it).
  std::string_view raw;
  Compressor* compressor = nullptr;
  // Or a spooled object, its frame copied from the spool at commit.
  const FrameSpool* spool = nullptr;
};

// A pack being written: the writer, and what the index says about it.
struct PackSlot {
  uint64_t id = 0;
  PackWriter writer;
  uint64_t committed_size = 0;  // as in the index
  uint64_t committed_records = 0;
  uint64_t records = 0;  // including records written by the commit in progress
  bool sealed = false;
};

}  // namespace

// ---- Archive::Impl ---------------------------------------------------------

struct Archive::Impl {
  fs::path dir;
  Mode mode = Mode::read;
  Options options;
  std::unique_ptr<WriterLock> lock;
  std::shared_ptr<Index> index;
  std::string archive_id;
  std::shared_ptr<const ArchiveKeys> keys;  // of an encrypted archive
  bool counts_kept = false;  // the index keeps message_counts (version 7 on)
  const RecordKeys* record_keys() const { return keys ? &keys->records() : nullptr; }
  // The name a record header carries for content hashing to `hash`.
  Hash record_name(const Hash& hash) const { return keys ? keys->records().name(hash) : hash; }

  // Serializes every index write and all pack writing.
  std::mutex commit_mutex;
  // The objects the index may hold, for put_object and commit_locked: every
  // object commit_locked indexes is added to it after its transaction.
  ObjectFilter object_filter{[this](const std::function<void(uint64_t)>& expect,
                                   const std::function<void(const Hash&)>& each) {
    auto txn = index->read();
    expect(txn.entries(Index::objects));
    txn.scan(Index::objects, "", "", [&](std::string_view k, std::string_view) {
      if (k.size() == std::tuple_size_v<Hash>) {
        Hash h{};
        std::memcpy(h.data(), k.data(), h.size());
        each(h);
      }
      return true;
    });
  }};
  std::optional<PackSlot> current;
  uint64_t journal_sequence = 0;
  std::unique_ptr<Compressor> journal_compressor;

  std::mutex id_mutex;
  std::optional<uint32_t> next_account;
  std::map<uint32_t, uint32_t> next_folder;

  // Recently decoded group payloads, most recent first, by (pack id, offset).
  mutable std::mutex group_mutex;
  mutable std::list<std::pair<std::pair<uint64_t, uint64_t>, std::shared_ptr<const std::string>>> groups;
  // The payload of the group holding `loc` (decoded and checked, or cached).
  std::shared_ptr<const std::string> group_payload(const ObjectLocation& loc, const fs::path& file,
                                                   const Hash& hash) const;

  void require_writable() const {
    if (mode == Mode::read)
      throw Error(ErrorKind::internal, "the archive was opened read-only", Retry::never, {.file = dir.string()});
  }

  fs::path pack_path(uint64_t id) const { return pack_file(dir, id); }

  // Adds the index directory to corruption errors from decoding.
  template <class F>
  auto guarded(F&& f) const {
    try {
      return f();
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::corrupt && e.where().file.empty()) throw e.with({.file = (dir / "index").string()});
      throw;
    }
  }

  // Calls fn(key, value) for every entry of `db` under `prefix`, a chunk per short read transaction.
  void scan(Index::Db db, const std::string& prefix,
            const std::function<bool(std::string_view, std::string_view)>& fn) const {
    if (index->encrypted() && db == Index::objects) {
      // Keyed names cannot resume a scan by a plain key: one read transaction.
      auto txn = index->read();
      txn.scan(db, "", prefix, fn);
      return;
    }
    std::string from = prefix;
    while (true) {
      std::vector<std::pair<std::string, std::string>> chunk;
      {
        auto txn = index->read();
        txn.scan(db, from, prefix, [&](std::string_view k, std::string_view v) {
          chunk.emplace_back(k, v);
          return chunk.size() < kScanChunk;
        });
      }
      for (auto& [k, v] : chunk)
        if (!fn(k, v)) return;
      if (chunk.size() < kScanChunk) return;
      from = chunk.back().first;
      from.push_back('\0');  // the least key after the last one
    }
  }

  uint32_t allocate_account_id() {
    std::lock_guard lock(id_mutex);
    if (!next_account) {
      auto txn = index->read();
      auto last = txn.last_key(Index::accounts, "");
      next_account = last ? codec::decode_u32_key(*last) + 1 : 1;
    }
    return (*next_account)++;
  }

  uint32_t allocate_folder_id(uint32_t account_id) {
    std::lock_guard lock(id_mutex);
    auto it = next_folder.find(account_id);
    if (it == next_folder.end()) {
      auto txn = index->read();
      auto last = txn.last_key(Index::folders, codec::u32_key(account_id));
      uint32_t next = 1;
      if (last) {
        uint32_t a = 0, f = 0;
        codec::decode_folder_key(*last, a, f);
        next = f + 1;
      }
      it = next_folder.emplace(account_id, next).first;
    }
    return it->second++;
  }

  // REQUIRES: commit_mutex held. A new, empty pack registered in the index.
  PackSlot start_pack() {
    uint64_t id = 0;
    while (true) {
      id = random_u64();
      if (id == 0) continue;
      std::error_code ec;
      if (fs::exists(pack_path(id), ec)) continue;
      auto txn = index->read();
      if (txn.get(Index::packs, codec::u64_key(id))) continue;
      break;
    }
    PackSlot slot{id, PackWriter::create(pack_path(id), id, dir, record_keys()), kPackHeaderSize, 0, 0, false};
    try {
      auto txn = index->write();
      txn.put(Index::packs, codec::u64_key(id), codec::encode_pack({id, kPackHeaderSize, 0, false}));
      txn.commit();
    } catch (...) {
      std::error_code ec;
      fs::remove(pack_path(id), ec);
      throw;
    }
    return slot;
  }

  // What a commit left out because another batch had written it meanwhile.
  struct LateDuplicates {
    uint64_t raw = 0;     // objects' raw bytes
    uint64_t stored = 0;  // compressed bytes that were staged for them
  };

  void commit(std::vector<PendingObject>& objects, std::vector<codec::JournalOp>& ops,
              LateDuplicates* late = nullptr) {
    std::lock_guard lock(commit_mutex);
    commit_locked(objects, ops, late);
  }

  // REQUIRES: commit_mutex held. Takes out of the staged group `o` the
  // members the index has (rare: the group is decompressed and built again).
  // Returns false when no member is left.
  template <typename Indexed>
  bool drop_indexed_members(PendingObject& o, const Indexed& is_indexed) {
    size_t indexed = 0;
    for (auto& m : o.members) indexed += is_indexed(m.hash);
    if (indexed == 0) return true;
    if (indexed == o.members.size()) return false;
    PackRecordInfo info;
    info.kind = RecordKind::group;
    info.hash = o.hash;
    info.raw_size = o.raw_size;
    info.stored_size = o.stored.size();
    std::string raw = decode_payload(info, o.stored.view(), dir / "packs");
    GroupBuilder kept;
    for (auto& m : o.members)
      if (!is_indexed(m.hash)) kept.add(m.hash, std::string_view(raw).substr(m.offset, m.size));
    auto members = kept.table();
    std::string payload = kept.finish();
    if (members.size() == 1) {
      std::string_view only(payload.data() + members[0].offset, members[0].size);
      o.hash = members[0].hash;
      o.raw_size = only.size();
      o.stored = journal_compressor->compress_bytes(only);
      o.members.clear();
    } else {
      o.hash = sha256(payload);
      o.raw_size = payload.size();
      o.stored = journal_compressor->compress_bytes(payload);
      o.members = std::move(members);
    }
    return true;
  }

  // REQUIRES: commit_mutex held. Writes the objects and a journal of `ops`,
  // syncs, then indexes everything in one transaction. On failure nothing is
  // indexed, the packs are cut back to their committed sizes and `ops` is kept.
  void commit_locked(std::vector<PendingObject>& objects, std::vector<codec::JournalOp>& ops,
                     LateDuplicates* late = nullptr) {
    require_writable();
    auto sizes = [&] {
      LateDuplicates sum;
      for (auto& o : objects) {
        sum.stored += o.stored.size();
        if (o.members.empty()) sum.raw += o.raw_size;
        for (auto& m : o.members) sum.raw += m.size;
      }
      return sum;
    };
    const LateDuplicates staged = late ? sizes() : LateDuplicates{};
    {
      // Another batch may have committed the same bytes since put_object
      // (connections side by side fetching the same message): each object
      // is written once. Every write is indexed under commit_mutex, so the
      // index knows every object written. Only hashes the filter cannot rule
      // out are looked up, in key order (neighbouring index pages).
      std::vector<Hash> asked;
      for (auto& o : objects) {
        if (o.members.empty() && !object_filter.surely_absent(o.hash)) asked.push_back(o.hash);
        for (auto& m : o.members)
          if (!object_filter.surely_absent(m.hash)) asked.push_back(m.hash);
      }
      std::sort(asked.begin(), asked.end());
      std::vector<Hash> held;  // ascending
      if (!asked.empty()) {
        auto txn = index->read();
        for (auto& h : asked)
          if (txn.get(Index::objects, hash_key(h))) held.push_back(h);
      }
      auto is_indexed = [&](const Hash& h) { return std::binary_search(held.begin(), held.end(), h); };
      std::erase_if(objects, [&](PendingObject& o) {
        if (o.members.empty()) return is_indexed(o.hash);
        return !drop_indexed_members(o, is_indexed);
      });
    }
    if (late) {
      LateDuplicates kept = sizes();
      late->raw += staged.raw - kept.raw;
      late->stored += staged.stored - kept.stored;
    }
    if (objects.empty() && ops.empty()) return;

    std::vector<PackSlot> slots;
    if (current) {
      slots.push_back(std::move(*current));
      current.reset();
    }
    std::vector<std::pair<Hash, ObjectLocation>> located;
    codec::Journal journal;
    bool journaled = !ops.empty();
    journal.sequence = journal_sequence + 1;
    journal.time = unix_now();
    journal.ops = std::move(ops);

    auto write_record = [&](RecordKind kind, const Hash& hash, uint64_t raw_size, std::string_view stored,
                            const PendingObject* streamed = nullptr) {
      if (slots.empty() || slots.back().sealed) slots.push_back(start_pack());
      PackSlot& slot = slots.back();
      auto info = streamed ? slot.writer.append_streamed(kind, hash, raw_size,
                                                         [&](const std::function<void(std::string_view)>& out) {
                                                           if (streamed->spool) streamed->spool->replay(out);
                                                           else streamed->compressor->compress_to(streamed->raw, out);
                                                         })
                           : slot.writer.append(kind, hash, raw_size, stored);
      ++slot.records;
      if (slot.writer.size() >= options.pack_size_limit) slot.sealed = true;
      return ObjectLocation{slot.id, info.offset, info.record_size, raw_size};
    };

    try {
      for (auto& o : objects) {
        if (o.members.empty()) {
          located.emplace_back(o.hash, write_record(RecordKind::object, o.hash, o.raw_size, o.stored.view(),
                                                    o.compressor || o.spool ? &o : nullptr));
          continue;
        }
        ObjectLocation group = write_record(RecordKind::group, o.hash, o.raw_size, o.stored.view());
        for (auto& m : o.members) {
          ObjectLocation loc = group;
          loc.raw_size = m.size;
          loc.grouped = true;
          loc.member_offset = m.offset;
          located.emplace_back(m.hash, loc);
        }
      }
      if (journaled) {
        std::string raw = codec::encode_journal(journal);
        std::string stored = journal_compressor->compress(raw);
        write_record(RecordKind::journal, sha256(raw), raw.size(), stored);
      }
      for (auto& slot : slots)
        if (slot.writer.size() != slot.committed_size || slot.sealed) slot.writer.sync();

      // In key order: each leaf page of the objects table is visited once.
      std::sort(located.begin(), located.end(), [](auto& a, auto& b) { return a.first < b.first; });
      auto txn = index->write();
      for (auto& [hash, loc] : located) {
        // A member another batch committed meanwhile keeps its first copy.
        if (loc.grouped && !object_filter.surely_absent(hash) && txn.get(Index::objects, hash_key(hash))) continue;
        txn.put(Index::objects, hash_key(hash), codec::encode_object(loc));
      }
      CountChanges counts;
      for (auto& op : journal.ops) apply_op(txn, op, counts);
      counts.write(txn);
      for (auto& slot : slots)
        txn.put(Index::packs, codec::u64_key(slot.id),
                codec::encode_pack({slot.id, slot.writer.size(), slot.records, slot.sealed}));
      if (journaled) txn.put(Index::meta, "journal_sequence", le64(journal.sequence));
      txn.commit();
    } catch (...) {
      ops = std::move(journal.ops);
      // Cut every pack back to what the index says; keep the first as current if that worked.
      for (size_t i = 0; i < slots.size(); ++i) {
        auto& slot = slots[i];
        slot.writer.truncate(slot.committed_size);
        slot.records = slot.committed_records;
        slot.sealed = false;
        if (!current && slot.writer.size() == slot.committed_size) current = std::move(slot);
      }
      throw;
    }
    if (journaled) journal_sequence = journal.sequence;
    for (auto& [hash, loc] : located) object_filter.add(hash);
    for (auto& slot : slots) {
      slot.committed_size = slot.writer.size();
      slot.committed_records = slot.records;
      if (!slot.sealed) current = std::move(slot);
    }
    objects.clear();
    ops.clear();
  }

  // Opens the unsealed packs after a possible crash: cuts each back to its committed size.
  void recover_packs() {
    std::vector<PackInfo> unsealed;
    scan(Index::packs, "", [&](std::string_view k, std::string_view v) {
      auto p = codec::decode_pack(k, v);
      if (!p.sealed) unsealed.push_back(p);
      return true;
    });
    for (auto& p : unsealed) {
      if (!check_in_archive(dir, pack_path(p.id), false, true)) continue;  // missing: verify reports it
      PackSlot slot{p.id, PackWriter::open(pack_path(p.id), p.committed_size, dir, record_keys()), p.committed_size, p.records,
                    p.records, false};
      if (!current || slot.committed_size > current->committed_size) current = std::move(slot);
    }
  }
};

// ---- Archive -----------------------------------------------------------------

Archive::Archive(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Archive::~Archive() = default;

std::unique_ptr<Archive> Archive::open(const fs::path& dir, Mode mode) { return open(dir, mode, Options{}); }

namespace {

// True for what Archive::open(create) leaves in a directory before it writes
// FORMAT: the lock file, FORMAT.tmp, the index directory (LMDB files and
// the index's `checked` stamp only) and an empty packs directory.
bool left_by_interrupted_creation(const fs::directory_entry& entry) {
  std::error_code ec;
  auto name = entry.path().filename().string();
  if (name == "lock" || name == "FORMAT.tmp" || name == "keys" || name == "keys.tmp")
    return entry.is_regular_file(ec);
  if (name == "packs") return entry.is_directory(ec) && fs::is_empty(entry.path(), ec);
  if (name != "index" || !entry.is_directory(ec)) return false;
  for (auto& file : fs::directory_iterator(entry.path(), ec)) {
    auto f = file.path().filename().string();
    if (f != "data.mdb" && f != "lock.mdb" && f != "checked" && f != "checked.tmp") return false;
  }
  return !ec;
}

std::mutex passphrase_mutex;
PassphraseSource& default_passphrase_source() {
  static PassphraseSource source;
  return source;
}

// Keys unlocked in this process, by SHA-256 of the key file and the passphrase.
std::mutex unlocked_mutex;
std::map<Hash, std::shared_ptr<const ArchiveKeys>>& unlocked() {
  static std::map<Hash, std::shared_ptr<const ArchiveKeys>> keys;
  return keys;
}

}  // namespace

void set_default_passphrase_source(PassphraseSource source) {
  std::lock_guard lock(passphrase_mutex);
  default_passphrase_source() = std::move(source);
}

bool has_default_passphrase_source() {
  std::lock_guard lock(passphrase_mutex);
  return static_cast<bool>(default_passphrase_source());
}

std::shared_ptr<const ArchiveKeys> unlock_archive(const fs::path& dir, const Archive::Options& options) {
  if (!has_key_file(dir)) return nullptr;
  KeyFile file = read_key_file(dir);
  PassphraseSource source = options.passphrase;
  if (!source) {
    std::lock_guard lock(passphrase_mutex);
    source = default_passphrase_source();
  }
  if (!source)
    throw Error(ErrorKind::usage, "the archive is encrypted and no passphrase was given", Retry::never,
                {.file = dir.string()});
  SecretString passphrase(source(dir));
  std::string material = encode_key_file(file);
  material.push_back('\0');
  material += passphrase.get();
  Hash id = sha256(material);
  wipe(material);
  {
    std::lock_guard lock(unlocked_mutex);
    if (auto it = unlocked().find(id); it != unlocked().end()) return it->second;
  }
  std::string master = unlock_master(file, passphrase.get(), dir);
  auto keys = std::make_shared<const ArchiveKeys>(master);
  wipe(master);
  std::lock_guard lock(unlocked_mutex);
  unlocked()[id] = keys;
  return keys;
}

struct Archive::NewKeys {
  KeyFile file;
  std::string master;
};

std::unique_ptr<Archive> Archive::create_encrypted(const fs::path& dir, std::string_view passphrase,
                                                   const ScryptParams& kdf, Options options) {
  std::error_code ec;
  if (fs::exists(dir / "FORMAT", ec))
    throw Error(ErrorKind::usage, "the directory already is an archive: encryption is chosen when one is created",
                Retry::never, {.file = dir.string()});
  NewKeys keys;
  keys.master = new_master_key();
  ArchiveKeys derived(keys.master);
  keys.file.key_id = derived.key_id();
  keys.file.slots.push_back(make_slot(1, keys.master, keys.file.key_id, passphrase, kdf));
  auto archive = open(dir, Mode::create, std::move(options), &keys);
  wipe(keys.master);
  return archive;
}

std::unique_ptr<Archive> Archive::create_with_key_file(const fs::path& dir, const KeyFile& file,
                                                       std::string_view master, Options options) {
  std::error_code ec;
  if (fs::exists(dir / "FORMAT", ec))
    throw Error(ErrorKind::usage, "the directory already is an archive: encryption is chosen when one is created",
                Retry::never, {.file = dir.string()});
  NewKeys keys{file, std::string(master)};
  if (ArchiveKeys(keys.master).key_id() != file.key_id)
    throw Error(ErrorKind::internal, "the master key does not belong to the key file");
  auto archive = open(dir, Mode::create, std::move(options), &keys);
  wipe(keys.master);
  return archive;
}

std::unique_ptr<Archive> Archive::open(const fs::path& dir, Mode mode, Options options) {
  return open(dir, mode, std::move(options), nullptr);
}

const ArchiveKeys* Archive::keys() const { return impl_->keys.get(); }

std::unique_ptr<Archive> Archive::open(const fs::path& dir, Mode mode, Options options, const NewKeys* new_keys) {
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->mode = mode;
  impl->options = options;
  ErrorWhere where{.file = dir.string()};
  std::error_code ec;
  fs::path format_file = dir / "FORMAT";
  bool writing = mode != Mode::read;

  // Creation writes FORMAT last, once the index has its archive id: a
  // directory with FORMAT is always a complete archive, whenever a creator
  // was killed. What an interrupted creation leaves (the lock, an index,
  // an empty packs directory) is picked up by the next creation.
  bool creating = false;
  if (!fs::exists(format_file, ec)) {
    if (mode != Mode::create) {
      if (!fs::exists(dir, ec)) throw Error(ErrorKind::not_found, "no such archive directory", Retry::never, where);
      throw Error(ErrorKind::not_found, "not an imapstage archive (no FORMAT file)", Retry::never, where);
    }
    if (!fs::exists(dir, ec)) {
      if (!dir.parent_path().empty()) fs::create_directories(dir.parent_path(), ec);
      if (::mkdir(dir.c_str(), kDirMode) != 0 && errno != EEXIST)
        throw_io("cannot create the archive directory", dir.string(), errno);
    }
    for (auto& entry : fs::directory_iterator(dir, ec)) {
      if (!left_by_interrupted_creation(entry))
        throw Error(ErrorKind::usage, "the directory is not empty and is not an imapstage archive", Retry::never,
                    where);
    }
    impl->lock = WriterLock::acquire(dir / "lock");
    creating = !fs::exists(format_file, ec);  // else another creator finished meanwhile
    if (creating) {
      // The key file comes first (FORMAT last): an interrupted creation leaves at most an unused one.
      if (new_keys) {
        write_key_file(dir, new_keys->file);
        impl->keys = std::make_shared<const ArchiveKeys>(new_keys->master);
      } else {
        fs::remove(dir / kKeyFileName, ec);
        fs::remove(dir / "keys.tmp", ec);
      }
    }
  }
  if (new_keys && !creating)
    throw Error(ErrorKind::usage, "the directory already is an archive: encryption is chosen when one is created",
                Retry::never, where);
  uint32_t version = creating ? kFormatVersion : read_format_file(format_file);
  if (version == 0 || version > kFormatVersion)
    throw Error(ErrorKind::format,
                fmt::format("archive format version {} is not supported by this build (it reads up to {})", version,
                            kFormatVersion),
                Retry::never, where);
  // Unlocked before anything is written: a wrong passphrase leaves the archive as it was.
  if (!creating) impl->keys = unlock_archive(dir, options);
  if (writing && !impl->lock) impl->lock = WriterLock::acquire(dir / "lock");
  if (writing) make_dir_in_archive(dir, dir / "packs");
  else check_in_archive(dir, dir / "packs", true);

  impl->index = Index::open(dir / "index", options.map_size, writing);
  if (impl->keys) impl->index->set_keys(impl->keys->index());
  uint32_t index_version = 0;  // meta/format_version (0: none yet)
  impl->guarded([&] {
    std::optional<std::string> id;
    uint64_t sequence = 0;
    {
      auto txn = impl->index->read();
      auto encryption = txn.get(Index::meta, "encryption");
      if (encryption && !impl->keys)
        throw Error(ErrorKind::format, "the archive is encrypted but its key file (keys) is missing", Retry::never,
                    where);
      if (encryption && *encryption != impl->keys->key_id())
        throw Error(ErrorKind::corrupt, "the key file belongs to another archive (its key id differs)",
                    Retry::never, where);
      if (auto v = txn.get(Index::meta, "format_version")) {
        if (v->size() != 4) throw Error(ErrorKind::corrupt, "malformed format_version in the index");
        if (from_le(*v) > kFormatVersion)
          throw Error(ErrorKind::format, fmt::format("index format version {} is newer than this build", from_le(*v)),
                      Retry::never, where);
        index_version = static_cast<uint32_t>(from_le(*v));
      }
      if (auto v = txn.get(Index::meta, "archive_id")) id = std::string(*v);
      if (auto v = txn.get(Index::meta, "journal_sequence")) {
        if (v->size() != 8) throw Error(ErrorKind::corrupt, "malformed journal_sequence in the index");
        sequence = from_le(*v);
      }
    }
    if (!id) {
      if (!writing) throw Error(ErrorKind::corrupt, "the index has no archive id", Retry::never, where);
      id = fmt::format("{:016x}{:016x}", random_u64(), random_u64());
      auto txn = impl->index->write();
      txn.put(Index::meta, "format_version", le32(kFormatVersion));
      index_version = kFormatVersion;
      txn.put(Index::meta, "archive_id", *id);
      txn.put(Index::meta, "journal_sequence", le64(0));
      if (impl->keys) txn.put(Index::meta, "encryption", impl->keys->key_id());
      txn.commit();
    }
    impl->archive_id = *id;
    impl->journal_sequence = sequence;
    return 0;
  });
  if (writing) {
    impl->journal_compressor = std::make_unique<Compressor>(options.zstd_level);
    impl->guarded([&] {
      impl->recover_packs();
      return 0;
    });
  }
  // A writer upgrades an older archive before its first commit: the values
  // it writes (folder layout 2) are ones an older reader would refuse.
  if (writing && !creating && version < kFormatVersion) {
    impl->guarded([&] {
      auto txn = impl->index->write();
      // Version 7 keeps message_counts: counted here once, in the same
      // transaction (an index already at 7, rebuilt or upgraded by a writer
      // stopped before FORMAT, has them).
      if (index_version < 7) count_messages(txn);
      txn.put(Index::meta, "format_version", le32(kFormatVersion));
      txn.commit();
      index_version = kFormatVersion;
      return 0;
    });
  }
  impl->counts_kept = index_version >= 7;
  if (creating || (writing && version < kFormatVersion))
    write_file_durably(format_file, std::string(kFormatPrefix) + std::to_string(kFormatVersion) + "\n");
  return std::unique_ptr<Archive>(new Archive(std::move(impl)));
}

const fs::path& Archive::dir() const { return impl_->dir; }
bool Archive::writable() const { return impl_->mode != Mode::read; }
std::string Archive::archive_id() const { return impl_->archive_id; }

uint64_t Archive::journal_sequence() const {
  std::lock_guard lock(impl_->commit_mutex);
  return impl_->journal_sequence;
}

std::vector<AccountRecord> Archive::accounts() const {
  return impl_->guarded([&] {
    std::vector<AccountRecord> out;
    impl_->scan(Index::accounts, "", [&](std::string_view k, std::string_view v) {
      out.push_back(codec::decode_account(k, v));
      return true;
    });
    return out;
  });
}

std::optional<AccountRecord> Archive::find_account(std::string_view name) const {
  return impl_->guarded([&]() -> std::optional<AccountRecord> {
    auto txn = impl_->index->read();
    auto id = txn.get(Index::account_names, codec::name_key(name));
    if (!id) return std::nullopt;
    auto v = txn.get(Index::accounts, *id);
    if (!v) throw Error(ErrorKind::corrupt, "account name refers to a missing account");
    auto r = codec::decode_account(*id, *v);
    if (r.name != name) return std::nullopt;
    return r;
  });
}

std::vector<FolderRecord> Archive::folders(uint32_t account_id) const {
  return impl_->guarded([&] {
    std::vector<FolderRecord> out;
    impl_->scan(Index::folders, codec::u32_key(account_id), [&](std::string_view k, std::string_view v) {
      out.push_back(codec::decode_folder(k, v));
      return true;
    });
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name_raw < b.name_raw; });
    return out;
  });
}

std::optional<FolderRecord> Archive::find_folder(uint32_t account_id, std::string_view name_raw) const {
  return impl_->guarded([&]() -> std::optional<FolderRecord> {
    auto txn = impl_->index->read();
    auto id = txn.get(Index::folder_names, codec::folder_name_key(account_id, name_raw));
    if (!id) return std::nullopt;
    std::string key = codec::folder_key(account_id, codec::decode_u32_key(*id));
    auto v = txn.get(Index::folders, key);
    if (!v) throw Error(ErrorKind::corrupt, "folder name refers to a missing folder");
    auto r = codec::decode_folder(key, *v);
    if (r.name_raw != name_raw) return std::nullopt;
    return r;
  });
}

std::optional<FolderRecord> Archive::folder(uint32_t account_id, uint32_t folder_id) const {
  return impl_->guarded([&]() -> std::optional<FolderRecord> {
    auto txn = impl_->index->read();
    std::string key = codec::folder_key(account_id, folder_id);
    auto v = txn.get(Index::folders, key);
    if (!v) return std::nullopt;
    return codec::decode_folder(key, *v);
  });
}

void Archive::for_each_message(uint32_t account_id, uint32_t folder_id, std::optional<uint32_t> uidvalidity,
                               const std::function<bool(const MessageRecord&)>& fn) const {
  std::string prefix = codec::folder_key(account_id, folder_id);
  if (uidvalidity) prefix += codec::u32_key(*uidvalidity);
  impl_->guarded([&] {
    impl_->scan(Index::messages, prefix,
                [&](std::string_view k, std::string_view v) { return fn(codec::decode_message(k, v)); });
    return 0;
  });
}

void Archive::for_each_message_state(uint32_t account_id, uint32_t folder_id, uint32_t uidvalidity,
                                     const std::function<bool(uint32_t, MessageState)>& fn) const {
  std::string prefix = codec::folder_key(account_id, folder_id) + codec::u32_key(uidvalidity);
  impl_->guarded([&] {
    // One read transaction, no copies: `fn` only looks (see archive.h).
    auto txn = impl_->index->read();
    txn.scan(Index::messages, "", prefix, [&](std::string_view k, std::string_view v) {
      auto [key, state] = codec::decode_message_state(k, v);
      return fn(key.uid, state);
    });
    return 0;
  });
}

std::optional<MessageCounts> Archive::message_counts(uint32_t account_id, uint32_t folder_id,
                                                     uint32_t uidvalidity) const {
  if (!impl_->counts_kept) return std::nullopt;
  return impl_->guarded([&] {
    auto txn = impl_->index->read();
    auto v = txn.get(Index::message_counts, codec::message_counts_key(account_id, folder_id, uidvalidity));
    return v ? codec::decode_message_counts(*v) : MessageCounts{};
  });
}

std::vector<std::string> Archive::check_message_counts() const {
  if (!impl_->counts_kept) return {};
  return impl_->guarded([&] {
    std::vector<std::string> out;
    auto txn = impl_->index->read();
    std::map<std::string, MessageCounts> stored;
    txn.scan(Index::message_counts, "", "", [&](std::string_view k, std::string_view v) {
      stored[std::string(k)] = codec::decode_message_counts(v);
      return true;
    });
    auto found = tally_messages(txn);
    auto name = [&](const std::string& key) {
      auto m = codec::decode_message_key(key + std::string(4, '\0'));
      std::string account = fmt::format("#{}", m.account_id), folder = fmt::format("#{}", m.folder_id);
      if (auto v = txn.get(Index::accounts, codec::u32_key(m.account_id))) account = codec::decode_account(codec::u32_key(m.account_id), *v).name;
      std::string fk = codec::folder_key(m.account_id, m.folder_id);
      if (auto v = txn.get(Index::folders, fk)) folder = codec::decode_folder(fk, *v).canonical_name();
      return fmt::format("account {}, folder {}, uidvalidity {}", account, folder, m.uidvalidity);
    };
    for (auto& [key, c] : found) {
      MessageCounts kept;
      if (auto s = stored.find(key); s != stored.end()) {
        kept = s->second;
        stored.erase(s);
      }
      if (kept.records != c.records || kept.present != c.present)
        out.push_back(fmt::format("message counts of {} say {} messages ({} present), the index holds {} ({} present)",
                                  name(key), kept.records, kept.present, c.records, c.present));
    }
    for (auto& [key, c] : stored)  // counts of generations without a message
      out.push_back(fmt::format("message counts of {} say {} messages ({} present), the index holds none", name(key),
                                c.records, c.present));
    return out;
  });
}

void Archive::for_each_message(const std::function<bool(const MessageRecord&)>& fn) const {
  impl_->guarded([&] {
    impl_->scan(Index::messages, "", [&](std::string_view k, std::string_view v) { return fn(codec::decode_message(k, v)); });
    return 0;
  });
}

std::optional<MessageRecord> Archive::message(const MessageKey& key) const {
  return impl_->guarded([&]() -> std::optional<MessageRecord> {
    auto txn = impl_->index->read();
    std::string k = codec::message_key(key);
    auto v = txn.get(Index::messages, k);
    if (!v) return std::nullopt;
    return codec::decode_message(k, *v);
  });
}

std::optional<ObjectLocation> Archive::object(const Hash& hash) const {
  return impl_->guarded([&]() -> std::optional<ObjectLocation> {
    auto txn = impl_->index->read();
    auto v = txn.get(Index::objects, hash_key(hash));
    if (!v) return std::nullopt;
    return codec::decode_object(*v);
  });
}

void Archive::for_each_object(const std::function<bool(const Hash&, const ObjectLocation&)>& fn) const {
  impl_->guarded([&] {
    impl_->scan(Index::objects, "", [&](std::string_view k, std::string_view v) {
      if (k.size() != 32) throw Error(ErrorKind::corrupt, "malformed object key in the index");
      Hash h{};
      std::memcpy(h.data(), k.data(), 32);
      return fn(h, codec::decode_object(v));
    });
    return 0;
  });
}

std::vector<PackInfo> Archive::packs() const {
  return impl_->guarded([&] {
    std::vector<PackInfo> out;
    impl_->scan(Index::packs, "", [&](std::string_view k, std::string_view v) {
      out.push_back(codec::decode_pack(k, v));
      return true;
    });
    return out;
  });
}

fs::path Archive::pack_path(uint64_t pack_id) const { return impl_->pack_path(pack_id); }

namespace {

// The object's location, and its pack file, which must be there.
std::pair<ObjectLocation, fs::path> locate(const Archive& a, const Hash& hash) {
  auto loc = a.object(hash);
  std::string hex = to_hex(hash);
  if (!loc) throw Error(ErrorKind::not_found, "the archive has no such object", Retry::never, {.hash = hex});
  fs::path file = a.pack_path(loc->pack_id);
  bool present;
  try {
    present = check_in_archive(a.dir(), file, false);
  } catch (const Error& e) {
    throw e.with({.hash = hex});
  }
  if (!present)
    throw Error(ErrorKind::corrupt, fmt::format("the pack holding the object (offset {}) is missing", loc->offset),
                Retry::never, {.file = file.string(), .hash = hex});
  return {*loc, file};
}

}  // namespace

std::shared_ptr<const std::string> Archive::Impl::group_payload(const ObjectLocation& loc, const fs::path& file,
                                                                const Hash& hash) const {
  std::pair<uint64_t, uint64_t> key{loc.pack_id, loc.offset};
  {
    std::lock_guard lock(group_mutex);
    for (auto it = groups.begin(); it != groups.end(); ++it)
      if (it->first == key) {
        groups.splice(groups.begin(), groups, it);
        return groups.front().second;
      }
  }
  std::shared_ptr<const std::string> raw;
  try {
    raw = std::make_shared<const std::string>(read_group(file, loc.offset, dir, record_keys()));
  } catch (const Error& e) {
    // Named by the object asked for (the group's own hash means nothing to a user).
    ErrorWhere where = e.where();
    where.hash = to_hex(hash);
    throw Error(e.kind(), e.message(), e.retry(), where);
  }
  std::lock_guard lock(group_mutex);
  groups.emplace_front(key, raw);
  if (groups.size() > kGroupCache) groups.pop_back();
  return raw;
}

std::string Archive::read_object(const Hash& hash) const {
  auto [loc, file] = locate(*this, hash);
  if (loc.grouped) {
    auto payload = impl_->group_payload(loc, file, hash);
    return std::string(group_member(*payload, loc.member_offset, loc.raw_size, hash, file, loc.offset));
  }
  if (loc.raw_size > kMaxObjectInMemory)
    throw Error(ErrorKind::corrupt,
                fmt::format("the object is {} bytes (the index says), more than the {} a message may have to be held "
                            "in memory",
                            loc.raw_size, kMaxObjectInMemory),
                Retry::never, {.file = file.string(), .hash = to_hex(hash)});
  // Address space for the claimed size (at most kMaxObjectInMemory); pages are
  // only touched by bytes that really decompress.
  std::string raw;
  raw.reserve(static_cast<size_t>(loc.raw_size));
  read_record_to(file, loc.offset, RecordKind::object, impl_->record_name(hash), loc.raw_size, impl_->dir,
                 [&](std::string_view piece) { raw.append(piece); }, impl_->record_keys());
  return raw;
}

void Archive::read_object_to(const Hash& hash, const ByteSink& out) const {
  auto [loc, file] = locate(*this, hash);
  if (loc.grouped) {
    auto payload = impl_->group_payload(loc, file, hash);
    std::string_view bytes = group_member(*payload, loc.member_offset, loc.raw_size, hash, file, loc.offset);
    constexpr size_t kPiece = 128u << 10;
    for (size_t at = 0; at < bytes.size(); at += kPiece) out(bytes.substr(at, kPiece));
    return;
  }
  read_record_to(file, loc.offset, RecordKind::object, impl_->record_name(hash), loc.raw_size, impl_->dir, out,
                 impl_->record_keys());
}

void Archive::check_object(const Hash& hash) const {
  read_object_to(hash, [](std::string_view) {});
}

std::optional<uint32_t> Archive::find_target(std::string_view identity) const {
  return impl_->guarded([&]() -> std::optional<uint32_t> {
    auto txn = impl_->index->read();
    auto id = txn.get(Index::target_names, codec::name_key(identity));
    if (!id) return std::nullopt;
    auto v = txn.get(Index::targets, *id);
    if (!v) throw Error(ErrorKind::corrupt, "target name refers to a missing target");
    if (codec::decode_target(*v) != identity) return std::nullopt;
    return codec::decode_u32_key(*id);
  });
}

std::optional<AppendRecord> Archive::append(const AppendKey& key) const {
  return impl_->guarded([&]() -> std::optional<AppendRecord> {
    auto txn = impl_->index->read();
    std::string k = codec::append_key(key);
    auto v = txn.get(Index::appends, k);
    if (!v) return std::nullopt;
    return codec::decode_append(k, *v);
  });
}

void Archive::for_each_append(uint32_t target_id, const std::function<bool(const AppendRecord&)>& fn) const {
  impl_->guarded([&] {
    impl_->scan(Index::appends, codec::u32_key(target_id),
                [&](std::string_view k, std::string_view v) { return fn(codec::decode_append(k, v)); });
    return 0;
  });
}

std::vector<RunRecord> Archive::runs() const {
  return impl_->guarded([&] {
    std::vector<RunRecord> out;
    impl_->scan(Index::runs, "", [&](std::string_view k, std::string_view v) {
      out.push_back(codec::decode_run(k, v));
      return true;
    });
    return out;
  });
}

std::optional<ImportMark> Archive::import_mark(uint32_t target_id, uint32_t account_id, uint32_t folder_id,
                                               uint32_t uidvalidity) const {
  return impl_->guarded([&]() -> std::optional<ImportMark> {
    auto txn = impl_->index->read();
    auto v = txn.get(Index::import_marks, codec::import_mark_key(target_id, account_id, folder_id, uidvalidity));
    if (!v) return std::nullopt;
    return codec::decode_import_mark(*v);
  });
}

void Archive::put_import_mark(uint32_t target_id, uint32_t account_id, uint32_t folder_id, uint32_t uidvalidity,
                              const ImportMark& mark) {
  impl_->require_writable();
  std::lock_guard lock(impl_->commit_mutex);
  impl_->guarded([&] {
    auto txn = impl_->index->write();
    txn.put(Index::import_marks, codec::import_mark_key(target_id, account_id, folder_id, uidvalidity),
            codec::encode_import_mark(mark));
    txn.commit();
    return 0;
  });
}

uint32_t Archive::put_target(std::string_view identity) {
  impl_->require_writable();
  if (auto id = find_target(identity)) return *id;
  std::lock_guard lock(impl_->commit_mutex);
  if (auto id = find_target(identity)) return *id;
  uint32_t id = impl_->guarded([&] {
    auto txn = impl_->index->read();
    auto last = txn.last_key(Index::targets, "");
    return last ? codec::decode_u32_key(*last) + 1 : 1u;
  });
  std::vector<PendingObject> none;
  std::vector<codec::JournalOp> ops{{codec::OpKind::put_target, codec::u32_key(id), codec::encode_target(identity)}};
  impl_->commit_locked(none, ops);
  return id;
}

uint64_t Archive::begin_run(const std::string& kind, const std::string& account, const std::string& details_json) {
  impl_->require_writable();
  std::lock_guard lock(impl_->commit_mutex);
  return impl_->guarded([&] {
    auto txn = impl_->index->write();
    auto last = txn.last_key(Index::runs, "");
    RunRecord r;
    r.id = last ? codec::decode_u64_key(*last) + 1 : 1;
    r.kind = kind;
    r.account = account;
    r.started = unix_now();
    r.result = "running";
    r.details = details_json;
    txn.put(Index::runs, codec::u64_key(r.id), codec::encode_run(r));
    txn.commit();
    return r.id;
  });
}

void Archive::end_run(uint64_t id, const std::string& result, const std::string& details_json) {
  impl_->require_writable();
  std::lock_guard lock(impl_->commit_mutex);
  impl_->guarded([&] {
    auto txn = impl_->index->write();
    std::string key = codec::u64_key(id);
    auto v = txn.get(Index::runs, key);
    if (!v) throw Error(ErrorKind::not_found, fmt::format("no run {} in the archive", id));
    auto r = codec::decode_run(key, *v);
    r.finished = unix_now();
    r.result = result;
    r.details = details_json;
    txn.put(Index::runs, key, codec::encode_run(r));
    txn.commit();
    return 0;
  });
}

void Archive::seal_current_pack() {
  impl_->require_writable();
  std::lock_guard lock(impl_->commit_mutex);
  auto& cur = impl_->current;
  if (!cur || cur->records == 0) return;
  auto txn = impl_->index->write();
  txn.put(Index::packs, codec::u64_key(cur->id), codec::encode_pack({cur->id, cur->committed_size, cur->records, true}));
  txn.commit();
  cur.reset();
}

// ---- Batch -------------------------------------------------------------------

struct Batch::Impl {
  Archive& archive;
  Compressor compressor;
  std::vector<PendingObject> objects;
  std::set<Hash> hashes;
  GroupBuilder group;     // small objects not yet compressed
  uint64_t bytes = 0;     // compressed bytes put since the last commit(), including those written early
  uint64_t resident = 0;  // compressed bytes of `objects`, held in memory
  uint64_t resident_limit = kResidentLimit;  // past it, write_objects_early()
  uint64_t stored_total = 0;  // compressed bytes of every record this batch made
  Archive::Impl::LateDuplicates late;  // left out at commit: another batch had written them
  std::vector<codec::JournalOp> ops;
  std::map<std::string, uint32_t> account_ids;                       // by name, staged here
  std::map<std::pair<uint32_t, std::string>, uint32_t> folder_ids;   // by (account, name_raw), staged here

  Impl(Archive& a) : archive(a), compressor(a.impl_->options.zstd_level) {}

  // Commits the staged objects (not the index changes): their records are
  // written, synced and indexed like in any commit, without a journal record.
  void write_objects_early() {
    if (objects.empty()) return;
    std::vector<codec::JournalOp> none;
    archive.impl_->commit(objects, none, &late);
    resident = 0;
  }

  // Writes the large object `o` (its bytes streamed from memory or a spool)
  // into a pack now, with what is staged before it. On failure it is not
  // staged either, and the error propagates.
  void write_now(PendingObject o) {
    const Hash hash = o.hash;
    objects.push_back(std::move(o));
    try {
      write_objects_early();
    } catch (...) {
      std::erase_if(objects, [&](const PendingObject& p) { return p.compressor || p.spool; });
      throw;
    }
    hashes.insert(hash);
    if (auto at = archive.object(hash)) {
      bytes += at->record_size - kRecordHeaderSize;
      stored_total += at->record_size - kRecordHeaderSize;
    }
  }

  // Compresses the gathered small objects into one record (a lone one
  // becomes an object record of its own) and stages it.
  void close_group() {
    if (group.members() == 0) return;
    auto members = group.table();
    std::string_view raw = group.finish_in_place();  // valid until the next add
    bytes -= std::min<uint64_t>(bytes, raw.size());  // counted raw while open
    PendingObject o;
    if (members.size() == 1) {
      std::string_view only(raw.data() + members[0].offset, members[0].size);
      o.hash = members[0].hash;
      o.raw_size = only.size();
      o.stored = compressor.compress_bytes(only);
    } else {
      o.hash = sha256(raw);
      o.raw_size = raw.size();
      o.stored = compressor.compress_bytes(raw);
      o.members = std::move(members);
    }
    bytes += o.stored.size();
    resident += o.stored.size();
    stored_total += o.stored.size();
    objects.push_back(std::move(o));
    if (resident >= resident_limit) write_objects_early();
  }
};

Batch::Batch(Archive& archive) : impl_(std::make_unique<Impl>(archive)) {}
Batch::~Batch() = default;

void Batch::hold_at_most(uint64_t bytes) { impl_->resident_limit = std::max<uint64_t>(1, bytes); }

bool Batch::put_object(const Hash& hash, std::string_view raw) {
  impl_->archive.impl_->require_writable();
  assert(sha256(raw) == hash);
  if (impl_->hashes.count(hash)) return false;
  if (impl_->archive.impl_->object_filter.may_hold(hash) && impl_->archive.object(hash)) return false;
  if (raw.size() >= kLargeObject) {
    // Compressed straight into the pack, now, while `raw` is alive (after
    // what is staged): no second buffer the size of the object.
    impl_->write_now({hash, raw.size(), {}, {}, raw, &impl_->compressor});
    return true;
  }
  if (raw.size() < kGroupMemberMax && impl_->archive.impl_->options.group_small_objects) {
    impl_->group.add(hash, raw);
    impl_->bytes += raw.size();
    impl_->hashes.insert(hash);
    if (impl_->group.raw_size() >= kGroupTarget) impl_->close_group();
    return true;
  }
  CompressedBytes stored = impl_->compressor.compress_bytes(raw);
  impl_->bytes += stored.size();
  impl_->resident += stored.size();
  impl_->stored_total += stored.size();
  impl_->objects.push_back({hash, raw.size(), std::move(stored), {}, {}, nullptr});
  impl_->hashes.insert(hash);
  if (impl_->resident >= impl_->resident_limit) impl_->write_objects_early();
  return true;
}

FrameSpool Batch::spool(uint64_t raw_size) {
  auto& a = *impl_->archive.impl_;
  a.require_writable();
  return FrameSpool(a.dir / "packs", raw_size, a.options.zstd_level, a.keys != nullptr);
}

bool Batch::put_spooled(FrameSpool& spool) {
  impl_->archive.impl_->require_writable();
  const Hash hash = spool.finish();
  if (impl_->hashes.count(hash)) return false;
  if (impl_->archive.impl_->object_filter.may_hold(hash) && impl_->archive.object(hash)) return false;
  PendingObject o;
  o.hash = hash;
  o.raw_size = spool.raw_size();
  o.spool = &spool;
  impl_->write_now(std::move(o));
  return true;
}

void Batch::close_group() { impl_->close_group(); }
uint64_t Batch::stored_bytes() const { return impl_->stored_total - impl_->late.stored; }
uint64_t Batch::late_duplicate_bytes() const { return impl_->late.raw; }

uint32_t Batch::put_account(AccountRecord& record) {
  auto& a = *impl_->archive.impl_;
  a.require_writable();
  if (record.id == 0) {
    if (auto it = impl_->account_ids.find(record.name); it != impl_->account_ids.end()) record.id = it->second;
    else if (auto existing = impl_->archive.find_account(record.name)) record.id = existing->id;
    else record.id = a.allocate_account_id();
  }
  impl_->account_ids[record.name] = record.id;
  impl_->ops.push_back({codec::OpKind::put_account, codec::u32_key(record.id), codec::encode_account(record)});
  return record.id;
}

uint32_t Batch::put_folder(FolderRecord& record) {
  auto& a = *impl_->archive.impl_;
  a.require_writable();
  if (record.id == 0) {
    auto name = std::make_pair(record.account_id, record.name_raw);
    if (auto it = impl_->folder_ids.find(name); it != impl_->folder_ids.end()) record.id = it->second;
    else if (auto existing = impl_->archive.find_folder(record.account_id, record.name_raw)) record.id = existing->id;
    else record.id = a.allocate_folder_id(record.account_id);
  }
  impl_->folder_ids[{record.account_id, record.name_raw}] = record.id;
  impl_->ops.push_back(
      {codec::OpKind::put_folder, codec::folder_key(record.account_id, record.id), codec::encode_folder(record)});
  return record.id;
}

void Batch::put_message(const MessageRecord& record) {
  impl_->archive.impl_->require_writable();
  impl_->ops.push_back({codec::OpKind::put_message, codec::message_key(record.key), codec::encode_message(record)});
}

void Batch::put_append(const AppendRecord& record) {
  impl_->archive.impl_->require_writable();
  impl_->ops.push_back({codec::OpKind::put_append, codec::append_key(record.key), codec::encode_append(record)});
}

void Batch::erase_append(const AppendKey& key) {
  impl_->archive.impl_->require_writable();
  impl_->ops.push_back({codec::OpKind::erase_append, codec::append_key(key), {}});
}

uint64_t Batch::pending_bytes() const { return impl_->bytes; }
size_t Batch::pending_changes() const { return impl_->ops.size() + impl_->hashes.size(); }

void Batch::commit() {
  impl_->close_group();
  impl_->archive.impl_->commit(impl_->objects, impl_->ops, &impl_->late);
  impl_->objects.clear();
  impl_->hashes.clear();
  impl_->bytes = 0;
  impl_->resident = 0;
  impl_->ops.clear();
  impl_->account_ids.clear();
  impl_->folder_ids.clear();
}

// ---- flags -------------------------------------------------------------------

namespace {

struct SystemFlag {
  Flag bit;
  std::string_view name;
};
constexpr SystemFlag kSystemFlags[] = {
    {kSeen, "\\Seen"}, {kAnswered, "\\Answered"}, {kFlagged, "\\Flagged"}, {kDeleted, "\\Deleted"}, {kDraft, "\\Draft"},
};

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

void parse_flags(const std::vector<std::string>& imap_flags, uint32_t& bits, std::vector<std::string>& keywords) {
  bits = 0;
  keywords.clear();
  auto lower = [](std::string k) {
    for (auto& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return k;
  };
  std::unordered_set<std::string> seen_lower;
  for (auto& f : imap_flags) {
    if (f.empty()) continue;
    if (iequals(f, "\\Recent")) continue;
    bool system = false;
    for (auto& s : kSystemFlags)
      if (iequals(f, s.name)) {
        bits |= s.bit;
        system = true;
      }
    if (system) continue;
    if (keywords.size() < 16) {
      // The usual case: a few keywords, compared in place.
      bool seen = std::any_of(keywords.begin(), keywords.end(), [&](const std::string& k) { return iequals(k, f); });
      if (!seen) keywords.push_back(f);
      continue;
    }
    // Many (a hostile server or archive may claim any number): a set keeps this linear.
    if (seen_lower.empty())
      for (auto& k : keywords) seen_lower.insert(lower(k));
    if (seen_lower.insert(lower(f)).second) keywords.push_back(f);
  }
}

std::vector<std::string> flags_to_imap(uint32_t bits, const std::vector<std::string>& keywords) {
  std::vector<std::string> out;
  for (auto& s : kSystemFlags)
    if (bits & s.bit) out.emplace_back(s.name);
  out.insert(out.end(), keywords.begin(), keywords.end());
  return out;
}

std::string_view namespace_name(NamespaceKind kind) {
  switch (kind) {
    case NamespaceKind::personal: return "personal";
    case NamespaceKind::other_users: return "other";
    case NamespaceKind::shared: return "shared";
  }
  return "personal";
}

namespace {
constexpr std::pair<SourceKind, std::string_view> kSourceKindNames[] = {
    {SourceKind::imap, "imap"}, {SourceKind::pop3, "pop3"}, {SourceKind::maildir, "maildir"},
    {SourceKind::mbox, "mbox"}, {SourceKind::eml, "eml"}};
}  // namespace

std::string_view source_kind_name(SourceKind kind) {
  for (auto& [k, name] : kSourceKindNames)
    if (k == kind) return name;
  return "imap";
}

std::optional<SourceKind> parse_source_kind(std::string_view name) {
  for (auto& [k, n] : kSourceKindNames)
    if (n == name) return k;
  return std::nullopt;
}

std::string_view date_source_name(DateSource source) {
  switch (source) {
    case DateSource::server: return "server";
    case DateSource::file_mtime: return "mtime";
    case DateSource::from_line: return "from-line";
    case DateSource::received: return "received";
    case DateSource::date_header: return "date";
    case DateSource::fetch_time: return "fetch-time";
  }
  return "server";
}

std::string FolderRecord::canonical_name() const {
  std::string out;
  if (ns_kind != NamespaceKind::personal) out = "#" + std::string(namespace_name(ns_kind));
  for (auto& level : path) {
    if (!out.empty()) out += '/';
    out += level;
  }
  if (out.empty()) out = name_utf8;
  return out;
}

std::vector<std::string> path_of_v1_name(const std::string& name_utf8, char delimiter, std::string& prefix) {
  prefix.clear();
  if (iequals(name_utf8, "INBOX")) return {"INBOX"};
  std::string_view rest = name_utf8;
  if (delimiter == '.' && rest.size() > 6 && iequals(std::string(rest.substr(0, 6)), "INBOX.")) {
    prefix = std::string(rest.substr(0, 6));
    rest.remove_prefix(6);
  }
  std::vector<std::string> path;
  if (delimiter == 0) {
    path.emplace_back(rest);
    return path;
  }
  size_t start = 0;
  for (;;) {
    size_t at = rest.find(delimiter, start);
    path.emplace_back(rest.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start));
    if (at == std::string_view::npos) break;
    start = at + 1;
  }
  return path;
}

std::string FolderRecord::special_use() const {
  static constexpr std::string_view kSpecial[] = {"\\Sent", "\\Drafts", "\\Trash", "\\Junk",
                                                  "\\Archive", "\\All", "\\Flagged"};
  for (auto& a : attributes)
    for (auto s : kSpecial)
      if (iequals(a, s)) return std::string(s);
  return "";
}

}  // namespace imapstage::archive

#include "archive-format/index.h"

#include <lmdb.h>

#include <cerrno>
#include <algorithm>
#include <map>
#include <mutex>

#include "common/error.h"

namespace imapstage::archive {

namespace {

std::mutex registry_mutex;
std::map<std::string, std::weak_ptr<Index>>& registry() {
  static std::map<std::string, std::weak_ptr<Index>> r;
  return r;
}

MDB_val val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view view(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

struct Cursor {
  MDB_cursor* c = nullptr;
  ~Cursor() {
    if (c) mdb_cursor_close(c);
  }
};

struct EnvOwner {
  MDB_env* env = nullptr;
  EnvOwner() = default;
  EnvOwner(const EnvOwner&) = delete;
  EnvOwner& operator=(const EnvOwner&) = delete;
  ~EnvOwner() { reset(); }
  void reset() {
    if (env) mdb_env_close(env);
    env = nullptr;
  }
  MDB_env* release() {
    MDB_env* e = env;
    env = nullptr;
    return e;
  }
};

std::optional<std::string> prefix_successor(std::string_view prefix) {
  std::string s(prefix);
  while (!s.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(s.back());
    if (c != 0xff) {
      ++c;
      return s;
    }
    s.pop_back();
  }
  return std::nullopt;
}

}  // namespace

const char* Index::db_name(Db db) {
  switch (db) {
    case meta: return "meta";
    case accounts: return "accounts";
    case account_names: return "account_names";
    case folders: return "folders";
    case folder_names: return "folder_names";
    case messages: return "messages";
    case objects: return "objects";
    case packs: return "packs";
    case runs: return "runs";
    case targets: return "targets";
    case target_names: return "target_names";
    case appends: return "appends";
    case kDbCount: break;
  }
  return "?";
}

namespace {

[[noreturn]] void throw_lmdb(int rc, const std::string& what, const std::filesystem::path& dir) {
  ErrorWhere where{.file = dir.string()};
  std::string text = "index " + what + ": " + mdb_strerror(rc);
  switch (rc) {
    case MDB_MAP_FULL:
      throw Error(ErrorKind::io, "index " + what + ": the index map is full (a larger map size is needed)",
                  Retry::later, where);
    case MDB_READERS_FULL:
    case MDB_TXN_FULL:
    case ENOSPC:
    case EDQUOT:
      throw Error(ErrorKind::io, text, Retry::later, where);
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
      throw Error(ErrorKind::corrupt, text, Retry::never, where);
    case MDB_VERSION_MISMATCH:
      throw Error(ErrorKind::format, text, Retry::never, where);
    default:
      throw Error(ErrorKind::io, text, Retry::never, where);
  }
}

}  // namespace

void Index::fail(int rc, const std::string& what) const { throw_lmdb(rc, what, dir_); }

Index::Index(std::filesystem::path dir, MDB_env* env) : dir_(std::move(dir)), env_(env) {}

Index::~Index() {
  std::lock_guard lock(registry_mutex);
  mdb_env_close(env_);
  auto it = registry().find(dir_.string());
  if (it != registry().end() && it->second.expired()) registry().erase(it);
}

std::shared_ptr<Index> Index::open(const std::filesystem::path& dir, uint64_t map_size, bool create) {
  std::error_code ec;
  if (!std::filesystem::exists(dir / "data.mdb", ec)) {
    if (!create)
      throw Error(ErrorKind::not_found, "the archive has no index", Retry::never, {.file = dir.string()});
    std::filesystem::create_directories(dir, ec);
    if (ec) throw_io("cannot create the index directory", dir.string(), ec.value());
  }
  auto canonical = std::filesystem::weakly_canonical(dir, ec);
  std::string key = (ec ? dir : canonical).string();

  std::lock_guard lock(registry_mutex);
  if (auto existing = registry()[key].lock()) return existing;

  // LMDB forbids a second mdb_env_open on an environment whose open failed:
  // each attempt gets a fresh one.
  EnvOwner owner;
  auto attempt = [&](unsigned flags) {
    owner.reset();
    int rc = mdb_env_create(&owner.env);
    if (rc) throw Error(ErrorKind::io, std::string("cannot create an LMDB environment: ") + mdb_strerror(rc));
    mdb_env_set_maxdbs(owner.env, kDbCount + 4);
    mdb_env_set_mapsize(owner.env, map_size);
    mdb_env_set_maxreaders(owner.env, 254);
    return mdb_env_open(owner.env, dir.c_str(), MDB_NOTLS | flags, 0644);
  };
  int rc = attempt(0);
  if (rc == EACCES || rc == EROFS) {
    if (create) throw_io("cannot open the index for writing", dir.string(), rc);
    rc = attempt(MDB_RDONLY);
    // A read-only filesystem cannot hold a writer either, so readers need no lock file.
    if (rc == EACCES || rc == EROFS) rc = attempt(MDB_RDONLY | MDB_NOLOCK);
  }
  if (rc == ENOENT)
    throw Error(ErrorKind::not_found, "the archive has no index", Retry::never, {.file = dir.string()});
  if (rc) throw_lmdb(rc, "open", dir);

  // Open (create) every named database once; the handles serve every later transaction.
  unsigned flags = 0;
  mdb_env_get_flags(owner.env, &flags);
  bool rdonly = flags & MDB_RDONLY;
  MDB_txn* txn = nullptr;
  rc = mdb_txn_begin(owner.env, nullptr, rdonly ? MDB_RDONLY : 0, &txn);
  if (rc) throw_lmdb(rc, "open", dir);
  unsigned dbi[kDbCount] = {};
  for (unsigned db = 0; db < kDbCount; ++db) {
    const char* name = db_name(static_cast<Db>(db));
    rc = mdb_dbi_open(txn, name, create ? MDB_CREATE : 0, &dbi[db]);
    if (rc == MDB_NOTFOUND && !rdonly) rc = mdb_dbi_open(txn, name, MDB_CREATE, &dbi[db]);
    if (rc) {
      mdb_txn_abort(txn);
      if (rc == MDB_NOTFOUND)
        throw Error(ErrorKind::corrupt, std::string("the index lacks its table ") + name, Retry::never,
                    {.file = dir.string()});
      throw_lmdb(rc, "open", dir);
    }
  }
  rc = mdb_txn_commit(txn);
  if (rc) throw_lmdb(rc, "open", dir);
  std::shared_ptr<Index> index(new Index(key, owner.release()));
  std::copy(std::begin(dbi), std::end(dbi), index->dbi_);
  registry()[key] = index;
  return index;
}

Index::Txn Index::begin(bool write) const {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, write ? 0 : MDB_RDONLY, &txn);
  if (rc == MDB_MAP_RESIZED) {
    // Another process grew the map: adopt its size and try once more.
    mdb_env_set_mapsize(env_, 0);
    rc = mdb_txn_begin(env_, nullptr, write ? 0 : MDB_RDONLY, &txn);
  }
  if (rc) fail(rc, write ? "write transaction" : "read transaction");
  return Txn(*this, txn);
}

Index::Txn Index::read() const { return begin(false); }
Index::Txn Index::write() { return begin(true); }

Index::Txn::Txn(Txn&& other) noexcept : index_(other.index_), txn_(other.txn_) { other.txn_ = nullptr; }

Index::Txn::~Txn() {
  if (txn_) mdb_txn_abort(txn_);
}

std::optional<std::string_view> Index::Txn::get(Db db, std::string_view key) const {
  MDB_val k = val(key), v{};
  int rc = mdb_get(txn_, index_->dbi_[db], &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc) index_->fail(rc, std::string("read of ") + db_name(db));
  return view(v);
}

void Index::Txn::put(Db db, std::string_view key, std::string_view value) {
  MDB_val k = val(key), v = val(value);
  int rc = mdb_put(txn_, index_->dbi_[db], &k, &v, 0);
  if (rc) index_->fail(rc, std::string("write to ") + db_name(db));
}

bool Index::Txn::del(Db db, std::string_view key) {
  MDB_val k = val(key);
  int rc = mdb_del(txn_, index_->dbi_[db], &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  if (rc) index_->fail(rc, std::string("delete from ") + db_name(db));
  return true;
}

void Index::Txn::scan(Db db, std::string_view from, std::string_view prefix,
                      const std::function<bool(std::string_view, std::string_view)>& fn) const {
  Cursor cur;
  int rc = mdb_cursor_open(txn_, index_->dbi_[db], &cur.c);
  if (rc) index_->fail(rc, std::string("scan of ") + db_name(db));
  std::string_view start = from < prefix ? prefix : from;
  MDB_val k = val(start), v{};
  rc = start.empty() ? mdb_cursor_get(cur.c, &k, &v, MDB_FIRST) : mdb_cursor_get(cur.c, &k, &v, MDB_SET_RANGE);
  while (rc == 0) {
    auto key = view(k);
    if (key.substr(0, prefix.size()) != prefix) return;
    if (!fn(key, view(v))) return;
    rc = mdb_cursor_get(cur.c, &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) index_->fail(rc, std::string("scan of ") + db_name(db));
}

std::optional<std::string> Index::Txn::last_key(Db db, std::string_view prefix) const {
  Cursor cur;
  int rc = mdb_cursor_open(txn_, index_->dbi_[db], &cur.c);
  if (rc) index_->fail(rc, std::string("scan of ") + db_name(db));
  MDB_val k{}, v{};
  auto next = prefix_successor(prefix);
  if (next) {
    k = val(*next);
    rc = mdb_cursor_get(cur.c, &k, &v, MDB_SET_RANGE);
    if (rc == 0) rc = mdb_cursor_get(cur.c, &k, &v, MDB_PREV);
    else if (rc == MDB_NOTFOUND) rc = mdb_cursor_get(cur.c, &k, &v, MDB_LAST);
  } else {
    rc = mdb_cursor_get(cur.c, &k, &v, MDB_LAST);
  }
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc) index_->fail(rc, std::string("scan of ") + db_name(db));
  auto key = view(k);
  if (key.substr(0, prefix.size()) != prefix) return std::nullopt;
  return std::string(key);
}

void Index::Txn::commit() {
  MDB_txn* t = txn_;
  txn_ = nullptr;
  int rc = mdb_txn_commit(t);  // frees the transaction even when it fails
  if (rc) index_->fail(rc, "commit");
}

void apply_op(Index::Txn& txn, const codec::JournalOp& op) {
  using codec::OpKind;
  switch (op.kind) {
    case OpKind::put_account: {
      auto rec = codec::decode_account(op.key, op.value);
      if (auto old = txn.get(Index::accounts, op.key)) {
        auto before = codec::decode_account(op.key, *old);
        if (before.name != rec.name) txn.del(Index::account_names, codec::name_key(before.name));
      }
      txn.put(Index::accounts, op.key, op.value);
      txn.put(Index::account_names, codec::name_key(rec.name), op.key);
      return;
    }
    case OpKind::put_folder: {
      auto rec = codec::decode_folder(op.key, op.value);
      if (auto old = txn.get(Index::folders, op.key)) {
        auto before = codec::decode_folder(op.key, *old);
        if (before.name_raw != rec.name_raw)
          txn.del(Index::folder_names, codec::folder_name_key(before.account_id, before.name_raw));
      }
      txn.put(Index::folders, op.key, op.value);
      txn.put(Index::folder_names, codec::folder_name_key(rec.account_id, rec.name_raw), codec::u32_key(rec.id));
      return;
    }
    case OpKind::put_message: txn.put(Index::messages, op.key, op.value); return;
    case OpKind::put_append: txn.put(Index::appends, op.key, op.value); return;
    case OpKind::erase_append: txn.del(Index::appends, op.key); return;
    case OpKind::put_target: {
      auto identity = codec::decode_target(op.value);
      txn.put(Index::targets, op.key, op.value);
      txn.put(Index::target_names, codec::name_key(identity), op.key);
      return;
    }
  }
  throw Error(ErrorKind::corrupt, "unknown journal op kind");
}

}  // namespace imapstage::archive

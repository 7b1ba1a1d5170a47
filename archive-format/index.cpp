#include "archive-format/index.h"

#include <lmdb.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "archive-format/layout.h"
#include "common/aead.h"
#include "common/nonce.h"
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
    case message_counts: return "message_counts";
    case import_marks: return "import_marks";
    case kDbCount: break;
  }
  return "?";
}

namespace {

constexpr const char* kRunRepair = "; `imapstage repair --rebuild-index` rebuilds it from the packs";

[[noreturn]] void damaged(const std::filesystem::path& dir, const std::string& what) {
  throw Error(ErrorKind::corrupt, "the index is damaged (" + what + ")" + kRunRepair, Retry::never,
              {.file = dir.string()});
}

// ---- checking data.mdb before LMDB reads its pages ---------------------------
//
// LMDB trusts its data file: a damaged page makes it read outside the file
// (SIGBUS), outside its map (SIGSEGV) or fail an assertion. So the tree of
// the snapshot about to be used is walked here first, with pread, against
// LMDB's on-disk layout (lmdb 0.9, data version 1, 64-bit): every page
// reachable from the meta page is inside the file, is what its parent says,
// is met once, has sane offsets and node sizes; keys ascend; entry and page
// counts agree with the database records; overflow chains fit. Only then may
// LMDB map it.

constexpr uint32_t kMetaMagic = 0xBEEFC0DE;
constexpr uint32_t kDataVersion = 1;
constexpr uint16_t kPBranch = 0x01, kPLeaf = 0x02, kPOverflow = 0x04, kPDirty = 0x10, kPKeep = 0x8000;
constexpr uint16_t kFBigData = 0x01, kFSubData = 0x02;
constexpr size_t kPageHeader = 16, kNodeHeader = 8, kDbRecord = 48;
constexpr uint64_t kInvalidPage = ~uint64_t{0};
constexpr uint16_t kIntegerKey = 0x08;

template <class T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

struct DbRecord {
  uint16_t flags = 0;
  uint16_t depth = 0;
  uint64_t branch_pages = 0, leaf_pages = 0, overflow_pages = 0, entries = 0, root = kInvalidPage;
};

DbRecord parse_db(const char* p) {
  return {load<uint16_t>(p + 4), load<uint16_t>(p + 6), load<uint64_t>(p + 8), load<uint64_t>(p + 16),
          load<uint64_t>(p + 24), load<uint64_t>(p + 32), load<uint64_t>(p + 40)};
}

class DataFileCheck {
 public:
  DataFileCheck(const std::filesystem::path& dir, int fd, uint64_t file_size)
      : dir_(dir), fd_(fd), file_size_(file_size) {}

  // Checks the two meta pages' page size, magic and version: what
  // mdb_env_open itself trusts (a page size of 0 divides by zero in it).
  void metas() {
    char head[160];
    read_at(head, sizeof head, 0, "meta page 0");
    psize_ = load<uint32_t>(head + 40);
    if (psize_ < 512 || psize_ > 65536 || (psize_ & (psize_ - 1)))
      fail(fmt::format("data.mdb: impossible page size {}", psize_));
    if (file_size_ < 2ull * psize_) fail("data.mdb is shorter than its two meta pages");
    for (int i = 0; i < 2; ++i) {
      read_at(metas_[i], sizeof metas_[i], uint64_t(i) * psize_, "meta page");
      if (load<uint32_t>(metas_[i] + 16) != kMetaMagic || load<uint32_t>(metas_[i] + 20) != kDataVersion ||
          load<uint32_t>(metas_[i] + 40) != psize_)
        fail(fmt::format("data.mdb: meta page {} is damaged", i));
    }
  }

  // Checks the meta page with transaction id `txnid` and everything it reaches.
  void run(uint64_t txnid) {
    metas();
    const char* meta = nullptr;
    for (auto& m : metas_)
      if (load<uint64_t>(m + 144) == txnid) meta = m;
    if (!meta) fail("data.mdb: no meta page for the snapshot being read");
    last_page_ = load<uint64_t>(meta + 136);
    if (last_page_ < 1) fail("data.mdb: impossible last page number");
    pages_in_file_ = std::min<uint64_t>(file_size_ / psize_, last_page_ + 1);
    seen_.assign(pages_in_file_, false);
    DbRecord free_db = parse_db(meta + 40), main_db = parse_db(meta + 88);
    if (free_db.flags != kIntegerKey && !(free_db.flags == 0 && free_db.root == kInvalidPage))
      fail("data.mdb: the free list database has unexpected flags");
    if (main_db.flags != 0) fail("data.mdb: the main database has unexpected flags");
    walk_db(free_db, Kind::free_list);
    walk_db(main_db, Kind::main);
  }

 private:
  enum class Kind { free_list, main, named };
  struct Counts {
    uint64_t branch = 0, leaf = 0, overflow = 0, entries = 0;
    std::string last_key;
    bool any_key = false;
    std::optional<std::string> lower_bound;  // the separator above the subtree being entered
  };

  [[noreturn]] void fail(const std::string& what) const { damaged(dir_, what); }

  void read_at(char* buf, size_t n, uint64_t offset, const char* what) const {
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, buf + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw_io("cannot read", (dir_ / "data.mdb").string(), errno);
      if (r == 0) fail(fmt::format("data.mdb: {} at offset {} lies past the end of the file", what, offset));
      done += static_cast<size_t>(r);
    }
  }

  // Marks `count` pages from `pgno` as met once, inside the file.
  void claim(uint64_t pgno, uint64_t count, const char* what) {
    if (pgno < 2 || count == 0 || pgno >= pages_in_file_ || count > pages_in_file_ - pgno)
      fail(fmt::format("data.mdb: {} page {} (+{}) is outside the file", what, pgno, count - 1));
    for (uint64_t p = pgno; p < pgno + count; ++p) {
      if (seen_[p]) fail(fmt::format("data.mdb: page {} is reached twice", p));
      seen_[p] = true;
    }
  }

  void walk_db(const DbRecord& db, Kind kind) {
    Counts c;
    if (db.root == kInvalidPage) {
      if (db.entries || db.branch_pages || db.leaf_pages || db.overflow_pages || db.depth)
        fail("data.mdb: an empty database claims entries");
      return;
    }
    if (db.depth < 1 || db.depth > 32) fail(fmt::format("data.mdb: impossible tree depth {}", db.depth));
    walk_page(db.root, 1, db.depth, kind, c);
    if (c.entries != db.entries || c.branch != db.branch_pages || c.leaf != db.leaf_pages ||
        c.overflow != db.overflow_pages)
      fail(fmt::format("data.mdb: a database holds {} entries in {}/{}/{} pages, its record says {} in {}/{}/{}",
                       c.entries, c.branch, c.leaf, c.overflow, db.entries, db.branch_pages, db.leaf_pages,
                       db.overflow_pages));
  }

  void walk_page(uint64_t pgno, unsigned level, unsigned depth, Kind kind, Counts& c) {
    claim(pgno, 1, "tree");
    std::string page(psize_, '\0');
    read_at(page.data(), psize_, pgno * psize_, "tree page");
    const char* p = page.data();
    if (load<uint64_t>(p) != pgno) fail(fmt::format("data.mdb: page {} names itself {}", pgno, load<uint64_t>(p)));
    uint16_t flags = load<uint16_t>(p + 10) & ~(kPDirty | kPKeep);
    uint16_t lower = load<uint16_t>(p + 12), upper = load<uint16_t>(p + 14);
    bool leaf = flags == kPLeaf;
    if (flags != kPLeaf && flags != kPBranch) fail(fmt::format("data.mdb: page {} has flags {:#x}", pgno, flags));
    if (leaf != (level == depth)) fail(fmt::format("data.mdb: page {} is at the wrong level of its tree", pgno));
    if (lower < kPageHeader || (lower - kPageHeader) % 2 || lower > upper || upper > psize_)
      fail(fmt::format("data.mdb: page {} has impossible bounds", pgno));
    size_t keys = (lower - kPageHeader) / 2;
    if (!leaf && keys < 1) fail(fmt::format("data.mdb: branch page {} is empty", pgno));
    ++(leaf ? c.leaf : c.branch);
    for (size_t i = 0; i < keys; ++i) {
      size_t off = load<uint16_t>(p + kPageHeader + 2 * i);
      if (off < upper || off + kNodeHeader > psize_)
        fail(fmt::format("data.mdb: page {} has a node outside its bounds", pgno));
      const char* n = p + off;
      uint32_t lo = load<uint16_t>(n), hi = load<uint16_t>(n + 2);
      uint16_t nflags = load<uint16_t>(n + 4), ksize = load<uint16_t>(n + 6);
      if (off + kNodeHeader + ksize > psize_) fail(fmt::format("data.mdb: page {} has a key past its end", pgno));
      std::string_view key(n + kNodeHeader, ksize);
      if (!leaf) {
        uint64_t child = lo | (uint64_t(hi) << 16) | (uint64_t(nflags) << 32);
        // A separator is above every key to its left and at most the first to its right,
        // or lookups (which follow separators) would miss records a scan finds.
        if (i > 0 && kind != Kind::free_list) {
          if (c.any_key && std::string_view(c.last_key) >= key)
            fail(fmt::format("data.mdb: a separator key on page {} is out of order", pgno));
          c.lower_bound.emplace(key);
        }
        walk_page(child, level + 1, depth, kind, c);
        continue;
      }
      if (kind != Kind::free_list) {
        if (c.any_key && key <= std::string_view(c.last_key))
          fail(fmt::format("data.mdb: keys out of order on page {}", pgno));
        if (c.lower_bound && key < std::string_view(*c.lower_bound))
          fail(fmt::format("data.mdb: a key on page {} is below its separator", pgno));
        c.lower_bound.reset();
        c.last_key.assign(key);
        c.any_key = true;
      }
      ++c.entries;
      uint64_t size = lo | (uint64_t(hi) << 16);
      size_t data_at = off + kNodeHeader + ksize;
      std::string big;
      std::string_view data;
      if (nflags & ~(kFBigData | kFSubData)) fail(fmt::format("data.mdb: page {} has a node with flags {:#x}", pgno, nflags));
      if (nflags & kFBigData) {
        if (data_at + 8 > psize_) fail(fmt::format("data.mdb: page {} has a node past its end", pgno));
        uint64_t first = load<uint64_t>(n + kNodeHeader + ksize);
        uint64_t span = (size + kPageHeader + psize_ - 1) / psize_;
        if (first < 2 || first >= pages_in_file_) fail(fmt::format("data.mdb: overflow page {} is outside the file", first));
        char head[kPageHeader];
        read_at(head, sizeof head, first * psize_, "overflow page");
        uint32_t pages = load<uint32_t>(head + 12);
        if (load<uint64_t>(head) != first || (load<uint16_t>(head + 10) & ~(kPDirty | kPKeep)) != kPOverflow ||
            pages < span)
          fail(fmt::format("data.mdb: overflow page {} is damaged", first));
        claim(first, pages, "overflow");
        c.overflow += pages;
        if (kind == Kind::free_list || (nflags & kFSubData)) {
          big.resize(size);
          read_at(big.data(), size, first * psize_ + kPageHeader, "overflow data");
          data = big;
        }
      } else {
        if (data_at + size > psize_) fail(fmt::format("data.mdb: page {} has a value past its end", pgno));
        data = std::string_view(n + kNodeHeader + ksize, size);
      }
      if (nflags & kFSubData) {
        if (kind != Kind::main || size != kDbRecord) fail(fmt::format("data.mdb: page {} has a misplaced database", pgno));
        DbRecord sub = parse_db(data.data());
        if (sub.flags != 0) fail("data.mdb: a named database has unexpected flags");
        walk_db(sub, Kind::named);
      } else if (kind == Kind::free_list) {
        if (ksize != 8 || size < 8 || size % 8 || load<uint64_t>(data.data()) != size / 8 - 1)
          fail(fmt::format("data.mdb: free list entry on page {} is damaged", pgno));
        for (size_t k = 1; k < size / 8; ++k) {
          uint64_t free_page = load<uint64_t>(data.data() + 8 * k);
          if (free_page < 2 || free_page > last_page_) fail("data.mdb: the free list names a page outside the file");
        }
      }
    }
  }

  std::filesystem::path dir_;
  int fd_;
  uint64_t file_size_;
  char metas_[2][160] = {};
  uint64_t psize_ = 0;
  uint64_t last_page_ = 0;
  uint64_t pages_in_file_ = 0;
  std::vector<bool> seen_;
};

// ---- index/checked: a snapshot that needs no walk ----------------------------
//
// The walk reads every page of the index, which at a million messages costs
// more than everything else a no-change run does. index/checked names the
// snapshot the last walk passed (or that this program committed on top of a
// checked one) with the data file's identity and times: a later open of the
// same file, unchanged since (anything that writes to it moves its change
// time, a copy is another file), at the same snapshot, skips the walk
// (FORMAT.md, "Index"). A missing, unreadable or stale stamp means a walk.

constexpr const char* kStampName = "checked";
constexpr const char* kStampMagic = "imapstage-index-checked 1";

std::string stamp_text(uint64_t txnid, const struct stat& st) {
  return fmt::format("{} {} {} {} {} {}.{:09} {}.{:09}\n", kStampMagic, txnid, uint64_t(st.st_dev),
                     uint64_t(st.st_ino), int64_t(st.st_size), int64_t(st.st_mtim.tv_sec), st.st_mtim.tv_nsec,
                     int64_t(st.st_ctim.tv_sec), st.st_ctim.tv_nsec);
}

// Whether dir/checked names snapshot `txnid` of the data file as `st` describes it.
bool stamp_matches(const std::filesystem::path& dir, uint64_t txnid, const struct stat& st) {
  // Only a regular file is read: a device, FIFO or link there is never opened or followed.
  struct stat named{};
  if (::lstat((dir / kStampName).c_str(), &named) != 0 || !S_ISREG(named.st_mode)) return false;
  int fd = ::open((dir / kStampName).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  char buf[256];
  struct stat own{};
  ssize_t n = ::fstat(fd, &own) == 0 && S_ISREG(own.st_mode) && own.st_ino == named.st_ino && own.st_dev == named.st_dev
                  ? ::read(fd, buf, sizeof buf)
                  : -1;
  ::close(fd);
  std::string want = stamp_text(txnid, st);
  return n > 0 && std::string_view(buf, static_cast<size_t>(n)) == want;
}

// Writes dir/checked for snapshot `txnid` of the data file as `st` describes it. Best
// effort: a stamp that cannot be written only costs the next open a walk.
void write_stamp(const std::filesystem::path& dir, uint64_t txnid, const struct stat& st) noexcept {
  std::string text = stamp_text(txnid, st);
  // A new file every time: whatever was left at that name (a link to a file
  // elsewhere, a FIFO) is removed, never written through.
  auto tmp = dir / "checked.tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ok = ::close(fd) == 0 && ok;
  if (!ok || ::rename(tmp.c_str(), (dir / kStampName).c_str()) != 0) ::unlink(tmp.c_str());
}

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
    case MDB_INCOMPATIBLE:
    case MDB_BAD_VALSIZE:
      throw Error(ErrorKind::corrupt, "the index is damaged (" + text + ")" + kRunRepair, Retry::never, where);
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
  // The index directory and its two files: no links, no special files (LMDB
  // would open them, write its lock header into lock.mdb and map data.mdb).
  std::filesystem::path root = dir.parent_path();
  bool has_dir = check_in_archive(root, dir, true);
  bool has_data = has_dir && check_in_archive(root, dir / "data.mdb", false, create);
  struct stat checked{};  // the data file as checked: LMDB must open this one
  if (has_data && ::lstat((dir / "data.mdb").c_str(), &checked) != 0)
    throw_io("cannot inspect", (dir / "data.mdb").string(), errno);
  if (has_dir) check_in_archive(root, dir / "lock.mdb", false, true);  // LMDB writes it, readers too
  if (!has_data) {
    if (!create)
      throw Error(ErrorKind::not_found, "the archive has no index", Retry::never, {.file = dir.string()});
    make_dir_in_archive(root, dir);
  }
  std::error_code ec;
  auto canonical = std::filesystem::weakly_canonical(dir, ec);
  std::string key = (ec ? dir : canonical).string();

  std::lock_guard lock(registry_mutex);
  if (auto existing = registry()[key].lock()) return existing;

  // LMDB forbids a second mdb_env_open on an environment whose open failed:
  // each attempt gets a fresh one.
  EnvOwner owner;
  uint64_t checked_txnid = kNotChecked;  // the snapshot checked below
  auto attempt = [&](unsigned flags) {
    owner.reset();
    int rc = mdb_env_create(&owner.env);
    if (rc) throw Error(ErrorKind::io, std::string("cannot create an LMDB environment: ") + mdb_strerror(rc));
    mdb_env_set_maxdbs(owner.env, kDbCount + 4);
    mdb_env_set_mapsize(owner.env, map_size);
    mdb_env_set_maxreaders(owner.env, 254);
    return mdb_env_open(owner.env, dir.c_str(), MDB_NOTLS | flags, kFileMode);
  };
  if (has_data) {
    // The meta pages first: mdb_env_open reads and trusts them.
    int fd = ::open((dir / "data.mdb").c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) throw_io("cannot open", (dir / "data.mdb").string(), errno);
    struct stat st{};
    try {
      if (::fstat(fd, &st) != 0) throw_io("cannot stat", (dir / "data.mdb").string(), errno);
      if (st.st_size > 0) DataFileCheck(dir, fd, static_cast<uint64_t>(st.st_size)).metas();
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  }
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

  // The snapshot LMDB is about to read, checked before any of its pages is
  // touched (the read transaction keeps a concurrent writer off those pages).
  {
    int data_fd = -1;
    if (mdb_env_get_fd(owner.env, &data_fd) != 0) throw Error(ErrorKind::internal, "LMDB has no data file");
    struct stat st{};
    if (::fstat(data_fd, &st) != 0) throw_io("cannot stat", (dir / "data.mdb").string(), errno);
    if (!S_ISREG(st.st_mode)) damaged(dir, "data.mdb is not a regular file");
    if (has_data && (st.st_dev != checked.st_dev || st.st_ino != checked.st_ino))
      throw Error(ErrorKind::io, "data.mdb was replaced while it was being opened", Retry::now,
                  {.file = (dir / "data.mdb").string()});
    MDB_txn* txn = nullptr;
    rc = mdb_txn_begin(owner.env, nullptr, MDB_RDONLY, &txn);
    if (rc) throw_lmdb(rc, "open", dir);
    checked_txnid = mdb_txn_id(txn);
    try {
      // Taken once the snapshot is fixed: its pages are inside this size, and
      // a commit since would have moved the change time the stamp holds.
      if (::fstat(data_fd, &st) != 0) throw_io("cannot stat", (dir / "data.mdb").string(), errno);
      if (!stamp_matches(dir, checked_txnid, st)) {
        DataFileCheck(dir, data_fd, static_cast<uint64_t>(st.st_size)).run(checked_txnid);
        if (create) write_stamp(dir, checked_txnid, st);  // readers change nothing
      }
    } catch (...) {
      mdb_txn_abort(txn);
      throw;
    }
    mdb_txn_abort(txn);
  }

  // Open (create) every named database once; the handles serve every later transaction.
  unsigned flags = 0;
  mdb_env_get_flags(owner.env, &flags);
  bool rdonly = flags & MDB_RDONLY;
  MDB_txn* txn = nullptr;
  rc = mdb_txn_begin(owner.env, nullptr, rdonly ? MDB_RDONLY : 0, &txn);
  if (rc) throw_lmdb(rc, "open", dir);
  unsigned dbi[kDbCount] = {};
  bool has[kDbCount] = {};
  for (unsigned db = 0; db < kDbCount; ++db) {
    const char* name = db_name(static_cast<Db>(db));
    rc = mdb_dbi_open(txn, name, create ? MDB_CREATE : 0, &dbi[db]);
    if (rc == MDB_NOTFOUND && !rdonly) rc = mdb_dbi_open(txn, name, MDB_CREATE, &dbi[db]);
    has[db] = rc == 0;
    if (rc == MDB_NOTFOUND && (db == message_counts || db == import_marks)) continue;  // a version 6 index read as it is
    if (rc) {
      mdb_txn_abort(txn);
      if (rc == MDB_NOTFOUND)
        damaged(dir, std::string("no table ") + name);
      throw_lmdb(rc, "open", dir);
    }
  }
  rc = mdb_txn_commit(txn);
  if (rc) throw_lmdb(rc, "open", dir);
  if (!rdonly) checked_txnid = after_commit(owner.env, dir, checked_txnid, create);  // tables it created
  std::shared_ptr<Index> index(new Index(key, owner.release()));
  std::copy(std::begin(dbi), std::end(dbi), index->dbi_);
  std::copy(std::begin(has), std::end(has), index->has_db_);
  index->checked_txnid_ = checked_txnid;
  registry()[key] = index;
  return index;
}

Index::Txn Index::begin(bool write) const {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, write ? 0 : MDB_RDONLY, &txn);
  if (rc == MDB_MAP_RESIZED) {
    // Another process grew the map: adopt its size and try once more.
    std::lock_guard lock(map_mutex_);
    mdb_env_set_mapsize(env_, 0);
    map_ = nullptr;
    rc = mdb_txn_begin(env_, nullptr, write ? 0 : MDB_RDONLY, &txn);
  }
  if (rc) fail(rc, write ? "write transaction" : "read transaction");
  return Txn(*this, txn, write);
}

Index::Txn Index::read() const { return begin(false); }
Index::Txn Index::write() { return begin(true); }

Index::Txn::Txn(Txn&& other) noexcept : index_(other.index_), txn_(other.txn_), write_(other.write_), held_(std::move(other.held_)) {
  other.txn_ = nullptr;
}

namespace {

bool sealed_db(Index::Db db) { return db != Index::meta && db != Index::packs; }
bool keyed_name_db(Index::Db db) {
  return db == Index::account_names || db == Index::folder_names || db == Index::target_names || db == Index::objects;
}
// folder_names keys keep their account id in the clear (4 bytes), so one account's names stay together.
size_t clear_prefix(Index::Db db) { return db == Index::folder_names ? 4 : 0; }

std::string put_u32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// Associated data of a sealed value: the database's name, a zero byte, the stored key.
std::string value_aad(Index::Db db, std::string_view stored_key) {
  std::string a = Index::db_name(db);
  a.push_back('\0');
  a.append(stored_key);
  return a;
}

std::string seal_value(const IndexKeys& keys, Index::Db db, std::string_view stored_key, std::string_view key,
                       std::string_view value) {
  std::string plain = put_u32(static_cast<uint32_t>(key.size()));
  plain.append(key);
  plain.append(value);
  std::string out = random_nonce();
  out.resize(kGcmNonceSize + plain.size() + kGcmTagSize);
  keys.seal_key->seal(std::string_view(out).substr(0, kGcmNonceSize), value_aad(db, stored_key), plain,
                      out.data() + kGcmNonceSize, out.data() + kGcmNonceSize + plain.size());
  wipe(plain);
  return out;
}

// The plain key and value of a sealed value; Error(corrupt) naming the database if it does not open.
std::pair<std::string_view, std::string_view> open_value(const IndexKeys& keys, Index::Db db,
                                                         std::string_view stored_key, std::string_view sealed,
                                                         std::string& plain) {
  auto bad = [&](const char* what) {
    return Error(ErrorKind::corrupt, fmt::format("a sealed value in {} {}", Index::db_name(db), what));
  };
  if (sealed.size() < kGcmNonceSize + kGcmTagSize + 4) throw bad("is too short");
  std::string_view body = sealed.substr(kGcmNonceSize, sealed.size() - kGcmNonceSize - kGcmTagSize);
  plain.resize(body.size());
  if (!keys.seal_key->open(sealed.substr(0, kGcmNonceSize), value_aad(db, stored_key), body,
                           sealed.substr(sealed.size() - kGcmTagSize), plain.data()))
    throw bad("does not authenticate (damaged, or another key)");
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<uint8_t>(plain[i])) << (8 * i);
  if (n > plain.size() - 4) throw bad("has a malformed key");
  std::string_view all(plain);
  return {all.substr(4, n), all.substr(4 + n)};
}

}  // namespace

void Index::set_keys(std::shared_ptr<const IndexKeys> keys) {
  std::lock_guard lock(keys_mutex_);
  if (keys_owner_) return;
  keys_owner_ = std::move(keys);
  keys_.store(keys_owner_.get());
}

std::string Index::Txn::stored_key(Db db, std::string_view key) const {
  const IndexKeys* keys = index_->keys_.load();
  if (!keys || !keyed_name_db(db)) return std::string(key);
  size_t clear = std::min(clear_prefix(db), key.size());
  std::string k(key.substr(0, clear));
  std::string mac_in = db_name(db);
  mac_in.push_back('\0');
  mac_in.append(key);
  k += keys->name_key->mac(mac_in);
  return k;
}

Index::Txn::~Txn() {
  if (txn_) mdb_txn_abort(txn_);
}

namespace {
// Weighted visits between two looks at the process's mapped file pages: 16,384
// keys of a scan (a few MB of index pages), or 256 lookups and writes, each
// of which may land on a leaf page no other touched, and the kernel maps up
// to 15 neighbouring pages with it (fault-around: 64 KB a fault).
constexpr uint64_t kCheckEvery = 16384;
constexpr uint64_t kScanVisit = 1;
constexpr uint64_t kRandomVisit = 64;
// The pages are released when the process's mapped file pages grew by this
// much since the last release: releasing costs a walk of the mapping and TLB
// shootdowns on the other threads' CPUs, so it is done only when it buys memory.
constexpr uint64_t kMapBudget = 8u << 20;

// Resident pages of the process's file mappings (/proc/self/statm "shared"),
// in bytes; 0 when it cannot be read.
uint64_t mapped_file_bytes() {
  int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[128];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long long size = 0, resident = 0, shared = 0;
  if (std::sscanf(buf, "%llu %llu %llu", &size, &resident, &shared) != 3) return 0;
  return shared * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}
}  // namespace

void Index::note_visits(uint64_t weight) const {
  uint64_t before = visits_.fetch_add(weight, std::memory_order_relaxed);
  if ((before + weight) / kCheckEvery == before / kCheckEvery) return;
  uint64_t now = mapped_file_bytes();
  if (now != 0 && now < released_at_.load(std::memory_order_relaxed) + kMapBudget) return;
  release_and_note();
}

void Index::release_and_note() const {
  release_pages();
  released_at_.store(mapped_file_bytes(), std::memory_order_relaxed);
}

std::optional<std::string_view> Index::Txn::get(Db db, std::string_view key) const {
  if (!index_->has_db_[db]) return std::nullopt;
  index_->note_visits(kRandomVisit);
  std::string sk = stored_key(db, key);
  MDB_val k = val(sk), v{};
  int rc = mdb_get(txn_, index_->dbi_[db], &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc) index_->fail(rc, std::string("read of ") + db_name(db));
  const IndexKeys* keys = index_->keys_.load();
  if (!keys || !sealed_db(db)) return view(v);
  std::string plain;
  auto [pk, pv] = open_value(*keys, db, sk, view(v), plain);
  if (pk != key) throw Error(ErrorKind::corrupt, fmt::format("a sealed value in {} is filed under another key", db_name(db)));
  size_t at = 4 + pk.size();
  held_.push_back(std::move(plain));
  return std::string_view(held_.back()).substr(at);
}

void Index::Txn::put(Db db, std::string_view key, std::string_view value) {
  if (!index_->has_db_[db]) throw Error(ErrorKind::internal, std::string("a write to the missing table ") + db_name(db));
  index_->note_visits(kRandomVisit);
  std::string sk = stored_key(db, key);
  std::string sealed;
  if (const IndexKeys* keys = index_->keys_.load(); keys && sealed_db(db)) sealed = seal_value(*keys, db, sk, key, value);
  MDB_val k = val(sk), v = val(sealed.empty() ? value : std::string_view(sealed));
  int rc = mdb_put(txn_, index_->dbi_[db], &k, &v, 0);
  if (rc) index_->fail(rc, std::string("write to ") + db_name(db));
}

bool Index::Txn::del(Db db, std::string_view key) {
  if (!index_->has_db_[db]) throw Error(ErrorKind::internal, std::string("a write to the missing table ") + db_name(db));
  index_->note_visits(kRandomVisit);
  std::string sk = stored_key(db, key);
  MDB_val k = val(sk);
  int rc = mdb_del(txn_, index_->dbi_[db], &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  if (rc) index_->fail(rc, std::string("delete from ") + db_name(db));
  return true;
}


// Where LMDB mapped the data file (LMDB names the address only for
// MDB_FIXEDMAP): the mapping of /proc/self/maps with the file's device and
// inode. {nullptr, 0} when it cannot be told.
std::pair<void*, size_t> find_map(MDB_env* env) {
  int fd = -1;
  struct stat st{};
  if (mdb_env_get_fd(env, &fd) != 0 || ::fstat(fd, &st) != 0) return {nullptr, 0};
  FILE* maps = std::fopen("/proc/self/maps", "re");
  if (!maps) return {nullptr, 0};
  std::pair<void*, size_t> found{nullptr, 0};
  char line[4096];
  while (std::fgets(line, sizeof line, maps)) {
    unsigned long long from = 0, to = 0, offset = 0, inode = 0;
    unsigned major = 0, minor = 0;
    char perms[8] = {};
    if (std::sscanf(line, "%llx-%llx %7s %llx %x:%x %llu", &from, &to, perms, &offset, &major, &minor, &inode) != 7)
      continue;
    if (inode == st.st_ino && major == ::major(st.st_dev) && minor == ::minor(st.st_dev) && offset == 0 &&
        to - from > found.second)
      found = {reinterpret_cast<void*>(from), static_cast<size_t>(to - from)};
  }
  std::fclose(maps);
  return found;
}

void Index::release_pages() const {
  // The mapping moves only in set_mapsize (begin(), under the same mutex),
  // so no other mapping can be advised here.
  std::lock_guard lock(map_mutex_);
  if (!map_) std::tie(map_, map_size_) = find_map(env_);
  if (!map_) return;
  MDB_envinfo info{};
  MDB_stat stat{};
  if (mdb_env_info(env_, &info) != 0 || mdb_env_stat(env_, &stat) != 0) return;
  size_t used = (static_cast<size_t>(info.me_last_pgno) + 1) * stat.ms_psize;
  ::madvise(map_, std::min(used, map_size_), MADV_DONTNEED);  // advice: a failure changes nothing
}

void Index::Txn::scan(Db db, std::string_view from, std::string_view prefix,
                      const std::function<bool(std::string_view, std::string_view)>& fn) const {
  if (!index_->has_db_[db]) return;
  Cursor cur;
  int rc = mdb_cursor_open(txn_, index_->dbi_[db], &cur.c);
  if (rc) index_->fail(rc, std::string("scan of ") + db_name(db));
  const IndexKeys* keys = index_->keys_.load();
  bool keyed = keys && keyed_name_db(db);
  if (keyed && (prefix.size() > clear_prefix(db) || from.size() > clear_prefix(db)))
    throw Error(ErrorKind::internal, std::string("a keyed scan of ") + db_name(db) + " from a name");
  bool sealed = keys && sealed_db(db);
  std::string_view start = from < prefix ? prefix : from;
  MDB_val k = val(start), v{};
  rc = start.empty() ? mdb_cursor_get(cur.c, &k, &v, MDB_FIRST) : mdb_cursor_get(cur.c, &k, &v, MDB_SET_RANGE);
  std::string plain;
  while (rc == 0) {
    auto key = view(k);
    if (key.substr(0, prefix.size()) != prefix) return;
    if (sealed) {
      auto [pk, pv] = open_value(*keys, db, key, view(v), plain);
      if (!keyed && pk != key)
        throw Error(ErrorKind::corrupt, fmt::format("a sealed value in {} is filed under another key", db_name(db)));
      if (!fn(pk, pv)) return;
    } else if (!fn(key, view(v))) {
      return;
    }
    index_->note_visits(kScanVisit);
    rc = mdb_cursor_get(cur.c, &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) index_->fail(rc, std::string("scan of ") + db_name(db));
}

std::optional<std::string> Index::Txn::last_key(Db db, std::string_view prefix) const {
  if (!index_->has_db_[db]) return std::nullopt;
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
  if (write_) {
    index_->note_commit();
    index_->release_and_note();
  }
}

uint64_t Index::after_commit(MDB_env* env, const std::filesystem::path& dir, uint64_t checked, bool stamp) {
  MDB_envinfo info{};
  if (checked == kNotChecked || mdb_env_info(env, &info) != 0) return kNotChecked;
  uint64_t last = info.me_last_txnid;
  if (last == checked) return checked;
  if (last != checked + 1) return kNotChecked;
  int fd = -1;
  struct stat st{};
  if (stamp && mdb_env_get_fd(env, &fd) == 0 && ::fstat(fd, &st) == 0) write_stamp(dir, last, st);
  return last;
}

void Index::note_commit() const {
  std::lock_guard lock(checked_mutex_);
  checked_txnid_ = after_commit(env_, dir_, checked_txnid_, true);
}

uint64_t Index::Txn::entries(Db db) const {
  if (!index_->has_db_[db]) return 0;
  MDB_stat st{};
  int rc = mdb_stat(txn_, index_->dbi_[db], &st);
  if (rc) index_->fail(rc, std::string("count of ") + db_name(db));
  return st.ms_entries;
}

void CountChanges::note(std::string_view message_key, std::optional<MessageState> before, MessageState after) {
  Delta& d = deltas_[std::string(message_key.substr(0, 12))];
  if (!before) ++d.records;
  d.present += (after == MessageState::present) - (before == MessageState::present);
  ++d.changes;
}

void CountChanges::write(Index::Txn& txn) {
  for (auto& [key, d] : deltas_) {
    MessageCounts c;
    if (auto v = txn.get(Index::message_counts, key)) c = codec::decode_message_counts(*v);
    if ((d.records < 0 && c.records < uint64_t(-d.records)) || (d.present < 0 && c.present < uint64_t(-d.present)))
      throw Error(ErrorKind::corrupt,
                  "the index is damaged (message_counts disagree with the messages)" + std::string(kRunRepair),
                  Retry::never);
    c.records += d.records;
    c.present += d.present;
    c.changes += d.changes;
    txn.put(Index::message_counts, key, codec::encode_message_counts(c));
  }
  deltas_.clear();
}

std::vector<std::pair<std::string, MessageCounts>> tally_messages(const Index::Txn& txn) {
  std::vector<std::pair<std::string, MessageCounts>> counted;
  txn.scan(Index::messages, "", "", [&](std::string_view k, std::string_view v) {
    MessageState state = codec::decode_message_state(k, v).second;
    std::string_view prefix = k.substr(0, 12);
    if (counted.empty() || counted.back().first != prefix) counted.emplace_back(prefix, MessageCounts{});
    MessageCounts& c = counted.back().second;
    ++c.records;
    c.present += state == MessageState::present;
    return true;
  });
  return counted;
}

void count_messages(Index::Txn& txn) {
  std::vector<std::string> stale;
  txn.scan(Index::message_counts, "", "", [&](std::string_view k, std::string_view) {
    stale.emplace_back(k);
    return true;
  });
  for (auto& k : stale) txn.del(Index::message_counts, k);
  // Counted first, put after the scan: a put inside it would move the cursor's pages.
  for (auto& [k, counts] : tally_messages(txn)) {
    counts.changes = counts.records;  // a start: only its moves matter
    txn.put(Index::message_counts, k, codec::encode_message_counts(counts));
  }
}

void apply_op(Index::Txn& txn, const codec::JournalOp& op, CountChanges& counts) {
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
    case OpKind::put_message: {
      std::optional<MessageState> before;
      if (auto old = txn.get(Index::messages, op.key)) before = codec::decode_message_state(op.key, *old).second;
      counts.note(op.key, before, codec::decode_message_state(op.key, op.value).second);
      txn.put(Index::messages, op.key, op.value);
      return;
    }
    // An append in flight, or one forgotten, means the target folder is being
    // changed: the generation's import mark no longer speaks for it (FORMAT.md).
    case OpKind::put_append:
      if (codec::decode_append(op.key, op.value).state != AppendState::done)
        txn.del(Index::import_marks, op.key.substr(0, 16));
      txn.put(Index::appends, op.key, op.value);
      return;
    case OpKind::erase_append:
      txn.del(Index::import_marks, op.key.substr(0, 16));
      txn.del(Index::appends, op.key);
      return;
    case OpKind::put_target: {
      auto identity = codec::decode_target(op.value);
      txn.put(Index::targets, op.key, op.value);
      txn.put(Index::target_names, codec::name_key(identity), op.key);
      return;
    }
  }
  throw Error(ErrorKind::corrupt, "unknown journal op kind");
}

std::string lmdb_version() {
  int major = 0, minor = 0, patch = 0;
  mdb_version(&major, &minor, &patch);
  return fmt::format("{}.{}.{}", major, minor, patch);
}

}  // namespace imapstage::archive

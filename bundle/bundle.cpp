// Bundles (archive-format/BUNDLE.md).
#include "bundle/bundle.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "archive-format/codec.h"
#include "archive-format/keys.h"
#include "archive-format/pack.h"
#include "common/civil_time.h"
#include "common/error.h"
#include "verify/manifest.h"
#include "verify/signing.h"

namespace imapstage::bundle {

namespace fs = std::filesystem;
using archive::Hash;
namespace codec = archive::codec;

namespace {

constexpr char kMagic[8] = {'I', 'M', 'S', 'T', 'B', 'N', 'D', 'L'};
constexpr char kTrailerMagic[8] = {'I', 'M', 'S', 'T', 'B', 'E', 'N', 'D'};
constexpr uint64_t kHeaderFixed = 16;
constexpr uint64_t kMaxHeader = 64ull << 20;
constexpr uint64_t kRecordsPerEntry = 8ull << 20;       // raw bytes of index records per entry
constexpr uint64_t kObjectsPerCommit = 64ull << 20;     // staged object bytes before an objects-only commit
constexpr uint8_t kEntryEnd = 0, kEntryObject = 1, kEntryRecords = 2;

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(char((v >> (8 * i)) & 0xff));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(char((v >> (8 * i)) & 0xff));
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | uint8_t(p[i]);
  return v;
}
uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint8_t(p[i]);
  return v;
}

// The text an Ed25519 signature of a bundle signs (BUNDLE.md, "Trailer").
std::string signed_text(const Hash& digest) {
  return "imapstage-bundle 1 sha256 " + archive::to_hex(digest) + "\n";
}

Error corrupt(const std::string& file, const std::string& what) {
  return Error(ErrorKind::corrupt, what, Retry::never, {.file = file});
}

// The name of part `n` (from 1) of a split bundle FILE: FILE.001, FILE.002, ...
std::string part_name(const std::string& file, uint64_t n) { return fmt::format("{}.{:03}", file, n); }

// A bundle open for reading, by position: one file, or the parts FILE.001,
// FILE.002, ... of a split one read as their concatenation.
class InFile {
 public:
  explicit InFile(const std::string& path) : path_(path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0 && errno == ENOENT && ::stat(part_name(path, 1).c_str(), &st) == 0) {
      for (uint64_t n = 1;; ++n) {
        std::string part = part_name(path, n);
        if (::stat(part.c_str(), &st) != 0) {
          // A gap followed by more parts is a missing part, not the end.
          for (uint64_t m = n + 1; m <= n + 16; ++m)
            if (::stat(part_name(path, m).c_str(), &st) == 0)
              throw corrupt(path, fmt::format("part {} of the bundle is missing ({} exists)", part, part_name(path, m)));
          break;
        }
        add(part);
      }
    } else {
      add(path);
    }
  }
  ~InFile() {
    for (auto& p : parts_) ::close(p.fd);
  }
  InFile(const InFile&) = delete;
  InFile& operator=(const InFile&) = delete;
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  uint64_t parts() const { return parts_.size(); }
  // Exactly `n` bytes at `offset`, or Error(corrupt) "ends early".
  std::string read(uint64_t offset, uint64_t n) const {
    if (offset > size_ || n > size_ - offset)
      throw corrupt(path_, fmt::format("the bundle ends early: {} bytes wanted at offset {}, the file has {}", n,
                                       offset, size_));
    std::string out(n, '\0');
    uint64_t done = 0;
    while (done < n) {
      uint64_t at = offset + done;
      auto it = std::upper_bound(parts_.begin(), parts_.end(), at,
                                 [](uint64_t v, const Part& p) { return v < p.start; });
      const Part& p = *std::prev(it);
      uint64_t want = std::min<uint64_t>(n - done, p.start + p.size - at);
      ssize_t r = ::pread(p.fd, out.data() + done, want, off_t(at - p.start));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw_io("cannot read the bundle", p.name, errno);
      if (r == 0) throw corrupt(p.name, fmt::format("the bundle ends early at offset {}", at));
      done += uint64_t(r);
    }
    return out;
  }

 private:
  struct Part {
    std::string name;
    int fd;
    uint64_t start, size;
  };
  void add(const std::string& name) {
    int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_io("cannot open the bundle", name, errno);
    struct stat st{};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw corrupt(name, "the bundle is not a regular file");
    }
    parts_.push_back({name, fd, size_, uint64_t(st.st_size)});
    size_ += uint64_t(st.st_size);
  }
  std::string path_;
  std::vector<Part> parts_;
  uint64_t size_ = 0;
};

// A bundle being written: FILE.tmp (0600), hashed as written, renamed to FILE by finish().
class OutFile {
 public:
  explicit OutFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
    ::unlink(tmp_.c_str());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd_ < 0) throw_io("cannot create the bundle", tmp_, errno);
    if (::fchmod(fd_, 0600) != 0) throw_io("cannot make the bundle owner-only", tmp_, errno);
  }
  ~OutFile() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  void write(std::string_view bytes, bool hashed = true) {
    if (hashed) sha_.update(bytes);
    while (!bytes.empty()) {
      ssize_t w = ::write(fd_, bytes.data(), bytes.size());
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) throw_io("cannot write the bundle", tmp_, errno, errno == ENOSPC ? Retry::later : Retry::never);
      bytes.remove_prefix(size_t(w));
      size_ += uint64_t(w);
    }
  }
  uint64_t size() const { return size_; }
  Hash digest() { return sha_.finish(); }
  // With `bytes` > 0, finish() writes parts FILE.001, FILE.002, ... of at
  // most that many bytes instead of FILE.
  void split(uint64_t bytes) { split_ = bytes; }
  uint64_t parts() const { return split_ == 0 || size_ <= split_ ? 1 : (size_ + split_ - 1) / split_; }
  void finish() {
    if (::fsync(fd_) != 0) throw_io("cannot sync the bundle", tmp_, errno);
    if (::close(fd_) != 0) {
      fd_ = -1;
      throw_io("cannot write the bundle", tmp_, errno);
    }
    fd_ = -1;
    if (split_ == 0 || size_ <= split_) {
      if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
        int e = errno;
        ::unlink(tmp_.c_str());
        throw_io("cannot rename the bundle into place", path_, e);
      }
    } else {
      write_parts();
    }
    fs::path dir = fs::path(path_).parent_path();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  // Copies FILE.tmp into its parts (each through PART.tmp, fsync, rename), then removes it.
  void write_parts() {
    int in = ::open(tmp_.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) throw_io("cannot read the bundle", tmp_, errno);
    std::string buf(1 << 20, '\0');
    for (uint64_t n = 1, off = 0; off < size_; ++n) {
      std::string part = part_name(path_, n), part_tmp = part + ".tmp";
      ::unlink(part_tmp.c_str());
      int out = ::open(part_tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (out < 0) {
        ::close(in);
        throw_io("cannot create a part of the bundle", part_tmp, errno);
      }
      ::fchmod(out, 0600);
      uint64_t end = std::min(size_, off + split_);
      while (off < end) {
        ssize_t r = ::pread(in, buf.data(), std::min<uint64_t>(buf.size(), end - off), off_t(off));
        if (r <= 0 || ::write(out, buf.data(), size_t(r)) != r) {
          int e = errno;
          ::close(out);
          ::close(in);
          throw_io("cannot write a part of the bundle", part_tmp, e, e == ENOSPC ? Retry::later : Retry::never);
        }
        off += uint64_t(r);
      }
      if (::fsync(out) != 0 || ::close(out) != 0 || ::rename(part_tmp.c_str(), part.c_str()) != 0) {
        int e = errno;
        ::close(in);
        throw_io("cannot write a part of the bundle", part, e);
      }
    }
    ::close(in);
    ::unlink(tmp_.c_str());
    ::unlink(path_.c_str());  // an unsplit FILE would be read instead of the parts
    // A stale FILE.<n+1> from an earlier bundle would read as part of this one.
    ::unlink(part_name(path_, parts() + 1).c_str());
  }

  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t split_ = 0;
  archive::Sha256 sha_;
};

struct Trailer {
  uint64_t body_size = 0;
  Hash digest{};
  bool is_signed = false;
  std::string signature;
};

// Checks the trailer, the whole-file hash and (with `pubkey`) the signature.
Trailer check_file(const InFile& f, const std::string& pubkey, const Progress& progress = {}) {
  if (f.size() < kHeaderFixed + 1 + kTrailerSize)
    throw corrupt(f.path(), fmt::format("the bundle is truncated: {} bytes is too short for a bundle", f.size()));
  std::string t = f.read(f.size() - kTrailerSize, kTrailerSize);
  if (std::memcmp(t.data(), kTrailerMagic, 8) != 0)
    throw corrupt(f.path(), "the bundle has no trailer at its end: it is truncated (or a part is missing) or not a bundle");
  Trailer tr;
  tr.body_size = get_u64(t.data() + 8);
  if (tr.body_size != f.size() - kTrailerSize)
    throw corrupt(f.path(), fmt::format("the bundle's trailer says the body has {} bytes, the file has {}",
                                        tr.body_size, f.size() - kTrailerSize));
  std::memcpy(tr.digest.data(), t.data() + 16, 32);
  uint8_t flag = uint8_t(t[48]);
  if (flag > 1) throw corrupt(f.path(), "the bundle's trailer is malformed (signed flag)");
  tr.is_signed = flag == 1;
  tr.signature = t.substr(56, 64);
  archive::Sha256 sha;
  for (uint64_t off = 0; off < tr.body_size;) {
    uint64_t n = std::min<uint64_t>(1 << 20, tr.body_size - off);
    sha.update(f.read(off, n));
    off += n;
    if (progress) progress("checking", off, tr.body_size);
  }
  if (sha.finish() != tr.digest)
    throw corrupt(f.path(), "the bundle's SHA-256 does not match its trailer: the file was changed or damaged");
  if (!pubkey.empty()) {
    if (!tr.is_signed)
      throw Error(ErrorKind::usage, "the bundle is not signed, but --pubkey asks for a signature", Retry::never,
                  {.file = f.path()});
    if (!verify::ed25519_verify(signed_text(tr.digest), tr.signature, pubkey))
      throw Error(ErrorKind::usage, "the bundle's signature does not match the key " + pubkey, Retry::never,
                  {.file = f.path()});
  }
  return tr;
}

nlohmann::json read_header(const InFile& f, uint64_t& entries_start) {
  std::string fixed = f.read(0, kHeaderFixed);
  if (std::memcmp(fixed.data(), kMagic, 8) != 0) throw corrupt(f.path(), "not a bundle (bad magic)");
  uint32_t version = get_u32(fixed.data() + 8);
  if (version < 1 || version > kBundleVersion)
    throw Error(ErrorKind::format, fmt::format("bundle format version {} is not read by this build (it reads 1 to {})",
                                               version, kBundleVersion),
                Retry::never, {.file = f.path()});
  uint64_t len = get_u32(fixed.data() + 12);
  if (len > kMaxHeader || len > f.size()) throw corrupt(f.path(), "the bundle's header length is out of range");
  entries_start = kHeaderFixed + len;
  try {
    return nlohmann::json::parse(f.read(kHeaderFixed, len));
  } catch (const nlohmann::json::exception& e) {
    throw corrupt(f.path(), std::string("the bundle's header is not JSON: ") + e.what());
  }
}

BundleInfo info_from_header(const nlohmann::json& h, const std::string& file) {
  BundleInfo info;
  try {
    if (h.at("bundle").get<std::string>() != "imapstage-bundle") throw corrupt(file, "the header is not a bundle header");
    info.full = h.at("full").get<bool>();
    info.created = h.at("created").get<std::string>();
    info.base = Marker::from_json(h.at("base"));
    info.head = Marker::from_json(h.at("head"));
    info.objects = h.at("objects").get<uint64_t>();
    info.records = h.at("records").get<uint64_t>();
    info.raw_bytes = h.at("bytes").get<uint64_t>();
    uint32_t version = h.at("version").get<uint32_t>();
    if (version >= 3) {
      info.sealed_key_id = h.at("sealed").at("key_id").get<std::string>();
      if (info.sealed_key_id.empty()) throw corrupt(file, fmt::format("a version {} bundle without its key id", version));
    } else if (h.contains("sealed")) {
      throw corrupt(file, fmt::format("a version {} bundle cannot be sealed", version));
    }
    if (info.base.accounts != info.head.accounts || info.base.keyed_accounts != info.head.keyed_accounts)
      throw corrupt(file, "the bundle's base and head cover different accounts");
    if (version < 3 && (version == 1) != info.head.accounts.empty())
      throw corrupt(file, fmt::format("a version {} bundle {} name its accounts", version,
                                      version == 1 ? "does not" : "must"));
    if (info.head.keyed_accounts != (version == 4 && !info.head.accounts.empty()))
      throw corrupt(file, fmt::format("a version {} bundle {} its accounts by keyed name", version,
                                      version == 4 ? "must give" : "cannot give"));
  } catch (const nlohmann::json::exception& e) {
    throw corrupt(file, std::string("the bundle's header is malformed: ") + e.what());
  }
  return info;
}

// Decodes every entry in order, each checked (objects re-hashed, records decoded).
// Sealed entries (a version 3 bundle) are opened with `keys`; objects are
// then handed on under their SHA-256 (the entry names them by a keyed hash).
// Sealed entries without keys go to `on_opaque` (kind, raw size) unopened.
void for_each_entry(const InFile& f, uint64_t start, uint64_t end,
                    const std::function<void(const Hash&, const std::string&)>& on_object,
                    const std::function<void(std::vector<codec::JournalOp>&&)>& on_records, bool sealed = false,
                    const archive::RecordKeys* keys = nullptr,
                    const std::function<void(uint8_t, uint64_t)>& on_opaque = {},
                    const std::function<void(uint64_t done, uint64_t total)>& progress = {}) {
  uint64_t pos = start;
  for (;;) {
    if (progress) progress(pos - start, end - start);
    if (pos >= end) throw corrupt(f.path(), "the bundle has no end entry: it is truncated");
    uint64_t at = pos;
    uint8_t kind = uint8_t(f.read(pos, 1)[0]);
    pos += 1;
    if (kind == kEntryEnd) {
      if (pos != end) throw corrupt(f.path(), fmt::format("bytes after the end entry at offset {}", at));
      return;
    }
    if (kind != kEntryObject && kind != kEntryRecords)
      throw corrupt(f.path(), fmt::format("unknown entry kind {} at offset {}", unsigned(kind), at));
    archive::PackRecordInfo info;
    info.offset = at;
    info.kind = kind == kEntryObject ? archive::RecordKind::object : archive::RecordKind::journal;
    std::string fixed = f.read(pos, 48);
    pos += 48;
    std::memcpy(info.hash.data(), fixed.data(), 32);
    info.raw_size = get_u64(fixed.data() + 32);
    info.stored_size = get_u64(fixed.data() + 40);
    if (info.stored_size > end - pos)
      throw corrupt(f.path(), fmt::format("the entry at offset {} runs past the end of the bundle", at));
    std::string stored = f.read(pos, info.stored_size);
    pos += info.stored_size;
    info.record_size = pos - at;
    if (sealed && !keys) {
      if (info.stored_size < archive::kSealOverhead)
        throw corrupt(f.path(), fmt::format("the sealed entry at offset {} is too short", at));
      if (on_opaque) on_opaque(kind, info.raw_size);
      continue;
    }
    std::string raw;
    try {
      raw = archive::decode_payload(info, stored, f.path(), sealed ? keys : nullptr);
    } catch (const Error& e) {
      throw e.with({.file = f.path(), .hash = archive::to_hex(info.hash)});
    }
    if (kind == kEntryObject) {
      on_object(sealed ? archive::sha256(raw) : info.hash, raw);
      continue;
    }
    codec::Journal j;
    try {
      j = codec::decode_journal(raw);
    } catch (const Error& e) {
      throw e.with({.file = f.path()});
    }
    for (auto& op : j.ops)
      if (op.kind != codec::OpKind::put_account && op.kind != codec::OpKind::put_folder &&
          op.kind != codec::OpKind::put_message)
        throw corrupt(f.path(), fmt::format("the records entry at offset {} holds an op of kind {}, which bundles do not carry",
                                            at, unsigned(op.kind)));
    on_records(std::move(j.ops));
  }
}

}  // namespace

nlohmann::json Marker::to_json() const {
  nlohmann::json packs_json = nlohmann::json::object();
  for (auto& [id, size] : packs) packs_json[fmt::format("{:016x}", id)] = size;
  nlohmann::json j = {{"archive_id", archive_id}, {"journal_sequence", journal_sequence}, {"root", root},
                      {"packs", packs_json}};
  if (!accounts.empty()) j[keyed_accounts ? "keyed_accounts" : "accounts"] = accounts;
  return j;
}

Marker Marker::from_json(const nlohmann::json& j) {
  Marker m;
  try {
    m.archive_id = j.at("archive_id").get<std::string>();
    m.journal_sequence = j.at("journal_sequence").get<uint64_t>();
    m.root = j.at("root").get<std::string>();
    if (!archive::hash_from_hex(m.root)) throw Error(ErrorKind::corrupt, "a marker's root is not a SHA-256 in hex");
    for (auto& [k, v] : j.at("packs").items()) {
      if (k.size() != 16 || k.find_first_not_of("0123456789abcdef") != std::string::npos)
        throw Error(ErrorKind::corrupt, "a marker names a pack id that is not 16 hex digits: " + k);
      m.packs.emplace_back(std::stoull(k, nullptr, 16), v.get<uint64_t>());
    }
    if (j.contains("accounts") && j.contains("keyed_accounts"))
      throw Error(ErrorKind::corrupt, "a marker gives both accounts and keyed_accounts");
    m.keyed_accounts = j.contains("keyed_accounts");
    if (j.contains("accounts") || m.keyed_accounts) {
      m.accounts = j.at(m.keyed_accounts ? "keyed_accounts" : "accounts").get<std::vector<std::string>>();
      if (m.accounts.empty() || !std::is_sorted(m.accounts.begin(), m.accounts.end()) ||
          std::adjacent_find(m.accounts.begin(), m.accounts.end()) != m.accounts.end())
        throw Error(ErrorKind::corrupt, "a marker's accounts are not a sorted list of distinct names");
      if (m.keyed_accounts)
        for (auto& k : m.accounts)
          if (k.size() != 64 || k.find_first_not_of("0123456789abcdef") != std::string::npos)
            throw Error(ErrorKind::corrupt, "a marker's keyed account name is not 64 hex digits");
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::corrupt, std::string("malformed marker: ") + e.what());
  }
  return m;
}

Marker Marker::empty() {
  Marker m;
  m.root = archive::to_hex(archive::sha256(""));
  return m;
}

BundleInfo create(archive::Archive& a, const CreateOptions& options, const Progress& progress) {
  // The accounts asked for, by id (the first four bytes of every account,
  // folder and message key).
  std::set<std::string> names(options.accounts.begin(), options.accounts.end());
  std::set<std::string> account_keys;
  for (auto& name : names) {
    auto account = a.find_account(name);
    if (!account)
      throw Error(ErrorKind::usage, "the archive has no account " + name, Retry::never,
                  {.account = name, .file = a.dir().string()});
    std::string key;
    for (int shift = 24; shift >= 0; shift -= 8) key.push_back(char((account->id >> shift) & 0xff));
    account_keys.insert(key);
  }
  auto wanted = [&](const std::string& key) { return names.empty() || account_keys.count(key.substr(0, 4)); };

  Marker head;
  head.archive_id = a.archive_id();
  head.journal_sequence = a.journal_sequence();
  head.root = verify::compute_manifest(a, nullptr, names).root;
  // A sealed bundle names its accounts by keyed name only (version 4).
  auto keyed = [&](const std::vector<std::string>& plain) {
    std::vector<std::string> out;
    for (auto& n : plain) out.push_back(a.keys()->keyed_account_name(n));
    std::sort(out.begin(), out.end());
    return out;
  };
  head.accounts.assign(names.begin(), names.end());
  if (a.keys() && !head.accounts.empty()) {
    head.accounts = keyed(head.accounts);
    head.keyed_accounts = true;
  }
  auto packs = a.packs();
  for (auto& p : packs) head.packs.emplace_back(p.id, p.committed_size);

  Marker base = options.since ? *options.since : Marker::empty();
  if (!options.since) {
    base.accounts = head.accounts;
    base.keyed_accounts = head.keyed_accounts;
  }
  if (a.keys() && !base.keyed_accounts && !base.accounts.empty()) {
    // The head of a version 3 bundle (or its marker): names in clear.
    base.accounts = keyed(base.accounts);
    base.keyed_accounts = true;
  }
  auto covers = [&](const Marker& m, bool is_head) -> std::string {
    if (m.accounts.empty()) return "every account";
    if (is_head) return fmt::format("{}", fmt::join(names, ", "));
    if (!m.keyed_accounts) return fmt::format("{}", fmt::join(m.accounts, ", "));
    return fmt::format("{} accounts given by keyed name", m.accounts.size());
  };
  if (base.accounts != head.accounts)
    throw Error(ErrorKind::usage,
                fmt::format("the base covers {}, this bundle would cover {}: an incremental bundle carries the "
                            "accounts of its base (give the same --account options)",
                            covers(base, false), covers(head, true)));
  std::map<uint64_t, uint64_t> base_sizes(base.packs.begin(), base.packs.end());
  if (options.since) {
    if (base.archive_id != head.archive_id)
      throw Error(ErrorKind::usage, fmt::format("the base was made from archive {}, not from this one ({})",
                                                base.archive_id, head.archive_id));
    if (base.journal_sequence > head.journal_sequence)
      throw Error(ErrorKind::usage, fmt::format("the base (journal record {}) is newer than the archive (journal record {})",
                                                base.journal_sequence, head.journal_sequence));
    std::map<uint64_t, uint64_t> now(head.packs.begin(), head.packs.end());
    for (auto& [id, size] : base_sizes)
      if (auto it = now.find(id); it == now.end() || it->second < size)
        throw Error(ErrorKind::usage,
                    fmt::format("pack {:016x} of the base is not in the archive as it was: not a state of this archive",
                                id),
                    Retry::never, {.file = a.pack_path(id).string()});
  }

  // The journal records committed since the base are in the pack bytes written since.
  std::map<uint64_t, codec::Journal> journals;  // by sequence; a later copy wins
  for (auto& p : packs) {
    uint64_t from = base_sizes.count(p.id) ? base_sizes[p.id] : 0;
    if (from >= p.committed_size) continue;
    auto path = a.pack_path(p.id);
    archive::PackReader reader(path, a.dir());
    uint64_t reached = archive::kPackHeaderSize;
    while (reached < p.committed_size) {
      auto rec = reader.next();
      if (!rec) break;
      reached = rec->offset + rec->record_size;
      if (reached > p.committed_size) break;
      if (rec->offset < from || rec->kind != archive::RecordKind::journal) continue;
      auto j = codec::decode_journal(archive::decode_payload(*rec, reader.read_payload(), path,
                                                             a.keys() ? &a.keys()->records() : nullptr));
      if (j.sequence > base.journal_sequence && j.sequence <= head.journal_sequence) journals[j.sequence] = std::move(j);
    }
  }
  for (uint64_t s = base.journal_sequence + 1; s <= head.journal_sequence; ++s)
    if (!journals.count(s))
      throw Error(ErrorKind::corrupt, fmt::format("journal record {} is not in the packs written since the base", s),
                  Retry::never, {.file = a.dir().string()});

  // The final value of every account, folder and message changed since.
  std::map<std::pair<uint8_t, std::string>, std::string> changed;
  for (auto& [seq, j] : journals)
    for (auto& op : j.ops)
      if ((op.kind == codec::OpKind::put_account || op.kind == codec::OpKind::put_folder ||
           op.kind == codec::OpKind::put_message) &&
          wanted(op.key))
        changed[{uint8_t(op.kind), op.key}] = op.value;

  // Objects those messages need that the archive did not hold at the base.
  struct Wanted {
    Hash hash;
    archive::ObjectLocation where;
  };
  std::vector<Wanted> objects;
  std::set<Hash> seen;
  // Of a bundle of some accounts: objects the archive held at the base that
  // a changed message needs. The receiving archive holds them only if a
  // message of those accounts referred to them at the base; unchanged
  // messages did, and a changed message may be new, so an object no
  // unchanged message refers to is carried again (apply skips what it has).
  std::map<Hash, archive::ObjectLocation> held;
  for (auto& [k, value] : changed) {
    if (k.first != uint8_t(codec::OpKind::put_message)) continue;
    auto m = codec::decode_message(k.second, value);
    if (!seen.insert(m.hash).second) continue;
    auto loc = a.object(m.hash);
    if (!loc)
      throw Error(ErrorKind::corrupt, "a message's object is not in the archive", Retry::never,
                  {.uid = m.key.uid, .file = a.dir().string(), .hash = archive::to_hex(m.hash)});
    if (auto it = base_sizes.find(loc->pack_id); it != base_sizes.end() && loc->offset < it->second) {
      if (!names.empty()) held.emplace(m.hash, *loc);
      continue;
    }
    objects.push_back({m.hash, *loc});
  }
  if (!held.empty()) {
    for (auto& name : names) {
      auto account = a.find_account(name);
      for (auto& folder : a.folders(account->id))
        a.for_each_message(account->id, folder.id, std::nullopt, [&](const archive::MessageRecord& m) {
          if (held.empty()) return false;
          auto it = held.find(m.hash);
          if (it != held.end() && !changed.count({uint8_t(codec::OpKind::put_message), codec::message_key(m.key)}))
            held.erase(it);
          return true;
        });
    }
    for (auto& [hash, loc] : held) objects.push_back({hash, loc});
  }
  uint64_t raw_bytes = 0;
  for (auto& o : objects) raw_bytes += o.where.raw_size;
  std::sort(objects.begin(), objects.end(), [](const Wanted& x, const Wanted& y) {
    return std::tie(x.where.pack_id, x.where.offset, x.where.member_offset) <
           std::tie(y.where.pack_id, y.where.offset, y.where.member_offset);
  });

  BundleInfo info;
  info.full = !options.since;
  info.created = iso_utc_now();
  info.base = base;
  info.head = head;
  info.objects = objects.size();
  info.records = changed.size();
  info.raw_bytes = raw_bytes;
  info.signed_ = !options.sign_key.empty();

  // A bundle of an encrypted archive carries its entries sealed (version 3).
  const archive::RecordKeys* keys = a.keys() ? &a.keys()->records() : nullptr;
  uint32_t version = keys ? 4 : names.empty() ? 1 : 2;
  nlohmann::json header = {{"bundle", "imapstage-bundle"}, {"version", version},
                           {"full", info.full},            {"created", info.created},
                           {"base", base.to_json()},       {"head", head.to_json()},
                           {"objects", info.objects},      {"records", info.records},
                           {"bytes", info.raw_bytes}};
  if (keys) {
    info.sealed_key_id = a.keys()->key_id();
    header["sealed"] = {{"key_id", info.sealed_key_id}, {"cipher", "aes-256-gcm"}};
  }
  std::string header_text = header.dump();

  OutFile out(options.out);
  out.split(options.split);
  std::string fixed(kMagic, 8);
  put_u32(fixed, version);
  put_u32(fixed, uint32_t(header_text.size()));
  out.write(fixed);
  out.write(header_text);
  archive::Compressor compressor(3);
  auto entry = [&](uint8_t kind, const Hash& plain, std::string_view raw) {
    auto stored = compressor.compress_bytes(raw);
    Hash hash = keys ? keys->name(plain) : plain;
    std::string sealed;
    if (keys)
      sealed = archive::seal_payload(*keys, kind == kEntryObject ? archive::RecordKind::object : archive::RecordKind::journal,
                                     hash, raw.size(), stored.view());
    std::string_view payload = keys ? std::string_view(sealed) : stored.view();
    std::string head_bytes(1, char(kind));
    head_bytes.append(reinterpret_cast<const char*>(hash.data()), 32);
    put_u64(head_bytes, raw.size());
    put_u64(head_bytes, payload.size());
    out.write(head_bytes);
    out.write(payload);
  };
  uint64_t written = 0;
  for (auto& o : objects) {
    entry(kEntryObject, o.hash, a.read_object(o.hash));
    written += o.where.raw_size;
    if (progress) progress("writing", written, raw_bytes);
  }
  if (progress && objects.empty()) progress("writing", 0, 0);  // the step still ends
  codec::Journal records;
  records.sequence = head.journal_sequence;
  records.time = std::time(nullptr);
  uint64_t pending = 0;
  auto flush = [&] {
    if (records.ops.empty()) return;
    std::string raw = codec::encode_journal(records);
    entry(kEntryRecords, archive::sha256(raw), raw);
    records.ops.clear();
    pending = 0;
  };
  for (auto& [k, value] : changed) {
    records.ops.push_back({codec::OpKind(k.first), k.second, value});
    pending += k.second.size() + value.size() + 9;
    if (pending >= kRecordsPerEntry) flush();
  }
  flush();
  out.write(std::string(1, char(kEntryEnd)));

  uint64_t body = out.size();
  Hash digest = out.digest();
  std::string trailer(kTrailerMagic, 8);
  put_u64(trailer, body);
  trailer.append(reinterpret_cast<const char*>(digest.data()), 32);
  trailer.push_back(char(info.signed_ ? 1 : 0));
  trailer.append(7, '\0');
  if (info.signed_) {
    std::string sig = verify::ed25519_sign(signed_text(digest), options.sign_key);
    if (sig.size() != 64) throw Error(ErrorKind::internal, "an Ed25519 signature is not 64 bytes");
    trailer += sig;
  } else {
    trailer.append(64, '\0');
  }
  out.write(trailer, false);
  info.file_size = out.size();
  out.finish();
  info.parts = out.parts();
  return info;
}

Marker read_marker(const std::string& path) {
  InFile f(path);
  std::string start = f.read(0, std::min<uint64_t>(8, f.size()));
  if (start.size() == 8 && std::memcmp(start.data(), kMagic, 8) == 0) {
    check_file(f, "");
    uint64_t entries = 0;
    return info_from_header(read_header(f, entries), path).head;
  }
  try {
    return Marker::from_json(nlohmann::json::parse(f.read(0, f.size())));
  } catch (const nlohmann::json::exception& e) {
    throw corrupt(path, std::string("neither a bundle nor a marker: ") + e.what());
  } catch (const Error& e) {
    throw e.with({.file = path});
  }
}

BundleInfo verify(const std::string& file, const std::string& pubkey, const archive::RecordKeys* keys,
                  const Progress& progress) {
  InFile f(file);
  Trailer tr = check_file(f, pubkey, progress);
  uint64_t start = 0;
  BundleInfo info = info_from_header(read_header(f, start), file);
  info.signed_ = tr.is_signed;
  info.file_size = f.size();
  info.parts = f.parts();
  uint64_t objects = 0, records = 0, bytes = 0;
  bool sealed = !info.sealed_key_id.empty();
  info.contents_checked = !sealed || keys;
  for_each_entry(
      f, start, tr.body_size,
      [&](const Hash&, const std::string& raw) {
        ++objects;
        bytes += raw.size();
      },
      [&](std::vector<codec::JournalOp>&& ops) { records += ops.size(); }, sealed, keys,
      [&](uint8_t kind, uint64_t raw_size) {
        if (kind == kEntryObject) ++objects, bytes += raw_size;
      },
      [&](uint64_t done, uint64_t total) {
        if (progress) progress("reading", done, total);
      });
  if (progress) progress("reading", tr.body_size - start, tr.body_size - start);
  if (!info.contents_checked) records = info.records;  // inside the sealed records entries
  if (objects != info.objects || records != info.records || bytes != info.raw_bytes)
    throw corrupt(file, fmt::format("the bundle holds {} objects ({} bytes) and {} records; its header says {} ({}) and {}",
                                    objects, bytes, records, info.objects, info.raw_bytes, info.records));
  return info;
}

ObjectSink::ObjectSink(archive::Archive& archive) : batch_(archive) {}

bool ObjectSink::put(const Hash& hash, std::string_view raw) {
  bool added = batch_.put_object(hash, raw);
  if (added) ++written_;
  if (batch_.pending_bytes() >= kObjectsPerCommit) batch_.commit();
  return added;
}

void ObjectSink::commit() { batch_.commit(); }

ApplyResult apply(const std::string& file, const std::string& dir, const std::string& pubkey,
                  const Progress& progress) {
  ApplyResult result;
  InFile f(file);
  Trailer tr = check_file(f, pubkey, progress);
  uint64_t start = 0;
  result.info = info_from_header(read_header(f, start), file);
  result.info.signed_ = tr.is_signed;
  result.info.file_size = f.size();
  result.info.parts = f.parts();
  const BundleInfo& info = result.info;

  struct stat st{};
  if (::lstat(dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    throw Error(ErrorKind::usage, "the archive path is a symbolic link; bundle apply does not write through links",
                Retry::never, {.file = dir});

  // An incremental bundle never creates an archive: refuse before making one.
  std::string empty = archive::to_hex(archive::sha256(""));
  if (!fs::exists(fs::path(dir) / "FORMAT") && info.base.root != empty)
    throw Error(ErrorKind::usage,
                fmt::format("the archive is not at the bundle's base: it has no archive (root {}), the bundle starts "
                            "from {} (and leads to {})",
                            empty, info.base.root, info.head.root),
                Retry::never, {.file = dir});
  bool sealed = !info.sealed_key_id.empty();
  if (sealed && !fs::exists(fs::path(dir) / "FORMAT"))
    throw Error(ErrorKind::usage,
                "the bundle is sealed with the keys of an encrypted archive: create the receiving archive with "
                "imapstage init --same-key-as SOURCE-ARCHIVE (or a copy of its key file) first",
                Retry::never, {.file = dir});
  auto a = archive::Archive::open(dir, archive::Archive::Mode::create);
  if (sealed && (!a->keys() || a->keys()->key_id() != info.sealed_key_id))
    throw Error(ErrorKind::usage,
                fmt::format("the bundle is sealed with master key {}, the archive {}: only an archive sharing that key "
                            "(imapstage init --same-key-as) can apply it",
                            info.sealed_key_id, a->keys() ? "has key " + a->keys()->key_id() : "is not encrypted"),
                Retry::never, {.file = dir});
  const archive::RecordKeys* keys = sealed ? &a->keys()->records() : nullptr;
  // The root over the bundle's accounts as the archive holds them now (keyed
  // names: those of its accounts whose keyed name the bundle gives; none yet:
  // the root of no message).
  auto root_now = [&] {
    std::set<std::string> names(info.head.accounts.begin(), info.head.accounts.end());
    if (!info.head.keyed_accounts) return verify::compute_manifest(*a, nullptr, names).root;
    std::set<std::string> held;
    for (auto& account : a->accounts())
      if (names.count(a->keys()->keyed_account_name(account.name))) held.insert(account.name);
    if (held.empty()) return archive::to_hex(archive::sha256(""));
    return verify::compute_manifest(*a, nullptr, held).root;
  };
  std::string now = root_now();
  if (now == info.head.root && info.head.root != info.base.root) {
    result.already_applied = true;
    return result;
  }
  if (now != info.base.root)
    throw Error(ErrorKind::usage,
                fmt::format("the archive is not at the bundle's base: its root is {}, the bundle starts from {} "
                            "(and leads to {})",
                            now, info.base.root, info.head.root),
                Retry::never, {.file = dir});

  // Objects first, in objects-only commits: invisible until a message refers to them.
  std::vector<codec::JournalOp> ops;
  {
    ObjectSink objects(*a);
    for_each_entry(
        f, start, tr.body_size, [&](const Hash& hash, const std::string& raw) { objects.put(hash, raw); },
        [&](std::vector<codec::JournalOp>&& more) {
          for (auto& op : more) ops.push_back(std::move(op));
        },
        sealed, keys, {},
        [&](uint64_t done, uint64_t total) {
          if (progress) progress("applying", done, total);
        });
    objects.commit();
    if (progress) progress("applying", tr.body_size - start, tr.body_size - start);
    result.objects_written = objects.written();
  }

  // Then every record in one batch: one journal record, one LMDB transaction.
  std::map<uint32_t, std::string> names_by_id;
  for (auto& account : a->accounts()) names_by_id.emplace(account.id, account.name);
  archive::Batch batch(*a);
  for (auto& op : ops) {
    switch (op.kind) {
      case codec::OpKind::put_account: {
        auto r = codec::decode_account(op.key, op.value);
        if (auto same_id = names_by_id.find(r.id); same_id != names_by_id.end() && same_id->second != r.name)
          throw Error(ErrorKind::usage,
                      fmt::format("the archive has account {} under id {}, which the bundle gives to account {}: "
                                  "it was not made from the bundles of this source",
                                  same_id->second, r.id, r.name),
                      Retry::never, {.account = r.name, .file = dir});
        auto same_name = a->find_account(r.name);
        if (same_name && same_name->id != r.id)
          throw Error(ErrorKind::usage,
                      fmt::format("the archive has account {} under id {}, the bundle under id {}: it was not "
                                  "made from the bundles of this source",
                                  r.name, same_name->id, r.id),
                      Retry::never, {.account = r.name, .file = dir});
        batch.put_account(r);
        break;
      }
      case codec::OpKind::put_folder: {
        auto r = codec::decode_folder(op.key, op.value);
        auto same_name = a->find_folder(r.account_id, r.name_raw);
        if (same_name && same_name->id != r.id)
          throw Error(ErrorKind::usage,
                      fmt::format("the archive has folder {} under id {}, the bundle under id {}", r.name_raw,
                                  same_name->id, r.id),
                      Retry::never, {.folder = r.name_utf8, .file = dir});
        batch.put_folder(r);
        break;
      }
      case codec::OpKind::put_message: {
        auto r = codec::decode_message(op.key, op.value);
        if (!a->object(r.hash))
          throw Error(ErrorKind::corrupt,
                      "a message's object is neither in the bundle nor in the archive: a bundle of the chain is missing",
                      Retry::never, {.uid = r.key.uid, .file = file, .hash = archive::to_hex(r.hash)});
        batch.put_message(r);
        break;
      }
      default:
        throw Error(ErrorKind::internal, "unexpected op kind in a bundle");
    }
    ++result.records_written;
  }
  batch.commit();

  std::string after = root_now();
  if (after != info.head.root)
    throw Error(ErrorKind::corrupt,
                fmt::format("after applying the bundle the archive's root is {}, the bundle's head is {}", after,
                            info.head.root),
                Retry::never, {.file = dir});
  return result;
}

}  // namespace imapstage::bundle

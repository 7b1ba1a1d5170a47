#include "archive-format/pack.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <optional>

#include <fmt/format.h>

#include "archive-format/layout.h"
#include "common/aead.h"
#include "common/nonce.h"
#include "common/error.h"

namespace imapstage::archive {

namespace {

constexpr char kPackMagic[8] = {'I', 'M', 'S', 'T', 'P', 'A', 'C', 'K'};
constexpr char kRecordMagic[4] = {'I', 'M', 'S', 'R'};
constexpr uint32_t kPackVersion = 1;
// Stored payload read from a file per piece when streaming.
constexpr size_t kReadPiece = 1u << 20;

struct Crc32cTable {
  uint32_t t[256];
  Crc32cTable() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
  }
};

void put_le(char* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
uint64_t get_le(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

Fd open_file(const std::filesystem::path& path, int flags, const std::filesystem::path& root) {
  return open_in_archive(root, path, flags);
}

uint64_t file_size_of(int fd, const std::filesystem::path& path) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) throw_io("cannot stat", path.string(), errno);
  return static_cast<uint64_t>(st.st_size);
}

// Reads exactly n bytes at `offset`; returns how many were available (short at end of file).
size_t pread_full(int fd, char* buf, size_t n, uint64_t offset, const std::filesystem::path& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_io("cannot read", path.string(), errno);
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

void pwrite_full(int fd, const char* buf, size_t n, uint64_t offset, const std::filesystem::path& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pwrite(fd, buf + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_io("cannot write", path.string(), errno);
    }
    done += static_cast<size_t>(r);
  }
}

void fsync_fd(int fd, const std::filesystem::path& path) {
  if (::fsync(fd) != 0) throw_io("cannot sync", path.string(), errno);
}

void fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_io("cannot open directory", dir.string(), errno);
  Fd d(fd);
  fsync_fd(d.get(), dir);
}

[[noreturn]] void corrupt_record(const std::filesystem::path& file, uint64_t offset, const std::string& problem,
                                 const std::string& hash = {}) {
  throw Error(ErrorKind::corrupt, fmt::format("damaged pack record at offset {}: {}", offset, problem), Retry::never,
              {.file = file.string(), .hash = hash});
}


std::string encode_record_header(RecordKind kind, const Hash& hash, uint64_t raw_size, uint64_t stored_size) {
  std::string h(kRecordHeaderSize, '\0');
  std::memcpy(h.data(), kRecordMagic, 4);
  h[4] = static_cast<char>(kind);
  std::memcpy(h.data() + 8, hash.data(), 32);
  put_le(h.data() + 40, raw_size, 8);
  put_le(h.data() + 48, stored_size, 8);
  put_le(h.data() + 60, crc32c(std::string_view(h.data(), 60)), 4);
  return h;
}

// The associated data of a sealed payload: what its header says about it.
std::string seal_aad(RecordKind kind, const Hash& name, uint64_t raw_size) {
  std::string a(45, '\0');
  std::memcpy(a.data(), kRecordMagic, 4);
  a[4] = static_cast<char>(kind);
  std::memcpy(a.data() + 5, name.data(), 32);
  put_le(a.data() + 37, raw_size, 8);
  return a;
}

// Checks a record header read at `offset` of a file of `file_size` bytes.
PackRecordInfo parse_record_header(const char* h, uint64_t offset, uint64_t file_size,
                                   const std::filesystem::path& file, const std::string& expected_hex = {}) {
  if (std::memcmp(h, kRecordMagic, 4) != 0) corrupt_record(file, offset, "no record header here", expected_hex);
  if (get_le(h + 60, 4) != crc32c(std::string_view(h, 60)))
    corrupt_record(file, offset, "record header checksum mismatch", expected_hex);
  uint8_t kind = static_cast<uint8_t>(h[4]);
  if (kind != static_cast<uint8_t>(RecordKind::object) && kind != static_cast<uint8_t>(RecordKind::journal) &&
      kind != static_cast<uint8_t>(RecordKind::group))
    corrupt_record(file, offset, fmt::format("unknown record kind {}", kind), expected_hex);
  if (h[5] || h[6] || h[7] || get_le(h + 56, 4)) corrupt_record(file, offset, "reserved header bytes are set", expected_hex);
  PackRecordInfo info;
  info.kind = static_cast<RecordKind>(kind);
  std::memcpy(info.hash.data(), h + 8, 32);
  info.offset = offset;
  info.raw_size = get_le(h + 40, 8);
  info.stored_size = get_le(h + 48, 8);
  std::string hex = expected_hex.empty() ? to_hex(info.hash) : expected_hex;
  if (info.raw_size > kMaxRawSize) corrupt_record(file, offset, "impossible raw size", hex);
  uint64_t room = file_size - offset - kRecordHeaderSize;  // REQUIRES: offset + header <= file_size
  if (info.stored_size > room)
    corrupt_record(file, offset,
                   fmt::format("record of {} bytes runs past the end of the file (torn tail)",
                               kRecordHeaderSize + info.stored_size),
                   hex);
  info.record_size = kRecordHeaderSize + info.stored_size;
  return info;
}

// Owns a zstd decompression context.
struct DCtx {
  ZSTD_DCtx* ctx = ZSTD_createDCtx();
  DCtx() {
    if (!ctx) throw Error(ErrorKind::internal, "cannot create a zstd context");
    // zstd's default limit, stated: a frame asking for a larger window is refused, not allocated.
    ZSTD_DCtx_setParameter(ctx, ZSTD_d_windowLogMax, 27);
  }
  ~DCtx() { ZSTD_freeDCtx(ctx); }
  DCtx(const DCtx&) = delete;
  DCtx& operator=(const DCtx&) = delete;
};

// A decompression context for one frame: this thread's own (making one per
// record cost about 8% of extracting small messages), or a fresh one when a
// sink decodes another record while the thread's is in use.
class FrameDCtx {
 public:
  FrameDCtx() {
    thread_local DCtx shared;
    thread_local bool busy = false;
    if (busy) {
      own_ = std::make_unique<DCtx>();
      ctx_ = own_->ctx;
    } else {
      busy_ = &busy;
      busy = true;
      ctx_ = shared.ctx;
      ZSTD_DCtx_reset(ctx_, ZSTD_reset_session_only);
    }
  }
  ~FrameDCtx() {
    if (busy_) *busy_ = false;
  }
  FrameDCtx(const FrameDCtx&) = delete;
  FrameDCtx& operator=(const FrameDCtx&) = delete;
  ZSTD_DCtx* get() const { return ctx_; }

 private:
  std::unique_ptr<DCtx> own_;
  bool* busy_ = nullptr;
  ZSTD_DCtx* ctx_ = nullptr;
};

// Decodes one record payload handed over in pieces by `input` (which fills
// its buffer and returns the bytes given, 0 at the end): checks the frame,
// the size and the hash; hands decoded bytes to `out` as they come.
void decode_frame(const PackRecordInfo& info, const std::function<size_t(char*, size_t)>& input,
                  const std::filesystem::path& file, const ByteSink& out, const RecordKeys* keys) {
  std::string hex = to_hex(info.hash);
  FrameDCtx frame_ctx;
  ZSTD_DCtx* dctx = frame_ctx.get();
  std::string in_buf(static_cast<size_t>(std::min<uint64_t>(info.stored_size, kReadPiece)), '\0');
  std::string out_buf(ZSTD_DStreamOutSize(), '\0');
  ZSTD_inBuffer in{in_buf.data(), 0, 0};
  uint64_t remaining = info.stored_size;
  auto refill = [&] {
    size_t want = static_cast<size_t>(std::min<uint64_t>(remaining, in_buf.size()));
    size_t got = want ? input(in_buf.data(), want) : 0;
    if (got != want) corrupt_record(file, info.offset, "the file ended while reading the payload", hex);
    remaining -= got;
    in = ZSTD_inBuffer{in_buf.data(), got, 0};
  };
  refill();
  unsigned long long declared = ZSTD_getFrameContentSize(in_buf.data(), in.size);
  if (declared == ZSTD_CONTENTSIZE_ERROR) corrupt_record(file, info.offset, "payload is not a zstd frame", hex);
  if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != info.raw_size)
    corrupt_record(file, info.offset, fmt::format("payload declares {} bytes, the header {}", declared, info.raw_size),
                   hex);
  Sha256 sha;
  uint64_t produced = 0;
  while (true) {
    if (in.pos == in.size && remaining > 0) refill();
    ZSTD_outBuffer o{out_buf.data(), out_buf.size(), 0};
    size_t rc = ZSTD_decompressStream(dctx, &o, &in);
    if (ZSTD_isError(rc))
      corrupt_record(file, info.offset, std::string("payload does not decompress: ") + ZSTD_getErrorName(rc), hex);
    if (o.pos) {
      produced += o.pos;
      if (produced > info.raw_size)
        corrupt_record(file, info.offset, "payload decompresses to more bytes than recorded", hex);
      std::string_view piece(out_buf.data(), o.pos);
      sha.update(piece);
      out(piece);
    }
    if (rc == 0) break;  // frame complete
    if (in.pos == in.size && remaining == 0 && o.pos < o.size)
      corrupt_record(file, info.offset, "payload is a truncated zstd frame", hex);
  }
  if (in.pos != in.size || remaining != 0)
    corrupt_record(file, info.offset, "payload has bytes after its zstd frame", hex);
  if (produced != info.raw_size)
    corrupt_record(file, info.offset, fmt::format("payload decompresses to {} bytes, not {}", produced, info.raw_size),
                   hex);
  Hash content = sha.finish();
  if ((keys ? keys->name(content) : content) != info.hash)
    corrupt_record(file, info.offset, "SHA-256 of the content does not match", hex);
}

// Reads exactly n bytes from `input`; returns how many it gave.
size_t input_full(const std::function<size_t(char*, size_t)>& input, char* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    size_t got = input(buf + done, n - done);
    if (got == 0) break;
    done += got;
  }
  return done;
}

// Decodes one record payload (see decode_frame); with `keys` it is opened
// first: nonce, ciphertext (decrypted as it passes), tag checked at the end.
void stream_decode(const PackRecordInfo& info, const std::function<size_t(char*, size_t)>& input,
                   const std::filesystem::path& file, const ByteSink& out, const RecordKeys* keys = nullptr) {
  if (!keys) return decode_frame(info, input, file, out, nullptr);
  std::string hex = to_hex(info.hash);
  if (info.stored_size < kSealOverhead) corrupt_record(file, info.offset, "a sealed payload shorter than 28 bytes", hex);
  char nonce[kGcmNonceSize];
  if (input_full(input, nonce, sizeof nonce) != sizeof nonce)
    corrupt_record(file, info.offset, "the file ended while reading the payload", hex);
  GcmStream gcm(GcmStream::Direction::decrypt, *keys->seal_key, std::string_view(nonce, sizeof nonce),
                seal_aad(info.kind, info.hash, info.raw_size));
  uint64_t left = info.stored_size - kSealOverhead;
  std::string sealed, opened;
  PackRecordInfo inner = info;
  inner.stored_size = left;
  decode_frame(inner,
               [&](char* buf, size_t n) {
                 n = static_cast<size_t>(std::min<uint64_t>(n, left));
                 sealed.resize(n);
                 size_t got = input_full(input, sealed.data(), n);
                 sealed.resize(got);
                 opened.clear();
                 gcm.update(sealed, opened);
                 std::memcpy(buf, opened.data(), got);
                 left -= got;
                 return got;
               },
               file, out, keys);
  char tag[kGcmTagSize];
  if (input_full(input, tag, sizeof tag) != sizeof tag)
    corrupt_record(file, info.offset, "the file ended while reading the payload", hex);
  try {
    gcm.finish_decrypt(std::string_view(tag, sizeof tag));
  } catch (const Error&) {
    corrupt_record(file, info.offset, "the sealed payload does not authenticate (damaged, or another key)", hex);
  }
}

// decode_frame of a frame held in memory.
void decode_frame_in_memory(const PackRecordInfo& info, std::string_view frame, const std::filesystem::path& file,
                            const ByteSink& out, const RecordKeys* keys) {
  size_t at = 0;
  decode_frame(info,
               [&](char* buf, size_t n) {
                 n = std::min(n, frame.size() - at);
                 std::memcpy(buf, frame.data() + at, n);
                 at += n;
                 return n;
               },
               file, out, keys);
}

}  // namespace

uint32_t crc32c(std::string_view bytes) {
  static const Crc32cTable table;
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) c = table.t[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// ---- Compressor --------------------------------------------------------------

struct Compressor::Impl {
  ZSTD_CCtx* ctx = nullptr;
  std::string out;  // a streamed frame's output buffer
  ~Impl() { ZSTD_freeCCtx(ctx); }

  // Feeds `raw` to the frame under way (ending it with ZSTD_e_end), handing
  // what is made to `sink`; on failure the frame is abandoned.
  void stream(std::string_view raw, ZSTD_EndDirective mode, const ByteSink& sink) {
    if (out.empty()) out.resize(ZSTD_CStreamOutSize());
    ZSTD_inBuffer in{raw.data(), raw.size(), 0};
    try {
      for (;;) {
        ZSTD_outBuffer o{out.data(), out.size(), 0};
        size_t left = ZSTD_compressStream2(ctx, &o, &in, mode);
        if (ZSTD_isError(left))
          throw Error(ErrorKind::internal, std::string("zstd compression failed: ") + ZSTD_getErrorName(left));
        if (o.pos) sink(std::string_view(out.data(), o.pos));
        if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size) break;
      }
    } catch (...) {
      ZSTD_CCtx_reset(ctx, ZSTD_reset_session_only);
      throw;
    }
  }
};

Compressor::Compressor(int level) : impl_(std::make_unique<Impl>()) {
  impl_->ctx = ZSTD_createCCtx();
  if (!impl_->ctx) throw Error(ErrorKind::internal, "cannot create a zstd context");
  ZSTD_CCtx_setParameter(impl_->ctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(impl_->ctx, ZSTD_c_contentSizeFlag, 1);
}
Compressor::~Compressor() = default;
Compressor::Compressor(Compressor&&) noexcept = default;
Compressor& Compressor::operator=(Compressor&&) noexcept = default;

CompressedBytes Compressor::compress_bytes(std::string_view raw) {
  size_t bound = ZSTD_compressBound(raw.size());
  CompressedBytes out;
  // malloc, not new char[n]() nor std::string(n, 0): pages past the frame's end are never touched.
  out.data_.reset(static_cast<char*>(std::malloc(bound == 0 ? 1 : bound)));
  if (!out.data_) throw std::bad_alloc();
  size_t n = ZSTD_compress2(impl_->ctx, out.data_.get(), bound, raw.data(), raw.size());
  if (ZSTD_isError(n)) throw Error(ErrorKind::internal, std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  // Shrinking keeps the bytes where they are (or remaps the pages of a large block).
  if (char* shrunk = static_cast<char*>(std::realloc(out.data_.get(), n == 0 ? 1 : n))) {
    (void)out.data_.release();
    out.data_.reset(shrunk);
  }
  out.size_ = n;
  return out;
}

void Compressor::compress_to(std::string_view raw, const std::function<void(std::string_view)>& out) {
  start_frame(raw.size());
  impl_->stream(raw, ZSTD_e_end, out);
}

void Compressor::start_frame(uint64_t raw_size) {
  ZSTD_CCtx_reset(impl_->ctx, ZSTD_reset_session_only);
  ZSTD_CCtx_setPledgedSrcSize(impl_->ctx, raw_size);  // the frame header carries the content size
}

void Compressor::add(std::string_view raw, const ByteSink& out) {
  if (!raw.empty()) impl_->stream(raw, ZSTD_e_continue, out);
}

void Compressor::end_frame(const ByteSink& out) { impl_->stream({}, ZSTD_e_end, out); }

std::string Compressor::compress(std::string_view raw) {
  CompressedBytes frame = compress_bytes(raw);
  return std::string(frame.view());
}

// ---- FrameSpool --------------------------------------------------------------

// The spool's file is written in pieces of about this size.
constexpr size_t kSpoolWrite = 1u << 20;

struct FrameSpool::Impl {
  std::filesystem::path dir;  // for messages
  Fd fd;
  uint64_t raw_size = 0;
  uint64_t received = 0;
  uint64_t file_size = 0;     // bytes in the file
  std::optional<Compressor> compressor;  // until finish()
  Sha256 sha;
  Hash hash{};
  bool finished = false;
  std::string pending;        // frame bytes not yet written to the file
  // Sealed: the file's bytes are AES-256-GCM under `key`, a key made for this spool alone.
  std::string key, nonce, tag;
  std::unique_ptr<GcmStream> gcm;
  std::string sealed;

  ~Impl() { wipe(key); }

  void flush() {
    std::string_view bytes = pending;
    if (gcm) {
      sealed.clear();
      gcm->update(pending, sealed);
      bytes = sealed;
    }
    pwrite_full(fd.get(), bytes.data(), bytes.size(), file_size, dir / "(temporary file)");
    file_size += bytes.size();
    pending.clear();
  }

  // Takes the frame's bytes as the compressor makes them.
  void take(std::string_view frame) {
    pending.append(frame);
    if (pending.size() >= kSpoolWrite) flush();
  }
};

FrameSpool::FrameSpool(const std::filesystem::path& dir, uint64_t raw_size, int zstd_level, bool sealed)
    : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.dir = dir;
  s.raw_size = raw_size;
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, kFileMode);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // A file system without O_TMPFILE: a named file, removed at once.
    std::string name = (dir / ".spool-XXXXXX").string();
    fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(name.c_str());
  }
  if (fd < 0) throw_io("cannot make a temporary file in", dir.string(), errno);
  s.fd = Fd(fd);
  s.compressor.emplace(zstd_level);
  s.compressor->start_frame(raw_size);
  s.pending.reserve(2 * kSpoolWrite);
  if (sealed) {
    s.key = random_bytes(kAeadKeySize);
    s.nonce = random_nonce();
    s.gcm = std::make_unique<GcmStream>(GcmStream::Direction::encrypt, s.key, s.nonce, "imapstage spool");
  }
}
FrameSpool::~FrameSpool() = default;
FrameSpool::FrameSpool(FrameSpool&&) noexcept = default;
FrameSpool& FrameSpool::operator=(FrameSpool&&) noexcept = default;

void FrameSpool::write(std::string_view raw) {
  Impl& s = *impl_;
  if (s.finished || raw.size() > s.raw_size - s.received)
    throw Error(ErrorKind::internal, fmt::format("an object announced as {} bytes got more", s.raw_size));
  s.received += raw.size();
  s.sha.update(raw);
  s.compressor->add(raw, [&](std::string_view frame) { s.take(frame); });
}

Hash FrameSpool::finish() {
  Impl& s = *impl_;
  if (s.finished) return s.hash;
  if (s.received != s.raw_size)
    throw Error(ErrorKind::internal,
                fmt::format("an object announced as {} bytes ended after {}", s.raw_size, s.received));
  s.compressor->end_frame([&](std::string_view frame) { s.take(frame); });
  s.flush();
  if (s.gcm) {
    s.tag = s.gcm->finish_encrypt();
    s.gcm.reset();
  }
  std::string().swap(s.pending);
  std::string().swap(s.sealed);
  s.compressor.reset();
  s.hash = s.sha.finish();
  s.finished = true;
  return s.hash;
}

uint64_t FrameSpool::raw_size() const { return impl_->raw_size; }
uint64_t FrameSpool::received() const { return impl_->received; }
uint64_t FrameSpool::frame_size() const { return impl_->file_size; }

void FrameSpool::replay(const std::function<void(std::string_view)>& out) const {
  const Impl& s = *impl_;
  if (!s.finished) throw Error(ErrorKind::internal, "a spooled object was replayed before it was finished");
  std::unique_ptr<GcmStream> gcm;
  if (!s.key.empty()) gcm = std::make_unique<GcmStream>(GcmStream::Direction::decrypt, s.key, s.nonce, "imapstage spool");
  std::string buf(std::min<uint64_t>(kReadPiece, std::max<uint64_t>(s.file_size, 1)), '\0'), plain;
  for (uint64_t at = 0; at < s.file_size;) {
    size_t n = pread_full(s.fd.get(), buf.data(), std::min<uint64_t>(buf.size(), s.file_size - at), at,
                          s.dir / "(temporary file)");
    if (n == 0) throw Error(ErrorKind::io, fmt::format("a temporary file in {} was cut short", s.dir.string()));
    std::string_view piece(buf.data(), n);
    if (gcm) {
      plain.clear();
      gcm->update(piece, plain);
      piece = plain;
    }
    out(piece);
    at += n;
  }
  if (gcm) gcm->finish_decrypt(s.tag);
}

// ---- PackWriter --------------------------------------------------------------

// Records are gathered in a buffer of about this size and written with one
// pwrite: a small message would otherwise cost two system calls (payload,
// then header). A payload that does not fit goes to the file directly.
constexpr size_t kWriteBuffer = 1u << 20;
// Written bytes are handed to the disk's writeback in steps of this size.
constexpr uint64_t kWritebackStep = 4u << 20;

struct PackWriter::Impl {
  const RecordKeys* keys = nullptr;
  std::filesystem::path path;
  Fd fd;
  uint64_t size = 0;      // bytes written so far, buffered ones included
  std::string buffer;     // bytes [buffer_at, size) not yet written to the file
  uint64_t buffer_at = 0; // the file holds exactly the bytes before this offset

  uint64_t writeback_from = 0;  // bytes before this offset were handed to writeback

  // Writes the buffer out. On failure the buffer is kept (truncate() drops it).
  void flush() {
    if (buffer.empty()) return;
    pwrite_full(fd.get(), buffer.data(), buffer.size(), buffer_at, path);
    buffer_at += buffer.size();
    buffer.clear();
    start_writeback();
  }

  // Starts writing each few MiB written to the disk now, without waiting, so
  // that the fsync of the next commit finds little left to write and stalls
  // its lane briefly. Durability still comes from that fsync alone.
  void start_writeback() {
    if (buffer_at < writeback_from + kWritebackStep) return;
    ::sync_file_range(fd.get(), static_cast<off_t>(writeback_from), static_cast<off_t>(buffer_at - writeback_from),
                      SYNC_FILE_RANGE_WRITE);
    writeback_from = buffer_at;
  }
};

PackWriter::PackWriter() : impl_(std::make_unique<Impl>()) {}
PackWriter::~PackWriter() = default;
PackWriter::PackWriter(PackWriter&&) noexcept = default;
PackWriter& PackWriter::operator=(PackWriter&&) noexcept = default;

std::string pack_header(uint64_t pack_id) {
  char h[kPackHeaderSize] = {};
  std::memcpy(h, kPackMagic, 8);
  put_le(h + 8, kPackVersion, 4);
  put_le(h + 16, pack_id, 8);
  put_le(h + 28, crc32c(std::string_view(h, 28)), 4);
  return std::string(h, sizeof h);
}

bool is_unfinished_pack(const std::filesystem::path& file, uint64_t pack_id, const std::filesystem::path& root) {
  try {
    Fd fd = open_file(file, O_RDONLY, root.empty() ? file.parent_path() : root);
    uint64_t size = file_size_of(fd.get(), file);
    if (size >= kPackHeaderSize) return false;
    char got[kPackHeaderSize];
    if (pread_full(fd.get(), got, size, 0, file) != size) return false;
    return pack_header(pack_id).compare(0, size, got, size) == 0;
  } catch (const Error&) {
    return false;
  }
}

namespace {

// Links the unnamed file `fd` (from O_TMPFILE) into `dir` as `name`; false
// when this system cannot (no /proc and no CAP_DAC_READ_SEARCH). Throws
// Error(io) when `name` exists or the link fails otherwise.
bool link_unnamed(int fd, int dir, const std::filesystem::path& name, const std::filesystem::path& file) {
  std::string proc = fmt::format("/proc/self/fd/{}", fd);
  if (::linkat(AT_FDCWD, proc.c_str(), dir, name.c_str(), AT_SYMLINK_FOLLOW) == 0) return true;
  int err = errno;
  if (err == ENOENT || err == EPERM || err == EACCES) {
    if (::linkat(fd, "", dir, name.c_str(), AT_EMPTY_PATH) == 0) return true;
    err = errno;
    if (err == ENOENT || err == EPERM || err == EACCES) return false;
  }
  throw_io("cannot create", file.string(), err);
}

}  // namespace

PackWriter PackWriter::create(const std::filesystem::path& file, uint64_t pack_id, const std::filesystem::path& root,
                              const RecordKeys* keys) {
  std::error_code ec;
  auto dir = file.parent_path();
  bool new_dir = !std::filesystem::exists(dir, ec);
  Fd dir_fd = make_dir_in_archive(root.empty() ? dir.parent_path() : root, dir);
  PackWriter w;
  w.impl_->keys = keys;
  w.impl_->path = file;
  const std::string h = pack_header(pack_id);
  // The file gets its name only once its header is durable, so a writer
  // killed meanwhile leaves no pack without a header: it is written unnamed
  // (O_TMPFILE) and linked. Where the file system cannot do that, it is
  // created under its name, and a kill in between can leave it short.
  bool linked = false;
  int tmp = ::openat(dir_fd.get(), ".", O_TMPFILE | O_RDWR | O_CLOEXEC, kFileMode);
  if (tmp >= 0) {
    Fd unnamed(tmp);
    pwrite_full(unnamed.get(), h.data(), h.size(), 0, file);
    fsync_fd(unnamed.get(), file);
    if (link_unnamed(unnamed.get(), dir_fd.get(), file.filename(), file)) {
      w.impl_->fd = std::move(unnamed);
      linked = true;
    }
  } else if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != ENOENT) {
    throw_io("cannot create", file.string(), errno);
  }
  if (!linked) w.impl_->fd = open_file(file, O_RDWR | O_CREAT | O_EXCL, root.empty() ? dir : root);
  try {
    if (!linked) {
      pwrite_full(w.impl_->fd.get(), h.data(), h.size(), 0, file);
      fsync_fd(w.impl_->fd.get(), file);
    }
    fsync_fd(dir_fd.get(), dir);
    if (new_dir) fsync_dir(dir.parent_path());
  } catch (...) {
    w.impl_->fd.reset();
    std::filesystem::remove(file, ec);
    throw;
  }
  w.impl_->size = kPackHeaderSize;
  w.impl_->buffer_at = kPackHeaderSize;
  w.impl_->writeback_from = kPackHeaderSize;
  return w;
}

PackWriter PackWriter::open(const std::filesystem::path& file, uint64_t size, const std::filesystem::path& root,
                            const RecordKeys* keys) {
  PackWriter w;
  w.impl_->keys = keys;
  w.impl_->path = file;
  w.impl_->fd = open_file(file, O_RDWR, root);
  uint64_t actual = file_size_of(w.impl_->fd.get(), file);
  if (actual < size)
    throw Error(ErrorKind::corrupt,
                fmt::format("pack is {} bytes, shorter than its committed size {}", actual, size), Retry::never,
                {.file = file.string()});
  if (actual > size) {
    if (::ftruncate(w.impl_->fd.get(), static_cast<off_t>(size)) != 0) throw_io("cannot truncate", file.string(), errno);
    fsync_fd(w.impl_->fd.get(), file);
  }
  w.impl_->size = size;
  w.impl_->buffer_at = size;
  w.impl_->writeback_from = size;
  return w;
}

const std::filesystem::path& PackWriter::path() const { return impl_->path; }
uint64_t PackWriter::size() const { return impl_->size; }

PackRecordInfo PackWriter::append(RecordKind kind, const Hash& hash, uint64_t raw_size, std::string_view stored) {
  return append_streamed(kind, hash, raw_size, [&](const std::function<void(std::string_view)>& out) { out(stored); });
}

PackRecordInfo PackWriter::append_streamed(
    RecordKind kind, const Hash& plain_hash, uint64_t raw_size,
    const std::function<void(const std::function<void(std::string_view)>&)>& plain_produce) {
  Impl& w = *impl_;
  const Hash hash = w.keys ? w.keys->name(plain_hash) : plain_hash;
  std::function<void(const std::function<void(std::string_view)>&)> sealed_produce;
  if (w.keys) {
    sealed_produce = [&](const std::function<void(std::string_view)>& out) {
      std::string nonce = random_nonce();
      GcmStream gcm(GcmStream::Direction::encrypt, *w.keys->seal_key, nonce, seal_aad(kind, hash, raw_size));
      out(nonce);
      std::string sealed;
      plain_produce([&](std::string_view piece) {
        sealed.clear();
        gcm.update(piece, sealed);
        out(sealed);
      });
      out(gcm.finish_encrypt());
    };
  }
  const auto& produce = w.keys ? sealed_produce : plain_produce;
  const uint64_t at = w.size;
  uint64_t stored = 0;
  // The record stays in the buffer while it fits; else what is buffered is
  // written out and the rest of the record goes straight to the file.
  bool buffered = true;
  try {
    if (w.buffer.capacity() < kWriteBuffer) w.buffer.reserve(kWriteBuffer);
    w.buffer.append(kRecordHeaderSize, '\0');  // the header, filled in below
    produce([&](std::string_view piece) {
      if (buffered && w.buffer.size() + piece.size() > kWriteBuffer) {
        w.flush();
        buffered = false;
      }
      if (buffered) w.buffer.append(piece);
      else pwrite_full(w.fd.get(), piece.data(), piece.size(), at + kRecordHeaderSize + stored, w.path);
      stored += piece.size();
    });
    std::string header = encode_record_header(kind, hash, raw_size, stored);
    if (buffered) {
      std::memcpy(w.buffer.data() + (at - w.buffer_at), header.data(), header.size());
    } else {
      pwrite_full(w.fd.get(), header.data(), header.size(), at, w.path);
      w.buffer_at = at + kRecordHeaderSize + stored;
      w.start_writeback();
    }
    w.size = at + kRecordHeaderSize + stored;
    if (w.buffer.size() >= kWriteBuffer / 2) w.flush();
  } catch (...) {
    truncate(at);
    throw;
  }
  PackRecordInfo info;
  info.kind = kind;
  info.hash = hash;
  info.offset = at;
  info.record_size = kRecordHeaderSize + stored;
  info.raw_size = raw_size;
  info.stored_size = stored;
  return info;
}

void PackWriter::sync() {
  impl_->flush();
  fsync_fd(impl_->fd.get(), impl_->path);
}

void PackWriter::truncate(uint64_t size) noexcept {
  Impl& w = *impl_;
  if (size >= w.buffer_at && size - w.buffer_at <= w.buffer.size()) {
    // Only buffered bytes go; the file may hold a partly failed write past buffer_at.
    w.buffer.resize(size - w.buffer_at);
    if (w.fd.get() >= 0 && ::ftruncate(w.fd.get(), static_cast<off_t>(w.buffer_at)) == 0) w.size = size;
    return;
  }
  w.buffer.clear();
  if (w.fd.get() >= 0 && ::ftruncate(w.fd.get(), static_cast<off_t>(size)) == 0) {
    w.size = size;
    w.buffer_at = size;
    w.writeback_from = std::min(w.writeback_from, size);
  }
}

// ---- PackReader --------------------------------------------------------------

struct PackReader::Impl {
  std::filesystem::path path;
  Fd fd;
  uint64_t pack_id = 0;
  uint64_t file_size = 0;
  uint64_t pos = kPackHeaderSize;
  std::optional<PackRecordInfo> last;
};

PackReader::PackReader(const std::filesystem::path& path, const std::filesystem::path& root)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->fd = open_file(path, O_RDONLY, root);
  impl_->file_size = file_size_of(impl_->fd.get(), path);
  char h[kPackHeaderSize];
  size_t got = pread_full(impl_->fd.get(), h, sizeof h, 0, path);
  ErrorWhere where{.file = path.string()};
  if (got < sizeof h || std::memcmp(h, kPackMagic, 8) != 0)
    throw Error(ErrorKind::corrupt, "not a pack file (no pack header)", Retry::never, where);
  if (get_le(h + 28, 4) != crc32c(std::string_view(h, 28)))
    throw Error(ErrorKind::corrupt, "pack header checksum mismatch", Retry::never, where);
  uint64_t version = get_le(h + 8, 4);
  if (version != kPackVersion)
    throw Error(ErrorKind::format, fmt::format("pack format version {} is not supported", version), Retry::never,
                where);
  impl_->pack_id = get_le(h + 16, 8);
}

PackReader::~PackReader() = default;
PackReader::PackReader(PackReader&&) noexcept = default;
PackReader& PackReader::operator=(PackReader&&) noexcept = default;

uint64_t PackReader::pack_id() const { return impl_->pack_id; }
uint64_t PackReader::file_size() const { return impl_->file_size; }

std::optional<PackRecordInfo> PackReader::next() {
  impl_->last.reset();
  uint64_t at = impl_->pos;
  if (at == impl_->file_size) return std::nullopt;
  if (impl_->file_size - at < kRecordHeaderSize)
    corrupt_record(impl_->path, at,
                   fmt::format("{} bytes at the end are not a whole record header (torn tail)", impl_->file_size - at));
  char h[kRecordHeaderSize];
  if (pread_full(impl_->fd.get(), h, sizeof h, at, impl_->path) < sizeof h)
    corrupt_record(impl_->path, at, "the file ended while reading (torn tail)");
  auto info = parse_record_header(h, at, impl_->file_size, impl_->path);
  impl_->pos = at + info.record_size;
  impl_->last = info;
  return info;
}

std::string PackReader::read_payload() {
  if (!impl_->last) throw Error(ErrorKind::internal, "PackReader::read_payload without a current record");
  auto& info = *impl_->last;
  std::string out(info.stored_size, '\0');
  if (pread_full(impl_->fd.get(), out.data(), out.size(), info.offset + kRecordHeaderSize, impl_->path) < out.size())
    corrupt_record(impl_->path, info.offset, "the file ended while reading the payload", to_hex(info.hash));
  return out;
}

// ---- decoding ----------------------------------------------------------------

void decode_payload_to(const PackRecordInfo& info, std::string_view stored, const std::filesystem::path& file,
                       const ByteSink& out, const RecordKeys* keys) {
  if (stored.size() != info.stored_size)
    corrupt_record(file, info.offset, "payload size differs from its header", to_hex(info.hash));
  if (keys) {
    // The whole payload is at hand: opened at once (its tag checked before
    // any byte is decoded), then decoded as a plain one.
    std::string frame = open_payload(info, stored, file, *keys);
    PackRecordInfo inner = info;
    inner.stored_size = frame.size();
    decode_frame_in_memory(inner, frame, file, out, keys);
    return;
  }
  size_t at = 0;
  stream_decode(info,
                [&](char* buf, size_t n) {
                  n = std::min(n, stored.size() - at);
                  std::memcpy(buf, stored.data() + at, n);
                  at += n;
                  return n;
                },
                file, out, keys);
}

std::string open_payload(const PackRecordInfo& info, std::string_view stored, const std::filesystem::path& file,
                         const RecordKeys& keys) {
  if (info.stored_size < kSealOverhead || stored.size() != info.stored_size)
    corrupt_record(file, info.offset, "a sealed payload shorter than 28 bytes, or not as long as its header says",
                   to_hex(info.hash));
  std::string_view body = stored.substr(kGcmNonceSize, stored.size() - kSealOverhead);
  std::string frame(body.size(), '\0');
  if (!keys.seal_key->open(stored.substr(0, kGcmNonceSize), seal_aad(info.kind, info.hash, info.raw_size), body,
                           stored.substr(stored.size() - kGcmTagSize), frame.data()))
    corrupt_record(file, info.offset, "the sealed payload does not authenticate (damaged, or another key)",
                   to_hex(info.hash));
  return frame;
}

std::string decode_opened_payload(const PackRecordInfo& info, std::string_view frame,
                                  const std::filesystem::path& file, const RecordKeys& keys) {
  if (info.raw_size > kMaxObjectInMemory) return decode_payload(info, {}, file);  // refuses it, naming the record
  PackRecordInfo inner = info;
  inner.stored_size = frame.size();
  std::string out;
  out.reserve(static_cast<size_t>(std::min<uint64_t>(info.raw_size, 1u << 20)));
  decode_frame_in_memory(inner, frame, file, [&](std::string_view piece) { out.append(piece); }, &keys);
  return out;
}

std::string decode_payload(const PackRecordInfo& info, std::string_view stored, const std::filesystem::path& file,
                           const RecordKeys* keys) {
  if (info.raw_size > kMaxObjectInMemory)
    corrupt_record(file, info.offset,
                   fmt::format("the record claims {} bytes, more than the {} a message may have to be held in memory",
                               info.raw_size, kMaxObjectInMemory),
                   to_hex(info.hash));
  std::string out;
  out.reserve(static_cast<size_t>(std::min<uint64_t>(info.raw_size, 1u << 20)));
  decode_payload_to(info, stored, file, [&](std::string_view piece) { out.append(piece); }, keys);
  return out;
}

namespace {

// Opens the record at `offset`, checks its header against what is expected.
PackRecordInfo open_record(Fd& fd, const std::filesystem::path& file, uint64_t offset, RecordKind kind,
                           const Hash& expected, std::optional<uint64_t> raw_size, const std::filesystem::path& root) {
  std::string hex = kind == RecordKind::group ? std::string() : to_hex(expected);
  try {
    fd = open_file(file, O_RDONLY, root);
  } catch (const Error& e) {
    throw e.with({.hash = hex});
  }
  uint64_t size = file_size_of(fd.get(), file);
  if (offset < kPackHeaderSize || offset > size || size - offset < kRecordHeaderSize)
    corrupt_record(file, offset, "the record lies outside the pack file", hex);
  char h[kRecordHeaderSize];
  if (pread_full(fd.get(), h, sizeof h, offset, file) < sizeof h)
    corrupt_record(file, offset, "the file ended while reading the record header", hex);
  auto info = parse_record_header(h, offset, size, file, hex);
  if (info.kind != kind)
    corrupt_record(file, offset,
                   kind == RecordKind::object    ? "the record is not an object"
                   : kind == RecordKind::journal ? "the record is not a journal"
                                                 : "the record is not a group",
                   hex);
  if (kind == RecordKind::group) {
    // A group is found by its place; its own hash is checked as it decodes.
    if (info.raw_size > kMaxGroupRaw)
      corrupt_record(file, offset, fmt::format("a group record of {} bytes (at most {})", info.raw_size, kMaxGroupRaw));
    return info;
  }
  if (info.hash != expected)
    corrupt_record(file, offset, "the record holds object " + to_hex(info.hash) + ", not the expected one", hex);
  if (raw_size && info.raw_size != *raw_size)
    corrupt_record(file, offset, fmt::format("the record holds {} bytes, the index says {}", info.raw_size, *raw_size),
                   hex);
  return info;
}

}  // namespace

std::string read_record(const std::filesystem::path& file, uint64_t offset, const Hash& expected,
                        const std::filesystem::path& root) {
  return read_record(file, offset, RecordKind::object, expected, root);
}

std::string read_record(const std::filesystem::path& file, uint64_t offset, RecordKind kind, const Hash& expected,
                        const std::filesystem::path& root, const RecordKeys* keys) {
  Fd fd;
  auto info = open_record(fd, file, offset, kind, expected, std::nullopt, root);
  if (info.raw_size > kMaxObjectInMemory) decode_payload(info, {}, file);  // refuses it, naming the record
  std::string stored(info.stored_size, '\0');
  if (pread_full(fd.get(), stored.data(), stored.size(), offset + kRecordHeaderSize, file) < stored.size())
    corrupt_record(file, offset, "the file ended while reading the payload", to_hex(expected));
  return decode_payload(info, stored, file, keys);
}

void read_record_to(const std::filesystem::path& file, uint64_t offset, RecordKind kind, const Hash& expected,
                    std::optional<uint64_t> raw_size, const std::filesystem::path& root, const ByteSink& out,
                    const RecordKeys* keys) {
  Fd fd;
  auto info = open_record(fd, file, offset, kind, expected, raw_size, root);
  uint64_t at = offset + kRecordHeaderSize;
  stream_decode(info,
                [&](char* buf, size_t n) {
                  size_t got = pread_full(fd.get(), buf, n, at, file);
                  at += got;
                  return got;
                },
                file, out, keys);
}

// ---- group records -------------------------------------------------------------

void GroupBuilder::add(const Hash& hash, std::string_view bytes) {
  if (table_.empty()) buffer_.assign(kTableRoom, '\0');  // a new group: room for its table
  table_.emplace_back(hash, bytes.size());
  buffer_.append(bytes);
}

std::vector<GroupMember> GroupBuilder::table() const {
  std::vector<GroupMember> out;
  out.reserve(table_.size());
  uint64_t at = 4 + 40 * table_.size();
  for (auto& [hash, size] : table_) {
    out.push_back({hash, at, size});
    at += size;
  }
  return out;
}

std::string_view GroupBuilder::finish_in_place() {
  if (table_.empty()) return {};
  size_t table = 4 + 40 * table_.size();
  size_t start = 0;
  if (table <= kTableRoom) start = kTableRoom - table;
  else buffer_.insert(0, table - kTableRoom, '\0');  // more members than the room holds
  char* p = buffer_.data() + start;
  put_le(p, table_.size(), 4);
  p += 4;
  for (auto& [hash, size] : table_) {
    std::memcpy(p, hash.data(), hash.size());
    put_le(p + hash.size(), size, 8);
    p += 40;
  }
  table_.clear();
  return std::string_view(buffer_).substr(start);
}

std::string GroupBuilder::finish() { return std::string(finish_in_place()); }

namespace {

// The table at the start of a group payload; `total` is the payload's size
// (the sizes must add up to it). `raw` holds at least the table.
std::vector<GroupMember> parse_group_table(std::string_view raw, uint64_t total, const std::filesystem::path& file,
                                           uint64_t offset) {
  if (raw.size() < 4) corrupt_record(file, offset, "a group payload without its member count");
  uint64_t count = get_le(raw.data(), 4);
  if (count == 0 || count > kMaxGroupMembers)
    corrupt_record(file, offset, fmt::format("a group of {} members (1 to {})", count, kMaxGroupMembers));
  uint64_t table = 4 + 40 * count;
  if (raw.size() < table || total < table) corrupt_record(file, offset, "the group's member table is cut short");
  std::vector<GroupMember> out;
  out.reserve(count);
  uint64_t at = table;
  for (uint64_t i = 0; i < count; ++i) {
    const char* e = raw.data() + 4 + 40 * i;
    GroupMember m;
    std::memcpy(m.hash.data(), e, 32);
    m.size = get_le(e + 32, 8);
    m.offset = at;
    if (m.size > total - at) corrupt_record(file, offset, "the group's members run past its payload");
    at += m.size;
    out.push_back(m);
  }
  if (at != total) corrupt_record(file, offset, "the group's members do not fill its payload");
  return out;
}

}  // namespace

std::vector<GroupMember> parse_group(std::string_view raw, const std::filesystem::path& file, uint64_t offset) {
  return parse_group_table(raw, raw.size(), file, offset);
}

std::vector<GroupMember> decode_group_table(const PackRecordInfo& info, std::string_view stored,
                                            const std::filesystem::path& file, const RecordKeys* keys) {
  if (info.kind != RecordKind::group) corrupt_record(file, info.offset, "the record is not a group");
  if (info.raw_size > kMaxGroupRaw)
    corrupt_record(file, info.offset, fmt::format("a group record of {} bytes (at most {})", info.raw_size, kMaxGroupRaw));
  if (stored.size() != info.stored_size) corrupt_record(file, info.offset, "payload size differs from its header");
  // A sealed payload is opened piece by piece, only as far as the table
  // reaches; its tag is not checked here: the members' bytes are only ever
  // taken from a whole payload opened and checked by decode_payload.
  std::optional<GcmStream> gcm;
  std::string_view sealed;
  std::string chunk;
  if (keys) {
    if (stored.size() < kSealOverhead) corrupt_record(file, info.offset, "a sealed payload shorter than 28 bytes");
    gcm.emplace(GcmStream::Direction::decrypt, *keys->seal_key, stored.substr(0, kGcmNonceSize),
                seal_aad(info.kind, info.hash, info.raw_size));
    sealed = stored.substr(kGcmNonceSize, stored.size() - kSealOverhead);
  }
  FrameDCtx frame_ctx;
  ZSTD_DCtx* dctx = frame_ctx.get();
  std::string head;
  std::string out_buf(4096, '\0');
  ZSTD_inBuffer in{stored.data(), keys ? 0 : stored.size(), 0};
  auto refill = [&] {
    if (!keys || sealed.empty() || in.pos < in.size) return;
    std::string_view piece = sealed.substr(0, 16384);
    sealed.remove_prefix(piece.size());
    chunk.clear();
    gcm->update(piece, chunk);
    in = ZSTD_inBuffer{chunk.data(), chunk.size(), 0};
  };
  uint64_t need = 4;
  while (head.size() < need) {
    refill();
    ZSTD_outBuffer o{out_buf.data(), out_buf.size(), 0};
    size_t rc = ZSTD_decompressStream(dctx, &o, &in);
    if (ZSTD_isError(rc))
      corrupt_record(file, info.offset, std::string("payload does not decompress: ") + ZSTD_getErrorName(rc));
    head.append(out_buf.data(), o.pos);
    if (head.size() >= 4 && need == 4) {
      uint64_t count = get_le(head.data(), 4);
      if (count == 0 || count > kMaxGroupMembers)
        corrupt_record(file, info.offset, fmt::format("a group of {} members (1 to {})", count, kMaxGroupMembers));
      need = 4 + 40 * count;
      if (need > info.raw_size) corrupt_record(file, info.offset, "the group's member table is cut short");
    }
    if (head.size() < need && (rc == 0 || (o.pos == 0 && in.pos == in.size && sealed.empty())))
      corrupt_record(file, info.offset, "the group's member table is cut short");
  }
  return parse_group_table(head, info.raw_size, file, info.offset);
}

std::string_view group_member(std::string_view payload, uint64_t member_offset, uint64_t size, const Hash& hash,
                              const std::filesystem::path& file, uint64_t offset) {
  if (member_offset > payload.size() || size > payload.size() - member_offset)
    corrupt_record(file, offset,
                   fmt::format("the index places the object at {}+{} of a group of {} bytes", member_offset, size,
                               payload.size()),
                   to_hex(hash));
  std::string_view bytes = payload.substr(member_offset, size);
  if (sha256(bytes) != hash) corrupt_record(file, offset, "SHA-256 of the object in the group does not match", to_hex(hash));
  return bytes;
}

std::string read_group(const std::filesystem::path& file, uint64_t offset, const std::filesystem::path& root,
                       const RecordKeys* keys) {
  Fd fd;
  auto info = open_record(fd, file, offset, RecordKind::group, Hash{}, std::nullopt, root);
  std::string stored(info.stored_size, '\0');
  if (pread_full(fd.get(), stored.data(), stored.size(), offset + kRecordHeaderSize, file) < stored.size())
    corrupt_record(file, offset, "the file ended while reading the payload");
  return decode_payload(info, stored, file, keys);
}

std::string seal_payload(const RecordKeys& keys, RecordKind kind, const Hash& name, uint64_t raw_size,
                         std::string_view frame) {
  std::string out = random_nonce();
  GcmStream gcm(GcmStream::Direction::encrypt, *keys.seal_key, out, seal_aad(kind, name, raw_size));
  gcm.update(frame, out);
  out += gcm.finish_encrypt();
  return out;
}

Hash RecordKeys::name(const Hash& plain) const {
  std::string mac = name_key->mac(std::string_view(reinterpret_cast<const char*>(plain.data()), plain.size()));
  Hash out;
  std::memcpy(out.data(), mac.data(), out.size());
  return out;
}

std::string zstd_version() { return ZSTD_versionString(); }

}  // namespace imapstage::archive

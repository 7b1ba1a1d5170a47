// Pack files: append-only, self-describing containers of message objects.
// The normative byte layout is in archive-format/FORMAT.md ("Pack files");
// this is the only code that reads or writes it (the only place, besides
// archive.cpp, that touches zstd).
//
// A pack is a file header followed by records. Each record carries the
// object's hash, its raw and stored sizes and a header checksum, so the index
// can be rebuilt from the packs alone and a torn tail is recognised.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "archive-format/hash.h"

namespace imapstage {
class HmacKey;  // common/aead.h
class GcmKey;   // common/aead.h
}  // namespace imapstage

namespace imapstage::archive {

// What a record holds.
enum class RecordKind : uint8_t {
  object = 1,   // a message's raw bytes; `hash` is its content address
  journal = 2,  // index changes of one committed batch (accounts, folders, messages,
                // appends), so the index can be rebuilt from the packs alone
  group = 3,    // several small objects compressed together (format version 3);
                // `hash` is the SHA-256 of the whole group payload
};

// What a record header says about its payload.
struct PackRecordInfo {
  RecordKind kind = RecordKind::object;
  Hash hash{};               // SHA-256 of the raw (uncompressed) bytes
  uint64_t offset = 0;       // of the record's first byte in the pack
  uint64_t record_size = 0;  // header + payload (+ any trailer): the whole record
  uint64_t raw_size = 0;     // uncompressed size
  uint64_t stored_size = 0;  // payload size as stored (compressed)
};

// Sizes of the fixed parts (FORMAT.md, "Pack files").
inline constexpr uint64_t kPackHeaderSize = 32;
inline constexpr uint64_t kRecordHeaderSize = 64;
// Readers reject records claiming more raw bytes than this (FORMAT.md).
inline constexpr uint64_t kMaxRawSize = 1ull << 40;
// The largest object decoded into memory (decode_payload, read_record,
// Archive::read_object); larger ones can only be streamed (the *_to calls).
inline constexpr uint64_t kMaxObjectInMemory = 1ull << 30;

// The keys that seal the records of an encrypted archive (FORMAT.md,
// "Encryption"). A record header then names its content by `name(sha256)`,
// a keyed hash, and its payload is the zstd frame sealed with AES-256-GCM:
// 12-byte nonce, ciphertext, 16-byte tag, the associated data binding it to
// its header (kind, name, raw size). Functions below that take `keys` work on
// plain records when it is null.
struct RecordKeys {
  std::shared_ptr<const HmacKey> name_key;  // HMAC-SHA-256 key of record names (K_name)
  std::shared_ptr<const GcmKey> seal_key;   // AES-256-GCM key of payloads (K_rec)
  // The name a record header carries for content whose SHA-256 is `plain`.
  Hash name(const Hash& plain) const;
};
// What sealing adds to a payload: the nonce and the tag.
inline constexpr uint64_t kSealOverhead = 28;
// The sealed form of a stored payload `frame` (a zstd frame of `raw_size`
// bytes) for a record of `kind` whose header names it `name`: a random
// nonce, the ciphertext, the tag (as PackWriter writes it with keys).
std::string seal_payload(const RecordKeys& keys, RecordKind kind, const Hash& name, uint64_t raw_size,
                         std::string_view frame);

// Receives decoded bytes piece by piece (at most about 128 KiB at a time).
using ByteSink = std::function<void(std::string_view)>;

// A compressed payload in a heap buffer of exactly its size. Move-only.
class CompressedBytes {
 public:
  CompressedBytes() = default;
  std::string_view view() const { return {data_.get(), size_}; }
  size_t size() const { return size_; }

 private:
  friend class Compressor;
  struct Free {
    void operator()(char* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<char, Free> data_;
  size_t size_ = 0;
};

// Compresses record payloads with zstd. Move-only; owns its compression
// context. Not thread-safe: one per writing thread.
class Compressor {
 public:
  explicit Compressor(int level);
  ~Compressor();
  Compressor(Compressor&&) noexcept;
  Compressor& operator=(Compressor&&) noexcept;
  // One zstd frame of `raw` (content size in the frame header).
  std::string compress(std::string_view raw);
  // The same frame, without copying: the worst-case output buffer is never
  // zero-filled and is shrunk in place to the frame's size.
  CompressedBytes compress_bytes(std::string_view raw);
  // The same frame, handed to `out` in pieces of at most about 128 KiB as it
  // is made: no buffer for the whole frame. `out` may throw (the frame is then
  // abandoned and the context stays usable).
  void compress_to(std::string_view raw, const std::function<void(std::string_view)>& out);
  // The same frame made from pieces, for an object too large to hold:
  // start_frame() with the exact raw size to come (the frame header carries
  // it), add() each piece, then end_frame(). Output goes to `out` in pieces
  // as it is made. A failure abandons the frame (the context stays usable).
  void start_frame(uint64_t raw_size);
  void add(std::string_view raw, const ByteSink& out);
  void end_frame(const ByteSink& out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One object too large to hold in memory, taken piece by piece as it arrives
// (a message body off the network): its SHA-256 and one zstd frame of it are
// made as the pieces pass, and the frame is kept in an unnamed temporary file
// (O_TMPFILE) in `dir`, which has no name in the directory and is gone once
// the spool is destroyed or the process ends. With `sealed` (an encrypted
// archive) the file holds the frame encrypted under a random key that only
// this object knows. Memory: zstd's context and buffers (a few MiB at most),
// whatever the object's size. Move-only.
class FrameSpool {
 public:
  // An object of exactly `raw_size` bytes (the frame header carries the
  // size). Throws Error(io) if the temporary file cannot be made.
  FrameSpool(const std::filesystem::path& dir, uint64_t raw_size, int zstd_level, bool sealed);
  ~FrameSpool();
  FrameSpool(FrameSpool&&) noexcept;
  FrameSpool& operator=(FrameSpool&&) noexcept;

  // The next piece of the object. Throws Error(internal) past raw_size,
  // Error(io) (Retry::later for a full disk) when the file cannot be written.
  void write(std::string_view raw);
  // Ends the object and returns its SHA-256. Throws Error(internal) unless
  // exactly raw_size bytes were written.
  Hash finish();
  uint64_t raw_size() const;
  // Bytes received so far.
  uint64_t received() const;
  // The frame's size (after finish()).
  uint64_t frame_size() const;
  // Hands the finished frame to `out` in pieces of at most 1 MiB, read back
  // from the file (and checked against its key when sealed: Error(corrupt)
  // after the last piece if it was changed). Any number of times.
  void replay(const std::function<void(std::string_view)>& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Appends records to one pack file. Move-only; owns its file descriptor.
// Small records are gathered in a write buffer (about 1 MiB) and written
// together: the file may lag behind size() until sync(). Nothing is durable,
// nor visible to readers of the file, before sync().
class PackWriter {
 public:
  // Creates a new pack holding only its file header, durably (the file and
  // its directory are fsynced; missing directories are created). Throws
  // Error(io) if it cannot, Error(io) also if the file already exists.
  // No symbolic link is followed from `root` (the archive directory) down;
  // directories are made owner-only (see open_in_archive).
  // With `keys`, every record appended is sealed (the pointer must outlive the writer).
  static PackWriter create(const std::filesystem::path& file, uint64_t pack_id,
                           const std::filesystem::path& root = {}, const RecordKeys* keys = nullptr);
  // Opens an existing pack to append after its first `size` bytes; anything
  // past them is truncated away (and the truncation made durable). Refuses
  // a link, a special file or a file with other hard links (Error(corrupt)).
  static PackWriter open(const std::filesystem::path& file, uint64_t size, const std::filesystem::path& root = {},
                         const RecordKeys* keys = nullptr);
  ~PackWriter();
  PackWriter(PackWriter&&) noexcept;
  PackWriter& operator=(PackWriter&&) noexcept;

  const std::filesystem::path& path() const;
  uint64_t size() const;  // bytes written so far, header included

  // Writes one record (header + `stored`, a zstd frame of `raw_size` bytes
  // hashing to `hash`) at the end. A sealing writer names it keys->name(hash)
  // and seals `stored`; the returned info then carries that name. On failure throws Error(io) (Retry::later
  // for disk full) and the size stays what it was.
  PackRecordInfo append(RecordKind kind, const Hash& hash, uint64_t raw_size, std::string_view stored);
  // The same record with its payload produced piece by piece: `produce` calls
  // its argument with each piece, in order; the header follows once the
  // payload's size is known. On failure (of a write or of `produce`) the size
  // stays what it was and the error is rethrown.
  PackRecordInfo append_streamed(RecordKind kind, const Hash& hash, uint64_t raw_size,
                                 const std::function<void(const std::function<void(std::string_view)>&)>& produce);
  // Makes everything written so far durable.
  void sync();
  // Cuts the file back to `size` bytes (best effort, never throws).
  void truncate(uint64_t size) noexcept;

 private:
  PackWriter();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- group records (FORMAT.md, "Group records") --------------------------------
// A group payload is `u32 count`, then `count` entries of (hash, u64 size),
// then the members' bytes back to back in table order.

// One object inside a group payload.
struct GroupMember {
  Hash hash{};
  uint64_t offset = 0;  // of its first byte in the (uncompressed) group payload
  uint64_t size = 0;
};

// Readers refuse group records larger than this (raw) or with more members.
inline constexpr uint64_t kMaxGroupRaw = 4ull << 20;
inline constexpr uint32_t kMaxGroupMembers = 65536;

// Gathers objects into one group payload.
class GroupBuilder {
 public:
  void add(const Hash& hash, std::string_view bytes);
  size_t members() const { return table_.size(); }
  // The size the payload will have (table included).
  uint64_t raw_size() const { return 4 + 40 * table_.size() + member_bytes(); }
  // The members so far (offsets as they will be in the payload).
  std::vector<GroupMember> table() const;
  // The payload, made in place in the builder's buffer (the members' bytes
  // are not copied again while the table fits the room kept before them):
  // valid until the next add(). The builder has no members afterwards.
  std::string_view finish_in_place();
  // The payload as a string of its own; the builder is empty afterwards.
  std::string finish();

 private:
  // Bytes kept before the members' bytes: the table of up to 512 members.
  static constexpr size_t kTableRoom = 4 + 40 * 512;
  uint64_t member_bytes() const { return table_.empty() ? 0 : buffer_.size() - kTableRoom; }
  std::vector<std::pair<Hash, uint64_t>> table_;
  // With members: kTableRoom bytes of room, then the members' bytes. Without:
  // nothing, or the payload finish_in_place() handed out.
  std::string buffer_;
};

// The members of a decoded group payload. Throws Error(corrupt) naming `file`
// and `offset` when the table is malformed or the sizes do not add up to the
// payload's size.
std::vector<GroupMember> parse_group(std::string_view raw, const std::filesystem::path& file, uint64_t offset);
// The member table of a group record, decoding only the start of its stored
// payload (the members' bytes are not checked: decode_payload does that).
std::vector<GroupMember> decode_group_table(const PackRecordInfo& info, std::string_view stored,
                                            const std::filesystem::path& file, const RecordKeys* keys = nullptr);
// The `size` bytes at `member_offset` of a decoded group payload (the group
// record at `offset` of `file`), checked to lie inside it and to hash to
// `hash`. Throws Error(corrupt) naming the file, the offset and `hash` otherwise.
std::string_view group_member(std::string_view payload, uint64_t member_offset, uint64_t size, const Hash& hash,
                              const std::filesystem::path& file, uint64_t offset);
// Reads the group record at `offset` of `file`, checks its header, frame,
// size (at most kMaxGroupRaw) and SHA-256, and returns its payload.
std::string read_group(const std::filesystem::path& file, uint64_t offset, const std::filesystem::path& root = {},
                       const RecordKeys* keys = nullptr);

// The file header of pack `pack_id` (kPackHeaderSize bytes).
std::string pack_header(uint64_t pack_id);
// Whether `file`, a pack file named for `pack_id`, is shorter than a pack
// header and holds a beginning of that header (nothing, at least): what a
// writer killed while creating the pack could leave before creation became
// atomic. Such a file holds no record, so it is no damage. Never follows a
// symbolic link below `root`; false when the file cannot be read.
bool is_unfinished_pack(const std::filesystem::path& file, uint64_t pack_id, const std::filesystem::path& root = {});

// CRC-32C (Castagnoli), as used by pack and record headers.
uint32_t crc32c(std::string_view bytes);

// The zstd library this process runs with, e.g. "1.5.4".
std::string zstd_version();

// Reads a pack file front to back. Move-only; owns its file descriptor.
class PackReader {
 public:
  // Opens `path` and checks the file header. Throws Error(io) if it cannot be
  // read, Error(corrupt) naming the file if the header is not a pack header
  // or the path is a link (from `root` down) or not a regular file.
  explicit PackReader(const std::filesystem::path& path, const std::filesystem::path& root = {});
  ~PackReader();
  PackReader(PackReader&&) noexcept;
  PackReader& operator=(PackReader&&) noexcept;

  uint64_t pack_id() const;    // from the file header
  uint64_t file_size() const;  // at open

  // The next record's header, or nullopt at a clean end of file. Throws
  // Error(corrupt) naming the file and offset when the bytes there are not a
  // whole, well-formed record (torn tail, damaged header); scanning cannot
  // continue past that point.
  std::optional<PackRecordInfo> next();

  // The stored (compressed) payload of the record last returned by next().
  std::string read_payload();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Decompresses a record's stored payload and checks its size and SHA-256
// against `info`. Throws Error(corrupt) naming `file`, the offset and the hash
// when anything does not match, or when the record claims more than
// kMaxObjectInMemory bytes. Memory: the real decoded size, never the claim.
// With `keys`, the payload is opened first and the content must hash to a
// SHA-256 whose keys->name is info.hash.
std::string decode_payload(const PackRecordInfo& info, std::string_view stored, const std::filesystem::path& file,
                           const RecordKeys* keys = nullptr);
// The same, streamed: `out` gets the decoded bytes as they come, before the
// size and hash are known to match (the call throws afterwards if they do
// not). Memory is bounded (zstd's window, at most 128 MiB, plus 128 KiB),
// whatever the record claims.
void decode_payload_to(const PackRecordInfo& info, std::string_view stored, const std::filesystem::path& file,
                       const ByteSink& out, const RecordKeys* keys = nullptr);

// A sealed payload opened whole, its tag checked: the zstd frame it holds
// (what a plain record's payload is). Throws Error(corrupt) naming the record
// when it is too short or does not authenticate.
std::string open_payload(const PackRecordInfo& info, std::string_view stored, const std::filesystem::path& file,
                         const RecordKeys& keys);
// decode_payload of a sealed record whose payload open_payload opened to
// `frame` (info is the record's own header: the content must hash to a
// SHA-256 whose keys.name is info.hash). Each byte is then decrypted once
// even when the frame is read twice (a group's table, then its members).
std::string decode_opened_payload(const PackRecordInfo& info, std::string_view frame,
                                  const std::filesystem::path& file, const RecordKeys& keys);

// Reads and decodes the one record at `offset` of `file` (random access, as
// Archive::read_object does); checks that its header names `expected` (the
// name in the header: with `keys`, keys->name of the content's SHA-256).
std::string read_record(const std::filesystem::path& file, uint64_t offset, const Hash& expected,
                        const std::filesystem::path& root = {});
// The same for a record of any kind (e.g. a journal record, for replay).
std::string read_record(const std::filesystem::path& file, uint64_t offset, RecordKind kind, const Hash& expected,
                        const std::filesystem::path& root = {}, const RecordKeys* keys = nullptr);
// The same, streamed from the file in pieces (bounded memory, see
// decode_payload_to); with `raw_size`, a header claiming another size is
// refused before anything is decoded.
void read_record_to(const std::filesystem::path& file, uint64_t offset, RecordKind kind, const Hash& expected,
                    std::optional<uint64_t> raw_size, const std::filesystem::path& root, const ByteSink& out,
                    const RecordKeys* keys = nullptr);

}  // namespace imapstage::archive

// Bundles: one file carrying an archive's changes since a base (the message
// objects new since then and the final account, folder and message records
// that changed), so an archive can be brought up to date across an air gap.
// The normative byte layout is archive-format/BUNDLE.md; this is the only
// code that reads or writes it.
//
//   bundle  = header entries trailer
//   header  = "IMSTBNDL" u32 version(1) u32 length JSON(length bytes)
//   entry   = u8 1 hash u64 raw_size u64 stored_size zstd-frame      (object)
//           | u8 2 hash u64 raw_size u64 stored_size zstd-frame      (index records: a journal payload)
//           | u8 0                                                   (end, exactly once, last)
//   trailer = "IMSTBEND" u64 body_size sha256(body) u8 signed 7×0 signature(64)   (120 bytes)
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "archive-format/archive.h"
#include "archive-format/pack.h"

namespace imapstage::bundle {

// Version 1: bundles of a whole archive. Version 2: bundles of some of its
// accounts (markers name them); written only for those, read with version 1.
// Version 3: sealed bundles of an encrypted archive (read only). Version 4:
// sealed bundles whose markers give accounts by keyed name (BUNDLE.md).
inline constexpr uint32_t kBundleVersion = 4;
inline constexpr uint64_t kTrailerSize = 120;

// Told how far a long step has come: `step` ("checking" the file's hash,
// "reading" or "applying" its entries, "writing" a bundle), bytes `done` of
// `total`; called often (per MiB or per entry), finally with done == total.
using Progress = std::function<void(const char* step, uint64_t done, uint64_t total)>;

// A state of an archive a bundle starts from or leads to (BUNDLE.md, "Markers").
struct Marker {
  std::string archive_id;                       // the source archive's id
  uint64_t journal_sequence = 0;                // its last journal record at that state
  std::string root;                             // manifest root (hex) at that state
  std::vector<std::pair<uint64_t, uint64_t>> packs;  // pack id -> committed size at that state
  // The accounts (names, sorted, unique) the state covers: `root` is over
  // their message records only. Empty: every account of the archive.
  // With keyed_accounts (sealed bundles since version 4) these are not the
  // names but their keyed names (archive::ArchiveKeys::keyed_account_name).
  std::vector<std::string> accounts;
  bool keyed_accounts = false;
  nlohmann::json to_json() const;
  static Marker from_json(const nlohmann::json& j);  // throws Error(corrupt) if malformed
  // The state of an archive with no message: what a full bundle starts from.
  static Marker empty();
};

// What the header of a bundle says.
struct BundleInfo {
  bool full = false;
  std::string created;  // ISO 8601 UTC
  Marker base;
  Marker head;
  uint64_t objects = 0;      // object entries
  uint64_t records = 0;      // account, folder and message records carried
  uint64_t raw_bytes = 0;    // sum of the objects' sizes
  bool signed_ = false;      // the trailer carries a signature
  uint64_t file_size = 0;
  uint64_t parts = 1;        // files it is split into (FILE.001, FILE.002, ...), 1 when not split
  // A bundle of an encrypted archive (version 3): its entries are sealed with
  // the archive's keys; this is the key id of its master key. "" when plain.
  std::string sealed_key_id;
  // verify: whether the entries were opened and re-hashed (false for a sealed
  // bundle checked without its keys: the structure, sizes and whole-file hash only).
  bool contents_checked = true;
};

struct CreateOptions {
  std::string out;                    // bundle file to write (0600, through FILE.tmp and a rename)
  std::optional<Marker> since;        // nullopt: a full bundle
  std::string sign_key;               // Ed25519 private key (PEM), or "" for none
  uint64_t split = 0;                 // > 0: parts FILE.001, FILE.002, ... of at most this many bytes
  // Only these accounts (by name; each must exist): their records and the
  // objects they need. Empty: the whole archive. An incremental bundle's base
  // must cover the same accounts.
  std::vector<std::string> accounts;
};

// Writes a bundle of `archive` (opened for writing, so no export changes it
// meanwhile) holding everything since `options.since`. Throws Error(usage)
// when the base was not made from this archive or is not a state of it.
BundleInfo create(archive::Archive& archive, const CreateOptions& options, const Progress& progress = {});

// The marker a --since argument names: a bundle file (its head; its whole-file
// hash is checked) or a marker JSON file as `bundle create --marker` writes it.
Marker read_marker(const std::string& path);

// A bundle FILE that does not exist but FILE.001 does is read as its parts
// FILE.001, FILE.002, ... concatenated; a missing part in between is refused
// by name, a missing last part as a truncated bundle.

// Checks the whole file offline: trailer, whole-file SHA-256, the signature
// (against `pubkey` when given; a signed bundle without a pubkey is reported
// as not checked), and every entry decoded and re-hashed. Throws
// Error(corrupt) naming the file and offset of the first fault, Error(usage)
// for a bad signature or a pubkey given for an unsigned bundle.
// A sealed bundle is opened with `keys` (an archive sharing the master key);
// without them only its structure is checked (contents_checked false).
BundleInfo verify(const std::string& file, const std::string& pubkey, const archive::RecordKeys* keys = nullptr,
                  const Progress& progress = {});

// What apply did.
struct ApplyResult {
  BundleInfo info;
  bool already_applied = false;  // the archive was at the bundle's head: nothing written
  uint64_t objects_written = 0;  // objects the archive did not have
  uint64_t records_written = 0;
};

// Puts message objects into an archive through objects-only commits (no
// journal record) of about 64 MiB of staged bytes each: durable, but no
// message refers to them yet, so the archive's contents (its manifest) do not
// change until the records that use them are committed. Bundle apply and
// merge copy objects this way before committing the records in one batch.
class ObjectSink {
 public:
  explicit ObjectSink(archive::Archive& archive);
  // Stores the object unless the archive (or this sink) has it; true when new.
  // REQUIRES: hash == sha256(raw).
  bool put(const archive::Hash& hash, std::string_view raw);
  // Commits what is staged. Throws Error(io) with nothing of it indexed.
  void commit();
  uint64_t written() const { return written_; }

 private:
  archive::Batch batch_;
  uint64_t written_ = 0;
};

// Applies a bundle to the archive in `dir` (created when missing or empty).
// Checks the file first (as verify); refuses (Error(usage)) when the
// archive's manifest root (over the bundle's accounts, for a bundle of some
// accounts: other accounts of the archive are left alone) is neither the
// bundle's base nor its head, naming both, or when an account id of the
// bundle is another account's in the archive. Objects are committed first (in batches), then every index record in
// one transaction, so an interrupted apply leaves the archive at its base and
// a second apply finishes it.
ApplyResult apply(const std::string& file, const std::string& dir, const std::string& pubkey,
                  const Progress& progress = {});

}  // namespace imapstage::bundle

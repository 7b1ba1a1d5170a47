// Encryption at rest (FORMAT.md, "Encryption"): the key file DIR/keys, its
// passphrase slots, and the keys derived from an archive's master key. The
// cryptography itself is in common/aead (OpenSSL).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "archive-format/index.h"
#include "archive-format/pack.h"

namespace imapstage::archive {

// The key file of an encrypted archive, beside FORMAT.
inline constexpr std::string_view kKeyFileName = "keys";

// scrypt cost of a key slot: N = 2^log_n, block size r, parallelism p.
// The default takes 128 MiB and about half a second to try a passphrase.
struct ScryptParams {
  unsigned log_n = 17;
  unsigned r = 8;
  unsigned p = 1;
};

// One passphrase that opens the master key.
struct KeySlot {
  uint32_t id = 0;          // 1, 2, ...; never reused within a key file
  ScryptParams kdf;
  std::string salt;         // 32 random bytes
  std::string wrapped;      // nonce, the master key sealed with AES-256-GCM under scrypt(passphrase), tag
  int64_t created = 0;      // unix seconds
};

struct KeyFile {
  std::string key_id;       // 32 hex digits naming the master key (HMAC of it: reveals nothing)
  std::vector<KeySlot> slots;
};

// The keys derived from an unlocked master key.
class ArchiveKeys {
 public:
  // REQUIRES: master.size() == 32.
  explicit ArchiveKeys(std::string master);
  ~ArchiveKeys();
  ArchiveKeys(const ArchiveKeys&) = delete;
  ArchiveKeys& operator=(const ArchiveKeys&) = delete;

  const RecordKeys& records() const { return records_; }
  const std::shared_ptr<const IndexKeys>& index() const { return index_; }
  // 32 hex digits: HMAC-SHA-256(master, "imapstage key id"), first 16 bytes.
  const std::string& key_id() const { return key_id_; }
  const std::string& master() const { return master_; }

  // Seals the text of a state file kept in the archive directory beside the
  // archive (batch/STATE.md: DIR/batches/*.json): AES-256-GCM under K_state
  // with a fresh random nonce, bound to `name`, the file's path below DIR
  // ("batches/export.json"), so a sealed file moved to another name does not open.
  std::string seal_state(std::string_view name, std::string_view text) const;
  // Opens what seal_state made for `name`. Throws Error(corrupt) when it does
  // not authenticate (damaged, another archive's key, or another file's).
  std::string open_state(std::string_view name, std::string_view sealed) const;
  // HMAC-SHA-256(K_iname, "account_names" 0x00 name key) in lower-case hex:
  // the account's keyed key in the index (FORMAT.md, "Sealed index values
  // and keyed keys"), which bundles use in place of its name.
  std::string keyed_account_name(std::string_view account) const;

 private:
  std::string master_;
  RecordKeys records_;
  std::shared_ptr<const IndexKeys> index_;
  std::string key_id_;
  std::string state_key_;  // K_state (raw: aead_seal takes the key itself)
};

// Whether DIR has a key file (is encrypted).
bool has_key_file(const std::filesystem::path& dir);
// Reads and checks DIR/keys. Throws Error(not_found) without one,
// Error(corrupt) naming the file when it is malformed.
KeyFile read_key_file(const std::filesystem::path& dir);
// Writes DIR/keys durably (temporary file, fsync, rename; owner-only).
void write_key_file(const std::filesystem::path& dir, const KeyFile& file);
// The key file's JSON text, as written.
std::string encode_key_file(const KeyFile& file);

// A new random master key (32 bytes).
std::string new_master_key();
// A slot opening `master` with `passphrase`. Throws Error(usage) for an empty passphrase.
KeySlot make_slot(uint32_t id, std::string_view master, std::string_view key_id, std::string_view passphrase,
                  const ScryptParams& params);
// The master key, from the first slot `passphrase` opens (its id in
// `slot_id`). Throws Error(auth) when no slot opens, naming `dir`.
std::string unlock_master(const KeyFile& file, std::string_view passphrase, const std::filesystem::path& dir,
                          uint32_t* slot_id = nullptr);

}  // namespace imapstage::archive

// Credentials of jobs at rest: each sealed (common/aead.h, AES-256-GCM) in
// its own file STATE_DIR/secrets/<job id> (the source password) or
// STATE_DIR/secrets/<job id>.target (the user's own password on the target)
// with the job id, the user and the slot as associated data, under a key only the daemon's user can read. A secret is
// in memory only while a job needs it; a wiped file is overwritten with zeros,
// synced and unlinked.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/aead.h"

namespace imapstage::serve {

// Reads the 32-byte key from `path`, or, when it does not exist and `create`,
// makes one (random, mode 0600, O_EXCL). Refuses (Error(usage), naming the
// file) a key that is not a regular file owned by this user with no access
// for group or others, or not 32 bytes long.
SecretString load_key(const std::filesystem::path& path, bool create);

// Which of a job's credentials: its source password, or its own password on the target.
enum class Slot { source, target };

class Vault {
 public:
  Vault(std::filesystem::path state_dir, SecretString key);
  // Seals `secret` for job `id` of `user`, replacing what was there (durably).
  void put(uint64_t id, const std::string& user, const std::string& secret, Slot slot = Slot::source);
  // The secret of job `id`; Error(not_found) when there is none, Error(corrupt)
  // when it does not open (another key, another job's file, damage).
  SecretString get(uint64_t id, const std::string& user, Slot slot = Slot::source) const;
  // Overwrites and removes both of the job's credentials; nothing for one that is not there.
  void erase(uint64_t id);
  std::filesystem::path path(uint64_t id, Slot slot = Slot::source) const;

 private:
  void erase_file(const std::filesystem::path& p);
  std::filesystem::path state_dir_;
  SecretString key_;
};

}  // namespace imapstage::serve

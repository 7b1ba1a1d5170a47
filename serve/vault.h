// Credentials of jobs at rest: each sealed (common/aead.h, AES-256-GCM) in
// its own file STATE_DIR/secrets/<job id> with the job id and the user as
// associated data, under a key only the daemon's user can read. A secret is
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

class Vault {
 public:
  Vault(std::filesystem::path state_dir, SecretString key);
  // Seals `secret` for job `id` of `user`, replacing what was there (durably).
  void put(uint64_t id, const std::string& user, const std::string& secret);
  // The secret of job `id`; Error(not_found) when there is none, Error(corrupt)
  // when it does not open (another key, another job's file, damage).
  SecretString get(uint64_t id, const std::string& user) const;
  // Overwrites and removes it; nothing when there is none.
  void erase(uint64_t id);
  std::filesystem::path path(uint64_t id) const;

 private:
  std::filesystem::path state_dir_;
  SecretString key_;
};

}  // namespace imapstage::serve

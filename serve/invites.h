// Invitations to the self-service page (serve/web.h): one per mailbox, a
// single-use link holding 32 random bytes (64 hex digits) of which only the
// SHA-256 is kept, in STATE_DIR/invites.json (mode 0600, rewritten
// crash-safely on every change like jobs.json). Accepting one (the right old
// password) marks it used and gives a second secret, the status page's, of
// which again only the hash is kept.
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace imapstage::serve {

struct Invite {
  std::string hash;         // SHA-256 (hex) of the link's token
  std::string user;         // the mailbox on the source server
  std::string target_user;  // where it goes on the target
  double created = 0;       // unix seconds
  double expires = 0;
  double used = 0;          // when it was accepted, 0: not yet
  uint64_t job = 0;         // the job it queued
  std::string status_hash;  // SHA-256 (hex) of the status page's token
  int failures = 0;         // wrong passwords given through it

  nlohmann::json to_json() const;
  static Invite from_json(const nlohmann::json& j);
};

// What creating one gives back, once: the tokens are not kept.
struct NewInvite {
  std::string user, target_user, token;
  double expires = 0;
};

// 64 hex digits of 32 random bytes.
std::string new_token();
// SHA-256 of `token` as 64 hex digits.
std::string token_hash(const std::string& token);

class InviteStore {
 public:
  // Loads STATE_DIR/invites.json (empty when missing). Throws Error(corrupt) naming it.
  explicit InviteStore(std::filesystem::path state_dir);

  // A new link for each user (an older unused one of the same user is
  // replaced: only the newest link works). Saved before returning.
  std::vector<NewInvite> create(const std::vector<std::pair<std::string, std::string>>& users,
                                std::chrono::seconds ttl);
  // The invitation of a link's token, if any.
  std::optional<Invite> find(const std::string& token) const;
  // The invitation whose status token this is, if any.
  std::optional<Invite> find_status(const std::string& status_token) const;
  // Marks the invitation of `token` used by `job`; returns the status
  // page's token, or nullopt when it was used or expired meanwhile.
  std::optional<std::string> accept(const std::string& token, uint64_t job);
  // Counts a wrong password given through the link.
  void failed(const std::string& token);
  std::vector<Invite> all() const;

 private:
  void save();  // under mutex_
  std::filesystem::path state_dir_;
  mutable std::mutex mutex_;
  std::vector<Invite> invites_;
};

}  // namespace imapstage::serve

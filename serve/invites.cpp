#include "serve/invites.h"

#include <algorithm>

#include "archive-format/hash.h"
#include "batch/state.h"
#include "common/aead.h"
#include "common/error.h"
#include "common/events.h"

namespace imapstage::serve {

namespace {
const char* kFile = "invites.json";
}

nlohmann::json Invite::to_json() const {
  return {{"hash", hash}, {"user", user}, {"target_user", target_user}, {"created", created}, {"expires", expires},
          {"used", used}, {"job", job}, {"status_hash", status_hash}, {"failures", failures}};
}

Invite Invite::from_json(const nlohmann::json& j) {
  Invite i;
  i.hash = j.at("hash").get<std::string>();
  i.user = j.at("user").get<std::string>();
  i.target_user = j.value("target_user", i.user);
  i.created = j.value("created", 0.0);
  i.expires = j.value("expires", 0.0);
  i.used = j.value("used", 0.0);
  i.job = j.value("job", uint64_t{0});
  i.status_hash = j.value("status_hash", "");
  i.failures = j.value("failures", 0);
  return i;
}

std::string new_token() {
  std::string raw = random_bytes(32);
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  wipe(raw);
  return out;
}

std::string token_hash(const std::string& token) { return archive::to_hex(archive::sha256(token)); }

InviteStore::InviteStore(std::filesystem::path state_dir) : state_dir_(std::move(state_dir)) {
  auto text = batch::read_state_file(state_dir_, state_dir_ / kFile, "invitations");
  if (!text) return;
  try {
    auto j = nlohmann::json::parse(*text);
    for (auto& i : j.at("invites")) invites_.push_back(Invite::from_json(i));
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::corrupt, std::string("invitations: ") + e.what(), Retry::never,
                {.file = (state_dir_ / kFile).string()});
  }
}

void InviteStore::save() {
  nlohmann::json list = nlohmann::json::array();
  for (auto& i : invites_) list.push_back(i.to_json());
  nlohmann::json j = {{"version", 1}, {"kind", "invites"}, {"invites", list}};
  batch::write_state_file(state_dir_, state_dir_ / kFile, j.dump(1) + "\n", "invitations");
}

std::vector<NewInvite> InviteStore::create(const std::vector<std::pair<std::string, std::string>>& users,
                                           std::chrono::seconds ttl) {
  std::lock_guard lock(mutex_);
  std::vector<NewInvite> out;
  double now = now_seconds();
  for (auto& [user, target] : users) {
    std::erase_if(invites_, [&](const Invite& i) { return i.user == user && i.used == 0; });
    NewInvite n{user, target.empty() ? user : target, new_token(), now + double(ttl.count())};
    Invite i;
    i.hash = token_hash(n.token);
    i.user = n.user;
    i.target_user = n.target_user;
    i.created = now;
    i.expires = n.expires;
    invites_.push_back(i);
    out.push_back(n);
  }
  save();
  return out;
}

std::optional<Invite> InviteStore::find(const std::string& token) const {
  std::string h = token_hash(token);
  std::lock_guard lock(mutex_);
  for (auto& i : invites_)
    if (i.hash == h) return i;
  return std::nullopt;
}

std::optional<Invite> InviteStore::find_status(const std::string& status_token) const {
  std::string h = token_hash(status_token);
  std::lock_guard lock(mutex_);
  for (auto& i : invites_)
    if (!i.status_hash.empty() && i.status_hash == h) return i;
  return std::nullopt;
}

std::optional<std::string> InviteStore::accept(const std::string& token, uint64_t job) {
  std::string h = token_hash(token);
  std::lock_guard lock(mutex_);
  for (auto& i : invites_) {
    if (i.hash != h) continue;
    double now = now_seconds();
    if (i.used != 0 || now >= i.expires) return std::nullopt;
    std::string status = new_token();
    i.used = now;
    i.job = job;
    i.status_hash = token_hash(status);
    save();
    return status;
  }
  return std::nullopt;
}

void InviteStore::failed(const std::string& token) {
  std::string h = token_hash(token);
  std::lock_guard lock(mutex_);
  for (auto& i : invites_)
    if (i.hash == h) {
      ++i.failures;
      save();
    }
}

std::vector<Invite> InviteStore::all() const {
  std::lock_guard lock(mutex_);
  return invites_;
}

}  // namespace imapstage::serve

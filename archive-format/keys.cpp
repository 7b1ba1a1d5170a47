#include "archive-format/keys.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <optional>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "archive-format/codec.h"
#include "archive-format/layout.h"
#include "common/aead.h"
#include "common/error.h"

namespace imapstage::archive {

namespace {

constexpr int kKeyFileVersion = 1;

std::string hex(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) out += fmt::format("{:02x}", c);
  return out;
}

std::optional<std::string> unhex(std::string_view text) {
  if (text.size() % 2) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < text.size(); i += 2) {
    int v = 0;
    for (int k = 0; k < 2; ++k) {
      char c = text[i + k];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return std::nullopt;
      v = v * 16 + d;
    }
    out.push_back(static_cast<char>(v));
  }
  return out;
}

std::string derive(std::string_view master, std::string_view label) { return hmac_sha256(master, label); }

// Associated data of a wrapped master key: binds it to its key file's key id and slot.
std::string slot_aad(std::string_view key_id, uint32_t slot) {
  return fmt::format("imapstage key slot {} {}", key_id, slot);
}

std::string slot_kek(std::string_view passphrase, const KeySlot& slot) {
  return scrypt(passphrase, slot.salt, slot.kdf.log_n, slot.kdf.r, slot.kdf.p, kAeadKeySize);
}

}  // namespace

ArchiveKeys::ArchiveKeys(std::string master) : master_(std::move(master)) {
  if (master_.size() != 32) throw Error(ErrorKind::internal, "a master key must be 32 bytes");
  auto prepared_mac = [&](const char* label) {
    std::string k = derive(master_, label);
    auto key = std::make_shared<const HmacKey>(k);
    wipe(k);
    return key;
  };
  auto prepared_gcm = [&](const char* label) {
    std::string k = derive(master_, label);
    auto key = std::make_shared<const GcmKey>(k);
    wipe(k);
    return key;
  };
  records_.name_key = prepared_mac("imapstage object name");
  records_.seal_key = prepared_gcm("imapstage record key");
  auto index = std::make_shared<IndexKeys>();
  index->name_key = prepared_mac("imapstage index name");
  index->seal_key = prepared_gcm("imapstage index key");
  index_ = index;
  key_id_ = hex(derive(master_, "imapstage key id").substr(0, 16));
  state_key_ = derive(master_, "imapstage state key");
}

ArchiveKeys::~ArchiveKeys() {
  wipe(master_);
  wipe(state_key_);
}

namespace {
std::string state_aad(std::string_view name) { return "imapstage state " + std::string(name); }
}  // namespace

std::string ArchiveKeys::seal_state(std::string_view name, std::string_view text) const {
  return aead_seal(state_key_, state_aad(name), text);
}

std::string ArchiveKeys::open_state(std::string_view name, std::string_view sealed) const {
  return aead_open(state_key_, state_aad(name), sealed);
}

std::string ArchiveKeys::keyed_account_name(std::string_view account) const {
  std::string in = Index::db_name(Index::account_names);
  in.push_back('\0');
  in += codec::name_key(account);
  return hex(index_->name_key->mac(in));
}

bool has_key_file(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::exists(dir / kKeyFileName, ec);
}

std::string encode_key_file(const KeyFile& file) {
  nlohmann::json slots = nlohmann::json::array();
  for (auto& s : file.slots)
    slots.push_back({{"slot", s.id},
                     {"kdf", "scrypt"},
                     {"log_n", s.kdf.log_n},
                     {"r", s.kdf.r},
                     {"p", s.kdf.p},
                     {"salt", hex(s.salt)},
                     {"wrapped", hex(s.wrapped)},
                     {"created", s.created}});
  nlohmann::json j = {{"imapstage-keys", kKeyFileVersion},
                      {"cipher", "aes-256-gcm"},
                      {"key_id", file.key_id},
                      {"slots", slots}};
  return j.dump(1) + "\n";
}

KeyFile read_key_file(const std::filesystem::path& dir) {
  auto path = dir / kKeyFileName;
  if (!check_in_archive(dir, path, false))
    throw Error(ErrorKind::not_found, "the archive has no key file", Retry::never, {.file = path.string()});
  Fd fd = open_in_archive(dir, path, O_RDONLY);
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) throw_io("cannot read", path.string(), errno);
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (1u << 20)) break;
  }
  auto bad = [&](const std::string& what) {
    return Error(ErrorKind::corrupt, "malformed key file: " + what, Retry::never, {.file = path.string()});
  };
  KeyFile out;
  try {
    auto j = nlohmann::json::parse(text);
    if (j.value("imapstage-keys", 0) != kKeyFileVersion) throw bad("unknown version");
    if (j.value("cipher", "") != "aes-256-gcm") throw bad("unknown cipher");
    out.key_id = j.at("key_id").get<std::string>();
    if (out.key_id.size() != 32 || !unhex(out.key_id)) throw bad("bad key_id");
    for (auto& s : j.at("slots")) {
      KeySlot slot;
      slot.id = s.at("slot").get<uint32_t>();
      if (s.at("kdf").get<std::string>() != "scrypt") throw bad("unknown kdf");
      slot.kdf.log_n = s.at("log_n").get<unsigned>();
      slot.kdf.r = s.at("r").get<unsigned>();
      slot.kdf.p = s.at("p").get<unsigned>();
      if (slot.kdf.log_n < 1 || slot.kdf.log_n > 30 || slot.kdf.r < 1 || slot.kdf.r > 64 || slot.kdf.p < 1 ||
          slot.kdf.p > 64)
        throw bad("scrypt parameters out of range");
      auto salt = unhex(s.at("salt").get<std::string>());
      auto wrapped = unhex(s.at("wrapped").get<std::string>());
      if (!salt || salt->size() < 16 || !wrapped || wrapped->size() != kGcmNonceSize + 32 + kGcmTagSize)
        throw bad("bad salt or wrapped key");
      slot.salt = *salt;
      slot.wrapped = *wrapped;
      slot.created = s.value("created", int64_t{0});
      out.slots.push_back(std::move(slot));
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw bad(e.what());
  }
  return out;
}

void write_key_file(const std::filesystem::path& dir, const KeyFile& file) {
  write_file_durably(dir / kKeyFileName, encode_key_file(file));
}

std::string new_master_key() { return random_bytes(32); }

KeySlot make_slot(uint32_t id, std::string_view master, std::string_view key_id, std::string_view passphrase,
                  const ScryptParams& params) {
  if (passphrase.empty()) throw Error(ErrorKind::usage, "an empty passphrase");
  KeySlot slot;
  slot.id = id;
  slot.kdf = params;
  slot.salt = random_bytes(32);
  slot.created = static_cast<int64_t>(std::time(nullptr));
  std::string kek = slot_kek(passphrase, slot);
  std::string nonce = random_bytes(kGcmNonceSize);
  GcmStream gcm(GcmStream::Direction::encrypt, kek, nonce, slot_aad(key_id, id));
  slot.wrapped = nonce;
  gcm.update(master, slot.wrapped);
  slot.wrapped += gcm.finish_encrypt();
  wipe(kek);
  return slot;
}

std::string unlock_master(const KeyFile& file, std::string_view passphrase, const std::filesystem::path& dir,
                          uint32_t* slot_id) {
  for (auto& slot : file.slots) {
    std::string kek = slot_kek(passphrase, slot);
    std::string_view w(slot.wrapped);
    GcmStream gcm(GcmStream::Direction::decrypt, kek, w.substr(0, kGcmNonceSize), slot_aad(file.key_id, slot.id));
    std::string master;
    gcm.update(w.substr(kGcmNonceSize, 32), master);
    wipe(kek);
    try {
      gcm.finish_decrypt(w.substr(kGcmNonceSize + 32));
    } catch (const Error&) {
      wipe(master);
      continue;
    }
    ArchiveKeys check(master);
    if (check.key_id() != file.key_id)
      throw Error(ErrorKind::corrupt, "the key file's key id does not match its master key", Retry::never,
                  {.file = (dir / kKeyFileName).string()});
    if (slot_id) *slot_id = slot.id;
    return master;
  }
  throw Error(ErrorKind::auth, "wrong passphrase: it opens none of the archive's key slots", Retry::never,
              {.file = dir.string()});
}

}  // namespace imapstage::archive

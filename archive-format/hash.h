// SHA-256 content addresses. The only place that touches OpenSSL's digest API.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace imapstage::archive {

// A SHA-256 digest: the content address of a message's raw bytes.
using Hash = std::array<uint8_t, 32>;

// 64 lower-case hex digits.
std::string to_hex(const Hash& hash);
// Parses 64 hex digits (either case); nullopt for anything else.
std::optional<Hash> hash_from_hex(std::string_view hex);

// The OpenSSL library this process runs with, e.g. "3.0.17".
std::string openssl_version();

// SHA-256 of `bytes` in one call.
Hash sha256(std::string_view bytes);

// Incremental SHA-256. Move-only; owns its OpenSSL context.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void update(std::string_view bytes);
  // Returns the digest; the object is reset and can hash again.
  Hash finish();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

}  // namespace imapstage::archive

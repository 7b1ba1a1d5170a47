// Authenticated encryption of small secrets at rest (AES-256-GCM through
// OpenSSL; the only file besides the hash and TLS wrappers that includes it).
//
// A sealed blob is: "ISA1" (4 bytes), a random 12-byte nonce, the ciphertext
// (as long as the plaintext), the 16-byte GCM tag. The associated data (not
// stored) binds a blob to its purpose (e.g. the job it belongs to): a blob
// moved to another job does not open.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace imapstage {

inline constexpr size_t kAeadKeySize = 32;

// Encrypts `plaintext` under `key` (kAeadKeySize bytes) with `aad` as
// associated data. Throws Error(internal) for a bad key size or an OpenSSL failure.
std::string aead_seal(std::string_view key, std::string_view aad, std::string_view plaintext);

// Decrypts a blob made by aead_seal with the same key and aad. Throws
// Error(corrupt) when it is malformed or does not authenticate (wrong key,
// wrong aad, changed bytes); nothing of the plaintext is returned then.
std::string aead_open(std::string_view key, std::string_view aad, std::string_view sealed);

// scrypt (RFC 7914) of `passphrase` with `salt`, N = 2^log_n, block size r,
// parallelism p, `length` bytes out, through OpenSSL 3's EVP_KDF "SCRYPT".
// Memory: about 128 * r * 2^log_n bytes. Throws Error(internal) if OpenSSL
// refuses the parameters or fails.
std::string scrypt(std::string_view passphrase, std::string_view salt, unsigned log_n, unsigned r, unsigned p,
                   size_t length);

// HMAC-SHA-256 of `data` under `key` (32 bytes out).
std::string hmac_sha256(std::string_view key, std::string_view data);

// An HMAC-SHA-256 key prepared for many messages (its pads hashed once):
// the same result as hmac_sha256, about five times faster for short data.
// Thread-safe after construction.
class HmacKey {
 public:
  explicit HmacKey(std::string_view key);
  ~HmacKey();
  HmacKey(const HmacKey&) = delete;
  HmacKey& operator=(const HmacKey&) = delete;
  // 32 bytes.
  std::string mac(std::string_view data) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// An AES-256-GCM key prepared once (its key schedule), for GcmStream.
// Thread-safe after construction.
class GcmKey {
 public:
  explicit GcmKey(std::string_view key);  // kAeadKeySize bytes
  ~GcmKey();
  GcmKey(const GcmKey&) = delete;
  GcmKey& operator=(const GcmKey&) = delete;

  // One-shot AES-256-GCM of a whole buffer under a 12-byte `nonce` with
  // `aad`: `in.size()` bytes to `out` (which may not overlap `in`) and the
  // 16-byte tag to `tag`. Each thread keeps a context keyed once per key, so
  // a call costs no allocation and no key schedule. Throws Error(internal).
  void seal(std::string_view nonce, std::string_view aad, std::string_view in, char* out, char* tag) const;
  // The inverse: decrypts `in` to `out` and returns whether `tag`
  // authenticates it (when false, `out` is zeroed and must not be used).
  [[nodiscard]] bool open(std::string_view nonce, std::string_view aad, std::string_view in, std::string_view tag,
                          char* out) const;

 private:
  friend class GcmStream;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint64_t id_;  // names this key in the threads' context caches (never reused)
};

inline constexpr size_t kGcmNonceSize = 12;
inline constexpr size_t kGcmTagSize = 16;

// AES-256-GCM over a stream of pieces with a caller-given 12-byte nonce and
// associated data, for payloads too large to hold at once. Move-only.
class GcmStream {
 public:
  enum class Direction { encrypt, decrypt };
  // Throws Error(internal) for a bad key or nonce size.
  GcmStream(Direction direction, std::string_view key, std::string_view nonce, std::string_view aad);
  // The same with a prepared key.
  GcmStream(Direction direction, const GcmKey& key, std::string_view nonce, std::string_view aad);
  ~GcmStream();
  GcmStream(GcmStream&&) noexcept;
  GcmStream& operator=(GcmStream&&) noexcept;
  // Appends the transformed `in` to `out` (as many bytes as `in`).
  void update(std::string_view in, std::string& out);
  // Encrypting: the 16-byte tag.
  std::string finish_encrypt();
  // Decrypting: throws Error(corrupt) unless `tag` authenticates everything passed
  // through update (which the caller must then discard).
  void finish_decrypt(std::string_view tag);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `n` bytes from OpenSSL's CSPRNG. Throws Error(internal) if it fails.
std::string random_bytes(size_t n);

// Overwrites the string's bytes (in a way the compiler keeps) and empties it.
void wipe(std::string& secret);

// A std::string holding a secret, wiped when destroyed or reassigned.
class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string value) : value_(std::move(value)) {}
  SecretString(const SecretString& other) : value_(other.value_) {}
  SecretString& operator=(const SecretString& other) {
    if (this != &other) {
      wipe(value_);
      value_ = other.value_;
    }
    return *this;
  }
  ~SecretString() { wipe(value_); }
  const std::string& get() const { return value_; }
  bool empty() const { return value_.empty(); }

 private:
  std::string value_;
};

}  // namespace imapstage

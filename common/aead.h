// Authenticated encryption of small secrets at rest (AES-256-GCM through
// OpenSSL; the only file besides the hash and TLS wrappers that includes it).
//
// A sealed blob is: "ISA1" (4 bytes), a random 12-byte nonce, the ciphertext
// (as long as the plaintext), the 16-byte GCM tag. The associated data (not
// stored) binds a blob to its purpose (e.g. the job it belongs to): a blob
// moved to another job does not open.
#pragma once

#include <cstddef>
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

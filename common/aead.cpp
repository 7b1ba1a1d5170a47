#include "common/aead.h"
#include "common/nonce.h"

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <vector>
#include <cstdint>
#include <memory>

#include "common/error.h"

namespace imapstage {

namespace {

constexpr std::string_view kMagic = "ISA1";
constexpr size_t kNonce = 12;
constexpr size_t kTag = 16;

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

Ctx new_ctx() {
  Ctx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) throw Error(ErrorKind::internal, "EVP_CIPHER_CTX_new failed");
  return ctx;
}

const unsigned char* bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }
unsigned char* bytes(std::string& s) { return reinterpret_cast<unsigned char*>(s.data()); }

void check_key(std::string_view key) {
  if (key.size() != kAeadKeySize) throw Error(ErrorKind::internal, "an AEAD key must be 32 bytes");
}

}  // namespace

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  if (n && RAND_bytes(bytes(out), static_cast<int>(n)) != 1) throw Error(ErrorKind::internal, "RAND_bytes failed");
  return out;
}

std::string random_nonce() {
  struct Pool {
    unsigned char bytes[4096 - 4096 % kNonce];
    size_t used = sizeof bytes;
    pid_t pid = 0;
    ~Pool() { OPENSSL_cleanse(bytes, sizeof bytes); }
  };
  thread_local Pool pool;
  pid_t pid = ::getpid();
  if (pool.used + kNonce > sizeof pool.bytes || pool.pid != pid) {
    if (RAND_bytes(pool.bytes, static_cast<int>(sizeof pool.bytes)) != 1)
      throw Error(ErrorKind::internal, "RAND_bytes failed");
    pool.used = 0;
    pool.pid = pid;
  }
  std::string out(reinterpret_cast<const char*>(pool.bytes + pool.used), kNonce);
  OPENSSL_cleanse(pool.bytes + pool.used, kNonce);
  pool.used += kNonce;
  return out;
}

void wipe(std::string& secret) {
  if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
  secret.clear();
}

std::string aead_seal(std::string_view key, std::string_view aad, std::string_view plaintext) {
  check_key(key);
  std::string nonce = random_bytes(kNonce);
  std::string out;
  out.reserve(kMagic.size() + kNonce + plaintext.size() + kTag);
  out.append(kMagic);
  out.append(nonce);
  size_t body = out.size();
  out.resize(body + plaintext.size() + kTag);
  Ctx ctx = new_ctx();
  int len = 0;
  bool ok = EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonce, nullptr) == 1 &&
            EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, bytes(key), bytes(nonce)) == 1 &&
            EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes(aad), static_cast<int>(aad.size())) == 1 &&
            EVP_EncryptUpdate(ctx.get(), bytes(out) + body, &len, bytes(plaintext),
                              static_cast<int>(plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(ctx.get(), bytes(out) + body + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, bytes(out) + body + plaintext.size()) == 1;
  if (!ok) {
    wipe(out);
    throw Error(ErrorKind::internal, "AES-256-GCM encryption failed");
  }
  return out;
}

std::string aead_open(std::string_view key, std::string_view aad, std::string_view sealed) {
  check_key(key);
  if (sealed.size() < kMagic.size() + kNonce + kTag || sealed.substr(0, kMagic.size()) != kMagic)
    throw Error(ErrorKind::corrupt, "not a sealed secret");
  std::string_view nonce = sealed.substr(kMagic.size(), kNonce);
  std::string_view body = sealed.substr(kMagic.size() + kNonce, sealed.size() - kMagic.size() - kNonce - kTag);
  std::string tag(sealed.substr(sealed.size() - kTag));
  std::string out(body.size(), '\0');
  Ctx ctx = new_ctx();
  int len = 0;
  bool ok = EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonce, nullptr) == 1 &&
            EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, bytes(key), bytes(nonce)) == 1 &&
            EVP_DecryptUpdate(ctx.get(), nullptr, &len, bytes(aad), static_cast<int>(aad.size())) == 1 &&
            EVP_DecryptUpdate(ctx.get(), bytes(out), &len, bytes(body), static_cast<int>(body.size())) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, tag.data()) == 1 &&
            EVP_DecryptFinal_ex(ctx.get(), bytes(out) + len, &len) == 1;
  if (!ok) {
    wipe(out);
    throw Error(ErrorKind::corrupt, "a sealed secret does not authenticate (wrong key, or damaged)");
  }
  return out;
}

std::string scrypt(std::string_view passphrase, std::string_view salt, unsigned log_n, unsigned r, unsigned p,
                   size_t length) {
  if (log_n < 1 || log_n > 30 || r < 1 || p < 1) throw Error(ErrorKind::internal, "bad scrypt parameters");
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "SCRYPT", nullptr);
  if (!kdf) throw Error(ErrorKind::internal, "OpenSSL has no SCRYPT KDF");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (!ctx) throw Error(ErrorKind::internal, "EVP_KDF_CTX_new failed");
  uint64_t n = uint64_t{1} << log_n;
  uint32_t rr = r, pp = p;
  // Room for the memory the parameters need (OpenSSL's default cap is 32 MiB).
  uint64_t maxmem = 256ull * r * n + (1ull << 20) * 4;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, const_cast<char*>(passphrase.data()),
                                        passphrase.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(salt.data()), salt.size()),
      OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
      OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &rr),
      OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &pp),
      OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
      OSSL_PARAM_construct_end(),
  };
  std::string out(length, '\0');
  int rc = EVP_KDF_derive(ctx, bytes(out), out.size(), params);
  EVP_KDF_CTX_free(ctx);
  if (rc != 1) {
    wipe(out);
    throw Error(ErrorKind::internal, "scrypt key derivation failed (too little memory for its parameters?)");
  }
  return out;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  std::string out(32, '\0');
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), bytes(data), data.size(), bytes(out), &len) ||
      len != 32)
    throw Error(ErrorKind::internal, "HMAC-SHA-256 failed");
  return out;
}

struct HmacKey::Impl {
  EVP_MD* md = nullptr;
  EVP_MD_CTX* inner = nullptr;  // SHA-256 state after key ^ ipad
  EVP_MD_CTX* outer = nullptr;  // SHA-256 state after key ^ opad
  ~Impl() {
    EVP_MD_CTX_free(inner);
    EVP_MD_CTX_free(outer);
    EVP_MD_free(md);
  }
};

HmacKey::HmacKey(std::string_view key) : impl_(std::make_unique<Impl>()) {
  impl_->md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  impl_->inner = EVP_MD_CTX_new();
  impl_->outer = EVP_MD_CTX_new();
  if (!impl_->md || !impl_->inner || !impl_->outer) throw Error(ErrorKind::internal, "cannot set up HMAC-SHA-256");
  unsigned char block[64] = {};
  if (key.size() > sizeof block) {
    unsigned int n = 0;
    EVP_Digest(key.data(), key.size(), block, &n, impl_->md, nullptr);
  } else {
    std::copy(key.begin(), key.end(), block);
  }
  unsigned char pad[64];
  for (size_t i = 0; i < 64; ++i) pad[i] = block[i] ^ 0x36;
  bool ok = EVP_DigestInit_ex(impl_->inner, impl_->md, nullptr) == 1 && EVP_DigestUpdate(impl_->inner, pad, 64) == 1;
  for (size_t i = 0; i < 64; ++i) pad[i] = block[i] ^ 0x5c;
  ok = ok && EVP_DigestInit_ex(impl_->outer, impl_->md, nullptr) == 1 && EVP_DigestUpdate(impl_->outer, pad, 64) == 1;
  OPENSSL_cleanse(block, sizeof block);
  OPENSSL_cleanse(pad, sizeof pad);
  if (!ok) throw Error(ErrorKind::internal, "cannot set up HMAC-SHA-256");
}
HmacKey::~HmacKey() = default;

std::string HmacKey::mac(std::string_view data) const {
  struct Scratch {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~Scratch() { EVP_MD_CTX_free(ctx); }
  };
  thread_local Scratch scratch;
  unsigned char inner_hash[32];
  unsigned int n = 0;
  std::string out(32, '\0');
  bool ok = scratch.ctx && EVP_MD_CTX_copy_ex(scratch.ctx, impl_->inner) == 1 &&
            EVP_DigestUpdate(scratch.ctx, data.data(), data.size()) == 1 &&
            EVP_DigestFinal_ex(scratch.ctx, inner_hash, &n) == 1 && EVP_MD_CTX_copy_ex(scratch.ctx, impl_->outer) == 1 &&
            EVP_DigestUpdate(scratch.ctx, inner_hash, 32) == 1 && EVP_DigestFinal_ex(scratch.ctx, bytes(out), &n) == 1;
  if (!ok) throw Error(ErrorKind::internal, "HMAC-SHA-256 failed");
  return out;
}

struct GcmKey::Impl {
  Ctx enc;
  Ctx dec;
};

namespace {
std::atomic<uint64_t> next_gcm_key_id{1};
}  // namespace

GcmKey::GcmKey(std::string_view key)
    : impl_(std::make_unique<Impl>(Impl{new_ctx(), new_ctx()})), id_(next_gcm_key_id.fetch_add(1)) {
  check_key(key);
  for (int enc = 0; enc < 2; ++enc) {
    EVP_CIPHER_CTX* c = enc ? impl_->enc.get() : impl_->dec.get();
    if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), nullptr, nullptr, nullptr, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, kNonce, nullptr) != 1 ||
        EVP_CipherInit_ex(c, nullptr, nullptr, bytes(key), nullptr, enc) != 1)
      throw Error(ErrorKind::internal, "AES-256-GCM setup failed");
  }
}
GcmKey::~GcmKey() = default;

namespace {

// A thread's contexts keyed with the GcmKeys it used last (a few: an archive
// has two GCM keys; a merge or bundle apply holds a handful of archives).
EVP_CIPHER_CTX* thread_ctx(uint64_t id, const EVP_CIPHER_CTX* prepared) {
  struct Slot {
    uint64_t id = 0;
    Ctx ctx;
  };
  thread_local std::vector<Slot> slots;
  for (auto& s : slots)
    if (s.id == id) return s.ctx.get();
  if (slots.size() >= 8) slots.erase(slots.begin());
  Slot s{id, new_ctx()};
  if (EVP_CIPHER_CTX_copy(s.ctx.get(), prepared) != 1) throw Error(ErrorKind::internal, "AES-256-GCM setup failed");
  slots.push_back(std::move(s));
  return slots.back().ctx.get();
}

bool gcm_run(EVP_CIPHER_CTX* c, bool enc, std::string_view nonce, std::string_view aad, std::string_view in,
             char* out) {
  if (nonce.size() != kNonce) throw Error(ErrorKind::internal, "an AES-GCM nonce must be 12 bytes");
  int len = 0;
  if (EVP_CipherInit_ex(c, nullptr, nullptr, nullptr, bytes(nonce), enc) != 1 ||
      (!aad.empty() && EVP_CipherUpdate(c, nullptr, &len, bytes(aad), static_cast<int>(aad.size())) != 1))
    return false;
  constexpr size_t kChunk = 1u << 30;
  auto* o = reinterpret_cast<unsigned char*>(out);
  while (!in.empty()) {
    size_t n = std::min(in.size(), kChunk);
    if (EVP_CipherUpdate(c, o, &len, bytes(in), static_cast<int>(n)) != 1 || static_cast<size_t>(len) != n)
      return false;
    o += n;
    in.remove_prefix(n);
  }
  return true;
}

}  // namespace

void GcmKey::seal(std::string_view nonce, std::string_view aad, std::string_view in, char* out, char* tag) const {
  EVP_CIPHER_CTX* c = thread_ctx(id_ * 2 + 1, impl_->enc.get());
  unsigned char rest[32];
  int len = 0;
  if (!gcm_run(c, true, nonce, aad, in, out) || EVP_CipherFinal_ex(c, rest, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, kTag, tag) != 1)
    throw Error(ErrorKind::internal, "AES-256-GCM encryption failed");
}

bool GcmKey::open(std::string_view nonce, std::string_view aad, std::string_view in, std::string_view tag,
                  char* out) const {
  if (tag.size() != kTag) return false;
  EVP_CIPHER_CTX* c = thread_ctx(id_ * 2, impl_->dec.get());
  unsigned char t[kTag];
  std::copy(tag.begin(), tag.end(), t);
  unsigned char rest[32];
  int len = 0;
  if (!gcm_run(c, false, nonce, aad, in, out))
    throw Error(ErrorKind::internal, "AES-256-GCM decryption failed");
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kTag, t) != 1 || EVP_CipherFinal_ex(c, rest, &len) != 1) {
    if (!in.empty()) OPENSSL_cleanse(out, in.size());
    return false;
  }
  return true;
}

struct GcmStream::Impl {
  Ctx ctx;
  Direction direction;
};

GcmStream::GcmStream(Direction direction, std::string_view key, std::string_view nonce, std::string_view aad)
    : impl_(std::make_unique<Impl>(Impl{new_ctx(), direction})) {
  check_key(key);
  if (nonce.size() != kNonce) throw Error(ErrorKind::internal, "an AES-GCM nonce must be 12 bytes");
  EVP_CIPHER_CTX* c = impl_->ctx.get();
  int len = 0;
  bool enc = direction == Direction::encrypt;
  bool ok = EVP_CipherInit_ex(c, EVP_aes_256_gcm(), nullptr, nullptr, nullptr, enc) == 1 &&
            EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, kNonce, nullptr) == 1 &&
            EVP_CipherInit_ex(c, nullptr, nullptr, bytes(key), bytes(nonce), enc) == 1 &&
            (aad.empty() || EVP_CipherUpdate(c, nullptr, &len, bytes(aad), static_cast<int>(aad.size())) == 1);
  if (!ok) throw Error(ErrorKind::internal, "AES-256-GCM setup failed");
}
GcmStream::GcmStream(Direction direction, const GcmKey& key, std::string_view nonce, std::string_view aad)
    : impl_(std::make_unique<Impl>(Impl{new_ctx(), direction})) {
  if (nonce.size() != kNonce) throw Error(ErrorKind::internal, "an AES-GCM nonce must be 12 bytes");
  EVP_CIPHER_CTX* c = impl_->ctx.get();
  bool enc = direction == Direction::encrypt;
  int len = 0;
  bool ok = EVP_CIPHER_CTX_copy(c, enc ? key.impl_->enc.get() : key.impl_->dec.get()) == 1 &&
            EVP_CipherInit_ex(c, nullptr, nullptr, nullptr, bytes(nonce), enc) == 1 &&
            (aad.empty() || EVP_CipherUpdate(c, nullptr, &len, bytes(aad), static_cast<int>(aad.size())) == 1);
  if (!ok) throw Error(ErrorKind::internal, "AES-256-GCM setup failed");
}
GcmStream::~GcmStream() = default;
GcmStream::GcmStream(GcmStream&&) noexcept = default;
GcmStream& GcmStream::operator=(GcmStream&&) noexcept = default;

void GcmStream::update(std::string_view in, std::string& out) {
  constexpr size_t kChunk = 1u << 30;
  size_t at = out.size();
  out.resize(at + in.size());
  while (!in.empty()) {
    size_t n = std::min(in.size(), kChunk);
    int len = 0;
    if (EVP_CipherUpdate(impl_->ctx.get(), bytes(out) + at, &len, bytes(in), static_cast<int>(n)) != 1 ||
        static_cast<size_t>(len) != n)
      throw Error(ErrorKind::internal, "AES-256-GCM failed");
    at += n;
    in.remove_prefix(n);
  }
}

std::string GcmStream::finish_encrypt() {
  unsigned char rest[32];
  int len = 0;
  std::string tag(kTag, '\0');
  if (EVP_CipherFinal_ex(impl_->ctx.get(), rest, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(impl_->ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, tag.data()) != 1)
    throw Error(ErrorKind::internal, "AES-256-GCM encryption failed");
  return tag;
}

void GcmStream::finish_decrypt(std::string_view tag) {
  if (tag.size() != kTag) throw Error(ErrorKind::corrupt, "an AES-GCM tag must be 16 bytes");
  std::string t(tag);
  unsigned char rest[32];
  int len = 0;
  if (EVP_CIPHER_CTX_ctrl(impl_->ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, t.data()) != 1 ||
      EVP_CipherFinal_ex(impl_->ctx.get(), rest, &len) != 1)
    throw Error(ErrorKind::corrupt, "the sealed data does not authenticate (wrong key, or damaged)");
}

}  // namespace imapstage

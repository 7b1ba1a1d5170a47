#include "verify/signing.h"

#include <cstdio>
#include <memory>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/error.h"

namespace imapstage::verify {

namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

Key load_key(const std::string& path, bool want_private) {
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "r"));
  if (!f) throw Error(ErrorKind::usage, "cannot read the key file", Retry::never, {.file = path});
  Key key(want_private ? PEM_read_PrivateKey(f.get(), nullptr, nullptr, nullptr)
                       : PEM_read_PUBKEY(f.get(), nullptr, nullptr, nullptr));
  if (!key && !want_private) {
    // A private key file holds the public key too.
    std::rewind(f.get());
    key.reset(PEM_read_PrivateKey(f.get(), nullptr, nullptr, nullptr));
  }
  if (!key) throw Error(ErrorKind::usage, "not a PEM key file", Retry::never, {.file = path});
  if (EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519)
    throw Error(ErrorKind::usage, "the key is not an Ed25519 key", Retry::never, {.file = path});
  return key;
}

}  // namespace

std::string ed25519_sign(std::string_view data, const std::string& private_key_pem_file) {
  Key key = load_key(private_key_pem_file, true);
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1)
    throw Error(ErrorKind::internal, "Ed25519 signing failed");
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1)
    throw Error(ErrorKind::internal, "Ed25519 signing failed");
  sig.resize(len);
  return sig;
}

bool ed25519_verify(std::string_view data, std::string_view signature, const std::string& public_key_pem_file) {
  Key key = load_key(public_key_pem_file, false);
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1)
    throw Error(ErrorKind::internal, "Ed25519 verification could not start");
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
}

}  // namespace imapstage::verify

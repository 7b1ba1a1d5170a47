// Ed25519 signatures over files, through OpenSSL. Keys are PEM files as made by
//   openssl genpkey -algorithm ed25519 -out key.pem
//   openssl pkey -in key.pem -pubout -out key.pub
// and a signature is the raw 64 bytes, so it also checks with
//   openssl pkeyutl -verify -pubin -inkey key.pub -rawin -in FILE -sigfile FILE.sig
#pragma once

#include <string>
#include <string_view>

namespace imapstage::verify {

// Signs `data` with the Ed25519 private key in `private_key_pem_file`.
// Throws Error(usage) if the key cannot be read or is not Ed25519.
std::string ed25519_sign(std::string_view data, const std::string& private_key_pem_file);

// True when `signature` is a valid Ed25519 signature of `data` by the public
// key in `public_key_pem_file` (a private key file is accepted too).
// Throws Error(usage) if the key cannot be read or is not Ed25519.
bool ed25519_verify(std::string_view data, std::string_view signature, const std::string& public_key_pem_file);

}  // namespace imapstage::verify

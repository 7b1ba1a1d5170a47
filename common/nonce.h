// Nonces for AES-256-GCM sealing (archive-format/FORMAT.md, "Encryption",
// "Nonces"); the implementation is in common/aead.cpp beside the cipher.
#pragma once

#include <string>

namespace imapstage {

// A fresh random 12-byte AES-GCM nonce from OpenSSL's CSPRNG, as
// random_bytes(12), but drawn from a per-thread buffer of CSPRNG output
// filled 4 KiB at a time (a call to RAND_bytes costs more than sealing a
// small index value). Every byte is handed out once and wiped from the
// buffer; a process made by fork() never uses its parent's buffer. Throws
// Error(internal) if the CSPRNG fails.
std::string random_nonce();

}  // namespace imapstage

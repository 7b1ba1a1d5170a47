// Modified UTF-7 (RFC 3501 section 5.1.3), the encoding of IMAP mailbox names.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace imapstage::imap {

// UTF-8 -> modified UTF-7. Invalid UTF-8 sequences are encoded as U+FFFD.
std::string utf7_encode(std::string_view utf8);

// Modified UTF-7 -> UTF-8; nullopt when `mutf7` is not valid modified UTF-7
// (bad base64, unterminated shift, a shifted run of printable ASCII, bad surrogates).
std::optional<std::string> utf7_decode_strict(std::string_view mutf7);

// Like utf7_decode_strict, but never fails: an invalid name is returned unchanged.
std::string utf7_decode(std::string_view mutf7);

}  // namespace imapstage::imap

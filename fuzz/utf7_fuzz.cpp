// Modified UTF-7: decoding never fails on arbitrary bytes (the lenient form)
// and never crashes; encoding valid UTF-8 round-trips through the strict
// decoder; a strictly valid name re-encodes to itself.
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_input.h"
#include "imap/utf7.h"

using namespace imapstage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // Arbitrary bytes as a server-sent name.
  std::string lenient = imap::utf7_decode(in);
  auto strict = imap::utf7_decode_strict(in);
  if (strict) {
    if (lenient != *strict) std::abort();
    if (!fuzzing::valid_utf8(*strict)) std::abort();
    if (imap::utf7_encode(*strict) != in) std::abort();
  } else if (lenient != in) {
    std::abort();
  }
  // Arbitrary bytes as a UTF-8 name to send.
  std::string encoded = imap::utf7_encode(in);
  for (char c : encoded)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) std::abort();
  auto back = imap::utf7_decode_strict(encoded);
  if (!back) std::abort();
  if (fuzzing::valid_utf8(in) && *back != in) std::abort();
  return 0;
}

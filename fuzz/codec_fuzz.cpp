// Index value and key decoding (archive-format/codec.h): arbitrary bytes give
// a record or Error(corrupt), never a crash or another exception; whatever
// decodes re-encodes to bytes that decode to the same encoding again, and
// keys round-trip exactly.
#include <cstdlib>
#include <string>

#include "archive-format/codec.h"
#include "common/error.h"
#include "fuzz/fuzz_input.h"

using namespace imapstage;
using namespace imapstage::archive;

namespace {

template <typename Decode, typename Encode>
void stable(std::string_view key, std::string_view value, Decode decode, Encode encode) {
  auto r = decode(key, value);
  std::string once = encode(r);
  auto again = decode(key, once);
  if (encode(again) != once) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzzing::Input input(data, size);
  uint8_t which = input.byte();
  std::string_view key = input.take(input.byte());
  std::string_view value = input.rest();
  try {
    switch (which % 14) {
      case 0: stable(key, value, codec::decode_account, codec::encode_account); break;
      case 1: stable(key, value, codec::decode_folder, codec::encode_folder); break;
      case 2: stable(key, value, codec::decode_message, codec::encode_message); break;
      case 3: stable(key, value, codec::decode_append, codec::encode_append); break;
      case 4: {
        auto o = codec::decode_object(value);
        if (codec::encode_object(codec::decode_object(codec::encode_object(o))) != codec::encode_object(o)) std::abort();
        break;
      }
      case 5: stable(key, value, codec::decode_pack, codec::encode_pack); break;
      case 6: stable(key, value, codec::decode_run, codec::encode_run); break;
      case 7: {
        std::string t = codec::decode_target(value);
        if (codec::decode_target(codec::encode_target(t)) != t) std::abort();
        break;
      }
      case 8: {
        auto k = codec::decode_message_key(value);
        if (codec::message_key(k) != value) std::abort();
        break;
      }
      case 9: {
        auto k = codec::decode_append_key(value);
        if (codec::append_key(k) != value) std::abort();
        break;
      }
      case 10: {
        uint32_t a = 0, f = 0;
        codec::decode_folder_key(value, a, f);
        if (codec::folder_key(a, f) != value) std::abort();
        if (codec::u32_key(codec::decode_u32_key(key)) != key) std::abort();
        break;
      }
      case 11: {
        auto j = codec::decode_journal(value);
        auto once = codec::encode_journal(j);
        if (codec::encode_journal(codec::decode_journal(once)) != once) std::abort();
        break;
      }
      case 12: {
        auto c = codec::decode_message_counts(value);
        if (c.present > c.records) std::abort();  // refused as corrupt, never handed out
        auto once = codec::encode_message_counts(c);
        if (once != value || codec::encode_message_counts(codec::decode_message_counts(once)) != once) std::abort();
        break;
      }
      case 13: {
        auto m = codec::decode_import_mark(value);
        auto once = codec::encode_import_mark(m);
        if (once != value || !(codec::decode_import_mark(once) == m)) std::abort();
        break;
      }
    }
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::corrupt) std::abort();
  }
  return 0;
}

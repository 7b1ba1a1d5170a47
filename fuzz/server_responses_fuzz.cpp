// Whole server responses through the session's guard and libetpan's parser
// (imap::replay_responses): whatever a server sends, nothing crashes, no
// limit is exceeded, and the guard's verdict does not depend on how the
// bytes were split into reads.
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_input.h"
#include "imap/session.h"
#include "imap/wire_guard.h"

using namespace imapstage;

// libetpan 1.9.4 leaks a few bytes on some parse errors (in
// mailimap_astring_parse); a session that meets one is dropped anyway.
extern "C" const char* __lsan_default_suppressions() { return "leak:libetpan.so\n"; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzzing::Input input(data, size);
  size_t split_seed = input.byte();
  std::string_view wire = input.rest();

  imap::WireLimits limits;
  limits.max_text = 4096;
  limits.max_literal = 2048;
  limits.max_depth = 16;
  imap::WireGuard whole(limits), pieces(limits);
  bool ok_whole = whole.feed(wire);
  size_t split = wire.empty() ? 0 : (split_seed * 257) % (wire.size() + 1);
  bool ok_pieces = pieces.feed(wire.substr(0, split)) && pieces.feed(wire.substr(split));
  if (ok_whole != ok_pieces || whole.violation() != pieces.violation()) std::abort();

  imap::Endpoint endpoint;
  endpoint.max_message_size = 64 * 1024;
  std::string bytes = "* OK fuzz\r\n";
  bytes.append(wire);
  (void)imap::replay_responses(bytes, endpoint);
  return 0;
}

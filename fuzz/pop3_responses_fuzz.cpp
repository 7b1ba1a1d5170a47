// A POP3 server's answers to LIST, UIDL and RETR through the session's own
// reader (pop3::replay_responses): whatever a server sends, nothing crashes,
// memory stays bounded by the limits, and the reader either finishes or
// names what stopped it.
#include <string>

#include "fuzz/fuzz_input.h"
#include "pop3/session.h"

using namespace imapstage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzzing::Input input(data, size);
  uint64_t max = 1 + input.byte() * 64;
  (void)pop3::replay_responses(input.rest(), max);
  return 0;
}

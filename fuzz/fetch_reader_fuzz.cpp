// The responses to UID FETCH through imapstage's own FETCH reader
// (imap::replay_fetch): whatever a server sends, nothing crashes, no limit
// is exceeded, and what is read (messages, flags, dates, bodies, or the
// reason to stop) does not depend on how the bytes were split into reads,
// nor on whether bodies were held or streamed to a sink.
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_input.h"
#include "imap/fetch_reader.h"

using namespace imapstage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzzing::Input input(data, size);
  size_t piece = 1 + input.byte() % 64;
  uint64_t stream_from = 1 + input.byte() * 16u;
  std::string_view wire = input.rest();

  imap::Endpoint endpoint;
  endpoint.max_message_size = 16 * 1024;
  std::string whole = imap::replay_fetch(wire, 0, endpoint);
  std::string pieces = imap::replay_fetch(wire, piece, endpoint);
  if (whole != pieces) std::abort();
  // Bodies streamed to a sink read the same as bodies held.
  std::string streamed = imap::replay_fetch(wire, piece, endpoint, stream_from);
  if (whole != streamed) std::abort();
  return 0;
}

// Server response pieces imapstage parses itself: tagged completions,
// APPENDUID, uid-sets, literal sizes, SEARCH results and IMAP date-times.
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_input.h"
#include "imap/response_codes.h"
#include "imap/session.h"

using namespace imapstage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzzing::Input input(data, size);
  size_t count = input.byte() % 17;
  std::string_view line = input.rest();

  if (auto r = imap::parse_tagged_reply(line, "A7")) {
    if (r->code.size() > r->text.size()) std::abort();
    if (auto a = imap::parse_appenduid(r->code, count ? count : 1)) {
      if (a->uidvalidity == 0 || a->uids.size() != (count ? count : 1)) std::abort();
    }
  }
  if (auto a = imap::parse_appenduid(line, count)) {
    if (a->uidvalidity == 0 || a->uids.size() != count) std::abort();
    for (uint32_t u : a->uids)
      if (u == 0) std::abort();
  }
  if (auto set = imap::parse_uid_set(line, 1000)) {
    if (set->size() > 1000) std::abort();
    for (uint32_t u : *set)
      if (u == 0) std::abort();
  }
  bool malformed = false;
  if (auto n = imap::parse_literal_size(line, &malformed)) {
    if (malformed || line.empty() || line.back() != '}') std::abort();
  }
  if (auto uids = imap::parse_search_response(line)) {
    for (uint32_t u : *uids)
      if (u == 0) std::abort();
  }
  int64_t t = 0;
  int32_t tz = 0;
  if (imap::parse_date_time(line, t, tz)) {
    if (tz < -(99 * 60 + 59) || tz > 99 * 60 + 59) std::abort();
    // Only dates imapstage stores or sends are formatted back (others show as impossible).
    if (!imap::valid_internaldate(t, tz)) return 0;
    std::string formatted = imap::format_date_time(t, tz);
    int64_t t2 = 0;
    int32_t tz2 = 0;
    if (!imap::parse_date_time(formatted, t2, tz2) || t2 != t || tz2 != tz) std::abort();
  }
  return 0;
}

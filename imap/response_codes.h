// Pure parsers for pieces of IMAP server responses that imap::Session reads
// itself (outside libetpan's parser): tagged completions with their response
// code, APPENDUID (RFC 4315, parsed strictly), literal announcements and
// UID SEARCH results. They accept arbitrary bytes, never throw and never read
// outside their argument.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace imapstage::imap {

// The tagged completion of a command ("TAG OK [CODE args] text").
struct TaggedReply {
  std::string status;  // "OK", "NO", "BAD" (upper-case), or whatever word came first
  std::string code;    // inside the brackets ("APPENDUID 5 7:9"), or "" if none or unterminated
  std::string text;    // everything after the status, code included
};

// Parses `line` (with or without CRLF) as the completion of `tag`; nullopt
// unless it starts with the tag followed by a space.
std::optional<TaggedReply> parse_tagged_reply(std::string_view line, std::string_view tag);

// Parses an RFC 4315 uid-set ("a:b,c,...", no '*') into UIDs, each range
// ascending, in the order given; nullopt if malformed, if a UID is 0 or above
// 2^32-1, or if it names more than `max` UIDs.
std::optional<std::vector<uint32_t>> parse_uid_set(std::string_view set, size_t max);

struct AppendUid {
  uint32_t uidvalidity = 0;
  std::vector<uint32_t> uids;  // one per appended message, in APPEND order
};

// Parses a response code "APPENDUID <uidvalidity> <uid-set>" (the text inside
// the brackets, name case-insensitive) that must name exactly `count` UIDs;
// nullopt for anything else (another code, a zero or oversized number, a
// malformed set, trailing text, a count mismatch).
std::optional<AppendUid> parse_appenduid(std::string_view code, size_t count);

// The size N of a literal announced at the end of a response line ("... {N}"
// or "{N+}"), or nullopt if the line does not end with one. A size that does
// not fit in 63 bits is reported as nullopt too, with `malformed` set.
std::optional<uint64_t> parse_literal_size(std::string_view line, bool* malformed = nullptr);

// The UIDs of an untagged "SEARCH n n n ..." response (after "* "), in the
// order sent, stopping at a "(MODSEQ n)" suffix; nullopt if `line` is not a
// SEARCH response or holds something other than UIDs (0 or > 2^32-1 included).
std::optional<std::vector<uint32_t>> parse_search_response(std::string_view line);

// A server telling the client to slow down or come back later.
struct ThrottleHint {
  std::string reason;                     // short: "THROTTLED", "Suggested Backoff Time", ...
  std::optional<uint64_t> backoff_ms;     // the wait the server suggested, when it named one
};

// Where the text was seen: download-side responses (FETCH, SELECT, BYE)
// also treat [OVERQUOTA] and Gmail's "exceeded bandwidth limits" as
// throttling; on APPEND, [OVERQUOTA] means the target mailbox is full
// (a limit, not throttling) and is not a hint.
enum class ThrottleContext { download, upload };

// Looks for a throttling hint in the text of a NO, BAD or BYE response
// (`text` is what follows the status, response code included):
//   - Microsoft 365: "Request is throttled. Suggested Backoff Time: N milliseconds"
//     (the number is taken, capped at 2^40 ms; case-insensitive)
//   - response codes [THROTTLED], [UNAVAILABLE] (RFC 5530), [OVERQUOTA] (download only)
//   - Gmail: "Account exceeded bandwidth limits" (download only), "Too many simultaneous connections"
// nullopt when there is none. Never throws.
std::optional<ThrottleHint> parse_throttle_hint(std::string_view text, ThrottleContext context = ThrottleContext::download);

}  // namespace imapstage::imap

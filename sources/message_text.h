// Text helpers the sources share: line ends, a message's look, dates from
// headers and mbox From lines. Pure functions; no I/O; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "archive-format/archive.h"

namespace imapstage::sources {

// Appends `in` to `out` with every LF that is not preceded by CR made CRLF
// (as an IMAP server serves a file stored with bare LFs); every other byte is
// kept. `prev_cr` carries whether the last byte of the previous piece was CR,
// so a message can be converted in pieces; start with false.
void append_crlf(std::string& out, std::string_view in, bool& prev_cr);

// The size `bytes` would have after append_crlf.
uint64_t crlf_size(std::string_view bytes);

// True when `start` (the first bytes of a file, at least its first line or
// 1,000 bytes when it has one that long) begins like a mail message: a header
// field name (printable ASCII without ':' or space) followed by ':', or an
// mbox "From " line. Binary junk, text files and empty files are not.
bool looks_like_message(std::string_view start);

struct DateTime {
  int64_t unix_seconds = 0;
  int32_t tz_minutes = 0;  // east of UTC
};

// An RFC 5322 date-time ("Tue, 1 Jul 2003 10:52:37 +0200", day name and
// seconds optional, obsolete zones "GMT", "UT", "EST"... understood, a
// trailing comment ignored); nullopt when it does not parse or is impossible.
std::optional<DateTime> parse_rfc5322_date(std::string_view text);

// The date of an mbox "From " line ("From sender Wed Jan  1 12:00:00 2020",
// also with a numeric zone before or after the year); read as UTC without a
// zone. nullopt when the line has no such date.
std::optional<DateTime> parse_from_line_date(std::string_view line);

// INTERNALDATE for a message whose source keeps none (POP3): the date of the
// topmost Received: field (after its last ';'), else the Date: field, each
// only when it parses; nullopt when neither does (the caller then uses the
// time it read the message, archive::DateSource::fetch_time). `source` says
// which one was used.
std::optional<DateTime> date_from_headers(std::string_view message, archive::DateSource& source);

}  // namespace imapstage::sources

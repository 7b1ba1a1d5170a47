// Reads the responses to UID FETCH commands straight from a connection's
// input buffer, without libetpan's parse tree: literal bytes go from the
// buffer (or, for the part of a large literal not yet received, from the
// socket) into the message body, and the small items are parsed in place.
//
// Responses read (names case-insensitive; a line ends in CRLF or a bare LF):
//   response = "* " number " FETCH (" [item *(SP item)] ")" EOL
//            / "* BYE" ... / "* " anything-else ... / "+" ... / tag SP status [SP text]
//   item     = "UID" SP nz-number (32 bits)
//            / "FLAGS" SP "(" [flag *(SP flag)] ")"       flag: any run of bytes but SP ( ) and controls
//            / "INTERNALDATE" SP (quoted / NIL)           date-time of RFC 3501, fields checked after
//            / "RFC822.SIZE" SP number (63 bits)
//            / "BODY[]" ["<" number ">"] SP (literal / quoted / NIL)
//            / "MODSEQ" SP "(" number ")"                 (RFC 7162)
//            / "X-GM-MSGID" SP number / "X-GM-THRID" SP number   (64 bits; Gmail's X-GM-EXT-1)
//            / "X-GM-LABELS" SP "(" [label *(SP label)] ")"      label: atom / quoted / literal
//            / name ["[" section "]"] ["<" number ">"] SP value     anything else: skipped
//   value    = atom / number / NIL / quoted / literal / "(" [value *(SP value)] ")"
//   quoted   = DQUOTE *(any byte but DQUOTE and "\" / "\" any byte) DQUOTE
//   literal  = "{" number ["+"] "}" EOL <number bytes>   (the response goes on after the bytes)
// A line that is not a FETCH response is read to its end, a literal
// announced at its end skipped and the line continued after it.
//
// Limits, the same the WireGuard puts on what libetpan parses: a response's
// text (its lines without the literal bytes, plus 64 per literal) at most
// `max_text` bytes; parentheses open at once at most `max_depth`, counted in
// the text (inside quoted strings too); one literal at most `max_literal`
// bytes and all of a response's literals at most `max_literal` + 1 MiB; a
// quoted BODY[] at most `max_literal` bytes. The first byte past a limit
// stops the reader for good (FetchSource::refuse) before more is read.
//
// Anything else that does not parse stops it too (FetchSource::unparsable):
// the conversation is no longer understood and the connection must go.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "imap/response_codes.h"
#include "imap/session.h"

namespace imapstage::imap {

// What one FETCH response carried, with the values checked as for
// FetchedMessage (see its `anomalies`).
struct FetchData {
  uint32_t seq = 0;
  uint32_t uid = 0;                     // 0 when the response had no UID
  bool has_flags = false;
  bool has_internaldate = false;
  bool has_size = false;
  bool has_body = false;                // BODY[] (a NIL one too: then the body is empty)
  std::vector<std::string> flags;       // the valid ones, without \Recent
  int64_t internaldate = 0;             // 0 when absent or impossible (an anomaly says which)
  int32_t internaldate_tz = 0;
  uint64_t size = 0;
  uint64_t modseq = 0;
  uint64_t gm_msgid = 0;                // X-GM-MSGID, 0 when absent
  uint64_t gm_thrid = 0;                // X-GM-THRID, 0 when absent
  bool has_labels = false;              // X-GM-LABELS
  std::vector<std::string> gm_labels;   // as sent (quotes and escapes taken off), in order
  std::vector<std::string> anomalies;
  // A BODY[] literal that was streamed (LargeBodies): its sink, which got
  // every byte (the body string stays empty), and what the sink threw, if
  // it did (the response was still read to its end).
  std::unique_ptr<BodySink> body_sink;
  std::exception_ptr body_error;
  uint64_t body_size = 0;               // bytes of BODY[], held or streamed

  // Back to "nothing received" (the vectors keep no elements; a sink not
  // taken is dropped).
  void clear();
};

// The connection under a FetchReader. Each call either succeeds or throws
// (imapstage::Error) after closing the connection.
class FetchSource {
 public:
  virtual ~FetchSource() = default;
  // Reads between 1 and `n` bytes into `buf`.
  virtual size_t read(char* buf, size_t n) = 0;
  // The server broke a limit (`violation` says which; `garbled`: a literal
  // size no number holds, garbage rather than too much).
  [[noreturn]] virtual void refuse(const std::string& violation, bool garbled) = 0;
  // The server sent what cannot be parsed (`detail` says where).
  [[noreturn]] virtual void unparsable(const std::string& detail) = 0;
};

struct FetchLimits {
  uint64_t max_text = 64ull << 20;
  uint64_t max_literal = 1ull << 20;
  std::string literal_what;             // how a too-large literal is described ("" : "the limit of N bytes")
  uint32_t max_depth = 256;
};

class FetchReader {
 public:
  enum class Kind {
    fetch,         // "* n FETCH (...)": data() and the body filled
    tagged,        // a tagged completion: tagged() holds it (tag in tag())
    bye,           // "* BYE ...": line() holds it
    other,         // any other untagged response or a continuation request: skipped
  };

  // Reads first the `length` unread bytes at `buffer` (which holds
  // `capacity`), refilling it in place from `source` once they are used up.
  // The buffer is the connection's own (libetpan's stream buffer): release()
  // gives back what was received and not read.
  FetchReader(FetchSource& source, char* buffer, size_t capacity, size_t length, FetchLimits limits);

  // Reads one whole response. For a FETCH response, `data` is cleared and
  // filled, and a BODY[] in it replaces `body` (its capacity is reused; a
  // literal of 1 MiB or more gets its announced size, at most 512 MiB,
  // reserved up front: address space, only what arrives is touched).
  // Throws through the source.
  Kind next(FetchData& data, std::string& body);

  // From now on, BODY[] literals of at least `large.from` bytes go to a sink
  // from `large.open` (FetchData::body_sink) instead of the body string.
  void stream_large_bodies(LargeBodies large) { large_ = std::move(large); }

  // True while bytes received are not read yet.
  bool has_unread() const { return start_ < end_; }

  // The response just read, as text (a literal in it shown as "{N}"; its
  // bytes dropped). Empty after a FETCH response.
  const std::string& line() const { return line_; }
  const std::string& tag() const { return tag_; }
  const TaggedReply& tagged() const { return tagged_; }

  // Moves the bytes received but not read to the start of the buffer and
  // returns their count (the buffer's new length). The reader is done.
  size_t release();

 private:
  void fill();
  void start_response();
  void read_line();                       // appends the next line's text to line_
  void count_text(std::string_view text);
  void check_literal(uint64_t size);
  uint64_t literal_size_at_end(size_t from);  // the literal announced at the end of line_[from...], checked
  void skip_literal(uint64_t size);
  // The `size` bytes of a literal: `buffered(piece)` for those already
  // received; for a rest larger than the buffer, `direct(left)` reads some
  // straight from the source and returns how many.
  template <class Buffered, class Direct>
  void literal_bytes(uint64_t size, Buffered&& buffered, Direct&& direct);
  void read_literal(std::string& out, uint64_t size);
  void stream_literal(FetchData& data, uint64_t size);  // to a sink from large_
  void skip_rest_of_response();           // line_ and its literals, to the end
  [[noreturn]] void bad(std::string_view what);

  // --- the FETCH parser over line_ (pos_) ---
  void parse_fetch(FetchData& data, std::string& body);
  void parse_item(FetchData& data, std::string& body);
  char peek() const { return pos_ < line_.size() ? line_[pos_] : '\0'; }
  bool at_end() const { return pos_ >= line_.size(); }
  void expect(char c, std::string_view what);
  void skip_spaces();
  std::string_view word();                // a run of bytes but SP ( ) " { and controls
  uint64_t number(uint64_t max, std::string_view what);
  std::string_view item_name();
  void skip_value(uint32_t depth);
  // A quoted string at pos_, unescaped into `out` (dropped when null).
  void quoted(std::string* out);
  // A literal "{N}" at pos_ (which must end the line): its bytes into `out`
  // (or dropped when null; or, with `data` and a size large_ streams, into
  // a sink), then the next line.
  void literal_value(std::string* out, FetchData* data = nullptr);
  void parse_flags(FetchData& data);
  void parse_internaldate(FetchData& data);
  void parse_labels(FetchData& data);

  FetchSource& source_;
  char* buf_;
  size_t cap_;
  size_t start_ = 0, end_ = 0;            // unread bytes are buf_[start_, end_)
  FetchLimits limits_;
  LargeBodies large_;

  std::string line_;                      // the current line's text (FETCH) or the whole response (others)
  size_t pos_ = 0;
  uint64_t text_ = 0;                     // text budget used by the current response
  uint64_t literals_ = 0;                 // literal bytes of the current response
  uint32_t depth_ = 0;                    // parentheses open, counted in the text
  std::string tag_;
  TaggedReply tagged_;
  std::string scratch_;                   // a quoted INTERNALDATE
};

// An INTERNALDATE's fields exactly as sent (RFC 3501 date-time, read
// syntactically: each field may still be out of range). zone is the four
// digits with their sign, e.g. -700 for "-0700".
struct DateFields {
  int day = 0, month = 0, year = 0, hour = 0, minute = 0, second = 0, zone = 0;
};
// Parses "dd-Mon-yyyy hh:mm:ss +zzzz" (day " d", "d" or "dd", month name
// any case); false if the text has another shape.
bool parse_date_fields(std::string_view text, DateFields& fields);
// unix seconds and zone minutes; false (both 0) unless every field is in
// range and valid_internaldate() holds.
bool date_from_fields(const DateFields& fields, int64_t& unix_seconds, int32_t& tz_minutes);
// "DD-Mon-YYYY hh:mm:ss +zzzz" as sent, whatever the fields are (for anomalies).
std::string describe_date(const DateFields& fields);

// Collects a FETCH response's flags as export keeps them: system flags in
// their canonical spelling, \Recent left out, flags that are not
// valid_flag_name() and keywords past kMaxKeywords left out and counted.
class FlagCollector {
 public:
  explicit FlagCollector(std::vector<std::string>& out) : out_(out) {}
  // One flag as the server sent it ("\\SEEN", "$Label1", "\\*", ...).
  void add(std::string_view flag);
  // Appends a sentence per kind of flag left out.
  void finish(std::vector<std::string>& anomalies);

 private:
  std::vector<std::string>& out_;
  size_t keywords_ = 0, invalid_ = 0, over_ = 0;
  std::string first_invalid_;
};

// Runs `bytes` through a FetchReader as the responses to one body fetch
// (UID FETCH ... BODY.PEEK[] with `limits.max_message_size`), handing them
// to the reader `piece` bytes at a time (0: all at once), and returns what
// it read: one line per response ("fetch uid=.. flags=.. date=.. size=..
// modseq=.. body=<hex digest> anomalies=..", "tagged ..", "bye", "other"),
// then "stop: <why>" if the reader stopped before the end. Bodies of at
// least `stream_from` bytes go through a sink (stream_large_bodies) and are
// shown the same way. No network; for fuzzing and tests.
std::string replay_fetch(std::string_view bytes, size_t piece, const Endpoint& limits = {},
                         uint64_t stream_from = UINT64_MAX);

}  // namespace imapstage::imap

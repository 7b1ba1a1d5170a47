#include "imap/fetch_reader.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"

namespace imapstage::imap {
namespace {

constexpr uint64_t kPerLiteralText = 64;           // what a literal costs of the text budget (as the guard)
constexpr uint64_t kReserveFrom = 1u << 20;        // a body this large gets its size reserved up front
constexpr uint64_t kReserveAtMost = 512u << 20;
constexpr size_t kDirectStep = 64u << 10;          // the first piece of a large literal read past the buffer
constexpr size_t kStreamStep = 256u << 10;         // a streamed literal's pieces read past the buffer

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

bool istarts(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool digit(char c) { return c >= '0' && c <= '9'; }
bool control(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }

// Bytes of an item name before its section: atom characters but '[' and '<'.
bool name_char(char c) {
  return !control(c) && std::strchr(" ()[]{}\"\\<>%*", c) == nullptr && c != '\0';
}

constexpr std::string_view kSystemFlags[] = {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"};
constexpr const char* kMonthNames[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Text of a server's value in a sentence: at most 64 bytes, escaped.
std::string shown(std::string_view s) { return fmt::format("{:?}", std::string(s.substr(0, 64))); }

}  // namespace

void FetchData::clear() {
  seq = uid = 0;
  has_flags = has_internaldate = has_size = has_body = false;
  flags.clear();
  internaldate = 0;
  internaldate_tz = 0;
  size = modseq = 0;
  gm_msgid = gm_thrid = 0;
  has_labels = false;
  gm_labels.clear();
  anomalies.clear();
  body_sink.reset();
  body_error = nullptr;
  body_size = 0;
}

// --- flags and dates --------------------------------------------------------------

void FlagCollector::add(std::string_view flag) {
  if (flag.empty()) return;
  std::string_view name = flag;
  bool system = false;
  if (flag[0] == '\\') {
    if (iequals(flag, "\\Recent")) return;
    for (auto s : kSystemFlags)
      if (iequals(flag, s)) {
        name = s;
        system = true;
      }
  }
  if (!valid_flag_name(name)) {
    if (invalid_++ == 0) first_invalid_ = std::string(name.substr(0, 64));
    return;
  }
  if (!system && ++keywords_ > kMaxKeywords) {
    ++over_;
    return;
  }
  out_.emplace_back(name);
}

void FlagCollector::finish(std::vector<std::string>& anomalies) {
  if (invalid_)
    anomalies.push_back(fmt::format("{} flag{} that {} not valid IMAP flags (e.g. {:?}) left out", invalid_,
                                    invalid_ == 1 ? "" : "s", invalid_ == 1 ? "is" : "are", first_invalid_));
  if (over_) anomalies.push_back(fmt::format("{} keywords: the first {} kept, {} left out", keywords_, kMaxKeywords, over_));
}

bool parse_date_fields(std::string_view t, DateFields& f) {
  auto digits = [&](size_t& i, size_t n, int& v) {
    if (i + n > t.size()) return false;
    v = 0;
    for (size_t k = i; k < i + n; ++k) {
      if (!digit(t[k])) return false;
      v = v * 10 + (t[k] - '0');
    }
    i += n;
    return true;
  };
  auto expect = [&](size_t& i, char c) { return i < t.size() && t[i++] == c; };
  size_t i = 0;
  f = {};
  if (!t.empty() && t[0] == ' ') {
    i = 1;
    if (!digits(i, 1, f.day)) return false;
  } else if (t.size() > 1 && digit(t[0]) && digit(t[1])) {
    if (!digits(i, 2, f.day)) return false;
  } else if (!digits(i, 1, f.day)) {
    return false;
  }
  if (!expect(i, '-') || i + 3 > t.size()) return false;
  std::string_view mon = t.substr(i, 3);
  for (int m = 0; m < 12; ++m)
    if (iequals(mon, kMonthNames[m])) f.month = m + 1;
  if (!f.month) return false;
  i += 3;
  if (!expect(i, '-') || !digits(i, 4, f.year) || !expect(i, ' ') || !digits(i, 2, f.hour) || !expect(i, ':') ||
      !digits(i, 2, f.minute) || !expect(i, ':') || !digits(i, 2, f.second) || !expect(i, ' '))
    return false;
  if (i >= t.size() || (t[i] != '+' && t[i] != '-')) return false;
  bool negative = t[i++] == '-';
  if (!digits(i, 4, f.zone) || i != t.size()) return false;
  if (negative) f.zone = -f.zone;
  return true;
}

std::string describe_date(const DateFields& f) {
  std::string month = f.month >= 1 && f.month <= 12 ? kMonthNames[f.month - 1] : fmt::format("month{}", f.month);
  int64_t zone = f.zone;
  return fmt::format("{:02}-{}-{:04} {:02}:{:02}:{:02} {}{:04}", f.day, month, f.year, f.hour, f.minute, f.second,
                     zone < 0 ? '-' : '+', zone < 0 ? -zone : zone);
}

// --- the reader --------------------------------------------------------------------

FetchReader::FetchReader(FetchSource& source, char* buffer, size_t capacity, size_t length, FetchLimits limits)
    : source_(source), buf_(buffer), cap_(capacity), end_(length), limits_(std::move(limits)) {}

size_t FetchReader::release() {
  size_t n = end_ - start_;
  if (start_ > 0 && n > 0) std::memmove(buf_, buf_ + start_, n);
  start_ = 0;
  end_ = n;
  return n;
}

void FetchReader::fill() {
  // Only called once every byte in the buffer was used.
  start_ = end_ = 0;
  end_ = source_.read(buf_, cap_);
}

void FetchReader::bad(std::string_view what) {
  std::string_view near = std::string_view(line_).substr(std::min(pos_, line_.size()));
  source_.unparsable(fmt::format("{} (at {})", what, shown(near.substr(0, 40))));
  throw std::logic_error("FetchSource::unparsable returned");
}

void FetchReader::start_response() {
  line_.clear();
  pos_ = 0;
  text_ = literals_ = 0;
  depth_ = 0;
}

void FetchReader::count_text(std::string_view text) {
  if (text.size() > limits_.max_text - std::min(text_, limits_.max_text))
    source_.refuse(fmt::format("a response line longer than {} bytes", limits_.max_text), false);
  text_ += text.size();
  for (char c : text) {
    if (c == '(') {
      if (++depth_ > limits_.max_depth)
        source_.refuse(fmt::format("parentheses nested deeper than {}", limits_.max_depth), false);
    } else if (c == ')') {
      if (depth_) --depth_;
    }
  }
}

void FetchReader::read_line() {
  for (;;) {
    if (start_ == end_) fill();
    const char* p = buf_ + start_;
    size_t avail = end_ - start_;
    const void* nl = std::memchr(p, '\n', avail);
    size_t n = nl ? static_cast<size_t>(static_cast<const char*>(nl) - p) : avail;
    count_text(std::string_view(p, nl ? n + 1 : n));
    line_.append(p, n);
    start_ += nl ? n + 1 : n;
    if (nl) {
      if (!line_.empty() && line_.back() == '\r') line_.pop_back();
      return;
    }
  }
}

void FetchReader::check_literal(uint64_t size) {
  if (size > limits_.max_literal)
    source_.refuse(fmt::format("a literal of {} bytes, over {}", size,
                               limits_.literal_what.empty()
                                   ? fmt::format("the limit of {} bytes", limits_.max_literal)
                                   : limits_.literal_what),
                   false);
  literals_ += size;
  text_ += kPerLiteralText;
  if (literals_ > limits_.max_literal + (1u << 20))
    source_.refuse(fmt::format("{} bytes of literals in one response", literals_), false);
  if (text_ > limits_.max_text) source_.refuse(fmt::format("a response line longer than {} bytes", limits_.max_text), false);
}

uint64_t FetchReader::literal_size_at_end(size_t from) {
  bool malformed = false;
  auto size = parse_literal_size(std::string_view(line_).substr(from), &malformed);
  if (malformed) source_.refuse("a literal of an impossible size", true);
  if (!size) return UINT64_MAX;
  check_literal(*size);
  return *size;
}

void FetchReader::skip_literal(uint64_t size) {
  while (size > 0) {
    if (start_ == end_) fill();
    size_t n = static_cast<size_t>(std::min<uint64_t>(size, end_ - start_));
    start_ += n;
    size -= n;
  }
}

template <class Buffered, class Direct>
void FetchReader::literal_bytes(uint64_t size, Buffered&& buffered, Direct&& direct) {
  uint64_t left = size;
  while (left > 0) {
    if (start_ == end_) {
      if (left < cap_) {
        fill();
      } else {
        left -= direct(left);
        continue;
      }
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, end_ - start_));
    buffered(std::string_view(buf_ + start_, n));
    start_ += n;
    left -= n;
  }
}

void FetchReader::read_literal(std::string& out, uint64_t size) {
  out.clear();
  if (size >= kReserveFrom && out.capacity() < size) out.reserve(static_cast<size_t>(std::min(size, kReserveAtMost)));
  literal_bytes(
      size, [&](std::string_view piece) { out.append(piece); },
      [&](uint64_t left) {
        // A large rest goes from the connection straight into the body, in
        // pieces that double: only what arrives is ever touched.
        size_t step = static_cast<size_t>(std::min<uint64_t>(left, std::max(kDirectStep, out.size())));
        size_t at = out.size();
        out.resize(at + step);
        for (size_t got = 0; got < step;) got += source_.read(out.data() + at + got, step - got);
        return step;
      });
}

void FetchReader::skip_rest_of_response() {
  // Only the line last read can announce a literal (an empty line after one does not again).
  for (size_t from = 0;;) {
    uint64_t size = literal_size_at_end(from);
    if (size == UINT64_MAX) return;
    skip_literal(size);
    from = line_.size();
    read_line();
  }
}

FetchReader::Kind FetchReader::next(FetchData& data, std::string& body) {
  start_response();
  read_line();
  std::string_view l = line_;
  if (l.size() >= 2 && l[0] == '*' && l[1] == ' ') {
    size_t i = 2;
    uint64_t seq = 0;
    while (i < l.size() && digit(l[i]) && seq <= UINT32_MAX) seq = seq * 10 + static_cast<uint64_t>(l[i++] - '0');
    if (i > 2 && i + 6 <= l.size() && l[i] == ' ' && iequals(l.substr(i + 1, 5), "FETCH") &&
        (i + 6 == l.size() || l[i + 6] == ' ')) {
      if (seq == 0 || seq > UINT32_MAX) bad("a FETCH response with an impossible sequence number");
      data.clear();
      data.seq = static_cast<uint32_t>(seq);
      pos_ = i + 6;
      expect(' ', "a space after FETCH");
      parse_fetch(data, body);
      line_.clear();
      return Kind::fetch;
    }
    bool bye = istarts(l.substr(2), "BYE") && (l.size() == 5 || l[5] == ' ');
    skip_rest_of_response();
    return bye ? Kind::bye : Kind::other;
  }
  if (!l.empty() && l[0] == '+') {
    skip_rest_of_response();
    return Kind::other;
  }
  skip_rest_of_response();
  size_t sp = line_.find(' ');
  if (sp == 0 || sp == std::string::npos) {
    pos_ = 0;
    bad("a line that is no IMAP response");
  }
  tag_.assign(line_, 0, sp);
  tagged_ = *parse_tagged_reply(line_, tag_);
  return Kind::tagged;
}

// --- the FETCH parser ----------------------------------------------------------------

void FetchReader::expect(char c, std::string_view what) {
  if (peek() != c || at_end()) bad(fmt::format("expected {}", what));
  ++pos_;
}

void FetchReader::skip_spaces() {
  while (pos_ < line_.size() && line_[pos_] == ' ') ++pos_;
}

std::string_view FetchReader::word() {
  size_t start = pos_;
  while (pos_ < line_.size()) {
    char c = line_[pos_];
    if (c == ' ' || c == '(' || c == ')' || c == '"' || c == '{' || control(c)) break;
    ++pos_;
  }
  if (pos_ == start) bad("expected a value");
  return std::string_view(line_).substr(start, pos_ - start);
}

uint64_t FetchReader::number(uint64_t max, std::string_view what) {
  size_t start = pos_;
  uint64_t n = 0;
  while (pos_ < line_.size() && digit(line_[pos_])) {
    uint64_t d = static_cast<uint64_t>(line_[pos_] - '0');
    if (n > (max - d) / 10) bad(fmt::format("{} too large", what));
    n = n * 10 + d;
    ++pos_;
  }
  if (pos_ == start) bad(fmt::format("expected {}", what));
  return n;
}

std::string_view FetchReader::item_name() {
  size_t start = pos_;
  while (pos_ < line_.size() && name_char(line_[pos_])) ++pos_;
  if (pos_ == start) bad("expected a FETCH item");
  if (peek() == '[') {
    // A section: up to the first ']' outside a quoted string (no literals).
    bool in_quotes = false;
    for (++pos_;; ++pos_) {
      if (at_end()) bad("an unterminated section");
      char c = line_[pos_];
      if (in_quotes && c == '\\') ++pos_;
      else if (c == '"') in_quotes = !in_quotes;
      else if (c == ']' && !in_quotes) break;
    }
    ++pos_;
  }
  if (peek() == '<') {
    ++pos_;
    number(UINT64_MAX / 10, "a partial origin");
    expect('>', "'>'");
  }
  return std::string_view(line_).substr(start, pos_ - start);
}

void FetchReader::quoted(std::string* out) {
  expect('"', "a quoted string");
  for (;;) {
    size_t start = pos_;
    while (pos_ < line_.size() && line_[pos_] != '"' && line_[pos_] != '\\') ++pos_;
    if (out) out->append(line_, start, pos_ - start);
    if (at_end()) bad("an unterminated quoted string");
    if (line_[pos_] == '"') {
      ++pos_;
      return;
    }
    ++pos_;  // a backslash: the next byte as it is
    if (at_end()) bad("an unterminated quoted string");
    if (out) out->push_back(line_[pos_]);
    ++pos_;
  }
}

void FetchReader::stream_literal(FetchData& data, uint64_t size) {
  data.body_size = size;
  try {
    data.body_sink = large_.open(size);
    if (!data.body_sink) throw Error(ErrorKind::internal, "no sink for a streamed message body");
  } catch (...) {
    data.body_error = std::current_exception();
  }
  auto pass = [&](std::string_view piece) {
    if (data.body_error) return;
    try {
      data.body_sink->write(piece);
    } catch (...) {
      data.body_error = std::current_exception();
      data.body_sink.reset();
    }
  };
  std::string direct;
  literal_bytes(size, pass, [&](uint64_t left) {
    // A large rest goes from the connection to the sink through one buffer.
    if (direct.empty()) direct.resize(kStreamStep);
    size_t step = static_cast<size_t>(std::min<uint64_t>(left, direct.size()));
    for (size_t got = 0; got < step;) got += source_.read(direct.data() + got, step - got);
    pass(std::string_view(direct.data(), step));
    return step;
  });
}

void FetchReader::literal_value(std::string* out, FetchData* data) {
  expect('{', "a literal");
  size_t start = pos_;
  uint64_t size = 0;
  bool impossible = false;
  while (pos_ < line_.size() && digit(line_[pos_])) {
    if (size > (UINT64_MAX - 9) / 10) impossible = true;
    else size = size * 10 + static_cast<uint64_t>(line_[pos_] - '0');
    ++pos_;
  }
  if (pos_ == start) bad("expected a literal's size");
  if (peek() == '+') ++pos_;
  expect('}', "'}'");
  if (!at_end()) bad("a literal announced before the end of a line");
  if (impossible) source_.refuse("a literal of an impossible size", true);
  check_literal(size);
  if (data && large_.open && size >= large_.from) stream_literal(*data, size);
  else if (out) read_literal(*out, size);
  else skip_literal(size);
  line_.clear();
  pos_ = 0;
  read_line();
}

void FetchReader::skip_value(uint32_t depth) {
  char c = peek();
  if (at_end()) bad("expected a value");
  if (c == '(') {
    if (depth >= limits_.max_depth)
      source_.refuse(fmt::format("parentheses nested deeper than {}", limits_.max_depth), false);
    ++pos_;
    skip_spaces();
    while (peek() != ')' || at_end()) {
      skip_value(depth + 1);
      if (peek() == ')' && !at_end()) break;
      expect(' ', "a space or ')'");
      skip_spaces();
    }
    ++pos_;
  } else if (c == '"') {
    quoted(nullptr);
  } else if (c == '{') {
    literal_value(nullptr);
  } else {
    word();
  }
}

void FetchReader::parse_fetch(FetchData& data, std::string& body) {
  expect('(', "'('");
  skip_spaces();
  if (peek() != ')' || at_end()) {
    for (;;) {
      parse_item(data, body);
      if (peek() == ')' && !at_end()) break;
      expect(' ', "a space or ')'");
      skip_spaces();
      if (peek() == ')' && !at_end()) break;
    }
  }
  ++pos_;
  if (!at_end()) bad("text after a FETCH response");
}

void FetchReader::parse_flags(FetchData& data) {
  expect('(', "a flag list");
  data.flags.clear();
  data.has_flags = true;
  FlagCollector flags(data.flags);
  skip_spaces();
  while (!(peek() == ')' && !at_end())) {
    size_t start = pos_;
    while (pos_ < line_.size() && line_[pos_] != ' ' && line_[pos_] != '(' && line_[pos_] != ')') ++pos_;
    if (pos_ == start) bad("expected a flag");
    flags.add(std::string_view(line_).substr(start, pos_ - start));
    skip_spaces();
  }
  ++pos_;
  flags.finish(data.anomalies);
}

void FetchReader::parse_labels(FetchData& data) {
  // Gmail's labels: system ones as atoms ("\\Inbox"), the others as astrings.
  constexpr size_t kMaxLabels = 10000;
  expect('(', "a label list");
  data.gm_labels.clear();
  data.has_labels = true;
  skip_spaces();
  while (!(peek() == ')' && !at_end())) {
    if (at_end()) bad("an unterminated label list");
    std::string label;
    char c = peek();
    if (c == '"') quoted(&label);
    else if (c == '{') literal_value(&label);
    else label = word();
    if (data.gm_labels.size() < kMaxLabels) data.gm_labels.push_back(std::move(label));
    skip_spaces();
  }
  ++pos_;
}

void FetchReader::parse_internaldate(FetchData& data) {
  if (peek() != '"') {
    std::string_view w = word();
    if (!iequals(w, "NIL")) bad("expected a date");
    return;
  }
  scratch_.clear();
  quoted(&scratch_);
  data.has_internaldate = true;
  DateFields fields;
  if (!parse_date_fields(scratch_, fields)) {
    data.anomalies.push_back(
        fmt::format("an unreadable INTERNALDATE {}: archived without a date", shown(scratch_)));
  } else if (!date_from_fields(fields, data.internaldate, data.internaldate_tz)) {
    data.anomalies.push_back(
        fmt::format("an impossible INTERNALDATE \"{}\": archived without a date", describe_date(fields)));
  }
}

void FetchReader::parse_item(FetchData& data, std::string& body) {
  std::string_view name = item_name();
  expect(' ', "a space after a FETCH item");
  if (iequals(name, "UID")) {
    data.uid = static_cast<uint32_t>(number(UINT32_MAX, "a UID"));
    if (data.uid == 0) bad("UID 0");
  } else if (iequals(name, "FLAGS")) {
    parse_flags(data);
  } else if (iequals(name, "INTERNALDATE")) {
    parse_internaldate(data);
  } else if (iequals(name, "RFC822.SIZE")) {
    data.size = number(INT64_MAX, "a size");
    data.has_size = true;
  } else if (iequals(name, "MODSEQ")) {
    expect('(', "'('");
    data.modseq = number(INT64_MAX, "a mod-sequence");
    expect(')', "')'");
  } else if (iequals(name, "X-GM-MSGID")) {
    data.gm_msgid = number(UINT64_MAX, "an X-GM-MSGID");
  } else if (iequals(name, "X-GM-THRID")) {
    data.gm_thrid = number(UINT64_MAX, "an X-GM-THRID");
  } else if (iequals(name, "X-GM-LABELS")) {
    parse_labels(data);
  } else if (iequals(name, "BODY[]") || (istarts(name, "BODY[]<"))) {
    data.has_body = true;
    body.clear();
    char c = peek();
    data.body_sink.reset();
    data.body_error = nullptr;
    if (c == '{' && !at_end()) {
      literal_value(&body, &data);
    } else if (c == '"') {
      quoted(&body);
      if (body.size() > limits_.max_literal)
        source_.refuse(fmt::format("a quoted message body of {} bytes, over {}", body.size(),
                                   limits_.literal_what.empty()
                                       ? fmt::format("the limit of {} bytes", limits_.max_literal)
                                       : limits_.literal_what),
                       false);
    } else if (!iequals(word(), "NIL")) {
      bad("expected a message body");
    }
    if (!data.body_sink && !data.body_error) data.body_size = body.size();
  } else {
    skip_value(0);
  }
}

// --- replay (fuzzing and tests) --------------------------------------------------------

namespace {

struct ReplayEnd {};

class ReplaySource final : public FetchSource {
 public:
  ReplaySource(std::string_view data, size_t piece) : data_(data), piece_(piece) {}
  size_t read(char* buf, size_t n) override {
    if (pos_ >= data_.size()) throw ReplayEnd{};
    n = std::min(n, data_.size() - pos_);
    if (piece_) n = std::min(n, piece_);
    std::memcpy(buf, data_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  [[noreturn]] void refuse(const std::string& violation, bool garbled) override {
    throw Error(ErrorKind::protocol, violation + (garbled ? " (garbled)" : ""));
  }
  [[noreturn]] void unparsable(const std::string& detail) override {
    throw Error(ErrorKind::protocol, "unparsable: " + detail);
  }
  bool done() const { return pos_ >= data_.size(); }

 private:
  std::string_view data_;
  size_t piece_;
  size_t pos_ = 0;
};

constexpr uint64_t kFnvStart = 1469598103934665603ull;
uint64_t fnv1a(std::string_view s, uint64_t h = kFnvStart) {
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

// A streamed body, summed up as replay_fetch shows a held one.
struct ReplaySink final : BodySink {
  void write(std::string_view piece) override {
    size += piece.size();
    hash = fnv1a(piece, hash);
  }
  uint64_t size = 0;
  uint64_t hash = kFnvStart;
};

}  // namespace

std::string replay_fetch(std::string_view bytes, size_t piece, const Endpoint& limits, uint64_t stream_from) {
  ReplaySource source(bytes, piece);
  std::vector<char> buffer(8192);
  FetchLimits l;
  l.max_literal = limits.max_message_size;
  l.literal_what = fmt::format("the maximum message size of {} bytes", limits.max_message_size);
  FetchReader reader(source, buffer.data(), buffer.size(), 0, l);
  if (stream_from != UINT64_MAX)
    reader.stream_large_bodies({stream_from, [](uint64_t) -> std::unique_ptr<BodySink> {
                                  return std::make_unique<ReplaySink>();
                                }});
  std::string out;
  FetchData data;
  std::string body;
  try {
    while (!(source.done() && !reader.has_unread())) {
      switch (reader.next(data, body)) {
        case FetchReader::Kind::fetch: {
          out += fmt::format("fetch seq={} uid={} flags={} date={}/{} size={} modseq={}", data.seq, data.uid,
                             data.has_flags ? fmt::format("{}", fmt::join(data.flags, ",")) : "-",
                             data.internaldate, data.internaldate_tz, data.has_size ? std::to_string(data.size) : "-",
                             data.modseq);
          if (data.has_body && data.body_sink) {
            auto& sink = static_cast<ReplaySink&>(*data.body_sink);
            out += fmt::format(" body={}:{:016x}", sink.size, sink.hash);
          } else if (data.has_body) {
            out += fmt::format(" body={}:{:016x}", body.size(), fnv1a(body));
          }
          for (auto& a : data.anomalies) out += " anomaly=" + a;
          out += '\n';
          break;
        }
        case FetchReader::Kind::tagged:
          out += fmt::format("tagged {} {}\n", reader.tag(), reader.tagged().status);
          break;
        case FetchReader::Kind::bye: out += "bye\n"; break;
        case FetchReader::Kind::other: out += "other\n"; break;
      }
    }
  } catch (const ReplayEnd&) {
    out += "stop: the input ended inside a response\n";
  } catch (const Error& e) {
    out += "stop: " + e.message() + "\n";
  }
  return out;
}

}  // namespace imapstage::imap

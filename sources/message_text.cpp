#include "sources/message_text.h"

#include <cstring>
#include <strings.h>
#include <vector>

#include "common/civil_time.h"
#include "common/message_id.h"

namespace imapstage::sources {

namespace {

constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
constexpr const char* kDays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};

bool leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int month_of(std::string_view s) {
  if (s.size() < 3) return 0;
  for (int m = 0; m < 12; ++m)
    if (strncasecmp(s.data(), kMonths[m], 3) == 0 && (s.size() == 3 || std::isalpha(static_cast<unsigned char>(s[3]))))
      return m + 1;
  return 0;
}

bool is_day_name(std::string_view s) {
  if (s.size() < 3) return false;
  for (auto d : kDays)
    if (strncasecmp(s.data(), d, 3) == 0) return true;
  return false;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

int to_int(std::string_view s) {
  int v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

std::vector<std::string_view> tokens(std::string_view s, const char* separators) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::strchr(separators, s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !std::strchr(separators, s[j])) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// "hh:mm" or "hh:mm:ss".
bool parse_time(std::string_view s, int& hh, int& mm, int& ss) {
  auto parts = tokens(s, ":");
  if (parts.size() < 2 || parts.size() > 3 || s.front() == ':' || s.back() == ':') return false;
  for (auto p : parts)
    if (!all_digits(p) || p.size() > 2) return false;
  hh = to_int(parts[0]);
  mm = to_int(parts[1]);
  ss = parts.size() == 3 ? to_int(parts[2]) : 0;
  return hh <= 23 && mm <= 59 && ss <= 60;
}

// "+0200", "-0700", and the obsolete names of RFC 5322 section 4.3.
bool parse_zone(std::string_view s, int32_t& minutes) {
  if (s.size() == 5 && (s[0] == '+' || s[0] == '-') && all_digits(s.substr(1))) {
    int h = to_int(s.substr(1, 2)), m = to_int(s.substr(3, 2));
    if (h > 18 || m > 59) return false;
    minutes = (s[0] == '-' ? -1 : 1) * (h * 60 + m);
    return true;
  }
  static const std::pair<const char*, int> names[] = {{"UT", 0},        {"UTC", 0},       {"GMT", 0},
                                                     {"Z", 0},         {"EST", -5 * 60}, {"EDT", -4 * 60},
                                                     {"CST", -6 * 60}, {"CDT", -5 * 60}, {"MST", -7 * 60},
                                                     {"MDT", -6 * 60}, {"PST", -8 * 60}, {"PDT", -7 * 60}};
  for (auto& [name, offset] : names)
    if (s.size() == std::strlen(name) && strncasecmp(s.data(), name, s.size()) == 0) {
      minutes = offset;
      return true;
    }
  return false;
}

std::optional<DateTime> make(int year, int month, int day, int hh, int mm, int ss, int32_t tz) {
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (year < 1970 || year > 9999 || month < 1 || month > 12 || day < 1 ||
      day > mdays[month - 1] + (month == 2 && leap(year) ? 1 : 0))
    return std::nullopt;
  int64_t local = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
                  hh * 3600 + mm * 60 + ss;
  int64_t t = local - static_cast<int64_t>(tz) * 60;
  if (t < 86400) return std::nullopt;  // as the IMAP side: nothing before 1970-01-02
  return DateTime{t, tz};
}

}  // namespace

void append_crlf(std::string& out, std::string_view in, bool& prev_cr) {
  size_t start = 0;
  while (start < in.size()) {
    const void* hit = std::memchr(in.data() + start, '\n', in.size() - start);
    if (!hit) {
      out.append(in.substr(start));
      prev_cr = in.back() == '\r';
      return;
    }
    size_t lf = static_cast<const char*>(hit) - in.data();
    bool cr_before = lf > start ? in[lf - 1] == '\r' : (lf > 0 ? in[lf - 1] == '\r' : prev_cr);
    out.append(in.substr(start, lf - start));
    out.append(cr_before ? "\n" : "\r\n");
    start = lf + 1;
    prev_cr = false;
  }
  if (!in.empty() && start == in.size()) prev_cr = false;
}

uint64_t crlf_size(std::string_view bytes) {
  uint64_t size = bytes.size();
  for (size_t i = 0; i < bytes.size(); ++i)
    if (bytes[i] == '\n' && (i == 0 || bytes[i - 1] != '\r')) ++size;
  return size;
}

bool looks_like_message(std::string_view start) {
  if (start.substr(0, 5) == "From ") return true;
  size_t i = 0;
  while (i < start.size() && i < 1000) {
    unsigned char c = static_cast<unsigned char>(start[i]);
    if (c == ':') return i > 0;
    if (c <= 0x20 || c >= 0x7f) return false;
    ++i;
  }
  return false;
}

std::optional<DateTime> parse_rfc5322_date(std::string_view text) {
  // Drop a trailing comment ("(CEST)") and split on white space and commas.
  if (auto paren = text.find('('); paren != std::string_view::npos) text = text.substr(0, paren);
  auto t = tokens(text, " \t\r\n,");
  size_t i = 0;
  if (i < t.size() && is_day_name(t[i])) ++i;
  if (t.size() < i + 4) return std::nullopt;
  if (!all_digits(t[i]) || t[i].size() > 2) return std::nullopt;
  int day = to_int(t[i]);
  int month = month_of(t[i + 1]);
  if (!month || !all_digits(t[i + 2])) return std::nullopt;
  int year = to_int(t[i + 2]);
  if (t[i + 2].size() == 2) year += year < 50 ? 2000 : 1900;  // obsolete two-digit years
  else if (t[i + 2].size() == 3) year += 1900;
  int hh, mm, ss;
  if (!parse_time(t[i + 3], hh, mm, ss)) return std::nullopt;
  int32_t tz = 0;
  if (t.size() > i + 4 && !parse_zone(t[i + 4], tz)) tz = 0;  // an unknown zone reads as UTC ("-0000")
  return make(year, month, day, hh, mm, ss, tz);
}

std::optional<DateTime> parse_from_line_date(std::string_view line) {
  if (line.substr(0, 5) == "From ") line.remove_prefix(5);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  auto t = tokens(line, " \t");
  // sender, then: Www Mmm dd hh:mm[:ss] [zone] yyyy [zone]
  for (size_t k = 1; k + 4 <= t.size(); ++k) {
    if (!is_day_name(t[k]) || !month_of(t[k + 1]) || !all_digits(t[k + 2]) || t[k + 2].size() > 2) continue;
    int hh, mm, ss;
    if (!parse_time(t[k + 3], hh, mm, ss)) continue;
    size_t y = k + 4;
    int32_t tz = 0;
    if (y < t.size() && parse_zone(t[y], tz)) ++y;
    if (y >= t.size() || !all_digits(t[y]) || t[y].size() != 4) continue;
    if (y + 1 < t.size()) parse_zone(t[y + 1], tz);
    return make(to_int(t[y]), month_of(t[k + 1]), to_int(t[k + 2]), hh, mm, ss, tz);
  }
  return std::nullopt;
}

std::optional<DateTime> date_from_headers(std::string_view message, archive::DateSource& source) {
  std::string received = header_field(message, "Received");
  if (auto semi = received.rfind(';'); semi != std::string::npos) {
    if (auto d = parse_rfc5322_date(std::string_view(received).substr(semi + 1))) {
      source = archive::DateSource::received;
      return d;
    }
  }
  if (auto d = parse_rfc5322_date(header_field(message, "Date"))) {
    source = archive::DateSource::date_header;
    return d;
  }
  return std::nullopt;
}

}  // namespace imapstage::sources

// imap::Session over libetpan (GnuTLS build). The only file that includes
// libetpan's IMAP headers; the connection (TCP, TLS verified with OpenSSL,
// our own stream drivers) is a net::Transport. Traps worked around here are
// described in shared notes "libetpan-and-dovecot": the replies to UID
// FETCH are read by our own streaming reader (fetch_reader.h) from the
// stream's buffer, several commands in flight, and APPEND is written by hand
// (exact bytes, LITERAL+, MULTIAPPEND).
#include "imap/session.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <exception>
#include <limits>
#include <stdexcept>

#include <libetpan/condstore.h>
#include <libetpan/mailimap.h>
#include <libetpan/mailimap_extension.h>
#include <libetpan/mailimap_oauth2.h>
#include <libetpan/mailimap_socket.h>
#include <libetpan/mailstream.h>
#include <libetpan/mailstream_low.h>
#include <libetpan/namespace.h>
// This header alone declares its functions without extern "C".
extern "C" {
#include <libetpan/libetpan_version.h>
}

#include <fmt/format.h>

#include "common/civil_time.h"
#include "common/error.h"
#include "imap/fetch_reader.h"
#include "imap/response_codes.h"
#include "imap/utf7.h"
#include "imap/wire_guard.h"
#include "net/transport.h"

namespace imapstage::imap {
namespace {

using Clock = std::chrono::steady_clock;

// --- small helpers ------------------------------------------------------------

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

const char* etpan_error_name(int r) {
  switch (r) {
    case MAILIMAP_NO_ERROR: return "no error";
    case MAILIMAP_NO_ERROR_AUTHENTICATED: return "preauthenticated";
    case MAILIMAP_NO_ERROR_NON_AUTHENTICATED: return "connected";
    case MAILIMAP_ERROR_BAD_STATE: return "command not allowed in this state";
    case MAILIMAP_ERROR_STREAM: return "connection lost or timed out";
    case MAILIMAP_ERROR_PARSE: return "unparsable server response";
    case MAILIMAP_ERROR_CONNECTION_REFUSED: return "connection refused";
    case MAILIMAP_ERROR_MEMORY: return "out of memory";
    case MAILIMAP_ERROR_FATAL: return "server closed the connection (BYE)";
    case MAILIMAP_ERROR_PROTOCOL: return "protocol error (BAD or unexpected tag)";
    case MAILIMAP_ERROR_DONT_ACCEPT_CONNECTION: return "server refused the connection";
    case MAILIMAP_ERROR_APPEND: return "APPEND failed";
    case MAILIMAP_ERROR_NOOP: return "NOOP failed";
    case MAILIMAP_ERROR_LOGOUT: return "LOGOUT failed";
    case MAILIMAP_ERROR_CAPABILITY: return "CAPABILITY failed";
    case MAILIMAP_ERROR_CREATE: return "CREATE failed";
    case MAILIMAP_ERROR_EXAMINE: return "EXAMINE failed";
    case MAILIMAP_ERROR_FETCH: return "FETCH failed";
    case MAILIMAP_ERROR_UID_FETCH: return "UID FETCH failed";
    case MAILIMAP_ERROR_LIST: return "LIST failed";
    case MAILIMAP_ERROR_LOGIN: return "login failed";
    case MAILIMAP_ERROR_LSUB: return "LSUB failed";
    case MAILIMAP_ERROR_SEARCH: return "SEARCH failed";
    case MAILIMAP_ERROR_UID_SEARCH: return "UID SEARCH failed";
    case MAILIMAP_ERROR_SELECT: return "SELECT failed";
    case MAILIMAP_ERROR_STATUS: return "STATUS failed";
    case MAILIMAP_ERROR_STORE: return "STORE failed";
    case MAILIMAP_ERROR_UID_STORE: return "UID STORE failed";
    case MAILIMAP_ERROR_SUBSCRIBE: return "SUBSCRIBE failed";
    case MAILIMAP_ERROR_STARTTLS: return "STARTTLS failed";
    case MAILIMAP_ERROR_INVAL: return "invalid argument";
    case MAILIMAP_ERROR_EXTENSION: return "extension command failed";
    case MAILIMAP_ERROR_SASL: return "SASL failed";
    case MAILIMAP_ERROR_SSL: return "TLS failed";
    default: return "libetpan error";
  }
}

// Errors after which the connection cannot be used any more.
bool kills_session(int r) {
  return r == MAILIMAP_ERROR_STREAM || r == MAILIMAP_ERROR_PARSE || r == MAILIMAP_ERROR_FATAL ||
         r == MAILIMAP_ERROR_MEMORY || r == MAILIMAP_ERROR_CONNECTION_REFUSED ||
         r == MAILIMAP_ERROR_DONT_ACCEPT_CONNECTION || r == MAILIMAP_ERROR_SSL;
}

constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

bool leap_year(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

DateFields fields_of(const mailimap_date_time* dt) {
  return {dt->dt_day, dt->dt_month, dt->dt_year, dt->dt_hour, dt->dt_min, dt->dt_sec, dt->dt_zone};
}

// --- stubs for the replay stream driver ------------------------------------------------

void plain_cancel(mailstream_low*) {}
struct mailstream_cancel* plain_get_cancel(mailstream_low*) { return nullptr; }
int plain_idle(mailstream_low*) { return -1; }

// --- IMAP syntax -----------------------------------------------------------------------

bool atom_char(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  if (u <= 0x20 || u >= 0x7f) return false;
  return std::strchr("(){%*\"\\]", c) == nullptr;
}

// True if `s` can go to a server as a quoted string: 7-bit, no NUL, CR or LF
// (RFC 3501 QUOTED-CHAR). libetpan sends mailbox names as atoms or quoted
// strings with only '"' and '\\' escaped, so a name that fails this would
// end the command line early and start another.
bool quotable(std::string_view s) {
  for (char c : s)
    if (c == '\r' || c == '\n' || c == '\0' || static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

// Throws Error(protocol, never) naming the folder unless quotable(name_raw).
void check_name(std::string_view name_raw, const std::string& where) {
  if (quotable(name_raw)) return;
  throw Error(ErrorKind::protocol,
              fmt::format("the folder name {:?} cannot be sent back to {}: it holds a line break, a NUL or 8-bit "
                          "bytes (not modified UTF-7); the folder is left out",
                          std::string(name_raw), where),
              Retry::never, {.folder = std::string(name_raw), .server = where});
}

// A mailbox name or other string as an IMAP quoted string.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0' || static_cast<unsigned char>(c) >= 0x80)
      throw Error(ErrorKind::protocol, fmt::format("cannot send the name {:?} to the server", std::string(s)));
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

constexpr std::string_view kSystemFlags[] = {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"};

// One of the five flags every server knows, or a keyword: what no server
// rejects for its syntax.
bool plain_flag(std::string_view f) {
  if (!f.empty() && f[0] != '\\') return true;
  return std::any_of(std::begin(kSystemFlags), std::end(kSystemFlags), [&](std::string_view s) { return iequals(f, s); });
}

std::string flag_list(const std::vector<std::string>& flags) {
  std::string out = "(";
  bool first = true;
  for (auto& f : flags) {
    if (iequals(f, "\\Recent")) continue;
    if (!valid_flag_name(f)) throw Error(ErrorKind::protocol, fmt::format("invalid flag name {:?}", f));
    if (!first) out += ' ';
    out += f;
    first = false;
  }
  return out + ")";
}

std::string flag_to_string(const mailimap_flag* f) {
  switch (f->fl_type) {
    case MAILIMAP_FLAG_ANSWERED: return "\\Answered";
    case MAILIMAP_FLAG_FLAGGED: return "\\Flagged";
    case MAILIMAP_FLAG_DELETED: return "\\Deleted";
    case MAILIMAP_FLAG_SEEN: return "\\Seen";
    case MAILIMAP_FLAG_DRAFT: return "\\Draft";
    case MAILIMAP_FLAG_KEYWORD: return f->fl_data.fl_keyword ? f->fl_data.fl_keyword : "";
    case MAILIMAP_FLAG_EXTENSION: return std::string("\\") + (f->fl_data.fl_extension ? f->fl_data.fl_extension : "");
    default: return "";
  }
}

bool in_ranges(const std::vector<UidRange>& ranges, uint32_t uid) {
  for (auto& r : ranges)
    if (uid >= r.first && (r.last == 0 || uid <= r.last)) return true;
  return false;
}

void noop_progress(size_t, size_t, void*) {}

}  // namespace

// --- public free functions -------------------------------------------------------------

std::string Endpoint::address() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, effective_port());
  return fmt::format("{}:{}", host, effective_port());
}

std::string to_sequence_set(const std::vector<UidRange>& ranges) {
  std::string out;
  for (auto& r : ranges) {
    if (!out.empty()) out += ',';
    if (r.last == 0) out += fmt::format("{}:*", r.first);
    else if (r.first == r.last) out += std::to_string(r.first);
    else out += fmt::format("{}:{}", r.first, r.last);
  }
  return out;
}

bool parse_date_time(std::string_view t, int64_t& unix_seconds, int32_t& tz_minutes) {
  if (t.size() >= 2 && t.front() == '"' && t.back() == '"') t = t.substr(1, t.size() - 2);
  auto digits = [&](size_t pos, size_t n, int& v) {
    if (pos + n > t.size()) return false;
    v = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      v = v * 10 + (t[i] - '0');
    }
    return true;
  };
  size_t i = 0;
  int day = 0;
  if (t.size() > 1 && t[0] == ' ' && digits(1, 1, day)) {
    i = 2;
  } else if (digits(0, 2, day)) {
    i = 2;
  } else if (digits(0, 1, day)) {
    i = 1;
  } else {
    return false;
  }
  if (i + 1 + 3 + 1 > t.size() || t[i] != '-' || t[i + 4] != '-') return false;
  std::string_view mon = t.substr(i + 1, 3);
  int month = 0;
  for (int m = 0; m < 12; ++m)
    if (iequals(mon, kMonths[m])) month = m + 1;
  if (!month) return false;
  i += 5;
  int year, hh, mm, ss, zh, zm;
  if (!digits(i, 4, year) || t.size() != i + 4 + 1 + 8 + 1 + 5) return false;
  i += 4;
  if (t[i] != ' ' || !digits(i + 1, 2, hh) || t[i + 3] != ':' || !digits(i + 4, 2, mm) || t[i + 6] != ':' ||
      !digits(i + 7, 2, ss) || t[i + 9] != ' ')
    return false;
  i += 10;
  if (t[i] != '+' && t[i] != '-') return false;
  if (!digits(i + 1, 2, zh) || !digits(i + 3, 2, zm)) return false;
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (day < 1 || day > mdays[month - 1] || hh > 23 || mm > 59 || ss > 60 || zm > 59) return false;
  tz_minutes = (t[i] == '-' ? -1 : 1) * (zh * 60 + zm);
  unix_seconds = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
                 hh * 3600 + mm * 60 + ss - static_cast<int64_t>(tz_minutes) * 60;
  return true;
}

bool valid_internaldate(int64_t unix_seconds, int32_t tz_minutes) {
  constexpr int64_t kFirst = 86400;               // 1970-01-02 00:00:00 UTC
  constexpr int64_t kLast = 253402128000;          // 9999-12-30 00:00:00 UTC
  return unix_seconds >= kFirst && unix_seconds <= kLast && tz_minutes >= -18 * 60 && tz_minutes <= 18 * 60;
}

bool date_from_fields(const DateFields& f, int64_t& unix_seconds, int32_t& tz_minutes) {
  unix_seconds = 0;
  tz_minutes = 0;
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int64_t zone = f.zone;  // e.g. -700 for -0700
  int64_t abs_zone = zone < 0 ? -zone : zone;
  if (f.month < 1 || f.month > 12 || f.year < 1 || f.year > 9999 || f.day < 1 ||
      f.day > mdays[f.month - 1] + (f.month == 2 && leap_year(f.year) ? 1 : 0) || f.hour < 0 || f.hour > 23 ||
      f.minute < 0 || f.minute > 59 || f.second < 0 || f.second > 60 || abs_zone % 100 > 59 || abs_zone / 100 > 18)
    return false;
  int32_t tz = static_cast<int32_t>((zone < 0 ? -1 : 1) * ((abs_zone / 100) * 60 + abs_zone % 100));
  int64_t days = days_from_civil(f.year, static_cast<unsigned>(f.month), static_cast<unsigned>(f.day));
  int64_t local = days * 86400 + f.hour * 3600 + f.minute * 60 + f.second;
  int64_t t = local - static_cast<int64_t>(tz) * 60;
  if (!valid_internaldate(t, tz)) return false;
  unix_seconds = t;
  tz_minutes = tz;
  return true;
}

bool valid_flag_name(std::string_view f) {
  if (f.empty() || f.size() > kMaxFlagLength || iequals(f, "\\Recent")) return false;
  size_t i = f[0] == '\\' ? 1 : 0;
  if (i == f.size()) return false;
  for (; i < f.size(); ++i)
    if (!atom_char(f[i])) return false;
  return true;
}

std::optional<std::string> append_problem(const AppendItem& item) {
  if (item.internaldate != 0 && !valid_internaldate(item.internaldate, item.internaldate_tz))
    return fmt::format("its INTERNALDATE ({} s, zone {} min) is impossible; it cannot be sent", item.internaldate,
                       item.internaldate_tz);
  if (item.flags.size() > kMaxKeywords + std::size(kSystemFlags))
    return fmt::format("it has {} flags and keywords, more than {}", item.flags.size(),
                       kMaxKeywords + std::size(kSystemFlags));
  for (auto& f : item.flags)
    if (!valid_flag_name(f))
      return fmt::format("its flag {:?} is not a valid IMAP flag (atom characters, at most {} bytes)",
                         f.substr(0, 64), kMaxFlagLength);
  return std::nullopt;
}

std::string format_date_time(int64_t unix_seconds, int32_t tz_minutes) {
  if (!valid_internaldate(unix_seconds, tz_minutes) && !(unix_seconds == 0 && tz_minutes == 0))
    return fmt::format("(impossible date {} {:+})", unix_seconds, tz_minutes);
  int64_t local = unix_seconds + static_cast<int64_t>(tz_minutes) * 60;
  int64_t days = local >= 0 ? local / 86400 : (local - 86399) / 86400;
  int64_t secs = local - days * 86400;
  int64_t y;
  unsigned m, d;
  civil_from_days(days, y, m, d);
  int32_t tz = tz_minutes < 0 ? -tz_minutes : tz_minutes;
  return fmt::format("{:02}-{}-{:04} {:02}:{:02}:{:02} {}{:02}{:02}", d, kMonths[m - 1], y, secs / 3600,
                     (secs / 60) % 60, secs % 60, tz_minutes < 0 ? '-' : '+', tz / 60, tz % 60);
}

// --- Session ----------------------------------------------------------------------------

struct Session::Impl {
  Endpoint endpoint;
  std::string where;  // host:port
  mailimap* imap = nullptr;
  std::set<std::string> caps;
  uint64_t append_limit = 0;
  bool dead = false;
  std::string folder;  // UTF-8 name of the selected mailbox, for errors
  WireGuard guard;     // limits on what the server sends (read by the stream drivers)
  std::unique_ptr<net::Transport> transport;  // the socket and TLS layers; outlives the stream
  bool no_pipelining = false;  // an APPEND was answered NO or BAD: synchronizing literals only
  LargeBodies large_bodies;    // bodies streamed to sinks (stream_large_bodies)

  ~Impl() {
    close_stream();
    if (imap) mailimap_free(imap);
  }

  ErrorWhere here(std::string_view folder_raw = {}) const {
    ErrorWhere w;
    w.server = where;
    w.folder = folder_raw.empty() ? folder : utf7_decode(folder_raw);
    return w;
  }

  // Closes the connection without a LOGOUT.
  void close_stream() {
    if (imap && imap->imap_stream) {
      mailstream_close(imap->imap_stream);
      imap->imap_stream = nullptr;
    }
    dead = true;
  }

  std::string server_text() const {
    if (imap && imap->imap_response && *imap->imap_response) return imap->imap_response;
    return "";
  }

  void ensure_alive() const {
    if (dead || !imap || !imap->imap_stream)
      throw Error(ErrorKind::network, fmt::format("the connection to {} is closed", where), Retry::now, here());
  }

  // Throws the Error for a limit the server broke (see WireGuard).
  [[noreturn]] void refuse_wire(std::string_view what, std::string_view folder_raw = {}) {
    close_stream();
    if (guard.too_slow())
      throw Error(ErrorKind::network, fmt::format("{} at {}: {}", what, where, guard.violation()), Retry::now,
                  here(folder_raw));
    throw Error(ErrorKind::protocol,
                fmt::format("{}: {} sent {}; the connection was closed", what, where, guard.violation()),
                guard.garbled() ? Retry::now : Retry::never, here(folder_raw));
  }

  [[noreturn]] void die(std::string_view what, std::string_view detail, std::string_view folder_raw = {}) {
    if (guard.broken()) refuse_wire(what, folder_raw);
    // A BYE that says why (throttling), or a BYE after a response that did.
    if (auto hint = parse_throttle_hint(bye_text(detail))) throttled(what, *hint, detail, folder_raw);
    if (last_hint) throttled(what, *last_hint, detail, folder_raw);
    close_stream();
    throw Error(ErrorKind::network, fmt::format("{} at {}: {}", what, where, detail), Retry::now, here(folder_raw));
  }

  // The text of a BYE in `detail` ("... * BYE text"), or `detail`.
  static std::string_view bye_text(std::string_view detail) {
    size_t at = detail.find("BYE ");
    return at == std::string_view::npos ? detail : detail.substr(at + 4);
  }

  // Closes the connection (a throttling server closes it anyway, and what
  // was in flight is lost) and throws Error(throttled, now) carrying the
  // server's suggested wait.
  [[noreturn]] void throttled(std::string_view what, const ThrottleHint& hint, std::string_view text,
                              std::string_view folder_raw = {}) {
    close_stream();
    std::optional<std::chrono::milliseconds> after;
    if (hint.backoff_ms) after = std::chrono::milliseconds(*hint.backoff_ms);
    throw Error(ErrorKind::throttled, fmt::format("{}: {} throttles this account ({}): {}", what, where, hint.reason, text),
                Retry::now, here(folder_raw))
        .with_retry_after(after);
  }

  // The last completion seen with a throttling hint on this connection
  // (a BYE that follows it is throttling too).
  std::optional<ThrottleHint> last_hint;

  // When the NO/BAD/BYE `text` carries a throttling hint: throttled().
  void throw_if_throttled(std::string_view what, std::string_view text,
                          ThrottleContext context = ThrottleContext::download, std::string_view folder_raw = {}) {
    if (auto hint = parse_throttle_hint(text, context)) throttled(what, *hint, text, folder_raw);
  }

  // The server's text with the response code libetpan took apart put back ("[ATOM] text").
  std::string coded_server_text() const {
    const char* atom = imap && imap->imap_response_info ? imap->imap_response_info->rsp_atom : nullptr;
    std::string text = server_text();
    return atom && *atom ? fmt::format("[{}] {}", atom, text) : text;
  }

  // Throws the right Error for a libetpan result code `r` of `what`.
  [[noreturn]] void fail(int r, std::string_view what, std::string_view folder_raw = {}) {
    if (guard.broken()) refuse_wire(what, folder_raw);
    if (r != MAILIMAP_NO_ERROR && r != MAILIMAP_ERROR_STREAM && r != MAILIMAP_ERROR_PARSE && r != MAILIMAP_ERROR_MEMORY)
      throw_if_throttled(what, coded_server_text(), ThrottleContext::download, folder_raw);
    if (kills_session(r)) {
      std::string detail = etpan_error_name(r);
      if (r == MAILIMAP_ERROR_FATAL && !server_text().empty()) detail += ": " + server_text();
      if (r == MAILIMAP_ERROR_PARSE) {
        close_stream();
        throw Error(ErrorKind::protocol, fmt::format("{}: {} from {}", what, detail, where), Retry::now,
                    here(folder_raw));
      }
      die(what, detail, folder_raw);
    }
    throw_if_login_ended(what, folder_raw);
    std::string text = server_text();
    throw Error(ErrorKind::protocol,
                fmt::format("{}: {}", what, text.empty() ? std::string(etpan_error_name(r)) : text), Retry::never,
                here(folder_raw));
  }

  // RFC 5530: a NO [EXPIRED] or [AUTHENTICATIONFAILED] to a command after
  // login says the login no longer grants access (an OAuth2 token that
  // expired mid-session). A new login may succeed: the connection is dropped
  // and Error(network, now) thrown, so the caller reconnects (and renews the token).
  // (Throttling first: a NO that says the server throttles is throttled().)
  void throw_if_login_ended(std::string_view what, std::string_view folder_raw = {}) {
    throw_if_throttled(what, coded_server_text(), ThrottleContext::download, folder_raw);
    const char* atom = imap && imap->imap_response_info ? imap->imap_response_info->rsp_atom : nullptr;
    if (!atom || (strcasecmp(atom, "EXPIRED") != 0 && strcasecmp(atom, "AUTHENTICATIONFAILED") != 0)) return;
    std::string code = atom, text = server_text();
    close_stream();
    throw Error(ErrorKind::network,
                fmt::format("{} at {}: the server no longer accepts this login ({}): {}", what, where, code, text),
                Retry::now, here(folder_raw));
  }

  void check(int r, std::string_view what, std::string_view folder_raw = {}) {
    if (r != MAILIMAP_NO_ERROR) fail(r, what, folder_raw);
  }

  void refresh_capabilities() {
    ensure_alive();
    mailimap_capability_data* data = nullptr;
    int r = mailimap_capability(imap, &data);
    check(r, "CAPABILITY");
    caps.clear();
    append_limit = 0;
    if (data && data->cap_list) {
      for (clistiter* it = clist_begin(data->cap_list); it; it = clist_next(it)) {
        auto* c = static_cast<struct mailimap_capability*>(clist_content(it));
        std::string name;
        if (c->cap_type == MAILIMAP_CAPABILITY_AUTH_TYPE && c->cap_data.cap_auth_type)
          name = "AUTH=" + upper(c->cap_data.cap_auth_type);
        else if (c->cap_type == MAILIMAP_CAPABILITY_NAME && c->cap_data.cap_name)
          name = upper(c->cap_data.cap_name);
        if (name.empty()) continue;
        if (name.rfind("APPENDLIMIT=", 0) == 0) {
          try {
            append_limit = std::stoull(name.substr(12));
          } catch (...) {
          }
        }
        caps.insert(name);
      }
    }
    if (data) mailimap_capability_data_free(data);
  }

  bool has(std::string_view cap) const { return caps.count(upper(cap)) > 0; }

  // --- raw commands (bytes written by us, replies read line by line) ---

  std::string current_tag() const { return std::to_string(imap->imap_tag); }

  void write(std::string_view bytes, std::string_view what) {
    size_t off = 0;
    while (off < bytes.size()) {
      size_t n = std::min<size_t>(bytes.size() - off, 1 << 16);
      ssize_t w = mailstream_write(imap->imap_stream, bytes.data() + off, n);
      if (w < 0) die(what, "connection lost or timed out while sending");
      off += static_cast<size_t>(w);
    }
  }

  void flush(std::string_view what) {
    if (mailstream_flush(imap->imap_stream) == -1) die(what, "connection lost or timed out while sending");
  }

  // Reads one response line, with any literals in it read and dropped (their
  // bytes are replaced by "{N}"). Returns it without CRLF.
  std::string read_response_line(std::string_view what) {
    std::string line;
    for (;;) {
      char* got = mailimap_read_line(imap);
      if (!got) die(what, "connection lost or timed out while reading");
      std::string_view part(imap->imap_stream_buffer->str, imap->imap_stream_buffer->len);
      while (!part.empty() && (part.back() == '\n' || part.back() == '\r')) part.remove_suffix(1);
      line += part;
      // A literal at the end of the line: skip its bytes, then read on.
      bool malformed = false;
      std::optional<uint64_t> size = parse_literal_size(line, &malformed);
      if (malformed) {
        close_stream();
        throw Error(ErrorKind::protocol, fmt::format("{}: impossible literal size from {}", what, where), Retry::now,
                    here());
      }
      if (!size) return line;
      uint64_t n = *size;
      char buf[8192];
      while (n > 0) {
        ssize_t r = mailstream_read(imap->imap_stream, buf, static_cast<size_t>(std::min<uint64_t>(n, sizeof buf)));
        if (r <= 0) die(what, "connection lost or timed out while reading");
        n -= static_cast<uint64_t>(r);
      }
    }
  }

  // Reads until the tagged reply of `tag`; `on_untagged` sees "* ..." lines.
  // A "+" continuation makes it return with status "+".
  TaggedReply read_until_tagged(const std::string& tag, std::string_view what, bool stop_at_continuation,
                                const std::function<void(std::string_view)>& on_untagged = {}) {
    for (;;) {
      std::string line = read_response_line(what);
      if (line.rfind("+", 0) == 0) {
        if (stop_at_continuation) return {"+", "", line};
        continue;
      }
      if (line.rfind("* ", 0) == 0) {
        std::string_view rest = std::string_view(line).substr(2);
        if (rest.size() >= 3 && iequals(rest.substr(0, 3), "BYE")) die(what, "server closed the connection: " + line);
        if (on_untagged) on_untagged(rest);
        continue;
      }
      if (auto reply = parse_tagged_reply(line, tag)) return std::move(*reply);
      // Anything else means we no longer understand the conversation.
      close_stream();
      throw Error(ErrorKind::protocol, fmt::format("{}: unexpected reply from {}", what, where), Retry::now, here());
    }
  }

  // Sends "TAG <command>\r\n" and waits for the reply.
  TaggedReply command(const std::string& text, std::string_view what,
                      const std::function<void(std::string_view)>& on_untagged = {}) {
    ensure_alive();
    int r = mailimap_send_current_tag(imap);
    if (r != MAILIMAP_NO_ERROR) fail(r, what);
    std::string tag = current_tag();
    write(text, what);
    write("\r\n", what);
    flush(what);
    TaggedReply reply = read_until_tagged(tag, what, false, on_untagged);
    if (reply.status == "NO" || reply.status == "BAD")
      throw_if_throttled(what, reply.text,
                         text.rfind("APPEND", 0) == 0 || text.find("STORE") != std::string::npos
                             ? ThrottleContext::upload
                             : ThrottleContext::download);
    return reply;
  }

  // --- FETCH, read by our own reader (fetch_reader.h) ---

  // A body buffer up to this capacity is kept for the next message (fewer
  // allocations and page faults); a larger one is given back.
  static constexpr size_t kKeepCapacity = 4u << 20;

  // The connection under the FETCH reader: reads go to the stream's low
  // layer (the TLS reader or our socket driver, both fed to the guard for
  // the wait budget); every failure closes the connection and throws.
  class ReaderSource final : public FetchSource {
   public:
    explicit ReaderSource(Impl& s) : s_(s) {}
    size_t read(char* buf, size_t n) override {
      ssize_t r = mailstream_low_read(mailstream_get_low(s_.imap->imap_stream), buf, n);
      if (r <= 0) s_.die("UID FETCH", "connection lost or timed out while reading");
      return static_cast<size_t>(r);
    }
    [[noreturn]] void refuse(const std::string& violation, bool garbled) override {
      s_.close_stream();
      throw Error(ErrorKind::protocol,
                  fmt::format("UID FETCH: {} sent {}; the connection was closed", s_.where, violation),
                  garbled ? Retry::now : Retry::never, s_.here());
    }
    [[noreturn]] void unparsable(const std::string& detail) override {
      s_.close_stream();
      throw Error(ErrorKind::protocol,
                  fmt::format("UID FETCH: unparsable server response from {}: {}; the connection was closed",
                              s_.where, detail),
                  Retry::now, s_.here());
    }

   private:
    Impl& s_;
  };

  // Sends the UID FETCH commands `commands` (the text after the tag), up to
  // `in_flight` of them before the oldest one is answered, a further one
  // only once the newest has begun to be answered (a message of it, or its
  // reply: a server that stalls is not sent more), and reads their
  // responses with a FetchReader. `on_fetch(k, data, body)` gets each FETCH
  // response whose UID lies in `ranges[k]` of the oldest unanswered command
  // k holding it (others are unsolicited: ignored); `on_done(k)` follows
  // command k's OK or NO. After a BAD no more commands are sent, the sent
  // ones are read, and Error(protocol, never) is thrown. An exception from a
  // callback stops callbacks and sending; the replies to what was sent are
  // read, then it propagates. Any other failure closes the connection.
  void run_fetches(const std::vector<const std::vector<UidRange>*>& ranges, const std::vector<std::string>& commands,
                   bool with_body, size_t in_flight,
                   const std::function<void(size_t, FetchData&, std::string&)>& on_fetch,
                   const std::function<void(size_t)>& on_done,
                   const std::function<void(size_t)>& before_send = {}) {
    ensure_alive();
    const size_t n = commands.size();
    if (n == 0) return;
    in_flight = std::max<size_t>(1, in_flight);
    FetchLimits limits;
    limits.max_text = guard.limits().max_text;
    limits.max_depth = guard.limits().max_depth;
    limits.max_literal = guard.max_literal();
    // Bodies may be as large as the maximum message size; every other literal stays small.
    if (with_body) {
      limits.max_literal = endpoint.max_message_size;
      limits.literal_what = fmt::format("the maximum message size of {} bytes", endpoint.max_message_size);
    }
    mailstream* stream = imap->imap_stream;
    guard.suspend();
    std::vector<std::string> tags(n);
    std::vector<char> answered(n, 0);
    size_t sent = 0, answered_count = 0;
    bool newest_started = false;  // the newest command sent has had a message or its reply
    std::exception_ptr callback_error;
    std::optional<Error> refused;  // a BAD, or a NO saying the login expired
    bool login_ended = false;
    try {
      ReaderSource source(*this);
      FetchReader reader(source, stream->read_buffer, stream->buffer_max_size, stream->read_buffer_len, limits);
      stream->read_buffer_len = 0;  // the reader's until release()
      if (with_body) reader.stream_large_bodies(large_bodies);
      auto send_more = [&] {
        bool wrote = false;
        while (sent < n && sent - answered_count < in_flight && (sent == 0 || newest_started) && !callback_error &&
               !refused) {
          if (before_send) {
            if (wrote) flush("UID FETCH");  // what is written goes out before the wait
            try {
              before_send(sent);
            } catch (...) {
              callback_error = std::current_exception();
              break;
            }
          }
          int r = mailimap_send_current_tag(imap);
          if (r != MAILIMAP_NO_ERROR) fail(r, "UID FETCH");
          tags[sent] = current_tag();
          write(commands[sent], "UID FETCH");
          write("\r\n", "UID FETCH");
          ++sent;
          newest_started = false;
          wrote = true;
        }
        if (wrote) flush("UID FETCH");
      };
      auto unexpected = [&]() {
        close_stream();
        throw Error(ErrorKind::protocol, fmt::format("UID FETCH: unexpected reply from {}", where), Retry::now,
                    here());
      };
      send_more();
      FetchData data;
      std::string body;
      while (answered_count < sent) {
        switch (reader.next(data, body)) {
          case FetchReader::Kind::fetch: {
            if (callback_error || data.uid == 0) break;
            size_t k = 0;
            while (k < sent && (answered[k] || !in_ranges(*ranges[k], data.uid))) ++k;
            if (k == sent) break;
            if (k + 1 == sent && !newest_started) {
              newest_started = true;
              send_more();
            }
            try {
              on_fetch(k, data, body);
            } catch (...) {
              callback_error = std::current_exception();
            }
            if (body.capacity() > kKeepCapacity) std::string().swap(body);
            break;
          }
          case FetchReader::Kind::tagged: {
            size_t k = 0;
            while (k < sent && (answered[k] || tags[k] != reader.tag())) ++k;
            if (k == sent) unexpected();
            answered[k] = 1;
            ++answered_count;
            if (k + 1 == sent) newest_started = true;
            const TaggedReply& reply = reader.tagged();
            std::optional<ThrottleHint> hint;
            if (reply.status == "NO" || reply.status == "BAD") hint = parse_throttle_hint(reply.text);
            if (hint) {
              // Throttled: nothing more is sent; the connection is closed once the sent commands are answered.
              last_hint = hint;
              if (!refused || refused->kind() != ErrorKind::throttled) {
                std::optional<std::chrono::milliseconds> after;
                if (hint->backoff_ms) after = std::chrono::milliseconds(*hint->backoff_ms);
                refused = Error(ErrorKind::throttled,
                                fmt::format("UID FETCH: {} throttles this account ({}): {}", where, hint->reason,
                                            reply.text),
                                Retry::now, here())
                              .with_retry_after(after);
              }
              login_ended = true;
            } else if (reply.status == "NO" && (iequals(reply.code, "EXPIRED") || iequals(reply.code, "AUTHENTICATIONFAILED"))) {
              // As throw_if_login_ended: the login expired; reconnect.
              if (!refused)
                refused = Error(ErrorKind::network,
                                fmt::format("UID FETCH at {}: the server no longer accepts this login: {}", where,
                                            reply.text),
                                Retry::now, here());
              login_ended = true;
            } else if (reply.status == "OK" || reply.status == "NO") {
              if (!callback_error && on_done) {
                try {
                  on_done(k);
                } catch (...) {
                  callback_error = std::current_exception();
                }
              }
            } else if (reply.status == "BAD") {
              if (!refused) refused = Error(ErrorKind::protocol, fmt::format("UID FETCH: {}", reply.text), Retry::never, here());
            } else {
              unexpected();
            }
            send_more();
            break;
          }
          case FetchReader::Kind::bye: die("UID FETCH", "server closed the connection: " + reader.line());
          case FetchReader::Kind::other: break;
        }
      }
      stream->read_buffer_len = reader.release();
    } catch (...) {
      if (!dead) close_stream();
      guard.resume({});
      throw;
    }
    // What came after the last reply is libetpan's again, through the guard.
    if (!guard.resume(std::string_view(stream->read_buffer, stream->read_buffer_len))) refuse_wire("UID FETCH");
    if (login_ended) close_stream();
    if (callback_error) std::rethrow_exception(callback_error);
    if (refused) throw *refused;
  }

  MailboxInfo open(std::string_view name_raw, bool read_only) {
    ensure_alive();
    check_name(name_raw, where);
    std::string name(name_raw);
    folder = utf7_decode(name_raw);
    uint64_t modseq = 0;
    int r;
    bool condstore = has("CONDSTORE");
    if (read_only) r = condstore ? mailimap_examine_condstore(imap, name.c_str(), &modseq) : mailimap_examine(imap, name.c_str());
    else r = condstore ? mailimap_select_condstore(imap, name.c_str(), &modseq) : mailimap_select(imap, name.c_str());
    if (r != MAILIMAP_NO_ERROR) {
      if (kills_session(r)) fail(r, read_only ? "EXAMINE" : "SELECT", name_raw);
      throw_if_login_ended(read_only ? "EXAMINE" : "SELECT", name_raw);
      std::string text = server_text();
      throw Error(ErrorKind::protocol,
                  fmt::format("cannot open folder {}: {}", utf7_decode(name_raw),
                              text.empty() ? std::string(etpan_error_name(r)) : text),
                  Retry::never, here(name_raw));
    }
    MailboxInfo info;
    info.highestmodseq = modseq;
    info.read_only = read_only;
    if (auto* sel = imap->imap_selection_info) {
      info.exists = sel->sel_exists;
      info.uidvalidity = sel->sel_uidvalidity;
      info.uidnext = sel->sel_uidnext;
      if (sel->sel_perm == MAILIMAP_MAILBOX_READONLY) info.read_only = true;
      if (sel->sel_perm_flags) {
        for (clistiter* it = clist_begin(sel->sel_perm_flags); it; it = clist_next(it)) {
          auto* pf = static_cast<mailimap_flag_perm*>(clist_content(it));
          if (pf->fl_type == MAILIMAP_FLAG_PERM_ALL) info.permanent_flags.push_back("\\*");
          else if (pf->fl_flag) info.permanent_flags.push_back(flag_to_string(pf->fl_flag));
        }
      }
    }
    return info;
  }

  std::vector<uint32_t> search(const std::string& criteria) {
    std::vector<uint32_t> uids;
    bool malformed = false;
    TaggedReply reply = command("UID SEARCH " + criteria, "UID SEARCH", [&](std::string_view line) {
      if (line.size() < 6 || !iequals(line.substr(0, 6), "SEARCH") || (line.size() > 6 && line[6] != ' ')) return;
      auto found = parse_search_response(line);
      if (!found) malformed = true;
      else uids.insert(uids.end(), found->begin(), found->end());
    });
    // A UID we cannot read would be a message silently left out.
    if (malformed)
      throw Error(ErrorKind::protocol, fmt::format("UID SEARCH {}: unreadable SEARCH response from {}", criteria, where),
                  Retry::never, here());
    if (reply.status != "OK")
      throw Error(ErrorKind::protocol, fmt::format("UID SEARCH {}: {}", criteria, reply.text), Retry::never, here());
    std::sort(uids.begin(), uids.end());
    uids.erase(std::unique(uids.begin(), uids.end()), uids.end());
    return uids;
  }
};


Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

std::unique_ptr<Session> Session::connect(const Endpoint& endpoint) {
  auto impl = std::make_unique<Impl>();
  impl->endpoint = endpoint;
  impl->where = endpoint.address();
  const std::string& where = impl->where;
  impl->imap = mailimap_new(0, nullptr);
  if (!impl->imap) throw std::bad_alloc();
  time_t timeout = static_cast<time_t>(std::max<int64_t>(1, endpoint.timeout.count()));
  mailimap_set_timeout(impl->imap, timeout);
  WireLimits limits;
  limits.wait_base = std::chrono::seconds(2 * timeout);
  impl->guard = WireGuard(limits);

  net::ConnectOptions options;
  options.host = endpoint.host;
  options.port = endpoint.effective_port();
  options.tls = endpoint.tls;
  options.ca_file = endpoint.ca_file;
  options.insecure = endpoint.insecure;
  options.timeout = endpoint.timeout;
  impl->transport = std::make_unique<net::Transport>(options, &impl->guard);
  mailstream* stream = impl->transport->connect();
  int r = mailimap_connect(impl->imap, stream);
  if (r != MAILIMAP_NO_ERROR_AUTHENTICATED && r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED) {
    if (impl->guard.broken()) impl->refuse_wire("greeting");
    std::string text = impl->server_text();
    impl->close_stream();
    Retry retry = r == MAILIMAP_ERROR_DONT_ACCEPT_CONNECTION ? Retry::later : Retry::now;
    throw Error(ErrorKind::network,
                fmt::format("no IMAP greeting from {}: {}{}", where, etpan_error_name(r), text.empty() ? "" : ": " + text),
                retry, {.server = where});
  }
  impl->refresh_capabilities();

  if (endpoint.tls == TlsMode::starttls) {
    if (!impl->has("STARTTLS")) {
      impl->close_stream();
      throw Error(ErrorKind::protocol, fmt::format("{} does not offer STARTTLS", where), Retry::never,
                  {.server = where});
    }
    r = mailimap_starttls(impl->imap);
    if (r != MAILIMAP_NO_ERROR) impl->fail(r, "STARTTLS");
    try {
      impl->transport->start_tls(impl->imap->imap_stream);
    } catch (...) {
      impl->close_stream();
      throw;
    }
    impl->refresh_capabilities();
  }
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

void Session::login(const Credentials& c) {
  if (!c.tokens || c.mechanism != AuthMechanism::xoauth2) {
    login_once(c);
    return;
  }
  Credentials with_token = c;
  with_token.tokens.reset();
  login_with_renewal(
      *c.tokens,
      [&](const std::string& token) {
        with_token.secret = token;
        login_once(with_token);
      },
      [&] { return !impl_->dead; });
}

void Session::login_once(const Credentials& c) {
  Impl& s = *impl_;
  s.ensure_alive();
  const std::string& where = s.where;
  auto refused = [&]() -> Error {
    return Error(ErrorKind::auth, fmt::format("authentication failed for {} at {}", c.user, where), Retry::never,
                 {.account = c.user + "@" + s.endpoint.host, .server = where});
  };
  // A mechanism the server lacks is a configuration problem, not refused
  // credentials (Error(protocol): exit 4, not 3), and nothing was sent.
  const bool may_offer_after_tls = s.endpoint.tls == TlsMode::none && s.has("STARTTLS");
  auto need_mech = [&](const char* name) {
    if (s.has(std::string("AUTH=") + name)) return;
    std::string offered;
    for (auto& cap : s.caps)
      if (cap.rfind("AUTH=", 0) == 0) offered += (offered.empty() ? "" : ", ") + cap.substr(5);
    throw Error(ErrorKind::protocol,
                fmt::format("{} does not offer the authentication mechanism {} (it offers {}){}; nothing was sent",
                            where, name, offered.empty() ? "none" : offered,
                            may_offer_after_tls ? "; it may offer it after STARTTLS: use --tls starttls" : ""),
                Retry::never, {.server = where});
  };
  if (s.imap->imap_state != MAILIMAP_STATE_NON_AUTHENTICATED) {
    s.refresh_capabilities();
    return;  // PREAUTH
  }
  int r = MAILIMAP_NO_ERROR;
  switch (c.mechanism) {
    case AuthMechanism::login: {
      if (!c.auth_user.empty())
        throw Error(ErrorKind::usage, "an admin (authorization) user needs SASL PLAIN, not LOGIN");
      if (s.has("LOGINDISABLED"))
        throw Error(ErrorKind::protocol,
                    fmt::format("{} does not allow LOGIN {}(LOGINDISABLED); nothing was sent", where,
                                may_offer_after_tls ? "before TLS: use --tls starttls " : "on this connection "),
                    Retry::never, {.server = where});
      r = mailimap_login(s.imap, c.user.c_str(), c.secret.c_str());
      break;
    }
    case AuthMechanism::plain:
    case AuthMechanism::cram_md5: {
      const char* mech = c.mechanism == AuthMechanism::plain ? "PLAIN" : "CRAM-MD5";
      need_mech(mech);
      if (c.mechanism == AuthMechanism::cram_md5 && !c.auth_user.empty())
        throw Error(ErrorKind::usage, "CRAM-MD5 cannot log in as another user; use PLAIN for admin mode");
      const std::string& authcid = c.auth_user.empty() ? c.user : c.auth_user;
      int tag_before = s.imap->imap_tag;
      r = mailimap_authenticate(s.imap, mech, s.endpoint.host.c_str(), nullptr, nullptr, c.user.c_str(),
                                authcid.c_str(), c.secret.c_str(), nullptr);
      if (r != MAILIMAP_NO_ERROR && s.imap->imap_tag == tag_before && !kills_session(r))
        throw Error(ErrorKind::usage,
                    fmt::format("the SASL mechanism {} is not available on this machine (is libsasl2-modules "
                                "installed?)",
                                mech),
                    Retry::never, {.server = where});
      break;
    }
    case AuthMechanism::apop:
      throw Error(ErrorKind::usage, "APOP is a POP3 mechanism; IMAP logs in with login, plain, cram-md5 or xoauth2");
    case AuthMechanism::xoauth2: {
      need_mech("XOAUTH2");
      r = mailimap_oauth2_authenticate(s.imap, c.user.c_str(), c.secret.c_str());
      break;
    }
  }
  if (r != MAILIMAP_NO_ERROR) {
    if (kills_session(r)) s.fail(r, "login");
    // Throttled logins (Microsoft 365 "Request is throttled", [THROTTLED]) are no refusal.
    if (auto hint = parse_throttle_hint(s.coded_server_text()); hint && hint->reason != "UNAVAILABLE")
      s.throttled("login", *hint, s.coded_server_text());
    // RFC 5530: the server could not check the credentials just now; they were not refused.
    const char* atom = s.imap->imap_response_info ? s.imap->imap_response_info->rsp_atom : nullptr;
    if (atom && strcasecmp(atom, "UNAVAILABLE") == 0)
      throw Error(ErrorKind::auth,
                  fmt::format("{} cannot check the credentials of {} now: {}", where, c.user, s.server_text()),
                  Retry::later,
                  {.account = c.user + "@" + s.endpoint.host, .server = where});
    throw refused();
  }
  s.refresh_capabilities();
}

bool Session::send_id(const std::vector<std::pair<std::string, std::string>>& fields) {
  Impl& s = *impl_;
  s.ensure_alive();
  if (!s.has("ID")) return false;
  std::string list;
  for (auto& [name, value] : fields) {
    std::string pair;
    try {
      pair = quoted(name) + " " + quoted(value);
    } catch (const Error&) {
      continue;
    }
    list += (list.empty() ? "" : " ") + pair;
  }
  s.command(list.empty() ? "ID NIL" : "ID (" + list + ")", "ID");
  return true;
}

const Endpoint& Session::endpoint() const { return impl_->endpoint; }
const std::set<std::string>& Session::capabilities() const { return impl_->caps; }
bool Session::has_capability(std::string_view name) const { return impl_->has(name); }
std::string Session::detected_provider() const { return impl_->has("X-GM-EXT-1") ? "gmail" : ""; }

uint64_t Session::append_limit() const { return impl_->append_limit; }

std::vector<ListEntry> Session::list() {
  Impl& s = *impl_;
  s.ensure_alive();
  std::vector<ListEntry> out;
  clist* result = nullptr;
  int r = mailimap_list(s.imap, "", "*", &result);
  if (r != MAILIMAP_NO_ERROR) {
    if (result) mailimap_list_result_free(result);
    s.fail(r, "LIST");
  }
  static const char* kSpecialUse[] = {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash", "\\Important"};
  for (clistiter* it = result ? clist_begin(result) : nullptr; it; it = clist_next(it)) {
    auto* mb = static_cast<mailimap_mailbox_list*>(clist_content(it));
    if (!mb->mb_name) continue;
    ListEntry e;
    e.name_raw = mb->mb_name;
    e.name_utf8 = utf7_decode(e.name_raw);
    e.delimiter = mb->mb_delimiter;
    if (auto* fl = mb->mb_flag) {
      if (fl->mbf_type == MAILIMAP_MBX_LIST_FLAGS_SFLAG) {
        switch (fl->mbf_sflag) {
          case MAILIMAP_MBX_LIST_SFLAG_MARKED: e.attributes.push_back("\\Marked"); break;
          case MAILIMAP_MBX_LIST_SFLAG_NOSELECT: e.attributes.push_back("\\Noselect"); break;
          case MAILIMAP_MBX_LIST_SFLAG_UNMARKED: e.attributes.push_back("\\Unmarked"); break;
          default: break;
        }
      }
      for (clistiter* o = fl->mbf_oflags ? clist_begin(fl->mbf_oflags) : nullptr; o; o = clist_next(o)) {
        auto* of = static_cast<mailimap_mbx_list_oflag*>(clist_content(o));
        if (of->of_type == MAILIMAP_MBX_LIST_OFLAG_NOINFERIORS) {
          e.attributes.push_back("\\Noinferiors");
        } else if (of->of_type == MAILIMAP_MBX_LIST_OFLAG_FLAG_EXT && of->of_flag_ext) {
          std::string a = of->of_flag_ext;
          if (a.empty() || a[0] != '\\') a = "\\" + a;
          e.attributes.push_back(a);
        }
      }
    }
    for (auto& a : e.attributes) {
      if (iequals(a, "\\Noselect") || iequals(a, "\\NonExistent")) e.noselect = true;
      if (e.special_use.empty())
        for (auto* su : kSpecialUse)
          if (iequals(a, su)) e.special_use = su;
    }
    out.push_back(std::move(e));
  }
  if (result) mailimap_list_result_free(result);

  std::set<std::string> subscribed;
  result = nullptr;
  r = mailimap_lsub(s.imap, "", "*", &result);
  if (r != MAILIMAP_NO_ERROR) {
    if (result) mailimap_list_result_free(result);
    s.fail(r, "LSUB");
  }
  for (clistiter* it = result ? clist_begin(result) : nullptr; it; it = clist_next(it)) {
    auto* mb = static_cast<mailimap_mailbox_list*>(clist_content(it));
    if (mb->mb_name) subscribed.insert(mb->mb_name);
  }
  if (result) mailimap_list_result_free(result);
  for (auto& e : out) {
    e.subscribed = subscribed.count(e.name_raw) > 0 || (iequals(e.name_raw, "INBOX") && std::any_of(
        subscribed.begin(), subscribed.end(), [](const std::string& n) { return iequals(n, "INBOX"); }));
  }
  std::sort(out.begin(), out.end(), [](const ListEntry& a, const ListEntry& b) { return a.name_raw < b.name_raw; });
  return out;
}

std::vector<Namespace> Session::namespaces() {
  Impl& s = *impl_;
  s.ensure_alive();
  std::vector<Namespace> out;
  if (s.has("NAMESPACE")) {
    mailimap_namespace_data* ns = nullptr;
    int r = mailimap_namespace(s.imap, &ns);
    if (r == MAILIMAP_NO_ERROR && ns) {
      auto take = [&](mailimap_namespace_item* item, Namespace::Kind kind) {
        if (!item || !item->ns_data_list) return;
        for (clistiter* it = clist_begin(item->ns_data_list); it; it = clist_next(it)) {
          auto* info = static_cast<mailimap_namespace_info*>(clist_content(it));
          Namespace n;
          n.kind = kind;
          n.prefix = info->ns_prefix ? info->ns_prefix : "";
          n.delimiter = info->ns_delimiter;
          out.push_back(std::move(n));
        }
      };
      take(ns->ns_personal, Namespace::personal);
      take(ns->ns_other, Namespace::other_users);
      take(ns->ns_shared, Namespace::shared);
      mailimap_namespace_data_free(ns);
    } else {
      if (ns) mailimap_namespace_data_free(ns);
      if (kills_session(r)) s.fail(r, "NAMESPACE");
    }
  }
  if (std::none_of(out.begin(), out.end(), [](const Namespace& n) { return n.kind == Namespace::personal; })) {
    Namespace p;
    clist* result = nullptr;
    int r = mailimap_list(s.imap, "", "", &result);
    if (r == MAILIMAP_NO_ERROR && result && clist_begin(result)) {
      auto* mb = static_cast<mailimap_mailbox_list*>(clist_content(clist_begin(result)));
      p.delimiter = mb->mb_delimiter;
    }
    if (result) mailimap_list_result_free(result);
    if (r != MAILIMAP_NO_ERROR && kills_session(r)) s.fail(r, "LIST");
    out.insert(out.begin(), p);
  }
  return out;
}

PersonalNamespace Session::personal_namespace() {
  PersonalNamespace p;
  for (auto& n : namespaces()) {
    if (n.kind != Namespace::personal) continue;
    p.prefix = n.prefix;
    if (n.delimiter) p.delimiter = n.delimiter;
    break;
  }
  return p;
}

MailboxInfo Session::examine(std::string_view name_raw) { return impl_->open(name_raw, true); }
MailboxInfo Session::select(std::string_view name_raw) { return impl_->open(name_raw, false); }

StatusInfo Session::status(std::string_view name_raw) {
  Impl& s = *impl_;
  s.ensure_alive();
  check_name(name_raw, s.where);
  mailimap_status_att_list* atts = mailimap_status_att_list_new_empty();
  mailimap_status_att_list_add(atts, MAILIMAP_STATUS_ATT_MESSAGES);
  mailimap_status_att_list_add(atts, MAILIMAP_STATUS_ATT_UIDNEXT);
  mailimap_status_att_list_add(atts, MAILIMAP_STATUS_ATT_UIDVALIDITY);
  if (s.has("CONDSTORE")) mailimap_status_att_list_add(atts, MAILIMAP_STATUS_ATT_HIGHESTMODSEQ);
  mailimap_mailbox_data_status* result = nullptr;
  std::string name(name_raw);
  int r = mailimap_status(s.imap, name.c_str(), atts, &result);
  mailimap_status_att_list_free(atts);
  if (r != MAILIMAP_NO_ERROR) {
    if (result) mailimap_mailbox_data_status_free(result);
    if (kills_session(r)) s.fail(r, "STATUS", name_raw);
    s.throw_if_throttled("STATUS", s.coded_server_text(), ThrottleContext::download, name_raw);
    std::string text = s.server_text();
    throw Error(ErrorKind::protocol, fmt::format("STATUS of folder {}: {}", utf7_decode(name_raw), text),
                Retry::never, s.here(name_raw));
  }
  StatusInfo info;
  for (clistiter* it = result && result->st_info_list ? clist_begin(result->st_info_list) : nullptr; it;
       it = clist_next(it)) {
    auto* si = static_cast<mailimap_status_info*>(clist_content(it));
    switch (si->st_att) {
      case MAILIMAP_STATUS_ATT_MESSAGES: info.messages = si->st_value; break;
      case MAILIMAP_STATUS_ATT_UIDNEXT: info.uidnext = si->st_value; break;
      case MAILIMAP_STATUS_ATT_UIDVALIDITY: info.uidvalidity = si->st_value; break;
      case MAILIMAP_STATUS_ATT_HIGHESTMODSEQ: info.highestmodseq = si->st_value; break;
      case MAILIMAP_STATUS_ATT_EXTENSION:
        if (si->st_ext_data && si->st_ext_data->ext_extension &&
            si->st_ext_data->ext_extension->ext_id == MAILIMAP_EXTENSION_CONDSTORE &&
            si->st_ext_data->ext_type == MAILIMAP_CONDSTORE_TYPE_STATUS_INFO && si->st_ext_data->ext_data)
          info.highestmodseq =
              static_cast<mailimap_condstore_status_info*>(si->st_ext_data->ext_data)->cs_highestmodseq_value;
        break;
      default: break;
    }
  }
  if (result) mailimap_mailbox_data_status_free(result);
  return info;
}

namespace {

// What one FETCH response carried.
struct ParsedAtt {
  uint32_t uid = 0;
  std::vector<std::string> flags;
  bool has_flags = false;
  int64_t internaldate = 0;
  int32_t internaldate_tz = 0;
  bool has_internaldate = false;
  uint64_t size = 0;
  bool has_size = false;
  uint64_t modseq = 0;
  bool has_body = false;
  std::vector<std::string> anomalies;  // see FetchedMessage::anomalies
};

ParsedAtt parse_att(mailimap_msg_att* att) {
  ParsedAtt p;
  for (clistiter* it = att->att_list ? clist_begin(att->att_list) : nullptr; it; it = clist_next(it)) {
    auto* item = static_cast<mailimap_msg_att_item*>(clist_content(it));
    if (item->att_type == MAILIMAP_MSG_ATT_ITEM_DYNAMIC) {
      p.has_flags = true;
      auto* dyn = item->att_data.att_dyn;
      FlagCollector flags(p.flags);
      for (clistiter* f = dyn && dyn->att_list ? clist_begin(dyn->att_list) : nullptr; f; f = clist_next(f)) {
        auto* ff = static_cast<mailimap_flag_fetch*>(clist_content(f));
        if (ff->fl_type == MAILIMAP_FLAG_FETCH_RECENT || !ff->fl_flag) continue;
        flags.add(flag_to_string(ff->fl_flag));
      }
      flags.finish(p.anomalies);
    } else if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC) {
      auto* st = item->att_data.att_static;
      switch (st->att_type) {
        case MAILIMAP_MSG_ATT_UID: p.uid = st->att_data.att_uid; break;
        case MAILIMAP_MSG_ATT_INTERNALDATE:
          if (st->att_data.att_internal_date) {
            p.has_internaldate = true;
            DateFields fields = fields_of(st->att_data.att_internal_date);
            if (!date_from_fields(fields, p.internaldate, p.internaldate_tz))
              p.anomalies.push_back(
                  fmt::format("an impossible INTERNALDATE \"{}\": archived without a date", describe_date(fields)));
          }
          break;
        case MAILIMAP_MSG_ATT_RFC822_SIZE:
          p.size = st->att_data.att_rfc822_size;
          p.has_size = true;
          break;
        case MAILIMAP_MSG_ATT_BODY_SECTION: p.has_body = true; break;
        default: break;
      }
    } else if (item->att_type == MAILIMAP_MSG_ATT_ITEM_EXTENSION) {
      auto* ext = item->att_data.att_extension_data;
      if (ext && ext->ext_extension && ext->ext_extension->ext_id == MAILIMAP_EXTENSION_CONDSTORE &&
          ext->ext_type == MAILIMAP_CONDSTORE_TYPE_FETCH_DATA && ext->ext_data)
        p.modseq = static_cast<mailimap_condstore_fetch_mod_resp*>(ext->ext_data)->cs_modseq_value;
    }
  }
  return p;
}

}  // namespace

namespace {

// "UID FETCH <set> (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[] [MODSEQ] [X-GM-...])", as libetpan wrote it.
std::string body_fetch_command(const std::vector<UidRange>& uids, bool condstore, bool gmail) {
  return fmt::format("UID FETCH {} (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[]{}{})", to_sequence_set(uids),
                     condstore ? " MODSEQ" : "", gmail ? " X-GM-MSGID X-GM-THRID X-GM-LABELS" : "");
}

}  // namespace

std::vector<std::vector<UidRange>> split_sequence_set(const std::vector<UidRange>& ranges, size_t max_chars) {
  std::vector<std::vector<UidRange>> out;
  size_t length = 0;
  for (const UidRange& r : ranges) {
    size_t len = to_sequence_set({r}).size();
    if (out.empty() || (length > 0 && length + 1 + len > max_chars)) {
      out.emplace_back();
      length = 0;
    }
    length += (length ? 1 : 0) + len;
    out.back().push_back(r);
  }
  return out;
}

namespace {

// Room in a command line for the UID set: the longest line less what surrounds the set.
size_t set_room(const Endpoint& e) { return e.max_command_length > 200 ? e.max_command_length - 100 : 100; }

}  // namespace

void Session::stream_large_bodies(LargeBodies large) { impl_->large_bodies = std::move(large); }

void Session::fetch_batches(const std::vector<std::vector<UidRange>>& batches,
                            const std::function<void(size_t batch, FetchedMessage&&)>& on_message,
                            const std::function<void(size_t batch)>& on_done, size_t in_flight,
                            const std::function<void(size_t batch)>& before_send) {
  Impl& s = *impl_;
  s.ensure_alive();
  bool condstore = s.has("CONDSTORE");
  bool gmail = s.has("X-GM-EXT-1");
  std::vector<const std::vector<UidRange>*> ranges;
  std::vector<std::string> commands;
  std::vector<size_t> index;  // command -> batch (empty batches are not sent)
  // A batch whose UID set is too long for one line goes out as several commands.
  std::vector<std::vector<UidRange>> parts_storage;
  for (size_t b = 0; b < batches.size(); ++b) {
    if (batches[b].empty()) continue;
    for (auto& part : split_sequence_set(batches[b], set_room(s.endpoint))) {
      parts_storage.push_back(std::move(part));
      index.push_back(b);
    }
  }
  std::vector<size_t> pending(batches.size(), 0);  // commands of a batch not yet answered
  for (size_t k = 0; k < parts_storage.size(); ++k) {
    ranges.push_back(&parts_storage[k]);
    commands.push_back(body_fetch_command(parts_storage[k], condstore, gmail));
    ++pending[index[k]];
  }
  if (on_done)
    for (size_t b = 0; b < batches.size(); ++b)
      if (batches[b].empty()) on_done(b);
  s.run_fetches(
      ranges, commands, true, in_flight,
      [&](size_t k, FetchData& p, std::string& body) {
        if (!p.has_body) return;  // unsolicited (a flag change)
        FetchedMessage m;
        m.uid = p.uid;
        m.flags = std::move(p.flags);
        m.internaldate = p.internaldate;
        m.internaldate_tz = p.internaldate_tz;
        if (p.body_error) std::rethrow_exception(p.body_error);
        m.rfc822_size = p.has_size ? p.size : p.body_size;
        m.body_size = p.body_size;
        m.large_body = std::move(p.body_sink);
        m.modseq = p.modseq;
        m.gm_msgid = p.gm_msgid;
        m.gm_thrid = p.gm_thrid;
        m.gm_labels = std::move(p.gm_labels);
        m.anomalies = std::move(p.anomalies);
        m.body = std::move(body);
        on_message(index[k], std::move(m));
        body = std::move(m.body);  // its capacity serves the next message, unless the caller kept it
      },
      [&](size_t k) {
        if (on_done && --pending[index[k]] == 0) on_done(index[k]);
      },
      // A batch sent as several commands is announced once, before its first.
      before_send ? std::function<void(size_t)>([&](size_t k) {
        if (k == 0 || index[k - 1] != index[k]) before_send(index[k]);
      })
                  : std::function<void(size_t)>());
}

void Session::fetch_messages(const std::vector<UidRange>& uids,
                             const std::function<void(FetchedMessage&&)>& on_message) {
  fetch_batches({uids}, [&](size_t, FetchedMessage&& m) { on_message(std::move(m)); }, {}, 1);
}

void Session::fetch_flags(const std::vector<UidRange>& uids, std::optional<uint64_t> changed_since,
                          const std::function<void(FlagUpdate&&)>& on_flags) {
  Impl& s = *impl_;
  s.ensure_alive();
  if (uids.empty()) return;
  bool condstore = s.has("CONDSTORE");
  bool gmail = s.has("X-GM-EXT-1");
  if (changed_since && !condstore) changed_since.reset();
  auto parts = split_sequence_set(uids, set_room(s.endpoint));
  std::vector<const std::vector<UidRange>*> ranges;
  std::vector<std::string> commands;
  for (auto& part : parts) {
    std::string command = fmt::format("UID FETCH {} (UID FLAGS{}{})", to_sequence_set(part),
                                      condstore ? " MODSEQ" : "", gmail ? " X-GM-MSGID X-GM-LABELS" : "");
    if (changed_since) command += fmt::format(" (CHANGEDSINCE {})", *changed_since);
    ranges.push_back(&part);
    commands.push_back(std::move(command));
  }
  s.run_fetches(ranges, commands, false, 1,
                [&](size_t, FetchData& p, std::string&) {
                  if (!p.has_flags) return;
                  on_flags(FlagUpdate{p.uid, std::move(p.flags), p.modseq, std::move(p.anomalies), p.gm_msgid,
                                      p.has_labels, std::move(p.gm_labels)});
                },
                {});
}

void Session::fetch_gmail_ids(const std::vector<UidRange>& uids, const std::function<void(FlagUpdate&&)>& on_message) {
  Impl& s = *impl_;
  s.ensure_alive();
  if (uids.empty()) return;
  if (!s.has("X-GM-EXT-1"))
    throw Error(ErrorKind::protocol, "the server lacks X-GM-EXT-1: it has no Gmail message ids", Retry::never,
                s.here());
  bool condstore = s.has("CONDSTORE");
  auto parts = split_sequence_set(uids, set_room(s.endpoint));
  std::vector<const std::vector<UidRange>*> ranges;
  std::vector<std::string> commands;
  for (auto& part : parts) {
    ranges.push_back(&part);
    commands.push_back(
        fmt::format("UID FETCH {} (UID X-GM-MSGID FLAGS{})", to_sequence_set(part), condstore ? " MODSEQ" : ""));
  }
  s.run_fetches(ranges, commands, false, 1,
                [&](size_t, FetchData& p, std::string&) {
                  if (!p.gm_msgid || !p.uid) return;
                  on_message(FlagUpdate{p.uid, std::move(p.flags), p.modseq, std::move(p.anomalies), p.gm_msgid,
                                        p.has_labels, std::move(p.gm_labels)});
                },
                {});
}

void Session::store_gmail_labels(uint32_t uid, const std::vector<std::string>& labels) {
  Impl& s = *impl_;
  if (labels.empty()) return;
  if (!s.has("X-GM-EXT-1"))
    throw Error(ErrorKind::protocol, "the server lacks X-GM-EXT-1: labels cannot be set", Retry::never, s.here());
  std::string list;
  for (auto& label : labels) {
    if (!list.empty()) list += ' ';
    bool system = label.size() > 1 && label[0] == '\\' &&
                  std::all_of(label.begin() + 1, label.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); });
    list += system ? label : quoted(label);
  }
  TaggedReply r = s.command(fmt::format("UID STORE {} +X-GM-LABELS.SILENT ({})", uid, list), "UID STORE");
  if (r.status != "OK") {
    ErrorWhere w = s.here();
    w.uid = uid;
    throw Error(ErrorKind::protocol, fmt::format("cannot set the labels of UID {}: {}", uid, r.text), Retry::never, w);
  }
}

void Session::fetch_sizes(const std::vector<UidRange>& uids,
                          const std::function<void(uint32_t uid, uint64_t size)>& on_size) {
  Impl& s = *impl_;
  s.ensure_alive();
  if (uids.empty()) return;
  auto parts = split_sequence_set(uids, set_room(s.endpoint));
  std::vector<const std::vector<UidRange>*> ranges;
  std::vector<std::string> commands;
  for (auto& part : parts) {
    ranges.push_back(&part);
    commands.push_back(fmt::format("UID FETCH {} (UID RFC822.SIZE)", to_sequence_set(part)));
  }
  s.run_fetches(ranges, commands, false, 1,
                [&](size_t, FetchData& p, std::string&) {
                  if (p.has_size) on_size(p.uid, p.size);
                },
                {});
}

void Session::fetch_sizes_and_dates(const std::vector<UidRange>& uids,
                                    const std::function<void(uint32_t, uint64_t, int64_t)>& on_message) {
  Impl& s = *impl_;
  s.ensure_alive();
  if (uids.empty()) return;
  s.run_fetches({&uids}, {fmt::format("UID FETCH {} (UID RFC822.SIZE INTERNALDATE)", to_sequence_set(uids))}, false,
                1,
                [&](size_t, FetchData& p, std::string&) {
                  if (p.has_size) on_message(p.uid, p.size, p.has_internaldate ? p.internaldate : 0);
                },
                {});
}

std::vector<uint32_t> Session::search_all_uids() { return impl_->search("ALL"); }

namespace {

// An IMAP date ("1-Feb-2024") of the UTC day of a unix time.
std::string imap_date(int64_t unix_seconds) {
  int64_t y = 0;
  unsigned m = 1, d = 1;
  civil_from_days(unix_seconds >= 0 ? unix_seconds / 86400 : (unix_seconds - 86399) / 86400, y, m, d);
  return fmt::format("{}-{}-{}", d, kMonths[m - 1], y);
}

}  // namespace

std::vector<uint32_t> Session::search_selected(const std::vector<UidRange>& uids, std::optional<int64_t> since_day,
                                               std::optional<int64_t> before_day, std::optional<uint64_t> larger,
                                               std::optional<uint64_t> smaller) {
  std::string criteria = "UID " + to_sequence_set(uids);
  if (since_day) criteria += " SINCE " + imap_date(*since_day);
  if (before_day) criteria += " BEFORE " + imap_date(*before_day);
  if (larger) criteria += fmt::format(" LARGER {}", *larger);
  if (smaller) criteria += fmt::format(" SMALLER {}", *smaller);
  return impl_->search(criteria);
}

std::vector<uint32_t> Session::search_message_id(std::string_view message_id) {
  return impl_->search("HEADER Message-ID " + quoted(message_id));
}


std::optional<FetchedMessage> Session::fetch_one(uint32_t uid) {
  std::optional<FetchedMessage> out;
  fetch_messages({{uid, uid}}, [&](FetchedMessage&& m) {
    if (m.uid == uid) out = std::move(m);
  });
  return out;
}

void Session::create(std::string_view name_raw, std::string_view special_use) {
  Impl& s = *impl_;
  std::string line = "CREATE " + quoted(name_raw);
  static const char* kUses[] = {"\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged"};
  bool known_use = std::any_of(std::begin(kUses), std::end(kUses), [&](const char* u) { return special_use == u; });
  if (known_use && s.has("CREATE-SPECIAL-USE")) line += " (USE (" + std::string(special_use) + "))";
  TaggedReply r = s.command(line, "CREATE");
  if (r.status != "OK")
    throw Error(ErrorKind::protocol, fmt::format("cannot create folder {}: {}", utf7_decode(name_raw), r.text),
                Retry::never, s.here(name_raw));
}

void Session::subscribe(std::string_view name_raw) {
  Impl& s = *impl_;
  TaggedReply r = s.command("SUBSCRIBE " + quoted(name_raw), "SUBSCRIBE");
  if (r.status != "OK")
    throw Error(ErrorKind::protocol, fmt::format("cannot subscribe to folder {}: {}", utf7_decode(name_raw), r.text),
                Retry::never, s.here(name_raw));
}

void Session::store_flags(uint32_t uid, const std::vector<std::string>& flags) {
  Impl& s = *impl_;
  TaggedReply r = s.command(fmt::format("UID STORE {} FLAGS.SILENT {}", uid, flag_list(flags)), "UID STORE");
  if (r.status != "OK") {
    ErrorWhere w = s.here();
    w.uid = uid;
    throw Error(ErrorKind::protocol, fmt::format("cannot set the flags of UID {}: {}", uid, r.text), Retry::never, w);
  }
}

void Session::noop() {
  Impl& s = *impl_;
  TaggedReply r = s.command("NOOP", "NOOP");
  if (r.status != "OK") throw Error(ErrorKind::protocol, "NOOP refused: " + r.text, Retry::never, s.here());
}

void Session::expunge_uids(const std::vector<uint32_t>& uids) {
  Impl& s = *impl_;
  if (uids.empty()) return;
  if (!s.has("UIDPLUS"))
    throw Error(ErrorKind::protocol, "the server lacks UIDPLUS: expunging chosen messages is not possible",
                Retry::never, s.here());
  std::vector<UidRange> ranges;
  for (uint32_t uid : uids) ranges.push_back({uid, uid});
  for (auto& part : split_sequence_set(ranges, set_room(s.endpoint))) {
    std::string set = to_sequence_set(part);
    TaggedReply r = s.command("UID STORE " + set + " +FLAGS.SILENT (\\Deleted)", "UID STORE");
    if (r.status == "OK") r = s.command("UID EXPUNGE " + set, "UID EXPUNGE");
    if (r.status != "OK")
      throw Error(ErrorKind::protocol, fmt::format("cannot expunge messages: {}", r.text), Retry::never, s.here());
  }
}

std::vector<AppendResult> Session::append(std::string_view mailbox_raw, const std::vector<AppendItem>& items,
                                          bool synchronizing) {
  Impl& s = *impl_;
  s.ensure_alive();
  std::vector<AppendResult> results(items.size());
  if (items.empty()) return results;
  // Everything that can be refused locally is checked before the first byte goes out.
  const std::string mailbox = quoted(mailbox_raw);
  std::vector<std::string> flag_texts;
  flag_texts.reserve(items.size());
  bool all_plain = true;  // no item's line can be rejected for its syntax
  for (auto& item : items) {
    if (auto problem = append_problem(item))
      throw Error(ErrorKind::protocol, fmt::format("cannot APPEND a message: {}", *problem), Retry::never,
                  s.here(mailbox_raw));
    flag_texts.push_back(flag_list(item.flags));
    all_plain = all_plain && std::all_of(item.flags.begin(), item.flags.end(), [](const std::string& f) {
                  return plain_flag(f);
                });
  }
  const bool pipelining = !synchronizing && !s.no_pipelining && all_plain;
  const bool literal_plus = pipelining && s.has("LITERAL+");
  const bool literal_minus = pipelining && s.has("LITERAL-");
  const bool multi = s.has("MULTIAPPEND") && (literal_plus || literal_minus);

  // Whether the server has said something while we are still sending.
  auto reply_waiting = [&]() {
    if (s.imap->imap_stream->read_buffer_len > 0) return true;
    if (s.transport && s.transport->tls_pending()) return true;
    int fd = mailstream_low_get_fd(mailstream_get_low(s.imap->imap_stream));
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1;
  };

  // Sends one APPEND (or MULTIAPPEND) for items [from, to); fills results.
  auto send = [&](size_t from, size_t to) {
    int r = mailimap_send_current_tag(s.imap);
    if (r != MAILIMAP_NO_ERROR) s.fail(r, "APPEND");
    std::string tag = s.current_tag();
    std::string head = "APPEND " + mailbox;
    std::optional<TaggedReply> early;  // a tagged reply before every message was sent
    bool sent_unsynchronized = false;
    // A reply while non-synchronizing literals are going out: the server
    // may take what follows for commands, so nothing more is sent.
    auto check_early = [&]() {
      while (sent_unsynchronized && !early && reply_waiting()) {
        std::string line = s.read_response_line("APPEND");
        if (line.rfind("* ", 0) == 0) {
          if (line.size() >= 5 && iequals(std::string_view(line).substr(2, 3), "BYE"))
            s.die("APPEND", "server closed the connection: " + line, mailbox_raw);
          continue;  // untagged data: harmless
        }
        if (auto reply = parse_tagged_reply(line, tag)) {
          early = std::move(*reply);
          return;
        }
        // A continuation nobody asked for, or another tag: the conversation is lost.
        s.close_stream();
        throw Error(ErrorKind::protocol,
                    fmt::format("APPEND: unexpected reply from {} while messages were sent; the connection was closed",
                                s.where),
                    Retry::now, s.here(mailbox_raw));
      }
    };
    for (size_t i = from; i < to && !early; ++i) {
      const AppendItem& item = items[i];
      head += ' ';
      head += flag_texts[i];
      if (item.internaldate != 0) {
        head += " \"";
        head += format_date_time(item.internaldate, item.internaldate_tz);
        head += '"';
      }
      uint64_t n = item.length();
      bool sync = !(literal_plus || (literal_minus && n <= 4096));
      head += fmt::format(" {{{}{}}}\r\n", n, sync ? "" : "+");
      check_early();
      if (early) break;
      s.write(head, "APPEND");
      head.clear();
      if (sync) {
        s.flush("APPEND");
        TaggedReply cont = s.read_until_tagged(tag, "APPEND", true);
        if (cont.status != "+") {
          early = cont;
          break;
        }
      } else {
        sent_unsynchronized = true;
      }
      if (!item.produce) {
        for (size_t off = 0; off < n && !early; off += 1 << 20) {
          s.write(item.bytes.substr(off, 1 << 20), "APPEND");
          check_early();
        }
      } else {
        // Pieces as they come; a reply in between stops the message (the
        // connection then goes, see below).
        struct Stop {};
        uint64_t sent_bytes = 0, since_check = 0;
        try {
          item.produce([&](std::string_view piece) {
            if (piece.size() > n - sent_bytes) throw Stop{};
            s.write(piece, "APPEND");
            sent_bytes += piece.size();
            since_check += piece.size();
            if (since_check >= (1u << 20)) {
              since_check = 0;
              check_early();
              if (early) throw Stop{};
            }
          });
        } catch (const Stop&) {
        } catch (...) {
          s.close_stream();
          throw;
        }
        if (!early && sent_bytes != n) {
          s.close_stream();
          throw Error(ErrorKind::internal,
                      fmt::format("APPEND: a message of {} bytes was announced, {} were produced; the connection "
                                  "was closed",
                                  n, sent_bytes),
                      Retry::never, s.here(mailbox_raw));
        }
        check_early();
      }
    }
    TaggedReply reply;
    if (early) {
      reply = *early;
    } else {
      s.write("\r\n", "APPEND");
      s.flush("APPEND");
      reply = s.read_until_tagged(tag, "APPEND", false);
    }
    if (reply.status == "+") {
      s.close_stream();
      throw Error(ErrorKind::protocol, fmt::format("APPEND: unexpected continuation from {}", s.where), Retry::now,
                  s.here(mailbox_raw));
    }
    if (reply.status != "OK") s.no_pipelining = true;
    if (sent_unsynchronized && (early || reply.status == "BAD")) {
      // The server gave up on the command while message bytes were on their
      // way (or after them): it may read them as commands. Never send it
      // anything again on this connection.
      s.close_stream();
      if (reply.status == "OK")
        throw Error(ErrorKind::protocol,
                    fmt::format("APPEND: {} answered OK before the messages were sent; the connection was closed",
                                s.where),
                    Retry::now, s.here(mailbox_raw));
      reply.text += " (the connection was closed: the server stopped reading the command while messages were sent)";
    }
    if (reply.status == "OK") {
      uint32_t uidvalidity = 0;
      std::vector<uint32_t> uids;
      if (auto appenduid = parse_appenduid(reply.code, to - from)) {
        uidvalidity = appenduid->uidvalidity;
        uids = std::move(appenduid->uids);
      }
      for (size_t i = from; i < to; ++i) {
        results[i].ok = true;
        if (!uids.empty()) {
          results[i].uidvalidity = uidvalidity;
          results[i].uid = uids[i - from];
        }
      }
      return;
    }
    std::string code = upper(reply.code.substr(0, reply.code.find(' ')));
    if (reply.status == "NO" || reply.status == "BAD")
      s.throw_if_throttled("APPEND", reply.text, ThrottleContext::upload, mailbox_raw);
    if (reply.status == "NO" && (code == "EXPIRED" || code == "AUTHENTICATIONFAILED")) {
      // The login expired (an OAuth2 token): as a dropped connection, the
      // caller reconnects and finds out what arrived.
      s.close_stream();
      throw Error(ErrorKind::network,
                  fmt::format("APPEND at {}: the server no longer accepts this login: {}", s.where, reply.text),
                  Retry::now, s.here(mailbox_raw));
    }
    for (size_t i = from; i < to; ++i) {
      results[i].ok = false;
      results[i].error = reply.status + " " + reply.text;
      results[i].too_big = code == "TOOBIG" || code == "LIMIT";
      results[i].trycreate = code == "TRYCREATE";
    }
  };

  if (multi) {
    send(0, items.size());
  } else {
    for (size_t i = 0; i < items.size(); ++i) {
      if (s.dead) {
        for (size_t k = i; k < items.size(); ++k)
          results[k].error = "not sent: the connection was closed after an earlier APPEND";
        break;
      }
      send(i, i + 1);
    }
  }
  return results;
}

bool Session::alive() const { return !impl_->dead && impl_->imap && impl_->imap->imap_stream; }

void Session::logout() {
  Impl& s = *impl_;
  if (!s.imap) return;
  if (!s.dead && s.imap->imap_stream) {
    // A short wait: the session is being dropped anyway.
    if (s.transport)
      s.transport->shorten_timeout(s.imap->imap_stream,
                                   std::chrono::seconds(std::min<int64_t>(5, std::max<int64_t>(1, s.endpoint.timeout.count()))));
    mailimap_logout(s.imap);  // closes the stream
  }
  s.close_stream();
}


namespace {

// Bytes of a replay, handed out in pieces as a socket would, through the guard.
struct ReplaySource {
  std::string_view data;
  size_t pos = 0;
  WireGuard* guard = nullptr;
};

ssize_t replay_read(mailstream_low* s, void* buf, size_t count) {
  auto* src = static_cast<ReplaySource*>(s->data);
  if (src->guard->broken() || src->pos >= src->data.size()) return -1;
  size_t n = std::min({count, src->data.size() - src->pos, size_t{4096}});
  std::memcpy(buf, src->data.data() + src->pos, n);
  if (!src->guard->feed(src->data.substr(src->pos, n))) return -1;
  src->pos += n;
  return static_cast<ssize_t>(n);
}
ssize_t replay_write(mailstream_low*, const void*, size_t count) { return static_cast<ssize_t>(count); }
int replay_close(mailstream_low*) { return 0; }
int replay_get_fd(mailstream_low*) { return -1; }
void replay_free(mailstream_low* s) { free(s); }

mailstream_low_driver replay_driver = {
    replay_read, replay_write, replay_close, replay_get_fd, replay_free, plain_cancel, plain_get_cancel,
    nullptr,     plain_idle,   plain_idle,   plain_idle,
};

struct ReplayBody {
  std::string body;
  uint64_t max = 0;
};

}  // namespace

std::string replay_responses(std::string_view bytes, const Endpoint& limits) {
  WireGuard guard;
  guard.set_max_literal(limits.max_message_size);
  ReplaySource source{bytes, 0, &guard};
  mailimap* imap = mailimap_new(0, nullptr);
  if (!imap) throw std::bad_alloc();
  struct Free {
    mailimap* imap;
    ~Free() {
      mailimap_set_msg_body_handler(imap, nullptr, nullptr);
      mailimap_set_msg_att_handler(imap, nullptr, nullptr);
      mailimap_set_progress_callback(imap, nullptr, nullptr, nullptr);
      if (imap->imap_stream) {
        mailstream_close(imap->imap_stream);
        imap->imap_stream = nullptr;
      }
      mailimap_free(imap);
    }
  } free_imap{imap};
  mailstream_low* low = mailstream_low_new(&source, &replay_driver);
  if (!low) throw std::bad_alloc();
  mailstream* stream = mailstream_new(low, 8192);
  if (!stream) {
    mailstream_low_free(low);
    throw std::bad_alloc();
  }
  ReplayBody body{{}, limits.max_message_size};
  auto outcome = [&](int r) -> std::string {
    if (guard.broken()) return guard.violation();
    if (r == MAILIMAP_ERROR_STREAM && source.pos >= bytes.size()) return "";
    return etpan_error_name(r);
  };
  int r = mailimap_connect(imap, stream);
  if (r != MAILIMAP_NO_ERROR_AUTHENTICATED && r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED) {
    return outcome(r);
  }
  mailimap_set_progress_callback(imap, noop_progress, noop_progress, nullptr);
  mailimap_set_msg_att_handler(
      imap, [](mailimap_msg_att* att, void* ctx) {
        auto* b = static_cast<ReplayBody*>(ctx);
        ParsedAtt p = parse_att(att);
        (void)p;
        b->body.clear();
      },
      &body);
  mailimap_set_msg_body_handler(
      imap, [](int, mailimap_msg_att_body_section*, const char* bytes, size_t length, void* ctx) -> bool {
        auto* b = static_cast<ReplayBody*>(ctx);
        if (b->body.size() + length > b->max) return false;
        b->body.append(bytes, length);
        return true;
      },
      &body);
  for (;;) {
    mailimap_response* response = nullptr;
    r = mailimap_parse_response(imap, &response);
    if (response) mailimap_response_free(response);
    if (r == MAILIMAP_ERROR_PROTOCOL) continue;  // a tag this replay never sent: parsed all the same
    if (r != MAILIMAP_NO_ERROR) return outcome(r);
  }
}

std::string libetpan_version() {
  return fmt::format("{}.{}", libetpan_get_version_major(), libetpan_get_version_minor());
}

}  // namespace imapstage::imap

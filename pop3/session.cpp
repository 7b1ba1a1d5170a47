// pop3::Session over libetpan's mailpop3 (until the login) and our own
// response reader (after it); see session.h for why.
#include "pop3/session.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <libetpan/mailpop3.h>
#include <libetpan/mailstream.h>
#include <openssl/evp.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"

namespace imapstage::pop3 {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) | uint8_t(in[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string md5_hex(std::string_view in) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(in.data(), in.size(), digest, &n, EVP_md5(), nullptr) != 1)
    throw Error(ErrorKind::internal, "MD5 is not available from OpenSSL");
  return fmt::format("{:02x}", fmt::join(digest, digest + n, ""));
}

// The text after "+OK" / "-ERR" (without the separating space).
std::string_view response_text(std::string_view line) {
  size_t skip = line.rfind("+OK", 0) == 0 ? 3 : line.rfind("-ERR", 0) == 0 ? 4 : 0;
  line.remove_prefix(skip);
  if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  return line;
}

// A server's text for our messages: at most 200 bytes, control bytes as '?'.
std::string printable(std::string_view text) {
  std::string out(text.substr(0, 200));
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

// Limits on what the server sends while mailpop3 reads it (greeting, CAPA,
// login answers): libetpan reads a line of any length into memory. Our own
// reader (after the login) keeps its own limits and lifts this one.
class LineGuard final : public net::WireObserver {
 public:
  static constexpr uint64_t kMaxUnanswered = 1u << 20;  // bytes after one command

  bool feed(std::string_view bytes) override {
    received_ += bytes.size();
    if (strict_ && received_ > kMaxUnanswered) broken_ = true;
    return !broken_;
  }
  bool waited(std::chrono::steady_clock::duration) override { return !broken_; }
  void sent() override {
    received_ = 0;
    ++writes_;
  }
  // Writes so far (whether a command went out).
  uint64_t writes() const { return writes_; }
  bool broken() const override { return broken_; }
  void relax() { strict_ = false; }

 private:
  uint64_t received_ = 0;
  uint64_t writes_ = 0;
  bool strict_ = true;
  bool broken_ = false;
};

constexpr size_t kMaxStatusLine = 64 * 1024;  // a +OK/-ERR line or a LIST/UIDL line
constexpr size_t kReadSize = 64 * 1024;

}  // namespace

const char* to_string(Mechanism m) {
  switch (m) {
    case Mechanism::user_pass: return "USER/PASS";
    case Mechanism::apop: return "APOP";
    case Mechanism::plain: return "PLAIN";
    case Mechanism::cram_md5: return "CRAM-MD5";
    case Mechanism::xoauth2: return "XOAUTH2";
  }
  return "?";
}

bool is_ok(std::string_view line) { return line.rfind("+OK", 0) == 0; }

struct Session::Impl {
  Endpoint endpoint;
  std::string where;
  LineGuard guard;
  std::unique_ptr<net::Transport> transport;  // outlives the stream
  mailpop3* pop3 = nullptr;
  std::set<std::string> caps;
  std::set<std::string> sasl;
  bool dead = false;
  // Our reader's buffer (after the login): bytes [pos, len) not consumed yet.
  std::vector<char> buf = std::vector<char>(kReadSize);
  size_t pos = 0, len = 0;

  ~Impl() {
    close_stream();
    if (pop3) {
      // mailpop3_quit frees the APOP timestamp, but we close the stream
      // ourselves (no QUIT after a failure), so we free it here.
      free(pop3->pop3_timestamp);
      pop3->pop3_timestamp = nullptr;
      mailpop3_free(pop3);
    }
  }

  mailstream* stream() const { return pop3 ? pop3->pop3_stream : nullptr; }

  void close_stream() {
    if (pop3 && pop3->pop3_stream) {
      mailstream_close(pop3->pop3_stream);
      pop3->pop3_stream = nullptr;
    }
    dead = true;
  }

  ErrorWhere here() const { return {.folder = "INBOX", .server = where}; }

  void ensure_alive() const {
    if (dead || !stream())
      throw Error(ErrorKind::network, fmt::format("the POP3 connection to {} is closed", where), Retry::now, here());
  }

  [[noreturn]] void die(std::string_view what, std::string_view detail) {
    bool refused = guard.broken();
    close_stream();
    if (refused)
      throw Error(ErrorKind::protocol,
                  fmt::format("{}: {} sent more than {} bytes without finishing its answer; the connection was closed",
                              what, where, LineGuard::kMaxUnanswered),
                  Retry::never, here());
    throw Error(ErrorKind::network, fmt::format("{} at {}: {}", what, where, detail), Retry::now, here());
  }

  [[noreturn]] void garbled(std::string_view what, std::string_view detail) {
    close_stream();
    throw Error(ErrorKind::protocol, fmt::format("{}: {} from {}; the connection was closed", what, detail, where),
                Retry::now, here());
  }

  // The server's text of mailpop3's last answer.
  std::string etpan_text() const {
    return pop3 && pop3->pop3_response ? printable(pop3->pop3_response) : std::string();
  }

  void refresh_capabilities() {
    caps.clear();
    sasl.clear();
    clist* list = nullptr;
    int r = mailpop3_capa(pop3, &list);
    if (r == MAILPOP3_ERROR_CAPA_NOT_SUPPORTED) return;  // RFC 1939 server
    if (r != MAILPOP3_NO_ERROR) die("CAPA", "connection lost or timed out");
    for (clistiter* it = clist_begin(list); it; it = clist_next(it)) {
      auto* cap = static_cast<struct mailpop3_capa*>(clist_content(it));
      if (!cap->cap_name) continue;
      std::string name = upper(cap->cap_name);
      if (name == "SASL" && cap->cap_param)
        for (clistiter* p = clist_begin(cap->cap_param); p; p = clist_next(p))
          sasl.insert(upper(static_cast<const char*>(clist_content(p))));
      caps.insert(std::move(name));
    }
    mailpop3_capa_resp_free(list);
  }

  // --- our reader (after the login) ---

  void write(std::string_view bytes, std::string_view what) {
    ensure_alive();
    if (mailstream_write(stream(), bytes.data(), bytes.size()) < 0) die(what, "connection lost while sending");
  }
  void flush(std::string_view what) {
    if (mailstream_flush(stream()) < 0) die(what, "connection lost while sending");
  }

  // Reads more bytes into the buffer (moving what is unread to its front).
  void fill(std::string_view what) {
    if (pos > 0) {
      std::memmove(buf.data(), buf.data() + pos, len - pos);
      len -= pos;
      pos = 0;
    }
    if (len == buf.size()) buf.resize(buf.size() * 2);
    ssize_t n = mailstream_read(stream(), buf.data() + len, buf.size() - len);
    if (n <= 0) die(what, "connection lost or timed out while reading");
    len += static_cast<size_t>(n);
  }

  // One line without its CRLF (or LF), at most kMaxStatusLine bytes.
  std::string read_line(std::string_view what) {
    for (;;) {
      const char* start = buf.data() + pos;
      const void* nl = std::memchr(start, '\n', len - pos);
      if (nl) {
        size_t end = static_cast<size_t>(static_cast<const char*>(nl) - buf.data());
        std::string line(buf.data() + pos, end - pos);
        pos = end + 1;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return line;
      }
      if (len - pos > kMaxStatusLine) garbled(what, fmt::format("a response line longer than {} bytes", kMaxStatusLine));
      fill(what);
    }
  }

  // Sends `command` (it may hold a secret: never put in an error) and reads one line.
  std::string read_after(const std::string& command, std::string_view what) {
    write(command + "\r\n", what);
    flush(what);
    return read_line(what);
  }

  // Sends `command` (never a secret) and reads the status line; throws
  // Error(protocol, never) with the server's text on -ERR when `must_ok`.
  std::string simple(const std::string& command, std::string_view what, bool must_ok = true) {
    write(command + "\r\n", what);
    flush(what);
    std::string line = read_line(what);
    if (!is_ok(line) && line.rfind("-ERR", 0) != 0) garbled(what, "an answer that is neither +OK nor -ERR");
    if (must_ok && !is_ok(line))
      throw Error(ErrorKind::protocol, fmt::format("{}: {}", what, printable(response_text(line))), Retry::never,
                  here());
    return line;
  }

  // Reads a multi-line body after its +OK line up to the terminating ".":
  // bytes go to `out` (dot-unstuffed, line ends kept) while out stays within
  // `max`; returns false when the body was larger (the rest was dropped).
  bool read_body(std::string& out, uint64_t max, std::string_view what) {
    bool fits = true;
    auto append = [&](const char* p, size_t n) {
      if (!fits) return;
      if (out.size() + n > max) {
        fits = false;
        out.clear();
        out.shrink_to_fit();
        return;
      }
      out.append(p, n);
    };
    for (;;) {
      // At the start of a line: a line beginning with '.' is the end (".\r\n")
      // or dot-stuffed (the dot is dropped).
      while (len - pos < 3 && !std::memchr(buf.data() + pos, '\n', len - pos)) fill(what);
      if (buf[pos] == '.') {
        if (buf[pos + 1] == '\n') {
          pos += 2;
          return fits;
        }
        if (buf[pos + 1] == '\r' && pos + 2 < len && buf[pos + 2] == '\n') {
          pos += 3;
          return fits;
        }
        ++pos;
      }
      // The rest of the line, in as many pieces as it takes.
      for (;;) {
        const char* start = buf.data() + pos;
        const void* nl = std::memchr(start, '\n', len - pos);
        if (nl) {
          size_t n = static_cast<size_t>(static_cast<const char*>(nl) - start) + 1;
          append(start, n);
          pos += n;
          break;
        }
        append(start, len - pos);
        pos = len;
        fill(what);
      }
    }
  }
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

std::unique_ptr<Session> Session::connect(const Endpoint& endpoint) {
  auto impl = std::make_unique<Impl>();
  impl->endpoint = endpoint;
  impl->where = endpoint.address();
  const std::string& where = impl->where;
  impl->pop3 = mailpop3_new(0, nullptr);
  if (!impl->pop3) throw std::bad_alloc();
  mailpop3_set_timeout(impl->pop3, static_cast<time_t>(std::max<int64_t>(1, endpoint.timeout.count())));

  net::ConnectOptions options;
  options.host = endpoint.host;
  options.port = endpoint.effective_port();
  options.tls = endpoint.tls;
  options.ca_file = endpoint.ca_file;
  options.insecure = endpoint.insecure;
  options.timeout = endpoint.timeout;
  options.protocol = "POP3";
  options.implicit_port = 995;
  options.greeting_start = '+';
  impl->transport = std::make_unique<net::Transport>(options, &impl->guard);
  mailstream* stream = impl->transport->connect();
  int r = mailpop3_connect(impl->pop3, stream);
  if (r != MAILPOP3_NO_ERROR) {
    // mailpop3 keeps the stream even when the greeting failed.
    if (!impl->pop3->pop3_stream) mailstream_close(stream);
    std::string text = impl->etpan_text();
    bool refused = impl->guard.broken();
    impl->close_stream();
    if (refused)
      throw Error(ErrorKind::protocol, fmt::format("{} sent an endless greeting; the connection was closed", where),
                  Retry::never, {.server = where});
    throw Error(ErrorKind::network,
                text.empty() ? fmt::format("no POP3 greeting from {}", where)
                             : fmt::format("{} refused the POP3 connection: {}", where, text),
                text.empty() ? Retry::now : Retry::later, {.server = where});
  }
  impl->refresh_capabilities();

  if (endpoint.tls == net::TlsMode::starttls) {
    if (!impl->caps.count("STLS")) {
      impl->close_stream();
      throw Error(ErrorKind::protocol,
                  fmt::format("{} does not offer STLS{}", where, impl->caps.empty() ? " (it has no CAPA)" : ""),
                  Retry::never, {.server = where});
    }
    r = mailpop3_stls(impl->pop3);
    if (r == MAILPOP3_ERROR_SSL) {
      impl->close_stream();
      throw Error(ErrorKind::tls, fmt::format("{} sent data before the TLS handshake", where), Retry::never,
                  {.server = where});
    }
    if (r == MAILPOP3_ERROR_STLS_NOT_SUPPORTED) {
      std::string text = impl->etpan_text();
      impl->close_stream();
      throw Error(ErrorKind::protocol, fmt::format("{} refused STLS: {}", where, text), Retry::never,
                  {.server = where});
    }
    if (r != MAILPOP3_NO_ERROR) impl->die("STLS", "connection lost or timed out");
    try {
      impl->transport->start_tls(impl->pop3->pop3_stream);
    } catch (...) {
      impl->close_stream();
      throw;
    }
    impl->refresh_capabilities();
  }
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

void Session::login(const Credentials& c) {
  if (!c.tokens || c.mechanism != Mechanism::xoauth2) {
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
  auto refused = [&](std::string_view text) {
    return Error(ErrorKind::auth,
                 fmt::format("authentication failed for {} at {} ({}){}", c.user, where, to_string(c.mechanism),
                             text.empty() ? "" : fmt::format(": {}", printable(text))),
                 Retry::never, {.account = c.user + "@" + s.endpoint.host, .server = where});
  };
  const bool may_offer_after_tls = s.endpoint.tls == net::TlsMode::none && s.caps.count("STLS");
  auto need_sasl = [&](const char* mech) {
    if (s.sasl.count(mech)) return;
    std::string offered;
    for (auto& m : s.sasl) offered += (offered.empty() ? "" : ", ") + m;
    throw Error(ErrorKind::protocol,
                fmt::format("{} does not offer the POP3 SASL mechanism {} (it offers {}){}; nothing was sent", where,
                            mech, offered.empty() ? "none" : offered,
                            may_offer_after_tls ? "; it may offer it after STLS: use --tls starttls" : ""),
                Retry::never, {.server = where});
  };
  if (!c.auth_user.empty() && c.mechanism != Mechanism::plain)
    throw Error(ErrorKind::usage, "an admin (authorization) user needs SASL PLAIN");
  int r = MAILPOP3_NO_ERROR;
  switch (c.mechanism) {
    case Mechanism::user_pass: {
      r = mailpop3_user(s.pop3, c.user.c_str());
      if (r == MAILPOP3_NO_ERROR) r = mailpop3_pass(s.pop3, c.secret.c_str());
      if (r == MAILPOP3_ERROR_BAD_USER || r == MAILPOP3_ERROR_BAD_PASSWORD) {
        if (!s.pop3->pop3_response) s.die("login", "connection lost or timed out");
        throw refused(s.etpan_text());
      }
      break;
    }
    case Mechanism::apop: {
      if (!s.pop3->pop3_timestamp)
        throw Error(ErrorKind::protocol,
                    fmt::format("{} does not offer APOP (no timestamp in its greeting); nothing was sent", where),
                    Retry::never, {.server = where});
      // mailpop3_apop's MD5 (libetpan's own, lep_MD5) is wrong on 64-bit
      // machines (MD5("abc") comes out 7999dc75...): the digest is made here.
      std::string line = s.read_after(fmt::format("APOP {} {}", c.user, md5_hex(std::string(s.pop3->pop3_timestamp) + c.secret)),
                                      "login");
      if (!is_ok(line)) throw refused(response_text(line));
      break;
    }
    case Mechanism::plain:
    case Mechanism::cram_md5: {
      const char* mech = c.mechanism == Mechanism::plain ? "PLAIN" : "CRAM-MD5";
      need_sasl(mech);
      const std::string& authcid = c.auth_user.empty() ? c.user : c.auth_user;
      uint64_t writes_before = s.guard.writes();
      s.pop3->pop3_response = nullptr;
      r = mailpop3_auth(s.pop3, mech, s.endpoint.host.c_str(), nullptr, nullptr, c.user.c_str(), authcid.c_str(),
                        c.secret.c_str(), nullptr);
      if (r == MAILPOP3_ERROR_BAD_USER) {
        // mailpop3 says BAD_USER for a refusal, a lost connection and a
        // mechanism this machine's SASL library lacks alike.
        if (s.pop3->pop3_response) throw refused(s.etpan_text());
        if (s.guard.writes() == writes_before)
          throw Error(ErrorKind::usage,
                      fmt::format("the SASL mechanism {} is not available on this machine (is libsasl2-modules "
                                  "installed?)",
                                  mech),
                      Retry::never, {.server = where});
        s.die("login", "connection lost or timed out");
      }
      break;
    }
    case Mechanism::xoauth2: {
      need_sasl("XOAUTH2");
      std::string token = base64("user=" + c.user + "\x01" + "auth=Bearer " + c.secret + "\x01\x01");
      std::string line = s.read_after("AUTH XOAUTH2 " + token, "login");
      if (line.rfind("+ ", 0) == 0 || line == "+") {
        // The server's error details (base64 JSON): answer with an empty line to get the -ERR.
        s.write("\r\n", "login");
        s.flush("login");
        line = s.read_line("login");
      }
      if (!is_ok(line)) throw refused(response_text(line));
      r = MAILPOP3_NO_ERROR;
      break;
    }
  }
  if (r != MAILPOP3_NO_ERROR) s.die("login", "connection lost or timed out");
  // mailpop3's part ends here; from now on our reader reads the responses.
  s.guard.relax();
  if (c.mechanism != Mechanism::xoauth2) {
    // Capabilities after the login (RFC 2449 allows them to change), by hand.
    std::string line = s.simple("CAPA", "CAPA", false);
    if (is_ok(line)) {
      s.caps.clear();
      s.sasl.clear();
      for (;;) {
        std::string cap = s.read_line("CAPA");
        if (cap == ".") break;
        std::string name = upper(cap.substr(0, cap.find(' ')));
        if (name == "SASL") {
          size_t p = cap.find(' ');
          while (p != std::string::npos) {
            size_t q = cap.find(' ', p + 1);
            std::string mech = cap.substr(p + 1, q == std::string::npos ? std::string::npos : q - p - 1);
            if (!mech.empty()) s.sasl.insert(upper(mech));
            p = q;
          }
        }
        if (!name.empty()) s.caps.insert(name);
      }
    }
  }
}

const Endpoint& Session::endpoint() const { return impl_->endpoint; }
const std::set<std::string>& Session::capabilities() const { return impl_->caps; }
bool Session::has_capability(std::string_view name) const { return impl_->caps.count(upper(name)) > 0; }
const std::set<std::string>& Session::sasl_mechanisms() const { return impl_->sasl; }
bool Session::offers_apop() const { return impl_->pop3 && impl_->pop3->pop3_timestamp; }

Maildrop Session::list() {
  Impl& s = *impl_;
  s.ensure_alive();
  Maildrop drop;
  auto number_of = [&](std::string_view line, std::string_view what, std::string_view& rest) -> uint32_t {
    uint64_t n = 0;
    size_t i = 0;
    while (i < line.size() && line[i] >= '0' && line[i] <= '9' && n <= UINT32_MAX) n = n * 10 + (line[i++] - '0');
    if (i == 0 || n == 0 || n > UINT32_MAX || i >= line.size() || line[i] != ' ')
      s.garbled(what, fmt::format("an unreadable line {:?}", printable(line)));
    while (i < line.size() && line[i] == ' ') ++i;
    rest = line.substr(i);
    return static_cast<uint32_t>(n);
  };
  s.simple("LIST", "LIST");
  for (;;) {
    std::string line = s.read_line("LIST");
    if (line == ".") break;
    std::string_view rest;
    uint32_t number = number_of(line, "LIST", rest);
    uint64_t size = 0;
    size_t i = 0;
    while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9' && size < (1ull << 60)) size = size * 10 + (rest[i++] - '0');
    if (i == 0) s.garbled("LIST", fmt::format("an unreadable line {:?}", printable(line)));
    if (!drop.entries.empty() && number <= drop.entries.back().number)
      s.garbled("LIST", "message numbers out of order");
    drop.entries.push_back({number, size, ""});
  }
  std::string line = s.simple("UIDL", "UIDL", false);
  if (!is_ok(line)) return drop;
  drop.has_uidl = true;
  for (;;) {
    std::string l = s.read_line("UIDL");
    if (l == ".") break;
    std::string_view rest;
    uint32_t number = number_of(l, "UIDL", rest);
    while (!rest.empty() && rest.back() == ' ') rest.remove_suffix(1);
    if (rest.empty() || rest.size() > 1000) s.garbled("UIDL", fmt::format("an unreadable line {:?}", printable(l)));
    auto it = std::lower_bound(drop.entries.begin(), drop.entries.end(), number,
                               [](const Entry& e, uint32_t n) { return e.number < n; });
    if (it == drop.entries.end() || it->number != number)
      s.garbled("UIDL", fmt::format("a UIDL for message {}, which LIST did not show", number));
    it->uidl = std::string(rest);
  }
  for (auto& e : drop.entries)
    if (e.uidl.empty()) s.garbled("UIDL", fmt::format("no UIDL for message {}", e.number));
  return drop;
}

void Session::retrieve(const std::vector<uint32_t>& numbers, uint64_t max_size, RetrieveSink& sink,
                       size_t in_flight) {
  Impl& s = *impl_;
  s.ensure_alive();
  const size_t window = s.caps.count("PIPELINING") ? std::max<size_t>(1, in_flight) : 1;
  size_t sent = 0, done = 0;
  bool stopped = false;
  std::string body;
  try {
    while (done < numbers.size()) {
      if (!stopped && sent < numbers.size() && sent - done < window) {
        std::string commands;
        while (sent < numbers.size() && sent - done < window) {
          sink.before_send(sent);
          commands += fmt::format("RETR {}\r\n", numbers[sent++]);
          if (sink.paced()) {
            s.write(commands, "RETR");
            s.flush("RETR");
            commands.clear();
          }
        }
        if (!commands.empty()) {
          s.write(commands, "RETR");
          s.flush("RETR");
        }
      }
      if (done == sent) break;  // stopped with nothing outstanding
      std::string line = s.read_line("RETR");
      if (is_ok(line)) {
        body.clear();
        bool fits = s.read_body(body, max_size, "RETR");
        if (fits)
          sink.message(done, std::move(body));
        else
          sink.failed(done, fmt::format("larger than the maximum message size ({} bytes)", max_size), true);
      } else if (line.rfind("-ERR", 0) == 0) {
        sink.failed(done, printable(response_text(line)), false);
      } else {
        s.garbled("RETR", "an answer that is neither +OK nor -ERR");
      }
      ++done;
      if (!stopped && sink.stop()) stopped = true;
    }
  } catch (const Error&) {
    if (done < sent) s.close_stream();  // answers still on the way: the connection is out of step
    throw;
  } catch (...) {
    s.close_stream();
    throw;
  }
}

void Session::dele(uint32_t number) {
  impl_->ensure_alive();
  impl_->simple(fmt::format("DELE {}", number), fmt::format("DELE {}", number));
}

void Session::noop() {
  impl_->ensure_alive();
  impl_->simple("NOOP", "NOOP");
}

void Session::quit() {
  Impl& s = *impl_;
  s.ensure_alive();
  std::string line = s.simple("QUIT", "QUIT", false);
  s.close_stream();
  if (!is_ok(line))
    throw Error(ErrorKind::protocol,
                fmt::format("QUIT at {}: {} (messages marked for deletion were kept)", s.where,
                            printable(response_text(line))),
                Retry::never, s.here());
}

void Session::close() { impl_->close_stream(); }

bool Session::alive() const { return !impl_->dead && impl_->stream(); }

namespace {

// Bytes of a replay, handed out in pieces as a socket would.
struct ReplaySource {
  std::string_view data;
  size_t pos = 0;
  unsigned step = 1;
};

ssize_t replay_read(mailstream_low* s, void* buf, size_t count) {
  auto* src = static_cast<ReplaySource*>(s->data);
  if (src->pos >= src->data.size()) return -1;
  src->step = src->step * 1103515245u + 12345u;
  size_t n = std::min({count, src->data.size() - src->pos, size_t{1} + (src->step >> 16) % 4096});
  std::memcpy(buf, src->data.data() + src->pos, n);
  src->pos += n;
  return static_cast<ssize_t>(n);
}
ssize_t replay_write(mailstream_low*, const void*, size_t count) { return static_cast<ssize_t>(count); }
int replay_close(mailstream_low*) { return 0; }
int replay_get_fd(mailstream_low*) { return -1; }
void replay_free(mailstream_low* s) { free(s); }
void replay_cancel(mailstream_low*) {}
struct mailstream_cancel* replay_get_cancel(mailstream_low*) { return nullptr; }
int replay_idle(mailstream_low*) { return -1; }

mailstream_low_driver replay_driver = {
    replay_read, replay_write, replay_close, replay_get_fd, replay_free, replay_cancel, replay_get_cancel,
    nullptr,     replay_idle,  replay_idle,  replay_idle,
};

}  // namespace

std::string replay_responses(std::string_view bytes, uint64_t max_message_size) {
  ReplaySource source{bytes, 0, static_cast<unsigned>(bytes.size())};
  auto impl = std::make_unique<Session::Impl>();
  impl->where = "replay";
  impl->pop3 = mailpop3_new(0, nullptr);
  if (!impl->pop3) throw std::bad_alloc();
  mailstream_low* low = mailstream_low_new(&source, &replay_driver);
  if (!low) throw std::bad_alloc();
  mailstream* stream = mailstream_new(low, 8192);
  if (!stream) {
    mailstream_low_free(low);
    throw std::bad_alloc();
  }
  impl->pop3->pop3_stream = stream;
  impl->guard.relax();
  Session session(std::move(impl));
  struct Count final : RetrieveSink {
    void message(size_t, std::string&&) override {}
    void failed(size_t, const std::string&, bool) override {}
  } sink;
  try {
    Maildrop drop = session.list();
    std::vector<uint32_t> numbers;
    for (auto& e : drop.entries) numbers.push_back(e.number);
    session.retrieve(numbers, max_message_size, sink);
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

}  // namespace imapstage::pop3

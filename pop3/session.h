// One POP3 connection (RFC 1939, CAPA/RFC 2449, STLS/RFC 2595, AUTH/RFC
// 5034), wrapping libetpan's mailpop3 over a net::Transport. The only code
// that includes <libetpan/mailpop3.h>; everything above sees these small C++
// types and imapstage::Error (kinds network/tls/auth/protocol).
//
// mailpop3 does the greeting (and its APOP timestamp), CAPA, STLS, USER/PASS,
// APOP and SASL (PLAIN, CRAM-MD5). It is not used after the login, because
// (libetpan 1.9.4):
//  - mailpop3_retr holds the whole response in one buffer, appends lines with
//    strlen (a NUL byte cuts the rest of its line) and turns a bare-LF line
//    end into CRLF, so the bytes archived would not be the bytes served;
//  - it sends one command and waits for its answer (no PIPELINING);
//  - mailpop3_list sends UIDL behind the caller's back and hides its failure,
//    mailpop3_dele sends LIST first when none was read through it;
//  - no line has a length limit, and there is no XOAUTH2.
// After the login this wrapper reads the responses itself from the stream:
// LIST, UIDL, RETR (exact bytes, dot-unstuffed, several commands in flight
// when the server offers PIPELINING), DELE, NOOP, QUIT.
//
// A Session is not thread-safe. After an Error with retry() == Retry::now the
// session is dead (closed): make a new one. DELE only marks messages; they go
// only at a successful quit(); a session dropped otherwise deletes nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/token_command.h"
#include "net/transport.h"

namespace imapstage::pop3 {

// Where and how to connect.
struct Endpoint {
  std::string host;
  uint16_t port = 0;                  // 0: 995 for implicit TLS, 110 otherwise
  net::TlsMode tls = net::TlsMode::implicit;
  std::string ca_file;                // PEM bundle; empty: the system's trust store
  bool insecure = false;              // skip certificate and host-name verification
  std::chrono::seconds timeout{120};  // per network read or write
  uint64_t max_message_size = 1ull << 30;  // a larger message is read and dropped, not kept

  uint16_t effective_port() const { return port ? port : (tls == net::TlsMode::implicit ? 995 : 110); }
  std::string address() const { return net::address(host, effective_port()); }
};

enum class Mechanism {
  user_pass,  // USER / PASS
  apop,       // APOP (the greeting must carry a timestamp)
  plain,      // SASL PLAIN, with an authorization identity in admin mode
  cram_md5,   // SASL CRAM-MD5
  xoauth2,    // SASL XOAUTH2; the secret is the OAuth2 access token
};

// "USER/PASS", "APOP", "PLAIN", "CRAM-MD5", "XOAUTH2".
const char* to_string(Mechanism mechanism);

// Who to log in as. `secret` is a password or token: never logged or echoed.
struct Credentials {
  std::string user;        // the mailbox to open (authorization identity)
  std::string secret;
  Mechanism mechanism = Mechanism::user_pass;
  std::string auth_user;   // authentication identity when it differs from `user` (admin mode; PLAIN only)
  // XOAUTH2 only: when set, the token comes from here instead of `secret`,
  // and a refused one is renewed once and tried again.
  std::shared_ptr<TokenSource> tokens;
};

// One message of the maildrop, from LIST and UIDL.
struct Entry {
  uint32_t number = 0;     // message number in this session
  uint64_t size = 0;       // as LIST reports it
  std::string uidl;        // "" when the server has no UIDL
};

struct Maildrop {
  std::vector<Entry> entries;  // ascending by number
  bool has_uidl = false;       // UIDL answered +OK
};

// Receives RETR results, in the order asked for.
class RetrieveSink {
 public:
  virtual ~RetrieveSink() = default;
  // The message's bytes exactly as served, dot-stuffing removed (line ends as sent).
  virtual void message(size_t index, std::string&& bytes) = 0;
  // The server answered -ERR (`text` is its reason), or the message was larger
  // than `max_size` (`too_large`; its bytes were read and dropped).
  virtual void failed(size_t index, const std::string& text, bool too_large) = 0;
  // Asked after each message; true sends no further RETR (those sent are read).
  virtual bool stop() { return false; }
  // Called just before the RETR of numbers[index] is sent; may block (a rate
  // cap). When paced() is true each RETR is sent on its own as soon as this
  // returns, otherwise they go out in groups; either way pipelined
  // `in_flight` deep.
  virtual void before_send(size_t /*index*/) {}
  virtual bool paced() const { return false; }
};

class Session {
 public:
  // Connects and reads the greeting; for starttls, asks CAPA and refuses a
  // server that does not offer STLS (Error(protocol, never)) before anything
  // else is sent, then upgrades; TLS is verified as for IMAP (net::Transport).
  // Throws Error(network) if unreachable or the greeting is missing or -ERR,
  // Error(tls) for a failed handshake or an untrusted certificate.
  static std::unique_ptr<Session> connect(const Endpoint& endpoint);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Logs in. Throws Error(auth, never) "authentication failed for USER at
  // HOST:PORT" on refusal; Error(protocol, never) naming the mechanism when
  // the server does not offer it (nothing sent). Capabilities are asked again
  // afterwards.
  void login(const Credentials& credentials);

  const Endpoint& endpoint() const;
  // Upper-case capability names from CAPA ("UIDL", "PIPELINING", "STLS", "TOP",
  // "USER", "SASL", ...); empty when the server has no CAPA.
  const std::set<std::string>& capabilities() const;
  bool has_capability(std::string_view name) const;
  // The SASL mechanisms CAPA listed (upper case).
  const std::set<std::string>& sasl_mechanisms() const;
  // True when the greeting carried an APOP timestamp.
  bool offers_apop() const;

  // LIST, then UIDL. A UIDL answered -ERR leaves has_uidl false and every uidl "".
  // Throws Error(protocol) for a listing that does not parse.
  Maildrop list();

  // RETR of each message number, in order, to `sink`; up to `in_flight`
  // commands are out at once when the server offers PIPELINING (one
  // otherwise). Only one message is held in memory. A message larger than
  // `max_size` is read and dropped (sink.failed, too_large). Throws Error
  // (network, now) when the connection fails; an exception from the sink
  // closes the connection and propagates.
  void retrieve(const std::vector<uint32_t>& numbers, uint64_t max_size, RetrieveSink& sink,
                size_t in_flight = 16);

  // DELE: marks the message; it is removed at quit(). Throws Error(protocol, never) on -ERR.
  void dele(uint32_t number);
  void noop();

  // QUIT: the server applies the DELEs. Throws Error(protocol) when it answers
  // -ERR (then nothing was deleted), Error(network) when the answer is lost.
  void quit();
  // Closes without QUIT (no DELE takes effect). Safe on a dead session.
  void close();
  bool alive() const;


 private:
  friend std::string replay_responses(std::string_view, uint64_t);
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  void login_once(const Credentials& credentials);
  std::unique_ptr<Impl> impl_;
};

// What a POP3 response line is: "+OK ..." or "-ERR ...". Exposed for tests.
bool is_ok(std::string_view line);

// Reads `bytes` as a server's answers, after a login, to LIST, UIDL, then a
// RETR of every listed message (through the session's own reader, bytes
// handed out in reads of every size up to 4 KiB, messages over
// `max_message_size` dropped). Returns "" when everything parsed, else the
// error that stopped it. No network; for fuzzing and tests.
std::string replay_responses(std::string_view bytes, uint64_t max_message_size = 64 * 1024);

}  // namespace imapstage::pop3

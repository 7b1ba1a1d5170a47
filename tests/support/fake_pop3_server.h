// A scripted POP3 server for tests of what a real server will not do: no
// UIDL, duplicate UIDLs, a connection dropped in the middle of a message,
// APOP and XOAUTH2 logins, a CAPA without STLS.
//
// Listens on 127.0.0.1 (a free port), cleartext only, one thread per
// connection. It is an honest RFC 1939 server over an in-memory maildrop:
// greeting (with an APOP timestamp), CAPA, USER/PASS, APOP, AUTH PLAIN and
// XOAUTH2 (initial response), STAT, LIST, UIDL, RETR (dot-stuffed, bytes as
// given), TOP, DELE, RSET, NOOP, QUIT (removes what was DELEted).
// Destroying the server closes every connection and joins every thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pop3/session.h"

namespace imapstage::testing {

struct FakePop3Message {
  std::string uidl;   // ignored when the server has no UIDL
  std::string bytes;  // served exactly (dot-stuffed on the wire)
};

class FakePop3Server {
 public:
  FakePop3Server();
  ~FakePop3Server();
  FakePop3Server(const FakePop3Server&) = delete;
  FakePop3Server& operator=(const FakePop3Server&) = delete;

  uint16_t port() const { return port_; }
  // Cleartext, `timeout_seconds` per read.
  pop3::Endpoint endpoint(int timeout_seconds = 3) const;

  // --- behaviour (set before connecting) ---
  void set_messages(std::vector<FakePop3Message> messages);
  std::vector<FakePop3Message> messages() const;
  void set_login(std::string user, std::string password);  // default alice / secret
  void set_uidl(bool offered);                             // default true
  void set_capa(std::optional<std::string> lines);         // CAPA lines (CRLF-separated); nullopt: -ERR
  // The next RETR of message `number` sends only `bytes` of it and drops the connection (once).
  void drop_during_retr(uint32_t number, size_t bytes);
  // Answers every command `verb` (upper case, e.g. "LIST") with `raw` instead (bytes as given).
  void answer(std::string verb, std::string raw);
  // Every command line received (PASS and AUTH arguments replaced by "***"), in order.
  std::vector<std::string> commands() const;
  // When each of commands() was read (steady clock), to measure a pace.
  std::vector<std::chrono::steady_clock::time_point> command_times() const;
  size_t connections() const;

 private:
  void serve(int fd);

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  mutable std::mutex mutex_;
  std::vector<std::thread> threads_;
  std::vector<int> fds_;
  bool stopping_ = false;
  std::vector<FakePop3Message> messages_;
  std::string user_ = "alice", password_ = "secret";
  bool uidl_ = true;
  std::optional<std::string> capa_ = std::string("TOP\r\nUIDL\r\nUSER\r\nPIPELINING\r\nSASL PLAIN XOAUTH2\r\n");
  std::optional<std::pair<uint32_t, size_t>> drop_;
  std::vector<std::pair<std::string, std::string>> answers_;
  std::vector<std::string> commands_;
  std::vector<std::chrono::steady_clock::time_point> command_times_;
  size_t connections_ = 0;
};

}  // namespace imapstage::testing

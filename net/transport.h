// The connection under a mail protocol session (IMAP, POP3): TCP connect
// with a timeout, TLS (implicit, or upgraded after the protocol's STARTTLS /
// STLS) with the certificate chain and host name verified by OpenSSL before
// any credential is sent, SNI, buffered reads, and a per-read timeout that
// turns a silent server, EOF or a reset into a failed read.
//
// libetpan's protocol layers (mailimap, mailpop3) read and write a
// `mailstream`; a Transport makes that stream and the socket layers beneath
// it. It is the only code besides the protocol wrappers that includes
// <libetpan/...> (its stream types only), and the only code that touches
// GnuTLS and OpenSSL for a connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

struct _mailstream;
struct _mailstream_low;

namespace imapstage::net {

enum class TlsMode {
  implicit,  // TLS from the first byte (IMAP 993, POP3 995)
  starttls,  // plain connect, then the protocol's STARTTLS/STLS; refused if not offered (IMAP 143, POP3 110)
  none,      // cleartext; only when asked for
};

// Sees every byte received and every write to the server, to put limits on
// what a server sends (see imap::WireGuard). Reads fail once it refuses.
class WireObserver {
 public:
  virtual ~WireObserver() = default;
  // Follows `bytes`, received in order. Returns false (and from then on) to refuse them.
  virtual bool feed(std::string_view bytes) = 0;
  // Time spent waiting for the server in one read. Returns false (for good) when that is too much.
  virtual bool waited(std::chrono::steady_clock::duration wait) = 0;
  // Bytes went to the server.
  virtual void sent() = 0;
  // True once feed() or waited() refused.
  virtual bool broken() const = 0;
};

// Where and how to connect.
struct ConnectOptions {
  std::string host;
  uint16_t port = 0;                  // must be set
  TlsMode tls = TlsMode::implicit;
  std::string ca_file;                // PEM bundle; empty: the system's trust store
  bool insecure = false;              // skip certificate and host-name verification
  std::chrono::seconds timeout{120};  // per connect, handshake, read and write
  // For messages: the protocol ("IMAP", "POP3"), its implicit-TLS port, and
  // the first byte of its cleartext greeting ('*' for IMAP, '+' for POP3).
  std::string protocol = "IMAP";
  uint16_t implicit_port = 993;
  char greeting_start = '*';
};

// "host:port" ("[v6]:port" for an IPv6 literal).
std::string address(const std::string& host, uint16_t port);

// One connection's socket and TLS layers. A Transport must outlive the
// stream it made (the stream's TLS layer reads through it). Not thread-safe.
class Transport {
 public:
  // `observer` (may be null) sees the bytes of every stream this Transport makes; it must outlive them.
  Transport(ConnectOptions options, WireObserver* observer);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Connects. With implicit TLS, completes the handshake (SNI = host) and
  // verifies the chain and host name (unless insecure); with starttls,
  // refuses within seconds a server that answers in TLS. Returns a new
  // stream (8 KiB buffer) the caller owns and closes with mailstream_close.
  // Throws Error(network, retry now/later) if unreachable or the handshake
  // times out, Error(tls, never) for a failed handshake or an untrusted
  // certificate.
  _mailstream* connect();

  // After the server accepted STARTTLS/STLS on `stream` (made by connect()):
  // the TLS handshake on the same socket, the certificate verified (unless
  // insecure), the stream reading and writing through TLS from now on.
  // Throws Error(tls) if the server sent anything after its answer (an
  // injection attempt) or the handshake or verification fails; the caller
  // then closes the stream.
  void start_tls(_mailstream* stream);

  // True if the TLS layer holds decrypted bytes not read yet (the stream's
  // own buffer is the caller's to check).
  bool tls_pending() const;
  // True once the stream reads through TLS.
  bool secure() const { return tls_ != nullptr; }

  // Sets every later read and write on `stream` to time out after `timeout` (e.g. a short LOGOUT).
  void shorten_timeout(_mailstream* stream, std::chrono::seconds timeout);

  const ConnectOptions& options() const { return options_; }
  const std::string& where() const { return where_; }

  class TlsReadBuffer;

 private:
  ConnectOptions options_;
  std::string where_;
  WireObserver* observer_;
  std::unique_ptr<TlsReadBuffer> tls_;
};

// The GnuTLS library this process runs with (libetpan's TLS), e.g. "3.7.9".
std::string gnutls_version();

}  // namespace imapstage::net

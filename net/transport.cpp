// net::Transport: TCP, TLS over libetpan's GnuTLS stream layer with the
// certificate verified by OpenSSL (libetpan's GnuTLS build checks nothing:
// shared notes "libetpan-and-dovecot", trap 1), our own cleartext stream
// driver, and a buffered TLS socket reader.
#include "net/transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <vector>

#include <libetpan/mailstream.h>
#include <libetpan/mailstream_low.h>
#include <libetpan/mailstream_ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <gnutls/gnutls.h>

#include <fmt/format.h>

#include "common/error.h"

namespace imapstage::net {
namespace {

using Clock = std::chrono::steady_clock;

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// --- our stream driver for cleartext sockets ---------------------------------------
//
// libetpan's socket driver returns 0 at EOF, which makes its literal reader spin
// forever when a server drops the connection mid-literal. This one turns EOF
// and timeouts into -1, and writes with MSG_NOSIGNAL.

struct PlainSocket {
  int fd = -1;
  int timeout_ms = 120000;
  // Set when a read timed out: later reads fail at once. libetpan hands out
  // what it had buffered before reporting an error and then reads again,
  // which would otherwise wait a second timeout.
  bool timed_out = false;
  WireObserver* guard = nullptr;  // sees every byte read and every write
};

int wait_fd(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    int r = poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    return 0;
  }
}

ssize_t plain_read(mailstream_low* s, void* buf, size_t count) {
  auto* d = static_cast<PlainSocket*>(s->data);
  if (d->fd < 0 || d->timed_out || (d->guard && d->guard->broken())) return -1;
  for (;;) {
    auto started = Clock::now();
    int waited = wait_fd(d->fd, POLLIN, d->timeout_ms);
    if (d->guard && !d->guard->waited(Clock::now() - started)) return -1;
    if (waited < 0) {
      d->timed_out = true;
      return -1;
    }
    ssize_t r = recv(d->fd, buf, count, MSG_DONTWAIT);
    if (r > 0) {
      if (d->guard && !d->guard->feed(std::string_view(static_cast<const char*>(buf), static_cast<size_t>(r))))
        return -1;
      return r;
    }
    if (r == 0) return -1;  // EOF
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    return -1;
  }
}

ssize_t plain_write(mailstream_low* s, const void* buf, size_t count) {
  auto* d = static_cast<PlainSocket*>(s->data);
  if (d->fd < 0) return -1;
  if (d->guard) d->guard->sent();
  const char* p = static_cast<const char*>(buf);
  size_t left = count;
  while (left > 0) {
    if (wait_fd(d->fd, POLLOUT, d->timeout_ms) < 0) return -1;
    ssize_t r = send(d->fd, p, left, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return -1;
    }
    p += r;
    left -= static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(count);
}

int plain_close(mailstream_low* s) {
  auto* d = static_cast<PlainSocket*>(s->data);
  if (d->fd >= 0) ::close(d->fd);
  d->fd = -1;
  return 0;
}

int plain_get_fd(mailstream_low* s) { return static_cast<PlainSocket*>(s->data)->fd; }

void plain_free(mailstream_low* s) {
  delete static_cast<PlainSocket*>(s->data);
  free(s);
}

void plain_cancel(mailstream_low*) {}
struct mailstream_cancel* plain_get_cancel(mailstream_low*) { return nullptr; }
int plain_idle(mailstream_low*) { return -1; }

mailstream_low_driver plain_driver = {
    plain_read, plain_write, plain_close, plain_get_fd, plain_free, plain_cancel, plain_get_cancel,
    nullptr,    plain_idle,  plain_idle,  plain_idle,
};

// --- TCP connect ---------------------------------------------------------------------

int tcp_connect(const ConnectOptions& ep, const std::string& where) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string port = std::to_string(ep.port);
  int gr = getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &res);
  if (gr != 0) {
    Retry retry = (gr == EAI_AGAIN) ? Retry::now : Retry::later;
    throw Error(ErrorKind::network, fmt::format("cannot resolve {}: {}", ep.host, gai_strerror(gr)), retry,
                {.server = where});
  }
  std::string last_error = "no address";
  int timeout_ms = static_cast<int>(std::min<int64_t>(ep.timeout.count() * 1000, std::numeric_limits<int>::max()));
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last_error = strerror(errno);
      continue;
    }
    int r = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS) {
      if (wait_fd(fd, POLLOUT, timeout_ms) < 0) {
        last_error = "timed out";
        ::close(fd);
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      r = err ? -1 : 0;
      errno = err;
    }
    if (r != 0) {
      last_error = strerror(errno);
      ::close(fd);
      continue;
    }
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);  // GnuTLS's handshake in libetpan wants a blocking socket
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    freeaddrinfo(res);
    return fd;
  }
  freeaddrinfo(res);
  throw Error(ErrorKind::network, fmt::format("cannot connect to {}: {}", where, last_error), Retry::now,
              {.server = where});
}

// --- certificate verification (OpenSSL) ---------------------------------------------

// Mirrors libetpan's private struct for the GnuTLS build (mailstream_ssl.c).
struct EtpanGnutlsData {
  int fd;
  void* session;
};

// True if the TLS layer holds a peer certificate (guards libetpan's chain getter,
// which returns an uninitialised pointer otherwise).
bool has_peer_certificate(mailstream_low* low) {
  if (!low || !low->data) return false;
  auto* data = static_cast<EtpanGnutlsData*>(low->data);
  unsigned int n = 0;
  const gnutls_datum_t* list = gnutls_certificate_get_peers(static_cast<gnutls_session_t>(data->session), &n);
  return list != nullptr && n > 0;
}

}  // namespace


// Reads a TLS connection's socket in large pieces. On its own, GnuTLS asks
// the socket for each record's 5-byte header and then for its body: two recv
// calls per record, and Dovecot sends records of 4 KiB, so a 200 MB export
// made 120,000 calls. Here the socket is read 256 KiB at a time into a buffer
// GnuTLS pulls records from, and the stream's read function is replaced by
// one that waits on the socket only when that buffer is empty too (libetpan's
// own waits on the socket whenever GnuTLS says "again", which it also says
// after a record with no application data, such as a session ticket).
class Transport::TlsReadBuffer {
 public:
  // Takes over `low`'s GnuTLS transport and read function; must outlive `low`.
  explicit TlsReadBuffer(mailstream_low* low, WireObserver* guard) : guard_(guard), buf_(kSize) {
    auto* data = static_cast<EtpanGnutlsData*>(low->data);
    fd_ = data->fd;
    session_ = static_cast<gnutls_session_t>(data->session);
    gnutls_transport_set_ptr(session_, this);
    gnutls_transport_set_pull_function(session_, &TlsReadBuffer::pull);
    gnutls_transport_set_pull_timeout_function(session_, &TlsReadBuffer::pull_timeout);
    gnutls_transport_set_push_function(session_, &TlsReadBuffer::push);
    driver_ = *low->driver;
    driver_.mailstream_read = &TlsReadBuffer::read;
    low->driver = &driver_;
  }
  TlsReadBuffer(const TlsReadBuffer&) = delete;
  TlsReadBuffer& operator=(const TlsReadBuffer&) = delete;

  // Decrypted bytes wait to be read (in GnuTLS or in this buffer).
  bool pending() const { return buffered() || gnutls_record_check_pending(session_) > 0; }

 private:
  static constexpr size_t kSize = 256 * 1024;

  bool buffered() const { return pos_ < len_; }

  // The stream's read: decrypted bytes, or -1 on EOF, error or timeout.
  static ssize_t read(mailstream_low* low, void* buf, size_t count) {
    auto* data = static_cast<EtpanGnutlsData*>(low->data);
    auto session = static_cast<gnutls_session_t>(data->session);
    auto* self = static_cast<TlsReadBuffer*>(gnutls_transport_get_ptr(session));
    if (self->timed_out_ || self->guard_->broken()) return -1;
    int timeout_ms = static_cast<int>(std::min<unsigned long>(low->timeout ? low->timeout * 1000 : 30000, INT32_MAX));
    for (;;) {
      ssize_t r = gnutls_record_recv(session, buf, count);
      if (r > 0) {
        if (!self->guard_->feed(std::string_view(static_cast<const char*>(buf), static_cast<size_t>(r)))) return -1;
        return r;
      }
      if (r == 0) return -1;  // closed
      if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) return -1;
      if (self->buffered() || gnutls_record_check_pending(session) > 0) continue;
      auto started = Clock::now();
      int waited = wait_fd(self->fd_, POLLIN, timeout_ms);
      if (!self->guard_->waited(Clock::now() - started)) return -1;
      if (waited < 0) {
        // For good: libetpan hands out what it had buffered before reporting
        // an error and then reads again, which would wait a second timeout.
        self->timed_out_ = true;
        return -1;
      }
    }
  }

  static ssize_t pull(gnutls_transport_ptr_t p, void* data, size_t size) {
    auto* self = static_cast<TlsReadBuffer*>(p);
    if (!self->buffered()) {
      ssize_t r;
      do r = ::recv(self->fd_, self->buf_.data(), self->buf_.size(), 0);
      while (r < 0 && errno == EINTR);
      if (r <= 0) {
        if (r < 0) gnutls_transport_set_errno(self->session_, errno);
        return r;
      }
      self->pos_ = 0;
      self->len_ = static_cast<size_t>(r);
    }
    size_t n = std::min(size, self->len_ - self->pos_);
    std::memcpy(data, self->buf_.data() + self->pos_, n);
    self->pos_ += n;
    return static_cast<ssize_t>(n);
  }

  // Data is ready when the buffer holds some, else when the socket does.
  static int pull_timeout(gnutls_transport_ptr_t p, unsigned int ms) {
    auto* self = static_cast<TlsReadBuffer*>(p);
    if (self->buffered()) return 1;
    int timeout = ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : static_cast<int>(std::min<unsigned>(ms, INT32_MAX));
    return wait_fd(self->fd_, POLLIN, timeout) == 0 ? 1 : 0;  // a poll error reads as a timeout
  }

  // The transport pointer is GnuTLS's socket for writes too: they go to the
  // same socket, unbuffered (the socket is non-blocking: EAGAIN makes
  // libetpan wait until it can write).
  static ssize_t push(gnutls_transport_ptr_t p, const void* data, size_t size) {
    auto* self = static_cast<TlsReadBuffer*>(p);
    self->guard_->sent();
    ssize_t r;
    do r = ::send(self->fd_, data, size, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0) gnutls_transport_set_errno(self->session_, errno);
    return r;
  }

  int fd_ = -1;
  WireObserver* guard_;
  gnutls_session_t session_ = nullptr;
  mailstream_low_driver driver_{};
  bool timed_out_ = false;  // a read timed out: the connection is given up
  std::vector<char> buf_;
  size_t pos_ = 0, len_ = 0;
};

namespace {

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  if (!e) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

void verify_peer(mailstream_low* low, const ConnectOptions& ep, const std::string& where) {
  auto fail = [&](const std::string& why) {
    throw Error(ErrorKind::tls, fmt::format("certificate of {} not accepted: {}", where, why), Retry::never,
                {.server = where});
  };
  if (!has_peer_certificate(low)) fail("the server sent no certificate");
  carray* chain = mailstream_low_get_certificate_chain(low);
  if (!chain || carray_count(chain) == 0) {
    if (chain) carray_free(chain);
    fail("the server sent no certificate");
  }
  std::vector<X509*> certs;
  for (unsigned i = 0; i < carray_count(chain); ++i) {
    auto* der = static_cast<MMAPString*>(carray_get(chain, i));
    const unsigned char* p = reinterpret_cast<const unsigned char*>(der->str);
    X509* x = d2i_X509(nullptr, &p, static_cast<long>(der->len));
    if (x) certs.push_back(x);
    mmap_string_free(der);
  }
  carray_free(chain);
  struct Cleanup {
    std::vector<X509*>& certs;
    X509_STORE* store = nullptr;
    X509_STORE_CTX* ctx = nullptr;
    STACK_OF(X509)* untrusted = nullptr;
    ~Cleanup() {
      if (ctx) X509_STORE_CTX_free(ctx);
      if (store) X509_STORE_free(store);
      if (untrusted) sk_X509_free(untrusted);
      for (auto* c : certs) X509_free(c);
    }
  } cleanup{certs};
  if (certs.empty()) fail("cannot decode the server's certificate");

  cleanup.store = X509_STORE_new();
  if (!cleanup.store) fail(openssl_error());
  if (!ep.ca_file.empty()) {
    if (X509_STORE_load_file(cleanup.store, ep.ca_file.c_str()) != 1)
      throw Error(ErrorKind::tls, fmt::format("cannot load CA file {}: {}", ep.ca_file, openssl_error()),
                  Retry::never, {.file = ep.ca_file, .server = where});
  } else if (X509_STORE_set_default_paths(cleanup.store) != 1) {
    fail("cannot load the system's trust store: " + openssl_error());
  }
  cleanup.untrusted = sk_X509_new_null();
  for (size_t i = 1; i < certs.size(); ++i) sk_X509_push(cleanup.untrusted, certs[i]);
  cleanup.ctx = X509_STORE_CTX_new();
  if (!cleanup.ctx || X509_STORE_CTX_init(cleanup.ctx, cleanup.store, certs[0], cleanup.untrusted) != 1)
    fail(openssl_error());
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(cleanup.ctx);
  X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  int set = is_ip_literal(ep.host) ? X509_VERIFY_PARAM_set1_ip_asc(param, ep.host.c_str())
                                   : X509_VERIFY_PARAM_set1_host(param, ep.host.c_str(), ep.host.size());
  if (set != 1) fail("cannot check the host name " + ep.host);
  if (X509_verify_cert(cleanup.ctx) != 1) {
    int err = X509_STORE_CTX_get_error(cleanup.ctx);
    std::string why = X509_verify_cert_error_string(err);
    if (err == X509_V_ERR_HOSTNAME_MISMATCH || err == X509_V_ERR_IP_ADDRESS_MISMATCH)
      why = fmt::format("it is not valid for {} ({})", ep.host, why);
    ERR_clear_error();
    fail(why);
  }
}

void set_sni(mailstream_ssl_context* ctx, void* data) {
  auto* host = static_cast<std::string*>(data);
  if (!host->empty() && !is_ip_literal(*host)) mailstream_ssl_set_server_name(ctx, host->data());
}

// libetpan reports a failed GnuTLS handshake with gnutls_perror, which writes
// to stderr. This definition takes its place (the executable's symbol wins) and
// keeps the text for the error open_tls throws.
thread_local std::string tls_library_error;

}  // namespace
}  // namespace imapstage::net

extern "C" void gnutls_perror(int error) { imapstage::net::tls_library_error = gnutls_strerror(error); }

namespace imapstage::net {
namespace {

// Opens TLS on `fd` (which the caller still owns on failure).
mailstream_low* open_tls(int fd, const ConnectOptions& ep, const std::string& where) {
  std::string host = ep.host;
  auto started = Clock::now();
  mailstream_low* low =
      mailstream_low_tls_open_with_callback_timeout(fd, static_cast<time_t>(ep.timeout.count()), set_sni, &host);
  if (low) return low;
  auto elapsed = Clock::now() - started;
  if (elapsed + std::chrono::milliseconds(200) >= ep.timeout)
    throw Error(ErrorKind::network, fmt::format("TLS handshake with {} timed out", where), Retry::now,
                {.server = where});
  // A connection closed by the peer is a network failure, not a TLS one.
  char c;
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR) || recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0))
    throw Error(ErrorKind::network, fmt::format("{} closed the connection during the TLS handshake", where),
                Retry::now, {.server = where});
  std::string why = tls_library_error.empty() ? "" : " (GnuTLS: " + tls_library_error + ")";
  tls_library_error.clear();
  throw Error(ErrorKind::tls,
              fmt::format("TLS handshake with {} failed{}; if this port speaks plain {}, try --tls starttls or "
                          "--tls none, or the implicit-TLS port ({})", where, why, ep.protocol, ep.implicit_port),
              Retry::never, {.server = where});
}

// The first bytes of a TLS record a server sends (a handshake or an alert).
bool looks_like_tls(const unsigned char* p, size_t n) { return n >= 2 && (p[0] == 0x16 || p[0] == 0x15) && p[1] == 0x03; }

// A TLS 1.2 ClientHello (no extensions): any TLS server answers it with a
// handshake record or an alert.
constexpr unsigned char kClientHello[] = {
    0x16, 0x03, 0x01, 0x00, 0x39, 0x01, 0x00, 0x00, 0x35, 0x03, 0x03,
    // random
    0x69, 0x6d, 0x61, 0x70, 0x73, 0x74, 0x61, 0x67, 0x65, 0x20, 0x70, 0x72, 0x6f, 0x62, 0x65, 0x20,
    0x69, 0x6d, 0x61, 0x70, 0x73, 0x74, 0x61, 0x67, 0x65, 0x20, 0x70, 0x72, 0x6f, 0x62, 0x65, 0x20,
    0x00,                                                  // session id
    0x00, 0x0e, 0xc0, 0x2f, 0xc0, 0x30, 0xc0, 0x2b, 0xc0, 0x2c, 0x00, 0x9c, 0x00, 0x9d, 0x00, 0x2f,  // suites
    0x01, 0x00,                                            // compression: null
};

// True if a TLS server answers a ClientHello on a second connection to the
// endpoint within `wait_ms`.
bool port_speaks_tls(const ConnectOptions& endpoint, const std::string& where, int wait_ms) {
  ConnectOptions probe = endpoint;
  probe.timeout = std::chrono::seconds(std::max(1, wait_ms / 1000));
  int fd = -1;
  try {
    fd = tcp_connect(probe, where);
  } catch (const Error&) {
    return false;
  }
  bool tls = false;
  if (send(fd, kClientHello, sizeof kClientHello, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof kClientHello) &&
      wait_fd(fd, POLLIN, wait_ms) == 0) {
    unsigned char buf[2];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 1 && wait_fd(fd, POLLIN, 200) == 0 && recv(fd, buf + 1, 1, MSG_DONTWAIT) == 1) n = 2;
    tls = n == 2 && looks_like_tls(buf, 2);
  }
  ::close(fd);
  return tls;
}

// On a connection meant for STARTTLS: refuses, within seconds, a server that
// answers in TLS (or, silent for 1.5 s, answers a TLS ClientHello on a
// second connection), instead of waiting the whole timeout for a greeting.
void refuse_tls_answer(int fd, const ConnectOptions& endpoint, const std::string& where) {
  auto refuse = [&] {
    throw Error(ErrorKind::tls,
                fmt::format("{} speaks implicit TLS, not cleartext {}: use --tls implicit", where, endpoint.protocol), Retry::never,
                {.server = where});
  };
  int total_ms = static_cast<int>(std::min<int64_t>(endpoint.timeout.count() * 1000, 3000));
  int quiet_ms = std::min(total_ms, 1500);
  if (wait_fd(fd, POLLIN, quiet_ms) == 0) {
    unsigned char buf[2];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n == 1 && buf[0] != endpoint.greeting_start && wait_fd(fd, POLLIN, 200) == 0) n = recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 2 && looks_like_tls(buf, static_cast<size_t>(n))) refuse();
    return;
  }
  if (port_speaks_tls(endpoint, where, total_ms - quiet_ms > 0 ? total_ms - quiet_ms : 500)) refuse();
}


// Takes the place of a missing observer.
class NoObserver final : public WireObserver {
 public:
  bool feed(std::string_view) override { return true; }
  bool waited(std::chrono::steady_clock::duration) override { return true; }
  void sent() override {}
  bool broken() const override { return false; }
};

NoObserver no_observer;

int timeout_ms_of(std::chrono::seconds timeout) {
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(1, timeout.count()) * 1000,
                                            std::numeric_limits<int>::max()));
}

}  // namespace

std::string address(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

Transport::Transport(ConnectOptions options, WireObserver* observer)
    : options_(std::move(options)), where_(address(options_.host, options_.port)),
      observer_(observer ? observer : &no_observer) {}

Transport::~Transport() = default;

_mailstream* Transport::connect() {
  const ConnectOptions& endpoint = options_;
  const std::string& where = where_;
  time_t timeout = static_cast<time_t>(std::max<int64_t>(1, endpoint.timeout.count()));
  int fd = tcp_connect(endpoint, where);
  if (endpoint.tls == TlsMode::starttls) {
    try {
      refuse_tls_answer(fd, endpoint, where);
    } catch (...) {
      ::close(fd);
      throw;
    }
  }
  mailstream_low* low = nullptr;
  if (endpoint.tls == TlsMode::implicit) {
    try {
      low = open_tls(fd, endpoint, where);
    } catch (...) {
      ::close(fd);
      throw;
    }
    tls_ = std::make_unique<TlsReadBuffer>(low, observer_);
    mailstream_low_set_timeout(low, timeout);
  } else {
    auto* data = new PlainSocket{fd, timeout_ms_of(endpoint.timeout)};
    data->guard = observer_;
    low = mailstream_low_new(data, &plain_driver);
    if (!low) {
      delete data;
      ::close(fd);
      throw std::bad_alloc();
    }
    mailstream_low_set_timeout(low, timeout);
  }
  mailstream* stream = mailstream_new(low, 8192);
  if (!stream) {
    mailstream_low_close(low);
    mailstream_low_free(low);
    throw std::bad_alloc();
  }
  if (endpoint.tls == TlsMode::implicit && !endpoint.insecure) {
    try {
      verify_peer(low, endpoint, where);
    } catch (...) {
      mailstream_close(stream);
      throw;
    }
  }
  return stream;
}

void Transport::start_tls(_mailstream* stream) {
  const std::string& where = where_;
  if (stream->read_buffer_len != 0)
    throw Error(ErrorKind::tls, fmt::format("{} sent data before the TLS handshake", where), Retry::never,
                {.server = where});
  mailstream_low* plain = mailstream_get_low(stream);
  int plain_fd = mailstream_low_get_fd(plain);
  mailstream_low* tls = open_tls(plain_fd, options_, where);
  tls_ = std::make_unique<TlsReadBuffer>(tls, observer_);
  mailstream_low_set_timeout(tls, static_cast<time_t>(std::max<int64_t>(1, options_.timeout.count())));
  static_cast<PlainSocket*>(plain->data)->fd = -1;  // now owned by the TLS layer
  mailstream_low_free(plain);
  mailstream_set_low(stream, tls);
  if (!options_.insecure) verify_peer(tls, options_, where);
}

bool Transport::tls_pending() const { return tls_ && tls_->pending(); }

void Transport::shorten_timeout(_mailstream* stream, std::chrono::seconds timeout) {
  mailstream_low* low = stream ? mailstream_get_low(stream) : nullptr;
  if (!low) return;
  mailstream_low_set_timeout(low, static_cast<time_t>(std::max<int64_t>(1, timeout.count())));
  if (low->driver == &plain_driver) static_cast<PlainSocket*>(low->data)->timeout_ms = timeout_ms_of(timeout);
}

std::string gnutls_version() {
  const char* v = gnutls_check_version(nullptr);
  return v ? v : "unknown";
}

}  // namespace imapstage::net

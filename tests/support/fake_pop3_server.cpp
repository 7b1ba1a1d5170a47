#include "tests/support/fake_pop3_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include <openssl/evp.h>

#include <fmt/format.h>

namespace imapstage::testing {
namespace {

const char* kTimestamp = "<1896.697170952@fake.example>";

std::string decode64(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = val(c);
    if (v < 0) continue;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::string md5_hex(const std::string& s) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), digest, &n, EVP_md5(), nullptr);
  std::string out;
  for (unsigned i = 0; i < n; ++i) out += fmt::format("{:02x}", digest[i]);
  return out;
}

bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// The message as RETR sends it: lines starting with '.' get another, then ".\r\n".
std::string stuffed(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size() + 16);
  bool line_start = true;
  for (char c : bytes) {
    if (line_start && c == '.') out += '.';
    out += c;
    line_start = c == '\n';
  }
  if (!bytes.empty() && bytes.back() != '\n') out += "\r\n";
  return out + ".\r\n";
}

}  // namespace

FakePop3Server::FakePop3Server() {
  signal(SIGPIPE, SIG_IGN);
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd_, 16) != 0)
    throw std::runtime_error("fake POP3 server: cannot listen");
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] {
    for (;;) {
      pollfd p{listen_fd_, POLLIN, 0};
      int r = poll(&p, 1, 100);
      {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
      }
      if (r <= 0) continue;
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::lock_guard lock(mutex_);
      ++connections_;
      fds_.push_back(fd);
      threads_.emplace_back([this, fd] { serve(fd); });
    }
  });
}

FakePop3Server::~FakePop3Server() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  acceptor_.join();
  for (auto& t : threads_) t.join();
  for (int fd : fds_) ::close(fd);
  ::close(listen_fd_);
}

pop3::Endpoint FakePop3Server::endpoint(int timeout_seconds) const {
  pop3::Endpoint e;
  e.host = "127.0.0.1";
  e.port = port_;
  e.tls = net::TlsMode::none;
  e.timeout = std::chrono::seconds(timeout_seconds);
  return e;
}

void FakePop3Server::set_messages(std::vector<FakePop3Message> m) {
  std::lock_guard lock(mutex_);
  messages_ = std::move(m);
}
std::vector<FakePop3Message> FakePop3Server::messages() const {
  std::lock_guard lock(mutex_);
  return messages_;
}
void FakePop3Server::set_login(std::string user, std::string password) {
  std::lock_guard lock(mutex_);
  user_ = std::move(user);
  password_ = std::move(password);
}
void FakePop3Server::set_uidl(bool offered) {
  std::lock_guard lock(mutex_);
  uidl_ = offered;
}
void FakePop3Server::set_capa(std::optional<std::string> lines) {
  std::lock_guard lock(mutex_);
  capa_ = std::move(lines);
}
void FakePop3Server::drop_during_retr(uint32_t number, size_t bytes) {
  std::lock_guard lock(mutex_);
  drop_ = {number, bytes};
}
void FakePop3Server::answer(std::string verb, std::string raw) {
  std::lock_guard lock(mutex_);
  answers_.emplace_back(std::move(verb), std::move(raw));
}

std::vector<std::string> FakePop3Server::commands() const {
  std::lock_guard lock(mutex_);
  return commands_;
}
std::vector<std::chrono::steady_clock::time_point> FakePop3Server::command_times() const {
  std::lock_guard lock(mutex_);
  return command_times_;
}
size_t FakePop3Server::connections() const {
  std::lock_guard lock(mutex_);
  return connections_;
}

void FakePop3Server::serve(int fd) {
  std::vector<FakePop3Message> drop;  // the maildrop as this session sees it
  std::vector<bool> deleted;
  bool authorized = false;
  std::string user;
  {
    std::lock_guard lock(mutex_);
    drop = messages_;
  }
  deleted.assign(drop.size(), false);
  if (!send_all(fd, fmt::format("+OK fake POP3 ready {}\r\n", kTimestamp))) return;
  std::string in;
  char buf[4096];
  for (;;) {
    size_t nl = in.find('\n');
    if (nl == std::string::npos) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, static_cast<size_t>(n));
      continue;
    }
    std::string line = in.substr(0, nl);
    in.erase(0, nl + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string verb = line.substr(0, line.find(' '));
    for (auto& c : verb) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::string arg = line.size() > verb.size() ? line.substr(verb.size() + 1) : "";
    std::string logged = (verb == "PASS" || verb == "AUTH") ? verb + " ***" : line;
    std::string expected_user, expected_password;
    std::optional<std::string> capa;
    bool uidl;
    std::optional<std::string> canned;
    {
      std::lock_guard lock(mutex_);
      commands_.push_back(logged);
      command_times_.push_back(std::chrono::steady_clock::now());
      expected_user = user_;
      expected_password = password_;
      capa = capa_;
      uidl = uidl_;
      for (auto& [v, raw] : answers_)
        if (v == verb) canned = raw;
    }
    if (canned) {
      if (!send_all(fd, *canned)) return;
      continue;
    }
    auto number = [&](uint32_t& n) {
      n = static_cast<uint32_t>(std::strtoul(arg.c_str(), nullptr, 10));
      return n >= 1 && n <= drop.size() && !deleted[n - 1];
    };
    std::string out;
    if (verb == "QUIT") {
      if (authorized) {
        std::lock_guard lock(mutex_);
        for (size_t i = 0; i < drop.size(); ++i) {
          if (!deleted[i]) continue;
          for (auto it = messages_.begin(); it != messages_.end(); ++it)
            if (it->uidl == drop[i].uidl && it->bytes == drop[i].bytes) {
              messages_.erase(it);
              break;
            }
        }
      }
      send_all(fd, "+OK bye\r\n");
      return;
    } else if (verb == "CAPA") {
      out = capa ? "+OK\r\n" + *capa + ".\r\n" : "-ERR unknown command\r\n";
    } else if (verb == "NOOP") {
      out = "+OK\r\n";
    } else if (!authorized) {
      if (verb == "USER") {
        user = arg;
        out = "+OK\r\n";
      } else if (verb == "PASS") {
        authorized = user == expected_user && arg == expected_password;
        out = authorized ? "+OK logged in\r\n" : "-ERR [AUTH] invalid password\r\n";
      } else if (verb == "APOP") {
        std::string name = arg.substr(0, arg.find(' '));
        std::string digest = arg.substr(arg.find(' ') + 1);
        authorized = name == expected_user && digest == md5_hex(std::string(kTimestamp) + expected_password);
        out = authorized ? "+OK logged in\r\n" : "-ERR [AUTH] APOP refused\r\n";
      } else if (verb == "AUTH") {
        std::string mech = arg.substr(0, arg.find(' '));
        std::string initial;
        if (arg.find(' ') != std::string::npos) {
          initial = decode64(arg.substr(arg.find(' ') + 1));
        } else {
          // No initial response: ask for it.
          if (!send_all(fd, "+ \r\n")) return;
          size_t nl2;
          while ((nl2 = in.find('\n')) == std::string::npos) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) return;
            in.append(buf, static_cast<size_t>(n));
          }
          initial = decode64(in.substr(0, nl2));
          in.erase(0, nl2 + 1);
        }
        if (mech == "PLAIN") {
          // authzid \0 authcid \0 password
          size_t a = initial.find('\0'), b = initial.find('\0', a + 1);
          authorized = a != std::string::npos && b != std::string::npos &&
                       initial.substr(a + 1, b - a - 1) == expected_user && initial.substr(b + 1) == expected_password;
        } else if (mech == "XOAUTH2") {
          authorized = initial == "user=" + expected_user + "\x01" + "auth=Bearer " + expected_password + "\x01\x01";
          if (!authorized) {
            send_all(fd, "+ eyJzdGF0dXMiOiI0MDEifQ==\r\n");  // {"status":"401"}, then -ERR after the empty line
            size_t nl2;
            while ((nl2 = in.find('\n')) == std::string::npos) {
              ssize_t n = recv(fd, buf, sizeof buf, 0);
              if (n <= 0) return;
              in.append(buf, static_cast<size_t>(n));
            }
            in.erase(0, nl2 + 1);
          }
        }
        out = authorized ? "+OK logged in\r\n" : "-ERR [AUTH] authentication failed\r\n";
      } else {
        out = "-ERR log in first\r\n";
      }
    } else if (verb == "STAT") {
      size_t n = 0, bytes = 0;
      for (size_t i = 0; i < drop.size(); ++i)
        if (!deleted[i]) ++n, bytes += drop[i].bytes.size();
      out = fmt::format("+OK {} {}\r\n", n, bytes);
    } else if (verb == "LIST" && arg.empty()) {
      out = "+OK\r\n";
      for (size_t i = 0; i < drop.size(); ++i)
        if (!deleted[i]) out += fmt::format("{} {}\r\n", i + 1, drop[i].bytes.size());
      out += ".\r\n";
    } else if (verb == "UIDL" && arg.empty()) {
      if (!uidl) {
        out = "-ERR unknown command\r\n";
      } else {
        out = "+OK\r\n";
        for (size_t i = 0; i < drop.size(); ++i)
          if (!deleted[i]) out += fmt::format("{} {}\r\n", i + 1, drop[i].uidl);
        out += ".\r\n";
      }
    } else if (verb == "RETR") {
      uint32_t n;
      if (!number(n)) {
        out = "-ERR no such message\r\n";
      } else {
        out = fmt::format("+OK {} octets\r\n", drop[n - 1].bytes.size()) + stuffed(drop[n - 1].bytes);
        std::optional<size_t> cut;
        {
          std::lock_guard lock(mutex_);
          if (drop_ && drop_->first == n) {
            cut = drop_->second;
            drop_.reset();
          }
        }
        if (cut) {
          send_all(fd, std::string_view(out).substr(0, std::min(out.size(), *cut)));
          return;
        }
      }
    } else if (verb == "DELE") {
      uint32_t n;
      if (!number(n)) {
        out = "-ERR no such message\r\n";
      } else {
        deleted[n - 1] = true;
        out = "+OK marked\r\n";
      }
    } else if (verb == "RSET") {
      deleted.assign(drop.size(), false);
      out = "+OK\r\n";
    } else {
      out = "-ERR unknown command\r\n";
    }
    if (!send_all(fd, out)) return;
  }
}

}  // namespace imapstage::testing

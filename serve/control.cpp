#include "serve/control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/aead.h"
#include "common/error.h"

namespace imapstage::serve {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxLine = 64 * 1024;

sockaddr_un address_of(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string p = path.string();
  if (p.size() >= sizeof addr.sun_path)
    throw Error(ErrorKind::usage, "the control socket path is too long (at most 107 bytes)", Retry::never,
                {.file = p});
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  return addr;
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Reads up to the first '\n' (not included) before `deadline`; false on EOF, timeout or error.
bool read_line(int fd, std::string& out, Clock::time_point deadline) {
  char buf[4096];
  for (;;) {
    if (auto nl = out.find('\n'); nl != std::string::npos) {
      std::string rest = out.substr(nl + 1);
      out.resize(nl);
      wipe(rest);
      return true;
    }
    if (out.size() > kMaxLine) return false;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return !out.empty() && n == 0;
    out.append(buf, static_cast<size_t>(n));
  }
}

bool write_all(int fd, const std::string& data, Clock::time_point deadline) {
  size_t done = 0;
  while (done < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

ControlListener::ControlListener(std::filesystem::path path) : path_(std::move(path)) {
  sockaddr_un addr = address_of(path_);
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw Error(ErrorKind::usage, "the control socket path holds something else", Retry::never,
                  {.file = path_.string()});
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool answered = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (probe >= 0) ::close(probe);
    if (answered)
      throw Error(ErrorKind::locked, "another daemon answers on the control socket", Retry::never,
                  {.file = path_.string()});
    ::unlink(path_.c_str());
  }
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) throw_io("cannot make the control socket", path_.string(), errno);
  // Everyone may connect: what a peer may do is decided from SO_PEERCRED.
  mode_t old = ::umask(0);
  int r = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (r != 0 || ::listen(fd_, 64) != 0) {
    int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw_io("cannot listen on the control socket", path_.string(), err);
  }
}

ControlListener::~ControlListener() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
}

bool ControlListener::serve_one(std::chrono::milliseconds timeout, const ControlHandler& handler) {
  pollfd p{fd_, POLLIN, 0};
  int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (r <= 0) return false;
  int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0) return false;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    ::close(c);
    return true;
  }
  Peer peer{cred.uid, cred.gid, cred.pid};
  auto deadline = Clock::now() + std::chrono::seconds(2);
  std::string line;
  nlohmann::json reply;
  if (read_line(c, line, deadline)) {
    nlohmann::json request;
    try {
      request = nlohmann::json::parse(line);
    } catch (const std::exception&) {
      reply = {{"ok", false}, {"error", "the request is not JSON"}, {"kind", "usage"}};
    }
    wipe(line);
    if (reply.is_null()) {
      try {
        reply = handler(request, peer);
      } catch (const Error& e) {
        reply = {{"ok", false}, {"error", e.what()}, {"kind", to_string(e.kind())}};
      } catch (const std::exception& e) {
        reply = {{"ok", false}, {"error", std::string("internal error: ") + e.what()}, {"kind", "internal"}};
      }
      // The request may hold a password: overwrite its strings before they are freed.
      if (request.is_object())
        for (auto& [k, v] : request.items())
          if (v.is_string()) wipe(v.get_ref<std::string&>());
    }
    write_all(c, reply.dump() + "\n", deadline);
  }
  wipe(line);
  ::close(c);
  return true;
}

nlohmann::json control_call(const std::filesystem::path& path, const nlohmann::json& request,
                            std::chrono::milliseconds timeout) {
  sockaddr_un addr = address_of(path);
  auto deadline = Clock::now() + timeout;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_io("cannot make a socket", path.string(), errno);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(ErrorKind::network, fmt::format("no daemon answers on {}: {}", path.string(), std::strerror(err)),
                Retry::later, {.file = path.string()});
  }
  std::string text = request.dump() + "\n";
  bool sent = write_all(fd, text, deadline);
  wipe(text);
  std::string line;
  bool got = sent && read_line(fd, line, deadline);
  ::close(fd);
  if (!got)
    throw Error(ErrorKind::network, "the daemon did not answer in time", Retry::later, {.file = path.string()});
  try {
    return nlohmann::json::parse(line);
  } catch (const std::exception&) {
    throw Error(ErrorKind::protocol, "the daemon's answer is not JSON", Retry::never, {.file = path.string()});
  }
}

}  // namespace imapstage::serve

#include "tests/support/fault_proxy.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/core.h>

extern char** environ;

namespace imapstage::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string make_dir() {
  const char* t = std::getenv("TMPDIR");
  std::string templ = std::string((t && *t) ? t : "/tmp") + "/imapstage-fp.XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error(fmt::format("mkdtemp {}: {}", templ, std::strerror(errno)));
  return buf.data();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string number(double v) { return fmt::format("{}", v); }

std::vector<std::string> arguments(const FaultProxyOptions& o, const std::string& log_file) {
  if (o.target_port == 0) throw std::runtime_error("FaultProxy: no target port");
  std::vector<std::string> a{"--listen", "127.0.0.1:0", "--target", fmt::format("{}:{}", o.target_host, o.target_port),
                             "--log", log_file, "--exit-with-parent", "--max-seconds", number(o.max_seconds)};
  auto add = [&](const char* flag, const std::string& value) {
    a.push_back(flag);
    a.push_back(value);
  };
  if (!o.on.empty()) add("--on", o.on);
  if (o.delay_ms) add("--delay", number(*o.delay_ms));
  if (o.rate) add("--rate", number(*o.rate));
  if (o.cut_after) add("--cut-after", std::to_string(*o.cut_after));
  if (o.cut_random) add("--cut-random", fmt::format("{}:{}", o.cut_random->first, o.cut_random->second));
  if (!o.cut_direction.empty()) add("--cut-direction", o.cut_direction);
  if (o.cuts) add("--cuts", std::to_string(*o.cuts));
  if (o.stall_after) add("--stall-after", std::to_string(*o.stall_after));
  if (o.stall_seconds) add("--stall-seconds", number(*o.stall_seconds));
  if (!o.stall_direction.empty()) add("--stall-direction", o.stall_direction);
  if (o.stalls) add("--stalls", std::to_string(*o.stalls));
  if (o.reset) a.push_back("--reset");
  if (!o.rules.empty()) add("--rules", o.rules);
  if (o.seed) add("--seed", *o.seed);
  a.insert(a.end(), o.extra_args.begin(), o.extra_args.end());
  return a;
}

}  // namespace

std::string FaultProxy::script() {
  const char* src = std::getenv("IMAPSTAGE_SOURCE_DIR");
  std::string root = (src && *src) ? src : IMAPSTAGE_SOURCE_DIR;
  return root + "/tools/fault-proxy";
}

std::vector<std::string> FaultProxy::script_command() {
  const char* py = std::getenv("IMAPSTAGE_PYTHON");
  if (py && *py) return {py, script()};
  if (access("/usr/bin/python3", X_OK) == 0) return {"/usr/bin/python3", script()};
  return {script()};
}

FaultProxy::FaultProxy(FaultProxyOptions options) {
  dir_ = make_dir();
  log_file_ = dir_ + "/events.jsonl";
  err_file_ = dir_ + "/stderr";
  try {
    std::vector<std::string> argv = script_command();
    auto args = arguments(options, log_file_);
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& s : argv) cargv.push_back(s.data());
    cargv.push_back(nullptr);

    int out_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
    int err_fd = open(err_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (err_fd < 0 || null_fd < 0) {
      int e = errno;
      for (int fd : {out_pipe[0], out_pipe[1], err_fd, null_fd})
        if (fd >= 0) close(fd);
      throw std::runtime_error(fmt::format("FaultProxy: open: {}", std::strerror(e)));
    }
    pid_ = fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec.
      dup2(null_fd, STDIN_FILENO);
      dup2(out_pipe[1], STDOUT_FILENO);
      dup2(err_fd, STDERR_FILENO);
#ifdef SYS_close_range
      syscall(SYS_close_range, 3u, ~0u, 0u);
#endif
      execve(cargv[0], cargv.data(), environ);
      _exit(127);
    }
    int fork_errno = errno;
    close(out_pipe[1]);
    close(err_fd);
    close(null_fd);
    out_fd_ = out_pipe[0];
    if (pid_ < 0) {
      close(out_fd_);
      out_fd_ = -1;
      throw std::runtime_error(fmt::format("fork: {}", std::strerror(fork_errno)));
    }

    // The first line on stdout says where it listens.
    std::string line;
    auto deadline = Clock::now() + std::chrono::seconds(30);
    while (line.find('\n') == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) throw std::runtime_error("FaultProxy: no ready line within 30 s: " + stderr_text());
      struct pollfd p = {out_fd_, POLLIN, 0};
      int n = poll(&p, 1, static_cast<int>(left));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) continue;
      char buf[4096];
      ssize_t r = read(out_fd_, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        int status = stop();
        throw std::runtime_error(fmt::format("FaultProxy: exited before listening (status {}): {}", status,
                                             stderr_text()));
      }
      line.append(buf, static_cast<size_t>(r));
    }
    try {
      auto info = nlohmann::json::parse(line.substr(0, line.find('\n')));
      host_ = info.at("host").get<std::string>();
      port_ = info.at("port").get<uint16_t>();
      seed_ = info.at("seed").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(fmt::format("FaultProxy: bad ready line ({}): {}", e.what(), line));
    }
  } catch (...) {
    stop();
    std::error_code ec;
    fs::remove_all(dir_, ec);
    throw;
  }
}

FaultProxy::~FaultProxy() {
  stop();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

bool FaultProxy::running() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = status;
    return false;
  }
  return r == 0;
}

int FaultProxy::stop() {
  if (pid_ > 0 && !reaped_) {
    if (running()) {
      kill(pid_, SIGTERM);
      auto deadline = Clock::now() + std::chrono::seconds(5);
      while (running() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (!reaped_) {
        kill(pid_, SIGKILL);
        int status = 0;
        while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        reaped_ = true;
        status_ = status;
      }
    }
  }
  if (out_fd_ >= 0) {
    close(out_fd_);
    out_fd_ = -1;
  }
  return status_;
}

std::vector<nlohmann::json> FaultProxy::events() const {
  std::string text = read_file(log_file_);
  std::vector<nlohmann::json> out;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    auto j = nlohmann::json::parse(text.begin() + static_cast<std::ptrdiff_t>(start),
                                   text.begin() + static_cast<std::ptrdiff_t>(nl), nullptr, false);
    if (!j.is_discarded()) out.push_back(std::move(j));
  }
  return out;
}

size_t FaultProxy::count(const std::string& name) const {
  size_t n = 0;
  for (auto& e : events())
    if (e.value("event", "") == name) ++n;
  return n;
}

bool FaultProxy::wait_for(const std::string& name, size_t n, std::chrono::milliseconds timeout) const {
  auto deadline = Clock::now() + timeout;
  while (true) {
    if (count(name) >= n) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string FaultProxy::stderr_text() const { return read_file(err_file_); }

}  // namespace imapstage::testing

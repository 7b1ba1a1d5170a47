#include "common/token_command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"

extern char** environ;

namespace imapstage {

namespace {

constexpr size_t kMaxToken = 64 * 1024;

Error failed(const std::string& why) {
  return Error(ErrorKind::auth, "token command failed: " + why, Retry::never);
}

std::string trim(std::string s) {
  const char* space = " \t\r\n\f\v";
  size_t b = s.find_first_not_of(space);
  if (b == std::string::npos) return {};
  size_t e = s.find_last_not_of(space);
  return s.substr(b, e - b + 1);
}

void wipe(std::string& s) {
  volatile char* p = s.data();
  for (size_t i = 0; i < s.size(); ++i) p[i] = 0;
  s.clear();
}

}  // namespace

std::string run_token_command(const std::string& command, const std::string& user, std::chrono::seconds timeout) {
  if (command.empty()) throw Error(ErrorKind::usage, "the OAuth2 token command is empty");
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw failed(fmt::format("cannot make a pipe: {}", std::strerror(errno)));

  std::vector<std::string> env_text;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "IMAPSTAGE_USER=", 15) != 0) env_text.emplace_back(*e);
  env_text.push_back("IMAPSTAGE_USER=" + user);
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string sh = "/bin/sh", dash_c = "-c", cmd = command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setpgroup(&attr, 0);  // its own group: a timeout kills what it started too
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw failed(fmt::format("cannot start /bin/sh: {}", std::strerror(rc)));
  }

  std::string out;
  bool timed_out = false, too_long = false;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[4096];
    ssize_t got = ::read(fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    out.append(buf, static_cast<size_t>(got));
    if (out.size() > kMaxToken) {
      too_long = true;
      break;
    }
  }
  ::close(fds[0]);
  if (timed_out || too_long) ::kill(-pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::string token = trim(std::move(out));
  wipe(out);
  if (timed_out) {
    wipe(token);
    throw failed(fmt::format("timed out after {} s", timeout.count()));
  }
  if (too_long) {
    wipe(token);
    throw failed(fmt::format("printed more than {} bytes", kMaxToken));
  }
  if (WIFSIGNALED(status)) {
    wipe(token);
    throw failed(fmt::format("killed by signal {}", WTERMSIG(status)));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    wipe(token);
    throw failed(fmt::format("exit {}", WEXITSTATUS(status)));
  }
  if (token.empty()) throw failed("exit 0 but it printed no token");
  if (token.find_first_of("\r\n\x01") != std::string::npos) {
    wipe(token);
    throw failed("it printed more than one line");
  }
  return token;
}

CommandTokenSource::CommandTokenSource(std::string command, std::string user, std::chrono::seconds timeout)
    : command_(std::move(command)), user_(std::move(user)), timeout_(timeout) {}

std::string CommandTokenSource::fetch_locked() {
  ++fetches_;
  std::string fresh = run_token_command(command_, user_, timeout_);
  wipe(token_);
  token_ = std::move(fresh);
  return token_;
}

std::string CommandTokenSource::token() {
  std::lock_guard lock(mutex_);
  if (!token_.empty()) return token_;
  return fetch_locked();
}

std::string CommandTokenSource::renew(const std::string& rejected) {
  std::lock_guard lock(mutex_);
  if (!token_.empty() && token_ != rejected) return token_;
  return fetch_locked();
}

int CommandTokenSource::fetches() const {
  std::lock_guard lock(mutex_);
  return fetches_;
}

void login_with_renewal(TokenSource& tokens, const std::function<void(const std::string&)>& login_once,
                        const std::function<bool()>& connection_alive) {
  std::string token = tokens.token();
  try {
    login_once(token);
    return;
  } catch (const Error& e) {
    // Only a refusal (an expired or revoked token) is worth a new token.
    if (e.kind() != ErrorKind::auth || e.retry() != Retry::never || !connection_alive()) throw;
  }
  token = tokens.renew(token);
  try {
    login_once(token);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::auth || e.retry() != Retry::never) throw;
    throw Error(ErrorKind::auth, e.message() + " (XOAUTH2: the token command's new token was refused too)",
                Retry::never, e.where());
  }
}

std::shared_ptr<TokenSource> make_token_source(const std::string& command, const std::string& user) {
  return std::make_shared<CommandTokenSource>(command, user);
}

}  // namespace imapstage

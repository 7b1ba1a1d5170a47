// imapstage login-hook: Dovecot's checkpassword program for migrating users as
// they log in. imapstage login-trigger: a post-login script that queues the
// user for a job with the source profile's admin credential (no password
// passes through it). serve/README.md shows the Dovecot configuration.
//
// What Dovecot 2.3 does with a checkpassword program (measured): it runs it
// as the auth service's user with no PATH and cwd = base_dir, waits for it
// with no timeout, passes "user\0password\0timestamp\0" on fd 3, appends the
// path of checkpassword-reply to the configured command line; exit 1 means a
// wrong password (AUTHENTICATIONFAILED), 111 a temporary failure
// (UNAVAILABLE), success is USER set and checkpassword-reply exec'd (it
// writes to fd 4). The hook inherits about twenty descriptors: a child that
// kept one open would stall the login, so the hook starts no process; the
// job goes to the daemon over its socket, or to a spool file when it is down.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/display.h"
#include "common/aead.h"
#include "imap/session.h"
#include "serve/config.h"
#include "serve/control.h"
#include "serve/password_check.h"

namespace imapstage::cli {

namespace {

constexpr int kWrongPassword = 1;
constexpr int kTemporary = 111;

void on_alarm(int) {
  static const char text[] = "imapstage login-hook: timed out\n";
  (void)!::write(STDERR_FILENO, text, sizeof text - 1);
  ::_exit(kTemporary);
}

// Text for Dovecot's log (the hook's stderr): never a password.
template <class... Args>
void log_line(fmt::format_string<Args...> format, Args&&... args) {
  std::string text = "imapstage login-hook: " + fmt::format(format, std::forward<Args>(args)...) + "\n";
  text = printable(text.substr(0, text.size() - 1)) + "\n";
  (void)!::write(STDERR_FILENO, text.data(), text.size());
}

std::string env_or(const char* a, const char* b) {
  if (const char* v = std::getenv(a); v && *v) return v;
  if (const char* v = std::getenv(b); v && *v) return v;
  return "";
}

std::string hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// Leaves the user's name (never the password) in the spool for the daemon's
// next start: O_EXCL, 0600, one file per user. True when it is there.
bool spool(const serve::ServeConfig& config, const std::string& user) {
  auto path = config.spool_dir() / ("u-" + hex(user));
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return errno == EEXIST;
  ::close(fd);
  return true;
}

[[noreturn]] void exec_next(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execv(args[0], args.data());
  log_line("cannot run {}: {}", argv[0], std::strerror(errno));
  ::_exit(kTemporary);
}

int run_hook(const std::string& config_path, const std::vector<std::string>& reply) {
  struct sigaction sa {};
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGALRM, &sa, nullptr);
  ::alarm(60);  // until the configured timeout is known

  // fd 3: user\0password\0timestamp\0 (at most 512 bytes, as the protocol says).
  std::string input;
  char buf[513];
  for (;;) {
    ssize_t n = ::read(3, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      log_line("cannot read fd 3: {} (run by Dovecot's checkpassword passdb?)", std::strerror(errno));
      return kTemporary;
    }
    if (n == 0) break;
    input.append(buf, static_cast<size_t>(n));
    if (input.size() > 512) break;
  }
  ::close(3);
  size_t a = input.find('\0');
  size_t b = a == std::string::npos ? a : input.find('\0', a + 1);
  if (b == std::string::npos || input.size() > 512 || a == 0) {
    wipe(input);
    log_line("malformed input on fd 3");
    return kTemporary;
  }
  std::string user = input.substr(0, a);
  SecretString password(input.substr(a + 1, b - a - 1));
  wipe(input);
  if (password.empty()) return kWrongPassword;

  serve::ServeConfig config;
  try {
    config = serve::load_serve_config(config_path);
  } catch (const Error& e) {
    log_line("{}", e.what());
    return kTemporary;
  }
  ::alarm(static_cast<unsigned>(config.hook_timeout.count()));
  if (config.cutover > 0 && std::time(nullptr) >= config.cutover) return kWrongPassword;

  // The password against the old server, on behalf of the client's address.
  {
    std::string ip = env_or("AUTH_RIP", "TCPREMOTEIP"), port = env_or("AUTH_RPORT", "TCPREMOTEPORT");
    std::vector<std::pair<std::string, std::string>> id;
    if (!ip.empty()) id.push_back({"x-originating-ip", ip});
    if (!port.empty()) id.push_back({"x-originating-port", port});
    std::string why;
    switch (serve::check_source_password(config, user, password.get(), id, why)) {
      case serve::PasswordCheck::accepted: break;
      case serve::PasswordCheck::refused:
        log_line("{}: the old server refused the password", user);
        return kWrongPassword;
      case serve::PasswordCheck::unavailable:
        log_line("{}: cannot check the password with the old server: {}", user, why);
        return kTemporary;
    }
  }

  // Queue the migration (once per user): the daemon, or the spool when it is down.
  try {
    auto answer = serve::control_call(config.socket, {{"op", "login"}, {"user", user}, {"password", password.get()}},
                                      std::chrono::seconds(5));
    if (!answer.value("ok", false)) log_line("{}: the daemon refused the job: {}", user, answer.value("error", ""));
  } catch (const Error& e) {
    if (!spool(config, user)) {
      log_line("{}: the daemon is not reachable ({}) and the spool is not writable", user, e.message());
      return kTemporary;
    }
    log_line("{}: the daemon is not reachable ({}); spooled", user, e.message());
  }
  password = SecretString();
  if (reply.empty()) {
    log_line("no checkpassword-reply program given");
    return kTemporary;
  }
  ::setenv("USER", user.c_str(), 1);
  exec_next(reply);
}

int run_trigger(const std::string& config_path, const std::vector<std::string>& next) {
  std::string user = env_or("USER", "");
  if (!user.empty()) {
    try {
      auto config = serve::load_serve_config(config_path);
      try {
        serve::control_call(config.socket, {{"op", "trigger"}, {"user", user}}, std::chrono::seconds(2));
      } catch (const Error&) {
        spool(config, user);
      }
    } catch (const Error& e) {
      log_line("{}: {}", user, e.what());
    }
  }
  if (next.empty()) return kExitOk;
  exec_next(next);
}

struct HookArgs {
  std::string config = "/etc/imapstage/serve.toml";
  std::vector<std::string> next;
};

}  // namespace

void add_login_hook_command(CLI::App& app, int& status) {
  auto args = std::make_shared<HookArgs>();
  auto* cmd = app.add_subcommand("login-hook",
                                 "Dovecot checkpassword program: checks the password with the old server and "
                                 "queues the user's migration (exit 1 wrong password, 111 temporary failure)");
  cmd->add_option("--config", args->config, "Configuration file (default /etc/imapstage/serve.toml)");
  cmd->add_option("reply", args->next, "checkpassword-reply and its arguments (Dovecot appends it)");
  cmd->callback([args, &status] { status = run_hook(args->config, args->next); });

  auto trigger_args = std::make_shared<HookArgs>();
  auto* trigger = app.add_subcommand(
      "login-trigger",
      "Dovecot post-login script: queues the logged-in USER for a job with the source profile's admin credential, "
      "then runs the rest of its command line");
  trigger->add_option("--config", trigger_args->config, "Configuration file (default /etc/imapstage/serve.toml)");
  trigger->add_option("next", trigger_args->next, "The program to run next and its arguments");
  trigger->callback([trigger_args, &status] { status = run_trigger(trigger_args->config, trigger_args->next); });
}

}  // namespace imapstage::cli

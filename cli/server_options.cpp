#include "cli/server_options.h"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "common/error.h"

namespace imapstage::cli {

void add_server_options(CLI::App* cmd, ServerOptions& o, bool required) {
  auto* host = cmd->add_option("--host", o.host, "IMAP server host name or address")->group("Server");
  auto* user = cmd->add_option("--user", o.user, "Login name (the mailbox to open)")->group("Server");
  if (required) {
    host->required();
    user->required();
  }
  cmd->add_option("--port", o.port, "Port (default 993 for implicit TLS, 143 otherwise)")->group("Server");
  cmd->add_option("--tls", o.tls, "implicit (default), starttls, or none")
      ->check(CLI::IsMember({"implicit", "starttls", "none"}))
      ->group("Server");
  cmd->add_option("--ca-file", o.ca_file, "PEM file of CA certificates to trust instead of the system's")
      ->check(CLI::ExistingFile)
      ->group("Server");
  cmd->add_flag("--insecure", o.insecure, "Do not verify the server's certificate or host name")->group("Server");
  cmd->add_option("--timeout", o.timeout_seconds, "Seconds to wait for the server before giving up on a read")
      ->check(CLI::PositiveNumber)
      ->group("Server");
  cmd->add_option("--auth", o.auth, "login (default), plain, cram-md5, or xoauth2")
      ->check(CLI::IsMember({"login", "plain", "cram-md5", "xoauth2"}))
      ->group("Server");
  cmd->add_option("--auth-user", o.auth_user,
                  "Authenticate as this admin user and act as --user (SASL PLAIN authorization id)")
      ->group("Server");
  auto* file = cmd->add_option("--password-file", o.password_file, "Read the password (or token) from this file")
                   ->check(CLI::ExistingFile)
                   ->group("Server");
  cmd->add_option("--password-env", o.password_env, "Read the password (or token) from this environment variable")
      ->excludes(file)
      ->group("Server");
}

imap::Endpoint make_endpoint(const ServerOptions& o) {
  imap::Endpoint e;
  e.host = o.host;
  e.port = o.port;
  if (o.tls == "implicit") e.tls = imap::TlsMode::implicit;
  else if (o.tls == "starttls") e.tls = imap::TlsMode::starttls;
  else if (o.tls == "none") e.tls = imap::TlsMode::none;
  else throw Error(ErrorKind::usage, "--tls must be implicit, starttls or none, not " + o.tls);
  e.ca_file = o.ca_file;
  e.insecure = o.insecure;
  e.timeout = std::chrono::seconds(o.timeout_seconds);
  return e;
}

imap::Credentials make_credentials(const ServerOptions& o) {
  imap::Credentials c;
  c.user = o.user;
  c.auth_user = o.auth_user;
  if (o.auth == "login") c.mechanism = imap::AuthMechanism::login;
  else if (o.auth == "plain") c.mechanism = imap::AuthMechanism::plain;
  else if (o.auth == "cram-md5") c.mechanism = imap::AuthMechanism::cram_md5;
  else if (o.auth == "xoauth2") c.mechanism = imap::AuthMechanism::xoauth2;
  else throw Error(ErrorKind::usage, "unknown --auth " + o.auth);
  if (!c.auth_user.empty() && c.mechanism == imap::AuthMechanism::login) c.mechanism = imap::AuthMechanism::plain;
  std::string who = c.auth_user.empty() ? c.user : c.auth_user;
  c.secret = read_secret(o.password_file, o.password_env, "Password for " + who + " at " + o.host + ": ");
  return c;
}

static std::string prompt_no_echo(const std::string& prompt) {
  int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0) return {};
  struct termios old {};
  bool have_termios = tcgetattr(fd, &old) == 0;
  if (have_termios) {
    struct termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(fd, TCSAFLUSH, &quiet);
  }
  (void)!::write(fd, prompt.data(), prompt.size());
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  (void)!::write(fd, "\n", 1);
  if (have_termios) tcsetattr(fd, TCSAFLUSH, &old);
  ::close(fd);
  return line;
}

std::string read_secret(const std::string& file, const std::string& env, const std::string& prompt) {
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) throw_io("cannot read the password file", file, errno);
    std::string line;
    std::getline(in, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) throw Error(ErrorKind::usage, "the password file is empty", Retry::never, {.file = file});
    return line;
  }
  if (!env.empty()) {
    const char* value = std::getenv(env.c_str());
    if (!value || !*value) throw Error(ErrorKind::usage, "environment variable " + env + " is not set or empty");
    return value;
  }
  if (isatty(STDIN_FILENO)) {
    std::string secret = prompt_no_echo(prompt);
    if (!secret.empty()) return secret;
  }
  throw Error(ErrorKind::usage, "no password given: use --password-file FILE or --password-env VAR");
}

}  // namespace imapstage::cli

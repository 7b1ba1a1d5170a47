#include "cli/passphrase.h"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

#include "archive-format/archive.h"
#include "common/aead.h"
#include "common/error.h"

namespace imapstage::cli {

namespace {

PassphraseFrom& options() {
  static PassphraseFrom from;
  return from;
}

void strip_line_end(std::string& s) {
  if (!s.empty() && s.back() == '\n') s.pop_back();
  if (!s.empty() && s.back() == '\r') s.pop_back();
}

// One line from the terminal without echo.
std::string ask(int tty, const std::string& prompt) {
  std::string text = prompt + ": ";
  if (::write(tty, text.data(), text.size()) < 0) throw_io("cannot write to the terminal", "/dev/tty", errno);
  termios saved{};
  bool restore = ::tcgetattr(tty, &saved) == 0;
  if (restore) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;
    ::tcsetattr(tty, TCSAFLUSH, &quiet);
  }
  std::string line;
  char c;
  while (true) {
    ssize_t n = ::read(tty, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') break;
    line.push_back(c);
  }
  if (restore) ::tcsetattr(tty, TCSAFLUSH, &saved);
  strip_line_end(line);
  return line;
}

}  // namespace

std::string read_passphrase(const PassphraseFrom& from, const std::string& prompt, bool confirm) {
  std::string out;
  if (!from.file.empty()) {
    std::ifstream in(from.file, std::ios::binary);
    if (!in) throw Error(ErrorKind::usage, "cannot read the passphrase file", Retry::never, {.file = from.file});
    std::stringstream s;
    s << in.rdbuf();
    out = s.str();
    strip_line_end(out);
    if (out.empty()) throw Error(ErrorKind::usage, "the passphrase file is empty", Retry::never, {.file = from.file});
    return out;
  }
  if (!from.env.empty()) {
    const char* v = std::getenv(from.env.c_str());
    if (!v || !*v) throw Error(ErrorKind::usage, "the environment variable " + from.env + " holds no passphrase");
    return v;
  }
  // Asked only when standard input is a terminal (never when it is a file or a pipe).
  int tty = ::isatty(STDIN_FILENO) ? ::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY) : -1;
  if (tty < 0 || !::isatty(tty)) {
    if (tty >= 0) ::close(tty);
    throw Error(ErrorKind::usage,
                "a passphrase is needed: give --passphrase-file FILE or --passphrase-env VAR (there is no terminal to "
                "ask on)");
  }
  try {
    out = ask(tty, prompt);
    if (confirm) {
      std::string again = ask(tty, "Repeat it");
      bool same = again == out;
      wipe(again);
      if (!same) throw Error(ErrorKind::usage, "the two passphrases differ");
    }
  } catch (...) {
    ::close(tty);
    wipe(out);
    throw;
  }
  ::close(tty);
  if (out.empty()) throw Error(ErrorKind::usage, "an empty passphrase");
  return out;
}

const PassphraseFrom& passphrase_options() { return options(); }

bool passphrase_available() {
  if (!options().file.empty() || !options().env.empty()) return true;
  if (!::isatty(STDIN_FILENO)) return false;
  int tty = ::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (tty < 0) return false;
  bool ok = ::isatty(tty);
  ::close(tty);
  return ok;
}

void add_passphrase_options(CLI::App& app) {
  auto* file = app.add_option("--passphrase-file", options().file,
                              "Encrypted archives: read the passphrase from this file (else --passphrase-env, else "
                              "asked on the terminal)")
                   ->group("Archive encryption");
  app.add_option("--passphrase-env", options().env,
                 "Encrypted archives: read the passphrase from this environment variable")
      ->group("Archive encryption")
      ->excludes(file);
  archive::set_default_passphrase_source([](const std::filesystem::path& dir) {
    static std::mutex m;
    static SecretString cached;
    std::lock_guard lock(m);
    if (cached.empty())
      cached = SecretString(read_passphrase(options(), "Passphrase of the archive " + dir.string(), false));
    return cached.get();
  });
}

}  // namespace imapstage::cli

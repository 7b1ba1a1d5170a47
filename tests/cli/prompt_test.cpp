// The password prompt: with no --password-file or --password-env on a
// terminal, imapstage asks on the terminal with echo off. The terminal here is
// a real pseudo-terminal (forkpty), the server the harness Dovecot.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::TempDir;
using testing::TestServer;

struct TerminalRun {
  int exit_code = -1;
  std::string screen;  // everything the program wrote to the terminal
  bool prompted = false;
};

// Runs imapstage `args` on a new pseudo-terminal; when `prompt_text` appears,
// types `typed` and Enter.
TerminalRun run_on_terminal(const std::vector<std::string>& args, const std::string& prompt_text,
                            const std::string& typed) {
  std::vector<std::string> argv{testing::imapstage_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  int master = -1;
  pid_t pid = forkpty(&master, nullptr, nullptr, nullptr);
  if (pid < 0) throw std::runtime_error("forkpty failed");
  if (pid == 0) {
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  TerminalRun r;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{master, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0) break;  // EIO: the program is gone
    r.screen.append(buf, static_cast<size_t>(n));
    if (!r.prompted && r.screen.find(prompt_text) != std::string::npos) {
      r.prompted = true;
      std::string line = typed + "\n";
      if (write(master, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
        throw std::runtime_error("cannot type on the terminal");
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  close(master);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

using PromptTest = testing::SharedServerTest;

TEST_F(PromptTest, PasswordIsAskedOnTheTerminalWithoutEcho) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  std::vector<std::string> args = {"export", "--archive", archive_dir, "--host", server_->host(), "--port",
                                   std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(),
                                   "--user", "bob", "--folder", "INBOX", "--json"};
  std::string password = server_->password("bob");
  auto r = run_on_terminal(args, "Password for bob", password);
  EXPECT_TRUE(r.prompted) << r.screen;
  EXPECT_EQ(r.exit_code, 0) << r.screen;
  EXPECT_EQ(r.screen.find(password), std::string::npos) << "the password was echoed";
  auto a = archive::Archive::open(archive_dir, archive::Archive::Mode::read);
  EXPECT_TRUE(a->find_account("bob@" + server_->host()));

  // A wrong password typed at the prompt: refused, named, not echoed, no archive.
  std::string other = dir.path() + "/other";
  args[2] = other;
  auto wrong = run_on_terminal(args, "Password for bob", "typed-wrong-password");
  EXPECT_TRUE(wrong.prompted) << wrong.screen;
  EXPECT_EQ(wrong.exit_code, 3) << wrong.screen;
  EXPECT_NE(wrong.screen.find("authentication failed for bob at"), std::string::npos) << wrong.screen;
  EXPECT_EQ(wrong.screen.find("typed-wrong-password"), std::string::npos) << "the password was echoed";
  EXPECT_FALSE(std::filesystem::exists(other));
}

}  // namespace
}  // namespace imapstage

// OAuth2 token commands: how the command is run (sh -c, IMAPSTAGE_USER, the
// token from stdout), its failures (exit status, timeout, no token) without
// any of its output in the error, and the caching and renewal of
// CommandTokenSource.
#include <chrono>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/token_command.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::TempDir;

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(TokenCommandTest, StdoutTrimmedIsTheTokenAndTheUserIsInTheEnvironment) {
  TempDir dir;
  std::string seen = dir.path() + "/seen";
  std::string token = run_token_command("printf '  tok-%s\\n\\n' \"$IMAPSTAGE_USER\"; echo \"$#:$0\" > " + seen,
                                        "alice@example.org");
  EXPECT_EQ(token, "tok-alice@example.org");
  EXPECT_EQ(read_all(seen), "0:/bin/sh\n");  // no arguments: the user is not in argv
}

TEST(TokenCommandTest, FailuresNameTheStatusAndNeverTheOutput) {
  auto failure = [](const std::string& command, std::chrono::seconds timeout = std::chrono::seconds(60)) {
    try {
      run_token_command(command, "bob", timeout);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::auth);
      EXPECT_EQ(e.retry(), Retry::never);
      return std::string(e.what());
    }
    ADD_FAILURE() << "no error for " << command;
    return std::string();
  };
  std::string exit7 = failure("echo Secret-Out-1; echo Secret-Err-1 >&2; exit 7");
  EXPECT_NE(exit7.find("token command failed: exit 7"), std::string::npos) << exit7;
  EXPECT_EQ(exit7.find("Secret"), std::string::npos) << exit7;

  std::string empty = failure("true");
  EXPECT_NE(empty.find("printed no token"), std::string::npos) << empty;

  std::string lines = failure("printf 'Secret-A\\nSecret-B\\n'");
  EXPECT_NE(lines.find("more than one line"), std::string::npos) << lines;
  EXPECT_EQ(lines.find("Secret"), std::string::npos) << lines;

  std::string signal = failure("kill -TERM $$");
  EXPECT_NE(signal.find("killed by signal 15"), std::string::npos) << signal;

  // A command that hangs is killed with what it started (its process group).
  auto t0 = std::chrono::steady_clock::now();
  std::string slow = failure("echo Secret-Partial; sleep 30 & sleep 30", std::chrono::seconds(1));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_NE(slow.find("timed out after 1 s"), std::string::npos) << slow;
  EXPECT_EQ(slow.find("Secret"), std::string::npos) << slow;
  EXPECT_LT(took, std::chrono::seconds(10));
}

TEST(TokenCommandTest, SourceCachesAndRenewsOnlyTheRejectedToken) {
  TempDir dir;
  std::string counter = dir.path() + "/n";
  // Each run prints the next number.
  std::string command = "n=$(( $(cat " + counter + " 2>/dev/null || echo 0) + 1 )); echo $n > " + counter +
                        "; echo tok-$n";
  CommandTokenSource source(command, "carol");
  EXPECT_EQ(source.token(), "tok-1");
  EXPECT_EQ(source.token(), "tok-1");  // cached
  EXPECT_EQ(source.fetches(), 1);
  EXPECT_EQ(source.renew("tok-1"), "tok-2");
  // Another connection that was refused the old token gets the new one without a run.
  EXPECT_EQ(source.renew("tok-1"), "tok-2");
  EXPECT_EQ(source.fetches(), 2);
  EXPECT_EQ(source.token(), "tok-2");
}

}  // namespace
}  // namespace imapstage

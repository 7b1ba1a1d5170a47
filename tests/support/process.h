// Running the real imapstage binary (or any program) from tests.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace imapstage::testing {

struct ProcessResult {
  int exit_code = -1;        // -1 when killed by a signal
  int signal = 0;            // the signal that ended it, 0 if it exited
  std::string out;           // stdout
  std::string err;           // stderr
};

// Runs `argv` (argv[0] is the program path; no shell) with extra environment
// entries ("NAME=value"), captures stdout and stderr. With `kill_after`,
// sends SIGKILL once that much time has passed (if still running); with
// `kill_when`, sends SIGKILL as soon as it returns true for the stdout so far.
ProcessResult run_process(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
                          std::optional<std::chrono::milliseconds> kill_after = std::nullopt,
                          const std::function<bool(const std::string& out)>& kill_when = nullptr);

// Path of the imapstage binary under test.
std::string imapstage_binary();

// Runs imapstage with `args`.
ProcessResult run_imapstage(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                            std::optional<std::chrono::milliseconds> kill_after = std::nullopt,
                            const std::function<bool(const std::string& out)>& kill_when = nullptr);

}  // namespace imapstage::testing

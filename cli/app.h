// The command line: builds the CLI11 application with every subcommand and
// turns imapstage::Error into messages and exit codes. Nothing else prints
// errors or decides exit codes.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace imapstage::cli {

// Documented exit codes (README.md, "Exit status").
enum ExitCode : int {
  kExitOk = 0,           // everything done
  kExitIncomplete = 1,   // the run finished but something was not done or differs (named in the summary)
  kExitUsage = 2,        // bad command line, configuration or input file
  kExitAuth = 3,         // the server refused the credentials
  kExitNetwork = 4,      // the server could not be reached, TLS failed, the protocol failed, or the mechanism is not offered
  kExitArchive = 5,      // the archive is locked, corrupt, of a newer format, or a local I/O error
  kExitResumable = 6,    // the server's limits stopped it (throttled, daily budget spent): a later run continues
  kExitInternal = 70,    // a bug
};

// What each exit status means, in the order above (the manual pages list them).
struct ExitCodeMeaning {
  int code;
  const char* meaning;
};
inline constexpr ExitCodeMeaning kExitCodeMeanings[] = {
    {kExitOk, "everything was done"},
    {kExitIncomplete, "the run finished, but something was not done or differs (named in the summary)"},
    {kExitUsage, "bad command line, configuration or input file"},
    {kExitAuth, "the server refused the credentials"},
    {kExitNetwork, "the server could not be reached, TLS failed, the protocol failed, or the mechanism is not offered"},
    {kExitArchive, "the archive is locked, corrupt or of a newer format, or a local I/O error"},
    {kExitResumable, "the server's limits stopped it (throttled beyond --max-backoff, or a daily budget spent): a later run continues where it stopped"},
    {kExitInternal, "a bug"},
};

// Builds the whole command line in `app`: the description, --version,
// --help-all and every subcommand, whose callbacks store their exit status
// in `status`. The program parses with it; the manual pages and shell
// completions are generated from it, so they list what the program takes.
void build_app(CLI::App& app, int& status);

// Runs imapstage with the given arguments and returns the exit status.
int run_main(int argc, char** argv);

}  // namespace imapstage::cli

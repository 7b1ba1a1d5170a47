// The command line: builds the CLI11 application with every subcommand and
// turns imapstage::Error into messages and exit codes. Nothing else prints
// errors or decides exit codes.
#pragma once

#include <string>

namespace imapstage::cli {

// Documented exit codes (README.md, "Exit status").
enum ExitCode : int {
  kExitOk = 0,           // everything done
  kExitIncomplete = 1,   // the run finished but something was not done or differs (named in the summary)
  kExitUsage = 2,        // bad command line, configuration or input file
  kExitAuth = 3,         // the server refused the credentials
  kExitNetwork = 4,      // the server could not be reached, TLS failed, the protocol failed, or the mechanism is not offered
  kExitArchive = 5,      // the archive is locked, corrupt, of a newer format, or a local I/O error
  kExitInternal = 70,    // a bug
};

// Runs imapstage with the given arguments and returns the exit status.
int run_main(int argc, char** argv);

}  // namespace imapstage::cli

#include "cli/app.h"

#include <csignal>
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/display.h"
#include "cli/passphrase.h"
#include "cli/version.h"
#include "common/error.h"

namespace imapstage::cli {

int exit_code_for(const Error& e) {
  switch (e.kind()) {
    case ErrorKind::usage: return kExitUsage;
    case ErrorKind::auth: return kExitAuth;
    case ErrorKind::network:
    case ErrorKind::tls:
    case ErrorKind::protocol:
    case ErrorKind::limit: return kExitNetwork;
    case ErrorKind::io:
    case ErrorKind::corrupt:
    case ErrorKind::format:
    case ErrorKind::locked:
    case ErrorKind::not_found: return kExitArchive;
    case ErrorKind::interrupted:
    case ErrorKind::policy: return kExitIncomplete;
    case ErrorKind::throttled: return kExitResumable;
    case ErrorKind::internal: return kExitInternal;
  }
  return kExitInternal;
}

void build_app(CLI::App& app, int& status) {
  app.description("imapstage: export IMAP mailboxes into a verifiable archive, and import them elsewhere");
  app.name("imapstage");
  app.require_subcommand(1);
  app.set_version_flag("--version", [] { return version_text(); },
                       "Show the program's version, the archive format version and the libraries' versions");
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  // Options of the program (--passphrase-*) may follow any subcommand.
  app.fallthrough();
  add_passphrase_options(app);
  register_commands(app, status);
}

int run_main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app;
  int status = kExitOk;
  build_app(app, status);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  } catch (const Error& e) {
    say(stderr, "imapstage: {}\n", e.what());
    return exit_code_for(e);
  } catch (const std::exception& e) {
    say(stderr, "imapstage: internal error: {}\n", e.what());
    return kExitInternal;
  }
  return status;
}

}  // namespace imapstage::cli

// imapstage providers: the provider profiles (batch/providers.h) as a table.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "batch/providers.h"
#include "cli/app.h"
#include "cli/commands.h"

namespace imapstage::cli {

void add_providers_command(CLI::App& app, int& status) {
  auto* cmd = app.add_subcommand(
      "providers",
      "List the provider profiles (--provider NAME, provider = \"NAME\" in a profile): host, TLS, auth, size "
      "limits, daily budgets, per-server caps and quirks; every value can be overridden");
  cmd->callback([&status] {
    std::fputs(batch::providers_table().c_str(), stdout);
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

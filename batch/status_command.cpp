// imapstage status: the per-account state of the archive's batches.
#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "batch/state.h"
#include "cli/commands.h"
#include "cli/display.h"
#include "common/error.h"

namespace imapstage::cli {

namespace {

struct StatusArgs {
  std::string archive;
  std::string kind;
  bool json = false;
};

// Whether the writer named in DIR/lock is alive (a "running" account whose writer is gone was interrupted).
bool writer_alive(const std::filesystem::path& dir) {
  std::ifstream in(dir / "lock");
  long pid = 0;
  if (!(in >> pid) || pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

std::string shown_status(const batch::AccountState& a, bool alive) {
  if (a.status == batch::AccountStatus::running && !alive) return "interrupted";
  return batch::to_string(a.status);
}

void print_table(const std::string& kind, const batch::BatchState& s, bool alive) {
  std::printf("%s batch %s (run %d time%s):\n", kind.c_str(), s.batch_id.c_str(), s.invocations,
              s.invocations == 1 ? "" : "s");
  std::printf("  %-40s %-11s %8s %9s %10s %9s  %s\n", "account", "status", "attempts", "messages", "bytes",
              "duration", "error");
  size_t counts[4] = {0, 0, 0, 0};
  uint64_t messages = 0, bytes = 0;
  double seconds = 0;
  for (auto& a : s.accounts) {
    ++counts[static_cast<int>(a.status)];
    messages += a.messages;
    bytes += a.bytes;
    seconds += a.seconds;
    std::string duration = a.status == batch::AccountStatus::queued ? "-" : human_duration(a.seconds);
    cli::say(stdout, "  {:<40} {:<11} {:>8} {:>9} {:>10} {:>9}  {}\n", a.key, shown_status(a, alive), a.attempts,
             a.messages, human_bytes(double(a.bytes)), duration, a.error);
  }
  std::printf("  %zu accounts: %zu done, %zu error, %zu running, %zu queued; %llu messages, %s, %s of work\n",
              s.accounts.size(), counts[2], counts[3], counts[1], counts[0], (unsigned long long)messages,
              human_bytes(double(bytes)).c_str(), human_duration(seconds).c_str());
}

}  // namespace

void add_status_command(CLI::App& app, int& status) {
  auto args = std::make_shared<StatusArgs>();
  auto* cmd = app.add_subcommand("status", "Show the accounts of the archive's export and import batches");
  cmd->add_option("--archive", args->archive, "Archive directory")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--kind", args->kind, "Only this batch: export or import")
      ->check(CLI::IsMember({"export", "import"}));
  cmd->add_flag("--json", args->json, "Write one JSON object with every account instead of the table");
  cmd->callback([args, &status] {
    std::filesystem::path dir = args->archive;
    bool alive = writer_alive(dir);
    nlohmann::json out = {{"event", "status"}, {"archive", args->archive}, {"writer_running", alive}};
    bool any = false, all_done = true;
    for (std::string kind : {"export", "import"}) {
      if (!args->kind.empty() && args->kind != kind) continue;
      auto state = batch::load_state(batch::state_path(dir, kind));
      if (!state) continue;
      any = true;
      all_done = all_done && !state->unfinished();
      if (args->json) {
        auto j = state->to_json();
        for (size_t i = 0; i < state->accounts.size(); ++i)
          j["accounts"][i]["shown_status"] = shown_status(state->accounts[i], alive);
        out[kind] = j;
      } else {
        if (kind == "import" && (args->kind.empty())) std::printf("\n");
        print_table(kind, *state, alive);
      }
    }
    if (!any)
      throw Error(ErrorKind::not_found, "no batch has run in this archive (no batches/export.json or import.json)",
                  Retry::never, {.file = args->archive});
    if (args->json) std::printf("%s\n", out.dump().c_str());
    status = all_done ? kExitOk : kExitIncomplete;
  });
}

}  // namespace imapstage::cli

// imapstage export: the command line of the export engine.
#include <cstdio>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/display.h"
#include "cli/server_options.h"
#include "export/exporter.h"

namespace imapstage::cli {

namespace {

struct ExportArgs {
  std::string archive;
  ServerOptions server;
  std::string account_name;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  bool dry_run = false;
  bool json = false;
  int verbosity = 0;
};

void print_summary(const exporting::ExportSummary& s) {
  std::printf("%-40s %9s %9s %9s %8s %8s %7s\n", "folder", "server", "new", "fetched", "flags", "expunged",
              "failed");
  for (auto& f : s.folders) {
    std::string status = f.error.empty() ? "" : "  ERROR: " + f.error;
    if (f.noselect) status = "  (\\Noselect)";
    if (s.dry_run) {
      std::printf("%-40s %9llu %9llu %9s%s\n", f.name.c_str(), (unsigned long long)f.server_messages,
                  (unsigned long long)f.to_fetch, human_bytes(double(f.to_fetch_bytes)).c_str(), status.c_str());
      continue;
    }
    std::printf("%-40s %9llu %9llu %9s %8llu %8llu %7zu%s\n", f.name.c_str(), (unsigned long long)f.server_messages,
                (unsigned long long)f.new_messages, human_bytes(double(f.bytes_fetched)).c_str(),
                (unsigned long long)f.flags_updated, (unsigned long long)f.expunged, f.failed_uids.size(),
                status.c_str());
  }
  using R = exporting::FolderResult;
  if (s.dry_run) {
    std::printf("\nwould fetch %llu messages, %s, from %zu folders of %s (nothing written)\n",
                (unsigned long long)s.total(&R::to_fetch), human_bytes(double(s.total(&R::to_fetch_bytes))).c_str(),
                s.folders.size(), s.account.c_str());
    return;
  }
  std::printf("\n%s: %zu folders, %llu new messages, %s fetched, %s stored, %s saved by dedupe, "
              "%llu flag changes, %llu expunged, in %s",
              s.account.c_str(), s.folders.size(), (unsigned long long)s.total(&R::new_messages),
              human_bytes(double(s.total(&R::bytes_fetched))).c_str(),
              human_bytes(double(s.total(&R::bytes_stored))).c_str(),
              human_bytes(double(s.total(&R::bytes_deduplicated))).c_str(),
              (unsigned long long)s.total(&R::flags_updated), (unsigned long long)s.total(&R::expunged),
              human_duration(s.seconds).c_str());
  if (s.reconnects) std::printf(", %d reconnects", s.reconnects);
  std::printf("\n");
  if (!s.complete()) {
    std::printf("INCOMPLETE: %llu messages not delivered, %llu folders failed:\n",
                (unsigned long long)s.failed_messages(), (unsigned long long)s.failed_folders());
    for (auto& f : s.folders) {
      if (!f.error.empty()) std::printf("  folder %s: %s\n", f.name.c_str(), f.error.c_str());
      for (auto uid : f.failed_uids) std::printf("  folder %s, UID %u: not delivered by the server\n", f.name.c_str(), uid);
    }
  }
}

}  // namespace

void add_export_command(CLI::App& app, int& status) {
  auto args = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand("export", "Pull every folder of an IMAP account into the archive (incremental)");
  cmd->add_option("--archive", args->archive, "Archive directory (created if missing)")->required();
  add_server_options(cmd, args->server);
  cmd->add_option("--account-name", args->account_name, "Name of the account in the archive (default USER@HOST)");
  cmd->add_option("--folder", args->include, "Only folders matching this glob (repeatable), e.g. 'INBOX' or 'Projects/*'");
  cmd->add_option("--exclude", args->exclude, "Skip folders matching this glob (repeatable)");
  cmd->add_flag("--dry-run", args->dry_run, "Show the folders, message counts and sizes that would be fetched; write nothing");
  cmd->add_flag("--json", args->json, "Write JSON-lines events on stdout instead of the terminal display");
  cmd->add_flag("-v,--verbose", [args](int64_t n) { args->verbosity = static_cast<int>(n); }, "More detail");
  cmd->add_flag("-q,--quiet", [args](int64_t) { args->verbosity = -1; }, "Only errors and the summary");
  cmd->callback([args, &status] {
    exporting::ExportOptions options;
    options.archive_dir = args->archive;
    options.endpoint = make_endpoint(args->server);
    options.credentials = make_credentials(args->server);
    options.account_name = args->account_name;
    options.include = args->include;
    options.exclude = args->exclude;
    options.dry_run = args->dry_run;

    std::unique_ptr<EventSink> sink;
    TerminalSink* terminal = nullptr;
    if (args->json) {
      sink = std::make_unique<JsonLinesSink>(stdout);
    } else {
      auto t = std::make_unique<TerminalSink>(args->verbosity);
      terminal = t.get();
      sink = std::move(t);
    }
    if (options.endpoint.insecure)
      sink->emit({{"event", "warning"},
                  {"text", "--insecure: the server's certificate and host name are NOT verified"}});
    if (options.endpoint.tls == imap::TlsMode::none)
      sink->emit({{"event", "warning"}, {"text", "--tls none: the password and mail cross the network unencrypted"}});
    auto summary = exporting::run_export(options, *sink);
    if (terminal) {
      terminal->finish();
      print_summary(summary);
    }
    status = summary.complete() ? kExitOk : kExitIncomplete;
  });
}

}  // namespace imapstage::cli

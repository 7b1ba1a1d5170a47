// imapstage import: the command line of the import engine.
#include <cstdio>

#include "cli/commands.h"
#include "cli/display.h"
#include "cli/server_options.h"
#include "common/error.h"
#include "import/importer.h"

namespace imapstage::cli {

namespace {

struct ImportArgs {
  std::string archive;
  ServerOptions server;
  std::string account;
  std::string target_name;
  std::vector<std::string> maps;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  bool dry_run = false;
  bool json = false;
  int verbosity = 0;
};

void print_summary(const importing::ImportSummary& s) {
  std::printf("%-30s %-30s %9s %9s %9s %7s %7s\n", "source folder", "target folder", "messages",
              s.dry_run ? "to append" : "appended", "already", "flags", "failed");
  for (auto& f : s.folders) {
    std::string note = f.error.empty() ? "" : "  ERROR: " + f.error;
    std::printf("%-30s %-30s %9llu %9llu %9llu %7llu %7zu%s\n", f.source.c_str(), f.target.c_str(),
                (unsigned long long)f.source_messages,
                (unsigned long long)(s.dry_run ? f.to_append : f.appended), (unsigned long long)f.already_there,
                (unsigned long long)f.flags_updated, f.failed.size(), note.c_str());
  }
  using R = importing::ImportFolderResult;
  if (s.dry_run) {
    std::printf("\nwould append %llu messages to %s (nothing written)\n", (unsigned long long)s.total(&R::to_append),
                s.target.c_str());
    return;
  }
  std::printf("\n%s -> %s: %zu folders, %llu appended (%s), %llu already there, %llu reconciled, "
              "%llu flag updates, in %s",
              s.account.c_str(), s.target.c_str(), s.folders.size(), (unsigned long long)s.total(&R::appended),
              human_bytes(double(s.total(&R::bytes_appended))).c_str(), (unsigned long long)s.total(&R::already_there),
              (unsigned long long)s.total(&R::reconciled), (unsigned long long)s.total(&R::flags_updated),
              human_duration(s.seconds).c_str());
  if (s.reconnects) std::printf(", %d reconnects", s.reconnects);
  std::printf("\n");
  if (!s.complete()) {
    std::printf("INCOMPLETE: %llu messages failed, %llu folders failed:\n", (unsigned long long)s.failed_messages(),
                (unsigned long long)s.failed_folders());
    for (auto& f : s.folders) {
      if (!f.error.empty()) std::printf("  folder %s: %s\n", f.source.c_str(), f.error.c_str());
      for (auto& m : f.failed)
        std::printf("  folder %s, UID %u, object %s: %s\n", f.source.c_str(), m.uid, m.hash.c_str(), m.error.c_str());
    }
  }
}

}  // namespace

void add_import_command(CLI::App& app, int& status) {
  auto args = std::make_shared<ImportArgs>();
  auto* cmd = app.add_subcommand("import", "Push an archived account into a target IMAP server (never duplicates)");
  cmd->add_option("--archive", args->archive, "Archive directory")->required()->check(CLI::ExistingDirectory);
  add_server_options(cmd, args->server);
  cmd->add_option("--account", args->account, "Archived account to import (default: the only one)");
  cmd->add_option("--target-name", args->target_name,
                  "Name of the target in the archive's records (default USER@HOST:PORT)");
  cmd->add_option("--map", args->maps, "SOURCE=TARGET folder mapping, UTF-8 names (repeatable; maps subfolders too)");
  cmd->add_option("--folder", args->include, "Only source folders matching this glob (repeatable)");
  cmd->add_option("--exclude", args->exclude, "Skip source folders matching this glob (repeatable)");
  cmd->add_flag("--dry-run", args->dry_run, "Show the folder mapping and what would be appended; write nothing");
  cmd->add_flag("--json", args->json, "Write JSON-lines events on stdout instead of the terminal display");
  cmd->add_flag("-v,--verbose", [args](int64_t n) { args->verbosity = static_cast<int>(n); }, "More detail");
  cmd->add_flag("-q,--quiet", [args](int64_t) { args->verbosity = -1; }, "Only errors and the summary");
  cmd->callback([args, &status] {
    importing::ImportOptions options;
    options.archive_dir = args->archive;
    options.endpoint = make_endpoint(args->server);
    options.account = args->account;
    options.target_name = args->target_name;
    for (auto& m : args->maps) {
      auto eq = m.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == m.size())
        throw Error(ErrorKind::usage, "--map wants SOURCE=TARGET, not " + m);
      options.map[m.substr(0, eq)] = m.substr(eq + 1);
    }
    options.include = args->include;
    options.exclude = args->exclude;
    options.dry_run = args->dry_run;
    options.credentials = make_credentials(args->server);

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
    auto summary = importing::run_import(options, *sink);
    if (terminal) {
      terminal->finish();
      print_summary(summary);
    }
    status = summary.complete() ? kExitOk : kExitIncomplete;
  });
}

}  // namespace imapstage::cli

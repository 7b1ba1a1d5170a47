// imapstage import: the command line of the import engine.
#include <cstdio>
#include <optional>

#include "batch/batch_display.h"
#include "batch/batch_jobs.h"
#include "batch/budget.h"
#include "cli/commands.h"
#include "cli/display.h"
#include "cli/server_options.h"
#include "common/error.h"
#include "common/message_filter.h"
#include "imap/mailbox_names.h"
#include "import/importer.h"

namespace imapstage::cli {

namespace {

struct ImportArgs {
  std::string archive;
  ServerOptions server;
  ProfileOptions profile;
  BatchOptions batch;
  std::string account;
  std::string target_name;
  std::vector<std::string> maps;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  std::optional<int> connections;
  std::string subfolder;
  bool subfolder_special_use = false;
  std::string since, before, larger, smaller;
  std::string too_big = "fail";
  std::string gmail_labels = "folders";
  uint64_t max_errors = 0;
  std::string max_bandwidth;
  double max_messages_per_second = 0;
  bool dry_run = false;
  bool sync_expunges = false;
  bool json = false;
  std::string log_file;  // --log-file: JSON events appended here too
  int verbosity = 0;
};

void print_summary(const importing::ImportSummary& s) {
  std::FILE* out = stdout;
  say(out, "{} {} {:>9} {:>9} {:>9} {:>7} {:>7}\n", pad("source folder", 30), pad("target folder", 30), "messages",
      s.dry_run ? "to append" : "appended", "already", "flags", "failed");
  for (auto& f : s.folders) {
    std::string note = f.error.empty() ? "" : "  ERROR: " + f.error;
    say(out, "{} {} {:>9} {:>9} {:>9} {:>7} {:>7}{}\n", pad(printable(f.source), 30), pad(printable(f.target), 30),
        f.source_messages, s.dry_run ? f.to_append : f.appended, f.already_there, f.flags_updated, f.failed.size(),
        note);
  }
  bool renamed = false;
  for (auto& f : s.folders)
    if (f.reason.starts_with("renamed: ")) {
      if (!renamed) say(out, "\nfolders renamed for the target's names (case-insensitive or reserved):\n");
      renamed = true;
      say(out, "  {} -> {}: {}\n", printable(f.source), printable(f.target), f.reason.substr(9));
    }
  using R = importing::ImportFolderResult;
  if (s.dry_run) {
    say(out, "\nwould append {} messages to {} (nothing written)\n", s.total(&R::to_append), s.target);
    return;
  }
  say(out, "\n{} -> {}: {} folders, {} appended ({}), {} already there, {} reconciled, {} flag updates, in {}",
      s.account, s.target, s.folders.size(), s.total(&R::appended), human_bytes(double(s.total(&R::bytes_appended))),
      s.total(&R::already_there), s.total(&R::reconciled), s.total(&R::flags_updated), human_duration(s.seconds));
  if (s.reconnects) say(out, ", {} reconnects", s.reconnects);
  say(out, "\n");
  if (s.total(&R::filtered_out))
    say(out, "{} messages left out by the message filter\n", s.total(&R::filtered_out));
  if (s.skipped_messages()) {
    say(out, "{} messages skipped by policy (--too-big skip):\n", s.skipped_messages());
    for (auto& f : s.folders)
      for (auto& m : f.skipped)
        say(out, "  folder {}, UID {}, object {}, {} bytes: {}\n", f.source, m.uid, m.hash, m.size, m.reason);
  }
  if (s.total(&R::expunged))
    say(out, "{} messages expunged on the target as on the source (--sync-expunges)\n", s.total(&R::expunged));
  if (s.total(&R::rewritten))
    say(out, "{} messages stored changed by the target in ways servers of its kind change mail "
             "(8-bit header bytes, bare CRs, final CRLF): see message_rewritten in --json\n",
        s.total(&R::rewritten));
  if (s.total(&R::altered))
    say(out, "WARNING: {} messages stored ALTERED by the target in a way no known rewrite explains\n",
        s.total(&R::altered));
  if (!s.complete()) {
    say(out, "INCOMPLETE: {} messages failed, {} folders failed:\n", s.failed_messages(), s.failed_folders());
    for (auto& f : s.folders) {
      if (!f.error.empty()) say(out, "  folder {}: {}\n", f.source, f.error);
      for (auto& m : f.failed) say(out, "  folder {}, UID {}, object {}: {}\n", f.source, m.uid, m.hash, m.error);
    }
  }
}

void print_batch_report(const batch::BatchReport& report, const std::string& accounts_file) {
  auto& r = report.result;
  std::printf("\nimport batch%s: %zu accounts, %zu done now, %zu failed, %zu done earlier",
              r.resumed ? " (resumed)" : "", r.total, r.done, r.failed, r.skipped);
  if (r.not_started) std::printf(", %zu not started", r.not_started);
  if (r.parked) std::printf(", %zu parked (resumable later)", r.parked);
  if (!report.refused.empty()) std::printf(", %zu lines refused", report.refused.size());
  std::printf("\n");
  for (auto& e : report.refused) std::printf("  %s line %zu: %s\n", accounts_file.c_str(), e.line, e.message.c_str());
  for (auto& a : r.state.accounts)
    if (a.status == batch::AccountStatus::error)
      std::printf("  %s (line %zu): %s\n", a.key.c_str(), a.line, a.error.c_str());
    else if (a.status == batch::AccountStatus::parked)
      std::printf("  %s (line %zu): parked until %s: %s\n", a.key.c_str(), a.line,
                  batch::resume_text(a.resume_at).c_str(), a.error.c_str());
  if (!report.complete()) std::printf("see imapstage status --archive DIR; run the same command again to resume\n");
}

}  // namespace

void add_import_command(CLI::App& app, int& status) {
  auto args = std::make_shared<ImportArgs>();
  auto* cmd = app.add_subcommand("import", "Push an archived account into a target IMAP server (never duplicates)");
  cmd->add_option("--archive", args->archive, "Archive directory")->required()->check(CLI::ExistingDirectory);
  add_server_options(cmd, args->server, false);
  add_profile_options(cmd, args->profile, "--target-profile");
  add_batch_options(cmd, args->batch);
  cmd->add_option("--account", args->account, "Archived account to import (default: the only one)");
  cmd->add_option("--target-name", args->target_name,
                  "Name of the target in the archive's records (default USER@HOST:PORT)");
  cmd->add_option("--map", args->maps, "SOURCE=TARGET folder mapping, UTF-8 names (repeatable; maps subfolders too)");
  cmd->add_option("--folder", args->include, "Only source folders matching this glob (repeatable)");
  cmd->add_option("--exclude", args->exclude, "Skip source folders matching this glob (repeatable)");
  cmd->add_option("--connections", args->connections,
                  "Connections to the target, each importing whole folders side by side (default 2, or 4 when a "
                  "round trip takes 5 ms or more; batches use one per account and run accounts side by side instead)")
      ->check(CLI::Range(1, 8));
  cmd->add_option("--target-subfolder", args->subfolder,
                  "Import the whole account below this target folder (levels joined with '/', e.g. "
                  "'Archive/old-server'): INBOX becomes Archive/old-server/INBOX, nothing goes to the target's own "
                  "Sent, Trash, ...");
  cmd->add_flag("--target-subfolder-special-use", args->subfolder_special_use,
                "With --target-subfolder: Sent, Drafts, Trash, Junk and Archive still go to the target's own folders");
  cmd->add_option("--since", args->since, "Only messages with INTERNALDATE on or after this day (YYYY-MM-DD, UTC)");
  cmd->add_option("--before", args->before, "Only messages with INTERNALDATE before this day (YYYY-MM-DD, UTC)");
  cmd->add_option("--larger", args->larger, "Only messages larger than this (e.g. 100k, 50MB)");
  cmd->add_option("--smaller", args->smaller, "Only messages smaller than this (e.g. 50MB)");
  cmd->add_option("--gmail-labels", args->gmail_labels,
                  "A Gmail archive into a server that is not Gmail: folders (default: a copy in every label's "
                  "folder, All Mail included, as exported) or primary (each message once, in its primary folder: "
                  "INBOX, Sent, Drafts, a label, Starred, Important, Spam, Trash; All Mail only for messages "
                  "without another). Into Gmail each message is appended once and its labels set")
      ->check(CLI::IsMember({"folders", "primary"}));
  cmd->add_option("--too-big", args->too_big,
                  "A message the target refuses as too big: fail (default: the run is incomplete) or skip (listed "
                  "as skipped by policy, the run complete)")
      ->check(CLI::IsMember({"fail", "skip"}));
  cmd->add_option("--max-errors", args->max_errors,
                  "Stop the account once this many messages have failed (what was sent is recorded; a batch marks "
                  "the account as error and goes on with the others; default: never)");
  cmd->add_option("--max-bandwidth", args->max_bandwidth,
                  "Send at most this many bytes per second per account (e.g. 2MB; default: no cap)");
  cmd->add_option("--max-messages-per-second", args->max_messages_per_second,
                  "Send at most this many messages per second per account (default: no cap)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--dry-run", args->dry_run, "Show the folder mapping and what would be appended; write nothing");
  cmd->add_flag("--sync-expunges", args->sync_expunges,
                "Expunge on the target the messages this archive put there that the source has expunged since "
                "(off by default: the target keeps everything imported; needs UIDPLUS)");
  cmd->add_flag("--json", args->json, "Write JSON-lines events on stdout instead of the terminal display");
  cmd->add_option("--log-file", args->log_file,
                  "Also append every event as a JSON line to this file (what --json writes), whatever is shown");
  cmd->add_flag("-v,--verbose", [args](int64_t n) { args->verbosity = static_cast<int>(n); }, "More detail");
  cmd->add_flag("-q,--quiet", [args](int64_t) { args->verbosity = -1; }, "Only errors and the summary");
  cmd->callback([args, cmd, &status] {
    std::map<std::string, std::string> map;
    for (auto& m : args->maps) {
      auto eq = m.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == m.size())
        throw Error(ErrorKind::usage, "--map wants SOURCE=TARGET, not " + m);
      map[m.substr(0, eq)] = m.substr(eq + 1);
    }
    std::vector<std::string> warnings;
    auto routing = make_routing(cmd, args->server, args->profile, warnings);
    importing::ImportPolicy policy;
    if (!args->subfolder.empty()) {
      policy.subfolder.path = imap::split_path(args->subfolder);
      std::erase_if(policy.subfolder.path, [](const std::string& level) { return level.empty(); });
      if (policy.subfolder.path.empty()) throw Error(ErrorKind::usage, "--target-subfolder names no folder");
    }
    if (args->subfolder_special_use && policy.subfolder.path.empty())
      throw Error(ErrorKind::usage, "--target-subfolder-special-use needs --target-subfolder");
    policy.subfolder.special_use = args->subfolder_special_use;
    if (!args->since.empty()) policy.filter.since = parse_day(args->since);
    if (!args->before.empty()) policy.filter.before = parse_day(args->before);
    if (!args->larger.empty()) policy.filter.larger = parse_size(args->larger);
    if (!args->smaller.empty()) policy.filter.smaller = parse_size(args->smaller);
    policy.skip_too_big = args->too_big == "skip";
    policy.gmail_labels =
        args->gmail_labels == "primary" ? importing::GmailLabels::primary : importing::GmailLabels::folders;
    policy.max_errors = args->max_errors;
    if (!args->max_bandwidth.empty()) {
      policy.max_bytes_per_second = double(parse_size(args->max_bandwidth));
      if (policy.max_bytes_per_second <= 0) throw Error(ErrorKind::usage, "--max-bandwidth must be above 0");
    }
    policy.max_messages_per_second = args->max_messages_per_second;

    if (!args->batch.accounts.empty()) {
      if (!args->server.user.empty() || !args->account.empty() || !args->target_name.empty() || args->dry_run ||
          args->connections)
        throw Error(ErrorKind::usage,
                    "--accounts runs a batch: --user, --account, --target-name, --connections and --dry-run "
                    "do not apply");
      batch::ImportBatchOptions options;
      options.archive_dir = args->archive;
      options.accounts_file = args->batch.accounts;
      options.routing = std::move(routing);
      options.map = map;
      options.include = args->include;
      options.exclude = args->exclude;
      options.sync_expunges = args->sync_expunges;
      options.policy = policy;
      options.runner = make_runner_options(args->batch);
      options.shard = apply_shard(args->batch, args->archive, options.runner, warnings);
      options.archive_dir = args->archive;
      CommandSink<batch::BatchTerminalSink> out(args->json, args->verbosity, args->log_file);
      auto& sink = out.sink;
      auto* terminal = out.terminal;
      for (auto& w : warnings) sink->emit({{"event", "warning"}, {"text", w}});
      options.retry = make_retry_policy(args->server, *sink, "");
      options.retry.wait_when_throttled = false;  // a throttled account gives its slot to others
      options.runner.max_throttle_wait = options.retry.max_throttle_wait;
      options.limits = make_batch_limits(args->server, args->batch);
      auto report = batch::run_import_batch(options, *sink);
      if (terminal) {
        terminal->finish();
        print_batch_report(report, args->batch.accounts);
      }
      status = report.complete() ? kExitOk : report.only_parked() ? kExitResumable : kExitIncomplete;
      return;
    }

    if (!args->batch.shard.empty())
      throw Error(ErrorKind::usage, "--shard splits a batch: it needs --accounts FILE");
    if (args->server.user.empty()) throw Error(ErrorKind::usage, "give --user USER (one account) or --accounts FILE");
    const batch::Profile& profile = routing.fixed ? *routing.fixed : routing.route(args->server.user);
    auto login = make_account_login(profile, args->server.user);
    importing::ImportOptions options;
    options.archive_dir = args->archive;
    options.endpoint = profile.endpoint();
    options.account = args->account;
    options.target_name =
        args->target_name.empty() ? login.mailbox + "@" + options.endpoint.address() : args->target_name;
    options.map = map;
    options.include = args->include;
    options.exclude = args->exclude;
    options.dry_run = args->dry_run;
    options.sync_expunges = args->sync_expunges;
    options.policy = policy;
    options.policy.restore_flagged = profile.restore_flagged;
    options.policy.names = {profile.case_insensitive_names, profile.reserved_folders};
    options.connections = args->connections.value_or(0);  // two, four on a slow link
    options.credentials = login.credentials;

    CommandSink<TerminalSink> out(args->json, args->verbosity, args->log_file);
    auto& sink = out.sink;
    auto* terminal = out.terminal;
    for (auto& w : warnings) sink->emit({{"event", "warning"}, {"text", w}});
    options.retry = make_retry_policy(args->server, *sink, options.target_name);
    // The daily budget (--daily-budget, or the provider's), kept in the archive directory.
    batch::BatchLimits limits;
    if (!args->server.daily_budget.empty()) limits.daily_budget = parse_size(args->server.daily_budget);
    uint64_t budget = limits.budget(profile, true);
    std::optional<batch::BudgetStore> budgets;
    auto open_budgets = [&]() -> batch::BudgetStore& {
      if (!budgets) budgets.emplace(options.archive_dir);
      return *budgets;
    };
    std::string budget_key = "import " + (options.account.empty() ? std::string("*") : options.account) + " -> " +
                             options.target_name;
    if (budget && !options.dry_run) open_budgets().check(budget_key, budget);
    if (!options.dry_run) {
      options.policy.before_append = [&budgets, &budget, &budget_key](uint64_t bytes, uint64_t) {
        if (!budget) return;
        budgets->check(budget_key, budget);
        budgets->charge(budget_key, bytes, budget, false);
      };
      // A target that turns out to be Gmail (X-GM-EXT-1) gets its budget unless one was chosen.
      options.on_provider = [&](const std::string& provider) {
        return limits.adopt_detected_budget(profile, true, provider, budget, open_budgets, budget_key);
      };
    }
    importing::ImportSummary summary;
    try {
      summary = importing::run_import(options, *sink);
    } catch (const Error& e) {
      throw batch::describe_login_error(e, options.target_name, login);
    }
    if (terminal) {
      terminal->finish();
      print_summary(summary);
    }
    status = summary.complete() ? kExitOk : kExitIncomplete;
  });
}

}  // namespace imapstage::cli

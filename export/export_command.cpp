// imapstage export: the command line of the export engine.
#include <chrono>
#include <cstdio>
#include <optional>

#include <fmt/format.h>

#include "batch/batch_display.h"
#include "batch/batch_jobs.h"
#include "batch/budget.h"
#include "common/message_filter.h"
#include "archive-format/keys.h"
#include "cli/commands.h"
#include "cli/display.h"
#include "cli/server_options.h"
#include "common/message_filter.h"
#include "export/exporter.h"
#include "export/source_export.h"
#include "pop3/pop3_source.h"
#include "sources/file_sources.h"

namespace imapstage::cli {

namespace {

struct ExportArgs {
  std::string archive;
  ServerOptions server;
  ProfileOptions profile;
  BatchOptions batch;
  std::string account_name;
  std::string source;    // --source KIND:PATH (a file source instead of an IMAP server)
  bool delete_after_verify = false;  // POP3: DELE what the archive holds durably, after re-hashing it
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  bool allow_unmatched = false;
  std::vector<std::string> namespaces;
  std::optional<int> connections;
  double commit_interval = 2.0;
  std::string since, before, larger, smaller;
  uint64_t max_errors = 0;
  std::string max_bandwidth;
  double max_messages_per_second = 0;
  bool dry_run = false;
  bool encrypt = false;  // --encrypt: a new archive is created encrypted
  bool json = false;
  std::string log_file;  // --log-file: JSON events appended here too
  int verbosity = 0;
};

std::vector<imap::Namespace::Kind> namespace_kinds(const std::vector<std::string>& names) {
  if (names.empty()) return {imap::Namespace::personal};
  std::vector<imap::Namespace::Kind> kinds;
  for (auto& n : names)
    kinds.push_back(n == "other" ? imap::Namespace::other_users
                                 : n == "shared" ? imap::Namespace::shared : imap::Namespace::personal);
  return kinds;
}

// The selection, error and rate policies given on the command line.
exporting::ExportPolicy export_policy(const ExportArgs& args) {
  exporting::ExportPolicy policy;
  if (!args.since.empty()) policy.filter.since = parse_day(args.since);
  if (!args.before.empty()) policy.filter.before = parse_day(args.before);
  if (!args.larger.empty()) policy.filter.larger = parse_size(args.larger);
  if (!args.smaller.empty()) policy.filter.smaller = parse_size(args.smaller);
  policy.max_errors = args.max_errors;
  if (!args.max_bandwidth.empty()) {
    policy.max_bytes_per_second = double(parse_size(args.max_bandwidth));
    if (policy.max_bytes_per_second <= 0) throw Error(ErrorKind::usage, "--max-bandwidth must be above 0");
  }
  policy.max_messages_per_second = args.max_messages_per_second;
  return policy;
}

void print_summary(const exporting::ExportSummary& s) {
  std::FILE* out = stdout;
  say(out, "{} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7}\n", pad("folder", 40), "server", "new", "fetched", "flags",
      "expunged", "failed");
  for (auto& f : s.folders) {
    std::string status = f.error.empty() ? "" : "  ERROR: " + f.error;
    if (f.noselect) status = "  (\\Noselect)";
    if (s.dry_run) {
      if (f.gmail_linked && status.empty()) status = fmt::format("  ({} linked to All Mail)", f.gmail_linked);
      say(out, "{} {:>9} {:>9} {:>9}{}\n", pad(printable(f.name), 40), f.server_messages, f.to_fetch,
          human_bytes(double(f.to_fetch_bytes)), status);
      continue;
    }
    say(out, "{} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7}{}\n", pad(printable(f.name), 40), f.server_messages,
        f.new_messages, human_bytes(double(f.bytes_fetched)), f.flags_updated, f.expunged, f.failed_uids.size(),
        status);
  }
  using R = exporting::FolderResult;
  if (s.dry_run) {
    uint64_t linked = s.total(&R::gmail_linked);
    say(out, "\nwould fetch {} messages, {}, from {} folders of {}{} (nothing written)\n", s.total(&R::to_fetch),
        human_bytes(double(s.total(&R::to_fetch_bytes))), s.folders.size(), s.account,
        linked ? fmt::format(", and link {} label copies to their bodies from All Mail", linked) : "");
    return;
  }
  say(out,
      "\n{}: {} folders, {} new messages, {} fetched, {} stored, {} saved by dedupe, {} flag changes, {} expunged, "
      "in {}",
      s.account, s.folders.size(), s.total(&R::new_messages), human_bytes(double(s.total(&R::bytes_fetched))),
      human_bytes(double(s.total(&R::bytes_stored))), human_bytes(double(s.total(&R::bytes_deduplicated))),
      s.total(&R::flags_updated), s.total(&R::expunged), human_duration(s.seconds));
  if (s.reconnects) say(out, ", {} reconnects", s.reconnects);
  say(out, "\n");
  if (!s.policy.filter.empty())
    say(out, "selection {}: {} messages on the server left out by it\n", s.policy.filter.describe(),
        s.total(&R::filtered_out));
  size_t anomalies = 0;
  for (auto& f : s.folders) anomalies += f.anomalies.size();
  if (anomalies) {
    say(out, "{} messages archived with what the server sent corrected:\n", anomalies);
    for (auto& f : s.folders)
      for (auto& [uid, what] : f.anomalies) say(out, "  folder {}, UID {}: {}\n", f.name, uid, what);
  }
  if (!s.complete()) {
    say(out, "INCOMPLETE: {} messages not archived, {} folders failed:\n", s.failed_messages(), s.failed_folders());
    for (auto& f : s.folders) {
      if (!f.error.empty()) say(out, "  folder {}: {}\n", f.name, f.error);
      for (auto uid : f.failed_uids) {
        auto why = f.refused.find(uid);
        say(out, "  folder {}, UID {}: {}\n", f.name, uid,
            why == f.refused.end() ? std::string("not delivered by the server") : why->second);
      }
      for (auto& [where, why] : f.failed_items) say(out, "  folder {}, {}: {}\n", f.name, printable(where), why);
    }
  }
}

void print_batch_report(const batch::BatchReport& report, const std::string& accounts_file) {
  auto& r = report.result;
  std::printf("\nexport batch%s: %zu accounts, %zu done now, %zu failed, %zu done earlier",
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

// Exports `source` (any sources::Source) through the generic export with
// the command line's archive, folder, output and limit options.
void run_source_export_command(const ExportArgs& args, const exporting::ExportPolicy& policy, sources::Source& source,
                               int& status) {
  exporting::SourceExportOptions options;
  options.filter = policy.filter;
  options.max_errors = policy.max_errors;
  options.archive_dir = args.archive;
  options.account_name = args.account_name;
  options.include = args.include;
  options.exclude = args.exclude;
  options.allow_unmatched = args.allow_unmatched;
  options.dry_run = args.dry_run;
  options.max_message_size = args.server.max_message_mib << 20;
  options.commit_interval = std::chrono::milliseconds(static_cast<int64_t>(args.commit_interval * 1000));
  CommandSink<TerminalSink> out(args.json, args.verbosity, args.log_file);
  auto summary = exporting::run_source_export(options, source, *out.sink);
  if (out.terminal) {
    out.terminal->finish();
    print_summary(summary);
  }
  status = summary.complete() ? kExitOk : kExitIncomplete;
}

// export --source KIND:PATH: a Maildir, mbox or EML directory.
void run_file_source_export(const ExportArgs& args, const exporting::ExportPolicy& policy, int& status) {
  if (!args.server.host.empty() || !args.server.user.empty() || !args.batch.accounts.empty() || args.connections ||
      !args.namespaces.empty() || !args.profile.profile.empty())
    throw Error(ErrorKind::usage, "--source reads local files: --host, --user, --accounts, --source-profile, "
                                  "--connections and --namespaces do not apply");
  if (args.account_name.empty())
    throw Error(ErrorKind::usage, "--source needs --account NAME: the name the mail is archived under");
  auto source = sources::open_file_source(args.source);
  run_source_export_command(args, policy, *source, status);
}

void print_deletions(const pop3::DeleteResult& d, const std::string& account) {
  if (d.no_uidl) {
    say(stdout, "{}: the server has no UIDL: nothing deleted\n", account);
    return;
  }
  say(stdout, "{}: deleted {} messages from the server after checking their archived copies", account, d.deleted);
  if (d.not_archived) say(stdout, ", {} not archived kept", d.not_archived);
  if (d.failed_check) say(stdout, ", {} KEPT because their archived copy failed its check", d.failed_check);
  say(stdout, "\n");
}

// export --protocol pop3: one account's POP3 maildrop through the generic export.
void run_pop3_export(const ExportArgs& args, const exporting::ExportPolicy& policy, const batch::Profile& profile,
                     const std::vector<std::string>& warnings, int& status) {
  if (!args.namespaces.empty() || args.connections)
    throw Error(ErrorKind::usage, "--protocol pop3: --namespaces and --connections do not apply (one maildrop, one "
                                  "connection)");
  auto login = make_account_login(profile, args.server.user);
  pop3::Endpoint endpoint = profile.pop3_endpoint();
  pop3::Credentials credentials = batch::pop3_credentials(login.credentials);
  exporting::SourceExportOptions options;
  options.archive_dir = args.archive;
  options.account_name = args.account_name.empty() ? login.mailbox + "@" + endpoint.host : args.account_name;
  options.include = args.include;
  options.exclude = args.exclude;
  options.allow_unmatched = args.allow_unmatched;
  options.dry_run = args.dry_run;
  options.max_message_size = endpoint.max_message_size;
  options.commit_interval = std::chrono::milliseconds(static_cast<int64_t>(args.commit_interval * 1000));
  options.filter = policy.filter;
  options.max_errors = policy.max_errors;
  // The rate caps pace the RETR commands, as they pace the IMAP export's FETCHes.
  RateLimiter limiter(policy.max_bytes_per_second, policy.max_messages_per_second);
  pop3::Pacing pacing;
  if (limiter.limited()) {
    pacing.acquire = [&limiter](uint64_t bytes, uint64_t messages) { limiter.acquire(bytes, messages); };
    pacing.group_messages = limiter.messages_per_send();
    pacing.group_bytes = limiter.bytes_per_send();
  }
  auto source = pop3::open_source(endpoint, credentials, 16, pacing);
  CommandSink<TerminalSink> out(args.json, args.verbosity, args.log_file);
  for (auto& w : warnings) out.sink->emit({{"event", "warning"}, {"text", w}});
  // The daily budget (--daily-budget, or the profile's), as for IMAP: the account stops after the
  // message that spent it (exit 6), a later run continues.
  uint64_t budget = args.server.daily_budget.empty() ? profile.budget(false) : parse_size(args.server.daily_budget);
  std::optional<batch::BudgetStore> budgets;
  if (budget && !options.dry_run) {
    budgets.emplace(options.archive_dir);
    budgets->check("export " + options.account_name, budget);
    options.after_message = [&budgets, budget, key = "export " + options.account_name](uint64_t bytes) {
      budgets->charge(key, bytes, budget);
    };
  }
  exporting::ExportSummary summary;
  try {
    summary = exporting::run_source_export(options, *source, *out.sink);
  } catch (const Error& e) {
    throw batch::describe_login_error(e, options.account_name, login);
  }
  source.reset();  // its connection ends before the deleting one begins
  std::optional<pop3::DeleteResult> deleted;
  if (args.delete_after_verify && !args.dry_run) {
    // After the export's last commit: the archive is read back from disk.
    auto archive = archive::Archive::open(args.archive, archive::Archive::Mode::read);
    deleted = pop3::delete_archived(endpoint, credentials, *archive, options.account_name, *out.sink);
    out.sink->emit({{"event", "pop3_deleted"}, {"account", options.account_name}, {"deleted", deleted->deleted},
                    {"kept_not_archived", deleted->not_archived}, {"kept_failed_check", deleted->failed_check},
                    {"no_uidl", deleted->no_uidl}});
  }
  if (out.terminal) {
    out.terminal->finish();
    print_summary(summary);
    if (deleted) print_deletions(*deleted, options.account_name);
  }
  status = summary.complete() && (!deleted || deleted->failed_check == 0) ? kExitOk : kExitIncomplete;
}

}  // namespace

void add_export_command(CLI::App& app, int& status) {
  auto args = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand("export", "Pull every folder of an IMAP account into the archive (incremental)");
  cmd->add_option("--archive", args->archive, "Archive directory (created if missing)")->required();
  add_server_options(cmd, args->server, false);
  add_profile_options(cmd, args->profile, "--source-profile");
  add_batch_options(cmd, args->batch);
  cmd->add_option("--account-name,--account", args->account_name,
                  "Name of the account in the archive (default USER@HOST; required with --source)");
  cmd->add_option("--source", args->source,
                  "Read local files instead of an IMAP server: maildir:PATH (Maildir++ or nested), mbox:PATH (an "
                  "mbox file, or a directory of them) or eml:PATH (a directory of .eml files, subdirectories are "
                  "folders); read-only; needs --account");
  cmd->add_option("--protocol", args->server.protocol,
                  "imap (default) or pop3: the server's INBOX over POP3 (messages keyed by UIDL; ports 995 / 110 "
                  "with --tls starttls for STLS); also `protocol` in a profile")
      ->check(CLI::IsMember({"imap", "pop3"}))
      ->group("Server");
  cmd->add_flag("--delete-after-verify", args->delete_after_verify,
                "POP3 only: after the export has committed, DELE from the server each message whose archived copy "
                "reads back and re-hashes (never otherwise; messages not archived stay)");
  cmd->add_option("--folder", args->include,
                  "Only folders matching this glob (repeatable), e.g. 'INBOX' or 'Projects/*': names as imapstage shows "
                  "them, levels joined with '/', without the server's prefix (Cyrus 'INBOX.Projects.X' is 'Projects/X')");
  cmd->add_option("--exclude", args->exclude, "Skip folders matching this glob (repeatable)");
  cmd->add_flag("--allow-unmatched", args->allow_unmatched,
                "A --folder pattern that matches no folder is a warning, not an error (batches)");
  cmd->add_option("--namespaces", args->namespaces,
                  "Namespaces to export, comma-separated: personal (default), other (other users' folders the "
                  "login can read), shared; archived as separate trees that import never merges into the user's own")
      ->delimiter(',')
      ->check(CLI::IsMember({"personal", "other", "shared"}));
  cmd->add_option("--connections", args->connections,
                  "Connections to the server, each exporting whole folders side by side (default 2, or 4 "
                  "when a round trip takes 5 ms or more; batches use one per account and run accounts side by side "
                  "instead)")
      ->check(CLI::Range(1, 8));
  cmd->add_option("--commit-interval", args->commit_interval,
                  "Seconds between commits (each makes what was fetched durable with an fsync; a crash or kill "
                  "loses at most this much work, fetched again by the next run; default 2)")
      ->check(CLI::Range(0.01, 3600.0));
  cmd->add_option("--since", args->since,
                  "Only messages with INTERNALDATE on or after this day (YYYY-MM-DD, UTC); chosen by UID SEARCH on "
                  "the server, checked on each message (POP3 and --source: the date the message is archived with, "
                  "from the file or its headers). A later run with another selection, or none, fetches what it "
                  "adds, also below what was fetched before");
  cmd->add_option("--before", args->before, "Only messages with INTERNALDATE before this day (YYYY-MM-DD, UTC)");
  cmd->add_option("--larger", args->larger, "Only messages larger than this (e.g. 100k, 50MB)");
  cmd->add_option("--smaller", args->smaller, "Only messages smaller than this (e.g. 50MB)");
  cmd->add_option("--max-errors", args->max_errors,
                  "Stop the account once this many messages have failed (what was fetched is archived; a batch marks "
                  "the account as error and goes on with the others; default: never)");
  cmd->add_option("--max-bandwidth", args->max_bandwidth,
                  "Fetch at most this many message bytes per second per account, every connection together (e.g. "
                  "2MB; default: no cap)");
  cmd->add_option("--max-messages-per-second", args->max_messages_per_second,
                  "Fetch at most this many messages per second per account (default: no cap)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--encrypt", args->encrypt,
                "Create the archive encrypted when it does not exist yet (as imapstage init --encrypt; an existing "
                "archive must already be encrypted)");
  cmd->add_flag("--dry-run", args->dry_run, "Show the folders, message counts and sizes that would be fetched; write nothing");
  cmd->add_flag("--json", args->json, "Write JSON-lines events on stdout instead of the terminal display");
  cmd->add_option("--log-file", args->log_file,
                  "Also append every event as a JSON line to this file (what --json writes), whatever is shown");
  cmd->add_flag("-v,--verbose", [args](int64_t n) { args->verbosity = static_cast<int>(n); }, "More detail");
  cmd->add_flag("-q,--quiet", [args](int64_t) { args->verbosity = -1; }, "Only errors and the summary");
  cmd->callback([args, cmd, &status] {
    auto policy = export_policy(*args);
    if (args->encrypt && !args->dry_run) {
      std::error_code ec;
      if (!std::filesystem::exists(std::filesystem::path(args->archive) / "FORMAT", ec))
        create_encrypted_archive(args->archive, archive::ScryptParams{}.log_n);
      else if (!archive::has_key_file(args->archive))
        throw Error(ErrorKind::usage,
                    "--encrypt: the archive exists and is not encrypted (encryption is chosen when one is created)",
                    Retry::never, {.file = args->archive});
    }
    if (!args->source.empty()) {
      if (policy.max_bytes_per_second > 0 || policy.max_messages_per_second > 0)
        throw Error(ErrorKind::usage, "--max-bandwidth and --max-messages-per-second pace a server; --source reads "
                                      "local files");
      run_file_source_export(*args, policy, status);
      return;
    }
    std::vector<std::string> warnings;
    auto routing = make_routing(cmd, args->server, args->profile, warnings);

    if (!args->batch.accounts.empty()) {
      if (!args->server.user.empty() || !args->account_name.empty() || args->dry_run || args->connections)
        throw Error(ErrorKind::usage,
                    "--accounts runs a batch: --user, --account-name, --connections and --dry-run do not apply");
      batch::ExportBatchOptions options;
      options.archive_dir = args->archive;
      options.accounts_file = args->batch.accounts;
      options.routing = std::move(routing);
      options.include = args->include;
      options.exclude = args->exclude;
      options.allow_unmatched = args->allow_unmatched;
      options.namespaces = namespace_kinds(args->namespaces);
      options.delete_after_verify = args->delete_after_verify;
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
      auto report = batch::run_export_batch(options, *sink);
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
    if (profile.protocol == "pop3") {
      run_pop3_export(*args, policy, profile, warnings, status);
      return;
    }
    if (args->delete_after_verify)
      throw Error(ErrorKind::usage, "--delete-after-verify is for POP3 sources (--protocol pop3); an IMAP export "
                                    "never changes the source");
    auto login = make_account_login(profile, args->server.user);
    exporting::ExportOptions options;
    options.archive_dir = args->archive;
    options.endpoint = profile.endpoint();
    options.credentials = login.credentials;
    options.account_name =
        args->account_name.empty() ? login.mailbox + "@" + options.endpoint.host : args->account_name;
    options.include = args->include;
    options.exclude = args->exclude;
    options.allow_unmatched = args->allow_unmatched;
    options.namespaces = namespace_kinds(args->namespaces);
    options.dry_run = args->dry_run;
    options.policy = policy;
    options.connections = args->connections.value_or(0);  // two, four on a slow link
    options.commit_interval = std::chrono::milliseconds(static_cast<int64_t>(args->commit_interval * 1000));

    CommandSink<TerminalSink> out(args->json, args->verbosity, args->log_file);
    auto& sink = out.sink;
    auto* terminal = out.terminal;
    for (auto& w : warnings) sink->emit({{"event", "warning"}, {"text", w}});
    options.retry = make_retry_policy(args->server, *sink, options.account_name);
    // The daily budget (--daily-budget, or the provider's), kept in the archive directory.
    batch::BatchLimits limits;
    if (!args->server.daily_budget.empty()) limits.daily_budget = parse_size(args->server.daily_budget);
    uint64_t budget = limits.budget(profile, false);
    std::optional<batch::BudgetStore> budgets;
    auto open_budgets = [&]() -> batch::BudgetStore& {
      if (!budgets) budgets.emplace(options.archive_dir);
      return *budgets;
    };
    std::string budget_key = "export " + options.account_name;
    if (budget && !options.dry_run) open_budgets().check(budget_key, budget);
    if (!options.dry_run) {
      options.after_message = [&budgets, &budget, &budget_key](uint64_t bytes) {
        if (budget) budgets->charge(budget_key, bytes, budget);
      };
      // A server that turns out to be Gmail (X-GM-EXT-1) gets its budget unless one was chosen.
      options.on_provider = [&](const std::string& provider) {
        return limits.adopt_detected_budget(profile, false, provider, budget, open_budgets, budget_key);
      };
    }
    exporting::ExportSummary summary;
    try {
      summary = exporting::run_export(options, *sink);
    } catch (const Error& e) {
      throw batch::describe_login_error(e, options.account_name, login);
    }
    if (terminal) {
      terminal->finish();
      print_summary(summary);
    }
    status = summary.complete() ? kExitOk : kExitIncomplete;
  });
}

}  // namespace imapstage::cli

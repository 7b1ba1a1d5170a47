#include <algorithm>

#include <fmt/format.h>

#include "archive-format/archive.h"
#include "batch/batch_jobs.h"

#include "batch/budget.h"
#include "common/error.h"
#include "export/exporter.h"
#include "export/source_export.h"
#include "pop3/pop3_source.h"

namespace imapstage::batch {

Error describe_login_error(const Error& e, const std::string& account, const AccountLogin& login) {
  if (e.kind() != ErrorKind::auth) return e;
  return Error(ErrorKind::auth, fmt::format("login refused for {} ({}): {}", account, login.describe, e.message()),
               e.retry(), e.where());
}

namespace {

void emit_refused(EventSink& events, const std::string& file, const LineError& error) {
  events.emit({{"event", "line_error"}, {"line", error.line}, {"file", file}, {"error", error.message},
               {"text", fmt::format("{} line {}: {}", file, error.line, error.message)}});
}

struct ExportJob {
  const Profile* profile = nullptr;
  AccountLine line;
};

}  // namespace

void take_shard(AccountsFile& file, const Shard& shard, const std::filesystem::path& archive, EventSink& events) {
  if (!shard.sharded()) return;
  size_t all = file.accounts.size();
  std::erase_if(file.accounts,
                [&](const AccountLine& line) { return shard_of(line.source_user, shard.count) != shard.index; });
  events.emit({{"event", "shard"}, {"shard", shard.index}, {"shards", shard.count}, {"origin", shard.origin},
               {"accounts", file.accounts.size()}, {"accounts_in_file", all}, {"archive", archive.string()},
               {"text", fmt::format("shard {} ({}): {} of the {} accounts in the file, into {}", shard.describe(),
                                    shard.origin, file.accounts.size(), all, archive.string())}});
}

BatchReport run_export_batch(const ExportBatchOptions& options, EventSink& events) {
  BatchReport report;
  AccountsFile file = read_accounts(options.accounts_file);
  take_shard(file, options.shard, options.archive_dir, events);
  report.refused = file.errors;
  std::string file_name = options.accounts_file.string();

  std::vector<BatchItem> items;
  std::map<std::string, ExportJob> jobs;
  std::map<std::string, size_t> first_line;
  for (auto& line : file.accounts) {
    try {
      const Profile& profile = options.routing.route(line.source_user);
      if (line.source_password.empty() && !profile.supplies_secret())
        throw Error(ErrorKind::usage, fmt::format("account {}: no password in the file, and profile {} has "
                                                  "no admin, master or magic credentials",
                                                  line.source_user, profile.name.empty() ? "(command line)" : profile.name));
      auto endpoint = profile.endpoint();
      if (options.delete_after_verify && profile.protocol != "pop3")
        throw Error(ErrorKind::usage, fmt::format("account {}: --delete-after-verify is for POP3 sources, and its "
                                                  "profile is IMAP", line.source_user));
      std::string account = line.source_user + "@" + endpoint.host;
      if (auto it = first_line.find(account); it != first_line.end())
        throw Error(ErrorKind::usage, fmt::format("account {} is already on line {}", account, it->second));
      first_line[account] = line.line;
      BatchItem item{account, account, profile.address(), "", line.line};
      items.push_back(item);
      jobs[account] = {&profile, line};
    } catch (const Error& e) {
      report.refused.push_back({line.line, e.message()});
    }
  }
  std::sort(report.refused.begin(), report.refused.end(),
            [](const LineError& a, const LineError& b) { return a.line < b.line; });
  for (auto& r : report.refused) emit_refused(events, file_name, r);

  // The lock first: a second writer is refused before the state is touched.
  auto archive = archive::Archive::open(options.archive_dir, archive::Archive::Mode::create);
  BudgetStore budgets(options.archive_dir);
  ServerLimiters limiters;

  report.result = run_batch(
      "export", state_path(options.archive_dir, "export"), items, options.runner, events,
      [&](const BatchItem& item, const std::function<bool()>& cancelled) {
        const ExportJob& job = jobs.at(item.key);
        AccountLogin login = make_login(*job.profile, job.line.source_user, job.line.source_password);
        using R = exporting::FolderResult;
        if (job.profile->protocol == "pop3") {
          auto endpoint = job.profile->pop3_endpoint();
          auto credentials = pop3_credentials(login.credentials);
          exporting::SourceExportOptions o;
          o.archive_dir = options.archive_dir;
          o.account_name = item.account;
          o.include = options.include;
          o.exclude = options.exclude;
          o.allow_unmatched = options.allow_unmatched;
          o.max_message_size = endpoint.max_message_size;
          o.retry = options.retry;
          o.cancelled = cancelled;
          o.filter = options.policy.filter;
          o.max_errors = options.policy.max_errors;
          // Budget and caps as for an IMAP account: the RETRs are paced by the account's and the
          // server's caps, each message archived is counted against the daily budget.
          uint64_t budget = options.limits.budget(*job.profile, false);
          std::string budget_key = "export " + item.account;
          budgets.check(budget_key, budget);  // spent: parked before logging in
          auto server_limiter = options.limits.server_limiter(limiters, item.server, *job.profile);
          auto account_limiter = std::make_shared<RateLimiter>(options.policy.max_bytes_per_second,
                                                               options.policy.max_messages_per_second);
          pop3::Pacing pacing;
          if (server_limiter || account_limiter->limited()) {
            pacing.acquire = [server_limiter, account_limiter](uint64_t bytes, uint64_t messages) {
              account_limiter->acquire(bytes, messages);
              if (server_limiter) server_limiter->acquire(bytes, messages);
            };
            pacing.group_messages = account_limiter->messages_per_send();
            pacing.group_bytes = account_limiter->bytes_per_send();
            if (server_limiter) {
              pacing.group_messages = std::min(pacing.group_messages, server_limiter->messages_per_send());
              pacing.group_bytes = std::min(pacing.group_bytes, server_limiter->bytes_per_send());
            }
          }
          if (budget)
            o.after_message = [&, budget, budget_key](uint64_t bytes) { budgets.charge(budget_key, bytes, budget); };
          ItemOutcome outcome;
          try {
            auto source = pop3::open_source(endpoint, credentials, 16, pacing);
            auto summary = exporting::export_source(*archive, o, *source, events);
            source.reset();
            outcome.messages = summary.total(&R::new_messages);
            outcome.bytes = summary.total(&R::bytes_fetched);
            outcome.complete = summary.complete();
            if (!outcome.complete)
              outcome.incomplete = fmt::format("{} messages not delivered, {} folders failed",
                                               summary.failed_messages(), summary.failed_folders());
            if (options.delete_after_verify) {
              auto d = pop3::delete_archived(endpoint, credentials, *archive, item.account, events);
              events.emit({{"event", "pop3_deleted"}, {"account", item.account}, {"deleted", d.deleted},
                           {"kept_not_archived", d.not_archived}, {"kept_failed_check", d.failed_check},
                           {"no_uidl", d.no_uidl}});
              if (d.failed_check) {
                outcome.complete = false;
                outcome.incomplete = fmt::format("{} messages kept on the server: their archived copy failed its check",
                                                 d.failed_check);
              }
            }
          } catch (const Error& e) {
            throw describe_login_error(e, item.account, login).with({.account = item.account, .server = item.server});
          }
          return outcome;
        }
        exporting::ExportOptions o;
        o.archive_dir = options.archive_dir;
        o.endpoint = job.profile->endpoint();
        o.credentials = login.credentials;
        o.account_name = item.account;
        o.include = options.include;
        o.exclude = options.exclude;
        o.allow_unmatched = options.allow_unmatched;
        o.namespaces = options.namespaces;
        o.policy = options.policy;
        o.retry = options.retry;
        o.cancelled = cancelled;
        uint64_t budget = options.limits.budget(*job.profile, false);
        std::string budget_key = "export " + item.account;
        budgets.check(budget_key, budget);  // spent: parked before logging in
        auto limiter = options.limits.server_limiter(limiters, item.server, *job.profile);
        o.after_message = [&, limiter, budget_key](uint64_t bytes) {
          if (limiter) limiter->acquire(bytes, 1);
          budgets.charge(budget_key, bytes, budget);
        };
        // A server that turns out to be Gmail gets its budget unless one was chosen.
        o.on_provider = [&](const std::string& provider) {
          return options.limits.adopt_detected_budget(
              *job.profile, false, provider, budget, [&]() -> batch::BudgetStore& { return budgets; }, budget_key);
        };
        exporting::ExportSummary summary;
        try {
          summary = exporting::export_account(*archive, o, events);
        } catch (const Error& e) {
          throw describe_login_error(e, item.account, login).with({.account = item.account, .server = item.server});
        }
        ItemOutcome outcome;
        outcome.messages = summary.total(&R::new_messages);
        outcome.bytes = summary.total(&R::bytes_fetched);
        outcome.complete = summary.complete();
        if (!outcome.complete)
          outcome.incomplete = fmt::format("{} messages not delivered, {} folders failed", summary.failed_messages(),
                                           summary.failed_folders());
        return outcome;
      });
  return report;
}

}  // namespace imapstage::batch

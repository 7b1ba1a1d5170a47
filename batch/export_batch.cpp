#include <fmt/format.h>

#include "archive-format/archive.h"
#include "batch/batch_jobs.h"
#include "common/error.h"
#include "export/exporter.h"

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

BatchReport run_export_batch(const ExportBatchOptions& options, EventSink& events) {
  BatchReport report;
  AccountsFile file = read_accounts(options.accounts_file);
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
      std::string account = line.source_user + "@" + endpoint.host;
      if (auto it = first_line.find(account); it != first_line.end())
        throw Error(ErrorKind::usage, fmt::format("account {} is already on line {}", account, it->second));
      first_line[account] = line.line;
      BatchItem item{account, account, endpoint.address(), "", line.line};
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

  report.result = run_batch(
      "export", state_path(options.archive_dir, "export"), items, options.runner, events,
      [&](const BatchItem& item, const std::function<bool()>& cancelled) {
        const ExportJob& job = jobs.at(item.key);
        AccountLogin login = make_login(*job.profile, job.line.source_user, job.line.source_password);
        exporting::ExportOptions o;
        o.archive_dir = options.archive_dir;
        o.endpoint = job.profile->endpoint();
        o.credentials = login.credentials;
        o.account_name = item.account;
        o.include = options.include;
        o.exclude = options.exclude;
        o.allow_unmatched = options.allow_unmatched;
        o.namespaces = options.namespaces;
        o.retry = options.retry;
        o.cancelled = cancelled;
        exporting::ExportSummary summary;
        try {
          summary = exporting::export_account(*archive, o, events);
        } catch (const Error& e) {
          throw describe_login_error(e, item.account, login).with({.account = item.account, .server = item.server});
        }
        using R = exporting::FolderResult;
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

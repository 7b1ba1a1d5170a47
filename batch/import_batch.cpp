#include <fmt/format.h>

#include "archive-format/archive.h"
#include "batch/batch_jobs.h"

#include "batch/budget.h"
#include "common/error.h"
#include "import/importer.h"

namespace imapstage::batch {

namespace {

struct ImportJob {
  const Profile* profile = nullptr;
  AccountLine line;
  std::string account;
};

// The archived account for a source user: an exact name, or the only USER@HOST.
std::string find_archived(const std::vector<archive::AccountRecord>& accounts, const std::string& user) {
  std::vector<std::string> candidates;
  for (auto& a : accounts) {
    if (a.name == user) return a.name;
    if (a.name.size() > user.size() + 1 && a.name.compare(0, user.size(), user) == 0 && a.name[user.size()] == '@' &&
        a.name.find('@', user.size() + 1) == std::string::npos)
      candidates.push_back(a.name);
  }
  if (candidates.size() == 1) return candidates[0];
  if (candidates.empty()) throw Error(ErrorKind::not_found, fmt::format("the archive has no account {}", user));
  std::string list;
  for (auto& c : candidates) list += (list.empty() ? "" : ", ") + c;
  throw Error(ErrorKind::usage, fmt::format("{} is ambiguous in the archive ({}): give the full name", user, list));
}

}  // namespace

BatchReport run_import_batch(const ImportBatchOptions& options, EventSink& events) {
  BatchReport report;
  AccountsFile file = read_accounts(options.accounts_file);
  take_shard(file, options.shard, options.archive_dir, events);
  report.refused = file.errors;
  std::string file_name = options.accounts_file.string();

  auto archive = archive::Archive::open(options.archive_dir, archive::Archive::Mode::write);
  auto archived = archive->accounts();

  std::vector<BatchItem> items;
  std::map<std::string, ImportJob> jobs;
  std::map<std::string, size_t> first_line;
  for (auto& line : file.accounts) {
    try {
      std::string account = find_archived(archived, line.source_user);
      const Profile& profile = options.routing.route(line.target_user);
      if (line.target_password.empty() && !profile.supplies_secret())
        throw Error(ErrorKind::usage, fmt::format("target {}: no password in the file, and profile {} has no "
                                                  "admin, master or magic credentials",
                                                  line.target_user, profile.name.empty() ? "(command line)" : profile.name));
      auto endpoint = profile.endpoint();
      std::string target = line.target_user + "@" + endpoint.address();
      std::string key = account + " -> " + target;
      if (auto it = first_line.find(key); it != first_line.end())
        throw Error(ErrorKind::usage, fmt::format("{} is already on line {}", key, it->second));
      first_line[key] = line.line;
      items.push_back({key, account, endpoint.address(), target, line.line});
      jobs[key] = {&profile, line, account};
    } catch (const Error& e) {
      report.refused.push_back({line.line, e.message()});
    }
  }
  std::sort(report.refused.begin(), report.refused.end(),
            [](const LineError& a, const LineError& b) { return a.line < b.line; });
  for (auto& r : report.refused)
    events.emit({{"event", "line_error"}, {"line", r.line}, {"file", file_name}, {"error", r.message},
                 {"text", fmt::format("{} line {}: {}", file_name, r.line, r.message)}});

  BudgetStore budgets(options.archive_dir);
  ServerLimiters limiters;
  report.result = run_batch(
      "import", state_path(options.archive_dir, "import"), items, options.runner, events,
      [&](const BatchItem& item, const std::function<bool()>& cancelled) {
        const ImportJob& job = jobs.at(item.key);
        AccountLogin login = make_login(*job.profile, job.line.target_user, job.line.target_password);
        importing::ImportOptions o;
        o.archive_dir = options.archive_dir;
        o.endpoint = job.profile->endpoint();
        o.credentials = login.credentials;
        o.account = job.account;
        o.target_name = item.target;
        o.map = options.map;
        o.include = options.include;
        o.exclude = options.exclude;
        o.sync_expunges = options.sync_expunges;
        o.policy = options.policy;
        o.policy.restore_flagged = options.policy.restore_flagged || job.profile->restore_flagged;
        o.policy.names = {job.profile->case_insensitive_names, job.profile->reserved_folders};
        o.retry = options.retry;
        o.cancelled = cancelled;
        uint64_t budget = options.limits.budget(*job.profile, true);
        std::string budget_key = "import " + item.key;
        budgets.check(budget_key, budget);  // spent: parked before logging in
        auto limiter = options.limits.server_limiter(limiters, item.server, *job.profile);
        o.on_provider = [&](const std::string& provider) {
          return options.limits.adopt_detected_budget(
              *job.profile, true, provider, budget, [&]() -> batch::BudgetStore& { return budgets; }, budget_key);
        };
        o.policy.before_append = [&, limiter, budget_key](uint64_t bytes, uint64_t messages) {
          budgets.check(budget_key, budget);  // spent: nothing more is sent
          if (limiter) limiter->acquire(bytes, messages);
          budgets.charge(budget_key, bytes, budget, false);
        };
        importing::ImportSummary summary;
        try {
          summary = importing::import_account(*archive, o, events);
        } catch (const Error& e) {
          throw describe_login_error(e, item.target, login).with({.account = item.account, .server = item.server});
        }
        using R = importing::ImportFolderResult;
        ItemOutcome outcome;
        outcome.messages = summary.total(&R::appended);
        outcome.bytes = summary.total(&R::bytes_appended);
        outcome.complete = summary.complete();
        if (!outcome.complete)
          outcome.incomplete = fmt::format("{} messages failed, {} folders failed", summary.failed_messages(),
                                           summary.failed_folders());
        return outcome;
      });
  return report;
}

}  // namespace imapstage::batch

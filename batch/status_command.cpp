// imapstage status: the last export and import run of every account (from the
// archive's run history) and the per-account state of the archive's batches.
#include <signal.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <algorithm>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "archive-format/archive.h"
#include "batch/runner.h"
#include "batch/state.h"
#include "cli/commands.h"
#include "cli/display.h"
#include "common/error.h"

namespace imapstage::cli {

namespace {

struct StatusArgs {
  std::vector<std::string> archives;
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
  if ((a.status == batch::AccountStatus::throttled || a.status == batch::AccountStatus::parked) && a.resume_at)
    return fmt::format("{} until {}", batch::to_string(a.status), batch::resume_text(a.resume_at));
  return batch::to_string(a.status);
}

// Accounts of one kind of batch by status, added up over archives (the
// shards of a batch): every AccountStatus has its count.
struct Totals {
  static constexpr size_t kStatuses = static_cast<size_t>(batch::AccountStatus::parked) + 1;
  size_t archives = 0, accounts = 0;
  std::array<size_t, kStatuses> counts{};
  uint64_t messages = 0, bytes = 0;
  double seconds = 0;

  size_t of(batch::AccountStatus status) const { return counts[static_cast<size_t>(status)]; }
  void add(const batch::AccountState& a) {
    ++accounts;
    ++counts.at(static_cast<size_t>(a.status));
    messages += a.messages;
    bytes += a.bytes;
    seconds += a.seconds;
  }
  void add(const batch::BatchState& s) {
    ++archives;
    for (auto& a : s.accounts) add(a);
  }
  // "2 done, 0 error, 0 running, 0 queued, 0 throttled, 1 parked"
  std::string text() const {
    using S = batch::AccountStatus;
    return fmt::format("{} done, {} error, {} running, {} queued, {} throttled, {} parked", of(S::done),
                       of(S::error), of(S::running), of(S::queued), of(S::throttled), of(S::parked));
  }
  nlohmann::json to_json() const {
    nlohmann::json j = {{"archives", archives}, {"accounts", accounts}, {"messages", messages}, {"bytes", bytes}};
    for (size_t i = 0; i < kStatuses; ++i) j[batch::to_string(static_cast<batch::AccountStatus>(i))] = counts[i];
    return j;
  }
};

void print_table(const std::string& kind, const batch::BatchState& s, bool alive) {
  std::printf("%s batch %s (run %d time%s):\n", kind.c_str(), s.batch_id.c_str(), s.invocations,
              s.invocations == 1 ? "" : "s");
  std::printf("  %-40s %-11s %8s %9s %10s %9s  %s\n", "account", "status", "attempts", "messages", "bytes",
              "duration", "error");
  Totals t;
  for (auto& a : s.accounts) {
    t.add(a);
    std::string duration = a.status == batch::AccountStatus::queued ? "-" : human_duration(a.seconds);
    cli::say(stdout, "  {:<40} {:<11} {:>8} {:>9} {:>10} {:>9}  {}\n", a.key, shown_status(a, alive), a.attempts,
             a.messages, human_bytes(double(a.bytes)), duration, a.error);
  }
  cli::say(stdout, "  {} accounts: {}; {} messages, {}, {} of work\n", t.accounts, t.text(), t.messages,
           human_bytes(double(t.bytes)), human_duration(t.seconds));
}

// The last run of each account and direction, from the archive's history.
struct LastRun {
  archive::RunRecord run;
  std::string shown;  // ok, partial, failed, running, interrupted
  nlohmann::json details;
};

std::vector<LastRun> last_runs(const std::filesystem::path& dir, bool alive) {
  std::vector<LastRun> out;
  std::error_code ec;
  if (!std::filesystem::exists(dir / "FORMAT", ec)) return out;
  auto a = archive::Archive::open(dir, archive::Archive::Mode::read);
  std::map<std::pair<std::string, std::string>, archive::RunRecord> last;
  for (auto& r : a->runs()) {
    if (r.kind != "export" && r.kind != "import") continue;
    auto& slot = last[{r.account, r.kind}];
    if (r.id >= slot.id) slot = r;
  }
  for (auto& [key, r] : last) {
    LastRun l;
    l.run = r;
    l.shown = r.result == "running" && !alive ? "interrupted" : r.result;
    l.details = nlohmann::json::parse(r.details, nullptr, false);
    if (!l.details.is_object()) l.details = nlohmann::json::object();
    out.push_back(std::move(l));
  }
  return out;
}

uint64_t count(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

// The messages and bytes a run moved, its failures, and its first error.
struct RunCounts {
  uint64_t messages = 0, bytes = 0, failed_messages = 0, failed_folders = 0;
  std::string error;
};

RunCounts counts_of(const LastRun& l) {
  RunCounts c;
  bool export_run = l.run.kind == "export";
  c.messages = count(l.details, export_run ? "messages" : "appended");
  c.bytes = count(l.details, export_run ? "bytes_fetched" : "bytes_appended");
  c.failed_messages = count(l.details, "failed_messages");
  c.failed_folders = count(l.details, "failed_folders");
  if (l.details.contains("error") && l.details["error"].is_string()) c.error = l.details["error"];
  if (c.error.empty() && l.details.contains("per_folder") && l.details["per_folder"].is_array())
    for (auto& f : l.details["per_folder"])
      if (f.contains("error") && f["error"].is_string()) {
        c.error = fmt::format("{}: {}", f.value("folder", std::string()), f["error"].get<std::string>());
        break;
      }
  if (c.error.empty() && l.shown == "interrupted") c.error = "the run stopped before it finished (killed or crashed)";
  return c;
}

std::string when(int64_t unix_seconds) {
  if (unix_seconds <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

void print_runs(const std::vector<LastRun>& runs) {
  std::printf("last runs:\n");
  std::printf("  %-32s %-6s %-11s %-19s %9s %9s %10s %7s  %s\n", "account", "kind", "result", "started", "duration",
              "messages", "bytes", "failed", "error");
  for (auto& l : runs) {
    auto c = counts_of(l);
    std::string duration = l.run.finished ? human_duration(double(l.run.finished - l.run.started)) : "-";
    std::printf("  %-32s %-6s %-11s %-19s %9s %9llu %10s %7llu  %s\n", l.run.account.c_str(), l.run.kind.c_str(),
                l.shown.c_str(), when(l.run.started).c_str(), duration.c_str(), (unsigned long long)c.messages,
                human_bytes(double(c.bytes)).c_str(), (unsigned long long)(c.failed_messages + c.failed_folders),
                c.error.c_str());
  }
}

nlohmann::json runs_json(const std::vector<LastRun>& runs) {
  nlohmann::json out = nlohmann::json::array();
  for (auto& l : runs) {
    auto c = counts_of(l);
    nlohmann::json j = {{"account", l.run.account},  {"kind", l.run.kind},
                        {"run_id", l.run.id},         {"result", l.run.result},
                        {"shown_status", l.shown},    {"complete", l.shown == "ok"},
                        {"started", l.run.started},   {"finished", l.run.finished},
                        {"seconds", l.run.finished ? l.run.finished - l.run.started : 0},
                        {"messages", c.messages},     {"bytes", c.bytes},
                        {"failed_messages", c.failed_messages}, {"failed_folders", c.failed_folders}};
    if (!c.error.empty()) j["error"] = c.error;
    out.push_back(std::move(j));
  }
  return out;
}

// The archives to show: each DIR given, or for a DIR that is not an archive
// but holds shard archives (DIR/shard-I-of-N, as --shard writes them), those.
std::vector<std::filesystem::path> expand_archives(const std::vector<std::string>& given) {
  std::vector<std::filesystem::path> out;
  for (auto& g : given) {
    std::filesystem::path dir = g;
    std::error_code ec;
    if (std::filesystem::exists(dir / "FORMAT", ec) || std::filesystem::exists(dir / "batches", ec)) {
      out.push_back(dir);
      continue;
    }
    std::vector<std::filesystem::path> shards;
    for (auto& e : std::filesystem::directory_iterator(dir, ec)) {
      auto name = e.path().filename().string();
      if (e.is_directory() && name.rfind("shard-", 0) == 0 && name.find("-of-") != std::string::npos)
        shards.push_back(e.path());
    }
    std::sort(shards.begin(), shards.end());
    if (shards.empty()) out.push_back(dir);
    out.insert(out.end(), shards.begin(), shards.end());
  }
  return out;
}

// The status of one archive: printed (or put into `out` as JSON); `any` and
// `all_done` as the whole command sees them; batch states added to `totals`.
void archive_status(const std::filesystem::path& dir, const StatusArgs& args, nlohmann::json& out, bool& printed,
                    bool& any, bool& all_done, std::map<std::string, Totals>& totals) {
  bool alive = writer_alive(dir);
  out = {{"event", "status"}, {"archive", dir.string()}, {"writer_running", alive}};
  bool found = false;
  for (std::string kind : {"export", "import"}) {
    if (!args.kind.empty() && args.kind != kind) continue;
    auto state = batch::load_state(batch::state_path(dir, kind));
    if (!state) continue;
    found = true;
    totals[kind].add(*state);
    all_done = all_done && !state->unfinished();
    if (args.json) {
      auto j = state->to_json();
      for (size_t i = 0; i < state->accounts.size(); ++i)
        j["accounts"][i]["shown_status"] = shown_status(state->accounts[i], alive);
      out[kind] = j;
    } else {
      if (printed) std::printf("\n");
      if (args.archives.size() > 1 || dir.string() != args.archives[0]) cli::say(stdout, "{}: ", dir.string());
      print_table(kind, *state, alive);
      printed = true;
    }
  }
  auto runs = last_runs(dir, alive);
  if (!args.kind.empty()) std::erase_if(runs, [&](const LastRun& l) { return l.run.kind != args.kind; });
  if (!runs.empty()) {
    found = true;
    for (auto& l : runs) all_done = all_done && l.shown == "ok";
    if (args.json) {
      out["runs"] = runs_json(runs);
    } else {
      if (printed) std::printf("\n");
      if (args.archives.size() > 1 || dir.string() != args.archives[0]) cli::say(stdout, "{}: ", dir.string());
      print_runs(runs);
      printed = true;
    }
  }
  any = any || found;
}

}  // namespace

void add_status_command(CLI::App& app, int& status) {
  auto args = std::make_shared<StatusArgs>();
  auto* cmd = app.add_subcommand("status", "Show the last export and import run of every account, and the accounts of the archive's batches");
  cmd->add_option("--archive", args->archives,
                  "Archive directory; repeat it (or name the directory holding shard-I-of-N archives) to add up "
                  "the shards of a batch")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--kind", args->kind, "Only this batch: export or import")
      ->check(CLI::IsMember({"export", "import"}));
  cmd->add_flag("--json", args->json, "Write one JSON object with every account instead of the table");
  cmd->callback([args, &status] {
    auto dirs = expand_archives(args->archives);
    bool any = false, all_done = true, printed = false;
    std::map<std::string, Totals> totals;
    std::vector<nlohmann::json> each;
    for (auto& dir : dirs) {
      nlohmann::json one;
      archive_status(dir, *args, one, printed, any, all_done, totals);
      each.push_back(std::move(one));
    }
    if (!any)
      throw Error(ErrorKind::not_found, "no export or import has run in this archive",
                  Retry::never, {.file = args->archives[0]});
    if (args->json) {
      if (dirs.size() == 1) {
        std::printf("%s\n", each[0].dump().c_str());
      } else {
        nlohmann::json out = {{"event", "status"}, {"archives", each}, {"total", nlohmann::json::object()}};
        for (auto& [kind, t] : totals) out["total"][kind] = t.to_json();
        std::printf("%s\n", out.dump().c_str());
      }
    } else if (dirs.size() > 1) {
      for (auto& [kind, t] : totals)
        cli::say(stdout, "\n{} batch over {} archives: {} accounts: {}; {} messages, {}\n", kind, t.archives,
                 t.accounts, t.text(), t.messages, human_bytes(double(t.bytes)));
    }
    status = all_done ? kExitOk : kExitIncomplete;
  });
}

}  // namespace imapstage::cli

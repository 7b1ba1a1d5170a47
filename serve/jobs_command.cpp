// imapstage jobs add|list|show|retry|cancel: the daemon's queue through its
// control socket (serve/control.h).
#include <ctime>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/display.h"
#include "cli/server_options.h"
#include "common/aead.h"
#include "serve/config.h"
#include "serve/control.h"

namespace imapstage::cli {

namespace {

struct JobsArgs {
  std::string config = "/etc/imapstage/serve.toml";
  std::string socket;
  bool json = false;
  std::string user;
  std::string target_user;
  std::string password_file;
  std::string password_env;
  std::string target_password_file;
  uint64_t id = 0;
};

std::filesystem::path socket_of(const JobsArgs& a) {
  if (!a.socket.empty()) return a.socket;
  return serve::load_serve_config(a.config).socket;
}

nlohmann::json call(const JobsArgs& a, nlohmann::json request) {
  auto reply = serve::control_call(socket_of(a), request, std::chrono::seconds(10));
  for (auto& [k, v] : request.items())
    if (v.is_string()) wipe(v.get_ref<std::string&>());
  if (!reply.value("ok", false)) {
    std::string kind = reply.value("kind", "usage");
    ErrorKind k = kind == "auth" ? ErrorKind::auth : kind == "not_found" ? ErrorKind::not_found : ErrorKind::usage;
    throw Error(k, "the daemon refused: " + reply.value("error", std::string("(no reason)")));
  }
  return reply;
}

std::string when(double t) {
  if (t <= 0) return "-";
  std::time_t s = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

std::string shown_status(const nlohmann::json& j) {
  std::string s = j.value("status", "");
  if (s == "running") return "running:" + j.value("phase", "");
  if (s == "waiting") return "waiting:" + j.value("waiting_for", "");
  return s;
}

void print_table(const nlohmann::json& reply) {
  auto& d = reply["daemon"];
  say(stdout, "daemon pid {}, archive {}, {} running (caps: {} jobs, {} per server, load {})\n",
      d.value("pid", 0), d.value("archive", ""), d.value("running", 0), d.value("jobs_cap", 0),
      d.value("per_server", 0), d.value("max_load", 0.0));
  if (!d.value("held", std::string()).empty()) say(stdout, "held: {}\n", d.value("held", std::string()));
  say(stdout, "  {:>5} {} {} {:>8} {:>6} {:>9} {:>10}  {}\n", "job", pad("user", 32), pad("status", 18), "attempts",
      "passes", "messages", "verify", "error");
  std::map<std::string, int> counts;
  for (auto& j : reply["jobs"]) {
    ++counts[j.value("status", "")];
    std::string verify = "-";
    if (j["verify"].is_object())
      verify = j["verify"].value("equal", false)
                   ? (j["verify"].value("deep", false) ? "equal(deep)" : "equal")
                   : fmt::format("{} diffs", j["verify"].value("differences", 0));
    say(stdout, "  {:>5} {} {} {:>8} {:>6} {:>9} {:>10}  {}\n", j.value("id", 0), pad(j.value("user", ""), 32),
        pad(shown_status(j), 18), j.value("attempts", 0), j.value("passes", 0), j.value("messages", 0), verify,
        j.value("error", ""));
  }
  say(stdout, "  {} jobs: {} done, {} running, {} queued, {} waiting, {} error, {} cancelled\n", reply["jobs"].size(),
      counts["done"], counts["running"], counts["queued"], counts["waiting"], counts["error"], counts["cancelled"]);
}

void print_job(const nlohmann::json& j) {
  say(stdout, "job {}: {} -> {} (source {}, credentials: {}, from {})\n", j.value("id", 0), j.value("user", ""),
      j.value("target_user", ""), j.value("server", ""), j.value("credentials", ""), j.value("origin", ""));
  say(stdout, "  status {}, attempts {}, passes {}\n", shown_status(j), j.value("attempts", 0), j.value("passes", 0));
  say(stdout, "  created {}, started {}, finished {}, first done {}\n", when(j.value("created", 0.0)),
      when(j.value("started", 0.0)), when(j.value("finished", 0.0)), when(j.value("first_done", 0.0)));
  if (j.value("next_run", 0.0) > 0) say(stdout, "  next run {}\n", when(j.value("next_run", 0.0)));
  say(stdout, "  latest attempt: {} messages, {}\n", j.value("messages", 0), human_bytes(j.value("bytes", 0.0)));
  if (j["verify"].is_object())
    say(stdout, "  verify --against target ({}): {}, {} messages in {} folders, {} differences\n",
        j["verify"].value("deep", false) ? "deep" : "counts",
        j["verify"].value("equal", false) ? "equal" : "DIFFERENT", j["verify"].value("messages", 0),
        j["verify"].value("folders", 0), j["verify"].value("differences", 0));
  if (!j.value("error", std::string()).empty()) say(stdout, "  error ({}): {}\n", j.value("error_kind", ""), j.value("error", ""));
}

}  // namespace

void add_jobs_command(CLI::App& app, int& status) {
  auto args = std::make_shared<JobsArgs>();
  auto* cmd = app.add_subcommand("jobs", "Add, list, show, retry or cancel the jobs of a running `imapstage serve`");
  cmd->add_option("--config", args->config, "The daemon's configuration (for its socket; default /etc/imapstage/serve.toml)");
  cmd->add_option("--socket", args->socket, "The daemon's control socket (instead of --config)");
  cmd->add_flag("--json", args->json, "The daemon's JSON answer on stdout");
  cmd->require_subcommand(1);

  auto* add = cmd->add_subcommand("add", "Queue the migration of one mailbox");
  add->add_option("user", args->user, "Mailbox on the source server")->required();
  add->add_option("--target-user", args->target_user, "Mailbox on the target server (default: the same name)");
  add->add_option("--password-file", args->password_file,
                  "The mailbox's own password (first line); without it, the source profile's admin credential");
  add->add_option("--password-env", args->password_env, "The mailbox's own password from this environment variable");
  add->add_option("--target-password-file", args->target_password_file,
                  "The user's own password on the target (first line), for a target profile with auth \"user\"");
  add->callback([args, &status] {
    nlohmann::json request = {{"op", "add"}, {"user", args->user}};
    if (!args->target_user.empty()) request["target_user"] = args->target_user;
    if (!args->password_file.empty() || !args->password_env.empty())
      request["password"] = read_secret(args->password_file, args->password_env, "");
    if (!args->target_password_file.empty())
      request["target_password"] = read_secret(args->target_password_file, "", "");
    auto reply = call(*args, request);
    for (const char* key : {"password", "target_password"})
      if (request.contains(key)) wipe(request[key].get_ref<std::string&>());
    if (args->json) say(stdout, "{}\n", reply.dump());
    else say(stdout, "job {} queued for {}\n", reply.value("job", 0), args->user);
    status = kExitOk;
  });

  auto* list = cmd->add_subcommand("list", "Every job with its state (the queue like `imapstage status` shows batches)");
  list->callback([args, &status] {
    auto reply = call(*args, {{"op", "list"}});
    if (args->json) say(stdout, "{}\n", reply.dump());
    else print_table(reply);
    status = kExitOk;
    for (auto& j : reply["jobs"])
      if (j.value("status", "") != "done") status = kExitIncomplete;
  });

  auto* show = cmd->add_subcommand("show", "One job in detail");
  show->add_option("id", args->id, "Job number")->required();
  show->callback([args, &status] {
    auto reply = call(*args, {{"op", "show"}, {"id", args->id}});
    if (args->json) say(stdout, "{}\n", reply["job"].dump());
    else print_job(reply["job"]);
    status = kExitOk;
  });

  for (const char* op : {"retry", "cancel"}) {
    auto* sub = cmd->add_subcommand(op, std::string(op) == "retry"
                                            ? "Run a finished, failed or cancelled job again"
                                            : "Cancel a job (a running one stops at its next safe point); its "
                                              "stored credential is wiped");
    sub->add_option("id", args->id, "Job number")->required();
    std::string name = op;
    sub->callback([args, name, &status] {
      auto reply = call(*args, {{"op", name}, {"id", args->id}});
      if (args->json) say(stdout, "{}\n", reply.dump());
      else say(stdout, "job {}: {}\n", args->id, shown_status(reply["job"]));
      status = kExitOk;
    });
  }
}

}  // namespace imapstage::cli

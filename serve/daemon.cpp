#include "serve/daemon.h"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>

#include <fmt/format.h>

#include "archive-format/layout.h"
#include "batch/batch_jobs.h"
#include "common/error.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "serve/progress.h"
#include "verify/compare.h"
#include "verify/manifest.h"

namespace imapstage::serve {

namespace {

using Clock = std::chrono::steady_clock;

std::set<uid_t> uids_of(const std::vector<std::string>& names, std::vector<std::string>& unknown) {
  std::set<uid_t> out;
  for (auto& n : names) {
    if (const passwd* pw = ::getpwnam(n.c_str())) out.insert(pw->pw_uid);
    else unknown.push_back(n);
  }
  return out;
}

// Forwards a job's engine events to the daemon's sink with the job's id,
// without the frequent progress events, and shows every event to `tracker`.
class JobEvents : public EventSink {
 public:
  JobEvents(EventSink& out, uint64_t id, std::string user, ProgressTracker& tracker)
      : out_(out), id_(id), user_(std::move(user)), tracker_(tracker) {}
  void emit(const nlohmann::json& event) override {
    tracker_.observe(event);
    auto name = event.value("event", "");
    if (name == "progress" || name == "totals" || name == "folder_start") return;
    nlohmann::json e = event;
    e["job"] = id_;
    e["user"] = user_;
    out_.emit(e);
  }

 private:
  EventSink& out_;
  uint64_t id_;
  std::string user_;
  ProgressTracker& tracker_;
};

// Errors a later attempt cannot fix: a refused login, a configuration or
// certificate problem, a damaged archive, a bug.
bool final_error(const std::string& kind) {
  return kind == "auth" || kind == "usage" || kind == "tls" || kind == "corrupt" || kind == "format" ||
         kind == "internal";
}

std::string hex_decode(const std::string& hex) {
  std::string out;
  if (hex.size() % 2) return "";
  for (size_t i = 0; i < hex.size(); i += 2) {
    auto v = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int a = v(hex[i]), b = v(hex[i + 1]);
    if (a < 0 || b < 0) return "";
    out += static_cast<char>(a * 16 + b);
  }
  return out;
}

}  // namespace

Daemon::Daemon(ServeConfig config, EventSink& events)
    : config_(std::move(config)), events_(events), caps_(config_.scheduler) {
  if (config_.key_file.empty()) throw Error(ErrorKind::usage, "[serve] names no key_file");
  config_.source();  // both profiles must exist
  config_.target();
  if (::mkdir(config_.state_dir.c_str(), 0711) != 0 && errno != EEXIST)
    throw_io("cannot create the state directory", config_.state_dir.string(), errno);
  ::chmod(config_.state_dir.c_str(), 0711);
  archive::make_dir_in_archive(config_.state_dir, config_.secrets_dir());
  archive::make_dir_in_archive(config_.state_dir, config_.spool_dir());
  ::chmod(config_.spool_dir().c_str(), 01733);
  vault_ = std::make_unique<Vault>(config_.state_dir, load_key(config_.key_file, true));
  archive_ = archive::Archive::open(config_.archive, archive::Archive::Mode::create);
  std::vector<std::string> unknown;
  admin_uids_ = uids_of(config_.admin_users, unknown);
  hook_uids_ = uids_of(config_.hook_users, unknown);
  for (auto& u : unknown)
    events_.emit({{"event", "warning"}, {"text", fmt::format("[serve]: no such user {}, ignored", u)}});
  queue_ = load_queue(config_.state_dir);
  started_at_ = now_seconds();
  size_t resumed = 0;
  for (auto& j : queue_.jobs) {
    if (j.status == JobStatus::queued && j.attempts > 0) ++resumed;
    if (j.status == JobStatus::cancelled || j.status == JobStatus::done) wipe_secret(j);  // a crash came between
  }
  save_queue(config_.state_dir, queue_);
  events_.emit({{"event", "daemon_start"}, {"pid", ::getpid()}, {"jobs", queue_.jobs.size()}, {"resumed", resumed},
                {"socket", config_.socket.string()}, {"archive", config_.archive.string()}, {"time", started_at_},
                {"text", fmt::format("serving {} jobs ({} resumed) on {}", queue_.jobs.size(), resumed,
                                     config_.socket.string())}});
}

Daemon::~Daemon() {
  stopping_ = true;
  for (auto& [id, r] : running_) {
    r->cancel = true;
    if (r->thread.joinable()) r->thread.join();
  }
}

void Daemon::save() { save_queue(config_.state_dir, queue_); }

bool Daemon::is_admin(const Peer& peer) const {
  return peer.uid == 0 || peer.uid == ::geteuid() || admin_uids_.count(peer.uid);
}

bool Daemon::is_hook(const Peer& peer) const { return is_admin(peer) || hook_uids_.count(peer.uid); }

Job& Daemon::add_job(const std::string& user, CredentialMode mode, const std::string& origin) {
  if (user.empty() || user.size() > 255 || user.find_first_of(std::string("\r\n\t\0 ", 5)) != std::string::npos)
    throw Error(ErrorKind::usage, "a user name must be 1-255 bytes without spaces or control characters");
  Job job;
  job.id = queue_.next_id++;
  job.user = user;
  job.target_user = user;
  job.server = config_.source().endpoint().address();
  job.credentials = mode;
  job.origin = origin;
  job.status = JobStatus::queued;
  job.created = now_seconds();
  queue_.jobs.push_back(job);
  return queue_.jobs.back();
}

void Daemon::set_secret(Job& job, const std::string& secret) {
  vault_->put(job.id, job.user, secret);
  job.has_secret = true;
  job.credentials = CredentialMode::password;
}

void Daemon::set_target_secret(Job& job, const std::string& secret) {
  vault_->put(job.id, job.user, secret, Slot::target);
  job.has_target_secret = true;
  job.target_credentials = CredentialMode::password;
}

void Daemon::wipe_secret(Job& job) {
  if (!job.has_secret && !job.has_target_secret) return;
  vault_->erase(job.id);
  job.has_secret = false;
  job.has_target_secret = false;
}

nlohmann::json Daemon::manifest(uint64_t id) {
  std::string account;
  {
    std::lock_guard lock(mutex_);
    Job* j = queue_.find(id);
    if (!j) throw Error(ErrorKind::not_found, "no such job");
    account = j->user + "@" + config_.source().endpoint().host;
  }
  verify::Manifest m = verify::compute_manifest(*archive_, nullptr, {account});
  m.archive_id = archive_->archive_id();
  return m.to_json();
}

nlohmann::json Daemon::public_job(const Job& job) const { return job.to_json(); }

nlohmann::json Daemon::summary_json() const {
  std::map<std::string, int> counts;
  for (auto& j : queue_.jobs) ++counts[to_string(j.status)];
  nlohmann::json jobs = nlohmann::json::array();
  for (auto& j : queue_.jobs) jobs.push_back(public_job(j));
  return {{"ok", true},
          {"daemon",
           {{"pid", ::getpid()},
            {"started", started_at_},
            {"archive", config_.archive.string()},
            {"running", caps_.running()},
            {"jobs_cap", caps_.jobs()},
            {"per_server", config_.scheduler.per_server},
            {"max_load", config_.scheduler.max_load},
            {"held", last_held_},
            {"counts", counts},
            {"moved_bytes", moved_bytes_},
            {"throughput", throughput_}}},
          {"jobs", jobs}};
}

nlohmann::json Daemon::handle(const nlohmann::json& request, const Peer& peer) {
  if (!request.is_object() || !request.contains("op") || !request["op"].is_string())
    throw Error(ErrorKind::usage, "a request is a JSON object with \"op\"");
  std::string op = request["op"];
  auto text = [&](const char* key) -> std::string {
    if (!request.contains(key)) return "";
    if (!request[key].is_string()) throw Error(ErrorKind::usage, fmt::format("\"{}\" must be a string", key));
    return request[key].get<std::string>();
  };
  auto id_of = [&]() -> uint64_t {
    if (!request.contains("id") || !request["id"].is_number_unsigned())
      throw Error(ErrorKind::usage, "\"id\" must be a job number");
    return request["id"].get<uint64_t>();
  };
  bool admin = is_admin(peer);
  if ((op == "login" || op == "trigger") ? !is_hook(peer) : !admin)
    throw Error(ErrorKind::auth, fmt::format("uid {} may not make the request {}", peer.uid, op));

  std::lock_guard lock(mutex_);
  if (op == "list" || op == "status") return summary_json();
  if (op == "show") {
    Job* j = queue_.find(id_of());
    if (!j) throw Error(ErrorKind::not_found, "no such job");
    return {{"ok", true}, {"job", public_job(*j)}};
  }
  if (op == "login" || op == "trigger" || op == "add" || op == "web") {
    std::string user = text("user");
    SecretString secret(op == "trigger" ? "" : text("password"));
    SecretString target_secret(op == "add" || op == "web" ? text("target_password") : "");
    const std::string& password = secret.get();
    bool hook = op != "add" && op != "web";
    Job* existing = queue_.find_user(user);
    if (existing) {
      // A job waiting for the user's password, or one whose password the
      // source refused, takes the new one and runs again.
      bool wants_password = (existing->status == JobStatus::waiting && existing->waiting_for == "password") ||
                            (existing->status == JobStatus::error && existing->error_kind == "auth");
      if (!password.empty() && wants_password) {
        set_secret(*existing, password);
        if (!target_secret.get().empty()) set_target_secret(*existing, target_secret.get());
        existing->status = JobStatus::queued;
        existing->waiting_for.clear();
        existing->attempts = 0;
        existing->error.clear();
        existing->error_kind.clear();
        save();
        events_.emit({{"event", "job_requeued"}, {"job", existing->id}, {"user", existing->user},
                      {"origin", op}, {"time", now_seconds()},
                      {"text", fmt::format("job {} ({}): the password arrived, queued", existing->id, existing->user)}});
        return {{"ok", true}, {"queued", true}, {"job", existing->id}, {"status", "queued"}};
      }
      if (!hook)
        throw Error(ErrorKind::usage, fmt::format("{} already has job {} ({}); use jobs retry {}", user, existing->id,
                                                  to_string(existing->status), existing->id));
      return {{"ok", true}, {"queued", false}, {"job", existing->id}, {"status", to_string(existing->status)}};
    }
    CredentialMode mode = password.empty() ? CredentialMode::profile : CredentialMode::password;
    if (mode == CredentialMode::profile && !config_.source().supplies_secret())
      throw Error(ErrorKind::usage, fmt::format("no password for {}, and source profile {} has no admin, master or "
                                                "magic credential",
                                                user, config_.source_profile));
    Job& job = add_job(user, mode, op == "login" ? "hook" : op);
    if ((op == "add" || op == "web") && !text("target_user").empty()) job.target_user = text("target_user");
    if (mode == CredentialMode::password) set_secret(job, password);
    if (!target_secret.get().empty()) set_target_secret(job, target_secret.get());
    save();
    events_.emit({{"event", "job_added"}, {"job", job.id}, {"user", job.user}, {"origin", job.origin},
                  {"credentials", mode == CredentialMode::password ? "password" : "profile"},
                  {"time", now_seconds()}, {"text", fmt::format("job {} ({}) queued by {}", job.id, job.user, job.origin)}});
    return {{"ok", true}, {"queued", true}, {"job", job.id}, {"status", "queued"}};
  }
  if (op == "reverify") {
    uint64_t id = id_of();
    Job* j = queue_.find(id);
    if (!j) throw Error(ErrorKind::not_found, "no such job");
    if (j->status == JobStatus::running || j->status == JobStatus::queued)
      throw Error(ErrorKind::usage, fmt::format("job {} is {}: it verifies at the end of its pass", id,
                                                to_string(j->status)));
    if (j->passes == 0 && j->first_done == 0)
      throw Error(ErrorKind::usage, fmt::format("job {} has not copied the mailbox yet: nothing to verify", id));
    if (j->target_credentials == CredentialMode::password && !j->has_target_secret)
      throw Error(ErrorKind::usage, fmt::format("job {}: the user's own password on the target was erased when the "
                                                "job ended; send a new invitation to verify again",
                                                id));
    j->verify_only = true;
    j->status = JobStatus::queued;
    j->waiting_for.clear();
    j->next_run = 0;
    j->attempts = 0;
    j->error.clear();
    j->error_kind.clear();
    save();
    events_.emit({{"event", "job_reverify"}, {"job", id}, {"user", j->user}, {"time", now_seconds()},
                  {"text", fmt::format("job {} ({}): verify again", id, j->user)}});
    return {{"ok", true}, {"job", public_job(*j)}};
  }
  if (op == "retry" || op == "cancel") {
    uint64_t id = id_of();
    Job* j = queue_.find(id);
    if (!j) throw Error(ErrorKind::not_found, "no such job");
    if (op == "retry") {
      if (j->status == JobStatus::running || j->status == JobStatus::queued)
        return {{"ok", true}, {"job", public_job(*j)}};
      // A password job whose password was wiped (done, cancelled) runs with the
      // source profile's admin credential when it has one, else waits for the next login.
      if (j->credentials == CredentialMode::password && !j->has_secret && config_.source().supplies_secret())
        j->credentials = CredentialMode::profile;
      if (j->credentials == CredentialMode::password && !j->has_secret) {
        j->status = JobStatus::waiting;
        j->waiting_for = "password";
        j->next_run = 0;
      } else {
        j->status = JobStatus::queued;
        j->waiting_for.clear();
      }
      j->attempts = 0;
      j->verify_only = false;
      j->error.clear();
      j->error_kind.clear();
    } else {
      if (j->status == JobStatus::running) {
        if (auto it = running_.find(id); it != running_.end()) it->second->cancel = true;
        j->cancel_requested = true;  // kept across a crash of the daemon
        save();
        return {{"ok", true}, {"cancelling", true}, {"job", public_job(*j)}};
      }
      if (j->status != JobStatus::done) {
        j->status = JobStatus::cancelled;
        wipe_secret(*j);
      }
    }
    save();
    events_.emit({{"event", op == "retry" ? "job_retry" : "job_cancelled"}, {"job", id}, {"user", j->user},
                  {"time", now_seconds()}, {"text", fmt::format("job {} ({}): {}", id, j->user, op)}});
    return {{"ok", true}, {"job", public_job(*j)}};
  }
  if (extension_) return extension_(request, peer);
  throw Error(ErrorKind::usage, "unknown request " + op);
}

void Daemon::take_spool() {
  auto dir = config_.spool_dir();
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::string n = e->d_name; n.rfind("u-", 0) == 0 && n.find('.') == std::string::npos) names.push_back(n);
  ::closedir(d);
  for (auto& n : names) {
    std::string user = hex_decode(n.substr(2));
    ::unlink((dir / n).c_str());
    if (user.empty()) continue;
    std::lock_guard lock(mutex_);
    if (queue_.find_user(user)) continue;
    try {
      bool profile = config_.source().supplies_secret();
      Job& job = add_job(user, profile ? CredentialMode::profile : CredentialMode::password, "spool");
      if (!profile) {
        job.status = JobStatus::waiting;
        job.waiting_for = "password";
      }
      save();
      events_.emit({{"event", "job_added"}, {"job", job.id}, {"user", job.user}, {"origin", "spool"},
                    {"time", now_seconds()},
                    {"text", fmt::format("job {} ({}) from a login while the daemon was down{}", job.id, job.user,
                                         profile ? "" : "; waits for the next login's password")}});
    } catch (const Error& e) {
      events_.emit({{"event", "warning"}, {"text", std::string("spooled login: ") + e.what()}});
    }
  }
}

void Daemon::reap() {
  for (auto it = running_.begin(); it != running_.end();) {
    if (it->second->finished) {
      it->second->thread.join();
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
}

void Daemon::dispatch() {
  take_spool();
  std::lock_guard lock(mutex_);
  reap();
  if (stopping_) return;
  double now = now_seconds();
  if (sampled_at_ == 0) sampled_at_ = now;
  if (now - sampled_at_ >= kSampleStep) {
    uint64_t moved = moved_bytes_ - sampled_bytes_;
    if (moved > 0 || !running_.empty()) {
      throughput_.push_back({std::round(now), std::round(double(moved) / (now - sampled_at_))});
      if (throughput_.size() > kMaxSamples) throughput_.pop_front();
    }
    sampled_bytes_ = moved_bytes_;
    sampled_at_ = now;
  }
  bool changed = false;
  for (auto& j : queue_.jobs) {
    if (j.status == JobStatus::waiting && j.next_run > 0 && j.next_run <= now) {
      j.status = JobStatus::queued;
      j.waiting_for.clear();
      j.next_run = 0;
      changed = true;
    }
  }
  for (auto& j : queue_.jobs) {
    if (j.status != JobStatus::queued) continue;
    if (caps_.full()) break;
    if (caps_.server_full(j.server)) continue;
    if (std::string reason = caps_.load_hold(); !reason.empty()) {
      if (reason != last_held_) events_.emit({{"event", "held"}, {"text", reason}});
      last_held_ = reason;
      break;
    }
    last_held_.clear();
    caps_.take(j.server);
    j.status = JobStatus::running;
    j.phase = j.verify_only ? "verify" : "export";
    ++j.attempts;
    j.started = now_seconds();
    j.finished = 0;
    changed = true;
    auto r = std::make_unique<Running>();
    Running* raw = r.get();
    uint64_t id = j.id;
    running_[id] = std::move(r);
    save();
    events_.emit({{"event", "job_start"}, {"job", id}, {"user", j.user}, {"server", j.server},
                  {"attempt", j.attempts}, {"pass", j.passes + 1}, {"running", caps_.running()},
                  {"time", j.started}, {"text", fmt::format("job {} ({}): pass {} started", id, j.user, j.passes + 1)}});
    raw->thread = std::thread([this, id, raw] { run_job(id, raw); });
  }
  if (changed) save();
}

void Daemon::run(ControlListener& listener, const std::function<bool()>& stop) {
  auto handler = [this](const nlohmann::json& request, const Peer& peer) { return handle(request, peer); };
  auto last_dispatch = Clock::now() - std::chrono::seconds(1);
  while (!stop()) {
    listener.serve_one(std::chrono::milliseconds(100), handler);
    if (Clock::now() - last_dispatch >= std::chrono::milliseconds(100)) {
      dispatch();
      last_dispatch = Clock::now();
    }
  }
  stopping_ = true;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, r] : running_) r->cancel = true;
  }
  // Keep answering (list, status) while the running jobs reach a safe point.
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      reap();
      if (running_.empty()) break;
    }
    listener.serve_one(std::chrono::milliseconds(100), handler);
  }
  events_.emit({{"event", "daemon_stop"}, {"time", now_seconds()}, {"text", "stopped"}});
}

void Daemon::run_job(uint64_t id, Running* running) {
  Job job;
  {
    std::lock_guard lock(mutex_);
    job = *queue_.find(id);
  }
  auto t0 = Clock::now();
  auto deadline = config_.account_timeout.count() > 0 ? t0 + config_.account_timeout : Clock::time_point::max();
  bool timed_out = false;
  auto cancelled = [&]() -> bool {
    if (running->cancel || stopping_) return true;
    if (Clock::now() >= deadline) {
      timed_out = true;
      return true;
    }
    return false;
  };
  // Progress goes into the job record in memory (at most once a second); jobs.json is
  // rewritten at the next change of state, not for progress.
  ProgressTracker tracker([this, id](nlohmann::json progress, uint64_t moved) {
    std::lock_guard lock(mutex_);
    moved_bytes_ += moved;
    if (Job* j = queue_.find(id)) j->progress = std::move(progress);
  });
  auto set_phase = [&](const char* phase) {
    {
      std::lock_guard lock(mutex_);
      if (Job* j = queue_.find(id)) {
        j->phase = phase;
        save();
      }
    }
    tracker.phase(phase);
    events_.emit({{"event", "job_phase"}, {"job", id}, {"user", job.user}, {"phase", phase}, {"time", now_seconds()},
                  {"text", fmt::format("job {} ({}): {}", id, job.user, phase)}});
  };
  tracker.phase(job.verify_only ? "verify" : "export");
  JobEvents events(events_, id, job.user, tracker);
  std::string error, error_kind;
  uint64_t messages = 0, bytes = 0;
  nlohmann::json verify_result;
  // Every copy of a secret made for this attempt is overwritten when its scope ends (each
  // guard is declared after the string it wipes, so it runs first).
  struct WipeOnExit {
    std::string& secret;
    ~WipeOnExit() { wipe(secret); }
  };
  try {
    const batch::Profile& source = config_.source();
    const batch::Profile& target = config_.target();
    auto source_endpoint = source.endpoint();
    auto target_endpoint = target.endpoint();
    std::string account = job.user + "@" + source_endpoint.host;
    std::string target_name = job.target_user + "@" + target_endpoint.address();

    batch::AccountLogin target_login;
    SecretString target_secret;
    if (job.target_credentials == CredentialMode::password) {
      target_secret = vault_->get(id, job.user, Slot::target);
      target_login.credentials = imap::Credentials{job.target_user, target_secret.get(), target.mechanism, "", nullptr};
      target_login.mailbox = job.target_user;
      target_login.describe = "the user's own password on the target";
    } else {
      target_login = batch::make_login(target, job.target_user, "");
    }
    WipeOnExit wipe_target{target_login.credentials.secret};

    if (!job.verify_only) {
      imap::Credentials source_credentials;
      SecretString secret;
      batch::AccountLogin source_login;
      if (job.credentials == CredentialMode::password) {
        secret = vault_->get(id, job.user);
        source_credentials.user = job.user;
        source_credentials.secret = secret.get();
        source_credentials.mechanism = source.mechanism;
        source_login.describe = "the user's own password";
      } else {
        source_login = batch::make_login(source, job.user, "");
        source_credentials = source_login.credentials;
      }
      WipeOnExit wipe_source{source_credentials.secret}, wipe_login{source_login.credentials.secret};
      exporting::ExportOptions eo;
      eo.archive_dir = config_.archive;
      eo.endpoint = source_endpoint;
      eo.credentials = source_credentials;
      eo.account_name = account;
      eo.cancelled = cancelled;
      WipeOnExit wipe_export{eo.credentials.secret};
      exporting::ExportSummary es;
      try {
        es = exporting::export_account(*archive_, eo, events);
      } catch (const Error& e) {
        throw batch::describe_login_error(e, account, source_login).with({.account = account});
      }
      using R = exporting::FolderResult;
      messages += es.total(&R::new_messages);
      if (!es.complete())
        throw Error(ErrorKind::network, fmt::format("export incomplete: {} messages not delivered, {} folders failed",
                                                    es.failed_messages(), es.failed_folders()),
                    Retry::later, {.account = account});

      set_phase("import");
      importing::ImportOptions io;
      io.archive_dir = config_.archive;
      io.endpoint = target_endpoint;
      io.credentials = target_login.credentials;
      io.account = account;
      io.target_name = target_name;
      io.policy.names = {target.case_insensitive_names, target.reserved_folders};  // the profile's name rules
      io.cancelled = cancelled;
      WipeOnExit wipe_import{io.credentials.secret};
      importing::ImportSummary is;
      try {
        is = importing::import_account(*archive_, io, events);
      } catch (const Error& e) {
        throw batch::describe_login_error(e, target_name, target_login).with({.account = account});
      }
      using IR = importing::ImportFolderResult;
      messages += is.total(&IR::appended);
      bytes += is.total(&IR::bytes_appended);
      if (!is.complete())
        throw Error(ErrorKind::network, fmt::format("import incomplete: {} messages failed, {} folders failed",
                                                    is.failed_messages(), is.failed_folders()),
                    Retry::later, {.account = account});
      if (cancelled()) throw Error(ErrorKind::interrupted, "stopped before verify");
      set_phase("verify");
    }

    verify::CompareOptions co;
    co.archive_dir = config_.archive;
    co.endpoint = target_endpoint;
    co.credentials = target_login.credentials;
    co.against = verify::Against::target;
    co.account = account;
    co.target_name = target_name;
    co.mailbox = job.target_user;
    co.deep = config_.deep_verify;
    WipeOnExit wipe_verify{co.credentials.secret};
    verify::Comparison c;
    try {
      c = verify::compare_online(co, events);
    } catch (const Error& e) {
      throw batch::describe_login_error(e, target_name, target_login).with({.account = account});
    }
    uint64_t archive_messages = 0;
    for (auto& f : c.folders) archive_messages += f.archive_messages;
    verify_result = {{"equal", c.equal()}, {"deep", c.deep}, {"folders", c.folders.size()},
                     {"messages", archive_messages}, {"differences", c.failures()}, {"notes", c.notes()},
                     {"time", now_seconds()}};
    if (!c.equal()) {
      error_kind = "differs";
      error = fmt::format("verify --against target: {} differences", c.failures());
    }
  } catch (const Error& e) {
    error_kind = to_string(e.kind());
    // A server that cannot check credentials just now ([UNAVAILABLE]) refused nothing: try again later.
    if (e.kind() == ErrorKind::auth && e.retry() != Retry::never) error_kind = "unavailable";
    error = e.what();
    if (timed_out) {
      error_kind = "timeout";
      error = fmt::format("timed out after {} s (the next attempt continues where it stopped)",
                          config_.account_timeout.count());
    }
  } catch (const std::exception& e) {
    error_kind = "internal";
    error = std::string("internal error: ") + e.what();
  }

  std::lock_guard lock(mutex_);
  Job* j = queue_.find(id);
  double now = now_seconds();
  bool verify_only = j->verify_only;
  int pass = verify_only ? j->passes : j->passes + 1, attempt = j->attempts;
  j->finished = now;
  j->phase.clear();
  j->progress = nullptr;
  if (!verify_only) {
    j->messages = messages;
    j->bytes = bytes;
  }
  if (!verify_result.is_null()) j->verify = verify_result;
  caps_.give_back(j->server);
  std::string event;
  j->cancel_requested = false;
  if (error.empty() && verify_only) {
    // A re-verify changes no pass: the job is done again.
    j->verify_only = false;
    j->attempts = 0;
    j->error.clear();
    j->error_kind.clear();
    j->status = JobStatus::done;
    wipe_secret(*j);
    event = "job_done";
  } else if (error.empty()) {
    ++j->passes;
    if (j->first_done == 0) j->first_done = now;
    j->attempts = 0;
    j->error.clear();
    j->error_kind.clear();
    bool delta = config_.delta_after.count() > 0 && j->passes <= config_.delta_passes &&
                 (config_.delta_until == 0 || now + double(config_.delta_after.count()) <= double(config_.delta_until));
    if (delta) {
      j->status = JobStatus::waiting;
      j->waiting_for = "delta";
      j->next_run = now + double(config_.delta_after.count());
    } else {
      j->status = JobStatus::done;
      wipe_secret(*j);
    }
    event = "job_done";
  } else if (running->cancel) {
    j->status = JobStatus::cancelled;
    j->error = "cancelled";
    j->error_kind = "cancelled";
    j->verify_only = false;
    wipe_secret(*j);
    event = "job_cancelled";
  } else if (stopping_ && !timed_out) {
    j->status = JobStatus::queued;  // resumes at the next start
    event = "job_interrupted";
  } else if (verify_only) {
    // A re-verify that fails is not retried by itself: the job is in error with what differs.
    j->verify_only = false;
    j->attempts = 0;
    j->error = error;
    j->error_kind = error_kind;
    j->status = JobStatus::error;
    event = "job_error";
  } else {
    j->error = error;
    j->error_kind = error_kind;
    if (!final_error(error_kind) && j->attempts <= config_.retries) {
      j->status = JobStatus::waiting;
      j->waiting_for = "retry";
      j->next_run = now + double(config_.retry_delay.count()) * std::pow(2.0, j->attempts - 1);
      event = "job_retry";
    } else {
      j->status = JobStatus::error;
      event = "job_error";
    }
  }
  // The attempt's line in the job's history. Only the latest attempt that moved bytes keeps
  // its samples (jobs.json is rewritten at every change of any job: each job's share stays small).
  nlohmann::json samples = tracker.samples(60);
  bool moved = !samples.empty() && samples.back()[1].get<uint64_t>() > 0;
  if (moved)
    for (auto& r : j->runs) r.erase("samples");
  j->runs.push_back({{"attempt", attempt}, {"pass", pass},
                     {"kind", verify_only ? "verify" : "migrate"}, {"started", j->started}, {"finished", now},
                     {"outcome", event.substr(4)}, {"status", to_string(j->status)}, {"messages", messages},
                     {"bytes", bytes}, {"error", error}, {"error_kind", error_kind},
                     {"problems", tracker.problems()}, {"verify", verify_result},
                     {"samples", moved ? samples : nlohmann::json()}});
  while (j->runs.size() > Job::kMaxRuns) j->runs.erase(j->runs.begin());
  save();
  nlohmann::json e = {{"event", event}, {"job", id}, {"user", j->user}, {"status", to_string(j->status)},
                      {"messages", messages}, {"bytes", bytes},
                      {"seconds", std::chrono::duration<double>(Clock::now() - t0).count()}, {"time", now},
                      {"running", caps_.running()}};
  if (verify_only) e["verify_only"] = true;
  if (!error.empty()) {
    e["error"] = error;
    e["error_kind"] = error_kind;
  }
  if (!verify_result.is_null()) e["verify"] = verify_result;
  e["text"] = error.empty() ? fmt::format("job {} ({}): {} {} done, {} messages, {}", id, j->user,
                                          verify_only ? "verify of pass" : "pass", j->passes, messages,
                                          to_string(j->status))
                            : fmt::format("job {} ({}): {} ({})", id, j->user, error, to_string(j->status));
  events_.emit(e);
  running->finished = true;
}

}  // namespace imapstage::serve

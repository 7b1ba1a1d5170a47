#include "serve/jobs.h"

#include <algorithm>
#include <cctype>

#include "batch/state.h"
#include "common/error.h"

namespace imapstage::serve {

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

const char* to_string(JobStatus s) {
  switch (s) {
    case JobStatus::queued: return "queued";
    case JobStatus::running: return "running";
    case JobStatus::waiting: return "waiting";
    case JobStatus::done: return "done";
    case JobStatus::error: return "error";
    case JobStatus::cancelled: return "cancelled";
  }
  return "?";
}

JobStatus parse_job_status(const std::string& t) {
  for (auto s : {JobStatus::queued, JobStatus::running, JobStatus::waiting, JobStatus::done, JobStatus::error,
                 JobStatus::cancelled})
    if (t == to_string(s)) return s;
  throw Error(ErrorKind::corrupt, "unknown job status " + t);
}

nlohmann::json Job::to_json() const {
  return {{"id", id},
          {"user", user},
          {"target_user", target_user},
          {"server", server},
          {"credentials", credentials == CredentialMode::password ? "password" : "profile"},
          {"target_credentials", target_credentials == CredentialMode::password ? "password" : "profile"},
          {"origin", origin},
          {"status", to_string(status)},
          {"phase", phase},
          {"waiting_for", waiting_for},
          {"next_run", next_run},
          {"attempts", attempts},
          {"passes", passes},
          {"created", created},
          {"started", started},
          {"finished", finished},
          {"first_done", first_done},
          {"messages", messages},
          {"bytes", bytes},
          {"has_secret", has_secret},
          {"has_target_secret", has_target_secret},
          {"verify_only", verify_only},
          {"cancel_requested", cancel_requested},
          {"error", error},
          {"error_kind", error_kind},
          {"verify", verify},
          {"progress", progress},
          {"runs", runs}};
}

Job Job::from_json(const nlohmann::json& j) {
  Job o;
  o.id = j.at("id").get<uint64_t>();
  o.user = j.at("user").get<std::string>();
  o.target_user = j.value("target_user", o.user);
  o.server = j.value("server", "");
  std::string mode = j.value("credentials", "profile");
  if (mode != "password" && mode != "profile") throw Error(ErrorKind::corrupt, "unknown credentials mode " + mode);
  o.credentials = mode == "password" ? CredentialMode::password : CredentialMode::profile;
  o.target_credentials =
      j.value("target_credentials", "profile") == "password" ? CredentialMode::password : CredentialMode::profile;
  o.origin = j.value("origin", "");
  o.status = parse_job_status(j.at("status").get<std::string>());
  o.phase = j.value("phase", "");
  o.waiting_for = j.value("waiting_for", "");
  o.next_run = j.value("next_run", 0.0);
  o.attempts = j.value("attempts", 0);
  o.passes = j.value("passes", 0);
  o.created = j.value("created", 0.0);
  o.started = j.value("started", 0.0);
  o.finished = j.value("finished", 0.0);
  o.first_done = j.value("first_done", 0.0);
  o.messages = j.value("messages", uint64_t{0});
  o.bytes = j.value("bytes", uint64_t{0});
  o.has_secret = j.value("has_secret", false);
  o.has_target_secret = j.value("has_target_secret", false);
  o.verify_only = j.value("verify_only", false);
  o.cancel_requested = j.value("cancel_requested", false);
  o.error = j.value("error", "");
  o.error_kind = j.value("error_kind", "");
  o.verify = j.value("verify", nlohmann::json());
  o.progress = j.value("progress", nlohmann::json());
  if (j.contains("runs") && j["runs"].is_array()) o.runs = j["runs"];
  return o;
}

Job* JobQueue::find(uint64_t id) {
  for (auto& j : jobs)
    if (j.id == id) return &j;
  return nullptr;
}

Job* JobQueue::find_user(const std::string& user) {
  std::string u = lower(user);
  for (auto& j : jobs)
    if (lower(j.user) == u) return &j;
  return nullptr;
}

nlohmann::json JobQueue::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (auto& j : jobs) list.push_back(j.to_json());
  return {{"version", 1}, {"kind", "serve"}, {"next_id", next_id}, {"jobs", list}};
}

JobQueue JobQueue::from_json(const nlohmann::json& j) {
  if (j.value("version", 0) != 1 || j.value("kind", "") != "serve")
    throw Error(ErrorKind::corrupt, "not a version 1 job queue");
  JobQueue q;
  q.next_id = j.value("next_id", uint64_t{1});
  for (auto& e : j.at("jobs")) {
    q.jobs.push_back(Job::from_json(e));
    q.next_id = std::max(q.next_id, q.jobs.back().id + 1);
  }
  return q;
}

JobQueue load_queue(const std::filesystem::path& state_dir) {
  auto path = state_dir / "jobs.json";
  auto text = batch::read_state_file(state_dir, path, "job queue");
  if (!text) return {};
  JobQueue q;
  try {
    q = JobQueue::from_json(nlohmann::json::parse(*text));
  } catch (const Error& e) {
    throw Error(ErrorKind::corrupt, "the job queue is damaged: " + e.message(), Retry::never, {.file = path.string()});
  } catch (const std::exception& e) {
    throw Error(ErrorKind::corrupt, std::string("the job queue is damaged: ") + e.what(), Retry::never,
                {.file = path.string()});
  }
  for (auto& j : q.jobs) {
    if (j.status != JobStatus::running) continue;
    // The daemon that ran it is gone; export and import resume where it stopped.
    j.status = j.cancel_requested ? JobStatus::cancelled : JobStatus::queued;
    j.cancel_requested = false;
    j.phase.clear();
    j.progress = nullptr;
  }
  return q;
}

void save_queue(const std::filesystem::path& state_dir, const JobQueue& queue) {
  batch::write_state_file(state_dir, state_dir / "jobs.json", queue.to_json().dump(1) + "\n", "job queue");
}

}  // namespace imapstage::serve

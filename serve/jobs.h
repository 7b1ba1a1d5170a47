// The daemon's job queue: one job per mailbox to migrate, kept in
// STATE_DIR/jobs.json and rewritten crash-safely (batch::write_state_file:
// temporary file, fsync, rename, fsync of the directory) on every change, so
// a kill -9 loses nothing that was acknowledged. The format is described in
// serve/README.md; it holds no secret (a job's credential, when it has one of
// its own, is sealed in STATE_DIR/secrets/, serve/vault.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace imapstage::serve {

enum class JobStatus {
  queued,     // waits for a slot under the caps
  running,    // a pass (export, import, verify) is under way; found at load time: the daemon died, resumed
  waiting,    // until next_run (a retry or a delta pass), or for a password (next_run 0)
  done,       // every pass finished and verified; the credential is wiped
  error,      // failed beyond its retries (or for good: a refused login); `jobs retry` runs it again
  cancelled,  // by `jobs cancel`; the credential is wiped
};

const char* to_string(JobStatus status);
// Throws Error(corrupt) for an unknown name.
JobStatus parse_job_status(const std::string& text);

// Whose credential the source login uses.
enum class CredentialMode {
  password,  // the user's own password (from the login hook or `jobs add --password-file`), sealed in the vault
  profile,   // the source profile's admin, master-user or magic credential
};

struct Job {
  uint64_t id = 0;
  std::string user;              // mailbox on the source server (its login name)
  std::string target_user;       // mailbox on the target server
  std::string server;            // source HOST:PORT (the per-server cap)
  CredentialMode credentials = CredentialMode::profile;
  // Whose credential the target login uses: the target profile's (admin,
  // master) or, when its auth is "user" with no password source, the
  // user's own password on the target (sealed in the vault's target slot).
  CredentialMode target_credentials = CredentialMode::profile;
  std::string origin;            // "hook", "trigger", "spool" or "admin"
  JobStatus status = JobStatus::queued;
  std::string phase;             // while running: "export", "import" or "verify"
  std::string waiting_for;       // while waiting: "retry", "delta" or "password"
  double next_run = 0;           // while waiting: unix seconds when it is queued again (0: for a password)
  int attempts = 0;              // attempts of the current pass
  int passes = 0;                // passes completed: 1 after the migration, more after delta passes
  double created = 0;            // unix seconds (with milliseconds)
  double started = 0;            // start of the latest attempt
  double finished = 0;           // end of the latest attempt, 0 while running
  double first_done = 0;         // end of the first complete pass (mailbox migrated and verified)
  uint64_t messages = 0;         // exported + imported by the latest attempt
  uint64_t bytes = 0;            // bytes imported by the latest attempt
  bool has_secret = false;       // a sealed credential is kept for it
  bool has_target_secret = false;  // the user's own target password is kept for it
  bool verify_only = false;      // the queued or running attempt only verifies (a re-verify from the console)
  bool cancel_requested = false; // `jobs cancel` while running: it stops at its next safe point
  std::string error;             // the latest error (no secrets)
  std::string error_kind;        // its ErrorKind name, or "differs" (verify), "timeout", "unavailable" (the
                                 // server could not check credentials now), "cancelled"
  nlohmann::json verify;         // the latest verify: {"equal", "deep", "folders", "messages", "differences"}
  // While running (null otherwise), updated at most once a second from the
  // engines' progress events: {"phase", "folders", "folders_done",
  // "messages_total", "messages", "bytes_total", "bytes", "rate" (bytes/s),
  // "moved" (bytes read + written by the attempt), "eta" (seconds of this
  // phase, -1: unknown), "updated", "samples": [[unix seconds, moved]...]
  // (the last 60; serve/progress.h keeps the attempt's)}.
  nlohmann::json progress;
  // The latest attempts, oldest first (at most kMaxRuns): {"attempt", "pass",
  // "kind" ("migrate" | "verify"), "started", "finished", "outcome" (the
  // event that ended it), "status" (the state it left), "messages", "bytes", "error", "error_kind", "problems":
  // [{"event", "phase", "folder", "uid", "text"}...] (the first 20), "verify",
  // "samples" (only in the latest attempt that moved bytes: at most 60 of its progress samples)}.
  nlohmann::json runs = nlohmann::json::array();
  static constexpr size_t kMaxRuns = 20;

  nlohmann::json to_json() const;
  static Job from_json(const nlohmann::json& j);
};

struct JobQueue {
  uint64_t next_id = 1;
  std::vector<Job> jobs;

  Job* find(uint64_t id);
  // The job of `user` (case-insensitive), if any.
  Job* find_user(const std::string& user);
  nlohmann::json to_json() const;
  static JobQueue from_json(const nlohmann::json& j);
};

// Reads STATE_DIR/jobs.json; an empty queue when it does not exist. Jobs
// found running are the ones a killed daemon left: they become queued, or
// cancelled when a cancel was asked for.
// Throws Error(corrupt) naming the file.
JobQueue load_queue(const std::filesystem::path& state_dir);
// Writes it atomically. Throws Error(io).
void save_queue(const std::filesystem::path& state_dir, const JobQueue& queue);

}  // namespace imapstage::serve

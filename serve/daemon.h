// The daemon of `imapstage serve`: owns the job queue (serve/jobs.h), the
// sealed credentials (serve/vault.h) and the archive its jobs write, answers
// the control socket (serve/control.h), and runs jobs under the batch
// scheduler's caps (batch/scheduler.h: jobs, per-server, load), each with
// the account timeout and bounded retries.
//
// A job's pass: export from the source into the archive, import into the
// target (always with the target profile's admin or master-user credential,
// never the user's password: a login with it would run the login hook
// again), then verify --against target (counts or deep). A pass that
// verifies equal completes the job, or, with delta passes configured,
// schedules the next pass (new mail since) after `delta_after`. Export and
// import resume where a killed daemon left them and never duplicate a
// message on the target.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "archive-format/archive.h"
#include "batch/scheduler.h"
#include "common/events.h"
#include "serve/config.h"
#include "serve/control.h"
#include "serve/jobs.h"
#include "serve/vault.h"

namespace imapstage::serve {

class Daemon {
 public:
  // Makes the state directory (0711), secrets/ (0700) and spool/ (1733: the
  // hook's user may drop files but not list them), loads the key (making it
  // when missing), opens or creates the archive (its writer lock keeps a
  // second daemon out) and loads the queue. Throws Error for what stops it.
  Daemon(ServeConfig config, EventSink& events);
  ~Daemon();

  // Answers the socket and runs jobs until `stop()` is true; then stops
  // starting jobs, asks the running ones to stop at their next safe point
  // (they stay queued and resume at the next start) and waits for them.
  void run(ControlListener& listener, const std::function<bool()>& stop);

  // One control request (serve/README.md lists them). Throws Error(usage)
  // for a malformed request, Error(auth) when the peer may not make it.
  nlohmann::json handle(const nlohmann::json& request, const Peer& peer);

  // Requests the daemon does not know go to `extension` (the web pages'
  // "invite"), for admins only. Set before run().
  void set_extension(ControlHandler extension) { extension_ = std::move(extension); }

  // Starts what may start now and takes in spooled logins. Called by run().
  void dispatch();

  // The manifest (verify/manifest.h) of job `id`'s account as the archive
  // holds it now. Throws Error(not_found) for an unknown job.
  nlohmann::json manifest(uint64_t id);

 private:
  struct Running {
    std::thread thread;
    std::atomic<bool> cancel{false};
    std::atomic<bool> finished{false};
  };

  void save();                                      // under mutex_
  Job& add_job(const std::string& user, CredentialMode mode, const std::string& origin);  // under mutex_
  void set_secret(Job& job, const std::string& secret);  // under mutex_
  void set_target_secret(Job& job, const std::string& secret);  // under mutex_
  void wipe_secret(Job& job);                       // under mutex_
  void take_spool();
  void run_job(uint64_t id, Running* running);
  nlohmann::json public_job(const Job& job) const;
  nlohmann::json summary_json() const;             // under mutex_
  bool is_admin(const Peer& peer) const;
  bool is_hook(const Peer& peer) const;
  void reap();                                      // joins finished workers

  ServeConfig config_;
  EventSink& events_;
  ControlHandler extension_;
  std::unique_ptr<Vault> vault_;
  std::unique_ptr<archive::Archive> archive_;
  std::set<uid_t> admin_uids_, hook_uids_;

  mutable std::mutex mutex_;
  JobQueue queue_;
  batch::SchedulerCaps caps_;
  std::map<uint64_t, std::unique_ptr<Running>> running_;
  std::string last_held_;
  std::atomic<bool> stopping_{false};
  double started_at_ = 0;
  // Bytes every job moved (read from sources + written to targets) since
  // the start, and samples of it: [[unix seconds, bytes/s over the step]...]
  // every kSampleStep seconds, the last kMaxSamples (under mutex_).
  uint64_t moved_bytes_ = 0, sampled_bytes_ = 0;
  double sampled_at_ = 0;
  std::deque<std::pair<double, double>> throughput_;
  static constexpr double kSampleStep = 2;
  static constexpr size_t kMaxSamples = 1800;
};

}  // namespace imapstage::serve

// Per-account state of a batch, kept in the archive directory so that a
// re-run resumes where the last one stopped.
//
//   DIR/batches/export.json, DIR/batches/import.json:
//   {"version": 1, "kind": "export", "batch": "<id>", "created": <unix>,
//    "invocations": <n>,
//    "accounts": [{"key", "account", "server", "target", "line", "status",
//                  "attempts", "started", "finished", "seconds", "messages",
//                  "bytes", "error", "error_kind", "resume_at"}, ...]}
//   status: queued | running | done | error | throttled | parked. "running"
//   found at load time means the process that ran it is gone: it is resumed
//   like an error. "throttled": the server asked the account to wait (it
//   resumes at "resume_at", unix seconds, in the same run, or in the next
//   one); "parked": its daily budget is spent or the server asked for a
//   wait beyond --max-backoff, so this run left it; a run after
//   "resume_at" continues it (batch/STATE.md). "resume_at" is absent in
//   files written before it, read as 0.
//
// In an encrypted archive the files are sealed with the archive's keys
// (archive::ArchiveKeys::seal_state, batch/STATE.md): reading and writing
// them needs its passphrase.
//
// Crash safety: every save writes a temporary file beside it, fsyncs it,
// renames it over the old one and fsyncs the directory, so the file is
// always either the old or the new state, never a mix. No secret is ever
// stored here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace imapstage::archive {
class ArchiveKeys;
}

namespace imapstage::batch {

enum class AccountStatus { queued, running, done, error, throttled, parked };

const char* to_string(AccountStatus status);
// Throws Error(corrupt) for an unknown name.
AccountStatus parse_account_status(const std::string& text);

struct AccountState {
  std::string key;          // unique within the batch (the archived account; for import "account -> target")
  std::string account;      // archived account name
  std::string server;       // host:port it runs against
  std::string target;       // import: target identity; "" for export
  size_t line = 0;          // line in the accounts file
  AccountStatus status = AccountStatus::queued;
  int attempts = 0;         // how many times it was started
  int64_t started = 0;      // unix seconds of the latest start
  int64_t finished = 0;     // unix seconds of the latest end, 0 while running
  double seconds = 0;       // duration of the latest attempt
  uint64_t messages = 0;    // messages moved by the latest attempt
  uint64_t bytes = 0;       // bytes moved by the latest attempt
  std::string error;        // the latest error (no secrets)
  std::string error_kind;   // its ErrorKind name
  int64_t resume_at = 0;    // throttled / parked: unix seconds when it may run again; 0 otherwise

  nlohmann::json to_json() const;
  static AccountState from_json(const nlohmann::json& j);
};

struct BatchState {
  std::string kind;         // "export" or "import"
  std::string batch_id;
  int64_t created = 0;
  int invocations = 0;      // how many times the batch was run
  std::vector<AccountState> accounts;

  AccountState* find(const std::string& key);
  const AccountState* find(const std::string& key) const;
  // True when some account is not done.
  bool unfinished() const;
  nlohmann::json to_json() const;
  static BatchState from_json(const nlohmann::json& j);
};

// DIR/batches/<kind>.json
std::filesystem::path state_path(const std::filesystem::path& archive_dir, const std::string& kind);

// Reads a state file; nullopt when it does not exist. Throws Error(corrupt)
// naming the file if it is not a state file. In an encrypted archive the
// file is opened with its keys (state_keys of the archive directory, two
// levels up): Error(auth) for a wrong passphrase, Error(corrupt) for a file
// that does not authenticate.
std::optional<BatchState> load_state(const std::filesystem::path& path);

// Writes `state` atomically (temp file, fsync, rename, fsync of the directory),
// sealed in an encrypted archive. Throws Error(io) naming the file.
void save_state(const std::filesystem::path& path, const BatchState& state);

// The keys that seal the state files of the archive directory `root`:
// nullptr for a plain archive (or a directory that is no archive yet); for
// an encrypted one its keys, unlocked through the process's passphrase
// source (archive::unlock_archive; Error(auth) for a wrong passphrase).
std::shared_ptr<const archive::ArchiveKeys> state_keys(const std::filesystem::path& root);

// read_state_file of a state file of the archive at `root`, opened with
// `keys` when they are given (an encrypted archive). A plain JSON file (one
// that begins with "{") found in an encrypted archive was written before
// state files were sealed: it is returned as it is and sealed at the next
// write. Throws Error(corrupt) naming the file when a sealed file does not
// authenticate.
std::optional<std::string> read_archive_state(const std::filesystem::path& root, const std::filesystem::path& path,
                                              const std::string& what, const archive::ArchiveKeys* keys);
// write_state_file of a state file of the archive at `root`, sealed with `keys` when given.
void write_archive_state(const std::filesystem::path& root, const std::filesystem::path& path, const std::string& text,
                         const std::string& what, const archive::ArchiveKeys* keys);

// The durable file handling under load_state and save_state, for other
// state files (the daemon's job queue): reads `path` below `root` (no link
// or special file followed; at most 64 MiB), nullopt when it does not exist;
// Error(io/corrupt) names the file and `what` ("batch state").
std::optional<std::string> read_state_file(const std::filesystem::path& root, const std::filesystem::path& path,
                                           const std::string& what);
// Replaces `path` below `root` by `text` atomically: a temporary file
// beside it (owner-only), fsync, rename, fsync of the directory (made if
// missing). Throws Error(io) naming the file.
void write_state_file(const std::filesystem::path& root, const std::filesystem::path& path, const std::string& text,
                      const std::string& what);

// A state shared by the threads of a batch: every change is saved at once.
class StateStore {
 public:
  // Seals the file when the archive (two levels above `path`) is encrypted;
  // its keys are unlocked here, once.
  StateStore(std::filesystem::path path, BatchState state);
  // Changes the account `key` under the lock and saves the whole state.
  void update(const std::string& key, const std::function<void(AccountState&)>& change);
  BatchState snapshot() const;
  const std::filesystem::path& path() const { return path_; }

 private:
  mutable std::mutex mutex_;
  std::filesystem::path path_;
  BatchState state_;
  std::shared_ptr<const archive::ArchiveKeys> keys_;
};

}  // namespace imapstage::batch

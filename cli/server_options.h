// Command-line options shared by every subcommand that talks to a server:
// where it is, how to secure the connection, who to log in as and where the
// secret comes from. Secrets are never taken from argv.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "batch/budget.h"
#include "batch/profiles.h"
#include "batch/runner.h"
#include "batch/shard.h"
#include "common/events.h"
#include "common/retry.h"
#include "imap/session.h"

namespace imapstage::cli {

struct ServerOptions {
  std::string host;
  std::string protocol = "imap";  // --protocol imap | pop3 (export only)
  uint16_t port = 0;
  std::string tls = "implicit";  // implicit | starttls | none
  std::string ca_file;
  bool insecure = false;
  int timeout_seconds = 120;
  uint64_t max_message_mib = 1024;  // --max-message-size, MiB
  std::string user;
  std::string auth = "login";    // login | plain | cram-md5 | xoauth2
  std::string auth_user;         // admin identity for SASL PLAIN authzid
  std::string password_file;
  std::string password_env;
  std::string token_cmd;         // --oauth2-token-cmd (XOAUTH2 tokens from a command)
  std::string max_backoff = "15m";  // --max-backoff: the longest throttling wait honoured
  std::string provider;          // --provider gmail | microsoft365 (batch/providers.h)
  bool restore_flagged = false;  // --restore-flagged
  bool case_insensitive_names = false;        // --case-insensitive-names (import)
  std::vector<std::string> reserved_folders;  // --reserved-folder NAME (import, repeatable)
  size_t max_command_length = 8000;  // --max-command-length
  std::string daily_budget;      // --daily-budget SIZE (per account per 24 h)
};

// The retry policy of a command with these options: --max-backoff as the
// longest throttling wait; each wait reported to `events` as a "throttled"
// event (account, seconds, reason, resume_at). `events` must outlive it.
RetryPolicy make_retry_policy(const ServerOptions& options, EventSink& events, const std::string& account);

// Adds --host --port --tls --ca-file --insecure --timeout --user --auth
// --auth-user --password-file --password-env to `cmd`. `prefix` ("" or
// "target-") lets one command take two servers.
void add_server_options(CLI::App* cmd, ServerOptions& options, bool required = true);

// The endpoint the options describe. Throws Error(usage) on a bad --tls.
imap::Endpoint make_endpoint(const ServerOptions& options);

// The credentials, reading the secret from --password-file, --password-env
// or (on a terminal, with neither) a prompt without echo. Throws
// Error(usage) if there is no way to get it.
imap::Credentials make_credentials(const ServerOptions& options);

// Reads a secret: the first line of `file`, or the value of environment
// variable `env`, or a no-echo prompt on /dev/tty labelled `prompt`.
std::string read_secret(const std::string& file, const std::string& env, const std::string& prompt);

// Connector profiles and admin modes (batch/profiles.h).
struct ProfileOptions {
  std::string config;            // --config FILE (default: batch::default_config_path() when it exists)
  std::string profile;           // --source-profile / --target-profile NAME
  std::string auth_mode;         // --auth-mode user | admin-plain | master-user | magic
  std::string master_separator;  // --master-separator (default "*")
};

// Adds --config, `profile_flag` (e.g. "--source-profile"), --auth-mode and --master-separator.
void add_profile_options(CLI::App* cmd, ProfileOptions& options, const std::string& profile_flag);

// Where accounts go, for this command line: the named profile with every
// server flag given explicitly on top; else, with --host, a profile made of
// the flags that serves every account; else the config's profiles by
// domain, each with the explicit flags on top. `warnings` gets the config's
// warnings (inline secrets) and add_security_warnings for every server the
// routing can reach (so every run, batch or not, says so). Throws
// Error(usage) for an unknown profile or a bad flag, Error(io) for an
// unreadable config.
batch::ServerRouting make_routing(const CLI::App* cmd, const ServerOptions& server, const ProfileOptions& profile,
                                  std::vector<std::string>& warnings);

// Appends a warning for a server whose certificate is not verified
// (`insecure`) and one for a server reached without TLS (`cleartext`);
// `where` names the server (host or profile).
void add_security_warnings(std::vector<std::string>& warnings, const std::string& where, bool insecure,
                           bool cleartext);

// The login of one mailbox under `profile`; in user mode without a password
// source, prompts on the terminal (no echo).
batch::AccountLogin make_account_login(const batch::Profile& profile, const std::string& user);

// Options of a batch run (--accounts FILE).
struct BatchOptions {
  std::string accounts;           // --accounts FILE
  int jobs = 0;                   // --jobs N (0: min(CPUs + 1, 6))
  int per_server = 4;             // --per-server N
  double max_load = 0.7;          // --max-load L (0: off)
  std::string account_timeout = "24h";  // --account-timeout (s, m, h, d suffixes; 0: none)
  bool retry_errors = false;      // --retry-errors
  bool new_batch = false;         // --new-batch
  std::string shard;              // --shard I/N ("" : from the environment, else none)
  std::string server_max_bandwidth;       // --server-max-bandwidth SIZE per second, per server
  double server_max_messages_per_second = 0;  // --server-max-messages-per-second
};

void add_batch_options(CLI::App* cmd, BatchOptions& options);
// Throws Error(usage) for a bad --account-timeout.
batch::RunnerOptions make_runner_options(const BatchOptions& options);
// --daily-budget, --server-max-bandwidth and --server-max-messages-per-second
// of a batch. Throws Error(usage) for a malformed size.
batch::BatchLimits make_batch_limits(const ServerOptions& server, const BatchOptions& batch);

// The shard of this batch: --shard, else the environment of a Kubernetes
// Indexed Job or a Slurm array (batch::shard_from_environment), else none.
// With a shard, `archive` becomes the shard's own directory under it and
// `runner`'s per-server cap this shard's part of it; `warnings` gets a line
// when the cap is below the number of shards. Throws Error(usage).
batch::Shard apply_shard(const BatchOptions& options, std::string& archive, batch::RunnerOptions& runner,
                         std::vector<std::string>& warnings);
// "90" (seconds), "90s", "15m", "24h", "2d". Throws Error(usage).
std::chrono::seconds parse_duration(const std::string& text);

}  // namespace imapstage::cli

#include "cli/server_options.h"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include <fmt/format.h>

#include "common/error.h"
#include "common/message_filter.h"
#include "common/token_command.h"

namespace imapstage::cli {

void add_server_options(CLI::App* cmd, ServerOptions& o, bool required) {
  auto* host = cmd->add_option("--host", o.host, "IMAP server host name or address")->group("Server");
  auto* user = cmd->add_option("--user", o.user, "Login name (the mailbox to open)")->group("Server");
  if (required) {
    host->required();
    user->required();
  }
  cmd->add_option("--port", o.port, "Port (default 993 for implicit TLS, 143 otherwise; POP3: 995, 110)")->group("Server");
  cmd->add_option("--tls", o.tls, "implicit (default), starttls, or none")
      ->check(CLI::IsMember({"implicit", "starttls", "none"}))
      ->group("Server");
  cmd->add_option("--ca-file", o.ca_file, "PEM file of CA certificates to trust instead of the system's")
      ->check(CLI::ExistingFile)
      ->group("Server");
  cmd->add_flag("--insecure", o.insecure, "Do not verify the server's certificate or host name")->group("Server");
  cmd->add_option("--timeout", o.timeout_seconds, "Seconds to wait for the server before giving up on a read")
      ->check(CLI::PositiveNumber)
      ->group("Server");
  cmd->add_option("--max-message-size", o.max_message_mib,
                  "Largest message taken from or sent to the server, in MiB (default 1024); a larger one is "
                  "named as failed")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 24))
      ->group("Server");
  cmd->add_option("--auth", o.auth, "login (default; USER/PASS for POP3), plain, cram-md5, xoauth2, or apop (POP3)")
      ->check(CLI::IsMember({"login", "plain", "cram-md5", "xoauth2", "apop"}))
      ->group("Server");
  cmd->add_option("--auth-user", o.auth_user,
                  "Authenticate as this admin user and act as --user (SASL PLAIN authorization id)")
      ->group("Server");
  auto* file = cmd->add_option("--password-file", o.password_file, "Read the password (or token) from this file")
                   ->check(CLI::ExistingFile)
                   ->group("Server");
  auto* env = cmd->add_option("--password-env", o.password_env,
                              "Read the password (or token) from this environment variable")
                  ->excludes(file)
                  ->group("Server");
  cmd->add_option("--provider", o.provider,
                  "gmail or microsoft365: start from that provider's profile (host, TLS, xoauth2, size limits, "
                  "budgets, caps, quirks; imapstage providers lists them); other flags override it")
      ->group("Server");
  cmd->add_flag("--restore-flagged", o.restore_flagged,
                "After APPEND, STORE the flags again when they include \\Flagged (Microsoft 365 drops it)")
      ->group("Server");
  cmd->add_flag("--case-insensitive-names", o.case_insensitive_names,
                "The target's folder names ignore case (Gmail, Microsoft 365): import gives source folders that "
                "differ only in case distinct names (\"projects (2)\") instead of merging them")
      ->group("Server");
  cmd->add_option("--reserved-folder", o.reserved_folders,
                  "A folder name the target owns (\"[Gmail]/\": it and everything below it); import renames source "
                  "folders landing there (\"[Gmail] (imported)/Foo\"). Repeatable; replaces the provider's list")
      ->group("Server");
  cmd->add_option("--max-command-length", o.max_command_length,
                  "Longest command line sent; longer UID sets are split (default 8000)")
      ->check(CLI::Range(200, 1000000))
      ->group("Server");
  cmd->add_option("--daily-budget", o.daily_budget,
                  "Bytes one account may move per 24 h (download for export, upload for import; e.g. 2400MB; "
                  "default: the provider's, else none); when spent the account is parked until its window "
                  "reopens (exit 6) and a later run continues. Kept in DIR/batches/budgets.json")
      ->group("Server");
  cmd->add_option("--max-backoff", o.max_backoff,
                  "Longest wait honoured when the server throttles (Suggested Backoff Time, [THROTTLED], "
                  "[UNAVAILABLE], bandwidth limits); without a hint the wait grows exponentially with jitter up to it. "
                  "A longer demand stops the account as resumable (exit 6); default 15m")
      ->group("Server");
  cmd->add_option("--oauth2-token-cmd", o.token_cmd,
                  "Log in with XOAUTH2 tokens printed by this command (run with /bin/sh -c, the mailbox in "
                  "$IMAPSTAGE_USER), run again when the server refuses an expired token")
      ->excludes(file)
      ->excludes(env)
      ->group("Server");
}

imap::Endpoint make_endpoint(const ServerOptions& o) {
  imap::Endpoint e;
  e.host = o.host;
  e.port = o.port;
  if (o.tls == "implicit") e.tls = imap::TlsMode::implicit;
  else if (o.tls == "starttls") e.tls = imap::TlsMode::starttls;
  else if (o.tls == "none") e.tls = imap::TlsMode::none;
  else throw Error(ErrorKind::usage, "--tls must be implicit, starttls or none, not " + o.tls);
  e.ca_file = o.ca_file;
  e.insecure = o.insecure;
  e.timeout = std::chrono::seconds(o.timeout_seconds);
  e.max_message_size = o.max_message_mib << 20;
  return e;
}

imap::Credentials make_credentials(const ServerOptions& o) {
  imap::Credentials c;
  c.user = o.user;
  c.auth_user = o.auth_user;
  if (o.auth == "login") c.mechanism = imap::AuthMechanism::login;
  else if (o.auth == "plain") c.mechanism = imap::AuthMechanism::plain;
  else if (o.auth == "cram-md5") c.mechanism = imap::AuthMechanism::cram_md5;
  else if (o.auth == "xoauth2") c.mechanism = imap::AuthMechanism::xoauth2;
  else if (o.auth == "apop") c.mechanism = imap::AuthMechanism::apop;
  else throw Error(ErrorKind::usage, "unknown --auth " + o.auth);
  if (!c.auth_user.empty() && c.mechanism == imap::AuthMechanism::login) c.mechanism = imap::AuthMechanism::plain;
  if (!o.token_cmd.empty()) {
    c.mechanism = imap::AuthMechanism::xoauth2;
    c.tokens = make_token_source(o.token_cmd, c.user);
    return c;
  }
  std::string who = c.auth_user.empty() ? c.user : c.auth_user;
  c.secret = read_secret(o.password_file, o.password_env, "Password for " + who + " at " + o.host + ": ");
  return c;
}

static std::string prompt_no_echo(const std::string& prompt) {
  int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0) return {};
  struct termios old {};
  bool have_termios = tcgetattr(fd, &old) == 0;
  if (have_termios) {
    struct termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(fd, TCSAFLUSH, &quiet);
  }
  (void)!::write(fd, prompt.data(), prompt.size());
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  (void)!::write(fd, "\n", 1);
  if (have_termios) tcsetattr(fd, TCSAFLUSH, &old);
  ::close(fd);
  return line;
}

std::string read_secret(const std::string& file, const std::string& env, const std::string& prompt) {
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) throw_io("cannot read the password file", file, errno);
    std::string line;
    std::getline(in, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) throw Error(ErrorKind::usage, "the password file is empty", Retry::never, {.file = file});
    return line;
  }
  if (!env.empty()) {
    const char* value = std::getenv(env.c_str());
    if (!value || !*value) throw Error(ErrorKind::usage, "environment variable " + env + " is not set or empty");
    return value;
  }
  if (isatty(STDIN_FILENO)) {
    std::string secret = prompt_no_echo(prompt);
    if (!secret.empty()) return secret;
  }
  throw Error(ErrorKind::usage, "no password given: use --password-file FILE or --password-env VAR");
}

}  // namespace imapstage::cli

namespace imapstage::cli {

void add_profile_options(CLI::App* cmd, ProfileOptions& o, const std::string& profile_flag) {
  cmd->add_option("--config", o.config,
                  "TOML file of connector profiles (default $XDG_CONFIG_HOME/imapstage/config.toml when present)")
      ->check(CLI::ExistingFile)
      ->group("Server");
  cmd->add_option(profile_flag, o.profile, "Use this profile of the config file (flags given here override it)")
      ->group("Server");
  cmd->add_option("--auth-mode", o.auth_mode,
                  "user (default), admin-plain (SASL PLAIN as --auth-user for each mailbox), master-user "
                  "(LOGIN as MAILBOX*ADMIN), or magic (one shared password for every mailbox)")
      ->check(CLI::IsMember({"user", "admin-plain", "master-user", "magic"}))
      ->group("Server");
  cmd->add_option("--master-separator", o.master_separator, "Separator of master-user logins (default *)")
      ->group("Server");
}

static bool given(const CLI::App* cmd, const char* flag) { return cmd->count(flag) > 0; }

// The explicit command-line flags on top of `p`.
static batch::Profile with_flags(batch::Profile p, const CLI::App* cmd, const ServerOptions& o,
                                 const ProfileOptions& po) {
  if (given(cmd, "--provider")) {
    // The provider's defaults under the explicit flags: its host unless --host is given.
    if (!given(cmd, "--host")) p.host.clear();
    p.apply_provider(o.provider);
  }
  if (given(cmd, "--host")) p.host = o.host;
  if (given(cmd, "--restore-flagged")) p.restore_flagged = o.restore_flagged;
  if (given(cmd, "--case-insensitive-names")) p.case_insensitive_names = o.case_insensitive_names;
  if (given(cmd, "--reserved-folder")) p.reserved_folders = o.reserved_folders;
  if (given(cmd, "--max-command-length")) p.max_command_length = o.max_command_length;
  if (cmd->get_option_no_throw("--protocol") && given(cmd, "--protocol")) p.protocol = o.protocol;
  if (given(cmd, "--port")) p.port = o.port;
  if (given(cmd, "--tls")) p.tls = o.tls;
  if (given(cmd, "--ca-file")) p.ca_file = o.ca_file;
  if (given(cmd, "--insecure")) p.insecure = o.insecure;
  if (given(cmd, "--timeout")) p.timeout_seconds = o.timeout_seconds;
  if (given(cmd, "--max-message-size")) p.max_message_mib = o.max_message_mib;
  if (given(cmd, "--auth")) p.mechanism = batch::parse_mechanism(o.auth);
  if (given(cmd, "--auth-user")) {
    p.admin_user = o.auth_user;
    if (po.auth_mode.empty() && p.auth == batch::AuthMode::user) p.auth = batch::AuthMode::admin_plain;
  }
  if (!po.auth_mode.empty()) p.auth = batch::parse_auth_mode(po.auth_mode);
  if (!po.master_separator.empty()) p.master_separator = po.master_separator;
  if (given(cmd, "--password-file")) {
    p.password_file = o.password_file;
    p.password_env.clear();
    p.inline_password.clear();
  }
  if (given(cmd, "--password-env")) {
    p.password_env = o.password_env;
    p.password_file.clear();
    p.inline_password.clear();
  }
  if (given(cmd, "--password-file") || given(cmd, "--password-env")) p.token_cmd.clear();
  if (given(cmd, "--oauth2-token-cmd")) {
    if (given(cmd, "--auth") && o.auth != "xoauth2")
      throw Error(ErrorKind::usage, "--oauth2-token-cmd logs in with --auth xoauth2, not " + o.auth);
    p.token_cmd = o.token_cmd;
    p.mechanism = imap::AuthMechanism::xoauth2;
    p.password_file.clear();
    p.password_env.clear();
    p.inline_password.clear();
  }
  if (!p.token_cmd.empty() && p.auth != batch::AuthMode::user && p.auth != batch::AuthMode::magic)
    throw Error(ErrorKind::usage, fmt::format("--oauth2-token-cmd (token_cmd) logs in as each mailbox (XOAUTH2), "
                                              "not with --auth-mode {}",
                                              batch::to_string(p.auth)));
  if (p.auth == batch::AuthMode::admin_plain) p.mechanism = imap::AuthMechanism::plain;
  if ((p.auth == batch::AuthMode::admin_plain || p.auth == batch::AuthMode::master_user) && p.admin_user.empty())
    throw Error(ErrorKind::usage, fmt::format("--auth-mode {} needs --auth-user ADMIN (or admin_user in the profile)",
                                              batch::to_string(p.auth)));
  if (p.auth != batch::AuthMode::user && p.password_file.empty() && p.password_env.empty() &&
      p.inline_password.empty() && p.token_cmd.empty())
    throw Error(ErrorKind::usage, fmt::format("--auth-mode {} needs the shared password: --password-file or "
                                              "--password-env (or the profile's password_file)",
                                              batch::to_string(p.auth)));
  return p;
}

batch::ServerRouting make_routing(const CLI::App* cmd, const ServerOptions& o, const ProfileOptions& po,
                                  std::vector<std::string>& warnings) {
  batch::ServerRouting routing;
  routing.config = batch::load_config_or_default(po.config);
  warnings = routing.config.warnings;
  if (!po.profile.empty()) {
    routing.fixed = with_flags(routing.config.profile(po.profile), cmd, o, po);
  } else if (given(cmd, "--host") || given(cmd, "--provider")) {
    batch::Profile p;
    p.name = "";
    p.domains = {"*"};
    if (given(cmd, "--auth")) p.mechanism = batch::parse_mechanism(o.auth);
    routing.fixed = with_flags(p, cmd, o, po);
    routing.fixed->domains.clear();  // the command line serves every account
  } else {
    for (auto& [name, p] : routing.config.profiles) p = with_flags(p, cmd, o, po);
  }
  auto warn_about = [&warnings](const batch::Profile& p) {
    add_security_warnings(warnings, p.name.empty() ? p.host : "profile " + p.name + " (" + p.host + ")", p.insecure,
                          p.tls == "none");
  };
  if (routing.fixed)
    warn_about(*routing.fixed);
  else
    for (auto& [name, p] : routing.config.profiles) warn_about(p);
  return routing;
}

void add_security_warnings(std::vector<std::string>& warnings, const std::string& where, bool insecure,
                           bool cleartext) {
  if (insecure) warnings.push_back("--insecure: " + where + ": the server's certificate and host name are NOT verified");
  if (cleartext) warnings.push_back("--tls none: " + where + ": the password and mail cross the network unencrypted");
}

batch::AccountLogin make_account_login(const batch::Profile& profile, const std::string& user) {
  std::string secret;
  if (profile.auth == batch::AuthMode::user && !profile.supplies_secret())
    secret = read_secret("", "", "Password for " + user + " at " + profile.host + ": ");
  return batch::make_login(profile, user, secret);
}

void add_batch_options(CLI::App* cmd, BatchOptions& o) {
  cmd->add_option("--accounts", o.accounts,
                  "Run a batch: CSV source_user,source_password,target_user,target_password (or imapsync-style "
                  "u1;p1;u2;p2), one account per line")
      ->check(CLI::ExistingFile)
      ->group("Batch");
  cmd->add_option("--jobs", o.jobs, "Accounts at once (default min(CPUs + 1, 6))")
      ->check(CLI::PositiveNumber)
      ->group("Batch");
  cmd->add_option("--per-server", o.per_server, "Accounts at once against one server (default 4, 0: no cap)")
      ->check(CLI::NonNegativeNumber)
      ->group("Batch");
  cmd->add_option("--max-load", o.max_load,
                  "Start no new account while the load average per CPU is above this (default 0.7, 0: off)")
      ->check(CLI::NonNegativeNumber)
      ->group("Batch");
  cmd->add_option("--account-timeout", o.account_timeout,
                  "Stop an account after this long (e.g. 90m, 24h; default 24h, 0: none); the next run continues it")
      ->group("Batch");
  cmd->add_flag("--retry-errors", o.retry_errors, "Run only the accounts whose last attempt ended in error")
      ->group("Batch");
  cmd->add_flag("--new-batch", o.new_batch, "Start the batch afresh even if the last one did not finish")
      ->group("Batch");
  cmd->add_option("--server-max-bandwidth", o.server_max_bandwidth,
                  "Bytes per second over all accounts of one server together (e.g. 20MB; default: the profile's "
                  "server_max_bandwidth, else none)")
      ->group("Batch");
  cmd->add_option("--server-max-messages-per-second", o.server_max_messages_per_second,
                  "Messages per second over all accounts of one server together (default: the profile's, else none)")
      ->check(CLI::NonNegativeNumber)
      ->group("Batch");
  cmd->add_option("--shard", o.shard,
                  "Run shard I of N (0 <= I < N) of the accounts, into DIR/shard-I-of-N; default from "
                  "JOB_COMPLETION_INDEX/JOB_COMPLETIONS or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT; "
                  "--per-server is then the cap over all N shards")
      ->group("Batch");
}

std::chrono::seconds parse_duration(const std::string& text) {
  size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  long long scale = 0;
  if (unit.empty() || unit == "s") scale = 1;
  else if (unit == "m" || unit == "min") scale = 60;
  else if (unit == "h") scale = 3600;
  else if (unit == "d") scale = 86400;
  if (used == 0 || scale == 0 || n < 0)
    throw Error(ErrorKind::usage, "a duration is a number with s, m, h or d, e.g. 90m or 24h, not " + text);
  return std::chrono::seconds(n * scale);
}

batch::Shard apply_shard(const BatchOptions& o, std::string& archive, batch::RunnerOptions& runner,
                         std::vector<std::string>& warnings) {
  batch::Shard shard;
  if (!o.shard.empty()) shard = batch::parse_shard(o.shard);
  else if (auto from_env = batch::shard_from_environment()) shard = *from_env;
  if (!shard.sharded()) return shard;
  archive = batch::shard_archive_dir(archive, shard).string();
  bool exceeded = false;
  int cap = runner.scheduler.per_server;
  runner.scheduler.per_server = batch::shard_per_server_cap(cap, shard, &exceeded);
  if (exceeded)
    warnings.push_back(fmt::format("--per-server {} is below the {} shards: each shard still runs one account per "
                                   "server, so a server may see up to {} at once",
                                   cap, shard.count, shard.count));
  return shard;
}

batch::BatchLimits make_batch_limits(const ServerOptions& server, const BatchOptions& batch) {
  batch::BatchLimits limits;
  if (!server.daily_budget.empty()) limits.daily_budget = parse_size(server.daily_budget);
  if (!batch.server_max_bandwidth.empty())
    limits.server_max_bytes_per_second = double(parse_size(batch.server_max_bandwidth));
  limits.server_max_messages_per_second = batch.server_max_messages_per_second;
  return limits;
}

batch::RunnerOptions make_runner_options(const BatchOptions& o) {
  batch::RunnerOptions r;
  r.scheduler.jobs = o.jobs;
  r.scheduler.per_server = o.per_server;
  r.scheduler.max_load = o.max_load;
  r.account_timeout = parse_duration(o.account_timeout);
  r.retry_errors = o.retry_errors;
  r.new_batch = o.new_batch;
  return r;
}

RetryPolicy make_retry_policy(const ServerOptions& options, EventSink& events, const std::string& account) {
  RetryPolicy policy;
  policy.max_throttle_wait = std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(options.max_backoff));
  policy.on_throttled = [&events, account](const Error& e, std::chrono::milliseconds wait) {
    double seconds = wait.count() / 1000.0;
    events.emit({{"event", "throttled"}, {"account", account}, {"seconds", seconds}, {"reason", e.message()},
                 {"resume_at", now_seconds() + seconds},
                 {"text", fmt::format("{}: throttled, resuming in {:.1f} s: {}", account, seconds, e.message())}});
  };
  return policy;
}

}  // namespace imapstage::cli

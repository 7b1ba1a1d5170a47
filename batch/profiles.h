// Connector profiles: named server settings in a TOML config file.
//
//   # $XDG_CONFIG_HOME/imapstage/config.toml (or --config FILE)
//   [profiles.oldmail]
//   host = "imap.old.example"
//   protocol = "imap"               # imap | pop3 (export only; POP3 ports 995 implicit, 110 otherwise)
//   port = 993                      # optional
//   tls = "implicit"                # implicit | starttls | none
//   ca_file = "/etc/ssl/old-ca.pem" # optional
//   insecure = false
//   timeout = 120                   # seconds per network read
//   auth = "master-user"            # user | admin-plain | master-user | magic
//   mechanism = "login"             # login | plain | cram-md5 | xoauth2 (user and magic modes); apop (POP3)
//   admin_user = "admin"            # admin-plain and master-user
//   master_separator = "*"          # master-user: logs in as USER<sep>ADMIN
//   password_file = "/etc/imapstage/old-admin.secret"   # or password_env = "VAR"
//   token_cmd = "imapstage oauth2 token --tenant T --client-id ID --client-secret-file F"
//                                   # XOAUTH2 tokens from a command (user and magic modes; implies
//                                   # mechanism xoauth2): run with /bin/sh -c, the mailbox in
//                                   # $IMAPSTAGE_USER, and again when the server refuses an expired token
//   domains = ["example.org", "example.net"]            # "*" serves every domain
//   provider = "gmail"              # gmail | microsoft365: the provider's defaults (batch/providers.h)
//                                   # for host, port, tls, mechanism (xoauth2), max message size,
//                                   # daily budgets, per-server caps and quirks; every other key
//                                   # of the profile overrides them
//   daily_budget = "2400MB"         # bytes moved per account per 24 h (download for export, upload
//                                   # for import; "" or "0": none); the account is parked when spent
//   server_max_bandwidth = "20MB"   # per second, all accounts of this server in a batch together
//   server_max_messages_per_second = 50
//   restore_flagged = true          # re-STORE \Flagged after APPEND (Microsoft 365 drops it)
//   case_insensitive_names = true   # the target's folder names ignore case: import keeps folders
//                                   # differing only in case apart (import/folder_map.h, rule 7)
//   reserved_folders = ["[Gmail]/"] # names the target owns ("X/": X and below); import renames
//                                   # source folders landing there (rule 8)
//   max_command_length = 8000       # longer UID sets are split over several commands
//
// Secrets: a profile names where a secret is (password_file, password_env;
// token_file and token_env are the same for XOAUTH2 tokens; "{user}" in a
// file name is replaced by the mailbox). An inline `password = "..."` is
// accepted but a warning is given each time the profile is used.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "imap/session.h"
#include "pop3/session.h"

namespace imapstage::batch {

enum class AuthMode {
  user,         // each account logs in with its own password (or token)
  admin_plain,  // SASL PLAIN: authentication id admin_user, authorization id the mailbox
  master_user,  // LOGIN as MAILBOX<sep>ADMIN with the admin password
  magic,        // every mailbox logs in with the same shared password
};

const char* to_string(AuthMode mode);
// Parses "user", "admin-plain", "master-user", "magic". Throws Error(usage).
AuthMode parse_auth_mode(std::string_view text);
// "login", "plain", "cram-md5", "xoauth2", "apop".
const char* to_string(imap::AuthMechanism mechanism);
// Throws Error(usage) for anything else.
imap::AuthMechanism parse_mechanism(std::string_view text);

struct Profile {
  std::string name;
  std::string host;
  std::string protocol = "imap";   // imap | pop3 (a POP3 source for export)
  uint16_t port = 0;
  std::string tls = "implicit";
  std::string ca_file;
  bool insecure = false;
  int timeout_seconds = 120;
  uint64_t max_message_mib = 1024;  // --max-message-size (command line only)
  AuthMode auth = AuthMode::user;
  imap::AuthMechanism mechanism = imap::AuthMechanism::login;
  std::string admin_user;
  std::string master_separator = "*";
  std::string password_file;       // may contain "{user}"
  std::string password_env;
  std::string inline_password;     // discouraged; `inline_secret_warning` says so
  std::string token_cmd;           // XOAUTH2 token command (common/token_command.h); "" none
  std::vector<std::string> domains;  // lower case; "*" serves every domain; empty: only by name
  std::string provider;            // "gmail", "microsoft365" or "" (batch/providers.h)
  uint64_t daily_budget = 0;       // bytes per account per 24 h window; 0: the provider's, or none
  uint64_t provider_download_budget = 0;  // the provider's daily budgets (apply_provider)
  uint64_t provider_upload_budget = 0;
  // The daily budget of an export (download) or an import (upload) through this profile; 0: none.
  uint64_t budget(bool upload) const {
    return daily_budget ? daily_budget : (upload ? provider_upload_budget : provider_download_budget);
  }
  double server_max_bytes_per_second = 0;     // per server, all accounts of a batch; 0: none
  double server_max_messages_per_second = 0;
  bool restore_flagged = false;    // re-STORE \Flagged after APPEND
  bool case_insensitive_names = false;        // import: folder names differing in case are one folder there
  std::vector<std::string> reserved_folders;  // import: names the target owns ("[Gmail]/")
  size_t max_command_length = 0;   // split longer UID sets; 0: the session's default

  // This profile with the provider's defaults: every field still at its
  // default value takes the provider's (host, port, tls, mechanism, sizes,
  // budgets, caps, quirks). Throws Error(usage) for an unknown provider.
  void apply_provider(std::string_view name);

  // Whether this profile serves `user` ("name@domain"): its domain is in
  // `domains` (case-insensitive) or `domains` holds "*".
  bool serves(std::string_view user) const;
  // The endpoint it describes. Throws Error(usage) for a bad tls.
  imap::Endpoint endpoint() const;
  // The same as a POP3 endpoint (ports 995 / 110 when none is given).
  pop3::Endpoint pop3_endpoint() const;
  // "host:port" of the server for `protocol`.
  std::string address() const;
  // Whether the secret comes from the profile (admin, master-user, magic, or a password source given).
  bool supplies_secret() const;
};

struct Config {
  std::filesystem::path origin;          // the file it came from ("" for text)
  std::map<std::string, Profile> profiles;
  std::vector<std::string> warnings;     // e.g. inline passwords

  // The profile named `name`; throws Error(usage) listing the known names.
  const Profile& profile(std::string_view name) const;
  // The profile serving `user`'s domain, or nullptr. When several do, the
  // one naming the domain explicitly wins over "*"; ties go to the first by name.
  const Profile* profile_for(std::string_view user) const;
};

// Parses TOML text. Throws Error(usage) naming the origin, line and key for
// anything malformed or unknown.
Config parse_config(std::string_view text, const std::filesystem::path& origin = {});
// Reads a config file. Throws Error(io) if unreadable, Error(usage) if malformed.
Config load_config(const std::filesystem::path& path);
// $XDG_CONFIG_HOME/imapstage/config.toml, else $HOME/.config/imapstage/config.toml.
std::filesystem::path default_config_path();
// The config of --config FILE, or the default file when it exists, or an empty config.
Config load_config_or_default(const std::string& explicit_path);

// The POP3 login for IMAP-style credentials: login is USER/PASS (master-user
// logins "MAILBOX*ADMIN" included), plain is SASL PLAIN (with the admin's
// authorization identity), cram-md5, xoauth2 and apop as they are.
pop3::Credentials pop3_credentials(const imap::Credentials& credentials);

// The lower-case domain of "user@domain", or "".
std::string domain_of(std::string_view user);

// How one mailbox logs in under a profile's auth mode.
struct AccountLogin {
  imap::Credentials credentials;  // what Session::login gets
  std::string mailbox;            // the mailbox opened (for the archived account name)
  std::string describe;           // "master-user LOGIN as alice*admin", never a secret
};

// Builds the login of `mailbox` under `profile`. `account_secret` is the
// password from the accounts file ("" when not given); without it, a
// profile's token_cmd gives the login a token source for `mailbox`. The profile's
// password source is read when the mode needs it (admin, master, magic) or
// when `account_secret` is empty. Throws Error(usage) naming the mailbox and
// the mode when no secret can be had.
AccountLogin make_login(const Profile& profile, const std::string& mailbox, const std::string& account_secret);

// Reads the profile's secret for `mailbox` (password_file with {user}
// replaced, password_env, or the inline one); "" when the profile has no source.
std::string profile_secret(const Profile& profile, const std::string& mailbox);

// Which server each account of a batch goes to.
struct ServerRouting {
  // --source-profile/--target-profile NAME or --host: every account goes
  // there, unless the account has a domain that the profile's `domains` (when
  // not empty) does not list.
  std::optional<Profile> fixed;
  // Otherwise: the profile serving the account's domain (Config::profile_for).
  Config config;

  // The profile for `user`. Throws Error(usage) naming the user (and its
  // domain) when no profile serves it.
  const Profile& route(const std::string& user) const;
};

}  // namespace imapstage::batch

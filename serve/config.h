// The configuration of `imapstage serve` and `imapstage login-hook`: one TOML
// file (serve/serve.example.toml shows every key) holding the connector
// profiles (batch/profiles.h) and two sections:
//
//   [serve]
//   state_dir = "/var/lib/imapstage"   # jobs.json, secrets/, spool/, archive/ (mode 0711: the socket and
//                                      # the spool are reached by the hook's user)
//   archive = ""                       # default STATE_DIR/archive
//   socket = ""                        # default STATE_DIR/control.sock
//   key_file = "/etc/imapstage/serve.key"  # 32 random bytes, owner-only; made when missing
//   source_profile = "oldmail"         # where users' mail is (the hook verifies passwords there)
//   target_profile = "newmail"         # the new server, with master-user (or admin) credentials
//   jobs = 0                           # jobs at once (0: min(CPUs + 1, 6)); per_server, max_load,
//   per_server = 4                     # account_timeout: as for batches
//   max_load = 0.7
//   account_timeout = "24h"
//   retries = 3                        # attempts after a failure that may pass (network, timeout)
//   retry_delay = "1m"                 # doubled after each failed attempt
//   verify = "deep"                    # counts | deep: verify --against target after import
//   delta_after = "30m"                # a delta pass this long after a pass ended ("0": none)
//   delta_passes = 1                   # how many delta passes
//   delta_until = ""                   # RFC 3339 time: no delta pass starts after it
//   admin_users = []                   # users who may run `imapstage jobs` (root and the daemon's own user always may)
//   hook_users = ["dovecot"]           # users whose logins may enqueue (the hook and the trigger)
//
//   [web]                              # the self-service page (serve/web.h); off unless `listen` is set
//   listen = "0.0.0.0:8443"            # HOST:PORT; plain HTTP only on a loopback address
//   tls_cert = "/etc/imapstage/web.pem"  # certificate chain (PEM); required unless listen is on loopback
//   tls_key = "/etc/imapstage/web.key"
//   base_url = "https://migrate.example" # how users reach it (the invitation links); default from listen
//   invite_ttl = "14d"                 # how long an invitation link works
//   attempts_per_link = 5              # password attempts per link and per IP address
//   attempts_per_ip = 20               # within attempts_window
//   attempts_window = "15m"
//   refresh = 5                        # seconds between refreshes of the status page
//   admin_token_file = ""              # a token (first line) that opens the console at /admin; empty: no console
//   manifest_key = ""                  # Ed25519 private key (PEM) signing the console's manifests; empty: unsigned
//
//   [login_hook]
//   timeout = 30                       # seconds for the whole hook (Dovecot sets none)
//   cutover = ""                       # RFC 3339 time: from then on the hook refuses every login (exit 1)
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "batch/profiles.h"
#include "batch/scheduler.h"

namespace imapstage::serve {

struct ServeConfig {
  batch::Config profiles;
  std::filesystem::path state_dir = "/var/lib/imapstage";
  std::filesystem::path archive;      // resolved: STATE_DIR/archive when not given
  std::filesystem::path socket;       // resolved: STATE_DIR/control.sock when not given
  std::filesystem::path key_file;     // required by the daemon
  std::string source_profile;
  std::string target_profile;
  batch::SchedulerOptions scheduler;
  std::chrono::seconds account_timeout{24 * 3600};
  int retries = 3;
  std::chrono::seconds retry_delay{60};
  bool deep_verify = true;
  std::chrono::seconds delta_after{30 * 60};
  int delta_passes = 1;
  int64_t delta_until = 0;            // unix seconds, 0: none
  std::vector<std::string> admin_users;
  std::vector<std::string> hook_users = {"dovecot"};
  std::chrono::seconds hook_timeout{30};
  int64_t cutover = 0;                // unix seconds, 0: none
  struct Web {
    std::string listen;                // HOST:PORT; empty: no web pages
    std::filesystem::path tls_cert, tls_key;
    std::string base_url;
    std::chrono::seconds invite_ttl{14 * 24 * 3600};
    int attempts_per_link = 5;
    int attempts_per_ip = 20;
    std::chrono::seconds attempts_window{15 * 60};
    int refresh = 5;
    std::filesystem::path admin_token_file;
    std::filesystem::path manifest_key;
  } web;

  std::filesystem::path spool_dir() const { return state_dir / "spool"; }
  std::filesystem::path secrets_dir() const { return state_dir / "secrets"; }
  std::filesystem::path jobs_file() const { return state_dir / "jobs.json"; }
  const batch::Profile& source() const;  // Throws Error(usage) naming the missing profile.
  const batch::Profile& target() const;
  // Whether the target needs each user's own password: its auth is "user"
  // and it names no password source (the self-service page then asks for it).
  bool target_wants_user_password() const {
    return target().auth == batch::AuthMode::user && !target().supplies_secret();
  }
};

// Parses the file. Throws Error(usage) naming the file, line and key for
// anything malformed or unknown; Error(io) when unreadable.
ServeConfig load_serve_config(const std::filesystem::path& path);
ServeConfig parse_serve_config(const std::string& text, const std::filesystem::path& origin);

// "2026-12-31T00:00:00Z" or with an offset ("+01:00") to unix seconds.
// Throws Error(usage).
int64_t parse_rfc3339(const std::string& text);

}  // namespace imapstage::serve

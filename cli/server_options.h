// Command-line options shared by every subcommand that talks to a server:
// where it is, how to secure the connection, who to log in as and where the
// secret comes from. Secrets are never taken from argv.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "imap/session.h"

namespace imapstage::cli {

struct ServerOptions {
  std::string host;
  uint16_t port = 0;
  std::string tls = "implicit";  // implicit | starttls | none
  std::string ca_file;
  bool insecure = false;
  int timeout_seconds = 120;
  std::string user;
  std::string auth = "login";    // login | plain | cram-md5 | xoauth2
  std::string auth_user;         // admin identity for SASL PLAIN authzid
  std::string password_file;
  std::string password_env;
};

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

}  // namespace imapstage::cli

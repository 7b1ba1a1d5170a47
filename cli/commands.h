// Registration of every subcommand. Each subcommand lives in its own file
// (export/export_command.cpp, cli/ls_command.cpp, ...) and adds itself to the
// application with an add_<name>_command function; its callback stores the
// exit status in `status`.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/app.h"
#include "archive-format/archive.h"
#include "common/error.h"

namespace imapstage::cli {

void register_commands(CLI::App& app, int& status);

void add_export_command(CLI::App& app, int& status);
void add_import_command(CLI::App& app, int& status);
void add_manifest_command(CLI::App& app, int& status);
void add_verify_command(CLI::App& app, int& status);
void add_ls_command(CLI::App& app, int& status);
void add_cat_command(CLI::App& app, int& status);
void add_repair_command(CLI::App& app, int& status);
void add_status_command(CLI::App& app, int& status);
void add_mount_command(CLI::App& app, int& status);    // filesystem/mount_command.cpp
void add_extract_command(CLI::App& app, int& status);  // filesystem/extract_command.cpp
void add_serve_command(CLI::App& app, int& status);      // serve/serve_command.cpp
void add_jobs_command(CLI::App& app, int& status);       // serve/jobs_command.cpp
void add_login_hook_command(CLI::App& app, int& status); // serve/login_hook_command.cpp (also login-trigger)
void add_bundle_command(CLI::App& app, int& status);     // bundle/bundle_command.cpp
void add_invite_command(CLI::App& app, int& status);     // serve/invite_command.cpp
void add_merge_command(CLI::App& app, int& status);      // bundle/merge_command.cpp
void add_oauth2_command(CLI::App& app, int& status);     // cli/oauth2_command.cpp
void add_providers_command(CLI::App& app, int& status);  // batch/providers_command.cpp
void add_init_command(CLI::App& app, int& status);       // cli/init_command.cpp
void add_key_command(CLI::App& app, int& status);        // cli/key_command.cpp

// Creates an empty encrypted archive at `dir`, asking for its passphrase
// (--passphrase-file, --passphrase-env, or twice on the terminal), and opens it.
std::unique_ptr<archive::Archive> create_encrypted_archive(const std::string& dir, unsigned scrypt_log_n);

// The exit status for an error that ends a command.
int exit_code_for(const Error& e);

}  // namespace imapstage::cli

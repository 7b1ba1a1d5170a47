// Passphrases of encrypted archives (archive-format/FORMAT.md, "Encryption"):
// from a file, an environment variable or a prompt on the terminal (no
// echo); never from the command line itself.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace imapstage::cli {

// Where a passphrase comes from; both empty: the terminal.
struct PassphraseFrom {
  std::string file;  // the passphrase is the file's content (one final line end ignored)
  std::string env;   // the passphrase is this environment variable's value
};

// Adds --passphrase-file and --passphrase-env to the whole program (they may
// follow any subcommand) and makes them the source every archive opening
// asks (archive::set_default_passphrase_source). The passphrase is read once
// per process.
void add_passphrase_options(CLI::App& app);

// Reads a passphrase. On a terminal it asks with `prompt` (twice when
// `confirm`, which must match). Throws Error(usage) when the file or variable
// is missing or empty, or there is no terminal to ask on.
std::string read_passphrase(const PassphraseFrom& from, const std::string& prompt, bool confirm);

// The source set by add_passphrase_options: what --passphrase-file or
// --passphrase-env say.
const PassphraseFrom& passphrase_options();

// Whether a passphrase can be had without failing: a file or variable was
// named, or there is a terminal to ask on.
bool passphrase_available();

}  // namespace imapstage::cli

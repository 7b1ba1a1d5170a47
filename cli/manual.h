// Manual pages and shell completions generated from the command line itself
// (the CLI11 application build_app() makes), so they list exactly the
// commands, options, values and defaults the program takes. The build runs
// imapstage-docs (cli/docs_main.cpp), which writes them with these functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

namespace imapstage::cli {

// One generated file: a name relative to the output directory and its text.
struct GeneratedFile {
  std::string path;
  std::string text;
};

// imapstage(1): the synopsis, the global options, every command with its
// description, the exit statuses.
std::string root_man_page(const CLI::App& root, std::string_view version);

// imapstage-COMMAND(1) for one top-level command: synopsis, description,
// arguments, options by group, and each nested subcommand (for example
// `bundle create`) in a section of its own.
std::string command_man_page(const CLI::App& command, std::string_view version);

// A bash completion script (for /usr/share/bash-completion/completions/imapstage):
// commands and subcommands, the options of each, the values of options that
// take one of a fixed set, file names for other values.
std::string bash_completion(const CLI::App& root);

// A zsh completion function (for /usr/share/zsh/vendor-completions/_imapstage):
// the same, with each command's and option's description.
std::string zsh_completion(const CLI::App& root);

// Every file above: man/imapstage.1, man/imapstage-COMMAND.1 for each visible
// command, completion/imapstage (bash) and completion/_imapstage (zsh).
std::vector<GeneratedFile> generated_docs(const CLI::App& root, std::string_view version);

}  // namespace imapstage::cli

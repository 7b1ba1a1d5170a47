// The manual pages and completions generated from the command line
// (cli/manual.h) and `imapstage --version`: every command has a page with its
// options, the bash completion completes commands, options and fixed values
// when bash runs it, and the version names the format and the libraries.
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "cli/app.h"
#include "cli/manual.h"
#include "cli/version.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::TempDir;

struct Built {
  CLI::App app;
  int status = 0;
  Built() { cli::build_app(app, status); }
};

const cli::GeneratedFile* find(const std::vector<cli::GeneratedFile>& files, const std::string& path) {
  for (const auto& f : files)
    if (f.path == path) return &f;
  return nullptr;
}

TEST(Manual, APagePerVisibleCommandAndNoOther) {
  Built b;
  auto files = cli::generated_docs(b.app, "9.8.7");
  std::set<std::string> pages, expected{"man/imapstage.1"};
  for (const auto& f : files)
    if (f.path.rfind("man/", 0) == 0) pages.insert(f.path);
  for (const auto* sub : b.app.get_subcommands([](const CLI::App* s) { return !s->get_name().empty(); }))
    expected.insert("man/imapstage-" + sub->get_name() + ".1");
  EXPECT_EQ(pages, expected);
  EXPECT_GE(pages.size(), 10u);
  const auto* root = find(files, "man/imapstage.1");
  ASSERT_NE(root, nullptr);
  EXPECT_NE(root->text.find(".TH IMAPSTAGE 1 \"\" \"imapstage 9.8.7\""), std::string::npos);
  EXPECT_NE(root->text.find(".BR imapstage\\-export (1)"), std::string::npos);
  EXPECT_NE(root->text.find("\\-\\-version"), std::string::npos);
  EXPECT_NE(root->text.find(".SH \"EXIT STATUS\""), std::string::npos);
}

TEST(Manual, CommandPageListsOptionsGroupsChoicesAndSubcommands) {
  Built b;
  auto files = cli::generated_docs(b.app, "1.0");
  const auto* exp = find(files, "man/imapstage-export.1");
  ASSERT_NE(exp, nullptr);
  const std::string& t = exp->text;
  EXPECT_NE(t.find(".SH NAME\nimapstage\\-export \\- "), std::string::npos);
  // Every visible option of export, by its long name, with the notes the command line implies.
  auto* cmd = b.app.get_subcommand("export");
  for (const auto* opt : cmd->get_options([](const CLI::Option* o) { return !o->get_group().empty(); }))
    for (const auto& l : opt->get_lnames()) {
      std::string escaped = "\\fB";
      for (char c : "--" + l) escaped += c == '-' ? std::string("\\-") : std::string(1, c);
      EXPECT_NE(t.find(escaped + "\\fR"), std::string::npos) << l;
    }
  EXPECT_NE(t.find("Required."), std::string::npos);  // --archive
  EXPECT_NE(t.find(".SH \"SERVER OPTIONS\""), std::string::npos);  // --host, --tls ... are in group Server
  EXPECT_NE(t.find("One of: implicit, starttls, none."), std::string::npos);  // --tls
  // No line starts with something roff would read as a request by accident.
  std::istringstream lines(t);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    EXPECT_TRUE(line[0] != '\'') << line;
    if (line[0] == '.')
      EXPECT_TRUE(std::regex_search(line, std::regex(R"(^\.(TH|SH|SS|TP|PP|B|BR|br|\\") ?)"))) << line;
  }
  // Nested commands are sections of their parent's page.
  const auto* bundle = find(files, "man/imapstage-bundle.1");
  ASSERT_NE(bundle, nullptr);
  EXPECT_NE(bundle->text.find(".SS \"imapstage bundle create\""), std::string::npos);
  EXPECT_NE(bundle->text.find(".SS \"imapstage bundle apply\""), std::string::npos);
}

// Runs the generated bash completion for the words of a command line whose
// last word is being completed; returns what it offers, one per line.
std::string complete(const std::string& script, const std::vector<std::string>& words) {
  TempDir dir;
  std::string file = dir.path() + "/imapstage";
  std::ofstream(file) << script;
  std::string array;
  for (const auto& w : words) array += " '" + w + "'";
  std::string program = "source '" + file + "'; COMP_WORDS=(" + array + "); COMP_CWORD=" +
                        std::to_string(words.size() - 1) + "; cd '" + dir.path() +
                        "'; _imapstage; printf '%s\\n' \"${COMPREPLY[@]}\"";
  auto r = testing::run_process({"/bin/bash", "-c", program});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

TEST(Manual, BashCompletionCompletesCommandsOptionsAndValues) {
  Built b;
  std::string script = cli::bash_completion(b.app);
  EXPECT_NE(script.find("complete -F _imapstage imapstage"), std::string::npos);
  auto r = testing::run_process({"/bin/bash", "-n", "-c", script});
  EXPECT_EQ(r.exit_code, 0) << r.err;

  std::string commands = complete(script, {"imapstage", "ex"});
  EXPECT_NE(commands.find("export\n"), std::string::npos) << commands;
  EXPECT_NE(commands.find("extract\n"), std::string::npos) << commands;
  EXPECT_EQ(commands.find("import"), std::string::npos) << commands;

  std::string options = complete(script, {"imapstage", "export", "--arc"});
  EXPECT_EQ(options, "--archive\n");
  // After an option that takes a value, the command path is still found.
  std::string tls = complete(script, {"imapstage", "export", "--archive", "a", "--tls", ""});
  EXPECT_EQ(tls, "implicit\nstarttls\nnone\n");
  std::string nested = complete(script, {"imapstage", "bundle", ""});
  EXPECT_EQ(nested, "create\nverify\napply\n");
  std::string nested_options = complete(script, {"imapstage", "bundle", "create", "--sp"});
  EXPECT_EQ(nested_options, "--split\n");
  // A value without a fixed set completes file names.
  std::string files = complete(script, {"imapstage", "export", "--archive", "imap"});
  EXPECT_EQ(files, "imapstage\n");
}

TEST(Manual, ZshCompletionHasAFunctionPerCommand) {
  Built b;
  std::string script = cli::zsh_completion(b.app);
  EXPECT_EQ(script.rfind("#compdef imapstage\n", 0), 0u);
  EXPECT_NE(script.find("\n_imapstage() {"), std::string::npos);
  EXPECT_NE(script.find("\n_imapstage_export() {"), std::string::npos);
  EXPECT_NE(script.find("\n_imapstage_bundle_create() {"), std::string::npos);
  EXPECT_NE(script.find("bundle) _imapstage_bundle ;;"), std::string::npos);
  EXPECT_NE(script.find("'--tls[implicit (default), starttls, or none]"), std::string::npos);
  EXPECT_NE(script.find(":(implicit starttls none)"), std::string::npos);
  // zsh reads it (tools/setup installs zsh).
  TempDir dir;
  std::string file = dir.path() + "/_imapstage";
  std::ofstream(file) << script;
  auto r = testing::run_process({"/usr/bin/zsh", "-n", file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(Version, NamesProgramFormatAndLibraries) {
  auto r = testing::run_imapstage({"--version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, cli::version_text() + "\n");
  EXPECT_EQ(r.out.rfind("imapstage " + std::string(cli::program_version()) + "\n", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("archive format " + std::to_string(archive::kFormatVersion) + " "), std::string::npos);
  for (const char* lib : {"libetpan", "GnuTLS", "OpenSSL", "LMDB", "zstd"})
    EXPECT_TRUE(std::regex_search(r.out, std::regex(std::string(lib) + " [0-9]+\\.[0-9]+"))) << lib << "\n" << r.out;
  EXPECT_TRUE(std::regex_match(std::string(cli::program_version()), std::regex("[0-9]+\\.[0-9]+\\.[0-9]+")));
}

}  // namespace
}  // namespace imapstage

// imapstage extract: the archive's messages as Maildir, mbox or EML files.
#include <cstdio>

#include "cli/commands.h"
#include "cli/display.h"
#include "common/message_filter.h"
#include "filesystem/extract.h"

namespace imapstage::cli {

namespace {

struct ExtractArgs {
  filesystem::ExtractOptions options;
  std::string archive;
  std::string out;
  std::string to;
  std::string layout = "nested";
  std::string since, before;
  bool json = false;
  int verbosity = 0;
};

}  // namespace

void add_extract_command(CLI::App& app, int& status) {
  auto args = std::make_shared<ExtractArgs>();
  auto* cmd = app.add_subcommand("extract",
                                 "Write archived messages out as Maildir, mbox (mboxrd) or EML files; never "
                                 "overwrites, a re-run adds what is missing");
  cmd->add_option("--archive", args->archive, "Archive directory")->required();
  cmd->add_option("--to", args->to, "maildir, mbox or eml")
      ->required()
      ->check(CLI::IsMember({"maildir", "mbox", "eml"}));
  cmd->add_option("--out", args->out, "Output directory (created if missing)")->required();
  cmd->add_option("--account", args->options.catalog.accounts, "Only this account (repeatable; default: all)");
  cmd->add_option("--folder", args->options.catalog.include,
                  "Only folders matching this glob (repeatable), names as `ls` shows them, e.g. 'Projects/*'");
  cmd->add_option("--exclude", args->options.catalog.exclude, "Skip folders matching this glob (repeatable)");
  cmd->add_option("--since", args->since, "Only messages with INTERNALDATE on or after this day (YYYY-MM-DD, UTC)");
  cmd->add_option("--before", args->before, "Only messages with INTERNALDATE before this day (YYYY-MM-DD, UTC)");
  cmd->add_option("--layout", args->layout, "Maildir folder layout: nested (default) or maildir++")
      ->check(CLI::IsMember({"nested", "maildir++"}));
  cmd->add_flag("--json", args->json, "Write JSON-lines events on stdout instead of the terminal display");
  cmd->add_flag("-v,--verbose", [args](int64_t n) { args->verbosity = static_cast<int>(n); }, "More detail");
  cmd->add_flag("-q,--quiet", [args](int64_t) { args->verbosity = -1; }, "Only errors and the summary");
  cmd->callback([args, &status] {
    auto options = args->options;
    options.archive_dir = args->archive;
    options.out_dir = args->out;
    options.format = args->to == "mbox"  ? filesystem::ExtractFormat::mbox
                     : args->to == "eml" ? filesystem::ExtractFormat::eml
                                         : filesystem::ExtractFormat::maildir;
    options.catalog.layout =
        args->layout == "maildir++" ? filesystem::Layout::maildir_plus : filesystem::Layout::nested;
    if (!args->since.empty()) options.catalog.since = parse_day(args->since);
    if (!args->before.empty()) options.catalog.before = parse_day(args->before);

    CommandSink<TerminalSink> out(args->json, args->verbosity);
    auto summary = filesystem::run_extract(options, *out.sink);
    if (out.terminal) {
      out.terminal->finish();
      say(stdout, "extract: {} folders, {} messages selected, {} written ({}), {} already there, in {}\n",
          summary.folders, summary.messages, summary.written, human_bytes(double(summary.bytes_written)),
          summary.already_present, human_duration(summary.seconds));
      if (!summary.complete()) {
        say(stdout, "INCOMPLETE: {} messages not written:\n", summary.failed.size());
        for (auto& f : summary.failed) say(stdout, "  {}\n", f);
      }
    }
    status = summary.complete() ? kExitOk : kExitIncomplete;
  });
}

}  // namespace imapstage::cli

// imapstage merge --archive OUT IN...: the union of several archives (the
// shards of one batch) in one, as bundle/merge.h describes.
#include <cstdio>
#include <memory>

#include "bundle/merge.h"
#include "cli/commands.h"
#include "cli/display.h"
#include "common/error.h"

namespace imapstage::cli {

namespace {

struct MergeArgs {
  std::string out;
  std::vector<std::string> inputs;
  bool json = false;
  bool quiet = false;
};

// One line per account and a summary, on stdout.
class MergeTextSink : public EventSink {
 public:
  explicit MergeTextSink(bool quiet) : quiet_(quiet) {}
  void emit(const nlohmann::json& e) override {
    auto name = e.value("event", std::string());
    if (quiet_ && name != "merge_done") return;
    say(stdout, "{}\n", e.value("text", std::string()));
  }

 private:
  bool quiet_;
};

}  // namespace

void add_merge_command(CLI::App& app, int& status) {
  auto args = std::make_shared<MergeArgs>();
  auto* cmd = app.add_subcommand(
      "merge", "Merge archives (the shards of a batch) into one: objects stored once, conflicting rows refused");
  cmd->add_option("--archive", args->out, "The archive to merge into (created when missing or empty)")->required();
  cmd->add_option("inputs", args->inputs, "Archives to merge (e.g. DIR/shard-*-of-3); none is changed")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("--json", args->json, "Write JSON lines events (merge_start, merge_account, merge_done)");
  cmd->add_flag("-q,--quiet", args->quiet, "Print only the summary");
  cmd->callback([args, &status] {
    std::unique_ptr<EventSink> sink;
    if (args->json) sink = std::make_unique<JsonLinesSink>(stdout);
    else sink = std::make_unique<MergeTextSink>(args->quiet);
    bundle::merge(args->out, args->inputs, *sink);
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

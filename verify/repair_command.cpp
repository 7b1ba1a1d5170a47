// imapstage repair: rebuild the archive's index from its packs.
#include <cstdio>

#include <fmt/format.h>

#include "archive-format/rebuild.h"
#include "cli/commands.h"
#include "common/error.h"

namespace imapstage::cli {

namespace {

struct RepairArgs {
  std::string archive;
  bool rebuild_index = false;
  bool force = false;
  bool json = false;
};

void print_report(const archive::RebuildReport& r) {
  std::printf("rebuilt the index of %s from %llu packs (%llu records) in %.1f s\n", r.archive.c_str(),
              (unsigned long long)r.packs, (unsigned long long)r.records, r.seconds);
  std::printf("  objects:   %llu indexed, %llu duplicate copies, %llu damaged\n", (unsigned long long)r.objects,
              (unsigned long long)r.duplicate_objects, (unsigned long long)r.bad_objects);
  std::printf("  journals:  %llu replayed\n", (unsigned long long)r.journals);
  std::printf("  restored:  %llu accounts, %llu folders, %llu messages, %llu targets, %llu appends, %llu runs\n",
              (unsigned long long)r.accounts, (unsigned long long)r.folders, (unsigned long long)r.messages,
              (unsigned long long)r.targets, (unsigned long long)r.appends, (unsigned long long)r.runs);
  std::printf("  torn tails: %llu\n", (unsigned long long)r.torn_tails);
  if (!r.old_index.empty()) std::printf("  the old index was kept in %s\n", r.old_index.c_str());
  if (!r.installed)
    std::printf("  NOT INSTALLED: the current index holds %llu message records and %llu objects the rebuilt one "
                "lacks; it stays in place\n",
                (unsigned long long)r.lost_messages, (unsigned long long)r.lost_objects);
  for (auto& p : r.problems) std::printf("PROBLEM: %s\n", p.c_str());
  for (auto& n : r.not_restored) std::printf("NOT RESTORED: %s\n", n.c_str());
}

}  // namespace

void add_repair_command(CLI::App& app, int& status) {
  auto args = std::make_shared<RepairArgs>();
  auto* cmd = app.add_subcommand("repair", "Repair the archive: rebuild its index from the pack files");
  cmd->add_option("--archive", args->archive, "Archive directory")->required();
  cmd->add_flag("--rebuild-index", args->rebuild_index,
                "Build a new index from the packs (objects and journal records); the old one is kept beside it");
  cmd->add_flag("--force", args->force,
                "Install the rebuilt index even when it lacks messages the current, readable index holds");
  cmd->add_flag("--json", args->json, "Print the report as one JSON object");
  cmd->callback([args, &status] {
    if (!args->rebuild_index) throw Error(ErrorKind::usage, "repair needs --rebuild-index (the only repair there is)");
    auto report = archive::rebuild_index(args->archive, {}, {.force = args->force});
    if (args->json) std::printf("%s\n", report.to_json().dump().c_str());
    else print_report(report);
    std::fflush(stdout);
    bool complete = report.installed && report.problems.empty() && report.not_restored.empty();
    status = complete ? kExitOk : kExitIncomplete;
  });
}

}  // namespace imapstage::cli

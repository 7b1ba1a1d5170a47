// imapstage mount: the archive as a read-only Maildir filesystem (FUSE).
#include "cli/commands.h"
#include "filesystem/mount.h"

namespace imapstage::cli {

namespace {

struct MountArgs {
  filesystem::MountOptions options;
  std::string archive;
  std::string mountpoint;
  std::string layout = "nested";
  uint64_t cache_mib = 8;
};

}  // namespace

void add_mount_command(CLI::App& app, int& status) {
  auto args = std::make_shared<MountArgs>();
  auto* cmd = app.add_subcommand(
      "mount", "Mount the archive read-only as Maildirs: MOUNTPOINT/ACCOUNT/FOLDER/cur/<message files> (FUSE)");
  cmd->add_option("--archive", args->archive, "Archive directory")->required();
  cmd->add_option("mountpoint", args->mountpoint, "An empty directory to mount on")->required();
  cmd->add_option("--account", args->options.catalog.accounts, "Only this account (repeatable; default: all)");
  cmd->add_option("--layout", args->layout,
                  "nested: one directory per folder level; maildir++: INBOX at the account root, other folders "
                  "as .A.B beside it (what Dovecot and mutt open as one Maildir root)")
      ->check(CLI::IsMember({"nested", "maildir++"}));
  cmd->add_flag("--all-generations", args->options.catalog.all_generations,
                "Also show every UIDVALIDITY generation, expunged messages included, under "
                "all-generations/ACCOUNT/FOLDER/uidvalidity-N/");
  cmd->add_flag("-f,--foreground", args->options.foreground,
                "Serve in this process until unmounted (fusermount3 -u), SIGINT or SIGTERM");
  cmd->add_flag("--allow-other", args->options.allow_other,
                "Let other users read the mount (root, or user_allow_other in /etc/fuse.conf)");
  cmd->add_option("--cache-size", args->cache_mib, "MiB of decompressed messages kept in memory (default 8)")
      ->check(CLI::Range(1, 4096));
  cmd->callback([args, &status] {
    auto options = args->options;
    options.archive_dir = args->archive;
    options.mountpoint = args->mountpoint;
    options.catalog.layout =
        args->layout == "maildir++" ? filesystem::Layout::maildir_plus : filesystem::Layout::nested;
    options.cache_bytes = args->cache_mib << 20;
    options.spill_bytes = std::min<uint64_t>(options.spill_bytes, options.cache_bytes / 4);
    filesystem::run_mount(options);
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

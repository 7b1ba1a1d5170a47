// imapstage cat: one archived message's raw bytes on stdout, checked against its hash.
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "archive-format/lookup.h"
#include "cli/commands.h"
#include "common/error.h"

namespace imapstage::cli {

namespace {

struct CatArgs {
  std::string archive;
  std::string account;
  std::string folder;
  uint32_t uid = 0;
  uint32_t uidvalidity = 0;
};

}  // namespace

void add_cat_command(CLI::App& app, int& status) {
  auto args = std::make_shared<CatArgs>();
  auto* cmd = app.add_subcommand("cat", "Write one archived message, byte for byte, to stdout");
  cmd->add_option("--archive", args->archive, "Archive directory")->required();
  cmd->add_option("account", args->account, "Account name")->required();
  cmd->add_option("folder", args->folder, "Folder name")->required();
  cmd->add_option("uid", args->uid, "Message UID")->required();
  cmd->add_option("--uidvalidity", args->uidvalidity, "UIDVALIDITY generation (default: the current one)");
  cmd->callback([args, &status] {
    auto a = archive::Archive::open(args->archive, archive::Archive::Mode::read);
    auto account = archive::resolve_account(*a, args->account);
    auto folder = archive::resolve_folder(*a, account, args->folder);
    uint32_t gen = args->uidvalidity ? args->uidvalidity : folder.uidvalidity;
    auto message = a->message({account.id, folder.id, gen, args->uid});
    if (!message)
      throw Error(ErrorKind::not_found, "no such message in the archive", Retry::never,
                  {.account = account.name, .folder = folder.name_utf8, .uid = args->uid});
    // Checked first, then streamed: nothing unverified reaches stdout and
    // memory stays bounded whatever size the message is (or claims to be).
    try {
      a->check_object(message->hash);
      a->read_object_to(message->hash, [](std::string_view bytes) {
        size_t off = 0;
        while (off < bytes.size()) {
          ssize_t n = ::write(STDOUT_FILENO, bytes.data() + off, bytes.size() - off);
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) throw_io("cannot write to stdout", "-", errno);
          off += static_cast<size_t>(n);
        }
      });
    } catch (const Error& e) {
      throw e.with({.account = account.name, .folder = folder.name_utf8, .uid = args->uid});
    }
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

// imapstage init: create an empty archive, encrypted or not.
#include <fmt/format.h>

#include "archive-format/archive.h"
#include "archive-format/keys.h"
#include "cli/commands.h"
#include "cli/display.h"
#include "cli/passphrase.h"
#include "common/aead.h"

namespace imapstage::cli {

namespace {

struct InitArgs {
  std::string archive;
  bool encrypt = false;
  unsigned scrypt_log_n = archive::ScryptParams{}.log_n;
  std::string same_key_as;
};

}  // namespace

std::unique_ptr<archive::Archive> create_encrypted_archive(const std::string& dir, unsigned scrypt_log_n) {
  SecretString passphrase(read_passphrase(passphrase_options(), "New passphrase for the archive " + dir, true));
  archive::ScryptParams kdf;
  kdf.log_n = scrypt_log_n;
  archive::Archive::Options options;
  options.passphrase = [&](const std::filesystem::path&) { return passphrase.get(); };
  return archive::Archive::create_encrypted(dir, passphrase.get(), kdf, options);
}

void add_init_command(CLI::App& app, int& status) {
  auto args = std::make_shared<InitArgs>();
  auto* cmd = app.add_subcommand("init", "Create an empty archive; with --encrypt, one encrypted at rest");
  cmd->add_option("--archive", args->archive, "Archive directory to create (missing or empty)")->required();
  cmd->add_flag("--encrypt", args->encrypt,
                "Encrypt the archive: a random master key in a key slot opened by the passphrase "
                "(--passphrase-file, --passphrase-env, or asked twice on the terminal)");
  cmd->add_option("--scrypt-log-n", args->scrypt_log_n,
                  "scrypt cost of the key slot: N = 2^this (default 17: 128 MiB, about half a second)")
      ->check(CLI::Range(10u, 22u));
  cmd->add_option("--same-key-as", args->same_key_as,
                  "Encrypt with the master key (and key slots) of this encrypted archive, unlocked with the "
                  "passphrase, so bundles of one apply to the other");
  cmd->callback([args, &status] {
    std::unique_ptr<archive::Archive> a;
    if (!args->same_key_as.empty()) {
      auto keys = archive::unlock_archive(args->same_key_as, {});
      if (!keys) throw Error(ErrorKind::usage, "the archive is not encrypted", Retry::never, {.file = args->same_key_as});
      a = archive::Archive::create_with_key_file(args->archive, archive::read_key_file(args->same_key_as),
                                                 keys->master(), {});
    } else if (args->encrypt) {
      a = create_encrypted_archive(args->archive, args->scrypt_log_n);
    } else {
      std::error_code ec;
      if (std::filesystem::exists(std::filesystem::path(args->archive) / "FORMAT", ec))
        throw Error(ErrorKind::usage, "the directory already is an archive", Retry::never, {.file = args->archive});
      a = archive::Archive::open(args->archive, archive::Archive::Mode::create);
    }
    say(stdout, "created {} archive {} (id {})\n", a->encrypted() ? "an encrypted" : "a plain", args->archive,
        a->archive_id());
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

// imapstage key list|add|change|remove: the passphrase slots of an encrypted
// archive (FORMAT.md, "Encryption"). Only the key file changes; no pack or
// index byte is rewritten.
#include <ctime>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "archive-format/archive.h"
#include "archive-format/keys.h"
#include "archive-format/layout.h"
#include "cli/commands.h"
#include "cli/display.h"
#include "cli/passphrase.h"
#include "common/aead.h"
#include "common/civil_time.h"

namespace imapstage::cli {

namespace {

struct KeyArgs {
  std::string archive;
  PassphraseFrom new_from;
  unsigned scrypt_log_n = archive::ScryptParams{}.log_n;
  uint32_t slot = 0;
  bool json = false;
};

// The key file, the master key and the slot the given passphrase opens; the
// writer lock held so no other key change runs meanwhile.
struct Unlocked {
  std::unique_ptr<archive::WriterLock> lock;
  archive::KeyFile file;
  std::string master;
  uint32_t slot = 0;
  ~Unlocked() { wipe(master); }
};

void unlock(const std::string& dir, Unlocked& u) {
  if (!archive::has_key_file(dir))
    throw Error(ErrorKind::usage, "the archive is not encrypted (it has no key file)", Retry::never, {.file = dir});
  u.file = archive::read_key_file(dir);
  SecretString passphrase(read_passphrase(passphrase_options(), "Passphrase of the archive " + dir, false));
  u.lock = archive::WriterLock::acquire(std::filesystem::path(dir) / "lock");
  u.master = archive::unlock_master(u.file, passphrase.get(), dir, &u.slot);
}

std::string new_passphrase(const KeyArgs& args) {
  return read_passphrase(args.new_from, "New passphrase for the archive " + args.archive, true);
}

void add_new_passphrase_options(CLI::App* cmd, KeyArgs& args) {
  auto* file = cmd->add_option("--new-passphrase-file", args.new_from.file, "Read the new passphrase from this file");
  cmd->add_option("--new-passphrase-env", args.new_from.env,
                  "Read the new passphrase from this environment variable")
      ->excludes(file);
  cmd->add_option("--scrypt-log-n", args.scrypt_log_n,
                  "scrypt cost of the new slot: N = 2^this (default 17: 128 MiB, about half a second)")
      ->check(CLI::Range(10u, 22u));
}

std::string iso_utc(int64_t t) {
  int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400, secs = t - days * 86400;
  int64_t y;
  unsigned m, d;
  civil_from_days(days, y, m, d);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", y, m, d, secs / 3600, secs / 60 % 60, secs % 60);
}

}  // namespace

void add_key_command(CLI::App& app, int& status) {
  auto* key = app.add_subcommand("key", "Passphrases of an encrypted archive: list, add, change or remove key slots");
  key->require_subcommand(1);

  auto list_args = std::make_shared<KeyArgs>();
  auto* list = key->add_subcommand("list", "List the key slots (no passphrase needed)");
  list->add_option("--archive", list_args->archive, "Archive directory")->required();
  list->add_flag("--json", list_args->json, "JSON output");
  list->callback([list_args, &status] {
    auto file = archive::read_key_file(list_args->archive);
    nlohmann::json out = nlohmann::json::array();
    if (!list_args->json) say(stdout, "key id {}\n{:>5}  {:<22}  {}\n", file.key_id, "slot", "kdf", "created");
    for (auto& s : file.slots) {
      std::string kdf = fmt::format("scrypt N=2^{} r={} p={}", s.kdf.log_n, s.kdf.r, s.kdf.p);
      if (list_args->json)
        out.push_back({{"slot", s.id}, {"kdf", "scrypt"}, {"log_n", s.kdf.log_n}, {"r", s.kdf.r}, {"p", s.kdf.p},
                       {"created", s.created}});
      else say(stdout, "{:>5}  {:<22}  {}\n", s.id, kdf, iso_utc(s.created));
    }
    if (list_args->json) say(stdout, "{}\n", nlohmann::json{{"key_id", file.key_id}, {"slots", out}}.dump());
    status = kExitOk;
  });

  auto add_args = std::make_shared<KeyArgs>();
  auto* add = key->add_subcommand("add", "Add a key slot for a new passphrase (the current one unlocks the archive)");
  add->add_option("--archive", add_args->archive, "Archive directory")->required();
  add_new_passphrase_options(add, *add_args);
  add->callback([add_args, &status] {
    Unlocked u;
    unlock(add_args->archive, u);
    SecretString fresh(new_passphrase(*add_args));
    uint32_t id = 1;
    for (auto& s : u.file.slots) id = std::max(id, s.id + 1);
    archive::ScryptParams kdf;
    kdf.log_n = add_args->scrypt_log_n;
    u.file.slots.push_back(archive::make_slot(id, u.master, u.file.key_id, fresh.get(), kdf));
    archive::write_key_file(add_args->archive, u.file);
    say(stdout, "added key slot {}\n", id);
    status = kExitOk;
  });

  auto change_args = std::make_shared<KeyArgs>();
  auto* change = key->add_subcommand("change", "Replace the passphrase of the slot the current passphrase opens");
  change->add_option("--archive", change_args->archive, "Archive directory")->required();
  add_new_passphrase_options(change, *change_args);
  change->callback([change_args, &status] {
    Unlocked u;
    unlock(change_args->archive, u);
    SecretString fresh(new_passphrase(*change_args));
    archive::ScryptParams kdf;
    kdf.log_n = change_args->scrypt_log_n;
    for (auto& s : u.file.slots)
      if (s.id == u.slot) s = archive::make_slot(u.slot, u.master, u.file.key_id, fresh.get(), kdf);
    archive::write_key_file(change_args->archive, u.file);
    say(stdout, "changed the passphrase of key slot {}\n", u.slot);
    status = kExitOk;
  });

  auto remove_args = std::make_shared<KeyArgs>();
  auto* remove = key->add_subcommand(
      "remove", "Remove a key slot (--slot N, else the one the passphrase opens); never the last one");
  remove->add_option("--archive", remove_args->archive, "Archive directory")->required();
  remove->add_option("--slot", remove_args->slot, "The slot to remove (see key list)");
  remove->callback([remove_args, &status] {
    Unlocked u;
    unlock(remove_args->archive, u);
    uint32_t id = remove_args->slot ? remove_args->slot : u.slot;
    auto it = std::find_if(u.file.slots.begin(), u.file.slots.end(), [&](auto& s) { return s.id == id; });
    if (it == u.file.slots.end())
      throw Error(ErrorKind::usage, fmt::format("the archive has no key slot {}", id), Retry::never,
                  {.file = remove_args->archive});
    if (u.file.slots.size() == 1)
      throw Error(ErrorKind::usage, "this is the archive's last key slot: removing it would lose the data",
                  Retry::never, {.file = remove_args->archive});
    u.file.slots.erase(it);
    archive::write_key_file(remove_args->archive, u.file);
    say(stdout, "removed key slot {}\n", id);
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

// imapstage bundle create | verify | apply: carry an archive's changes as one
// checksummed, optionally signed file (archive-format/BUNDLE.md).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "archive-format/archive.h"
#include "archive-format/keys.h"
#include "bundle/bundle.h"
#include "cli/commands.h"
#include "cli/display.h"
#include "common/error.h"
#include "common/files.h"

namespace imapstage::cli {

namespace {

struct BundleArgs {
  std::string archive;
  std::string out;
  bool full = false;
  std::string since;
  std::string sign_key;
  uint64_t split = 0;
  std::string marker;
  std::string file;
  std::string pubkey;
  std::vector<std::string> accounts;
  bool json = false;
};

// The names of a bundle's accounts: as the header gives them, or, for keyed
// names, those of the accounts of `names_from` (an archive with the bundle's
// keys) whose keyed names they are; a keyed name no account has stays as it is.
std::vector<std::string> account_names(const bundle::BundleInfo& info, const archive::Archive* names_from) {
  if (!info.head.keyed_accounts || !names_from || !names_from->keys()) return info.head.accounts;
  std::map<std::string, std::string> by_key;
  for (auto& a : names_from->accounts()) by_key[names_from->keys()->keyed_account_name(a.name)] = a.name;
  std::vector<std::string> out;
  for (auto& k : info.head.accounts) out.push_back(by_key.count(k) ? by_key[k] : k);
  std::sort(out.begin(), out.end());
  return out;
}

nlohmann::json info_json(const bundle::BundleInfo& info, const archive::Archive* names_from = nullptr) {
  nlohmann::json j = {{"full", info.full},       {"created", info.created},   {"base", info.base.to_json()},
                      {"head", info.head.to_json()}, {"objects", info.objects}, {"records", info.records},
                      {"bytes", info.raw_bytes}, {"signed", info.signed_},   {"file_size", info.file_size},
                      {"parts", info.parts}, {"accounts", account_names(info, names_from)}};
  j["accounts_keyed"] = info.head.keyed_accounts && (!names_from || !names_from->keys());
  return j;
}

void print_info(const std::string& file, const bundle::BundleInfo& info, const std::string& signature,
                const archive::Archive* names_from = nullptr) {
  say(stdout, "bundle {}: {} objects ({} bytes), {} records, {} bytes on disk{}\n", file, info.objects,
      info.raw_bytes, info.records, info.file_size,
      info.parts > 1 ? fmt::format(" in {} parts ({}.001 ...)", info.parts, file) : std::string());
  say(stdout, "base: {} (journal record {}){}\n", info.base.root, info.base.journal_sequence,
      info.full ? ", full bundle: an empty archive" : "");
  say(stdout, "head: {} (journal record {}, archive {})\n", info.head.root, info.head.journal_sequence,
      info.head.archive_id);
  if (info.head.keyed_accounts && (!names_from || !names_from->keys()))
    say(stdout, "accounts: {}, given by keyed name (roots over these accounts only; --keys-from ARCHIVE shows "
        "their names)\n", info.head.accounts.size());
  else if (!info.head.accounts.empty())
    say(stdout, "accounts: {} (roots over these accounts only)\n",
        fmt::format("{}", fmt::join(account_names(info, names_from), ", ")));
  say(stdout, "signature: {}\n", signature);
}

// Shows how far a bundle command's long steps have come on stderr (live on
// a terminal, else a line every 10 s and at the end of each step), through
// the terminal display's "step_progress" events, at most ten a second.
class StepProgress {
 public:
  explicit StepProgress(std::string command) : command_(std::move(command)) {}
  ~StepProgress() { sink_.finish(); }
  bundle::Progress callback() {
    return [this](const char* step, uint64_t done, uint64_t total) {
      auto now = std::chrono::steady_clock::now();
      bool final = done >= total;
      if (!final && step == last_step_ && now - last_ < std::chrono::milliseconds(100)) return;
      last_ = now;
      last_step_ = step;
      sink_.emit({{"event", "step_progress"}, {"command", command_}, {"step", step}, {"done", done},
                  {"total", total}, {"final", final}});
    };
  }

 private:
  std::string command_;
  TerminalSink sink_{0, stderr};
  std::chrono::steady_clock::time_point last_{};
  std::string last_step_;
};

std::string signature_text(const bundle::BundleInfo& info, const std::string& pubkey) {
  if (!info.signed_) return "none";
  return pubkey.empty() ? "present, not checked (no --pubkey)" : "valid (" + pubkey + ")";
}

}  // namespace

void add_bundle_command(CLI::App& app, int& status) {
  auto args = std::make_shared<BundleArgs>();
  auto* cmd = app.add_subcommand("bundle", "Carry an archive's changes as one checksummed, signed file");
  cmd->require_subcommand(1);

  auto* create = cmd->add_subcommand("create", "Write a bundle of everything since a base (or of the whole archive)");
  create->add_option("--archive", args->archive, "Archive directory")->required();
  create->add_option("--out", args->out, "Bundle file to write (owner-only)")->required();
  auto* full = create->add_flag("--full", args->full, "Everything: a bundle an empty archive can start from");
  auto* since = create->add_option("--since", args->since,
                                   "The previous bundle (or a marker file): carry only what changed since its head");
  full->excludes(since);
  create->add_option("--sign", args->sign_key, "Sign with this Ed25519 private key (PEM), as manifest --sign")
      ->check(CLI::ExistingFile);
  create->add_option("--split", args->split,
                     "Write parts FILE.001, FILE.002, ... of at most this size (e.g. 4GB, 700MiB) instead of FILE")
      ->transform(CLI::AsSizeValue(true));
  create->add_option("--marker", args->marker, "Also write the head this bundle leads to as a marker file (JSON)");
  create->add_option("--account", args->accounts,
                     "Only this account (repeatable): a bundle an archive holding only these accounts applies; "
                     "bundles made --since it must name the same accounts");
  create->add_flag("--json", args->json, "Print the result as JSON");
  create->callback([args, &status] {
    if (!args->full && args->since.empty())
      throw Error(ErrorKind::usage, "bundle create needs --full or --since BUNDLE_OR_MARKER");
    bundle::CreateOptions options;
    options.out = args->out;
    options.sign_key = args->sign_key;
    options.split = args->split;
    options.accounts = args->accounts;
    if (!args->since.empty()) options.since = bundle::read_marker(args->since);
    auto a = archive::Archive::open(args->archive, archive::Archive::Mode::write);
    StepProgress progress("bundle create");
    auto info = bundle::create(*a, options, progress.callback());
    if (!args->marker.empty()) write_private_file(args->marker, info.head.to_json().dump(2) + "\n");
    if (args->json) std::printf("%s\n", info_json(info).dump(2).c_str());
    else print_info(args->out, info, info.signed_ ? "signed" : "none");
    status = kExitOk;
  });

  auto* check = cmd->add_subcommand("verify", "Check a bundle offline: every byte, every object, the signature");
  check->add_option("file", args->file, "Bundle file")->required();
  check->add_option("--pubkey", args->pubkey, "Ed25519 public key (PEM) the bundle must be signed with");
  check->add_flag("--json", args->json, "Print the result as JSON");
  check->add_option("--keys-from", args->archive,
                    "A sealed bundle (of an encrypted archive): open its entries with the keys of this archive "
                    "(its passphrase needed); without it only the structure and the file's hash are checked");
  check->callback([args, &status] {
    std::unique_ptr<archive::Archive> keys_from;
    if (!args->archive.empty()) keys_from = archive::Archive::open(args->archive, archive::Archive::Mode::read);
    const archive::RecordKeys* keys =
        keys_from && keys_from->keys() ? &keys_from->keys()->records() : nullptr;
    StepProgress progress("bundle verify");
    auto info = bundle::verify(args->file, args->pubkey, keys, progress.callback());
    std::string what = info.contents_checked
                           ? "every object re-hashed, the file's SHA-256 matches its trailer"
                           : "sealed bundle checked without its keys: structure, sizes and the file's SHA-256 "
                             "only (give --keys-from ARCHIVE to open and re-hash every entry)";
    if (args->json) {
      auto j = info_json(info, keys_from.get());
      j["signature"] = signature_text(info, args->pubkey);
      j["ok"] = true;
      j["contents_checked"] = info.contents_checked;
      if (!info.sealed_key_id.empty()) j["sealed_key_id"] = info.sealed_key_id;
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      print_info(args->file, info, signature_text(info, args->pubkey), keys_from.get());
      std::printf("OK: %s\n", what.c_str());
    }
    status = kExitOk;
  });

  auto* apply = cmd->add_subcommand("apply", "Bring an archive from the bundle's base to its head");
  apply->add_option("file", args->file, "Bundle file")->required();
  apply->add_option("--archive", args->archive, "Archive directory (created when missing or empty)")->required();
  apply->add_option("--pubkey", args->pubkey, "Ed25519 public key (PEM) the bundle must be signed with");
  apply->add_flag("--json", args->json, "Print the result as JSON");
  apply->callback([args, &status] {
    StepProgress progress("bundle apply");
    auto r = bundle::apply(args->file, args->archive, args->pubkey, progress.callback());
    if (args->json) {
      auto j = info_json(r.info);
      j["already_applied"] = r.already_applied;
      j["objects_written"] = r.objects_written;
      j["records_written"] = r.records_written;
      j["signature"] = signature_text(r.info, args->pubkey);
      std::printf("%s\n", j.dump(2).c_str());
    } else if (r.already_applied) {
      say(stdout, "already applied: {} is at the bundle's head {}; nothing written\n", args->archive,
          r.info.head.root);
    } else {
      say(stdout, "applied {}: {} new objects, {} records; {} is now at {}\n", args->file, r.objects_written,
          r.records_written, args->archive, r.info.head.root);
    }
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

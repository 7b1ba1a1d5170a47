// imapstage manifest: write a (signed) manifest of an archive, or check an
// archive against one.
#include <cstdio>
#include <memory>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/display.h"
#include "common/error.h"
#include "common/files.h"
#include "verify/manifest.h"
#include "verify/signing.h"

namespace imapstage::cli {

namespace {

struct ManifestArgs {
  std::string archive;
  std::string out;
  std::string sign_key;
  std::string listing;
  std::string check_archive;
  std::string manifest;
  std::string pubkey;
  std::string signature;
  bool metadata_only = false;
  bool json = false;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_io("cannot read", path, errno);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& data) { write_private_file(path, data); }

}  // namespace

void add_manifest_command(CLI::App& app, int& status) {
  auto args = std::make_shared<ManifestArgs>();
  auto* cmd = app.add_subcommand(
      "manifest", "Write a manifest of the archive: counts, bytes and Merkle roots per account and folder");
  cmd->require_subcommand(0, 1);
  cmd->add_option("--archive", args->archive, "Archive directory");
  cmd->add_option("--out", args->out, "Manifest file to write (JSON)");
  cmd->add_option("--sign", args->sign_key, "Sign with this Ed25519 private key (PEM); writes OUT.sig")
      ->check(CLI::ExistingFile);
  cmd->add_option("--listing", args->listing, "Also write every leaf line to this file, for recomputation");

  auto* check = cmd->add_subcommand("check", "Check an archive against a manifest (and its signature), offline");
  check->add_option("--archive", args->check_archive, "Archive directory")->required();
  check->add_option("--manifest", args->manifest, "Manifest file")->required()->check(CLI::ExistingFile);
  check->add_option("--pubkey", args->pubkey, "Ed25519 public key (PEM) to check the signature with");
  check->add_option("--signature", args->signature, "Signature file (default MANIFEST.sig)");
  check->add_flag("--metadata-only", args->metadata_only,
                  "Compare the index with the manifest without re-reading the messages' bytes");
  check->add_flag("--json", args->json, "Print the result as JSON");

  check->callback([args, &status] {
    std::string text = read_file(args->manifest);
    nlohmann::json result = {{"manifest", args->manifest}, {"archive", args->check_archive}};
    bool ok = true;
    std::string sig_path = args->signature.empty() ? args->manifest + ".sig" : args->signature;
    if (!args->pubkey.empty()) {
      std::ifstream probe(sig_path);
      if (!probe) throw Error(ErrorKind::usage, "--pubkey given but there is no signature file", Retry::never,
                              {.file = sig_path});
      bool good = verify::ed25519_verify(text, read_file(sig_path), args->pubkey);
      result["signature"] = good ? "valid" : "INVALID";
      ok = ok && good;
    } else {
      result["signature"] = "not checked (no --pubkey)";
    }
    nlohmann::json parsed;
    try {
      parsed = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorKind::corrupt, std::string("the manifest is not JSON: ") + e.what(), Retry::never,
                  {.file = args->manifest});
    }
    auto expected = verify::Manifest::from_json(parsed);
    auto a = archive::Archive::open(args->check_archive, archive::Archive::Mode::read);
    auto actual = verify::compute_manifest(*a);
    auto diffs = verify::compare_manifests(expected, actual);
    if (!args->metadata_only)
      for (auto& d : verify::check_manifest_data(*a)) diffs.push_back(std::move(d));
    result["data"] = args->metadata_only ? "not read (--metadata-only: only the index was compared)"
                                         : "every message's bytes re-read and re-hashed";
    nlohmann::json dj = nlohmann::json::array();
    for (auto& d : diffs) dj.push_back({{"account", d.account}, {"folder", d.folder}, {"what", d.what}});
    result["differences"] = dj;
    result["root_expected"] = expected.root;
    result["root_now"] = actual.root;
    ok = ok && diffs.empty();
    result["ok"] = ok;
    if (args->json) {
      std::printf("%s\n", result.dump(2).c_str());
    } else {
      std::printf("signature: %s\n", result["signature"].get<std::string>().c_str());
      std::printf("manifest root: %s\narchive root:  %s\n", expected.root.c_str(), actual.root.c_str());
      for (auto& d : diffs)
        say(stdout, "DIFFERS: account {}{}: {}\n", d.account, d.folder.empty() ? std::string() : ", folder " + d.folder,
            d.what);
      std::printf("data: %s\n", result["data"].get<std::string>().c_str());
      std::printf("%s\n", !ok                   ? "FAILED: see above"
                          : args->metadata_only ? "OK: the index matches the manifest (the messages' bytes were not read)"
                                                : "OK: the archive matches the manifest");
    }
    status = ok ? kExitOk : kExitIncomplete;
  });

  cmd->callback([args, cmd, &status] {
    if (cmd->got_subcommand("check")) return;
    if (args->archive.empty() || args->out.empty())
      throw Error(ErrorKind::usage, "manifest needs --archive DIR and --out FILE (or the check subcommand)");
    auto a = archive::Archive::open(args->archive, archive::Archive::Mode::read);
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> listing(nullptr, &std::fclose);
    if (!args->listing.empty()) listing.reset(open_private_file(args->listing));
    verify::Manifest m;
    try {
      m = verify::compute_manifest(*a, listing.get());
    } catch (...) {
      // No partial listing is left to pass for a whole one.
      if (listing) std::remove(args->listing.c_str());
      throw;
    }
    if (listing && std::fclose(listing.release()) != 0) throw_io("cannot write", args->listing, errno);
    m.archive_id = a->archive_id();
    std::string text = m.to_json().dump(2) + "\n";
    write_file(args->out, text);
    if (!args->sign_key.empty()) write_file(args->out + ".sig", verify::ed25519_sign(text, args->sign_key));
    std::printf("manifest %s: %zu accounts, %llu messages, %llu bytes, root %s%s\n", args->out.c_str(),
                m.accounts.size(), (unsigned long long)m.messages, (unsigned long long)m.bytes, m.root.c_str(),
                args->sign_key.empty() ? "" : (", signed: " + args->out + ".sig").c_str());
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

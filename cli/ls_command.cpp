// imapstage ls: what an archive holds — accounts, folders, messages.
#include <cstdio>
#include <map>
#include <set>

#include <fmt/format.h>

#include "archive-format/lookup.h"
#include "cli/commands.h"
#include "cli/display.h"
#include "common/checked.h"
#include "imap/session.h"

namespace imapstage::cli {

namespace {

struct LsArgs {
  std::string archive;
  std::string account;
  std::string folder;
  bool all_generations = false;
  bool json = false;
};

struct Counts {
  uint64_t present = 0, expunged = 0, bytes = 0;
};

Counts count_folder(const archive::Archive& a, const archive::FolderRecord& f, bool all_generations) {
  Counts c;
  std::optional<uint32_t> gen;
  if (!all_generations) gen = f.uidvalidity;
  a.for_each_message(f.account_id, f.id, gen, [&](const archive::MessageRecord& m) {
    if (m.state == archive::MessageState::present) ++c.present;
    else ++c.expunged;
    c.bytes = checked_add(c.bytes, m.size, "the size of folder " + f.name_utf8);
    return true;
  });
  return c;
}

void list_accounts(const archive::Archive& a, bool json) {
  nlohmann::json out = nlohmann::json::array();
  if (!json)
    std::printf("%s %8s %10s %10s %10s  %s\n", pad("account", 40).c_str(), "folders", "messages", "expunged", "size",
                "source");
  for (auto& account : a.accounts()) {
    Counts total;
    auto folders = a.folders(account.id);
    for (auto& f : folders) {
      auto c = count_folder(a, f, false);
      total.present += c.present;
      total.expunged += c.expunged;
      total.bytes = checked_add(total.bytes, c.bytes, "the size of account " + account.name);
    }
    if (json) {
      out.push_back({{"account", account.name}, {"host", account.host}, {"user", account.user},
                     {"source", archive::source_kind_name(account.source)},
                     {"folders", folders.size()}, {"messages", total.present}, {"expunged", total.expunged},
                     {"bytes", total.bytes}});
    } else {
      // The source: "imap", or the kind and the path read ("mbox /srv/old/alice.mbox").
      std::string source(archive::source_kind_name(account.source));
      if (account.source != archive::SourceKind::imap && account.source != archive::SourceKind::pop3)
        source += " " + account.host;
      say(stdout, "{} {:>8} {:>10} {:>10} {:>10}  {}\n", pad(printable(account.name), 40), folders.size(),
          total.present, total.expunged, human_bytes(double(total.bytes)), printable(source));
    }
  }
  uint64_t objects = 0, raw = 0, stored = 0;
  std::set<std::pair<uint64_t, uint64_t>> groups;  // a group record is counted once, however many objects it holds
  a.for_each_object([&](const archive::Hash&, const archive::ObjectLocation& l) {
    ++objects;
    raw = checked_add(raw, l.raw_size, "the size of the archive");
    if (!l.grouped || groups.insert({l.pack_id, l.offset}).second)
      stored = checked_add(stored, l.record_size, "the size of the packs");
    return true;
  });
  auto packs = a.packs();
  if (json) {
    std::printf("%s\n", nlohmann::json{{"accounts", out}, {"objects", objects}, {"object_bytes", raw},
                                       {"stored_bytes", stored}, {"packs", packs.size()}}
                            .dump(2)
                            .c_str());
  } else {
    std::printf("\n%llu distinct messages, %s raw, %s in %zu pack files\n", (unsigned long long)objects,
                human_bytes(double(raw)).c_str(), human_bytes(double(stored)).c_str(), packs.size());
  }
}

void list_folders(const archive::Archive& a, const archive::AccountRecord& account, bool json) {
  nlohmann::json out = nlohmann::json::array();
  if (!json)
    std::printf("%s %11s %8s %8s %10s  %s\n", pad("folder", 36).c_str(), "uidvalidity", "messages", "expunged", "size",
                "attributes");
  for (auto& f : a.folders(account.id)) {
    auto c = count_folder(a, f, false);
    std::string attrs;
    for (auto& at : f.attributes) attrs += (attrs.empty() ? "" : " ") + at;
    if (f.subscribed) attrs += attrs.empty() ? "subscribed" : " subscribed";
    if (f.gone) attrs += attrs.empty() ? "gone-from-source" : " gone-from-source";
    if (json) {
      out.push_back({{"folder", f.name_utf8}, {"raw", f.name_raw}, {"delimiter", std::string(f.delimiter ? 1 : 0, f.delimiter)},
                     {"canonical", f.canonical_name()}, {"namespace", archive::namespace_name(f.ns_kind)},
                     {"namespace_prefix", f.ns_prefix}, {"path", f.path},
                     {"attributes", f.attributes}, {"special_use", f.special_use()}, {"subscribed", f.subscribed},
                     {"noselect", f.noselect}, {"gone", f.gone}, {"uidvalidity", f.uidvalidity},
                     {"uidnext", f.uidnext}, {"highestmodseq", f.highestmodseq}, {"messages", c.present},
                     {"expunged", c.expunged}, {"bytes", c.bytes}});
    } else {
      say(stdout, "{} {:>11} {:>8} {:>8} {:>10}  {}\n", pad(printable(f.canonical_name()), 36), f.uidvalidity,
          c.present, c.expunged, human_bytes(double(c.bytes)), attrs);
    }
  }
  if (json) std::printf("%s\n", nlohmann::json{{"account", account.name}, {"folders", out}}.dump(2).c_str());
}

void list_messages(const archive::Archive& a, const archive::FolderRecord& f, bool all_generations, bool json) {
  std::optional<uint32_t> gen;
  if (!all_generations) gen = f.uidvalidity;
  if (!json) std::printf("%11s %8s  %-26s %10s  %-64s  %s\n", "uidvalidity", "uid", "internaldate", "size", "sha256", "flags");
  a.for_each_message(f.account_id, f.id, gen, [&](const archive::MessageRecord& m) {
    std::string date = imap::format_date_time(m.internaldate, m.internaldate_tz);
    std::string flags = archive::flags_text(m);
    if (m.state == archive::MessageState::expunged) flags += flags.empty() ? "(expunged on source)" : " (expunged on source)";
    if (json) {
      nlohmann::json j = {{"uidvalidity", m.key.uidvalidity}, {"uid", m.key.uid}, {"internaldate", date},
                          {"size", m.size}, {"sha256", archive::to_hex(m.hash)},
                          {"flags", archive::flags_to_imap(m.flags, m.keywords)},
                          {"state", m.state == archive::MessageState::present ? "present" : "expunged"}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      say(stdout, "{:>11} {:>8}  {:<26} {:>10}  {}  {}\n", m.key.uidvalidity, m.key.uid, date, m.size,
          archive::to_hex(m.hash), flags);
    }
    return true;
  });
}

}  // namespace

void add_ls_command(CLI::App& app, int& status) {
  auto args = std::make_shared<LsArgs>();
  auto* cmd = app.add_subcommand("ls", "List the accounts of an archive, the folders of an account, or the messages of a folder");
  cmd->add_option("--archive", args->archive, "Archive directory")->required();
  cmd->add_option("account", args->account, "Account name");
  cmd->add_option("folder", args->folder, "Folder name (UTF-8 or as on the server)");
  cmd->add_flag("--all-generations", args->all_generations, "Include messages of earlier UIDVALIDITY generations");
  cmd->add_flag("--json", args->json, "JSON output (one object per message for a folder)");
  cmd->callback([args, &status] {
    auto a = archive::Archive::open(args->archive, archive::Archive::Mode::read);
    if (args->account.empty()) {
      list_accounts(*a, args->json);
    } else {
      auto account = archive::resolve_account(*a, args->account);
      if (args->folder.empty()) list_folders(*a, account, args->json);
      else list_messages(*a, archive::resolve_folder(*a, account, args->folder), args->all_generations, args->json);
    }
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

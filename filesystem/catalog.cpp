#include "filesystem/catalog.h"

#include <map>
#include <set>

#include <fmt/format.h>

#include "archive-format/lookup.h"
#include "common/error.h"
#include "common/glob.h"

namespace imapstage::filesystem {

namespace {

std::string joined(const std::vector<std::string>& dirs) {
  std::string out;
  for (auto& d : dirs) out += d + "/";
  return out;
}

}  // namespace

std::vector<CatalogFolder> build_catalog(const archive::Archive& archive, const CatalogOptions& options) {
  std::vector<archive::AccountRecord> accounts;
  if (options.accounts.empty()) {
    accounts = archive.accounts();
  } else {
    for (auto& name : options.accounts) accounts.push_back(archive::resolve_account(archive, name));
  }
  auto wanted = [&](const archive::MessageRecord& m) {
    if (options.since && m.internaldate < *options.since) return false;
    if (options.before && m.internaldate >= *options.before) return false;
    return true;
  };

  std::vector<CatalogFolder> out;
  std::set<std::string> used;  // joined directory paths already given to a folder
  auto add = [&](CatalogFolder&& f, const std::vector<archive::MessageRecord>& records) {
    if (used.count(joined(f.dirs))) {
      if (f.dirs.empty()) f.dirs.push_back("%");
      f.dirs.back() += fmt::format("~{}", f.folder.id);
    }
    used.insert(joined(f.dirs));
    f.keywords = keyword_table(records);
    f.messages.reserve(records.size());
    for (auto& r : records) f.messages.push_back({r, maildir_base(r), maildir_info(r, f.keywords)});
    out.push_back(std::move(f));
  };

  for (auto& account : accounts) {
    std::string account_dir = escape_level(account.name);
    for (auto& folder : archive.folders(account.id)) {
      if (folder.noselect) continue;
      if (!folder_selected(folder.canonical_name(), options.include, options.exclude)) continue;
      std::vector<archive::MessageRecord> current;
      std::map<uint32_t, std::vector<archive::MessageRecord>> generations;
      archive.for_each_message(account.id, folder.id, std::nullopt, [&](const archive::MessageRecord& m) {
        if (!wanted(m)) return true;
        if (m.key.uidvalidity == folder.uidvalidity && m.state == archive::MessageState::present)
          current.push_back(m);
        if (options.all_generations) generations[m.key.uidvalidity].push_back(m);
        return true;
      });
      CatalogFolder f;
      f.account = account.name;
      f.folder = folder;
      f.dirs = {account_dir};
      for (auto& d : folder_dirs(folder, options.layout)) f.dirs.push_back(d);
      add(std::move(f), current);
      for (auto& [uidvalidity, records] : generations) {
        CatalogFolder g;
        g.account = account.name;
        g.folder = folder;
        g.generation = uidvalidity;
        g.dirs = {"all-generations", account_dir};
        for (auto& d : folder_dirs(folder, Layout::nested)) g.dirs.push_back(d);
        g.dirs.push_back(fmt::format("uidvalidity-{}", uidvalidity));
        add(std::move(g), records);
      }
    }
  }
  return out;
}

}  // namespace imapstage::filesystem

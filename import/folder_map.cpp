#include "import/folder_map.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>

#include "common/error.h"
#include "imap/mailbox_names.h"
#include "imap/utf7.h"

namespace imapstage::importing {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

const char* kMappedSpecialUse[] = {"\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"};

bool is_mapped_use(const std::string& use) {
  return std::find(std::begin(kMappedSpecialUse), std::end(kMappedSpecialUse), use) != std::end(kMappedSpecialUse);
}

// The canonical path of a source folder (records of old archives or built by hand may lack one).
std::vector<std::string> path_of(const archive::FolderRecord& f) {
  if (!f.path.empty()) return f.path;
  std::string prefix;
  return archive::path_of_v1_name(f.name_utf8, f.delimiter, prefix);
}

std::string canonical_of(const archive::FolderRecord& f) {
  archive::FolderRecord copy = f;
  copy.path = path_of(f);
  return copy.canonical_name();
}

bool is_inbox(const std::vector<std::string>& path) { return path.size() == 1 && iequals(path[0], "INBOX"); }

// True when `path` starts with `prefix` (whole levels) and is longer.
bool below(const std::vector<std::string>& path, const std::vector<std::string>& prefix) {
  return path.size() > prefix.size() && std::equal(prefix.begin(), prefix.end(), path.begin());
}

struct TargetFolder {
  const imap::ListEntry* entry;
  std::vector<std::string> path;
};

}  // namespace

const std::vector<std::string_view>& special_use_names(std::string_view use) {
  static const std::map<std::string_view, std::vector<std::string_view>> kNames = {
      {"\\Sent", {"Sent", "Sent Items", "Sent Messages", "Sent Mail", "Gesendet", "Gesendete Elemente",
                  "Gesendete Objekte", "Éléments envoyés", "Envoyés", "Messages envoyés", "Enviados",
                  "Elementos enviados", "Posta inviata", "Inviati", "Verzonden items", "Verzonden"}},
      {"\\Drafts", {"Drafts", "Entwürfe", "Brouillons", "Borradores", "Bozze", "Concepten"}},
      {"\\Trash", {"Trash", "Deleted Items", "Deleted Messages", "Bin", "Papierkorb", "Gelöschte Elemente",
                   "Gelöschte Objekte", "Corbeille", "Éléments supprimés", "Papelera", "Elementos eliminados",
                   "Cestino", "Posta eliminata", "Prullenbak", "Verwijderde items"}},
      {"\\Junk", {"Junk", "Spam", "Junk E-mail", "Junk Email", "Junk-E-Mail", "Bulk Mail", "Courrier indésirable",
                  "Correo no deseado", "Posta indesiderata", "Ongewenste e-mail"}},
      {"\\Archive", {"Archive", "Archives", "Archiv", "Archivo", "Archivio", "Archief"}},
  };
  static const std::vector<std::string_view> kNone;
  auto it = kNames.find(use);
  return it == kNames.end() ? kNone : it->second;
}

std::string rebuild_hierarchy(const std::string& name, char from, char to) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    if (from != 0 && c == from) out.push_back(to ? to : c);
    else if (to != 0 && c == to) out.push_back('_');
    else out.push_back(c);
  }
  return out;
}

std::vector<FolderMapping> map_folders(const std::vector<archive::FolderRecord>& source,
                                       const std::vector<imap::ListEntry>& target, const imap::PersonalNamespace& ns,
                                       const std::map<std::string, std::string>& overrides,
                                       const TargetSubfolder& subfolder) {
  imap::Namespace personal;
  personal.prefix = ns.prefix;
  personal.delimiter = ns.delimiter;
  return map_folders(source, target, std::vector<imap::Namespace>{personal}, overrides, subfolder);
}

std::vector<FolderMapping> map_folders(const std::vector<archive::FolderRecord>& source,
                                       const std::vector<imap::ListEntry>& target,
                                       const std::vector<imap::Namespace>& target_namespaces,
                                       const std::map<std::string, std::string>& overrides,
                                       const TargetSubfolder& subfolder) {
  for (auto& override_entry : overrides) {
    const std::string& from = override_entry.first;  // a plain reference: lambdas cannot capture bindings in clang 14
    const std::string& to = override_entry.second;
    bool known = std::any_of(source.begin(), source.end(), [&](const archive::FolderRecord& f) {
      std::string name = canonical_of(f);
      return name == from || name.starts_with(from + "/") || f.name_utf8 == from;
    });
    if (!known) throw Error(ErrorKind::usage, "--map " + from + "=" + to + ": the archive has no folder " + from);
  }
  imap::Namespace personal;
  personal.delimiter = '/';
  for (auto& n : target_namespaces)
    if (n.kind == imap::Namespace::personal) {
      personal = n;
      if (!personal.delimiter) personal.delimiter = '/';
      break;
    }
  char tdelim = personal.delimiter;

  // The target's personal folders, by canonical path.
  std::vector<TargetFolder> targets;
  for (auto& t : target) {
    auto placed = imap::place_mailbox(t.name_raw, t.delimiter ? t.delimiter : tdelim, target_namespaces);
    if (placed.kind != imap::Namespace::personal || placed.path.empty()) continue;
    targets.push_back({&t, std::move(placed.path)});
  }
  auto target_by_use = [&](const std::string& use) -> const TargetFolder* {
    for (auto& t : targets)
      if (!t.entry->noselect && iequals(t.entry->special_use, use)) return &t;
    return nullptr;
  };
  auto target_by_name = [&](const std::string& use, const std::string& preferred) -> const TargetFolder* {
    const TargetFolder* best = nullptr;
    size_t best_rank = SIZE_MAX;
    auto& names = special_use_names(use);
    for (auto& t : targets) {
      if (t.entry->noselect || t.path.size() != 1) continue;
      if (iequals(t.path[0], preferred)) return &t;
      for (size_t k = 0; k < names.size() && k < best_rank; ++k)
        if (iequals(t.path[0], names[k])) {
          best = &t;
          best_rank = k;
        }
    }
    return best;
  };
  auto target_by_raw = [&](const std::string& raw) -> const imap::ListEntry* {
    for (auto& t : target)
      if (t.name_raw == raw || (iequals(raw, "INBOX") && iequals(t.name_raw, "INBOX"))) return &t;
    return nullptr;
  };

  // Special-use of each source folder: its attribute, or (for a source that
  // has none at all) the first top-level folder of each use by name.
  bool source_has_special_use = std::any_of(source.begin(), source.end(), [](auto& f) {
    return !f.special_use().empty();
  });
  std::map<size_t, std::string> use_by_name;
  if (!source_has_special_use) {
    for (auto* use : kMappedSpecialUse) {
      for (size_t i = 0; i < source.size(); ++i) {
        auto& f = source[i];
        auto path = path_of(f);
        if (f.noselect || f.ns_kind != archive::NamespaceKind::personal || path.size() != 1 || use_by_name.count(i))
          continue;
        auto& names = special_use_names(use);
        if (std::any_of(names.begin(), names.end(), [&](std::string_view n) { return iequals(path[0], n); })) {
          use_by_name[i] = use;
          break;
        }
      }
    }
  }

  auto special_use_of = [&](size_t i) {
    std::string use = source[i].special_use();
    if (use.empty() && use_by_name.count(i)) use = use_by_name.at(i);
    return use;
  };

  std::vector<FolderMapping> out;
  std::vector<std::vector<std::string>> source_paths, target_paths;
  for (size_t i = 0; i < source.size(); ++i) {
    auto& f = source[i];
    if (f.noselect) continue;
    FolderMapping m;
    m.source = f;
    auto path = path_of(f);
    std::string canonical = canonical_of(f);
    std::optional<std::vector<std::string>> to;  // target path, when not a listed target folder
    // 1. overrides, longest matching prefix at a hierarchy boundary
    std::string best;
    for (auto& [from, unused] : overrides)
      if ((canonical == from || canonical.starts_with(from + "/") || f.name_utf8 == from) && from.size() > best.size())
        best = from;
    if (!best.empty()) {
      auto mapped = imap::split_path(overrides.at(best));
      if (canonical.starts_with(best)) {
        auto rest = imap::split_path(canonical.substr(std::min(best.size(), canonical.size())));
        for (size_t k = 1; k < rest.size(); ++k) mapped.push_back(rest[k]);  // rest[0] is "" (the '/' after best)
      }
      to = mapped;
      m.reason = "--map";
    } else if (f.ns_kind != archive::NamespaceKind::personal) {
      m.skipped = true;
      m.reason = "not imported: " + std::string(archive::namespace_name(f.ns_kind)) +
                 " namespace (give --map " + canonical + "=NAME to import it)";
      m.target_utf8 = "";
    } else if (!subfolder.path.empty() && (!subfolder.special_use || !is_mapped_use(special_use_of(i)))) {
      std::vector<std::string> below_it = subfolder.path;
      below_it.insert(below_it.end(), path.begin(), path.end());
      to = below_it;
      m.reason = "same name under the target subfolder";
    } else if (is_inbox(path)) {
      m.target_utf8 = m.target_raw = "INBOX";
      m.reason = "INBOX";
    } else {
      std::string use = special_use_of(i);
      bool by_name = f.special_use().empty() && !use.empty();
      const TargetFolder* t = nullptr;
      bool target_by_its_name = false;
      if (is_mapped_use(use)) {
        t = target_by_use(use);
        if (!t) {
          t = target_by_name(use, path.size() == 1 ? path[0] : "");
          target_by_its_name = t != nullptr;
        }
      }
      if (t) {
        m.target_utf8 = t->entry->name_utf8;
        m.target_raw = t->entry->name_raw;
        to = t->path;
        m.reason = "special-use " + use + (by_name || target_by_its_name ? ", by name" : "");
      } else {
        to = path;
        if (!subfolder.path.empty()) to->insert(to->begin(), subfolder.path.begin(), subfolder.path.end());
        m.reason = subfolder.path.empty() ? "same name" : "same name under the target subfolder";
        if (is_mapped_use(use)) m.create_use = use;
      }
    }
    source_paths.push_back(path);
    target_paths.push_back(to.value_or(std::vector<std::string>{}));
    out.push_back(std::move(m));
  }

  // 4. Subfolders follow a parent that special-use moved elsewhere.
  for (size_t i = 0; i < out.size(); ++i) {
    if (!out[i].reason.starts_with("same name") || out[i].skipped) continue;
    size_t parent = out.size();
    for (size_t j = 0; j < out.size(); ++j) {
      if (j == i || !out[j].reason.starts_with("special-use") || target_paths[j] == source_paths[j]) continue;
      if (below(source_paths[i], source_paths[j]) &&
          (parent == out.size() || source_paths[j].size() > source_paths[parent].size()))
        parent = j;
    }
    if (parent == out.size()) continue;
    std::vector<std::string> moved = target_paths[parent];
    moved.insert(moved.end(), source_paths[i].begin() + source_paths[parent].size(), source_paths[i].end());
    target_paths[i] = moved;
    out[i].reason = "follows its parent " + canonical_of(out[parent].source) + " (" + out[parent].reason + ")";
    out[i].create_use.clear();
  }

  // 5. Names in the target's personal namespace.
  for (size_t i = 0; i < out.size(); ++i) {
    auto& m = out[i];
    if (m.skipped) continue;
    if (m.target_raw.empty()) {
      auto built = imap::build_mailbox_name(target_paths[i], personal.prefix, tdelim);
      m.target_utf8 = built.utf8;
      m.target_raw = built.raw;
      if (m.reason == "same name") {
        if (built.changed)
          m.reason = std::string("same name, '") + tdelim + "' in a level replaced by '_'";
        else if (m.target_raw != m.source.name_raw)
          m.reason = "same name in the target's namespace";
      }
    }
    m.exists = target_by_raw(m.target_raw) != nullptr;
  }

  // 6. Accidental merges of rule-5 names get a numbered name instead. Only
  // the mapping itself decides (never what the target holds), so a re-run
  // picks the same names.
  auto taken = [&](const std::string& raw, size_t except) {
    for (size_t j = 0; j < out.size(); ++j)
      if (j != except && !out[j].skipped && out[j].target_raw == raw) return true;
    return false;
  };
  std::map<std::string, std::vector<size_t>> claimants;
  for (size_t i = 0; i < out.size(); ++i)
    if (!out[i].skipped) claimants[out[i].target_raw].push_back(i);
  for (auto& [raw, group] : claimants) {
    if (group.size() < 2) continue;
    std::vector<size_t> automatic;
    bool asked_for = false;
    for (size_t i : group) {
      if (out[i].reason.starts_with("same name")) automatic.push_back(i);
      else asked_for = true;
    }
    size_t keep = out.size();
    if (!asked_for && !automatic.empty()) {
      keep = automatic.front();
      for (size_t i : automatic)
        if (out[i].reason != std::string("same name, '") + tdelim + "' in a level replaced by '_'") {
          keep = i;  // no '_' was put in its name
          break;
        }
    }
    for (size_t i : automatic) {
      if (i == keep) continue;
      auto& m = out[i];
      std::string base = m.target_utf8;
      for (int n = 2;; ++n) {
        std::string name = base + " (" + std::to_string(n) + ")";
        std::string numbered_raw = imap::utf7_encode(name);
        if (taken(numbered_raw, i)) continue;
        m.reason = "same name, numbered: " + base + " is another folder's target";
        m.target_utf8 = name;
        m.target_raw = numbered_raw;
        m.exists = target_by_raw(numbered_raw) != nullptr;
        break;
      }
    }
  }
  return out;
}

}  // namespace imapstage::importing

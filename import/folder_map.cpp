#include "import/folder_map.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>

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

std::string fold_case(std::string_view utf8) {
  std::string out;
  out.reserve(utf8.size());
  size_t i = 0;
  while (i < utf8.size()) {
    auto b = static_cast<unsigned char>(utf8[i]);
    size_t len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 1;
    if (i + len > utf8.size()) len = 1;
    if (len != 2) {  // ASCII, or a character outside the folded ranges (all two bytes long)
      for (size_t k = 0; k < len; ++k)
        out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(utf8[i + k]))));
      i += len;
      continue;
    }
    uint32_t c = ((b & 0x1fu) << 6) | (static_cast<unsigned char>(utf8[i + 1]) & 0x3fu);
    if ((c >= 0xc0 && c <= 0xde && c != 0xd7) || (c >= 0x391 && c <= 0x3ab && c != 0x3a2) || (c >= 0x410 && c <= 0x42f))
      c += 0x20;  // Latin-1 À-Þ, Greek Α-Ϋ, Cyrillic А-Я
    else if (c >= 0x400 && c <= 0x40f)
      c += 0x50;  // Cyrillic Ѐ-Џ
    else if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177))
      c |= 1;     // Latin Extended-A pairs: even capital, odd small
    else if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
      c += (c & 1);  // odd capital, even small
    out.push_back(static_cast<char>(0xc0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
    i += 2;
  }
  return out;
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
                                       const TargetSubfolder& subfolder, const TargetNames& names,
                                       const std::vector<archive::FolderRecord>& others) {
  imap::Namespace personal;
  personal.prefix = ns.prefix;
  personal.delimiter = ns.delimiter;
  return map_folders(source, target, std::vector<imap::Namespace>{personal}, overrides, subfolder, names, others);
}

std::vector<FolderMapping> map_folders(const std::vector<archive::FolderRecord>& selected,
                                       const std::vector<imap::ListEntry>& target,
                                       const std::vector<imap::Namespace>& target_namespaces,
                                       const std::map<std::string, std::string>& overrides,
                                       const TargetSubfolder& subfolder, const TargetNames& names,
                                       const std::vector<archive::FolderRecord>& others) {
  // Every folder of the account is mapped (so each name is the same whatever
  // this run selects); the ones left out are dropped at the end.
  // In the archive's order (folder ids), which decides who keeps a name.
  std::vector<std::pair<archive::FolderRecord, bool>> all;  // folder, left out
  for (auto& f : selected) all.emplace_back(f, false);
  for (auto& f : others) all.emplace_back(f, true);
  std::stable_sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first.id < b.first.id; });
  std::vector<archive::FolderRecord> source;
  for (auto& [f, unused] : all) source.push_back(f);
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
  // A listed folder that can be selected. A \Noselect or \NonExistent entry
  // (Dovecot lists the parent of a subfolder so when an interrupted run
  // created the subfolder first) still has to be created.
  auto target_by_raw = [&](const std::string& raw) -> const imap::ListEntry* {
    for (auto& t : target)
      if (!t.noselect && (t.name_raw == raw || (iequals(raw, "INBOX") && iequals(t.name_raw, "INBOX")))) return &t;
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
  std::vector<bool> left_out;  // one of `others`
  for (size_t i = 0; i < source.size(); ++i) {
    auto& f = source[i];
    if (f.noselect) continue;
    left_out.push_back(all[i].second);
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

  auto automatic = [&](size_t i) {
    return out[i].reason.starts_with("same name") || out[i].reason.starts_with("follows its parent");
  };
  auto fold = [&](std::string_view s) { return names.case_insensitive ? fold_case(s) : std::string(s); };
  auto rename = [&](size_t i, std::vector<std::string> path, const std::string& why) {
    auto built = imap::build_mailbox_name(path, personal.prefix, tdelim);
    out[i].reason = out[i].reason.starts_with("renamed: ") ? out[i].reason + "; " + why : "renamed: " + why;
    out[i].target_utf8 = built.utf8;
    out[i].target_raw = built.raw;
    out[i].exists = target_by_raw(built.raw) != nullptr;
    target_paths[i] = std::move(path);
  };

  // 8. Names the target reserves, unless they are its own folders.
  for (auto& reserved : names.reserved) {
    bool owns_below = reserved.ends_with('/');
    auto levels = imap::split_path(owns_below ? std::string_view(reserved).substr(0, reserved.size() - 1)
                                              : std::string_view(reserved));
    if (levels.empty()) continue;
    auto same = [&](const std::vector<std::string>& a, const std::vector<std::string>& b, size_t n) {
      for (size_t k = 0; k < n; ++k)
        if (fold(a[k]) != fold(b[k])) return false;
      return true;
    };
    for (size_t i = 0; i < out.size(); ++i) {
      auto& path = target_paths[i];
      if (out[i].skipped || !automatic(i) || path.size() < levels.size()) continue;
      if ((!owns_below && path.size() != levels.size()) || !same(path, levels, levels.size())) continue;
      bool its_own = std::any_of(targets.begin(), targets.end(), [&](const TargetFolder& t) {
        return !t.entry->noselect && t.path.size() == path.size() && same(t.path, path, path.size());
      });
      if (its_own) continue;
      auto renamed = path;
      renamed[levels.size() - 1] += " (imported)";
      rename(i, renamed,
             fmt::format("{} is reserved by the target ({}), {} added", imap::join_path(path), reserved,
                         "\" (imported)\""));
    }
  }

  // 7. Names that differ only in case, on a target that does not tell them apart.
  if (names.case_insensitive) {
    auto own_name = [&](size_t i) { return automatic(i) || out[i].reason.starts_with("renamed: "); };
    std::vector<size_t> order;
    for (size_t i = 0; i < out.size(); ++i)
      if (!out[i].skipped && !own_name(i)) order.push_back(i);
    for (size_t i = 0; i < out.size(); ++i)
      if (!out[i].skipped && own_name(i)) order.push_back(i);
    auto path_of_mapping = [&](size_t i) {
      return target_paths[i].empty() ? std::vector<std::string>{out[i].target_utf8} : target_paths[i];
    };
    const std::string sep(1, '\x01');
    // Every name (and every level above one) as mapped so far, folded: a
    // numbered level never takes one of them.
    std::set<std::string> mapped;
    for (size_t i : order) {
      std::string key;
      for (auto& level : path_of_mapping(i)) mapped.insert(key += sep + fold_case(level));
    }
    std::map<std::string, std::string> chosen;  // parent (as renamed) + sep + level: the level to use
    std::map<std::string, std::string> owner;   // the same folded: the spelling that has it
    for (size_t i : order) {
      auto path = path_of_mapping(i);
      std::vector<std::string> renamed;
      std::string parent, folded_parent;
      size_t changed_at = path.size();
      for (size_t k = 0; k < path.size(); ++k) {
        const std::string& level = path[k];
        std::string key = parent + sep + level;
        auto known = chosen.find(key);
        std::string use = level;
        if (known != chosen.end()) {
          use = known->second;
        } else {
          auto taken = owner.find(folded_parent + sep + fold_case(level));
          if (taken != owner.end() && taken->second != level && own_name(i)) {
            for (int n = 2;; ++n) {
              std::string candidate = level + " (" + std::to_string(n) + ")";
              std::string folded = folded_parent + sep + fold_case(candidate);
              if (owner.count(folded) || mapped.count(folded)) continue;
              use = candidate;
              break;
            }
          }
          chosen[key] = use;
          owner.try_emplace(folded_parent + sep + fold_case(use), use);
        }
        if (use != level && changed_at == path.size()) changed_at = k;
        renamed.push_back(use);
        parent += sep + use;
        folded_parent += sep + fold_case(use);
      }
      if (changed_at == path.size()) continue;
      std::vector<std::string> other(path.begin(), path.begin() + static_cast<std::ptrdiff_t>(changed_at) + 1);
      rename(i, renamed,
             fmt::format("{} differs only in case from another folder's target (the target's names are "
                         "case-insensitive), numbered",
                         imap::join_path(other)));
    }
    // A target folder spelled otherwise is the same folder: its spelling is the one used.
    for (auto& m : out) {
      if (m.skipped || m.exists) continue;
      std::string folded = fold_case(m.target_utf8);
      for (auto& t : target)
        if (!t.noselect && fold_case(t.name_utf8) == folded) {
          m.target_utf8 = t.name_utf8;
          m.target_raw = t.name_raw;
          m.exists = true;
          break;
        }
    }
  }

  // 6. Accidental merges of rule-5 names get a numbered name instead. Only
  // the mapping itself decides (never what the target holds), so a re-run
  // picks the same names.
  // Taken by another folder, by its name or by what is sent: two names that
  // are not valid UTF-8 can differ and still encode to the same bytes.
  auto taken = [&](const std::string& name, const std::string& raw, size_t except) {
    for (size_t j = 0; j < out.size(); ++j)
      if (j != except && !out[j].skipped && (fold(out[j].target_utf8) == fold(name) || out[j].target_raw == raw))
        return true;
    return false;
  };
  std::map<std::string, std::vector<size_t>> claimants;
  for (size_t i = 0; i < out.size(); ++i)
    if (!out[i].skipped)
      claimants[names.case_insensitive ? fold_case(out[i].target_utf8) : out[i].target_raw].push_back(i);
  for (auto& [raw, group] : claimants) {
    if (group.size() < 2) continue;
    std::vector<size_t> automatic;
    bool asked_for = false;
    for (size_t i : group) {
      if (out[i].reason.starts_with("same name") || out[i].reason.starts_with("renamed: ")) automatic.push_back(i);
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
        if (taken(name, numbered_raw, i)) continue;
        m.reason = m.reason.starts_with("renamed: ") ? m.reason + "; numbered: " + base + " is another folder's target"
                                                     : "same name, numbered: " + base + " is another folder's target";
        m.target_utf8 = name;
        m.target_raw = numbered_raw;
        m.exists = target_by_raw(numbered_raw) != nullptr;
        break;
      }
    }
  }
  std::vector<FolderMapping> kept;
  for (size_t i = 0; i < out.size(); ++i)
    if (!left_out[i]) kept.push_back(std::move(out[i]));
  return kept;
}

TargetNames provider_target_names(std::string_view provider) {
  if (provider == "gmail") return {true, {"[Gmail]/", "[Google Mail]/"}};
  if (provider == "microsoft365") return {true, {}};
  return {};
}

}  // namespace imapstage::importing

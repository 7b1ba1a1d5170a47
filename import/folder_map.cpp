#include "import/folder_map.h"

#include <algorithm>
#include <cctype>
#include <map>

#include "common/error.h"
#include "imap/utf7.h"

namespace imapstage::importing {

namespace {

bool iequals(const std::string& a, const std::string& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

const char* kMappedSpecialUse[] = {"\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"};

}  // namespace

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
                                       const std::map<std::string, std::string>& overrides) {
  for (auto& override_entry : overrides) {
    const std::string& from = override_entry.first;  // a plain reference: lambdas cannot capture bindings in clang 14
    const std::string& to = override_entry.second;
    bool known = std::any_of(source.begin(), source.end(), [&](const archive::FolderRecord& f) {
      return f.name_utf8 == from || f.name_utf8.starts_with(from + std::string(1, f.delimiter));
    });
    if (!known) throw Error(ErrorKind::usage, "--map " + from + "=" + to + ": the archive has no folder " + from);
  }
  char tdelim = ns.delimiter;
  auto target_by_use = [&](const std::string& use) -> const imap::ListEntry* {
    for (auto& t : target)
      if (!t.noselect && iequals(t.special_use, use)) return &t;
    return nullptr;
  };
  auto target_by_raw = [&](const std::string& raw) -> const imap::ListEntry* {
    for (auto& t : target)
      if (t.name_raw == raw || (iequals(raw, "INBOX") && iequals(t.name_raw, "INBOX"))) return &t;
    return nullptr;
  };
  auto with_prefix = [&](const std::string& utf8) {
    if (ns.prefix.empty() || iequals(utf8, "INBOX") || utf8.starts_with(ns.prefix)) return utf8;
    return ns.prefix + utf8;
  };

  std::vector<FolderMapping> out;
  for (auto& f : source) {
    if (f.noselect) continue;
    FolderMapping m;
    m.source = f;
    std::string sep(1, f.delimiter ? f.delimiter : tdelim);
    // 1. overrides, longest matching prefix at a hierarchy boundary
    std::string best;
    for (auto& [from, to] : overrides)
      if ((f.name_utf8 == from || f.name_utf8.starts_with(from + sep)) && from.size() > best.size()) best = from;
    if (!best.empty()) {
      std::string rest = f.name_utf8.substr(best.size());
      m.target_utf8 = overrides.at(best) + rebuild_hierarchy(rest, f.delimiter, tdelim);
      m.reason = "--map";
    } else if (iequals(f.name_utf8, "INBOX")) {
      m.target_utf8 = "INBOX";
      m.reason = "INBOX";
    } else {
      std::string use = f.special_use();
      const imap::ListEntry* t = nullptr;
      if (std::find(std::begin(kMappedSpecialUse), std::end(kMappedSpecialUse), use) != std::end(kMappedSpecialUse))
        t = target_by_use(use);
      if (t) {
        m.target_utf8 = t->name_utf8;
        m.target_raw = t->name_raw;
        m.reason = "special-use " + use;
      } else {
        m.target_utf8 = with_prefix(rebuild_hierarchy(f.name_utf8, f.delimiter, tdelim));
        m.reason = "same name";
      }
    }
    if (m.target_raw.empty()) m.target_raw = iequals(m.target_utf8, "INBOX") ? "INBOX" : imap::utf7_encode(m.target_utf8);
    m.exists = target_by_raw(m.target_raw) != nullptr;
    out.push_back(std::move(m));
  }

  // 5. Accidental merges of rule-4 names get a numbered name instead. Only
  // the mapping itself decides (never what the target holds), so a re-run
  // picks the same names.
  auto taken = [&](const std::string& raw, size_t except) {
    for (size_t j = 0; j < out.size(); ++j)
      if (j != except && out[j].target_raw == raw) return true;
    return false;
  };
  std::map<std::string, std::vector<size_t>> claimants;
  for (size_t i = 0; i < out.size(); ++i) claimants[out[i].target_raw].push_back(i);
  for (auto& [raw, group] : claimants) {
    if (group.size() < 2) continue;
    std::vector<size_t> automatic;
    bool asked_for = false;
    for (size_t i : group) {
      if (out[i].reason == "same name") automatic.push_back(i);
      else asked_for = true;
    }
    size_t keep = out.size();
    if (!asked_for && !automatic.empty()) {
      keep = automatic.front();
      for (size_t i : automatic)
        if (tdelim == 0 || out[i].source.delimiter == tdelim ||
            out[i].source.name_utf8.find(tdelim) == std::string::npos) {
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

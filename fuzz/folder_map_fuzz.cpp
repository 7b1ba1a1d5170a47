// Folder-name mapping (import/folder_map.h): arbitrary source and target
// folder lists, separators, namespace prefixes and --map overrides give
// mappings or Error(usage), never a crash; every target name is sent as
// valid modified UTF-7 of the UTF-8 name shown; rebuild_hierarchy keeps the
// number of levels; a folder mapped by its own name never shares its target.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "fuzz/fuzz_input.h"
#include "imap/utf7.h"
#include "import/folder_map.h"

using namespace imapstage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzzing::Input input(data, size);
  char from = static_cast<char>(input.byte());
  char to = static_cast<char>(input.byte());
  uint8_t flags = input.byte();

  std::string probe(input.until('\n'));
  std::string rebuilt = importing::rebuild_hierarchy(probe, from, to);
  if (rebuilt.size() != probe.size()) std::abort();
  if (from != 0 && to != 0 && to != '_' && from != to &&
      std::count(rebuilt.begin(), rebuilt.end(), to) != std::count(probe.begin(), probe.end(), from))
    std::abort();

  imap::PersonalNamespace ns;
  ns.delimiter = to ? to : '/';
  if (flags & 1) ns.prefix = std::string("INBOX") + ns.delimiter;

  static const char* uses[] = {"", "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Noselect"};
  std::vector<archive::FolderRecord> source;
  std::vector<imap::ListEntry> target;
  std::map<std::string, std::string> overrides;
  uint32_t id = 1;
  while (!input.empty()) {
    uint8_t kind = input.byte();
    std::string name(input.until('\n'));
    if (kind % 3 == 0) {
      archive::FolderRecord f;
      f.account_id = 1;
      f.id = id++;
      f.name_utf8 = name;
      f.name_raw = imap::utf7_encode(name);
      f.delimiter = (kind & 8) ? 0 : from;
      const char* use = uses[(kind >> 4) % 8];
      if (*use) f.attributes.push_back(use);
      f.noselect = std::string(use) == "\\Noselect";
      source.push_back(std::move(f));
    } else if (kind % 3 == 1) {
      imap::ListEntry t;
      t.name_raw = name;
      t.name_utf8 = imap::utf7_decode(name);
      t.delimiter = ns.delimiter;
      const char* use = uses[(kind >> 4) % 8];
      if (*use) t.attributes.push_back(use);
      t.special_use = std::string(use) == "\\Noselect" ? "" : use;
      t.noselect = std::string(use) == "\\Noselect";
      target.push_back(std::move(t));
    } else {
      size_t eq = name.find('=');
      if (eq != std::string::npos) overrides[name.substr(0, eq)] = name.substr(eq + 1);
    }
  }
  try {
    auto mappings = importing::map_folders(source, target, ns, overrides);
    size_t selectable = std::count_if(source.begin(), source.end(), [](auto& f) { return !f.noselect; });
    if (mappings.size() != selectable) std::abort();
    // No accidental merge: a folder mapped by its own name shares its target with no other folder.
    for (size_t i = 0; i < mappings.size(); ++i)
      for (size_t j = 0; j < mappings.size(); ++j)
        if (i != j && mappings[i].reason.starts_with("same name") && mappings[i].target_raw == mappings[j].target_raw)
          std::abort();
    for (auto& m : mappings) {
      if (m.reason.empty()) std::abort();
      auto decoded = imap::utf7_decode_strict(m.target_raw);
      // A name taken from the target's own LIST is sent as the target spelled it.
      bool from_target = std::any_of(target.begin(), target.end(), [&](auto& t) { return t.name_raw == m.target_raw; });
      if (!from_target && fuzzing::valid_utf8(m.target_utf8) && (!decoded || *decoded != m.target_utf8) &&
          !(m.target_raw == "INBOX" && m.target_utf8.size() == 5))
        std::abort();
    }
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::usage) std::abort();
  }
  // A target with case-insensitive and reserved names: a folder mapped by
  // its own name (or renamed) shares its folded target with no other folder,
  // and nothing so mapped lands on a reserved name the target does not list.
  try {
    importing::TargetNames names;
    names.case_insensitive = true;
    names.reserved = {"[Gmail]/"};
    auto mappings = importing::map_folders(source, target, ns, overrides, {}, names);
    auto own = [](const importing::FolderMapping& m) {
      return m.reason.starts_with("same name") || m.reason.starts_with("renamed");
    };
    for (size_t i = 0; i < mappings.size(); ++i)
      for (size_t j = 0; j < mappings.size(); ++j)
        if (i != j && own(mappings[i]) && !mappings[i].exists &&
            importing::fold_case(mappings[i].target_utf8) == importing::fold_case(mappings[j].target_utf8))
          std::abort();
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::usage) std::abort();
  }
  return 0;
}

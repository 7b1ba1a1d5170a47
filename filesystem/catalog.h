// What `mount` shows and `extract` writes: the archive's folders as Maildir
// directories with their messages' file names, read from the index once (the
// index's committed state at that moment; an export running meanwhile only
// adds, and what it adds is not seen).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "archive-format/archive.h"
#include "filesystem/names.h"

namespace imapstage::filesystem {

struct CatalogOptions {
  std::vector<std::string> accounts;  // archived account names; empty: every account
  Layout layout = Layout::nested;
  std::vector<std::string> include;   // folder globs on canonical names; empty: all
  std::vector<std::string> exclude;
  std::optional<int64_t> since;       // INTERNALDATE >= since (unix seconds)
  std::optional<int64_t> before;      // INTERNALDATE < before
  // Also every generation of every folder, expunged messages included, under
  // all-generations/ACCOUNT/<nested folder levels>/uidvalidity-<N>/.
  bool all_generations = false;
};

struct CatalogMessage {
  archive::MessageRecord record;
  std::string base;  // maildir_base
  std::string info;  // maildir_info: ":2,<flags>"
};

// One Maildir: a folder's current generation (present messages), or with
// all_generations one generation of it (every message kept).
struct CatalogFolder {
  std::string account;                      // the archived account name
  archive::FolderRecord folder;
  std::optional<uint32_t> generation;       // set for an all-generations entry
  std::vector<std::string> dirs;            // escaped levels below the root, account directory first
  std::vector<std::string> keywords;        // keyword_table of the messages
  std::vector<CatalogMessage> messages;     // in UID order
};

// Every selected folder that can hold messages (\Noselect folders are left
// out; their directories appear as parents of their children). Throws
// Error(not_found) for a named account the archive does not have.
// Folders whose escaped paths coincide get "~<folder id>" added to the later one.
std::vector<CatalogFolder> build_catalog(const archive::Archive& archive, const CatalogOptions& options);

}  // namespace imapstage::filesystem

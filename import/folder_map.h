// Where each archived folder goes on the target server.
//
// Rules, in order:
//  1. --map SOURCE=TARGET (UTF-8 names). A mapping of a folder also maps its
//     subfolders: with Projects=Old/Projects, Projects/2024 goes to Old/Projects/2024.
//  2. INBOX goes to INBOX.
//  3. A source folder with a special-use attribute (\Sent \Drafts \Trash
//     \Junk \Archive) goes to the target's folder with the same attribute,
//     whatever its name ("Sent Items", "Gesendet").
//  4. Otherwise the same name, rebuilt in the target's hierarchy: each level
//     of the source name (split at the source's separator) joined with the
//     target's separator, under the target's personal-namespace prefix. A
//     level that contains the target's separator has it replaced by '_'
//     (never skipped). Names are sent modified-UTF-7 encoded.
//  5. Two folders never merge by accident: when a folder mapped by rule 4
//     lands on the same target name as another source folder (e.g. "a.b"
//     rebuilt as "a_b" beside a real "a_b"), the one whose name was changed
//     by the rebuild (else the later one) gets " (2)" (" (3)", ...) added,
//     and its reason says so. Merges asked for (--map, special-use, INBOX)
//     are kept.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "archive-format/archive.h"
#include "imap/session.h"

namespace imapstage::importing {

struct FolderMapping {
  archive::FolderRecord source;
  std::string target_utf8;
  std::string target_raw;     // modified UTF-7, as sent to the server
  std::string reason;         // "--map", "INBOX", "special-use \\Sent", "same name"
  bool exists = false;        // the target already lists it
};

// Maps every selectable source folder (\Noselect ones are left out: their
// children create the hierarchy). `overrides` maps source UTF-8 names to
// target UTF-8 names. Throws Error(usage) for an override whose source is not
// in the archive.
std::vector<FolderMapping> map_folders(const std::vector<archive::FolderRecord>& source,
                                       const std::vector<imap::ListEntry>& target,
                                       const imap::PersonalNamespace& ns,
                                       const std::map<std::string, std::string>& overrides);

// Rebuilds `name` (levels separated by `from`) with separator `to`,
// replacing `to` inside a level by '_'.
std::string rebuild_hierarchy(const std::string& name, char from, char to);

}  // namespace imapstage::importing

// Where each archived folder goes on the target server.
//
// Folders are mapped by their canonical path (archive::FolderRecord::path:
// the levels below the source's namespace prefix, so Cyrus "INBOX.Sent" and
// Dovecot "Sent" are both {"Sent"}) into the target's personal namespace.
// Rules, in order:
//  1. --map SOURCE=TARGET, canonical names with '/' between levels
//     ("Projects=Old/Projects"). A mapping of a folder also maps its
//     subfolders: Projects/2024 goes to Old/Projects/2024. Only a --map
//     imports folders of other users' or shared namespaces ("#other/bob/...",
//     "#shared/..."); without one they are left out (reason says so).
//  2. INBOX goes to INBOX.
//  3. A special-use folder (\Sent \Drafts \Trash \Junk \Archive) goes to the
//     target's folder with the same attribute, whatever its name. Where the
//     target has no folder with that attribute, to a top-level folder whose
//     name the special-use table (special_use_names) gives for that use;
//     else it is created under its own name, with the attribute when the
//     target offers CREATE-SPECIAL-USE. A source without any special-use
//     attribute (Courier) has its top-level folders recognised by the same
//     table, the first of each use in LIST order.
//  4. Subfolders follow their parent: when a folder is mapped by rule 3 to
//     another path (Archive -> Archives), its subfolders go below that path
//     (Archive/2023 -> Archives/2023).
//  5. Otherwise the same path, rebuilt in the target's hierarchy: the levels
//     joined with the target's separator under its personal prefix. A level
//     that contains the target's separator has it replaced by '_' (never
//     skipped). Names are sent modified-UTF-7 encoded. The reason is "same
//     name" only when the target name is the source name unchanged.
//  With a target subfolder (--target-subfolder "Archive/old-server"), rules
//  2-5 put every folder below it instead: INBOX becomes
//  Archive/old-server/INBOX, Sent becomes Archive/old-server/Sent, and
//  nothing is mapped to the target's special-use folders nor created with
//  an attribute, unless TargetSubfolder::special_use asks for rule 3 (then
//  only the special-use folders go to the target's own). --map is unchanged.
//  6. Two folders never merge by accident: when a folder mapped by rule 5
//     lands on the same target name as another source folder (e.g. "a.b"
//     rebuilt as "a_b" beside a real "a_b"), the one whose name was changed
//     by the rebuild (else the later one) gets " (2)" (" (3)", ...) added,
//     and its reason says so. Merges asked for (--map, special-use, INBOX)
//     are kept.
//  7. On a target whose folder names are case-insensitive (TargetNames:
//     Gmail, Microsoft 365), names that differ only in case are one folder
//     there. Level by level, the first spelling of a name under a parent
//     keeps it (folders mapped by --map, special-use and INBOX first, then
//     the others in the archive's folder order, by id); a folder of rules 4-5
//     spelling it otherwise gets " (2)" (" (3)", ...) on that level, and
//     its subfolders follow ("Projects" and "projects/2024" beside it become
//     "Projects" and "projects (2)/2024"). Its reason starts with "renamed:".
//     A target folder that differs only in case is the same folder: the
//     mapping takes the target's spelling and `exists` is set.
//  8. A folder of rules 4-5 whose target name is reserved by the target
//     (TargetNames::reserved, "[Gmail]/" owning "[Gmail]" and everything
//     below it) and that the target does not list as a selectable folder of
//     its own gets " (imported)" on the reserved level ("[Gmail]/Foo" from
//     another server becomes "[Gmail] (imported)/Foo"); its reason starts
//     with "renamed:". The target's own folders ("[Gmail]/All Mail") are
//     mapped to as they are. Rule 8 is applied before rule 7, both before 6.
//  Every name depends only on the archive's folders, the options and the
//  target's namespace and own folders, never on what earlier runs created,
//  and folders that --folder/--exclude leave out of a run still claim their
//  names (`others`), so every run maps each folder to the same name; a
//  folder first archived later is the one numbered.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "archive-format/archive.h"
#include "imap/session.h"

namespace imapstage::importing {

struct FolderMapping {
  archive::FolderRecord source;
  std::string target_utf8;
  std::string target_raw;     // modified UTF-7, as sent to the server
  // Why this target: "--map", "INBOX", "special-use \Sent", "special-use \Sent, by name",
  // "follows its parent ...", "same name", "same name in the target's namespace", ...
  std::string reason;
  bool exists = false;        // the target lists it as a folder that can be selected (a \Noselect or
                              // \NonExistent entry, such as the parent of a created subfolder, is created)
  std::string create_use;     // the special-use attribute to create it with ("" for none)
  bool skipped = false;       // not imported (another namespace without --map); reason says why
};

// Where import puts a whole account: below `path` (canonical levels; empty: no subfolder).
struct TargetSubfolder {
  std::vector<std::string> path;
  bool special_use = false;  // special-use folders still go to the target's own (rule 3)
};

// How the target compares and reserves folder names (batch/providers.h:
// `case_insensitive_names`, `reserved`).
struct TargetNames {
  bool case_insensitive = false;      // rule 7
  // Rule 8: canonical names ('/' between levels); one ending in '/' owns
  // that folder and everything below it ("[Gmail]/"), another only itself.
  std::vector<std::string> reserved;
  bool empty() const { return !case_insensitive && reserved.empty(); }
};

// The folder-name rules of a provider's IMAP service: "gmail" compares names
// without case and reserves "[Gmail]/" and "[Google Mail]/"; "microsoft365"
// compares names without case; any other name has none. The provider table
// (batch/providers.h) and import's detection of Gmail (X-GM-EXT-1) use these.
TargetNames provider_target_names(std::string_view provider);

// Maps every selectable source folder (\Noselect ones are left out: their
// children create the hierarchy). `target_namespaces` are the target's
// (Session::namespaces()); only its personal namespace receives folders.
// `overrides` maps source canonical names to target canonical names. Throws
// Error(usage) for an override whose source is not in the archive.
// `others` are the account's folders this run leaves out: not mapped, but
// their names are taken into account (rules 6-7) as if they were.
std::vector<FolderMapping> map_folders(const std::vector<archive::FolderRecord>& source,
                                       const std::vector<imap::ListEntry>& target,
                                       const std::vector<imap::Namespace>& target_namespaces,
                                       const std::map<std::string, std::string>& overrides,
                                       const TargetSubfolder& subfolder = {}, const TargetNames& names = {},
                                       const std::vector<archive::FolderRecord>& others = {});
// The same with only the target's personal namespace known.
std::vector<FolderMapping> map_folders(const std::vector<archive::FolderRecord>& source,
                                       const std::vector<imap::ListEntry>& target,
                                       const imap::PersonalNamespace& ns,
                                       const std::map<std::string, std::string>& overrides,
                                       const TargetSubfolder& subfolder = {}, const TargetNames& names = {},
                                       const std::vector<archive::FolderRecord>& others = {});

// `utf8` with its letters in lower case, as servers with case-insensitive
// names compare them: ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic
// capitals (other characters unchanged).
std::string fold_case(std::string_view utf8);

// The well-known names of a special-use folder in common servers and
// clients, in several languages ("Sent", "Sent Items", "Gesendete Elemente",
// "Éléments envoyés", ...); empty for another use. Compared case-insensitively.
const std::vector<std::string_view>& special_use_names(std::string_view use);

// Rebuilds `name` (levels separated by `from`) with separator `to`,
// replacing `to` inside a level by '_'.
std::string rebuild_hierarchy(const std::string& name, char from, char to);

}  // namespace imapstage::importing

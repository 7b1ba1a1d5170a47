// Folder selection by --folder / --exclude glob patterns (fnmatch rules; '*'
// also matches the hierarchy separator).
#pragma once

#include <string>
#include <vector>

namespace imapstage {

// True when `name` matches one of `include` (or `include` is empty) and none of `exclude`.
bool folder_selected(const std::string& name, const std::vector<std::string>& include,
                     const std::vector<std::string>& exclude);

// True when `name` matches the one glob `pattern`.
bool glob_matches(const std::string& pattern, const std::string& name);

}  // namespace imapstage

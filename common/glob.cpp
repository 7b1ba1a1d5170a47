#include "common/glob.h"

#include <fnmatch.h>

namespace imapstage {

bool folder_selected(const std::string& name, const std::vector<std::string>& include,
                     const std::vector<std::string>& exclude) {
  auto matches = [&](const std::vector<std::string>& patterns) {
    for (auto& p : patterns)
      if (glob_matches(p, name)) return true;
    return false;
  };
  if (!include.empty() && !matches(include)) return false;
  return !matches(exclude);
}

bool glob_matches(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

}  // namespace imapstage

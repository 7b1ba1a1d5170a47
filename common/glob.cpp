#include "common/glob.h"

#include <fnmatch.h>

namespace imapstage {

bool folder_selected(const std::string& name, const std::vector<std::string>& include,
                     const std::vector<std::string>& exclude) {
  auto matches = [&](const std::vector<std::string>& patterns) {
    for (auto& p : patterns)
      if (fnmatch(p.c_str(), name.c_str(), 0) == 0) return true;
    return false;
  };
  if (!include.empty() && !matches(include)) return false;
  return !matches(exclude);
}

}  // namespace imapstage

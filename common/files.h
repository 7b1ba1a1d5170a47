// Files imapstage writes outside an archive (reports, manifests, listings).
#pragma once

#include <cstdio>
#include <string>

namespace imapstage {

// Writes `text` to `path`, created owner-only (0600) when new, truncated
// when it exists. Throws Error(io) naming the path.
void write_private_file(const std::string& path, const std::string& text);

// Opens `path` for writing like write_private_file; the caller fcloses it.
std::FILE* open_private_file(const std::string& path);

}  // namespace imapstage

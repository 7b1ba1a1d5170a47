// What `imapstage --version` prints: the program's version, the archive
// format it writes and reads, and the versions of the C libraries it runs
// with (asked of each library's wrapper, so they are the ones loaded, not
// the ones compiled against).
#pragma once

#include <string>
#include <string_view>

namespace imapstage::cli {

// The program's version, from the build (CMake's project version), e.g. "0.1.0".
std::string_view program_version();

// The full text of `imapstage --version`, several lines without a final newline:
//   imapstage 0.1.0
//   archive format 4 (reads 1 to 4)
//   libetpan 1.9, GnuTLS 3.7.9, OpenSSL 3.0.17, LMDB 0.9.24, zstd 1.5.4
std::string version_text();

}  // namespace imapstage::cli

#include "cli/version.h"

#include <fmt/format.h>

#include "archive-format/archive.h"
#include "archive-format/hash.h"
#include "archive-format/index.h"
#include "archive-format/pack.h"
#include "imap/session.h"
#include "net/transport.h"

#ifndef IMAPSTAGE_VERSION
#error "IMAPSTAGE_VERSION comes from CMakeLists.txt (the project's version)"
#endif

namespace imapstage::cli {

std::string_view program_version() { return IMAPSTAGE_VERSION; }

std::string version_text() {
  return fmt::format(
      "imapstage {}\n"
      "archive format {} (reads 1 to {})\n"
      "libetpan {}, GnuTLS {}, OpenSSL {}, LMDB {}, zstd {}",
      program_version(), archive::kFormatVersion, archive::kFormatVersion, imap::libetpan_version(),
      net::gnutls_version(), archive::openssl_version(), archive::lmdb_version(), archive::zstd_version());
}

}  // namespace imapstage::cli

// Comparable views of mail, for tests that check "nothing lost, nothing
// duplicated": a server's folders (from TestServer::summary) or an archive's
// current generation, as per-message fingerprints of hash, INTERNALDATE and
// flags.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "verify/offline.h"

namespace imapstage::testing {

// One message as a comparable string: hash, INTERNALDATE, flags (sorted, no \Recent).
std::string fingerprint(const std::string& sha256, int64_t internaldate, std::vector<std::string> flags);

// folder (UTF-8) -> UID -> fingerprint, from a harness summary.
using UidView = std::map<std::string, std::map<uint32_t, std::string>>;
// folder (UTF-8) -> sorted fingerprints (UIDs differ between servers).
using MultisetView = std::map<std::string, std::vector<std::string>>;

// Every folder with messages in a TestServer::summary.
UidView server_view(const nlohmann::json& summary);
// The archive's current generation of every folder, present messages only;
// empty when the archive has no such account.
UidView archive_view(const std::filesystem::path& dir, const std::string& account_name);
MultisetView multiset(const UidView& v);

struct Difference {
  size_t lost = 0;        // in the source, not in the copy
  size_t duplicated = 0;  // in the copy more often than in the source (or not at all)
};
Difference compare(const MultisetView& source, const MultisetView& copy);

// Messages in the view.
size_t count(const UidView& v);

// Offline verify of the whole archive on two threads, events discarded.
verify::OfflineReport verify_archive(const std::filesystem::path& dir);

}  // namespace imapstage::testing

// Which messages a run takes: --since/--before on INTERNALDATE and
// --larger/--smaller on size, shared by import, verify and extract so the
// same words select the same messages everywhere.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace imapstage {

struct MessageFilter {
  std::optional<int64_t> since;    // INTERNALDATE >= since (unix seconds, UTC)
  std::optional<int64_t> before;   // INTERNALDATE < before
  std::optional<uint64_t> larger;  // size > larger (bytes)
  std::optional<uint64_t> smaller; // size < smaller

  bool empty() const { return !since && !before && !larger && !smaller; }
  // A message without an INTERNALDATE (0) counts as 1970-01-01: --since
  // leaves it out, --before takes it.
  bool matches(int64_t internaldate, uint64_t size) const {
    if (since && internaldate < *since) return false;
    if (before && internaldate >= *before) return false;
    if (larger && size <= *larger) return false;
    if (smaller && size >= *smaller) return false;
    return true;
  }
  // "--since 2020-01-01 --larger 1048576", as the options would be given ("" when empty).
  std::string describe() const;
  // {"since": "2020-01-01", "larger": 1048576, ...}: for run history and reports.
  nlohmann::json to_json() const;
  // The filter to_json wrote; throws Error(usage) for what it cannot have written.
  static MessageFilter from_json(const nlohmann::json& j);
  bool operator==(const MessageFilter&) const = default;
};

// "YYYY-MM-DD" as the unix time of that day's 00:00 UTC. Throws Error(usage)
// naming the text otherwise.
int64_t parse_day(const std::string& text);
// The day of a unix time, "YYYY-MM-DD" (UTC).
std::string format_day(int64_t unix_seconds);

// "1500", "10k", "50MB", "2.5 MiB", "1G": bytes. Units are powers of 1024
// (k, K, KB, KiB, M, MB, MiB, G, GB, GiB; case-insensitive). Throws
// Error(usage) naming the text for anything else.
uint64_t parse_size(const std::string& text);

}  // namespace imapstage

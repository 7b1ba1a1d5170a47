// Days and civil (proleptic Gregorian) dates, without the C library's time
// zone state: for INTERNALDATE and header dates of any year.
#pragma once

#include <cstdint>
#include <string>

namespace imapstage {

// Days since 1970-01-01 of year y, month m (1-12), day d (1-31).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d);
// The date of a day number (days since 1970-01-01).
void civil_from_days(int64_t z, int64_t& y, unsigned& m, unsigned& d);
// The current time as ISO 8601 UTC, "2026-12-03T12:00:00Z" (manifests, bundles).
std::string iso_utc_now();

}  // namespace imapstage

// Rebuilding an archive's LMDB index from its pack files alone: every object
// record is re-read and checked, every journal record replayed in sequence
// order (FORMAT.md, "Rebuilding the index").
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "archive-format/archive.h"

namespace imapstage::archive {

struct RebuildReport {
  std::string archive;
  std::string old_index;          // where the previous index now is ("" when there was none)
  std::string archive_id;         // kept from the old index when it could be read, else new
  uint64_t packs = 0;             // pack files scanned
  uint64_t records = 0;           // whole records read
  uint64_t objects = 0;           // objects indexed
  uint64_t duplicate_objects = 0; // further copies of an indexed object (not indexed)
  uint64_t bad_objects = 0;       // object records that failed their checks (not indexed)
  uint64_t journals = 0;          // journal records replayed
  uint64_t torn_tails = 0;        // packs whose scan stopped early at a damaged or torn record
  uint64_t accounts = 0;          // restored, as counted in the new index
  uint64_t folders = 0;
  uint64_t messages = 0;
  uint64_t targets = 0;
  uint64_t appends = 0;
  uint64_t runs = 0;              // copied from the old index
  uint64_t messages_without_object = 0;
  bool installed = true;          // the rebuilt index replaced the old one
  uint64_t lost_messages = 0;     // message records of the readable old index the rebuild lacks or changed
  uint64_t lost_objects = 0;      // objects of the readable old index the rebuild lacks
  std::vector<std::string> problems;      // what was found damaged, each naming file and offset
  std::vector<std::string> not_restored;  // what the new index lacks that the old one had or may have had
  double seconds = 0;

  nlohmann::json to_json() const;
};

struct RebuildOptions {
  // Install the rebuilt index even when it lacks messages or objects that the
  // current, readable index holds.
  bool force = false;
};

// Takes the writer lock (Error(locked) if held), builds a fresh index in
// DIR/index.rebuild from DIR/packs, then moves DIR/index aside to
// DIR/index.old-<UTC time> (kept, never deleted) and puts the new one in its
// place. When the current index is readable (passes every check) and holds
// message records or objects the rebuilt one lacks, it stays in place
// (unless options.force) and the rebuilt index is left in DIR/index.rebuild;
// the report says so (installed = false) and counts what would be lost.
// Throws Error(not_found) if DIR is not an archive, Error(format) for a
// newer version, Error(corrupt) for a link or special file where the
// archive's directories are; damage inside packs is reported, not thrown.
RebuildReport rebuild_index(const std::filesystem::path& dir, const Archive::Options& options = {},
                            const RebuildOptions& rebuild = {});

}  // namespace imapstage::archive

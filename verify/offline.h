// Offline verification of an archive: every pack record (or a seeded random
// sample) is read, decompressed and re-hashed, on all cores; and the index is
// checked against the packs both ways: every message's object exists and is
// sound, every object is referenced, every record is indexed (or reported as
// an orphan or a redundant copy). Each bad object is reported with everything
// that refers to it (account, folder, UID).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/events.h"

namespace imapstage::verify {

struct OfflineOptions {
  std::filesystem::path archive_dir;
  double sample_percent = 100;   // check this share of the objects (0 < p <= 100)
  uint64_t seed = 0;             // for the sample; 0 picks one (reported)
  unsigned threads = 0;          // 0: one per core
};

struct ObjectProblem {
  std::string hash;                      // hex
  std::string file;                      // pack file, when known
  uint64_t offset = 0;
  std::string problem;                   // what is wrong
  std::vector<std::string> referenced_by;  // "account A, folder F, UIDVALIDITY V, UID U"
};

struct FolderCheck {
  std::string account;
  std::string folder;
  uint64_t messages = 0;     // message records (every generation)
  uint64_t bytes = 0;        // their raw sizes
  uint64_t checked = 0;      // of those, objects re-hashed in this run
  uint64_t bad = 0;          // referring to a bad or missing object
  // The filter of the last export that finished the folder (--since, ...;
  // from the run history): what the folder is meant to hold. Empty: everything.
  nlohmann::json selection = nlohmann::json::object();
};

struct OfflineReport {
  std::string archive;
  uint64_t seed = 0;
  double sample_percent = 100;
  uint64_t packs = 0;
  uint64_t records = 0;              // records found in the packs
  uint64_t objects = 0;              // objects in the index
  uint64_t objects_checked = 0;      // decompressed and re-hashed
  uint64_t bytes_checked = 0;        // raw bytes re-hashed
  uint64_t stored_bytes_read = 0;    // compressed bytes read
  uint64_t messages = 0;             // message records in the index
  std::vector<ObjectProblem> bad_objects;      // damaged, missing or unreadable: data at risk
  std::vector<ObjectProblem> orphans;          // records or objects nothing refers to (no data at risk)
  std::vector<std::string> pack_problems;      // torn tails, unreadable packs
  std::vector<std::string> index_problems;     // the index disagrees with itself (message counts)
  std::vector<FolderCheck> folders;
  double seconds = 0;

  bool ok() const { return bad_objects.empty() && pack_problems.empty() && index_problems.empty(); }
  nlohmann::json to_json() const;
};

// Throws Error only when the archive cannot be opened at all.
OfflineReport verify_offline(const OfflineOptions& options, EventSink& events);

// What can be checked of an encrypted archive without its passphrase
// (FORMAT.md, "Encryption"): FORMAT, the key file, the `packs` table, every
// pack header and record header (magic, CRC, sizes) up to the committed size.
// Neither AEAD tags nor contents are checked (they need the key).
struct StructureReport {
  std::string archive;
  uint64_t packs = 0;
  uint64_t records = 0;
  uint64_t key_slots = 0;
  std::vector<std::string> problems;
  bool ok() const { return problems.empty(); }
  nlohmann::json to_json() const;
};
StructureReport verify_structure(const std::filesystem::path& archive_dir);

}  // namespace imapstage::verify

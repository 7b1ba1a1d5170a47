// Verified message bytes for readers that come back to the same object in
// pieces (the mount's read calls): a least-recently-used cache of whole
// decompressed objects holding at most a fixed number of bytes.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "archive-format/archive.h"

namespace imapstage::filesystem {

class ObjectCache {
 public:
  // Objects are read from `archive`, which must outlive the cache.
  ObjectCache(const archive::Archive& archive, uint64_t budget_bytes);

  // The object's bytes, decompressed and checked against its SHA-256 when
  // not cached. Objects larger than the budget are returned without being
  // kept. Throws what Archive::read_object throws (Error(corrupt),
  // Error(not_found)). Thread-safe.
  std::shared_ptr<const std::string> get(const archive::Hash& hash);

  uint64_t cached_bytes() const;
  uint64_t loads() const;  // objects decompressed so far

 private:
  using Lru = std::list<archive::Hash>;
  struct Entry {
    std::shared_ptr<const std::string> bytes;
    Lru::iterator position;
  };
  const archive::Archive& archive_;
  uint64_t budget_;
  mutable std::mutex mutex_;
  std::map<archive::Hash, Entry> entries_;
  Lru lru_;  // most recently used first
  uint64_t bytes_ = 0;
  uint64_t loads_ = 0;
};

}  // namespace imapstage::filesystem

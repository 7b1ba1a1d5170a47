// Verified message bytes for readers that come back to the same object in
// pieces (the mount's read calls): a least-recently-used cache of whole
// decompressed objects holding at most a fixed number of bytes.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "archive-format/archive.h"

namespace imapstage::filesystem {

class ObjectCache {
 public:
  // Objects are read from `archive`, which must outlive the cache.
  ObjectCache(const archive::Archive& archive, uint64_t budget_bytes);
  // Stops and joins the prefetching thread.
  ~ObjectCache();
  ObjectCache(const ObjectCache&) = delete;
  ObjectCache& operator=(const ObjectCache&) = delete;

  // The object's bytes, decompressed and checked against its SHA-256 when
  // not cached. Objects larger than the budget are returned without being
  // kept. Throws what Archive::read_object throws (Error(corrupt),
  // Error(not_found)). Thread-safe.
  std::shared_ptr<const std::string> get(const archive::Hash& hash);

  // Asks a background thread to load these objects (at most a few are
  // waiting at any time; the rest are dropped; failures are ignored, get()
  // reports them). For readers that go through a directory in order.
  void prefetch(const std::vector<archive::Hash>& hashes);

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
  // The prefetcher: started by the first prefetch().
  void prefetch_loop();
  std::condition_variable wake_;
  std::deque<archive::Hash> queue_;
  bool stopping_ = false;
  std::thread prefetcher_;
};

}  // namespace imapstage::filesystem

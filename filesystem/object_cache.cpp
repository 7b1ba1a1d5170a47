#include "filesystem/object_cache.h"

namespace imapstage::filesystem {

ObjectCache::ObjectCache(const archive::Archive& archive, uint64_t budget_bytes)
    : archive_(archive), budget_(budget_bytes) {}

std::shared_ptr<const std::string> ObjectCache::get(const archive::Hash& hash) {
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(hash);
    if (it != entries_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.position);
      return it->second.bytes;
    }
  }
  auto bytes = std::make_shared<const std::string>(archive_.read_object(hash));
  std::lock_guard lock(mutex_);
  ++loads_;
  if (bytes->size() > budget_ || entries_.count(hash)) return bytes;
  while (bytes_ + bytes->size() > budget_ && !lru_.empty()) {
    auto victim = entries_.find(lru_.back());
    bytes_ -= victim->second.bytes->size();
    entries_.erase(victim);
    lru_.pop_back();
  }
  lru_.push_front(hash);
  entries_[hash] = {bytes, lru_.begin()};
  bytes_ += bytes->size();
  return bytes;
}

uint64_t ObjectCache::cached_bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

uint64_t ObjectCache::loads() const {
  std::lock_guard lock(mutex_);
  return loads_;
}

}  // namespace imapstage::filesystem

#include "filesystem/object_cache.h"

#include <algorithm>

namespace imapstage::filesystem {

namespace {
constexpr size_t kPrefetchQueue = 8;
}

ObjectCache::ObjectCache(const archive::Archive& archive, uint64_t budget_bytes)
    : archive_(archive), budget_(budget_bytes) {}

ObjectCache::~ObjectCache() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (prefetcher_.joinable()) prefetcher_.join();
}

void ObjectCache::prefetch(const std::vector<archive::Hash>& hashes) {
  {
    std::lock_guard lock(mutex_);
    for (auto& h : hashes)
      if (!entries_.count(h) && queue_.size() < kPrefetchQueue &&
          std::find(queue_.begin(), queue_.end(), h) == queue_.end())
        queue_.push_back(h);
    if (!prefetcher_.joinable()) prefetcher_ = std::thread([this] { prefetch_loop(); });
  }
  wake_.notify_one();
}

void ObjectCache::prefetch_loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    archive::Hash h = queue_.front();
    queue_.pop_front();
    if (entries_.count(h)) continue;
    lock.unlock();
    try {
      get(h);
    } catch (...) {
      // get() on open reports it
    }
    lock.lock();
  }
}

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

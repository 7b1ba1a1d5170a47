#include "archive-format/object_filter.h"

#include <algorithm>
#include <cstring>

namespace imapstage::archive {

namespace {

constexpr uint64_t kBitsPerObject = 16;  // with 4 probes: about 0.24 % false "maybe"
constexpr int kProbes = 4;
constexpr uint64_t kMinBits = uint64_t{1} << 16;

uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Bit positions from the hash itself (SHA-256 output: its bytes are as good
// as random), by double hashing.
template <typename F>
void probe(const Hash& hash, uint64_t mask, F&& f) {
  uint64_t a = load64(hash.data()), b = load64(hash.data() + 8) | 1;
  for (int i = 0; i < kProbes; ++i) f((a + static_cast<uint64_t>(i) * b) & mask);
}

}  // namespace

ObjectFilter::ObjectFilter(Source each_indexed) : each_indexed_(std::move(each_indexed)) {}

bool ObjectFilter::test_locked(const Hash& hash) const {
  uint64_t mask = words_.size() * 64 - 1;
  bool all = true;
  probe(hash, mask, [&](uint64_t bit) { all = all && (words_[bit / 64] >> (bit % 64) & 1); });
  return all;
}

void ObjectFilter::set_locked(const Hash& hash) {
  uint64_t mask = words_.size() * 64 - 1;
  probe(hash, mask, [&](uint64_t bit) { words_[bit / 64] |= uint64_t{1} << (bit % 64); });
  ++count_;
}

void ObjectFilter::fill_locked() {
  // Sized for twice what the index holds now; count the objects first.
  uint64_t n = 0;
  each_indexed_([&](const Hash&) { ++n; });
  uint64_t bits = kMinBits;
  while (bits < 2 * n * kBitsPerObject) bits *= 2;
  words_.assign(bits / 64, 0);
  count_ = 0;
  each_indexed_([&](const Hash& h) { set_locked(h); });
}

bool ObjectFilter::may_hold(const Hash& hash) {
  std::lock_guard lock(mutex_);
  if (words_.empty()) {
    if (++asked_ < kAskedBeforeFill) return true;
    fill_locked();
  } else if (count_ * kBitsPerObject > words_.size() * 64) {
    fill_locked();  // outgrown: false "maybe" would rise
  }
  return test_locked(hash);
}

bool ObjectFilter::surely_absent(const Hash& hash) const {
  std::lock_guard lock(mutex_);
  return !words_.empty() && !test_locked(hash);
}

void ObjectFilter::add(const Hash& hash) {
  std::lock_guard lock(mutex_);
  if (!words_.empty()) set_locked(hash);
}

bool ObjectFilter::filled() const {
  std::lock_guard lock(mutex_);
  return !words_.empty();
}

uint64_t ObjectFilter::bits() const {
  std::lock_guard lock(mutex_);
  return words_.size() * 64;
}

}  // namespace imapstage::archive

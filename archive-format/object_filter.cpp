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
// as random), by double hashing, in a filter of words.size() * 64 bits (a
// power of two).
template <typename F>
void probe(const Hash& hash, const std::vector<uint64_t>& words, F&& f) {
  uint64_t mask = words.size() * 64 - 1;
  uint64_t a = load64(hash.data()), b = load64(hash.data() + 8) | 1;
  for (int i = 0; i < kProbes; ++i) f((a + static_cast<uint64_t>(i) * b) & mask);
}

void set_bits(std::vector<uint64_t>& words, const Hash& hash) {
  probe(hash, words, [&](uint64_t bit) { words[bit / 64] |= uint64_t{1} << (bit % 64); });
}

}  // namespace

ObjectFilter::ObjectFilter(Source each_indexed) : each_indexed_(std::move(each_indexed)) {}

bool ObjectFilter::test_locked(const Hash& hash) const {
  bool all = true;
  probe(hash, words_, [&](uint64_t bit) { all = all && (words_[bit / 64] >> (bit % 64) & 1); });
  return all;
}

void ObjectFilter::set_locked(const Hash& hash) {
  set_bits(words_, hash);
  ++count_;
}

void ObjectFilter::fill_locked() {
  // Built aside and kept only when the scan completes: a filter missing some
  // indexed objects would answer a false "no".
  std::vector<uint64_t> words(kMinBits / 64, 0);
  uint64_t count = 0;
  auto expect = [&](uint64_t n) {
    uint64_t bits = kMinBits;
    while (bits < 2 * n * kBitsPerObject) bits *= 2;
    words.assign(bits / 64, 0);
    count = 0;
  };
  each_indexed_(expect, [&](const Hash& h) {
    set_bits(words, h);
    ++count;
  });
  words_.swap(words);
  count_ = count;
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

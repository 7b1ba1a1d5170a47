#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "archive-format/hash.h"

namespace imapstage::archive {

// Which objects an archive's index may hold, for a writer's duplicate checks:
// a Bloom filter over the SHA-256 of every indexed object. "No" is certain;
// "maybe" is asked of the index. A lookup in the index lands on a random leaf
// page, and the kernel maps the pages around it as well, so one lookup per
// message kept most of a large index resident in a writer.
//
// Thread-safe. The owner adds every object after the index transaction that
// holds it commits; the filter fills itself from the index (`each_indexed`)
// once asked often enough to pay for the scan, and again when it outgrows
// its size.
class ObjectFilter {
 public:
  // In one read transaction opened after it is called: calls `expect` with
  // how many objects the index holds, then `each` with the hash of every one.
  using Source = std::function<void(const std::function<void(uint64_t)>& expect,
                                    const std::function<void(const Hash&)>& each)>;

  // Questions answered "maybe" without a filter before it is filled: a run
  // that stores a few messages never scans the index.
  static constexpr uint64_t kAskedBeforeFill = 4096;

  explicit ObjectFilter(Source each_indexed);

  // False only when the index certainly does not hold `hash`. May fill the
  // filter (a scan of the index's objects) first.
  bool may_hold(const Hash& hash);
  // True only when the filter is filled and the index certainly does not
  // hold `hash`; never fills (the opposite of may_hold, without its scan).
  bool surely_absent(const Hash& hash) const;
  // Records an object the index now holds (after its commit).
  void add(const Hash& hash);

  bool filled() const;
  uint64_t bits() const;  // size of the filled filter, 0 before

 private:
  // Fills from the index, sized for twice what it holds.
  void fill_locked();
  bool test_locked(const Hash& hash) const;
  void set_locked(const Hash& hash);

  Source each_indexed_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> words_;  // empty until filled
  uint64_t count_ = 0;           // hashes set since the fill
  uint64_t asked_ = 0;
};

}  // namespace imapstage::archive

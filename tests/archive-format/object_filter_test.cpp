#include "archive-format/object_filter.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "archive-format/archive.h"
#include "tests/support/test_server.h"

namespace imapstage::archive {
namespace {

Hash hash_of(int i) { return sha256("object " + std::to_string(i)); }

// An "index" the filter reads: a set of hashes, and how often it was scanned.
struct FakeIndex {
  std::set<Hash> held;
  int scans = 0;
  ObjectFilter::Source source() {
    return [this](const std::function<void(uint64_t)>& expect, const std::function<void(const Hash&)>& each) {
      ++scans;
      expect(held.size());
      for (auto& h : held) each(h);
    };
  }
};

TEST(ObjectFilter, AnswersMaybeUnfilledThenFillsAndRulesOutAbsentObjects) {
  FakeIndex index;
  for (int i = 0; i < 10000; ++i) index.held.insert(hash_of(i));
  ObjectFilter filter(index.source());
  for (uint64_t i = 1; i < ObjectFilter::kAskedBeforeFill; ++i) EXPECT_TRUE(filter.may_hold(hash_of(-1)));
  EXPECT_EQ(index.scans, 0) << "a run asking a few times never scans the index";
  EXPECT_FALSE(filter.surely_absent(hash_of(-1))) << "unfilled, nothing is certain";
  EXPECT_FALSE(filter.filled());

  filter.may_hold(hash_of(0));
  EXPECT_TRUE(filter.filled());
  EXPECT_EQ(index.scans, 1) << "filled with one scan of the index";
  for (int i = 0; i < 10000; ++i) ASSERT_TRUE(filter.may_hold(hash_of(i))) << i;  // never a false "no"
  int maybe = 0;
  for (int i = 10000; i < 110000; ++i) maybe += filter.may_hold(hash_of(i));
  EXPECT_LT(maybe, 1000) << "false maybe over 1 % of 100,000 absent objects";
  // Filled, the two questions agree (surely_absent only never fills).
  for (int i = 100000; i < 101000; ++i) EXPECT_EQ(filter.surely_absent(hash_of(i)), !filter.may_hold(hash_of(i))) << i;
}

TEST(ObjectFilter, AddedObjectsAreHeldAndAnOutgrownFilterRefillsFromTheIndex) {
  FakeIndex index;
  for (int i = 0; i < 100; ++i) index.held.insert(hash_of(i));
  ObjectFilter filter(index.source());
  for (uint64_t i = 0; i < ObjectFilter::kAskedBeforeFill; ++i) filter.may_hold(hash_of(-1));
  ASSERT_TRUE(filter.filled());
  uint64_t first_bits = filter.bits();
  int scans = index.scans;
  // Objects committed later (the owner adds them after its transaction).
  for (int i = 100; i < 100000; ++i) {
    index.held.insert(hash_of(i));
    filter.add(hash_of(i));
  }
  for (int i = 0; i < 100000; i += 7) ASSERT_FALSE(filter.surely_absent(hash_of(i))) << i;
  EXPECT_TRUE(filter.may_hold(hash_of(99999)));
  EXPECT_GT(index.scans, scans) << "outgrown: filled again, larger";
  EXPECT_GT(filter.bits(), first_bits);
  int maybe = 0;
  for (int i = 100000; i < 150000; ++i) maybe += filter.may_hold(hash_of(i));
  EXPECT_LT(maybe, 500);
}

// The archive's writer: duplicates are still recognised after its filter is
// filled, whether committed before the fill or by another batch after it.
TEST(ObjectFilter, AWriterRecognisesEveryIndexedObjectOnceItsFilterIsFilled) {
  testing::TempDir dir;
  auto a = Archive::open(dir.path() + "/a", Archive::Mode::create);
  auto raw = [](int i) { return "From: a@example.org\r\nSubject: " + std::to_string(i) + "\r\n\r\nbody\r\n"; };
  const int n = static_cast<int>(ObjectFilter::kAskedBeforeFill) + 500;
  {
    Batch b(*a);
    for (int i = 0; i < n; ++i) ASSERT_TRUE(b.put_object(sha256(raw(i)), raw(i)));
    b.commit();
  }
  Batch again(*a), other(*a);
  for (int i = 0; i < n; ++i) ASSERT_FALSE(again.put_object(sha256(raw(i)), raw(i))) << i;  // fills the filter
  for (int i = n; i < n + 100; ++i) ASSERT_TRUE(other.put_object(sha256(raw(i)), raw(i)));
  other.commit();
  for (int i = n; i < n + 100; ++i) EXPECT_FALSE(again.put_object(sha256(raw(i)), raw(i))) << i;
  for (int i = n + 100; i < n + 110; ++i) EXPECT_TRUE(again.put_object(sha256(raw(i)), raw(i))) << i;
  again.commit();
  for (int i = 0; i < n + 110; i += 37) EXPECT_EQ(a->read_object(sha256(raw(i))), raw(i)) << i;
}

}  // namespace
}  // namespace imapstage::archive

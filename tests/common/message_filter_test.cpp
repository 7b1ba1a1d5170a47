#include "common/message_filter.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/rate_limit.h"

namespace imapstage {
namespace {

TEST(MessageFilter, SizesInUnitsOf1024) {
  EXPECT_EQ(parse_size("1500"), 1500u);
  EXPECT_EQ(parse_size("10k"), 10240u);
  EXPECT_EQ(parse_size("50MB"), 50ull << 20);
  EXPECT_EQ(parse_size("2.5 MiB"), 2621440u);
  EXPECT_EQ(parse_size("1G"), 1ull << 30);
  for (const char* bad : {"", "MB", "-5", "5 parsecs", "1.2.3k", "k10"}) {
    try {
      parse_size(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::usage);
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos);
    }
  }
}

TEST(MessageFilter, DaysAreUtcMidnights) {
  EXPECT_EQ(parse_day("2020-01-01"), 1577836800);
  EXPECT_EQ(format_day(1577836800 + 86399), "2020-01-01");
  EXPECT_THROW(parse_day("2020-13-01"), Error);
  EXPECT_THROW(parse_day("01/02/2020"), Error);
}

TEST(MessageFilter, BoundsAreHalfOpenAndUnknownDatesAre1970) {
  MessageFilter f;
  EXPECT_TRUE(f.empty());
  EXPECT_TRUE(f.matches(0, 0));
  f.since = parse_day("2020-01-01");
  f.before = parse_day("2021-01-01");
  EXPECT_TRUE(f.matches(parse_day("2020-01-01"), 1));
  EXPECT_FALSE(f.matches(parse_day("2021-01-01"), 1));
  EXPECT_FALSE(f.matches(parse_day("2019-12-31"), 1));
  EXPECT_FALSE(f.matches(0, 1));  // no INTERNALDATE: before any --since
  f = MessageFilter{};
  f.larger = 100;
  f.smaller = 200;
  EXPECT_FALSE(f.matches(5, 100));
  EXPECT_TRUE(f.matches(5, 101));
  EXPECT_TRUE(f.matches(5, 199));
  EXPECT_FALSE(f.matches(5, 200));
  EXPECT_EQ(f.describe(), "--larger 100 --smaller 200");
  EXPECT_EQ(f.to_json(), (nlohmann::json{{"larger", 100}, {"smaller", 200}}));
}

TEST(RateLimiter, NeverFasterThanTheCapWithinTenPercent) {
  RateLimiter limiter(4000, 0);  // bytes per second
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) limiter.acquire(limiter.bytes_per_send(), 1);  // 10 x 1000 bytes
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double rate = 10 * 1000 / seconds;
  EXPECT_LE(rate, 4000 * 1.0001);
  EXPECT_GE(rate, 4000 * 0.9) << seconds;
  EXPECT_EQ(limiter.bytes_per_send(), 1000u);
  RateLimiter none(0, 0);
  EXPECT_FALSE(none.limited());
}

}  // namespace
}  // namespace imapstage

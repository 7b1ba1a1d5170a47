// Modified UTF-7 (RFC 3501 section 5.1.3): round trips and strict rejection.
#include <gtest/gtest.h>

#include "imap/session.h"
#include "imap/utf7.h"

namespace imapstage::imap {
namespace {

struct Pair {
  const char* utf8;
  const char* mutf7;
};

const Pair kPairs[] = {
    {"INBOX", "INBOX"},
    {"", ""},
    {"Entwürfe", "Entw&APw-rfe"},
    {"&", "&-"},
    {"A&B", "A&-B"},
    {"Café & Co", "Caf&AOk- &- Co"},
    {"日本語", "&ZeVnLIqe-"},
    {"Projekte/Übersicht", "Projekte/&ANw-bersicht"},
    {"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
    {"😀", "&2D3eAA-"},
    {"a😀b", "a&2D3eAA-b"},
    {"Ελλάδα", "&A5UDuwO7A6wDtAOx-"},
    {"x\ty", "x&AAk-y"},
};

TEST(Utf7, EncodesAndDecodesTable) {
  for (auto& p : kPairs) {
    EXPECT_EQ(utf7_encode(p.utf8), p.mutf7) << p.utf8;
    auto decoded = utf7_decode_strict(p.mutf7);
    ASSERT_TRUE(decoded.has_value()) << p.mutf7;
    EXPECT_EQ(*decoded, p.utf8) << p.mutf7;
    EXPECT_EQ(utf7_decode(p.mutf7), p.utf8);
  }
}

TEST(Utf7, RejectsInvalidInput) {
  const char* bad[] = {
      "&",             // unterminated
      "&ZeVnLIqe",     // unterminated shift
      "&-&",           // unterminated after an escape
      "&AGE-",         // shifted printable ASCII ("a")
      "&AC0-",         // shifted '-'
      "&2D0-",         // lone high surrogate
      "&3gA-",         // lone low surrogate
      "&APx-",         // non-zero leftover bits
      "&Ze-",          // incomplete UTF-16 unit
      "&Ze/nLIqe-",    // '/' is not in the modified alphabet
      "Entwürfe",      // raw 8-bit
      "a\tb",          // control character unshifted
      "&APw=-",        // padding is not allowed
  };
  for (const char* b : bad) {
    EXPECT_FALSE(utf7_decode_strict(b).has_value()) << b;
    EXPECT_EQ(utf7_decode(b), b) << "lenient decode returns the input unchanged";
  }
}

TEST(Utf7, InvalidUtf8BecomesReplacementCharacter) {
  EXPECT_EQ(utf7_encode("a\xff" "b"), "a&,,0-b");
  EXPECT_EQ(*utf7_decode_strict("a&,,0-b"), "a\xef\xbf\xbd" "b");
}

TEST(Utf7, RoundTripsEveryPlane) {
  std::string s = "x";
  for (uint32_t cp : {0x80u, 0x7ffu, 0x800u, 0xfffdu, 0x10000u, 0x10ffffu, 0x1f600u}) {
    std::string u;
    if (cp < 0x800) {
      u += static_cast<char>(0xc0 | (cp >> 6));
      u += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      u += static_cast<char>(0xe0 | (cp >> 12));
      u += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      u += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      u += static_cast<char>(0xf0 | (cp >> 18));
      u += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      u += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      u += static_cast<char>(0x80 | (cp & 0x3f));
    }
    s += u + "/";
  }
  auto back = utf7_decode_strict(utf7_encode(s));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, s);
}

TEST(SequenceSet, RendersRanges) {
  EXPECT_EQ(to_sequence_set({{1, 5}, {9, 9}, {12, 0}}), "1:5,9,12:*");
  EXPECT_EQ(to_sequence_set({{1, 0}}), "1:*");
}

TEST(DateTime, ParsesAndFormats) {
  int64_t t = 0;
  int32_t tz = 0;
  ASSERT_TRUE(parse_date_time("17-Jul-1996 02:44:25 -0700", t, tz));
  EXPECT_EQ(t, 837596665);
  EXPECT_EQ(tz, -420);
  EXPECT_EQ(format_date_time(t, tz), "17-Jul-1996 02:44:25 -0700");
  ASSERT_TRUE(parse_date_time(" 7-Jul-1996 02:44:25 +0530", t, tz));
  EXPECT_EQ(tz, 330);
  EXPECT_EQ(format_date_time(t, tz), "07-Jul-1996 02:44:25 +0530");
  ASSERT_TRUE(parse_date_time("\"01-Jan-1970 00:00:00 +0000\"", t, tz));
  EXPECT_EQ(t, 0);
  EXPECT_EQ(format_date_time(0, 0), "01-Jan-1970 00:00:00 +0000");
  // Dates before 1970-01-02 are outside what imapstage stores or sends (valid_internaldate):
  // they are shown as such, never formatted into something a server might read differently.
  EXPECT_EQ(format_date_time(-1, 0), "(impossible date -1 +0)");
  for (const char* bad : {"", "17-Jux-1996 02:44:25 -0700", "32-Jul-1996 02:44:25 -0700",
                          "17-Jul-1996 24:44:25 -0700", "17-Jul-1996 02:44:25 0700", "17-Jul-96 02:44:25 -0700",
                          "17-Jul-1996 02:44:25 -0700x"})
    EXPECT_FALSE(parse_date_time(bad, t, tz)) << bad;
}

}  // namespace
}  // namespace imapstage::imap

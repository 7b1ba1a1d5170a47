#include <gtest/gtest.h>

#include "common/error.h"
#include "common/glob.h"
#include "common/message_id.h"
#include "common/retry.h"

namespace imapstage {
namespace {

TEST(Error, NamesWhereItHappened) {
  Error e(ErrorKind::corrupt, "checksum mismatch", Retry::never,
          {.account = "alice@h", .folder = "INBOX", .uid = 12, .file = "packs/00/x.pack", .hash = "ab"});
  EXPECT_STREQ(e.what(), "checksum mismatch (account alice@h, folder INBOX, UID 12, object ab, file packs/00/x.pack)");
  EXPECT_EQ(e.message(), "checksum mismatch");
  auto outer = Error(ErrorKind::network, "gone", Retry::now, {.uid = 5}).with({.account = "a", .folder = "F", .uid = 9});
  EXPECT_EQ(outer.where().uid, 5u);  // the inner, more precise field wins
  EXPECT_EQ(outer.where().folder, "F");
  EXPECT_EQ(outer.retry(), Retry::now);
}

TEST(Error, DiskFullIsRetryableLater) {
  try {
    throw_io("write failed", "/x", ENOSPC);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_EQ(e.retry(), Retry::later);
    EXPECT_EQ(e.where().file, "/x");
  }
}

TEST(Glob, IncludeThenExclude) {
  EXPECT_TRUE(folder_selected("INBOX", {}, {}));
  EXPECT_TRUE(folder_selected("Projects/2024", {"Projects/*"}, {}));
  EXPECT_FALSE(folder_selected("Sent", {"Projects/*"}, {}));
  EXPECT_FALSE(folder_selected("Projects/Old", {"Projects*"}, {"*/Old"}));
}

TEST(Retry, RetriesTransientErrorsAndGivesUp) {
  RetryPolicy p;
  p.max_attempts = 3;
  p.backoff = std::chrono::milliseconds(1);
  int calls = 0, recovers = 0, reports = 0;
  uint64_t progress = 0;
  run_with_retries(
      p, [&] { if (++calls < 3) throw Error(ErrorKind::network, "dropped", Retry::now); },
      [&] { ++recovers; }, [&](const Error&, int, std::chrono::milliseconds) { ++reports; }, [&] { return progress; });
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(recovers, 2);
  EXPECT_EQ(reports, 2);

  calls = 0;
  try {
    run_with_retries(
        p, [&] { ++calls; throw Error(ErrorKind::network, "dropped", Retry::now); }, [] {},
        [](const Error&, int, std::chrono::milliseconds) {}, [&] { return progress; });
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(calls, 3);
    EXPECT_NE(std::string(e.what()).find("gave up after 3 attempts"), std::string::npos);
  }

  // Progress resets the budget: 5 failures, each after progress, still succeed.
  calls = 0;
  run_with_retries(
      p, [&] { if (++calls <= 5) { ++progress; throw Error(ErrorKind::network, "dropped", Retry::now); } }, [] {},
      [](const Error&, int, std::chrono::milliseconds) {}, [&] { return progress; });
  EXPECT_EQ(calls, 6);

  // Permanent errors are not retried.
  calls = 0;
  EXPECT_THROW(run_with_retries(
                   p, [&] { ++calls; throw Error(ErrorKind::auth, "no", Retry::never); }, [] {},
                   [](const Error&, int, std::chrono::milliseconds) {}, [&] { return progress; }),
               Error);
  EXPECT_EQ(calls, 1);
}

TEST(MessageId, FindsFoldedAndCaseInsensitiveHeaders) {
  EXPECT_EQ(extract_message_id("Subject: x\r\nMessage-ID: <a@b>\r\n\r\nbody"), "<a@b>");
  EXPECT_EQ(extract_message_id("message-id:\r\n  <folded@b>\r\nX: y\r\n\r\n"), "<folded@b>");
  EXPECT_EQ(extract_message_id("Subject: x\n\nMessage-ID: <in-body@b>\n"), "");
  EXPECT_EQ(extract_message_id(""), "");
  EXPECT_EQ(extract_message_id("Message-ID: <lf-only@b>\nSubject: y\n\n"), "<lf-only@b>");
}

}  // namespace
}  // namespace imapstage

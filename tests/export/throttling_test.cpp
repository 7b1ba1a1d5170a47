// Throttling as the big providers do it, against the scripted fake server:
// Microsoft 365's "Suggested Backoff Time" in a NO, [THROTTLED] followed by
// BYE mid-FETCH, Gmail's bandwidth limit, and what a batch does with a
// throttled account (gives its slot to the others, resumes it afterwards).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "batch/runner.h"
#include "common/error.h"
#include "common/retry.h"
#include "export/exporter.h"
#include "imap/response_codes.h"
#include "tests/support/fake_imap_server.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using archive::Archive;
using Clock = std::chrono::steady_clock;
using testing::FakeExchange;
using testing::FakeImapServer;
using testing::TempDir;

std::string message(int n) {
  std::string body = "Message-ID: <t" + std::to_string(n) + "@fake>\r\nSubject: throttle " + std::to_string(n) +
                     "\r\n\r\n";
  for (int i = 0; i < 10; ++i) body += "line " + std::to_string(n) + "\r\n";
  return body;
}

TEST(ThrottleHint, RecognisesTheProvidersWords) {
  using imap::parse_throttle_hint;
  using imap::ThrottleContext;
  auto m365 = parse_throttle_hint("Request is throttled. Suggested Backoff Time: 1234 milliseconds");
  ASSERT_TRUE(m365);
  EXPECT_EQ(m365->backoff_ms, 1234u);
  auto lower = parse_throttle_hint("request is THROTTLED. suggested backoff time:77 milliseconds");
  ASSERT_TRUE(lower);
  EXPECT_EQ(lower->backoff_ms, 77u);
  auto coded = parse_throttle_hint("[THROTTLED] slow down");
  ASSERT_TRUE(coded);
  EXPECT_EQ(coded->reason, "THROTTLED");
  EXPECT_FALSE(coded->backoff_ms);
  EXPECT_TRUE(parse_throttle_hint("[UNAVAILABLE] Server Unavailable. 15"));
  EXPECT_TRUE(parse_throttle_hint("[OVERQUOTA] Account exceeded bandwidth limits. (Failure)"));
  EXPECT_TRUE(parse_throttle_hint("Account exceeded bandwidth limits. (Failure)"));
  // On APPEND, OVERQUOTA is a full mailbox: a limit, not throttling.
  EXPECT_FALSE(parse_throttle_hint("[OVERQUOTA] Quota exceeded", ThrottleContext::upload));
  EXPECT_FALSE(parse_throttle_hint("[SERVERBUG] cannot read"));
  EXPECT_FALSE(parse_throttle_hint("Mailbox does not exist"));
  auto huge = parse_throttle_hint("Suggested Backoff Time: 99999999999999999999999 milliseconds");
  ASSERT_TRUE(huge);
  EXPECT_LE(*huge->backoff_ms, uint64_t{1} << 40);
}

TEST(ThrottleWait, ExponentialWithJitterAndCapped) {
  RetryPolicy p;
  p.throttle_backoff = std::chrono::milliseconds(100);
  p.max_throttle_wait = std::chrono::milliseconds(1000);
  Error plain(ErrorKind::throttled, "x", Retry::now);
  for (int attempt = 1; attempt <= 6; ++attempt) {
    int64_t full = std::min<int64_t>(100LL << (attempt - 1), 1000);
    std::set<int64_t> seen;
    for (int k = 0; k < 50; ++k) {
      auto w = throttle_wait(p, plain, attempt).count();
      EXPECT_GE(w, full / 2) << attempt;
      EXPECT_LE(w, full) << attempt;
      seen.insert(w);
    }
    EXPECT_GT(seen.size(), 1u) << "no jitter at attempt " << attempt;
  }
  auto hinted = plain.with_retry_after(std::chrono::milliseconds(250));
  EXPECT_EQ(throttle_wait(p, hinted, 3).count(), 250);
  EXPECT_EQ(throttle_wait(p, plain.with_retry_after(std::chrono::milliseconds(5000)), 1).count(), 1000);
}

class ThrottlingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 1; i <= 6; ++i) server_.add_message("INBOX", message(i));
  }

  exporting::ExportOptions options(const std::string& user = "alice") {
    exporting::ExportOptions o;
    o.archive_dir = dir_.path() + "/archive";
    o.endpoint = server_.endpoint(3);
    o.credentials.user = user;
    o.credentials.secret = "pw";
    o.account_name = user;
    o.retry.backoff = std::chrono::milliseconds(10);
    o.retry.max_backoff = std::chrono::milliseconds(20);
    o.retry.max_attempts = 3;
    o.retry.throttle_backoff = std::chrono::milliseconds(40);
    o.fetch_batch = 2;
    return o;
  }

  std::map<uint32_t, std::string> archived(const std::string& account) {
    auto a = Archive::open(dir_.path() + "/archive", Archive::Mode::read);
    std::map<uint32_t, std::string> out;
    auto acc = a->find_account(account);
    if (!acc) return out;
    auto f = a->find_folder(acc->id, "INBOX");
    if (!f) return out;
    a->for_each_message(acc->id, f->id, f->uidvalidity, [&](const archive::MessageRecord& m) {
      if (m.state == archive::MessageState::present) out[m.key.uid] = a->read_object(m.hash);
      return true;
    });
    return out;
  }

  void expect_everything(const std::string& account) {
    auto got = archived(account);
    ASSERT_EQ(got.size(), 6u);
    for (int i = 1; i <= 6; ++i) EXPECT_EQ(got.at(static_cast<uint32_t>(i)), message(i)) << i;
  }

  // UIDs of every body fetched from the server, in order.
  std::vector<uint32_t> bodies_fetched() {
    std::vector<uint32_t> uids;
    for (auto& c : server_.commands()) {
      if (c.text.find("UID FETCH") != 0 || c.text.find("BODY") == std::string::npos) continue;
      auto set = c.text.substr(10, c.text.find(' ', 10) - 10);
      for (size_t pos = 0; pos < set.size();) {
        size_t comma = set.find(',', pos);
        std::string part = set.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        size_t colon = part.find(':');
        uint32_t a = static_cast<uint32_t>(std::stoul(part.substr(0, colon)));
        uint32_t b = colon == std::string::npos ? a : static_cast<uint32_t>(std::stoul(part.substr(colon + 1)));
        for (uint32_t u = a; u <= b; ++u) uids.push_back(u);
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
    }
    return uids;
  }

  TempDir dir_;
  FakeImapServer server_;
};

TEST_F(ThrottlingTest, SuggestedBackoffTimeIsHonoured) {
  // Microsoft 365: a NO naming the wait, then the connection is closed.
  server_.on("^UID FETCH .*BODY",
             "$TAG NO Request is throttled. Suggested Backoff Time: 400 milliseconds\r\n"
             "* BYE Connection is closed. 13\r\n",
             1);
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) { x.standard(); }, 0);
  RecordingSink events;
  auto o = options();
  std::vector<double> waits;
  o.retry.on_throttled = [&](const Error& e, std::chrono::milliseconds wait) {
    EXPECT_EQ(e.kind(), ErrorKind::throttled);
    waits.push_back(wait.count() / 1000.0);
  };
  auto t0 = Clock::now();
  auto summary = exporting::run_export(o, events);
  double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_TRUE(summary.complete());
  ASSERT_EQ(waits.size(), 1u);
  EXPECT_DOUBLE_EQ(waits[0], 0.4);
  EXPECT_GE(took, 0.4);
  EXPECT_LT(took, 0.4 + 1.5) << "the wait was not the one suggested";
  EXPECT_GE(server_.connections(), 2u);  // reconnected
  expect_everything("alice");
}

TEST_F(ThrottlingTest, ThrottledThenByeMidFetchLosesAndDuplicatesNothing) {
  // Twice, one message arrives, then [THROTTLED] and BYE; the third connection gets the rest.
  server_.on("^UID FETCH .*BODY",
             [](FakeExchange& x) {
               x.standard_fetch([](FakeExchange&, uint32_t) { return false; });  // its first message only
               x.tagged("NO [THROTTLED] Too many requests, slow down");
               x.untagged("BYE [THROTTLED] Closing connection");
               x.close();
             },
             2);
  RecordingSink events;
  auto o = options();
  int throttles = 0;
  o.retry.on_throttled = [&](const Error&, std::chrono::milliseconds wait) {
    ++throttles;
    EXPECT_LE(wait.count(), 40);  // no hint: exponential from throttle_backoff, with jitter
  };
  auto summary = exporting::run_export(o, events);
  EXPECT_TRUE(summary.complete());
  EXPECT_EQ(throttles, 2);
  EXPECT_EQ(summary.total(&exporting::FolderResult::new_messages), 6u);
  expect_everything("alice");
  // Each message was archived once: what arrived before the throttling was kept, not fetched again.
  auto fetched = bodies_fetched();
  std::map<uint32_t, int> times;
  for (auto u : fetched) ++times[u];
  EXPECT_EQ(times[1], 1) << "UID 1 arrived before the throttling and was kept";
  EXPECT_EQ(times[2], 2) << "UID 2 was lost to the throttling and fetched again, once";
}

TEST_F(ThrottlingTest, GmailBandwidthLimitOnSelectIsThrottling) {
  server_.on("^EXAMINE", "$TAG NO [OVERQUOTA] Account exceeded bandwidth limits. (Failure)\r\n", 1);
  RecordingSink events;
  auto o = options();
  int throttles = 0;
  o.retry.on_throttled = [&](const Error& e, std::chrono::milliseconds) {
    ++throttles;
    EXPECT_NE(std::string(e.what()).find("bandwidth"), std::string::npos) << e.what();
  };
  auto summary = exporting::run_export(o, events);
  EXPECT_TRUE(summary.complete());
  EXPECT_EQ(throttles, 1);
  expect_everything("alice");
}

TEST_F(ThrottlingTest, ALongerDemandThanMaxBackoffStopsTheAccountAsResumable) {
  server_.on("^UID FETCH .*BODY", "$TAG NO Request is throttled. Suggested Backoff Time: 3600000 milliseconds\r\n");
  RecordingSink events;
  auto o = options();
  o.retry.max_throttle_wait = std::chrono::milliseconds(500);
  auto t0 = Clock::now();
  try {
    exporting::run_export(o, events);
    FAIL() << "an hour's wait was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::throttled) << e.what();
    ASSERT_TRUE(e.retry_after());
    EXPECT_EQ(e.retry_after()->count(), 3600000);
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 2.0);
  server_.clear_rules();
  auto again = exporting::run_export(options(), events);  // a later run continues
  EXPECT_TRUE(again.complete());
  expect_everything("alice");
}

TEST_F(ThrottlingTest, BatchGivesAThrottledAccountsSlotToTheOthers) {
  // bob's logins are throttled twice (300 ms suggested); alice and carol finish meanwhile, on one slot.
  server_.on("^LOGIN \"?bob", "$TAG NO [THROTTLED] Request is throttled. Suggested Backoff Time: 300 milliseconds\r\n",
             2);
  std::vector<batch::BatchItem> items = {{"bob", "bob", "fake", "", 1}, {"alice", "alice", "fake", "", 2},
                                         {"carol", "carol", "fake", "", 3}};
  batch::RunnerOptions runner;
  runner.scheduler.jobs = 1;
  runner.scheduler.max_load = 0;
  runner.scheduler.load_poll = std::chrono::milliseconds(20);
  RecordingSink events;
  std::mutex m;
  std::vector<std::string> finished;
  auto archive = dir_.path() + "/archive";
  auto result = batch::run_batch(
      "export", dir_.path() + "/export.json", items, runner, events,
      [&](const batch::BatchItem& item, const std::function<bool()>&) {
        auto o = options(item.account);
        o.retry.wait_when_throttled = false;
        auto s = exporting::run_export(o, events);
        std::lock_guard lock(m);
        finished.push_back(item.account);
        return batch::ItemOutcome{s.total(&exporting::FolderResult::new_messages), 0, s.complete(), ""};
      });
  EXPECT_EQ(result.done, 3u);
  EXPECT_EQ(result.failed, 0u);
  EXPECT_EQ(result.parked, 0u);
  ASSERT_EQ(finished.size(), 3u);
  EXPECT_EQ(finished.back(), "bob");
  int throttled_events = 0;
  for (auto& e : events.events())
    if (e.value("event", "") == "throttled") {
      ++throttled_events;
      EXPECT_EQ(e.value("account", ""), "bob");
      EXPECT_DOUBLE_EQ(e.value("seconds", 0.0), 0.3);
      EXPECT_GT(e.value("resume_at", int64_t{0}), 0);
    }
  EXPECT_EQ(throttled_events, 2);
  for (auto& a : result.state.accounts) EXPECT_EQ(a.status, batch::AccountStatus::done) << a.key;
  expect_everything("bob");
  expect_everything("carol");
}

}  // namespace
}  // namespace imapstage

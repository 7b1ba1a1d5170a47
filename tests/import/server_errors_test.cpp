// The import engine against the scripted fake server: APPEND refused (NO,
// BAD), bad or missing APPENDUID, garbage replies and a connection lost after
// the server stored a message. Each case must end with every message either
// on the target exactly once or named in the summary's failed list, and a
// re-run must not duplicate anything. Also the import's policies: --too-big
// skip, --max-errors, the message filter and the rate caps.
#include <csignal>
#include <algorithm>
#include <chrono>
#include <map>
#include <memory>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "archive-format/hash.h"
#include "common/error.h"
#include "common/message_filter.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "tests/support/fake_imap_server.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::FakeExchange;
using testing::FakeImapServer;
using testing::TempDir;

std::string message(int n) {
  std::string body = "Message-ID: <i" + std::to_string(n) + "@fake>\r\nSubject: import " + std::to_string(n) +
                     "\r\n\r\n";
  for (int i = 0; i < 10 + n; ++i) body += "import body line " + std::to_string(n) + "\r\n";
  return body;
}

class ImportServerErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 1; i <= 6; ++i)
      source_.add_message("INBOX", message(i), i % 2 ? std::vector<std::string>{"\\Seen"} : std::vector<std::string>{});
    export_source();
  }

  // Exports the source's account into the archive (incremental after the first time).
  void export_source() {
    exporting::ExportOptions o;
    o.archive_dir = archive_dir();
    o.endpoint = source_.endpoint();
    o.credentials.user = "alice";
    o.credentials.secret = "pw";
    o.account_name = "alice";
    NullSink sink;
    auto s = exporting::run_export(o, sink);
    ASSERT_TRUE(s.complete());
  }

  std::string archive_dir() const { return dir_.path() + "/archive"; }

  importing::ImportOptions options() {
    importing::ImportOptions o;
    o.archive_dir = archive_dir();
    o.endpoint = target_.endpoint();
    o.credentials.user = "bob";
    o.credentials.secret = "pw";
    o.account = "alice";
    o.retry.backoff = std::chrono::milliseconds(10);
    o.retry.max_backoff = std::chrono::milliseconds(20);
    o.retry.max_attempts = 3;
    return o;
  }

  importing::ImportSummary run(RecordingSink& events) { return importing::run_import(options(), events); }
  importing::ImportSummary run(RecordingSink& events, const importing::ImportPolicy& policy) {
    auto o = options();
    o.policy = policy;
    return importing::run_import(o, events);
  }

  static const importing::ImportFolderResult& inbox(const importing::ImportSummary& s) {
    for (auto& f : s.folders)
      if (f.source == "INBOX") return f;
    throw std::runtime_error("no INBOX in the summary");
  }

  // Hash -> how many times the target's INBOX holds it.
  std::map<archive::Hash, int> target_copies() {
    std::map<archive::Hash, int> out;
    for (auto& m : target_.folder("INBOX").messages) ++out[archive::sha256(m.body)];
    return out;
  }

  // Every source message is on the target exactly once (or, for `missing`, not at all).
  void expect_target_exactly(std::vector<int> missing = {}) {
    auto copies = target_copies();
    size_t expected = 0;
    for (int i = 1; i <= 6; ++i) {
      bool absent = std::find(missing.begin(), missing.end(), i) != missing.end();
      EXPECT_EQ(copies[archive::sha256(message(i))], absent ? 0 : 1) << "message " << i;
      expected += absent ? 0 : 1;
    }
    EXPECT_EQ(target_.folder("INBOX").messages.size(), expected);
  }

  // Refuses (with `reply`) any APPEND that carries message `n`, else answers normally.
  void refuse_message(int n, std::string reply) {
    std::string needle = "<i" + std::to_string(n) + "@fake>";
    target_.on("^APPEND", [needle, reply](FakeExchange& x) {
      for (auto& l : x.command().literals)
        if (l.find(needle) != std::string::npos) {
          x.tagged(reply);
          return;
        }
      x.standard();
    });
  }

  TempDir dir_;
  FakeImapServer source_;
  FakeImapServer target_;
};

TEST_F(ImportServerErrorsTest, CleanImport) {
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(inbox(s).appended, 6u);
  expect_target_exactly();
  auto target = target_.folder("INBOX");
  EXPECT_EQ(target.messages[0].flags, (std::vector<std::string>{"\\Seen"}));
}

TEST_F(ImportServerErrorsTest, NoToAppendNamesTheMessageAndARerunSendsOnlyIt) {
  refuse_message(3, "NO [OVERQUOTA] Quota exceeded (mailbox for user is full)");
  RecordingSink events;
  auto s = run(events);
  EXPECT_FALSE(s.complete());
  auto& f = inbox(s);
  ASSERT_EQ(f.failed.size(), 1u);
  EXPECT_EQ(f.failed[0].uid, 3u);
  EXPECT_EQ(f.failed[0].hash, archive::to_hex(archive::sha256(message(3))));
  EXPECT_NE(f.failed[0].error.find("Quota exceeded"), std::string::npos) << f.failed[0].error;
  EXPECT_EQ(f.appended, 5u);
  EXPECT_EQ(s.to_json()["complete"], false);
  bool reported = false;
  for (auto& e : events.events())
    if (e.value("event", "") == "message_error" && e.value("uid", 0) == 3 && e.value("folder", "") == "INBOX")
      reported = true;
  EXPECT_TRUE(reported);
  expect_target_exactly({3});

  // Once the server takes it, the re-run sends UID 3 alone.
  target_.clear_rules();
  RecordingSink again;
  auto s2 = importing::run_import(options(), again);
  EXPECT_TRUE(s2.complete());
  EXPECT_EQ(inbox(s2).appended, 1u);
  EXPECT_EQ(inbox(s2).already_there, 5u);
  expect_target_exactly();
}

TEST_F(ImportServerErrorsTest, FlagTheTargetCannotKeepIsReportedNeverSilentlyDropped) {
  // A seventh message with a keyword and \Flagged, exported on top.
  source_.add_message("INBOX", message(7), {"\\Flagged", "$Label1"});
  export_source();

  // The target keeps the system flags but no keywords (no \*).
  target_.set_permanent_flags("\\Answered \\Flagged \\Deleted \\Seen \\Draft");
  RecordingSink events;
  auto s = run(events);
  auto& f = inbox(s);
  EXPECT_EQ(f.appended, 7u);
  EXPECT_EQ(f.dropped_flags, (std::vector<std::string>{"$Label1"}));
  bool warned = false;
  for (auto& e : events.events())
    if (e.value("event", "") == "warning" && e.value("flag", "") == "$Label1" &&
        e.value("text", "").find("INBOX") != std::string::npos)
      warned = true;
  EXPECT_TRUE(warned);
  EXPECT_NE(s.to_json().dump().find("$Label1"), std::string::npos);
  // What the target could keep, it got.
  auto target = target_.folder("INBOX");
  ASSERT_EQ(target.messages.size(), 7u);
  bool seventh = false;
  for (auto& m : target.messages)
    if (archive::sha256(m.body) == archive::sha256(message(7))) {
      EXPECT_EQ(m.flags, (std::vector<std::string>{"\\Flagged"}));
      seventh = true;
    }
  EXPECT_TRUE(seventh);
}

TEST_F(ImportServerErrorsTest, MessageOverAppendLimitIsNamedAndTheRestImport) {
  // Messages 5 and 6 are larger than message 4: a limit of message 4's size
  // leaves exactly those two out.
  size_t limit = message(4).size();
  ASSERT_GT(message(5).size(), limit);
  target_.set_capabilities("IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS NAMESPACE APPENDLIMIT=" + std::to_string(limit));
  RecordingSink events;
  auto s = run(events);
  EXPECT_FALSE(s.complete());
  auto& f = inbox(s);
  EXPECT_EQ(f.appended, 4u);
  ASSERT_EQ(f.failed.size(), 2u);
  std::vector<uint32_t> failed;
  for (auto& m : f.failed) {
    failed.push_back(m.uid);
    EXPECT_NE(m.error.find("APPENDLIMIT"), std::string::npos) << m.error;
  }
  std::sort(failed.begin(), failed.end());
  EXPECT_EQ(failed, (std::vector<uint32_t>{5, 6}));
  size_t reported = 0;
  for (auto& e : events.events())
    if (e.value("event", "") == "message_error" && e.value("folder", "") == "INBOX" &&
        (e.value("uid", 0) == 5 || e.value("uid", 0) == 6))
      ++reported;
  EXPECT_EQ(reported, 2u);
  expect_target_exactly({5, 6});
  // No APPEND carried them.
  for (auto& c : target_.commands())
    for (auto& l : c.literals) {
      EXPECT_EQ(l.find("<i5@fake>"), std::string::npos);
      EXPECT_EQ(l.find("<i6@fake>"), std::string::npos);
    }
}

TEST_F(ImportServerErrorsTest, BadToAppendIsAFailureNotALoss) {
  refuse_message(6, "BAD Error in IMAP command APPEND: Invalid arguments.");
  RecordingSink events;
  auto s = run(events);
  auto& f = inbox(s);
  ASSERT_EQ(f.failed.size(), 1u);
  EXPECT_EQ(f.failed[0].uid, 6u);
  EXPECT_NE(f.failed[0].error.find("BAD"), std::string::npos) << f.failed[0].error;
  expect_target_exactly({6});
}

TEST_F(ImportServerErrorsTest, EveryAppendRefusedFailsEveryMessage) {
  target_.on("^APPEND", "$TAG NO [SERVERBUG] Internal error\r\n");
  RecordingSink events;
  auto s = run(events);
  EXPECT_FALSE(s.complete());
  EXPECT_EQ(inbox(s).failed.size(), 6u);
  EXPECT_EQ(inbox(s).appended, 0u);
  expect_target_exactly({1, 2, 3, 4, 5, 6});
}

TEST_F(ImportServerErrorsTest, MissingOrBadAppendUidStillNeverDuplicates) {
  // The server stores the messages but answers without a usable APPENDUID.
  auto calls = std::make_shared<int>(0);
  target_.on("^APPEND", [calls](FakeExchange& x) {
    // Store through the standard handler, replacing its tagged reply.
    FakeImapServer& server = x.server();
    for (auto& l : x.command().literals) server.add_message("INBOX", l);
    const char* replies[] = {"OK [APPENDUID 0 1:6] done", "OK [APPENDUID 5 3:1:2] done", "OK done"};
    x.tagged(replies[(*calls)++ % 3]);
  });
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(inbox(s).appended, 6u);
  expect_target_exactly();
  // A re-run finds them recorded as done: nothing is sent again.
  RecordingSink again;
  auto s2 = run(again);
  EXPECT_TRUE(s2.complete());
  EXPECT_EQ(inbox(s2).appended, 0u);
  EXPECT_EQ(inbox(s2).already_there, 6u);
  expect_target_exactly();
}

TEST_F(ImportServerErrorsTest, ConnectionLostAfterTheServerStoredTheMessages) {
  // The first APPEND is stored, then the connection drops before the reply:
  // the retry must reconcile (find them by hash), not send them twice.
  target_.on("^APPEND", [](FakeExchange& x) {
    for (auto& l : x.command().literals) x.server().add_message("INBOX", l);
    x.close();
  }, 1);
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  EXPECT_GE(s.reconnects, 1);
  EXPECT_EQ(inbox(s).reconciled + inbox(s).appended, 6u);
  EXPECT_EQ(inbox(s).reconciled, 6u);
  expect_target_exactly();
}

TEST_F(ImportServerErrorsTest, GarbageReplyToAppendReconcilesWithoutDuplicates) {
  target_.on("^APPEND", [](FakeExchange& x) {
    for (auto& l : x.command().literals) x.server().add_message("INBOX", l);
    x.send("%%% garbage %%%\r\n");
  }, 1);
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  EXPECT_GE(s.reconnects, 1);
  expect_target_exactly();
}

TEST_F(ImportServerErrorsTest, PersistentStallGivesUpWithANetworkError) {
  target_.on("^APPEND", [](FakeExchange&) {});  // never answers
  RecordingSink events;
  auto started = std::chrono::steady_clock::now();
  try {
    run(events);
    FAIL() << "import completed against a server that never answers APPEND";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::network) << e.what();
    EXPECT_EQ(e.where().folder, "INBOX") << e.what();
    EXPECT_EQ(e.where().account, "alice") << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(60));
  EXPECT_TRUE(target_.folder("INBOX").messages.empty());
}

}  // namespace
}  // namespace imapstage

namespace imapstage {
namespace {

TEST_F(ImportServerErrorsTest, TooBigSkipListsTheMessagesAndTheRunIsComplete) {
  size_t limit = message(4).size();
  target_.set_capabilities("IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS NAMESPACE APPENDLIMIT=" + std::to_string(limit));
  importing::ImportPolicy policy;
  policy.skip_too_big = true;
  RecordingSink events;
  auto s = run(events, policy);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(s.skipped_messages(), 2u);
  auto& f = inbox(s);
  EXPECT_EQ(f.appended, 4u);
  EXPECT_TRUE(f.failed.empty());
  std::vector<uint32_t> skipped;
  for (auto& m : f.skipped) {
    skipped.push_back(m.uid);
    EXPECT_EQ(m.limit, limit);
    EXPECT_EQ(m.size, message(m.uid).size());
    EXPECT_NE(m.reason.find("APPENDLIMIT"), std::string::npos) << m.reason;
  }
  std::sort(skipped.begin(), skipped.end());
  EXPECT_EQ(skipped, (std::vector<uint32_t>{5, 6}));
  size_t events_seen = 0;
  for (auto& e : events.events())
    if (e.value("event", "") == "message_skipped" && e.value("folder", "") == "INBOX") ++events_seen;
  EXPECT_EQ(events_seen, 2u);
  expect_target_exactly({5, 6});
  // The run history carries the policy and the list, for verify and the auditor.
  auto archive = archive::Archive::open(archive_dir(), archive::Archive::Mode::read);
  auto runs = archive->runs();
  ASSERT_FALSE(runs.empty());
  auto details = nlohmann::json::parse(runs.back().details);
  EXPECT_EQ(details["policy"]["too_big"], "skip");
  EXPECT_EQ(details["skipped_messages"], 2);
  // A re-run sends nothing again and skips the same two.
  RecordingSink again;
  auto s2 = run(again, policy);
  EXPECT_EQ(inbox(s2).appended, 0u);
  EXPECT_EQ(s2.skipped_messages(), 2u);
  expect_target_exactly({5, 6});
}

TEST_F(ImportServerErrorsTest, TooBigReplySkippedByPolicy) {
  refuse_message(2, "NO [TOOBIG] Message too large");
  importing::ImportPolicy policy;
  policy.skip_too_big = true;
  RecordingSink events;
  auto s = run(events, policy);
  EXPECT_TRUE(s.complete());
  ASSERT_EQ(inbox(s).skipped.size(), 1u);
  EXPECT_EQ(inbox(s).skipped[0].uid, 2u);
  EXPECT_NE(inbox(s).skipped[0].reason.find("TOOBIG"), std::string::npos);
  expect_target_exactly({2});
}

TEST_F(ImportServerErrorsTest, MaxErrorsStopsTheAccountAndKeepsWhatWasSent) {
  target_.on("^APPEND", "$TAG NO [SERVERBUG] Internal error\r\n");
  importing::ImportPolicy policy;
  policy.max_errors = 3;
  RecordingSink events;
  try {
    run(events, policy);
    FAIL() << "the import should have stopped";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::policy);
    EXPECT_NE(std::string(e.what()).find("--max-errors 3"), std::string::npos) << e.what();
  }
  // The history says why it stopped.
  auto archive = archive::Archive::open(archive_dir(), archive::Archive::Mode::read);
  auto runs = archive->runs();
  ASSERT_FALSE(runs.empty());
  EXPECT_EQ(runs.back().result, "failed");
  EXPECT_NE(runs.back().details.find("max-errors"), std::string::npos);
}

TEST_F(ImportServerErrorsTest, MaxErrorsNotReachedLetsTheRunFinish) {
  refuse_message(3, "NO [OVERQUOTA] Quota exceeded");
  importing::ImportPolicy policy;
  policy.max_errors = 2;
  RecordingSink events;
  auto s = run(events, policy);
  EXPECT_EQ(inbox(s).failed.size(), 1u);
  EXPECT_EQ(inbox(s).appended, 5u);
}

TEST_F(ImportServerErrorsTest, SizeFilterSendsOnlyTheSelectionAndARerunWithoutItTheRest) {
  importing::ImportPolicy policy;
  policy.filter.larger = message(2).size();   // 3..6
  policy.filter.smaller = message(6).size();  // 3..5
  RecordingSink events;
  auto s = run(events, policy);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(inbox(s).appended, 3u);
  EXPECT_EQ(inbox(s).filtered_out, 3u);
  expect_target_exactly({1, 2, 6});
  RecordingSink again;
  auto s2 = run(again);
  EXPECT_EQ(inbox(s2).appended, 3u);
  EXPECT_EQ(inbox(s2).already_there, 3u);
  expect_target_exactly();
}

TEST_F(ImportServerErrorsTest, DateFilterOnInternalDate) {
  // Two more messages: one from 2019, one from 2025; the six others are of 2024-01-01.
  source_.add_message("INBOX", message(7), {}, "15-Mar-2019 08:00:00 +0000");
  source_.add_message("INBOX", message(8), {}, "02-Feb-2025 08:00:00 +0000");
  export_source();
  importing::ImportPolicy policy;
  policy.filter.since = parse_day("2020-01-01");
  policy.filter.before = parse_day("2025-01-01");
  RecordingSink events;
  auto s = run(events, policy);
  EXPECT_EQ(inbox(s).appended, 6u);
  EXPECT_EQ(inbox(s).filtered_out, 2u);
  auto copies = target_copies();
  EXPECT_EQ(copies[archive::sha256(message(7))], 0);
  EXPECT_EQ(copies[archive::sha256(message(8))], 0);
  expect_target_exactly();
}

TEST_F(ImportServerErrorsTest, MessageRateCapHoldsWithinTenPercent) {
  // 120 messages at 20 per second: six seconds of sending, never faster than
  // the cap.
  for (int i = 7; i <= 120; ++i) source_.add_message("INBOX", message(i));
  export_source();
  importing::ImportPolicy policy;
  policy.max_messages_per_second = 20;
  RecordingSink events;
  auto s = run(events, policy);
  ASSERT_EQ(inbox(s).appended, 120u);
  auto commands = target_.commands();
  double rate = testing::paced_rate(commands, [](auto& c) { return double(c.literals.size()); });
  RecordProperty("messages_per_second", std::to_string(rate));
  EXPECT_LE(rate, 20 * 1.1);
  EXPECT_GE(rate, 20 * 0.9);
  // Sends were split to a quarter second's worth: no APPEND carried more than five.
  for (auto& c : commands) EXPECT_LE(c.literals.size(), 5u);
}

}  // namespace
}  // namespace imapstage

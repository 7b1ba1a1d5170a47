// The import engine against the scripted fake server: APPEND refused (NO,
// BAD), bad or missing APPENDUID, garbage replies and a connection lost after
// the server stored a message. Each case must end with every message either
// on the target exactly once or named in the summary's failed list, and a
// re-run must not duplicate anything.
#include <csignal>
#include <algorithm>
#include <map>
#include <memory>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "archive-format/hash.h"
#include "common/error.h"
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

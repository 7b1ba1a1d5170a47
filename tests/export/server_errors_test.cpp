// The export engine against the scripted fake server: faults a real server
// will not produce on demand. Each case must give a clear error (naming the
// folder and UID where it applies) or a correct archive; never a crash, a
// hang, or a message silently missing from both the archive and the summary.
#include <algorithm>
#include <csignal>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "archive-format/hash.h"
#include "common/error.h"
#include "common/message_filter.h"
#include "export/exporter.h"
#include "tests/support/fake_imap_server.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::FakeExchange;
using testing::FakeImapServer;
using testing::TempDir;

std::string message(int n) {
  std::string body = "Message-ID: <e" + std::to_string(n) + "@fake>\r\nSubject: export " + std::to_string(n) +
                     "\r\n\r\n";
  for (int i = 0; i < 20; ++i) body += "body line " + std::to_string(n) + "\r\n";
  return body;
}

class ExportServerErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 1; i <= 6; ++i) server_.add_message("INBOX", message(i), i == 2 ? std::vector<std::string>{"\\Seen"}
                                                                                  : std::vector<std::string>{});
    server_.add_folder("Sent", 9, {"\\HasNoChildren", "\\Sent"});
    server_.add_message("Sent", message(50));
  }

  exporting::ExportOptions options() {
    exporting::ExportOptions o;
    o.archive_dir = dir_.path() + "/archive";
    o.endpoint.host = server_.host();
    o.endpoint.port = server_.port();
    o.endpoint.tls = imap::TlsMode::none;
    o.endpoint.timeout = std::chrono::seconds(3);
    o.credentials.user = "alice";
    o.credentials.secret = "pw";
    o.account_name = "alice";
    o.retry.backoff = std::chrono::milliseconds(10);
    o.retry.max_backoff = std::chrono::milliseconds(20);
    o.retry.max_attempts = 3;
    o.fetch_batch = 2;
    return o;
  }

  exporting::ExportSummary run(RecordingSink& events) { return exporting::run_export(options(), events); }

  const exporting::FolderResult& folder(const exporting::ExportSummary& s, const std::string& name) {
    for (auto& f : s.folders)
      if (f.name == name) return f;
    throw std::runtime_error("no folder " + name + " in the summary");
  }

  // UID -> record of the current generation of `folder`, present ones only unless `all`.
  std::map<uint32_t, archive::MessageRecord> archived(const std::string& folder_name, bool all = false) {
    auto a = Archive::open(options().archive_dir, Archive::Mode::read);
    auto account = a->find_account("alice");
    std::map<uint32_t, archive::MessageRecord> out;
    if (!account) return out;
    auto f = a->find_folder(account->id, folder_name);
    if (!f) return out;
    a->for_each_message(account->id, f->id, f->uidvalidity, [&](const archive::MessageRecord& m) {
      if (all || m.state == archive::MessageState::present) out[m.key.uid] = m;
      return true;
    });
    return out;
  }

  // Every message of the server's INBOX is in the archive, byte for byte.
  void expect_inbox_complete() {
    auto got = archived("INBOX");
    auto want = server_.folder("INBOX");
    ASSERT_EQ(got.size(), want.messages.size());
    for (auto& m : want.messages) {
      ASSERT_TRUE(got.count(m.uid)) << m.uid;
      EXPECT_EQ(got[m.uid].hash, archive::sha256(m.body)) << m.uid;
    }
  }

  static std::vector<nlohmann::json> events_named(const RecordingSink& sink, const std::string& name) {
    std::vector<nlohmann::json> out;
    for (auto& e : sink.events())
      if (e.value("event", "") == name) out.push_back(e);
    return out;
  }

  TempDir dir_;
  FakeImapServer server_;
};

// --max-errors: the account stops once that many messages failed, after
// committing what was fetched; the history says why; a later run goes on.
TEST_F(ExportServerErrorsTest, MaxErrorsStopsTheAccountAfterCommittingWhatWasFetched) {
  server_.on("^UID FETCH 3:4 .*BODY", "$TAG NO [SERVERBUG] Internal error occurred\r\n");
  auto o = options();
  o.connections = 1;
  o.policy.max_errors = 2;
  RecordingSink events;
  try {
    exporting::run_export(o, events);
    FAIL() << "the export should have stopped";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::policy);
    EXPECT_NE(std::string(e.what()).find("--max-errors 2"), std::string::npos) << e.what();
  }
  // UIDs 1 and 2 came before the failures: archived; nothing after them is kept.
  auto got = archived("INBOX");
  EXPECT_EQ(got.size(), 2u);
  EXPECT_TRUE(got.count(1) && got.count(2));
  EXPECT_TRUE(archived("Sent").empty());  // the account stopped: no further folder
  auto a = Archive::open(options().archive_dir, Archive::Mode::read);
  auto runs = a->runs();
  ASSERT_FALSE(runs.empty());
  EXPECT_EQ(runs.back().result, "failed");
  EXPECT_NE(runs.back().details.find("max-errors"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(runs.back().details)["policy"]["max_errors"], 2);
}

TEST_F(ExportServerErrorsTest, MaxErrorsNotReachedLetsTheRunFinish) {
  server_.on("^UID FETCH 3:4 .*BODY", "$TAG NO [SERVERBUG] Internal error occurred\r\n", 1);
  auto o = options();
  o.policy.max_errors = 3;
  RecordingSink events;
  auto s = exporting::run_export(o, events);
  EXPECT_EQ(s.failed_messages(), 2u);
  EXPECT_EQ(folder(s, "INBOX").new_messages, 4u);
  EXPECT_EQ(folder(s, "Sent").new_messages, 1u);
}

// The fake server's UID SEARCH ignores the criteria (answers every UID): the
// check on each message's RFC822.SIZE and INTERNALDATE still selects exactly.
// One that refuses the search outright leaves the whole choice to that check.
TEST_F(ExportServerErrorsTest, FilterHoldsWhenTheServerSearchesLooselyOrRefuses) {
  server_.add_message("INBOX", message(7) + std::string(4000, 'x') + "\r\n", {}, "15-Mar-2019 08:00:00 +0000");
  server_.add_message("INBOX", message(8), {}, "02-Feb-2025 08:00:00 +0000");
  auto o = options();
  o.policy.filter.since = parse_day("2020-01-01");
  o.policy.filter.before = parse_day("2025-01-01");
  RecordingSink events;
  auto s = exporting::run_export(o, events);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(folder(s, "INBOX").new_messages, 6u);
  EXPECT_EQ(folder(s, "INBOX").filtered_out, 2u);
  bool searched = false;
  for (auto& c : server_.commands())
    if (c.text.find("UID SEARCH UID ") != std::string::npos) {
      searched = true;
      // A day more on each side: the server's days are in its own zone.
      EXPECT_NE(c.text.find("SINCE 31-Dec-2019 BEFORE 2-Jan-2025"), std::string::npos) << c.text;
    }
  EXPECT_TRUE(searched);

  // Now by size, with the search refused: 7 (big) only.
  server_.on("^UID SEARCH UID ", "$TAG BAD Unknown search key\r\n");
  o.policy.filter = {};
  o.policy.filter.larger = 3000;
  RecordingSink again;
  auto s2 = exporting::run_export(o, again);
  EXPECT_TRUE(s2.complete());
  EXPECT_EQ(folder(s2, "INBOX").new_messages, 1u);
  EXPECT_EQ(folder(s2, "INBOX").filtered_out, 1u);  // 8
  EXPECT_TRUE(archived("INBOX").count(7));
  EXPECT_FALSE(events_named(again, "warning").empty());
}

// The UIDs a UID FETCH of bodies asked for (none for any other command).
std::vector<uint32_t> uids_fetched(const testing::FakeCommand& c) {
  std::vector<uint32_t> uids;
  if (c.text.find("BODY.PEEK[]") == std::string::npos) return uids;
  auto set = c.text.substr(c.text.find("FETCH ") + 6);
  set = set.substr(0, set.find(' '));
  for (size_t p = 0; p < set.size();) {
    size_t comma = set.find(',', p);
    std::string part = set.substr(p, comma == std::string::npos ? std::string::npos : comma - p);
    auto colon = part.find(':');
    uint32_t first = std::stoul(part), last = colon == std::string::npos ? first : std::stoul(part.substr(colon + 1));
    for (uint32_t u = first; u <= last; ++u) uids.push_back(u);
    p = comma == std::string::npos ? set.size() : comma + 1;
  }
  return uids;
}

TEST_F(ExportServerErrorsTest, MessageRateCapHoldsWithinTenPercent) {
  // 120 messages in two folders at 20 per second, the folders fetched side by
  // side on two connections: six seconds of fetching, never faster than the
  // cap for the account as a whole (a cap per connection would take three).
  for (int i = 7; i <= 60; ++i) server_.add_message("INBOX", message(i));
  for (int i = 61; i <= 119; ++i) server_.add_message("Sent", message(i));
  auto o = options();
  o.fetch_batch = 500;
  o.connections = 2;
  o.policy.max_messages_per_second = 20;
  RecordingSink events;
  auto s = exporting::run_export(o, events);
  ASSERT_EQ(folder(s, "INBOX").new_messages, 60u);
  ASSERT_EQ(folder(s, "Sent").new_messages, 60u);
  auto commands = server_.commands();
  std::set<size_t> connections;
  for (auto& c : commands)
    if (!uids_fetched(c).empty()) connections.insert(c.connection);
  EXPECT_EQ(connections.size(), 2u);  // both connections fetched
  double rate = testing::paced_rate(commands, [](auto& c) { return double(uids_fetched(c).size()); });
  RecordProperty("messages_per_second", std::to_string(rate));
  EXPECT_LE(rate, 20 * 1.1);
  EXPECT_GE(rate, 20 * 0.9);
  // Each FETCH asked for a quarter second's worth at most.
  for (auto& c : commands) EXPECT_LE(uids_fetched(c).size(), 5u) << c.text;
}

TEST_F(ExportServerErrorsTest, BandwidthCapHoldsWithinTenPercent) {
  // About 200 kB in messages of ~4 kB at 50 kB/s: four seconds.
  for (int i = 7; i <= 50; ++i) server_.add_message("INBOX", message(i) + std::string(4000, 'b') + "\r\n");
  auto o = options();
  o.fetch_batch = 500;
  o.policy.max_bytes_per_second = 50000;
  RecordingSink events;
  auto s = exporting::run_export(o, events);
  ASSERT_EQ(folder(s, "INBOX").new_messages, 50u);
  std::map<uint32_t, size_t> size;
  for (auto& m : server_.folder("INBOX").messages) size[m.uid] = m.body.size();
  double rate = testing::paced_rate(server_.commands(), [&](auto& c) {
    double bytes = 0;
    for (auto uid : uids_fetched(c)) bytes += size.at(uid);
    return bytes;
  });
  RecordProperty("bytes_per_second", std::to_string(rate));
  EXPECT_LE(rate, 50000 * 1.1);
  EXPECT_GE(rate, 50000 * 0.9);
}

TEST_F(ExportServerErrorsTest, NoToOneUidFetchMarksThoseUidsFailed) {
  server_.on("^UID FETCH 3:4 .*BODY", "$TAG NO [SERVERBUG] Internal error occurred\r\n", 1);
  RecordingSink events;
  auto s = run(events);
  EXPECT_FALSE(s.complete());
  EXPECT_EQ(s.failed_messages(), 2u);
  EXPECT_EQ(folder(s, "INBOX").failed_uids, (std::vector<uint32_t>{3, 4}));
  EXPECT_EQ(folder(s, "INBOX").new_messages, 4u);
  auto errors = events_named(events, "message_error");
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0]["folder"], "INBOX");
  EXPECT_EQ(errors[0]["uid"], 3);
  EXPECT_EQ(s.to_json()["complete"], false);
  EXPECT_EQ(archived("INBOX").size(), 4u);

  // The next run fetches exactly what is missing.
  RecordingSink again;
  auto s2 = run(again);
  EXPECT_TRUE(s2.complete());
  EXPECT_EQ(folder(s2, "INBOX").new_messages, 2u);
  expect_inbox_complete();
}

TEST_F(ExportServerErrorsTest, BadToUidFetchIsAFolderErrorKeepingWhatArrived) {
  server_.on("^UID FETCH 5:6 .*BODY", "$TAG BAD Error in IMAP command UID FETCH\r\n", 1);
  RecordingSink events;
  auto s = run(events);
  EXPECT_FALSE(s.complete());
  auto& f = folder(s, "INBOX");
  EXPECT_NE(f.error.find("Error in IMAP command UID FETCH"), std::string::npos) << f.error;
  EXPECT_NE(f.error.find("INBOX"), std::string::npos) << f.error;
  EXPECT_TRUE(folder(s, "Sent").error.empty());
  EXPECT_EQ(archived("INBOX").size(), 4u);
  RecordingSink again;
  EXPECT_TRUE(run(again).complete());
  expect_inbox_complete();
}

TEST_F(ExportServerErrorsTest, PartialDeliveryThenNo) {
  server_.on("^UID FETCH 1:2 .*BODY", [](FakeExchange& x) {
    x.send(x.fetch_response(2));
    x.tagged("NO [SERVERBUG] could not read UID 1");
  }, 1);
  RecordingSink events;
  auto s = run(events);
  EXPECT_EQ(folder(s, "INBOX").failed_uids, (std::vector<uint32_t>{1}));
  auto got = archived("INBOX");
  EXPECT_EQ(got.size(), 5u);
  EXPECT_FALSE(got.count(1));
  EXPECT_TRUE(got.count(2));
}

TEST_F(ExportServerErrorsTest, UnsolicitedFlagFetchMidFetchKeepsEveryMessage) {
  server_.on("^UID FETCH 3:4 .*BODY", [](FakeExchange& x) {
    x.standard_fetch([](FakeExchange& x, uint32_t uid) {
      if (uid == 3) {
        x.server().set_flags("INBOX", 4, {"\\Flagged"});
        x.untagged("4 FETCH (FLAGS (\\Flagged))");
        x.server().set_flags("INBOX", 1, {"\\Answered"});
        x.untagged("1 FETCH (UID 1 FLAGS (\\Answered))");
      }
      return true;
    });
  }, 1);
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  expect_inbox_complete();
  auto got = archived("INBOX");
  EXPECT_EQ(got[4].flags, static_cast<uint32_t>(archive::kFlagged));
  // UID 1's change arrived after it was archived; the next run picks it up.
  RecordingSink again;
  auto s2 = run(again);
  EXPECT_TRUE(s2.complete());
  EXPECT_EQ(archived("INBOX")[1].flags, static_cast<uint32_t>(archive::kAnswered));
}

TEST_F(ExportServerErrorsTest, UnsolicitedExpungeMidFetch) {
  // While UIDs 3:4 are fetched another session expunges UID 1 (already
  // archived) and UID 4 (not yet sent).
  server_.on("^UID FETCH 3:4 .*BODY", [](FakeExchange& x) {
    x.standard_fetch([](FakeExchange& x, uint32_t uid) {
      if (uid == 3) {
        x.server().remove_message("INBOX", 1);
        x.untagged("1 EXPUNGE");
        x.server().remove_message("INBOX", 4);
        x.untagged("3 EXPUNGE");
      }
      return true;
    });
  }, 1);
  RecordingSink events;
  auto s = run(events);
  auto got = archived("INBOX");
  // Every message that was delivered is archived; UID 4 is either archived or named as failed.
  for (uint32_t uid : {1u, 2u, 3u, 5u, 6u}) EXPECT_TRUE(got.count(uid)) << uid;
  auto& f = folder(s, "INBOX");
  EXPECT_TRUE(got.count(4) || f.failed_uids == std::vector<uint32_t>{4}) << "UID 4 silently lost";
  // A second run sees the expunges and ends complete.
  RecordingSink again;
  auto s2 = run(again);
  EXPECT_TRUE(s2.complete());
  EXPECT_EQ(folder(s2, "INBOX").expunged, got.count(4) ? 2u : 1u);
  auto all = archived("INBOX", true);
  EXPECT_EQ(all.at(1).state, archive::MessageState::expunged);
  expect_inbox_complete();
}

TEST_F(ExportServerErrorsTest, UidValidityChangedBetweenRuns) {
  RecordingSink first;
  auto s1 = run(first);
  ASSERT_TRUE(s1.complete());
  auto before = archived("INBOX");
  ASSERT_EQ(before.size(), 6u);

  server_.renumber("INBOX", 2);
  server_.add_message("INBOX", message(7));
  RecordingSink second;
  auto s2 = run(second);
  EXPECT_TRUE(s2.complete());
  auto& f = folder(s2, "INBOX");
  EXPECT_TRUE(f.uidvalidity_changed);
  EXPECT_EQ(f.uidvalidity, 2u);
  EXPECT_EQ(f.new_messages, 7u);
  EXPECT_EQ(f.bytes_deduplicated, f.bytes_fetched - message(7).size());
  expect_inbox_complete();
  // The old generation stays, marked as no longer on the source.
  auto a = Archive::open(options().archive_dir, Archive::Mode::read);
  auto account = a->find_account("alice");
  auto folder_record = a->find_folder(account->id, "INBOX");
  size_t old_generation = 0;
  a->for_each_message(account->id, folder_record->id, 1u, [&](const archive::MessageRecord& m) {
    EXPECT_EQ(m.state, archive::MessageState::expunged);
    ++old_generation;
    return true;
  });
  EXPECT_EQ(old_generation, 6u);
  bool warned = false;
  for (auto& e : events_named(second, "warning"))
    warned |= e.value("text", "").find("UIDVALIDITY changed") != std::string::npos;
  EXPECT_TRUE(warned);
}

TEST_F(ExportServerErrorsTest, GarbageOnceReconnectsAndCompletes) {
  server_.on("^UID FETCH 3:4 .*BODY", [](FakeExchange& x) {
    x.send(x.fetch_response(3));
    x.send("* 4 FETCH (UID 4 BODY[] {12}\r\n)))garbage(((\r\n");
    x.send("ceci n'est pas une r\xC3\xA9ponse\r\n");
    x.tagged("OK done");
  }, 1);
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  EXPECT_GE(s.reconnects, 1);
  EXPECT_GE(server_.connections(), 2u);
  expect_inbox_complete();
  auto reconnects = events_named(events, "reconnect");
  ASSERT_FALSE(reconnects.empty());
  EXPECT_EQ(reconnects[0]["folder"], "INBOX");
}

TEST_F(ExportServerErrorsTest, PersistentGarbageGivesUpWithAProtocolError) {
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) { x.send("* OK [\r\n)\r\n"); });
  RecordingSink events;
  try {
    run(events);
    FAIL() << "export completed against a server that answers garbage";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_EQ(e.where().folder, "INBOX") << e.what();
    EXPECT_EQ(e.where().account, "alice") << e.what();
    EXPECT_NE(std::string(e.what()).find("gave up"), std::string::npos) << e.what();
  }
  EXPECT_GE(server_.connections(), 3u);
  EXPECT_LE(server_.connections(), 5u);
}

TEST_F(ExportServerErrorsTest, TruncatedLiteralOnceReconnectsAndCompletes) {
  server_.on("^UID FETCH 3:4 .*BODY", [](FakeExchange& x) {
    x.send(x.fetch_response(3));
    x.send("* 2 FETCH (UID 4 BODY[] {400}\r\nFrom: cut");
    x.close();
  }, 1);
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(s.reconnects, 1);
  expect_inbox_complete();
}

TEST_F(ExportServerErrorsTest, WrongLiteralLengthReconnectsAndCompletes) {
  server_.on("^UID FETCH 1:2 .*BODY", [](FakeExchange& x) {
    std::string body = message(1);
    x.send("* 1 FETCH (UID 1 BODY[] {" + std::to_string(body.size() - 7) + "}\r\n" + body + ")\r\n");
    x.tagged("OK done");
  }, 1);
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(s.reconnects, 1);
  expect_inbox_complete();  // and UID 1 holds the right bytes, not the truncated ones
}

TEST_F(ExportServerErrorsTest, ExamineRefusedIsAFolderError) {
  server_.on("^EXAMINE \"?Sent", "$TAG NO [SERVERUNAVAILABLE] Mailbox is locked\r\n");
  RecordingSink events;
  auto s = run(events);
  EXPECT_FALSE(s.complete());
  EXPECT_EQ(s.failed_folders(), 1u);
  EXPECT_NE(folder(s, "Sent").error.find("Mailbox is locked"), std::string::npos) << folder(s, "Sent").error;
  EXPECT_TRUE(folder(s, "INBOX").error.empty());
  expect_inbox_complete();
  auto errors = events_named(events, "folder_error");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0]["folder"], "Sent");
}

TEST_F(ExportServerErrorsTest, SearchListingUnknownUidsIsReportedNotLost) {
  // The server's SEARCH names a UID it then never delivers.
  server_.on("^UID SEARCH", [](FakeExchange& x) {
    x.untagged("SEARCH 1 2 3 4 5 6 9");
    x.tagged("OK done");
  });
  RecordingSink events;
  auto s = run(events);
  EXPECT_EQ(folder(s, "INBOX").failed_uids, (std::vector<uint32_t>{9}));
  expect_inbox_complete();
}

TEST_F(ExportServerErrorsTest, AStallMidLiteralIsNoticedAfterOneTimeout) {
  // Half a literal, then silence with the connection open: the read that
  // times out comes after bytes libetpan had buffered, which it hands out
  // first; the next read must not wait a second timeout.
  server_.on("^UID FETCH 3:4 .*BODY", [](FakeExchange& x) {
    std::string body(400, 'x');
    x.send("* 3 FETCH (UID 3 RFC822.SIZE 400 BODY[] {400}\r\n" + body.substr(0, 150));
  }, 1);
  auto o = options();
  o.endpoint.timeout = std::chrono::seconds(2);
  RecordingSink events;
  auto started = std::chrono::steady_clock::now();
  auto s = exporting::run_export(o, events);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(s.reconnects, 1);
  expect_inbox_complete();
  EXPECT_GE(seconds, 2.0);
  EXPECT_LT(seconds, 3.5) << "the stall took more than one timeout to notice";
}

TEST_F(ExportServerErrorsTest, SeveralConnectionsTakeEachFolderOnce) {
  for (int f = 0; f < 4; ++f) {
    std::string name = "Folder" + std::to_string(f);
    server_.add_folder(name, 20 + f, {"\\HasNoChildren"});
    for (int i = 0; i < 3; ++i) server_.add_message(name, message(100 + 10 * f + i));
  }
  auto o = options();
  o.connections = 3;
  RecordingSink events;
  auto s = exporting::run_export(o, events);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(s.total(&exporting::FolderResult::new_messages), 6u + 1u + 4u * 3u);
  expect_inbox_complete();
  for (int f = 0; f < 4; ++f) EXPECT_EQ(archived("Folder" + std::to_string(f)).size(), 3u);

  // Three connections logged in, and every folder was examined twice: by the
  // size pass on the first connection, then by the one connection exporting it.
  std::set<size_t> logged_in;
  std::map<std::string, int> examined;
  std::map<size_t, int> per_connection;
  for (auto& c : server_.commands()) {
    if (c.text.rfind("LOGIN", 0) == 0) logged_in.insert(c.connection);
    if (c.text.rfind("EXAMINE", 0) == 0) {
      ++examined[c.text];
      ++per_connection[c.connection];
    }
  }
  EXPECT_EQ(logged_in.size(), 3u);
  EXPECT_EQ(examined.size(), 6u);
  for (auto& [command, n] : examined) EXPECT_EQ(n, 2) << command;
  EXPECT_GE(per_connection.size(), 2u) << "the folders were not shared out";
  // The summary keeps LIST order whichever connection did a folder.
  ASSERT_EQ(s.folders.size(), 6u);
  std::vector<std::string> names;
  for (auto& f : s.folders) names.push_back(f.name);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end())) << "the fake server lists folders sorted";

  // A re-run on several connections fetches nothing.
  RecordingSink again_events;
  auto again = exporting::run_export(o, again_events);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(again.total(&exporting::FolderResult::new_messages), 0u);
}

TEST_F(ExportServerErrorsTest, ARefusedExtraConnectionLeavesTheFoldersToTheFirst) {
  server_.on("^LOGIN", [](FakeExchange& x) {
    if (x.command().connection == 1) x.standard();
    else x.tagged("NO [UNAVAILABLE] too many connections for this user");
  });
  auto o = options();
  o.connections = 2;
  RecordingSink events;
  auto s = exporting::run_export(o, events);
  EXPECT_TRUE(s.complete());
  expect_inbox_complete();
  EXPECT_EQ(archived("Sent").size(), 1u);
  auto warnings = events_named(events, "warning");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0]["text"].get<std::string>().find("an extra connection failed"), std::string::npos)
      << warnings[0].dump();
}

TEST_F(ExportServerErrorsTest, AConnectionThatFailsForGoodStopsTheOthers) {
  for (int f = 0; f < 3; ++f) {
    std::string name = "Folder" + std::to_string(f);
    server_.add_folder(name, 20 + f, {"\\HasNoChildren"});
    server_.add_message(name, message(100 + f));
  }
  // Sent's connection is dropped on each of its three attempts: its retries run out.
  server_.on("^EXAMINE \"?Sent", [](FakeExchange& x) { x.close(); }, 3);
  auto o = options();
  o.connections = 2;
  RecordingSink events;
  try {
    exporting::run_export(o, events);
    FAIL() << "the export should have failed";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::network) << e.what();
    EXPECT_EQ(e.where().folder, "Sent") << e.what();
  }
  // The other connection stopped too; what it committed is sound, and the history says "failed".
  {
    auto a = Archive::open(options().archive_dir, Archive::Mode::read);
    auto runs = a->runs();
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_EQ(runs[0].result, "failed");
  }
  auto want = server_.folder("INBOX");
  for (auto& [uid, record] : archived("INBOX")) {
    auto it = std::find_if(want.messages.begin(), want.messages.end(), [&](auto& m) { return m.uid == uid; });
    ASSERT_NE(it, want.messages.end());
    EXPECT_EQ(record.hash, archive::sha256(it->body)) << uid;
  }
  // Once the server behaves, a re-run completes the archive.
  RecordingSink again_events;
  auto again = exporting::run_export(o, again_events);
  EXPECT_TRUE(again.complete());
  expect_inbox_complete();
  EXPECT_EQ(archived("Sent").size(), 1u);
  for (int f = 0; f < 3; ++f) EXPECT_EQ(archived("Folder" + std::to_string(f)).size(), 1u);
}

}  // namespace
}  // namespace imapstage

// A hostile or broken server against imapstage: what it sends must never
// crash imapstage, exhaust its memory, poison the archive or make it send a
// command it did not mean; and what a hostile archive holds must never reach
// a target as a command. Scripted with the fake server; the wire log of what
// a server received is checked where commands matter.
#include <poll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "archive-format/hash.h"
#include "cli/display.h"
#include "common/error.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "imap/session.h"
#include "imap/utf7.h"
#include "imap/wire_guard.h"
#include "tests/support/fake_imap_server.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"
#include "verify/compare.h"
#include "verify/offline.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::FakeExchange;
using testing::FakeImapServer;
using testing::TempDir;

std::string message(int n) {
  std::string body = "Message-ID: <h" + std::to_string(n) + "@fake>\r\nSubject: hostile " + std::to_string(n) +
                     "\r\n\r\n";
  // What an injection would run, were these bytes read as commands.
  body += "X1 CREATE Pwned" + std::to_string(n) + "\r\nX2 DELETE Drafts\r\nX4 STORE 1:* +FLAGS (\\Deleted)\r\n"
          "X5 EXPUNGE\r\n";
  return body;
}

// Peak resident memory of this process since the last reset_peak_rss(), in bytes.
uint64_t peak_rss() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }
uint64_t current_rss() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

std::unique_ptr<imap::Session> logged_in(const FakeImapServer& server, int timeout = 3) {
  auto s = imap::Session::connect(server.endpoint(timeout));
  imap::Credentials c;
  c.user = "alice";
  c.secret = "pw";
  s->login(c);
  return s;
}

// Sends `total` bytes of `fill` in 1 MiB pieces (stops quietly once the client has gone).
void flood(FakeExchange& x, uint64_t total, char fill) {
  std::string chunk(1 << 20, fill);
  for (uint64_t sent = 0; sent < total; sent += chunk.size()) x.send(chunk);
}

// --- the source side: export ------------------------------------------------------

class HostileSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 1; i <= 4; ++i) server_.add_message("INBOX", message(i));
    server_.add_folder("Sent", 9, {"\\HasNoChildren", "\\Sent"});
    server_.add_message("Sent", message(50));
  }

  exporting::ExportOptions options() {
    exporting::ExportOptions o;
    o.archive_dir = dir_.path() + "/archive";
    o.endpoint = server_.endpoint();
    o.credentials.user = "alice";
    o.credentials.secret = "pw";
    o.account_name = "alice";
    o.retry.backoff = std::chrono::milliseconds(10);
    o.retry.max_backoff = std::chrono::milliseconds(20);
    o.retry.max_attempts = 3;
    return o;
  }

  std::map<uint32_t, archive::MessageRecord> archived(const std::string& folder_name) {
    auto a = Archive::open(options().archive_dir, Archive::Mode::read);
    std::map<uint32_t, archive::MessageRecord> out;
    auto account = a->find_account("alice");
    if (!account) return out;
    auto f = a->find_folder(account->id, folder_name);
    if (!f) return out;
    a->for_each_message(account->id, f->id, f->uidvalidity, [&](const archive::MessageRecord& m) {
      out[m.key.uid] = m;
      return true;
    });
    return out;
  }

  // Offline verify of the archive: every object re-hashed, the index sound.
  void expect_archive_sound() {
    verify::OfflineOptions o;
    o.archive_dir = options().archive_dir;
    o.threads = 1;
    NullSink sink;
    auto report = verify::verify_offline(o, sink);
    EXPECT_TRUE(report.ok()) << report.to_json().dump();
  }

  static const exporting::FolderResult& folder(const exporting::ExportSummary& s, const std::string& name) {
    for (auto& f : s.folders)
      if (f.name == name) return f;
    throw std::runtime_error("no folder " + name);
  }

  TempDir dir_;
  FakeImapServer server_;
};

TEST_F(HostileSourceTest, ImpossibleInternalDatesAreArchivedWithoutOneAndNamed) {
  server_.add_message("INBOX", message(5), {}, "01-Jan-2020 99:99:99 +9999");
  server_.add_message("INBOX", message(6), {}, "31-Feb-2021 10:00:00 +0100");
  server_.add_message("INBOX", message(7), {}, "15-Jun-1999 23:00:00 -1800");
  RecordingSink events;
  auto s = exporting::run_export(options(), events);
  EXPECT_TRUE(s.complete());
  auto got = archived("INBOX");
  ASSERT_EQ(got.size(), 7u);
  for (uint32_t uid : {5u, 6u}) {
    EXPECT_EQ(got[uid].internaldate, 0) << uid;
    EXPECT_EQ(got[uid].internaldate_tz, 0) << uid;
    EXPECT_EQ(got[uid].hash, archive::sha256(message(static_cast<int>(uid)))) << uid;
  }
  EXPECT_TRUE(imap::valid_internaldate(got[7].internaldate, got[7].internaldate_tz));
  EXPECT_EQ(got[1].internaldate, 1704103200);  // 01-Jan-2024 10:00:00 +0000, untouched
  // Named per message: account, folder, UID, what was wrong.
  auto& inbox = folder(s, "INBOX");
  ASSERT_EQ(inbox.anomalies.size(), 2u);
  EXPECT_EQ(inbox.anomalies[0].first, 5u);
  EXPECT_NE(inbox.anomalies[0].second.find("99:99:99"), std::string::npos) << inbox.anomalies[0].second;
  EXPECT_EQ(inbox.anomalies[1].first, 6u);
  int warnings = 0;
  for (auto& e : events.events())
    if (e.value("event", "") == "warning" && e.value("uid", 0) == 5 && e.value("folder", "") == "INBOX" &&
        e.value("text", "").find("account alice") != std::string::npos)
      ++warnings;
  EXPECT_EQ(warnings, 1);
  EXPECT_EQ(s.to_json()["per_folder"][0]["anomalies"].size(), 2u);
  EXPECT_EQ(s.to_json()["anomalies"], 2);
  expect_archive_sound();
  // What an archive browser shows is sane too.
  auto listed = testing::run_imapstage({"ls", "--archive", options().archive_dir.string(), "alice", "INBOX"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(listed.out.find("impossible"), std::string::npos) << listed.out;
}

TEST_F(HostileSourceTest, AbsurdKeywordCountsAndInvalidFlagsAreBounded) {
  std::vector<std::string> many;
  for (int i = 0; i < 20000; ++i) many.push_back("$kw" + std::to_string(i));
  server_.add_message("INBOX", message(5), many);
  std::string too_long(300, 'k');
  server_.add_message("INBOX", message(6), {"\\Seen", too_long, "$ok"});
  auto started = std::chrono::steady_clock::now();
  RecordingSink events;
  auto s = exporting::run_export(options(), events);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(20));
  EXPECT_TRUE(s.complete());
  auto got = archived("INBOX");
  ASSERT_EQ(got.count(5), 1u);
  EXPECT_EQ(got[5].keywords.size(), imap::kMaxKeywords);
  EXPECT_EQ(got[5].keywords.front(), "$kw0");
  EXPECT_EQ(got[6].keywords, std::vector<std::string>{"$ok"});
  EXPECT_EQ(got[6].flags, static_cast<uint32_t>(archive::kSeen));
  auto& inbox = folder(s, "INBOX");
  ASSERT_EQ(inbox.anomalies.size(), 2u);
  EXPECT_EQ(inbox.anomalies[0].first, 5u);
  EXPECT_NE(inbox.anomalies[0].second.find("20000 keywords"), std::string::npos) << inbox.anomalies[0].second;
  EXPECT_EQ(inbox.anomalies[1].first, 6u);
  expect_archive_sound();
}

TEST_F(HostileSourceTest, EndlessLineIsCutWithBoundedMemory) {
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) {
    if (x.selected() != "INBOX") return x.standard();
    x.send("* 1 FETCH (UID 1 FLAGS (");
    flood(x, 1ull << 30, 'a');  // 1 GiB without CRLF, for as long as the client reads
    x.close();
  });
  reset_peak_rss();
  uint64_t before = current_rss();
  RecordingSink events;
  auto started = std::chrono::steady_clock::now();
  auto s = exporting::run_export(options(), events);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  uint64_t grown = peak_rss() - before;
  std::fprintf(stderr, "endless line: peak RSS grew by %.1f MiB in %.1f s\n", grown / 1048576.0, seconds);
  EXPECT_LT(grown, 400ull << 20);
  auto& inbox = folder(s, "INBOX");
  EXPECT_NE(inbox.error.find("longer than"), std::string::npos) << inbox.error;
  EXPECT_TRUE(folder(s, "Sent").error.empty()) << folder(s, "Sent").error;
  EXPECT_EQ(archived("Sent").size(), 1u);
  expect_archive_sound();
}

TEST_F(HostileSourceTest, MessageOverTheMaximumSizeIsRefusedPerMessage) {
  std::string big = message(9) + std::string(3 << 20, 'b') + "\r\n";
  server_.add_message("INBOX", big);
  auto o = options();
  o.endpoint.max_message_size = 2 << 20;
  RecordingSink events;
  auto s = exporting::run_export(o, events);
  EXPECT_FALSE(s.complete());
  auto& inbox = folder(s, "INBOX");
  EXPECT_EQ(inbox.failed_uids, std::vector<uint32_t>{5});
  ASSERT_EQ(inbox.refused.count(5), 1u);
  EXPECT_NE(inbox.refused.at(5).find("maximum message size"), std::string::npos) << inbox.refused.at(5);
  EXPECT_EQ(archived("INBOX").size(), 4u);
  EXPECT_EQ(s.reconnects, 0);
  // It was never asked for.
  for (auto& c : server_.commands())
    if (c.text.find("BODY") != std::string::npos) EXPECT_EQ(c.text.find("5"), std::string::npos) << c.text;
  expect_archive_sound();
}

TEST_F(HostileSourceTest, HugeLiteralBeyondTheAnnouncedSizeDropsOnlyThatFolder) {
  // RFC822.SIZE says 100 bytes; the body literal announces 10 GB.
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) {
    if (x.selected() != "INBOX") return x.standard();
    x.send("* 1 FETCH (UID 1 RFC822.SIZE 100 BODY[] {10000000000}\r\n");
    flood(x, 256ull << 20, 'x');
    x.close();
  });
  reset_peak_rss();
  uint64_t before = current_rss();
  RecordingSink events;
  auto s = exporting::run_export(options(), events);
  uint64_t grown = peak_rss() - before;
  std::fprintf(stderr, "10 GB literal: peak RSS grew by %.1f MiB\n", grown / 1048576.0);
  EXPECT_LT(grown, 100ull << 20);
  auto& inbox = folder(s, "INBOX");
  EXPECT_NE(inbox.error.find("maximum message size"), std::string::npos) << inbox.error;
  EXPECT_EQ(archived("Sent").size(), 1u);
  expect_archive_sound();
}

TEST_F(HostileSourceTest, DeepNestingNeverReachesTheParser) {
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) {
    if (x.selected() != "INBOX") return x.standard();
    x.send("* 1 FETCH (UID 1 BODYSTRUCTURE " + std::string(1000000, '(') + "\r\n");
    x.tagged("OK done");
  });
  RecordingSink events;
  auto s = exporting::run_export(options(), events);
  auto& inbox = folder(s, "INBOX");
  EXPECT_NE(inbox.error.find("nested deeper than 256"), std::string::npos) << inbox.error;
  EXPECT_EQ(archived("Sent").size(), 1u);
}

TEST_F(HostileSourceTest, DeepNestingDuringVerifyAgainstTheSourceIsAnErrorNotACrash) {
  NullSink sink;
  ASSERT_TRUE(exporting::run_export(options(), sink).complete());
  server_.on("^UID FETCH", [](FakeExchange& x) {
    x.send("* 1 FETCH (UID 1 FLAGS " + std::string(1000000, '(') + "\r\n");
    x.tagged("OK done");
  });
  verify::CompareOptions o;
  o.archive_dir = options().archive_dir;
  o.endpoint = server_.endpoint();
  o.credentials.user = "alice";
  o.credentials.secret = "pw";
  o.account = "alice";
  o.deep = true;
  o.retry.backoff = std::chrono::milliseconds(10);
  o.retry.max_attempts = 2;
  std::string error;
  try {
    auto c = verify::compare_online(o, sink);
    EXPECT_FALSE(c.equal());
    for (auto& f : c.folders) error += f.error;
  } catch (const Error& e) {
    error = e.what();
  }
  EXPECT_NE(error.find("nested deeper than 256"), std::string::npos) << error;
}

TEST_F(HostileSourceTest, FolderNamesWithLineBreaksAreNeverSentBack) {
  const std::string evil = "Evil\r\nX1 DELETE INBOX";
  server_.on("^LIST", [evil](FakeExchange& x) {
    x.untagged("LIST (\\HasNoChildren) \"/\" INBOX");
    x.untagged("LIST (\\HasNoChildren) \"/\" Sent");
    x.send("* LIST (\\HasNoChildren) \"/\" {" + std::to_string(evil.size()) + "}\r\n" + evil + "\r\n");
    x.tagged("OK LIST done");
  });
  RecordingSink events;
  auto s = exporting::run_export(options(), events);
  EXPECT_EQ(s.failed_folders(), 1u);
  auto& bad = folder(s, imap::utf7_decode(evil));
  EXPECT_NE(bad.error.find("cannot be sent back"), std::string::npos) << bad.error;
  EXPECT_EQ(archived("INBOX").size(), 4u);
  EXPECT_EQ(archived("Sent").size(), 1u);
  // The server received only commands imapstage meant: no DELETE, no line starting with X1.
  for (auto& c : server_.commands()) {
    EXPECT_EQ(c.text.find("DELETE"), std::string::npos) << c.text;
    EXPECT_NE(c.tag, "X1") << c.text;
  }
}

TEST_F(HostileSourceTest, ControlCharactersInNamesNeverReachTheScreen) {
  const std::string name = "Esc\x1b]0;pwned\x07\x1b[2J";
  server_.add_folder(name, 31, {"\\HasNoChildren"});
  server_.add_message(name, message(60));
  RecordingSink events;
  auto s = exporting::run_export(options(), events);
  EXPECT_TRUE(s.complete());
  auto listed = testing::run_imapstage({"ls", "--archive", options().archive_dir.string(), "alice"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(listed.out.find('\x1b'), std::string::npos);
  EXPECT_EQ(listed.out.find('\x07'), std::string::npos);
  EXPECT_NE(listed.out.find("Esc\\x1b]0;pwned\\x07\\x1b[2J"), std::string::npos) << listed.out;
  // The JSON output keeps the name exactly (escaped the JSON way).
  auto json = testing::run_imapstage({"ls", "--archive", options().archive_dir.string(), "alice", "--json"});
  EXPECT_NE(json.out.find("\\u001b]0;pwned\\u0007"), std::string::npos) << json.out;
  // An error naming it, too: a folder that is not there.
  auto missing = testing::run_imapstage({"ls", "--archive", options().archive_dir.string(), "alice",
                                         "No\x1b[2JSuchFolder"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_EQ(missing.err.find('\x1b'), std::string::npos) << missing.err;
}

TEST_F(HostileSourceTest, DrippingServerIsDroppedByTheCommandDeadline) {
  server_.on("^UID SEARCH", [](FakeExchange& x) {
    x.send("* SEARCH");
    for (int i = 0; i < 60; ++i) {  // a byte every 0.4 s: never silent for a whole timeout
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
      x.send(" ");
    }
    x.close();
  });
  auto s = logged_in(server_, 1);
  s->examine("INBOX");
  auto started = std::chrono::steady_clock::now();
  try {
    s->search_all_uids();
    FAIL() << "a dripping server was waited for";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::network) << e.what();
    EXPECT_EQ(e.retry(), Retry::now);
    EXPECT_NE(std::string(e.what()).find("slower than"), std::string::npos) << e.what();
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_LT(seconds, 5.0);
  EXPECT_GE(seconds, 1.9);
}

TEST_F(HostileSourceTest, NestingInAnyReplyIsRefusedAtTheSession) {
  server_.on("^SELECT", [](FakeExchange& x) {
    x.untagged("FLAGS " + std::string(200000, '('));
    x.tagged("OK done");
  });
  auto s = logged_in(server_);
  try {
    s->select("INBOX");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_NE(std::string(e.what()).find("nested deeper"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(s->alive());
}

TEST_F(HostileSourceTest, APermanentFlagsListThatCrashesLibetpanIsRefused) {
  // libetpan 1.9.4 dereferences a null list when the first flag does not parse.
  server_.on("^EXAMINE", [](FakeExchange& x) {
    x.untagged("OK [PERMANENTFLAGS (%)] hostile");
    x.tagged("OK done");
  }, 1);
  auto s = logged_in(server_);
  try {
    s->examine("INBOX");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_NE(std::string(e.what()).find("PERMANENTFLAGS"), std::string::npos) << e.what();
  }
  // Well-formed lists pass.
  for (std::string list : {"()", "(\\*)", "(\\Seen $Label1 \\*)", "(Junk)"}) {
    imap::WireGuard g;
    EXPECT_TRUE(g.feed("* OK [PERMANENTFLAGS " + list + "] ok\r\n")) << list << ": " << g.violation();
  }
  for (std::string list : {"(%)", "(\\)", "(\\%x)", "(\r\n", "({3}\r\n"}) {
    imap::WireGuard g;
    EXPECT_FALSE(g.feed("* OK [permanentflags " + list + "] ok\r\n")) << list;
  }
  // Split by something that only looks like a literal: libetpan sees one line.
  imap::WireGuard g;
  EXPECT_FALSE(g.feed("* OK x {12}\r\n* OK [PERMANENTFLAGS (%)] hostile\r\n"));
}

// --- the session's own checks ---------------------------------------------------------

TEST(WireGuardTest, LiteralsAreSkippedAndTheirLinesCounted) {
  imap::WireGuard g;
  EXPECT_TRUE(g.feed("* 1 FETCH (BODY[] {10}\r\n((((((((((\r\n)\r\n"));
  // A body whose lines each open 200 parentheses: text, not nesting.
  std::string body;
  for (int i = 0; i < 50; ++i) body += std::string(200, '(') + "\r\n";
  EXPECT_TRUE(g.feed("* 2 FETCH (BODY[] {" + std::to_string(body.size()) + "}\r\n" + body + ")\r\n"));
  EXPECT_FALSE(g.broken()) << g.violation();
}

TEST(WireGuardTest, NestingIsCountedAcrossLiteralsAndInsideFakeOnes) {
  {
    imap::WireGuard g;
    EXPECT_FALSE(g.feed("* 1 FETCH (" + std::string(300, '(') + "\r\n"));
    EXPECT_NE(g.violation().find("nested deeper than 256"), std::string::npos);
  }
  {
    // Parentheses continue across a literal: still one response.
    imap::WireGuard g;
    EXPECT_FALSE(g.feed("* 1 FETCH (" + std::string(200, '(') + " {3}\r\nabc" + std::string(200, '(') + ")\r\n"));
  }
  {
    // A literal announced where libetpan sees text: its bytes may be a new response for libetpan.
    imap::WireGuard g;
    std::string hidden = "* 1 FETCH (BODYSTRUCTURE " + std::string(1000, '(');
    EXPECT_FALSE(g.feed("* OK text {" + std::to_string(hidden.size()) + "}\r\n" + hidden));
  }
}

TEST(WireGuardTest, LinesLiteralsAndWaitsAreBounded) {
  imap::WireLimits limits;
  limits.max_text = 1000;
  limits.max_literal = 100;
  limits.wait_base = std::chrono::seconds(2);
  limits.min_rate = 1000;
  {
    imap::WireGuard g(limits);
    EXPECT_TRUE(g.feed(std::string(900, 'a') + "\r\n" + std::string(900, 'a') + "\r\n"));
    EXPECT_FALSE(g.feed(std::string(1001, 'a')));
  }
  {
    imap::WireGuard g(limits);
    EXPECT_TRUE(g.feed("* 1 FETCH (BODY[] {100}\r\n" + std::string(100, 'x')));
    EXPECT_FALSE(g.feed(")\r\n* 2 FETCH (BODY[] {101}\r\n"));
    EXPECT_NE(g.violation().find("101 bytes"), std::string::npos) << g.violation();
  }
  {
    imap::WireGuard g(limits);
    EXPECT_FALSE(g.feed("* x {99999999999999999999999}\r\n"));
    EXPECT_TRUE(g.garbled());
  }
  {
    imap::WireGuard g(limits);
    EXPECT_TRUE(g.waited(std::chrono::milliseconds(1500)));
    EXPECT_TRUE(g.feed(std::string(999, 'a')));  // buys one second more
    EXPECT_TRUE(g.waited(std::chrono::milliseconds(1400)));
    EXPECT_FALSE(g.waited(std::chrono::milliseconds(200)));
    EXPECT_TRUE(g.too_slow());
    imap::WireGuard h(limits);
    EXPECT_TRUE(h.waited(std::chrono::milliseconds(1900)));
    h.sent();  // a new command: a new budget
    EXPECT_TRUE(h.waited(std::chrono::milliseconds(1900)));
  }
}

TEST(ReplayTest, WhatTheGuardLetsThroughParsesAndWhatItRefusesNeverReachesTheParser) {
  EXPECT_EQ(imap::replay_responses("* OK hi\r\n* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[] {5}\r\nhello)\r\nA1 OK done\r\n"),
            "");
  EXPECT_NE(imap::replay_responses("* OK hi\r\n* 1 FETCH (UID 1 BODYSTRUCTURE " + std::string(1000000, '(') +
                                   "\r\n")
                .find("nested deeper"),
            std::string::npos);
  imap::Endpoint small;
  small.max_message_size = 1000;
  EXPECT_NE(imap::replay_responses("* OK hi\r\n* 1 FETCH (UID 1 BODY[] {1001}\r\n", small).find("1001 bytes"),
            std::string::npos);
}

TEST(DatesTest, ImpossibleDatesAreNeverFormattedAsDates) {
  EXPECT_EQ(imap::format_date_time(INT64_MAX, 0).rfind("(impossible date", 0), 0u);
  EXPECT_EQ(imap::format_date_time(INT64_MIN, INT32_MIN).rfind("(impossible date", 0), 0u);
  EXPECT_EQ(imap::format_date_time(253402300800, 0).rfind("(impossible date", 0), 0u);  // year 10000
  EXPECT_EQ(imap::format_date_time(1704103200, 60), "01-Jan-2024 11:00:00 +0100");
  EXPECT_FALSE(imap::valid_internaldate(1704103200, 99 * 60 + 99));
  EXPECT_TRUE(imap::append_problem({{}, INT64_MAX, 0, "x"}).has_value());
  EXPECT_TRUE(imap::append_problem({{"bad kw"}, 1704103200, 0, "x"}).has_value());
  EXPECT_TRUE(imap::append_problem({{"\\Recent"}, 1704103200, 0, "x"}).has_value());
  EXPECT_FALSE(imap::append_problem({{"\\Seen", "$Label1", "\\Custom"}, 1704103200, 0, "x"}).has_value());
}

TEST(HumanTextTest, ControlCharactersAndBrokenUtf8AreShownEscaped) {
  using namespace std::string_literals;
  EXPECT_EQ(cli::printable("a\0b\x1b]0;x\x07\r\n\x7f"s), "a\\x00b\\x1b]0;x\\x07\\x0d\\x0a\\x7f");
  EXPECT_EQ(cli::printable("C1 \xc2\x9b[2J, lone \xff, cut \xe2\x82"s), "C1 \\xc2\\x9b[2J, lone \\xff, cut \\xe2\\x82");
  EXPECT_EQ(cli::printable("Entw\xc3\xbcrfe \xe6\x97\xa5\xe6\x9c\xac \\Seen"s), "Entw\xc3\xbcrfe \xe6\x97\xa5\xe6\x9c\xac \\Seen");
  // An error naming a folder with a NUL keeps the whole name.
  Error e(ErrorKind::protocol, "cannot open", Retry::never, {.folder = "Nul\0Name"s});
  EXPECT_NE(std::string(e.what()).find("folder Nul\\x00Name"), std::string::npos) << e.what();
}

// --- logins and TLS ---------------------------------------------------------------------

TEST(HostileLoginTest, AMechanismTheServerLacksIsNotAWrongPassword) {
  FakeImapServer server;
  server.set_capabilities("IMAP4rev1 STARTTLS LOGINDISABLED AUTH=PLAIN");
  for (auto mech : {imap::AuthMechanism::cram_md5, imap::AuthMechanism::login}) {
    auto s = imap::Session::connect(server.endpoint());
    imap::Credentials c;
    c.user = "alice";
    c.secret = "pw";
    c.mechanism = mech;
    try {
      s->login(c);
      FAIL();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
      EXPECT_NE(std::string(e.what()).find("--tls starttls"), std::string::npos) << e.what();
    }
  }
  for (auto& c : server.commands()) EXPECT_EQ(c.text.find("LOGIN"), std::string::npos) << c.text;
  // On the command line: exit 4, not 3 (refused credentials).
  TempDir dir;
  std::string secret = dir.path() + "/secret";
  std::ofstream(secret) << "pw\n";
  auto r = testing::run_imapstage({"export", "--archive", dir.path() + "/a", "--host", server.host(), "--port",
                                   std::to_string(server.port()), "--tls", "none", "--user", "alice",
                                   "--password-file", secret, "--auth", "cram-md5"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("does not offer the authentication mechanism CRAM-MD5"), std::string::npos) << r.err;
}

// A server that speaks TLS first: silent on connect, a TLS alert to anything.
class TlsOnlyServer {
 public:
  TlsOnlyServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(fd_, 8);
    thread_ = std::thread([this] {
      std::vector<std::thread> clients;
      for (;;) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) {
          if (stop_) break;
          continue;
        }
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) break;
        clients.emplace_back([this, c] {
          char buf[512];
          pollfd q{c, POLLIN, 0};
          while (!stop_ && ::poll(&q, 1, 100) == 0) {}
          if (!stop_ && ::recv(c, buf, sizeof buf, 0) > 0) {
            const unsigned char alert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28};
            ::send(c, alert, sizeof alert, MSG_NOSIGNAL);
          }
          ::close(c);
        });
      }
      for (auto& t : clients) t.join();
    });
  }
  ~TlsOnlyServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(HostileLoginTest, StarttlsAgainstAnImplicitTlsPortSaysSoAtOnce) {
  TlsOnlyServer server;
  imap::Endpoint e;
  e.host = "127.0.0.1";
  e.port = server.port();
  e.tls = imap::TlsMode::starttls;
  e.timeout = std::chrono::seconds(30);
  auto started = std::chrono::steady_clock::now();
  try {
    imap::Session::connect(e);
    FAIL();
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), ErrorKind::tls) << err.what();
    EXPECT_NE(std::string(err.what()).find("use --tls implicit"), std::string::npos) << err.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
}

// --- the target side: import ------------------------------------------------------------

class HostileArchiveTest : public HostileSourceTest {
 protected:
  void SetUp() override {
    HostileSourceTest::SetUp();
    for (int i = 5; i <= 8; ++i) server_.add_message("INBOX", message(i), {"\\Seen", "$Label" + std::to_string(i)});
    NullSink sink;
    ASSERT_TRUE(exporting::run_export(options(), sink).complete());
  }

  // Changes the archived record of INBOX UID `uid` (a hostile or damaged archive).
  void tamper(uint32_t uid, const std::function<void(archive::MessageRecord&)>& change) {
    auto a = Archive::open(options().archive_dir, Archive::Mode::write);
    auto account = a->find_account("alice");
    auto f = a->find_folder(account->id, "INBOX");
    auto record = a->message({account->id, f->id, f->uidvalidity, uid});
    ASSERT_TRUE(record);
    change(*record);
    archive::Batch batch(*a);
    batch.put_message(*record);
    batch.commit();
  }

  importing::ImportOptions import_options() {
    importing::ImportOptions o;
    o.archive_dir = options().archive_dir;
    o.endpoint = target_.endpoint();
    o.credentials.user = "bob";
    o.credentials.secret = "pw";
    o.account = "alice";
    o.retry.backoff = std::chrono::milliseconds(10);
    o.retry.max_backoff = std::chrono::milliseconds(20);
    o.retry.max_attempts = 3;
    return o;
  }

  // Every command the target received is one imapstage means to send.
  void expect_only_meant_commands() {
    static const std::regex meant(
        "^(CAPABILITY|LOGIN .*|LIST .*|LSUB .*|NAMESPACE|CREATE .*|SUBSCRIBE .*|SELECT .*|STATUS .*|UID SEARCH .*|"
        "UID FETCH .*|UID STORE .*|NOOP|LOGOUT|APPEND .*)$",
        std::regex::icase);
    for (auto& c : target_.commands()) {
      EXPECT_TRUE(std::all_of(c.tag.begin(), c.tag.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
          << c.tag << " " << c.text;
      EXPECT_TRUE(std::regex_match(c.text, meant)) << c.text;
    }
  }

  std::set<archive::Hash> on_target() {
    std::set<archive::Hash> out;
    for (auto& m : target_.folder("INBOX").messages) out.insert(archive::sha256(m.body));
    return out;
  }

  FakeImapServer target_;
};

TEST_F(HostileArchiveTest, ImpossibleValuesFailTheirMessageAloneAndNeverReachTheTarget) {
  tamper(2, [](auto& r) { r.internaldate = INT64_MAX; });
  tamper(3, [](auto& r) { r.internaldate = 253402300800; });  // 01-Jan-10000
  tamper(5, [](auto& r) { r.keywords.push_back("X2 DELETE Drafts"); });
  tamper(6, [](auto& r) {
    for (int i = 0; i < 200000; ++i) r.keywords.push_back("$k" + std::to_string(i));
  });
  RecordingSink events;
  auto started = std::chrono::steady_clock::now();
  auto s = importing::run_import(import_options(), events);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(30));
  EXPECT_FALSE(s.complete());
  EXPECT_EQ(s.reconnects, 0);
  ASSERT_EQ(s.folders.size(), 2u);
  const auto& inbox = s.folders[0].source == "INBOX" ? s.folders[0] : s.folders[1];
  EXPECT_TRUE(inbox.error.empty()) << inbox.error;
  std::vector<uint32_t> failed;
  for (auto& f : inbox.failed) failed.push_back(f.uid);
  std::sort(failed.begin(), failed.end());
  EXPECT_EQ(failed, (std::vector<uint32_t>{2, 3, 5, 6}));
  EXPECT_EQ(inbox.appended, 4u);
  auto got = on_target();
  for (int n : {1, 4, 7, 8}) EXPECT_TRUE(got.count(archive::sha256(message(n)))) << n;
  for (int n : {2, 3, 5, 6}) EXPECT_FALSE(got.count(archive::sha256(message(n)))) << n;
  expect_only_meant_commands();
  for (auto& c : target_.commands()) {
    EXPECT_EQ(c.text.find("10000"), std::string::npos) << c.text;
    EXPECT_EQ(c.text.find("DELETE"), std::string::npos) << c.text;
  }
  EXPECT_FALSE(target_.has_folder("Pwned1"));
}

TEST_F(HostileArchiveTest, ABadAnswerToAPipelinedAppendClosesThatConnection) {
  // The target gives up on the first MULTIAPPEND (as a server does with a
  // line it cannot parse, after which it reads the message bytes as commands).
  target_.on("^APPEND \"INBOX\"", "$TAG BAD Invalid internal date.\r\n", 1);
  RecordingSink events;
  auto s = importing::run_import(import_options(), events);
  EXPECT_TRUE(s.complete());
  auto got = on_target();
  for (int n = 1; n <= 8; ++n) EXPECT_TRUE(got.count(archive::sha256(message(n)))) << n;
  EXPECT_EQ(target_.folder("INBOX").messages.size(), 8u);
  // Nothing more went over the connection that got the BAD; the messages went
  // again, one by one, waiting for the server's go-ahead.
  auto commands = target_.commands();
  auto bad = std::find_if(commands.begin(), commands.end(),
                          [](auto& c) { return c.text.rfind("APPEND \"INBOX\"", 0) == 0; });
  ASSERT_NE(bad, commands.end());
  EXPECT_NE(bad->text.find("+}"), std::string::npos) << bad->text;
  for (auto it = bad + 1; it != commands.end(); ++it) {
    EXPECT_NE(it->connection, bad->connection) << it->text;
    if (it->text.rfind("APPEND \"INBOX\"", 0) == 0) EXPECT_EQ(it->text.find("+}"), std::string::npos) << it->text;
  }
  expect_only_meant_commands();
}

TEST_F(HostileArchiveTest, MessagesOverTheMaximumSizeAreNotSent) {
  auto o = import_options();
  o.endpoint.max_message_size = message(1).size() - 1;
  RecordingSink events;
  auto s = importing::run_import(o, events);
  EXPECT_FALSE(s.complete());
  EXPECT_EQ(s.failed_messages(), 9u);
  for (auto& f : s.folders)
    for (auto& m : f.failed) EXPECT_NE(m.error.find("maximum message size"), std::string::npos) << m.error;
  for (auto& c : target_.commands()) EXPECT_NE(c.text.rfind("APPEND", 0), 0u) << c.text;
}

TEST_F(HostileArchiveTest, AnAppendRefusedStopsPipeliningOnThatConnection) {
  target_.on("^APPEND \"INBOX\"", "$TAG NO [OVERQUOTA] Quota exceeded\r\n", 1);
  RecordingSink events;
  auto s = importing::run_import(import_options(), events);
  EXPECT_TRUE(s.complete());
  auto commands = target_.commands();
  auto refused = std::find_if(commands.begin(), commands.end(),
                              [](auto& c) { return c.text.rfind("APPEND \"INBOX\"", 0) == 0; });
  ASSERT_NE(refused, commands.end());
  EXPECT_NE(refused->text.find("+}"), std::string::npos) << refused->text;
  size_t later_appends = 0;
  for (auto it = refused + 1; it != commands.end(); ++it) {
    if (it->text.rfind("APPEND", 0) != 0) continue;
    ++later_appends;
    EXPECT_EQ(it->connection, refused->connection) << "a NO after the whole command keeps the connection";
    EXPECT_EQ(it->text.find("+}"), std::string::npos) << it->text;
  }
  EXPECT_EQ(later_appends, 8u + 1u);  // INBOX one by one, then Sent
}

TEST_F(HostileArchiveTest, AFlagAServerMightRejectGoesWithASynchronizingLiteral) {
  tamper(7, [](auto& r) { r.keywords.push_back("\\Custom"); });
  target_.set_permanent_flags("");  // keeps anything
  target_.on("^APPEND \"INBOX\"", [](FakeExchange& x) { x.standard(); });
  RecordingSink events;
  auto s = importing::run_import(import_options(), events);
  EXPECT_TRUE(s.complete());
  bool custom_sent = false;
  for (auto& c : target_.commands()) {
    if (c.text.rfind("APPEND \"INBOX\"", 0) != 0) continue;
    EXPECT_EQ(c.text.find("+}"), std::string::npos) << c.text;
    custom_sent |= c.text.find("\\Custom") != std::string::npos;
  }
  EXPECT_TRUE(custom_sent);
  EXPECT_EQ(target_.folder("INBOX").messages.size(), 8u);
}

}  // namespace
}  // namespace imapstage

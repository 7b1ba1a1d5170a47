// imapstage's own reader of UID FETCH responses (imap/fetch_reader.h): on
// byte strings (imap::replay_fetch, split into reads of every size), and
// through a Session against the scripted fake server: items in any order,
// unknown items of every shape, bodies as literal, quoted string or NIL,
// unsolicited and other untagged responses in between, BYE, NO and BAD,
// the limits, and several FETCH commands in flight on one connection.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.h"
#include "imap/fetch_reader.h"
#include "imap/session.h"
#include "tests/support/fake_imap_server.h"

namespace imapstage::imap {
namespace {

using testing::FakeExchange;
using testing::FakeImapServer;

// What replay_fetch reads, checked to be the same for every way of splitting the bytes into reads,
// bodies held or streamed.
std::string replay(std::string_view bytes, Endpoint limits = {}) {
  std::string whole = replay_fetch(bytes, 0, limits);
  for (size_t piece : {1, 2, 3, 7, 64, 4096}) {
    EXPECT_EQ(replay_fetch(bytes, piece, limits), whole) << "piece " << piece;
    // Every body literal streamed to a sink reads the same.
    EXPECT_EQ(replay_fetch(bytes, piece, limits, 1), whole) << "piece " << piece << ", streamed";
  }
  return whole;
}

std::string literal(std::string_view bytes) { return "{" + std::to_string(bytes.size()) + "}\r\n" + std::string(bytes); }

TEST(FetchReaderTest, ItemsInAnyOrderWithTheUidAfterTheBody) {
  std::string out = replay("* 7 FETCH (BODY[] " + literal("Subject: x\r\n\r\nhello\r\n") +
                           " MODSEQ (99) RFC822.SIZE 23 UID 42 INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" "
                           "FLAGS (\\SEEN \\Recent $Work \\answered))\r\n"
                           "12 OK done\r\n");
  EXPECT_NE(out.find("fetch seq=7 uid=42 flags=\\Seen,$Work,\\Answered date=837596665/-420 size=23 modseq=99 body=21:"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("tagged 12 OK"), std::string::npos) << out;
  EXPECT_EQ(out.find("stop"), std::string::npos) << out;
}

TEST(FetchReaderTest, UnknownItemsOfEveryShapeAreSkipped) {
  std::string out = replay(
      "* 1 FETCH (X-GM-MSGID 1278455344230334865 X-GM-LABELS (\\Inbox \"with \\\"quotes\\\" and (paren\" Work) "
      "BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 12 1 NIL NIL NIL)"
      " \"mixed\" (\"boundary\" \"b\") NIL NIL) "
      "BODY[HEADER.FIELDS (FROM \"TO\")] " + literal("From: a\r\n\r\n") + " ENVELOPE (NIL \"subj\" (" +
      literal("x)y") + " NIL) NIL) X-EMPTY () UID 5 BODY[] " + literal("body") + " X-NIL NIL)\r\n");
  EXPECT_NE(out.find("fetch seq=1 uid=5 flags=- date=0/0 size=- modseq=0 body=4:"), std::string::npos) << out;
  EXPECT_EQ(out.find("stop"), std::string::npos) << out;
}

TEST(FetchReaderTest, BodyAsQuotedStringOrNil) {
  std::string a = replay("* 1 FETCH (UID 1 BODY[] \"a \\\"quoted\\\" \\\\ body\")\r\n");
  std::string b = replay("* 1 FETCH (UID 1 BODY[] {17}\r\na \"quoted\" \\ body)\r\n");
  auto digest = [](const std::string& s) { return s.substr(s.find("body=")); };
  EXPECT_EQ(digest(a), digest(b));
  EXPECT_NE(a.find("body=17:"), std::string::npos) << a;
  std::string nil = replay("* 1 FETCH (UID 1 BODY[] NIL)\r\n");
  EXPECT_NE(nil.find("body=0:"), std::string::npos) << nil;
}

TEST(FetchReaderTest, FlagsKeepKeywordsAndNameWhatCannotBeKept) {
  std::string out = replay("* 1 FETCH (UID 1 FLAGS (\\Seen \\* $Label1 \\Custom bad]flag))\r\n");
  EXPECT_NE(out.find("flags=\\Seen,$Label1,\\Custom "), std::string::npos) << out;
  EXPECT_NE(out.find("anomaly=2 flags that are not valid IMAP flags (e.g. \"\\\\*\") left out"), std::string::npos) << out;
  std::string many = "* 1 FETCH (UID 1 FLAGS (\\Seen";
  for (int i = 0; i < 300; ++i) many += " k" + std::to_string(i);
  out = replay(many + "))\r\n");
  EXPECT_NE(out.find("anomaly=300 keywords: the first 256 kept, 44 left out"), std::string::npos) << out;
}

TEST(FetchReaderTest, ImpossibleAndUnreadableDatesAreAnomalies) {
  std::string out = replay("* 1 FETCH (UID 1 INTERNALDATE \"31-Feb-2021 99:00:00 +9999\" BODY[] NIL)\r\n"
                           "* 2 FETCH (UID 2 INTERNALDATE \"yesterday\" BODY[] NIL)\r\n"
                           "* 3 FETCH (UID 3 INTERNALDATE \" 5-jan-2020 01:02:03 -0130\" BODY[] NIL)\r\n");
  EXPECT_NE(out.find("uid=1 flags=- date=0/0 size=- modseq=0 body=0:"), std::string::npos) << out;
  EXPECT_NE(out.find("anomaly=an impossible INTERNALDATE \"31-Feb-2021 99:00:00 +9999\": archived without a date"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("anomaly=an unreadable INTERNALDATE \"yesterday\""), std::string::npos) << out;
  int64_t t;
  int32_t tz;
  ASSERT_TRUE(parse_date_time("05-Jan-2020 01:02:03 -0130", t, tz));
  EXPECT_NE(out.find("uid=3 flags=- date=" + std::to_string(t) + "/-90 "), std::string::npos) << out;
}

TEST(FetchReaderTest, OtherResponsesInBetweenAreSkippedWithTheirLiterals) {
  std::string out = replay("* 3 EXISTS\r\n* 1 EXPUNGE\r\n* OK [HIGHESTMODSEQ 7] changes\r\n"
                           "* LIST () \"/\" " + literal("* 9 FETCH (UID 9 BODY[] {1}\r\nx)") +
                           "\r\n+ continue\r\n* 2 FETCH (FLAGS (\\Flagged))\r\nA1 NO [SERVERBUG] x\r\n* BYE bye\r\n");
  EXPECT_EQ(out, "other\nother\nother\nother\nother\nfetch seq=2 uid=0 flags=\\Flagged date=0/0 size=- modseq=0\n"
                 "tagged A1 NO\nbye\n");
}

TEST(FetchReaderTest, BodiesLargerThanTheBufferArriveWhole) {
  std::string body;
  for (int i = 0; body.size() < 300000; ++i) body += "line " + std::to_string(i) + " (with [brackets])\r\n";
  std::string a = replay("* 1 FETCH (UID 1 BODY[] " + literal(body) + ")\r\n");
  EXPECT_NE(a.find("body=" + std::to_string(body.size()) + ":"), std::string::npos) << a;
  EXPECT_EQ(a.find("stop"), std::string::npos) << a;
}

// Hands `bytes` to a reader `piece` bytes at a time (0: as much as asked).
class StringSource final : public FetchSource {
 public:
  StringSource(std::string bytes, size_t piece) : bytes_(std::move(bytes)), piece_(piece) {}
  size_t read(char* buf, size_t n) override {
    if (at_ == bytes_.size()) throw Error(ErrorKind::network, "end of the bytes");
    size_t k = std::min({n, bytes_.size() - at_, piece_ ? piece_ : n});
    std::memcpy(buf, bytes_.data() + at_, k);
    at_ += k;
    return k;
  }
  [[noreturn]] void refuse(const std::string& violation, bool) override { throw Error(ErrorKind::protocol, violation); }
  [[noreturn]] void unparsable(const std::string& detail) override { throw Error(ErrorKind::protocol, detail); }

 private:
  std::string bytes_;
  size_t piece_;
  size_t at_ = 0;
};

struct CollectingSink final : BodySink {
  explicit CollectingSink(uint64_t size, std::vector<std::string>* pieces_seen = nullptr, size_t fail_at = SIZE_MAX)
      : announced(size), fail_at(fail_at) {}
  void write(std::string_view piece) override {
    if (++writes == fail_at) throw Error(ErrorKind::io, "disk full (test)", Retry::later);
    bytes.append(piece);
  }
  uint64_t announced;
  size_t fail_at;
  size_t writes = 0;
  std::string bytes;
};

TEST(FetchReaderTest, LargeBodiesGoToASinkAsTheyArrive) {
  std::string big;
  for (int i = 0; big.size() < 300000; ++i) big += "line " + std::to_string(i) + " of a large body\r\n";
  std::string small = "Subject: s\r\n\r\nsmall\r\n";
  std::string wire = "* 1 FETCH (UID 11 BODY[] " + literal(big) + " FLAGS (\\Seen))\r\n" +
                     "* 2 FETCH (UID 12 BODY[] " + literal(small) + ")\r\n" +
                     "* 3 FETCH (BODY[] " + literal(big) + " UID 13)\r\n" + "A1 OK done\r\n";
  for (size_t piece : {0, 1000, 4096, 100000}) {
    SCOPED_TRACE(piece);
    for (size_t fail_at : {SIZE_MAX, size_t{1}, size_t{2}}) {
      SCOPED_TRACE(fail_at);
      StringSource source(wire, piece);
      std::vector<char> buffer(8192);
      FetchReader reader(source, buffer.data(), buffer.size(), 0, {});
      size_t opened = 0;
      reader.stream_large_bodies({100000, [&](uint64_t size) -> std::unique_ptr<BodySink> {
                                    ++opened;
                                    // The first sink fails (when told to), the second never.
                                    return std::make_unique<CollectingSink>(size, nullptr, opened == 1 ? fail_at : SIZE_MAX);
                                  }});
      FetchData data;
      std::string body;
      ASSERT_EQ(reader.next(data, body), FetchReader::Kind::fetch);
      EXPECT_EQ(data.uid, 11u);
      EXPECT_TRUE(body.empty());
      EXPECT_EQ(data.body_size, big.size());
      EXPECT_EQ(data.flags, std::vector<std::string>{"\\Seen"});  // the response goes on after the body
      if (fail_at == SIZE_MAX) {
        ASSERT_TRUE(data.body_sink);
        auto& sink = static_cast<CollectingSink&>(*data.body_sink);
        EXPECT_EQ(sink.announced, big.size());
        EXPECT_EQ(sink.bytes, big);
        EXPECT_FALSE(data.body_error);
      } else {
        // The sink's failure is reported; the body is read past, not passed on.
        EXPECT_FALSE(data.body_sink);
        ASSERT_TRUE(data.body_error);
        EXPECT_THROW(std::rethrow_exception(data.body_error), Error);
      }
      ASSERT_EQ(reader.next(data, body), FetchReader::Kind::fetch);
      EXPECT_EQ(data.uid, 12u);
      EXPECT_EQ(body, small);  // under the threshold: held
      EXPECT_FALSE(data.body_sink);
      EXPECT_EQ(data.body_size, small.size());
      ASSERT_EQ(reader.next(data, body), FetchReader::Kind::fetch);
      EXPECT_EQ(data.uid, 13u);
      ASSERT_TRUE(data.body_sink);
      EXPECT_EQ(static_cast<CollectingSink&>(*data.body_sink).bytes, big);
      EXPECT_EQ(opened, 2u);
      ASSERT_EQ(reader.next(data, body), FetchReader::Kind::tagged);
      EXPECT_EQ(reader.tag(), "A1");
    }
  }
}

TEST(FetchReaderTest, LimitsStopTheReaderBeforeTheBytes) {
  Endpoint small;
  small.max_message_size = 1000;
  EXPECT_NE(replay("* 1 FETCH (UID 1 BODY[] {1001}\r\n", small)
                .find("stop: a literal of 1001 bytes, over the maximum message size of 1000 bytes"),
            std::string::npos);
  EXPECT_NE(replay("* 1 FETCH (UID 1 BODY[] \"" + std::string(1001, 'q') + "\")\r\n", small)
                .find("stop: a quoted message body of 1001 bytes"),
            std::string::npos);
  EXPECT_NE(replay("* 1 FETCH (UID 1 X " + std::string(300, '(') + "\r\n").find("stop: parentheses nested deeper than 256"),
            std::string::npos);
  // Parentheses hidden in quoted strings do not let real nesting grow past the limit.
  std::string sneaky = "* 1 FETCH (UID 1 X ";
  for (int i = 0; i < 300; ++i) sneaky += "(\")\" ";
  EXPECT_NE(replay(sneaky + "\r\n").find("stop: parentheses nested deeper than 256"), std::string::npos);
  EXPECT_NE(replay("* 1 FETCH (UID 1 BODY[] {99999999999999999999999}\r\n").find("stop: a literal of an impossible size (garbled)"),
            std::string::npos);
}

TEST(FetchReaderTest, WhatDoesNotParseStopsTheReader) {
  for (std::string bad : {
           "* 1 FETCH (UID 1 BODY[] {5}\r\nthis is longer than five)\r\n",    // a mis-sized literal
           "* 1 FETCH (UID 1 BODY[] {5}\r\nhello\r\n",                        // a response cut short
           "* 1 FETCH (UID 1 X {3} Y)\r\n",                                  // a literal inside a line
           "* 1 FETCH (UID 1) trailing\r\n",
           "* 1 FETCH (UID x)\r\n",
           "* 1 FETCH (UID 0)\r\n",
           "* 1 FETCH (UID 99999999999)\r\n",
           "* 1 FETCH (UID 1 FLAGS (\\Seen)\r\n",
           "* 1 FETCH (UID 1 BODY[] \"unterminated)\r\n",
           "* 1 FETCH UID 1\r\n",
           "* 0 FETCH (UID 1)\r\n",
           ")\r\n",
           "\r\n",
       }) {
    std::string out = replay(bad);
    EXPECT_NE(out.find("stop: unparsable"), std::string::npos) << bad << " -> " << out;
  }
  EXPECT_NE(replay("* 1 FETCH (UID 1 BODY[] {500}\r\nonly a few").find("stop: the input ended inside a response"),
            std::string::npos);
}

// --- through a Session ------------------------------------------------------------------

std::string message(int n, size_t size = 300) {
  std::string body = "Message-ID: <r" + std::to_string(n) + "@fake>\r\nSubject: reader " + std::to_string(n) + "\r\n\r\n";
  while (body.size() < size) body += "text of message " + std::to_string(n) + "\r\n";
  return body;
}

class FetchReaderSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 1; i <= 6; ++i) server_.add_message("INBOX", message(i), {"\\Seen"});
  }
  std::unique_ptr<Session> logged_in() {
    auto s = Session::connect(server_.endpoint(3));
    Credentials c;
    c.user = "alice";
    c.secret = "pw";
    s->login(c);
    s->examine("INBOX");
    return s;
  }
  FakeImapServer server_;
};

TEST_F(FetchReaderSessionTest, WhatServersReallySendIsRead) {
  std::string big = message(7, 200000);
  server_.on("^UID FETCH .*BODY", [&](FakeExchange& x) {
    x.untagged("6 EXISTS");
    x.send("* 1 FETCH (X-GM-LABELS (\\Inbox) BODY[] " + literal(message(1)) +
           " FLAGS (\\Seen $Work \\*) UID 1 RFC822.SIZE " + std::to_string(message(1).size()) +
           " INTERNALDATE \"01-Jan-2024 10:00:00 +0000\")\r\n");
    x.untagged("4 FETCH (FLAGS (\\Flagged))");                 // another session's change
    x.untagged("OK [HIGHESTMODSEQ 12] still here");
    x.send("* 2 FETCH (UID 2 BODY[] \"short \\\"quoted\\\" body\" FLAGS ())\r\n");
    x.send("* 3 FETCH (UID 3 BODY[] " + literal(big) + ")\r\n");
    x.untagged("9 FETCH (UID 99 BODY[] NIL)");                // outside the UIDs asked
    x.tagged("OK done");
  });
  auto s = logged_in();
  std::vector<FetchedMessage> got;
  s->fetch_messages({{1, 3}}, [&](FetchedMessage&& m) { got.push_back(std::move(m)); });
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].uid, 1u);
  EXPECT_EQ(got[0].body, message(1));
  EXPECT_EQ(got[0].flags, (std::vector<std::string>{"\\Seen", "$Work"}));
  ASSERT_EQ(got[0].anomalies.size(), 1u);
  EXPECT_NE(got[0].anomalies[0].find("\\\\*"), std::string::npos) << got[0].anomalies[0];
  EXPECT_EQ(got[0].internaldate, 1704103200);
  EXPECT_EQ(got[1].body, "short \"quoted\" body");
  EXPECT_TRUE(got[1].flags.empty());
  EXPECT_EQ(got[1].rfc822_size, got[1].body.size());
  EXPECT_EQ(got[2].body, big);
  // The connection is still in step.
  EXPECT_EQ(s->search_all_uids().size(), 6u);
}

TEST_F(FetchReaderSessionTest, SizesAndFlagsGoThroughTheReaderToo) {
  server_.set_flags("INBOX", 2, {"\\Seen", "$Label1", "\\SEEN"});
  auto s = logged_in();
  std::vector<std::pair<uint32_t, uint64_t>> sizes;
  s->fetch_sizes({{2, 4}}, [&](uint32_t uid, uint64_t size) { sizes.emplace_back(uid, size); });
  EXPECT_EQ(sizes, (std::vector<std::pair<uint32_t, uint64_t>>{{2, message(2).size()}, {3, message(3).size()}, {4, message(4).size()}}));
  std::vector<FlagUpdate> flags;
  s->fetch_flags({{1, 0}}, std::nullopt, [&](FlagUpdate&& u) { flags.push_back(std::move(u)); });
  ASSERT_EQ(flags.size(), 6u);
  EXPECT_EQ(flags[1].uid, 2u);
  EXPECT_EQ(flags[1].flags, (std::vector<std::string>{"\\Seen", "$Label1", "\\Seen"}));
  bool sizes_sent = false;
  for (auto& c : server_.commands()) sizes_sent |= c.text == "UID FETCH 2:4 (UID RFC822.SIZE)";
  EXPECT_TRUE(sizes_sent);
}

TEST_F(FetchReaderSessionTest, BatchesArePipelinedAndRepliesMatchedToTheirTags) {
  // The first batch's reply is held back until the second command has
  // arrived (which proves it was sent before that reply), and then comes
  // after the second batch's own reply.
  std::mutex m;
  std::string first_tag;
  server_.on("^UID FETCH 1:2 ", [&](FakeExchange& x) {
    {
      std::lock_guard lock(m);
      first_tag = x.tag();
    }
    x.send(x.fetch_response(1));
    x.send(x.fetch_response(2));
  }, 1);
  server_.on("^UID FETCH 3:4 ", [&](FakeExchange& x) {
    x.standard();
    std::lock_guard lock(m);
    x.send(first_tag + " OK first batch done\r\n");
  }, 1);
  auto s = logged_in();
  std::vector<std::pair<size_t, uint32_t>> messages;
  std::vector<size_t> done;
  s->fetch_batches({{{1, 2}}, {{3, 4}}, {{5, 5}, {6, 6}}},
                   [&](size_t b, FetchedMessage&& msg) { messages.emplace_back(b, msg.uid); },
                   [&](size_t b) { done.push_back(b); });
  EXPECT_EQ(messages, (std::vector<std::pair<size_t, uint32_t>>{{0, 1}, {0, 2}, {1, 3}, {1, 4}, {2, 5}, {2, 6}}));
  EXPECT_EQ(done, (std::vector<size_t>{1, 0, 2}));
  size_t fetches = 0;
  for (auto& c : server_.commands()) fetches += c.text.rfind("UID FETCH", 0) == 0;
  EXPECT_EQ(fetches, 3u);
  EXPECT_EQ(s->search_all_uids().size(), 6u);
}

TEST_F(FetchReaderSessionTest, NoSettlesABatchAndBadStopsTheRest) {
  server_.on("^UID FETCH 3:4 ", [](FakeExchange& x) {
    x.send(x.fetch_response(4));
    x.tagged("NO [SERVERBUG] could not read UID 3");
  }, 1);
  server_.on("^UID FETCH 5 ", "$TAG BAD [CLIENTBUG] confused\r\n", 1);
  auto s = logged_in();
  std::vector<uint32_t> uids;
  std::vector<size_t> done;
  try {
    s->fetch_batches({{{1, 2}}, {{3, 4}}, {{5, 5}}, {{6, 6}}}, [&](size_t, FetchedMessage&& msg) { uids.push_back(msg.uid); },
                     [&](size_t b) { done.push_back(b); });
    FAIL() << "BAD accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_EQ(e.retry(), Retry::never) << e.what();
    EXPECT_EQ(e.where().folder, "INBOX");
    EXPECT_NE(std::string(e.what()).find("confused"), std::string::npos) << e.what();
  }
  EXPECT_EQ(uids, (std::vector<uint32_t>{1, 2, 4}));
  EXPECT_EQ(done, (std::vector<size_t>{0, 1}));
  for (auto& c : server_.commands()) EXPECT_NE(c.text.rfind("UID FETCH 6 ", 0), 0u) << "sent after the BAD";
  EXPECT_TRUE(s->alive());
  EXPECT_EQ(s->search_all_uids().size(), 6u);
}

TEST_F(FetchReaderSessionTest, ACallbackExceptionLeavesTheSessionInStep) {
  auto s = logged_in();
  size_t calls = 0;
  EXPECT_THROW(s->fetch_batches({{{1, 2}}, {{3, 4}}, {{5, 6}}}, [&](size_t, FetchedMessage&&) { ++calls; },
                                [&](size_t) { throw std::runtime_error("stop"); }),
               std::runtime_error);
  EXPECT_GE(calls, 2u);
  EXPECT_LE(calls, 4u);  // nothing after the exception
  EXPECT_TRUE(s->alive());
  EXPECT_EQ(s->search_all_uids().size(), 6u);
  std::vector<uint32_t> again;
  s->fetch_messages({{1, 0}}, [&](FetchedMessage&& m) { again.push_back(m.uid); });
  EXPECT_EQ(again.size(), 6u);
}

TEST_F(FetchReaderSessionTest, ByeAndGarbageCloseTheConnection) {
  server_.on("^UID FETCH 1:2 ", [](FakeExchange& x) {
    x.send(x.fetch_response(1));
    x.untagged("BYE shutting down");
    x.close();
  }, 1);
  server_.on("^UID FETCH 3:4 ", [](FakeExchange& x) {
    x.send("* 3 FETCH (UID 3 BODY[] {3}\r\nabc FLAGS (\\Seen)) junk\r\n");
    x.tagged("OK done");
  }, 1);
  auto s = logged_in();
  try {
    s->fetch_batches({{{1, 2}}}, [](size_t, FetchedMessage&&) {}, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::network) << e.what();
    EXPECT_EQ(e.retry(), Retry::now);
    EXPECT_NE(std::string(e.what()).find("BYE shutting down"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(s->alive());
  s = logged_in();
  try {
    s->fetch_messages({{3, 4}}, [](FetchedMessage&&) {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_EQ(e.retry(), Retry::now);
    EXPECT_NE(std::string(e.what()).find("unparsable"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("junk"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(s->alive());
}

TEST_F(FetchReaderSessionTest, WhatArrivesAfterTheLastReplyIsLeftForTheNextCommand) {
  // An untagged response sent right behind the tagged reply lands in the
  // same read; it must reach libetpan's parser intact (here: before SEARCH's own).
  server_.on("^UID FETCH ", [](FakeExchange& x) {
    x.send(x.fetch_response(1));
    x.send(x.tag() + " OK done\r\n* 7 EXISTS\r\n* 2 RECENT\r\n");
  }, 1);
  auto s = logged_in();
  std::vector<uint32_t> got;
  s->fetch_messages({{1, 1}}, [&](FetchedMessage&& m) { got.push_back(m.uid); });
  EXPECT_EQ(got, std::vector<uint32_t>{1});
  EXPECT_EQ(s->search_all_uids().size(), 6u);
  EXPECT_EQ(s->status("INBOX").messages, 6u);
}

TEST_F(FetchReaderSessionTest, DeepNestingRightBehindTheReplyIsRefused) {
  // Bytes the reader received but did not read go back through the guard
  // before libetpan's recursive parser may see them.
  server_.on("^UID FETCH ", [](FakeExchange& x) {
    x.send(x.fetch_response(1));
    x.send(x.tag() + " OK done\r\n* 1 FETCH (UID 1 BODYSTRUCTURE " + std::string(5000, '(') + "\r\n");
  }, 1);
  auto s = logged_in();
  std::vector<uint32_t> got;
  try {
    s->fetch_messages({{1, 1}}, [&](FetchedMessage&& m) { got.push_back(m.uid); });
    s->search_all_uids();
    FAIL() << "deep nesting went through";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nested deeper than 256"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(s->alive());
}

}  // namespace
}  // namespace imapstage::imap

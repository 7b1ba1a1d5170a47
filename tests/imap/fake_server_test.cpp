// imap::Session against the scripted fake server: the ordinary conversation,
// and faults a real server will not produce on demand (NO/BAD, unsolicited
// responses in the middle of a FETCH, garbage, truncated or mis-sized
// literals, bad APPENDUID). Each must end in a clear Error or a correct
// result, never a crash or a hang.
#include <csignal>
#include <chrono>

#include <gtest/gtest.h>

#include "common/error.h"
#include "imap/session.h"
#include "tests/support/fake_imap_server.h"

namespace imapstage::imap {
namespace {

using testing::FakeExchange;
using testing::FakeImapServer;

std::unique_ptr<Session> logged_in(const FakeImapServer& server, int timeout_seconds = 5) {
  auto s = Session::connect(server.endpoint(timeout_seconds));
  Credentials c;
  c.user = "alice";
  c.secret = "pw";
  s->login(c);
  return s;
}

std::string message(int n, size_t size = 200) {
  std::string body = "Message-ID: <m" + std::to_string(n) + "@fake>\r\nSubject: message " + std::to_string(n) +
                     "\r\n\r\n";
  while (body.size() < size) body += "line of text " + std::to_string(n) + "\r\n";
  return body;
}

class FakeServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 1; i <= 5; ++i) server_.add_message("INBOX", message(i), i % 2 ? std::vector<std::string>{"\\Seen"}
                                                                                  : std::vector<std::string>{});
    server_.add_folder("Archive/2024", 77, {"\\HasNoChildren", "\\Archive"});
    server_.add_message("Archive/2024", message(100));
  }

  std::vector<FetchedMessage> fetch_all(Session& s, std::vector<UidRange> ranges = {{1, 0}}) {
    std::vector<FetchedMessage> got;
    s.fetch_messages(ranges, [&](FetchedMessage&& m) { got.push_back(std::move(m)); });
    return got;
  }

  FakeImapServer server_;
};

TEST_F(FakeServerTest, OrdinaryConversation) {
  auto s = logged_in(server_);
  EXPECT_TRUE(s->has_capability("MULTIAPPEND"));
  EXPECT_TRUE(s->has_capability("LITERAL+"));

  auto list = s->list();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name_raw, "Archive/2024");
  EXPECT_EQ(list[0].special_use, "\\Archive");
  EXPECT_EQ(list[0].delimiter, '/');
  EXPECT_TRUE(list[1].subscribed);
  auto ns = s->personal_namespace();
  EXPECT_EQ(ns.prefix, "");
  EXPECT_EQ(ns.delimiter, '/');

  auto st = s->status("Archive/2024");
  EXPECT_EQ(st.messages, 1u);
  EXPECT_EQ(st.uidvalidity, 77u);
  EXPECT_EQ(st.uidnext, 2u);

  auto info = s->examine("INBOX");
  EXPECT_EQ(info.exists, 5u);
  EXPECT_EQ(info.uidnext, 6u);
  EXPECT_TRUE(info.read_only);
  EXPECT_EQ(s->search_all_uids(), (std::vector<uint32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(s->search_message_id("<m3@fake>"), (std::vector<uint32_t>{3}));

  auto got = fetch_all(*s);
  ASSERT_EQ(got.size(), 5u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].uid, i + 1);
    EXPECT_EQ(got[i].body, message(static_cast<int>(i + 1)));
    EXPECT_EQ(got[i].rfc822_size, got[i].body.size());
  }
  EXPECT_EQ(got[0].flags, (std::vector<std::string>{"\\Seen"}));
  EXPECT_TRUE(got[1].flags.empty());
  int64_t t;
  int32_t tz;
  ASSERT_TRUE(parse_date_time("01-Jan-2024 10:00:00 +0000", t, tz));
  EXPECT_EQ(got[0].internaldate, t);

  s->select("Archive/2024");
  std::string a = message(200), b = message(201, 5000);
  auto results = s->append("Archive/2024", {{{"\\Seen"}, t, 0, a}, {{"$Label1"}, t, 60, b}});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_TRUE(results[0].ok && results[1].ok);
  EXPECT_EQ(results[0].uidvalidity, 77u);
  EXPECT_EQ(results[0].uid, 2u);
  EXPECT_EQ(results[1].uid, 3u);
  auto folder = server_.folder("Archive/2024");
  ASSERT_EQ(folder.messages.size(), 3u);
  EXPECT_EQ(folder.messages[1].body, a);
  EXPECT_EQ(folder.messages[2].body, b);
  EXPECT_EQ(folder.messages[2].flags, (std::vector<std::string>{"$Label1"}));
  // One MULTIAPPEND with non-synchronizing literals.
  size_t appends = 0;
  for (auto& c : server_.commands())
    if (c.text.rfind("APPEND", 0) == 0) {
      ++appends;
      EXPECT_EQ(c.literals.size(), 2u);
      EXPECT_NE(c.text.find("+}"), std::string::npos) << c.text;
    }
  EXPECT_EQ(appends, 1u);
  s->logout();
}

TEST_F(FakeServerTest, ExpectedScriptIsFollowedInOrder) {
  server_.expect("^CAPABILITY$", "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n$TAG OK done\r\n");
  server_.expect("^LOGIN ", "$TAG OK logged in\r\n");
  server_.expect("^CAPABILITY$", "* CAPABILITY IMAP4rev1 UIDPLUS\r\n$TAG OK done\r\n");
  auto s = logged_in(server_);
  EXPECT_TRUE(server_.unmet().empty());
  EXPECT_TRUE(server_.unexpected().empty());
  EXPECT_TRUE(s->has_capability("UIDPLUS"));
  EXPECT_FALSE(s->has_capability("MULTIAPPEND"));
}

TEST_F(FakeServerTest, StartTlsRefusedWhenTheServerDoesNotOfferIt) {
  // The default capabilities have no STARTTLS: the session stops before any
  // credential could be sent in the clear.
  Endpoint e = server_.endpoint(5);
  e.tls = TlsMode::starttls;
  try {
    Session::connect(e);
    FAIL() << "connected without STARTTLS";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("does not offer STARTTLS"), std::string::npos) << err.what();
    EXPECT_EQ(err.retry(), Retry::never);
  }
  for (auto& c : server_.commands()) {
    EXPECT_EQ(c.text.find("LOGIN"), std::string::npos) << c.text;
    EXPECT_EQ(c.text.find("AUTHENTICATE"), std::string::npos) << c.text;
  }
}

TEST_F(FakeServerTest, RefusedLoginIsAnAuthError) {
  server_.set_login("alice", "right");
  auto s = Session::connect(server_.endpoint(5));
  try {
    Credentials c;
    c.user = "alice";
    c.secret = "wrong";
    s->login(c);
    FAIL() << "login accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::auth);
    EXPECT_EQ(e.retry(), Retry::never);
    EXPECT_EQ(std::string(e.what()).find("wrong"), std::string::npos) << "secret in error: " << e.what();
  }
}

TEST_F(FakeServerTest, NoOrBadToUidFetchDeliversNothingAndKeepsTheSession) {
  server_.on("^UID FETCH", "$TAG NO [SERVERBUG] cannot read the message\r\n", 1);
  server_.on("^UID FETCH", "$TAG BAD internal confusion\r\n", 1);
  auto s = logged_in(server_);
  s->examine("INBOX");
  // NO: the messages are simply not delivered (the caller names them).
  EXPECT_TRUE(fetch_all(*s).empty());
  // BAD: the command itself was refused.
  try {
    fetch_all(*s);
    FAIL() << "BAD accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_EQ(e.retry(), Retry::never) << e.what();
    EXPECT_EQ(e.where().folder, "INBOX") << e.what();
    EXPECT_NE(std::string(e.what()).find("internal confusion"), std::string::npos) << e.what();
  }
  // The session still works afterwards.
  EXPECT_EQ(fetch_all(*s).size(), 5u);
}

TEST_F(FakeServerTest, NoToListLsubAndStatusAreProtocolErrors) {
  server_.on("^LIST", "* LIST () \"/\" INBOX\r\n$TAG NO [SERVERBUG] list failed\r\n", 1);
  server_.on("^LSUB", "* LSUB () \"/\" INBOX\r\n$TAG NO lsub failed\r\n", 1);
  server_.on("^STATUS", "* STATUS INBOX (MESSAGES 5)\r\n$TAG NO [SERVERBUG] status failed\r\n", 1);
  server_.on("^EXAMINE", "* 5 EXISTS\r\n$TAG NO [SERVERBUG] examine failed\r\n", 1);
  server_.on("^UID SEARCH", "* SEARCH 1 2\r\n$TAG NO search failed\r\n", 1);
  auto s = logged_in(server_);
  for (int i = 0; i < 2; ++i) {
    try {
      s->list();
      FAIL() << "LIST/LSUB NO accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
      EXPECT_EQ(e.retry(), Retry::never) << e.what();
    }
  }
  try {
    s->status("INBOX");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_EQ(e.where().folder, "INBOX");
    EXPECT_NE(std::string(e.what()).find("status failed"), std::string::npos) << e.what();
  }
  try {
    s->examine("INBOX");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_NE(std::string(e.what()).find("examine failed"), std::string::npos) << e.what();
  }
  s->examine("INBOX");
  EXPECT_THROW(s->search_all_uids(), Error);
  EXPECT_EQ(s->list().size(), 2u);
  EXPECT_EQ(s->status("INBOX").messages, 5u);
  EXPECT_EQ(s->search_all_uids().size(), 5u);
}

TEST_F(FakeServerTest, UnreadableSearchResponseIsAnErrorNotAShorterList) {
  server_.on("^UID SEARCH", "* SEARCH 1 2 x3 4\r\n$TAG OK done\r\n", 1);
  server_.on("^UID SEARCH", "* SEARCH 1 99999999999 4\r\n$TAG OK done\r\n", 1);
  auto s = logged_in(server_);
  s->examine("INBOX");
  for (int i = 0; i < 2; ++i) {
    try {
      auto uids = s->search_all_uids();
      FAIL() << uids.size() << " UIDs";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
      EXPECT_EQ(e.where().folder, "INBOX");
    }
  }
  EXPECT_EQ(s->search_all_uids().size(), 5u);
}

TEST_F(FakeServerTest, ImpossibleLiteralSizeIsAProtocolError) {
  server_.on("^UID SEARCH", "* SEARCH {99999999999999999999999}\r\n$TAG OK done\r\n", 1);
  auto s = logged_in(server_);
  s->examine("INBOX");
  try {
    s->search_all_uids();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_EQ(e.retry(), Retry::now);
  }
}

TEST_F(FakeServerTest, PartialFetchThenNoDeliversTheMessagesSent) {
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) {
    x.send(x.fetch_response(1));
    x.send(x.fetch_response(2));
    x.tagged("NO [SERVERBUG] backend failure for the rest");
  }, 1);
  auto s = logged_in(server_);
  s->examine("INBOX");
  auto got = fetch_all(*s);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].body, message(2));
}

TEST_F(FakeServerTest, UnsolicitedExpungeAndFlagFetchMidFetchAreIgnored) {
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) {
    x.standard_fetch([](FakeExchange& x, uint32_t uid) {
      if (uid == 2) {
        // Another session expunges UID 1 (sequence 1) and flags UID 4 (now sequence 3).
        x.server().remove_message("INBOX", 1);
        x.untagged("1 EXPUNGE");
        x.server().set_flags("INBOX", 4, {"\\Flagged"});
        x.untagged("3 FETCH (FLAGS (\\Flagged))");
        x.untagged("3 FETCH (UID 4 FLAGS (\\Flagged))");
      }
      return true;
    });
  }, 1);
  auto s = logged_in(server_);
  s->examine("INBOX");
  auto got = fetch_all(*s);
  ASSERT_EQ(got.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(got[i].uid, i + 1);
    EXPECT_EQ(got[i].body, message(static_cast<int>(i + 1)));
  }
  EXPECT_EQ(got[3].flags, (std::vector<std::string>{"\\Flagged"}));
  // And the flag-only unsolicited FETCH did not leak into a later flags fetch.
  std::vector<FlagUpdate> flags;
  s->fetch_flags({{1, 0}}, std::nullopt, [&](FlagUpdate&& f) { flags.push_back(std::move(f)); });
  EXPECT_EQ(flags.size(), 4u);
}

void expect_dead_after(Session& s, ErrorKind kind) {
  try {
    s.search_all_uids();
    FAIL() << "a dead session answered";
  } catch (const Error& e) {
    EXPECT_EQ(e.retry(), Retry::now) << e.what();
    (void)kind;
  }
}

TEST_F(FakeServerTest, GarbageLineIsAProtocolErrorAndKillsTheSession) {
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) {
    x.send(x.fetch_response(1));
    x.send("this is not IMAP at all\r\n");
    x.tagged("OK done");
  });
  auto s = logged_in(server_);
  s->examine("INBOX");
  std::vector<uint32_t> got;
  try {
    s->fetch_messages({{1, 0}}, [&](FetchedMessage&& m) { got.push_back(m.uid); });
    FAIL() << "garbage accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_EQ(e.retry(), Retry::now) << e.what();
    EXPECT_EQ(e.where().folder, "INBOX") << e.what();
  }
  EXPECT_LE(got.size(), 1u);
  expect_dead_after(*s, ErrorKind::network);
}

TEST_F(FakeServerTest, TruncatedLiteralIsANetworkError) {
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) {
    x.send("* 1 FETCH (UID 1 BODY[] {500}\r\nonly a few bytes");
    x.close();
  });
  auto s = logged_in(server_);
  s->examine("INBOX");
  auto started = std::chrono::steady_clock::now();
  try {
    fetch_all(*s);
    FAIL() << "truncated literal accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::network) << e.what();
    EXPECT_EQ(e.retry(), Retry::now);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(4));
}

TEST_F(FakeServerTest, LiteralLongerThanSentTimesOut) {
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) {
    x.send("* 1 FETCH (UID 1 BODY[] {5000}\r\nshort)\r\n" + x.tag() + " OK done\r\n");
  });
  auto s = logged_in(server_, 2);
  s->examine("INBOX");
  auto started = std::chrono::steady_clock::now();
  try {
    fetch_all(*s);
    FAIL() << "short literal accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::network) << e.what();
    EXPECT_EQ(e.retry(), Retry::now);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
}

TEST_F(FakeServerTest, LiteralShorterThanSentIsAProtocolError) {
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) {
    x.send("* 1 FETCH (UID 1 BODY[] {5}\r\nthis body is longer than five bytes)\r\n" + x.tag() + " OK done\r\n");
  });
  auto s = logged_in(server_);
  s->examine("INBOX");
  try {
    auto got = fetch_all(*s);
    FAIL() << "mis-sized literal accepted, " << got.size() << " messages";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_EQ(e.retry(), Retry::now);
  }
}

TEST_F(FakeServerTest, ByeMidFetchIsANetworkError) {
  server_.on("^UID FETCH .*BODY", [](FakeExchange& x) {
    x.send(x.fetch_response(1));
    x.untagged("BYE server shutting down");
    x.close();
  });
  auto s = logged_in(server_);
  s->examine("INBOX");
  try {
    fetch_all(*s);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.retry(), Retry::now) << e.what();
    EXPECT_TRUE(e.kind() == ErrorKind::network || e.kind() == ErrorKind::protocol) << e.what();
  }
}

TEST_F(FakeServerTest, AppendNoBadTooBigAndTrycreate) {
  server_.on("^APPEND", "$TAG NO [OVERQUOTA] Quota exceeded\r\n", 1);
  server_.on("^APPEND", "$TAG BAD Invalid arguments\r\n", 1);
  server_.on("^APPEND", "$TAG NO [TOOBIG] Message too large\r\n", 1);
  server_.on("^APPEND", "$TAG NO [TRYCREATE] Mailbox doesn't exist\r\n", 1);
  auto s = logged_in(server_);
  std::string a = message(1);
  std::vector<AppendItem> one{{{}, 0, 0, a}};
  auto r = s->append("INBOX", one);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].ok);
  EXPECT_NE(r[0].error.find("Quota exceeded"), std::string::npos) << r[0].error;
  r = s->append("INBOX", one);
  EXPECT_FALSE(r[0].ok);
  EXPECT_NE(r[0].error.find("BAD"), std::string::npos) << r[0].error;
  r = s->append("INBOX", one);
  EXPECT_FALSE(r[0].ok);
  EXPECT_TRUE(r[0].too_big);
  r = s->append("INBOX", one);
  EXPECT_FALSE(r[0].ok);
  EXPECT_TRUE(r[0].trycreate);
  EXPECT_EQ(server_.folder("INBOX").messages.size(), 5u);
  // Still usable.
  r = s->append("INBOX", one);
  EXPECT_TRUE(r[0].ok);
  EXPECT_EQ(r[0].uid, 6u);
}

TEST_F(FakeServerTest, MalformedAppendUidGivesNoUid) {
  for (const char* code : {"APPENDUID 0 6", "APPENDUID x 6", "APPENDUID 5 0", "APPENDUID 5 6:9", "APPENDUID 5",
                           "APPENDUID 99999999999 6", "APPENDUID 5 6,", "APPENDUID 5 -6", "APPENDUID"})
    server_.on("^APPEND", std::string("$TAG OK [") + code + "] done\r\n", 1);
  auto s = logged_in(server_);
  std::string a = message(1), b = message(2);
  for (int i = 0; i < 9; ++i) {
    auto r = s->append("INBOX", {{{}, 0, 0, a}, {{}, 0, 0, b}});
    ASSERT_EQ(r.size(), 2u);
    for (auto& x : r) {
      EXPECT_TRUE(x.ok) << i;
      EXPECT_EQ(x.uid, 0u) << i;
      EXPECT_EQ(x.uidvalidity, 0u) << i;
    }
  }
}

TEST_F(FakeServerTest, SynchronizingAppendWithoutLiteralPlus) {
  server_.set_capabilities("IMAP4rev1 UIDPLUS");
  auto s = logged_in(server_);
  std::string a = message(1), b = message(2);
  auto r = s->append("INBOX", {{{"\\Seen"}, 0, 0, a}, {{}, 0, 0, b}});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].uid, 6u);
  EXPECT_EQ(r[1].uid, 7u);
  size_t appends = 0;
  for (auto& c : server_.commands())
    if (c.text.rfind("APPEND", 0) == 0) {
      ++appends;
      EXPECT_EQ(c.text.find("+}"), std::string::npos) << c.text;
    }
  EXPECT_EQ(appends, 2u);
}

TEST_F(FakeServerTest, SilentServerTimesOut) {
  server_.on("^UID SEARCH", [](FakeExchange&) {});
  auto s = logged_in(server_, 1);
  s->examine("INBOX");
  auto started = std::chrono::steady_clock::now();
  try {
    s->search_all_uids();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::network) << e.what();
    EXPECT_EQ(e.retry(), Retry::now);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
}

TEST_F(FakeServerTest, GarbageGreetingIsANetworkError) {
  server_.set_greeting("HELLO THIS IS SMTP\r\n");
  try {
    Session::connect(server_.endpoint(5));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::network) << e.what();
  }
}

}  // namespace
}  // namespace imapstage::imap

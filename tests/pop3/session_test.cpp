// pop3::Session against Dovecot's POP3 (the harness) and the scripted fake:
// TLS verified (POP3S and STLS), STLS refused when not offered, the logins,
// LIST/UIDL, RETR bytes equal to what IMAP serves, pipelining, DELE at QUIT.
#include <gtest/gtest.h>

#include <openssl/evp.h>

#include <fmt/format.h>

#include "common/error.h"
#include "pop3/session.h"
#include "tests/support/fake_pop3_server.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::FakePop3Message;
using testing::FakePop3Server;

std::string sha256_hex(std::string_view bytes) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_Digest(bytes.data(), bytes.size(), d, &n, EVP_sha256(), nullptr);
  std::string out;
  for (unsigned i = 0; i < n; ++i) out += fmt::format("{:02x}", d[i]);
  return out;
}

pop3::Credentials creds(std::string user, std::string secret, pop3::Mechanism m = pop3::Mechanism::user_pass,
                        std::string auth_user = "") {
  return {std::move(user), std::move(secret), m, std::move(auth_user)};
}

struct Collect final : pop3::RetrieveSink {
  std::vector<std::string> messages;
  std::vector<std::pair<size_t, std::string>> failures;
  void message(size_t i, std::string&& bytes) override {
    if (messages.size() <= i) messages.resize(i + 1);
    messages[i] = std::move(bytes);
  }
  void failed(size_t i, const std::string& text, bool) override { failures.emplace_back(i, text); }
};

class Pop3SessionTest : public testing::SharedServerTest {
 protected:
  static pop3::Endpoint endpoint(net::TlsMode tls = net::TlsMode::implicit) {
    pop3::Endpoint e;
    e.host = server_->host();
    e.port = tls == net::TlsMode::implicit ? server_->pop3s_port() : server_->pop3_port();
    e.tls = tls;
    e.ca_file = server_->ca_file();
    e.timeout = std::chrono::seconds(10);
    return e;
  }
  static pop3::Credentials alice() { return creds("alice", server_->password("alice")); }
};

TEST_F(Pop3SessionTest, ImplicitTlsListsAndRetrievesTheBytesImapServes) {
  ASSERT_NE(server_->pop3s_port(), 0) << "dovecot-pop3d is not installed (tools/setup)";
  auto s = pop3::Session::connect(endpoint());
  s->login(alice());
  EXPECT_TRUE(s->has_capability("UIDL"));
  EXPECT_TRUE(s->has_capability("PIPELINING"));
  auto drop = s->list();
  ASSERT_TRUE(drop.has_uidl);
  auto summary = server_->summary("alice");
  nlohmann::json inbox;
  for (auto& f : summary["folders"])
    if (f["name"] == "INBOX") inbox = f;
  ASSERT_EQ(drop.entries.size(), inbox["messages"].size());
  std::vector<uint32_t> numbers;
  for (auto& e : drop.entries) numbers.push_back(e.number);
  Collect got;
  s->retrieve(numbers, 1ull << 30, got);
  ASSERT_TRUE(got.failures.empty());
  ASSERT_EQ(got.messages.size(), numbers.size());
  for (size_t i = 0; i < numbers.size(); ++i) {
    EXPECT_EQ(sha256_hex(got.messages[i]), inbox["messages"][i]["sha256"].get<std::string>()) << "message " << i + 1;
    EXPECT_EQ(got.messages[i].size(), drop.entries[i].size);
  }
  s->quit();
  EXPECT_FALSE(s->alive());
}

TEST_F(Pop3SessionTest, StlsUpgradesAndVerifiesTheCertificate) {
  auto s = pop3::Session::connect(endpoint(net::TlsMode::starttls));
  s->login(alice());
  EXPECT_FALSE(s->list().entries.empty());
  s->quit();
}

TEST_F(Pop3SessionTest, UntrustedCertificateIsRefusedBeforeAnyCredential) {
  for (auto tls : {net::TlsMode::implicit, net::TlsMode::starttls}) {
    auto e = endpoint(tls);
    e.ca_file.clear();  // the system's CAs do not know the harness CA
    try {
      pop3::Session::connect(e);
      ADD_FAILURE() << "connected without a trusted certificate";
    } catch (const Error& err) {
      EXPECT_EQ(err.kind(), ErrorKind::tls) << err.what();
      EXPECT_NE(std::string(err.what()).find("certificate"), std::string::npos) << err.what();
    }
    // A host name the certificate does not name.
    e = endpoint(tls);
    e.host = "127.0.0.2";
    try {
      pop3::Session::connect(e);
      ADD_FAILURE() << "connected to a host the certificate does not name";
    } catch (const Error& err) {
      EXPECT_TRUE(err.kind() == ErrorKind::tls || err.kind() == ErrorKind::network) << err.what();
    }
  }
}

TEST_F(Pop3SessionTest, StarttlsOnTheImplicitTlsPortFailsWithinTheTimeout) {
  auto e = endpoint(net::TlsMode::starttls);
  e.port = server_->pop3s_port();
  e.timeout = std::chrono::seconds(3);
  auto started = std::chrono::steady_clock::now();
  try {
    pop3::Session::connect(e);
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_TRUE(err.kind() == ErrorKind::tls || err.kind() == ErrorKind::network) << err.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(8));
}

TEST_F(Pop3SessionTest, BadPasswordIsAnAuthError) {
  auto s = pop3::Session::connect(endpoint());
  try {
    s->login(creds("alice", "wrong-password"));
    ADD_FAILURE() << "logged in with a wrong password";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), ErrorKind::auth) << err.what();
    EXPECT_EQ(err.retry(), Retry::never);
    EXPECT_EQ(std::string(err.what()).find("wrong-password"), std::string::npos) << "the secret leaked";
  }
}

TEST_F(Pop3SessionTest, MasterUserAndSaslPlainWithAuthorizationIdentity) {
  {
    auto s = pop3::Session::connect(endpoint());
    s->login(creds("alice" + server_->master_separator() + server_->master_user(), server_->master_password()));
    EXPECT_FALSE(s->list().entries.empty());
    s->quit();
  }
  {
    auto s = pop3::Session::connect(endpoint());
    auto c = creds("alice", server_->master_password(), pop3::Mechanism::plain, server_->master_user());
    s->login(c);
    EXPECT_FALSE(s->list().entries.empty());
    s->quit();
  }
  {
    auto s = pop3::Session::connect(endpoint());
    auto c = creds("alice", server_->password("alice"), pop3::Mechanism::cram_md5);
    s->login(c);
    EXPECT_FALSE(s->list().entries.empty());
    s->quit();
  }
}

TEST_F(Pop3SessionTest, MechanismNotOfferedSendsNothing) {
  auto s = pop3::Session::connect(endpoint());
  try {
    s->login(creds("alice", "token", pop3::Mechanism::xoauth2));
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), ErrorKind::protocol) << err.what();
    EXPECT_NE(std::string(err.what()).find("XOAUTH2"), std::string::npos) << err.what();
  }
  // The session is still usable: nothing was sent.
  s->login(alice());
  s->quit();
}

// --- the scripted fake ---

TEST(Pop3FakeTest, StlsNotOfferedIsRefusedBeforeAnythingElse) {
  FakePop3Server fake;
  auto e = fake.endpoint();
  e.tls = net::TlsMode::starttls;
  try {
    pop3::Session::connect(e);
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), ErrorKind::protocol) << err.what();
    EXPECT_NE(std::string(err.what()).find("does not offer STLS"), std::string::npos) << err.what();
  }
  EXPECT_EQ(fake.commands(), std::vector<std::string>{"CAPA"});
  fake.set_capa(std::nullopt);  // an RFC 1939 server without CAPA
  try {
    pop3::Session::connect(e);
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("does not offer STLS"), std::string::npos) << err.what();
  }
}

TEST(Pop3FakeTest, ExactBytesDotStuffingNulAndBareLf) {
  FakePop3Server fake;
  std::string odd = std::string("Subject: odd\r\n\r\n.leading dot\r\n..two dots\r\nnul\0byte\r\nbare lf\nend", 64);
  std::string empty_body = "Subject: empty\r\n\r\n";
  fake.set_messages({{"u1", odd}, {"u2", empty_body}, {"u3", ".\r\n.\r\n"}});
  auto s = pop3::Session::connect(fake.endpoint());
  s->login(creds("alice", "secret"));
  auto drop = s->list();
  ASSERT_EQ(drop.entries.size(), 3u);
  Collect got;
  s->retrieve({1, 2, 3}, 1 << 20, got);
  ASSERT_EQ(got.messages.size(), 3u);
  EXPECT_EQ(got.messages[0], odd + "\r\n");  // the fake ends the last line with CRLF on the wire
  EXPECT_EQ(got.messages[1], empty_body);
  EXPECT_EQ(got.messages[2], ".\r\n.\r\n");
}

TEST(Pop3FakeTest, LargerThanTheLimitIsDroppedAndTheRestGoesOn) {
  FakePop3Server fake;
  fake.set_messages({{"a", std::string(5000, 'x') + "\r\n"}, {"b", "Subject: small\r\n\r\nhi\r\n"}});
  auto s = pop3::Session::connect(fake.endpoint());
  s->login(creds("alice", "secret"));
  s->list();
  Collect got;
  s->retrieve({1, 2, 1}, 1000, got);
  ASSERT_EQ(got.failures.size(), 2u);
  EXPECT_EQ(got.failures[0].first, 0u);
  EXPECT_EQ(got.messages.at(1), "Subject: small\r\n\r\nhi\r\n");
  EXPECT_TRUE(s->alive());
}

TEST(Pop3FakeTest, ApopPlainAndXoauth2) {
  FakePop3Server fake;
  fake.set_login("bob", "pw-123");
  for (auto m : {pop3::Mechanism::apop, pop3::Mechanism::plain, pop3::Mechanism::xoauth2}) {
    SCOPED_TRACE(pop3::to_string(m));
    auto s = pop3::Session::connect(fake.endpoint());
    try {
      s->login(creds("bob", "pw-123", m));
    } catch (const Error&) {
      for (auto& c : fake.commands()) ADD_FAILURE() << c;
      throw;
    }
    s->list();
    s->quit();
    auto bad = pop3::Session::connect(fake.endpoint());
    try {
      bad->login(creds("bob", "nope", m));
      ADD_FAILURE() << "no error";
    } catch (const Error& err) {
      EXPECT_EQ(err.kind(), ErrorKind::auth) << err.what();
    }
  }
  for (auto& c : fake.commands()) EXPECT_EQ(c.find("pw-123"), std::string::npos) << c;
}

TEST(Pop3FakeTest, WithoutUidlTheListingSaysSo) {
  FakePop3Server fake;
  fake.set_uidl(false);
  fake.set_messages({{"", "A: 1\r\n\r\nx\r\n"}, {"", "A: 2\r\n\r\ny\r\n"}});
  auto s = pop3::Session::connect(fake.endpoint());
  s->login(creds("alice", "secret"));
  auto drop = s->list();
  EXPECT_FALSE(drop.has_uidl);
  ASSERT_EQ(drop.entries.size(), 2u);
  EXPECT_EQ(drop.entries[0].uidl, "");
  EXPECT_TRUE(s->alive());
}

TEST(Pop3FakeTest, DeleTakesEffectOnlyAtQuit) {
  FakePop3Server fake;
  fake.set_messages({{"a", "A: 1\r\n\r\n"}, {"b", "B: 2\r\n\r\n"}});
  {
    auto s = pop3::Session::connect(fake.endpoint());
    s->login(creds("alice", "secret"));
    s->list();
    s->dele(1);
    s->close();  // dropped without QUIT
  }
  EXPECT_EQ(fake.messages().size(), 2u);
  auto s = pop3::Session::connect(fake.endpoint());
  s->login(creds("alice", "secret"));
  s->list();
  s->dele(1);
  s->quit();
  ASSERT_EQ(fake.messages().size(), 1u);
  EXPECT_EQ(fake.messages()[0].uidl, "b");
}

TEST(Pop3FakeTest, ConnectionDroppedInAMessageIsANetworkError) {
  FakePop3Server fake;
  fake.set_messages({{"a", std::string(3000, 'a') + "\r\n"}, {"b", "B: 2\r\n\r\n"}});
  fake.drop_during_retr(1, 100);
  auto s = pop3::Session::connect(fake.endpoint());
  s->login(creds("alice", "secret"));
  s->list();
  Collect got;
  try {
    s->retrieve({1, 2}, 1 << 20, got);
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), ErrorKind::network) << err.what();
    EXPECT_EQ(err.retry(), Retry::now);
  }
  EXPECT_TRUE(got.messages.empty());
  EXPECT_FALSE(s->alive());
}

}  // namespace
}  // namespace imapstage

namespace imapstage {
namespace {

pop3::Credentials fake_alice() { return {"alice", "secret", pop3::Mechanism::user_pass, ""}; }

TEST(Pop3HostileTest, EndlessListLineIsRefused) {
  FakePop3Server fake;
  fake.answer("LIST", "+OK\r\n1 " + std::string(200 * 1024, '9'));
  auto s = pop3::Session::connect(fake.endpoint());
  s->login(fake_alice());
  try {
    s->list();
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), ErrorKind::protocol) << err.what();
    EXPECT_NE(std::string(err.what()).find("longer than"), std::string::npos) << err.what();
  }
  EXPECT_FALSE(s->alive());
}

TEST(Pop3HostileTest, UidlForAMessageListDidNotShowIsRefused) {
  FakePop3Server fake;
  fake.set_messages({{"a", "A: 1\r\n\r\n"}});
  fake.answer("UIDL", "+OK\r\n1 a\r\n7 ghost\r\n.\r\n");
  auto s = pop3::Session::connect(fake.endpoint());
  s->login(fake_alice());
  EXPECT_THROW(s->list(), Error);
  EXPECT_FALSE(s->alive());
}

TEST(Pop3HostileTest, AnswerThatIsNeitherOkNorErrIsRefused) {
  FakePop3Server fake;
  fake.set_messages({{"a", "A: 1\r\n\r\n"}});
  fake.answer("RETR", "* 1 FETCH (garbage)\r\n");
  auto s = pop3::Session::connect(fake.endpoint());
  s->login(fake_alice());
  s->list();
  Collect got;
  try {
    s->retrieve({1}, 1 << 20, got);
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), ErrorKind::protocol) << err.what();
  }
}

TEST(Pop3HostileTest, EndlessGreetingIsCutAtOneMebibyte) {
  FakePop3Server fake;
  fake.answer("CAPA", "+OK\r\n" + std::string(3 << 20, 'x'));
  try {
    pop3::Session::connect(fake.endpoint());
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_EQ(err.kind(), ErrorKind::protocol) << err.what();
  }
}

}  // namespace
}  // namespace imapstage

namespace imapstage {
namespace {

TEST(Pop3Replay, ReaderFinishesOrNamesWhatStoppedIt) {
  std::string ok =
      "+OK\r\n1 31\r\n2 9\r\n.\r\n+OK\r\n1 a1\r\n2 b2\r\n.\r\n+OK\r\nSubject: x\r\n\r\n..dot\r\nbody\r\n.\r\n"
      "+OK\r\nA: b\r\n\r\n.\r\n";
  EXPECT_EQ(pop3::replay_responses(ok), "");
  EXPECT_NE(pop3::replay_responses(ok.substr(0, ok.size() - 3)).find("connection lost"), std::string::npos);
  EXPECT_NE(pop3::replay_responses("* OK imap\r\n").find("neither +OK nor -ERR"), std::string::npos);
  EXPECT_NE(pop3::replay_responses("+OK\r\n0 5\r\n.\r\n").find("unreadable"), std::string::npos);
}

}  // namespace
}  // namespace imapstage

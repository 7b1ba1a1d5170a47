// imap::Session against the harness Dovecot: TLS and host-name checks,
// logins, LIST, EXAMINE, streamed FETCH, CHANGEDSINCE, MULTIAPPEND with
// APPENDUID, and network failures (stall, drop). The server's view comes from
// the harness's own IMAP client.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include <cctype>

#include "archive-format/hash.h"
#include "common/error.h"
#include "imap/session.h"
#include "imap/utf7.h"
#include "tests/support/test_server.h"

namespace imapstage::imap {
namespace {

using testing::TestServer;

const bool sigpipe_ignored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

std::string hex_sha256(std::string_view bytes) { return archive::to_hex(archive::sha256(bytes)); }

int listen_on(const char* ip) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, ip, &a.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 8) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

uint16_t port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// Forwards connections made to BIND_IP:port() to 127.0.0.1:target; after
// `limit` bytes from the server it closes the connection.
class Forwarder {
 public:
  Forwarder(const char* bind_ip, uint16_t target, size_t limit = SIZE_MAX) : target_(target), limit_(limit) {
    fd_ = listen_on(bind_ip);
    if (fd_ >= 0) thread_ = std::thread([this] { run(); });
  }
  ~Forwarder() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  uint16_t port() const { return port_of(fd_); }

 private:
  void run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int client = accept(fd_, nullptr, nullptr);
      if (client < 0) continue;
      int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(target_);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) pump(client, server);
      close(server);
      close(client);
    }
  }
  void pump(int client, int server) {
    size_t from_server = 0;
    char buf[16384];
    while (!stop_) {
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (poll(p, 2, 50) <= 0) continue;
      if (p[0].revents) {
        ssize_t n = read(client, buf, sizeof buf);
        if (n <= 0 || send(server, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) return;
      }
      if (p[1].revents) {
        ssize_t n = read(server, buf, sizeof buf);
        if (n <= 0) return;
        size_t allowed = std::min<size_t>(static_cast<size_t>(n), limit_ - from_server);
        if (allowed > 0 && send(client, buf, allowed, MSG_NOSIGNAL) != static_cast<ssize_t>(allowed)) return;
        from_server += allowed;
        if (from_server >= limit_) return;
      }
    }
  }
  uint16_t target_;
  size_t limit_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class SessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.users = {"alice"};
    o.target_users = {"tgt", "tgt2"};
    server_ = new TestServer(o);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  static Endpoint endpoint(TlsMode tls = TlsMode::implicit) {
    Endpoint e;
    e.host = server_->host();
    e.tls = tls;
    e.port = tls == TlsMode::implicit ? server_->imaps_port() : server_->imap_port();
    e.ca_file = server_->ca_file();
    e.timeout = std::chrono::seconds(20);
    return e;
  }
  static Credentials creds(const std::string& user) {
    Credentials c;
    c.user = user;
    c.secret = server_->password(user);
    return c;
  }
  static std::unique_ptr<Session> open(const std::string& user, TlsMode tls = TlsMode::implicit) {
    auto s = Session::connect(endpoint(tls));
    s->login(creds(user));
    return s;
  }
  static const nlohmann::json& folder(const nlohmann::json& summary, const std::string& name) {
    for (auto& f : summary["folders"])
      if (f["name"] == name) return f;
    throw std::runtime_error("no folder " + name);
  }

  static TestServer* server_;
};

TestServer* SessionTest::server_ = nullptr;

template <typename F>
Error expect_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no Error thrown";
  return Error(ErrorKind::internal, "none");
}

TEST_F(SessionTest, ImplicitTlsWithTestCa) {
  auto s = open("alice");
  EXPECT_TRUE(s->has_capability("IMAP4rev1"));
  EXPECT_TRUE(s->has_capability("CONDSTORE"));  // refreshed after login
  EXPECT_TRUE(s->has_capability("MULTIAPPEND"));
  EXPECT_GT(s->append_limit(), 0u);
  EXPECT_EQ(s->endpoint().address(), server_->host() + ":" + std::to_string(server_->imaps_port()));
  s->logout();
  s->logout();  // safe twice
  auto e = expect_error([&] { s->list(); });
  EXPECT_EQ(e.kind(), ErrorKind::network);
  EXPECT_EQ(e.retry(), Retry::now);
}

TEST_F(SessionTest, UntrustedCertificateIsRefused) {
  Endpoint e = endpoint();
  e.ca_file.clear();  // the system's store does not know the test CA
  auto err = expect_error([&] { Session::connect(e); });
  EXPECT_EQ(err.kind(), ErrorKind::tls) << err.what();
  EXPECT_EQ(err.where().server, e.address());

  // A CA file that holds some other CA.
  testing::TempDir dir;
  std::string other = dir.path() + "/other.pem";
  ASSERT_EQ(std::system(("openssl req -x509 -newkey rsa:2048 -nodes -keyout " + dir.path() + "/k.pem -out " + other +
                         " -days 1 -subj /CN=other >/dev/null 2>&1")
                            .c_str()),
            0);
  e.ca_file = other;
  err = expect_error([&] { Session::connect(e); });
  EXPECT_EQ(err.kind(), ErrorKind::tls) << err.what();

  e.ca_file.clear();
  e.insecure = true;
  EXPECT_NO_THROW(Session::connect(e)->logout());
}

TEST_F(SessionTest, HostNameMustMatchCertificate) {
  // The test certificate names localhost and 127.0.0.1; 127.0.0.2 reaches the same server.
  Forwarder fwd("127.0.0.2", server_->imaps_port());
  if (!fwd.ok()) GTEST_SKIP() << "cannot bind 127.0.0.2";
  Endpoint e = endpoint();
  e.host = "127.0.0.2";
  e.port = fwd.port();
  auto err = expect_error([&] { Session::connect(e); });
  EXPECT_EQ(err.kind(), ErrorKind::tls);
  EXPECT_NE(err.message().find("127.0.0.2"), std::string::npos) << err.message();

  for (const char* name : {"localhost", "127.0.0.1"}) {
    Endpoint ok = endpoint();
    ok.host = name;
    auto s = Session::connect(ok);
    s->login(creds("alice"));
    s->logout();
  }
}

TEST_F(SessionTest, StartTlsAndCleartext) {
  auto s = open("alice", TlsMode::starttls);
  EXPECT_FALSE(s->has_capability("STARTTLS"));  // capabilities asked again after TLS
  EXPECT_EQ(s->examine("INBOX").exists, folder(server_->summary("alice", false), "INBOX")["exists"].get<uint32_t>());
  s->logout();
  auto plain = open("alice", TlsMode::none);
  EXPECT_FALSE(plain->list().empty());
  plain->logout();
}

TEST_F(SessionTest, WrongPasswordIsAuthErrorWithoutSecret) {
  auto s = Session::connect(endpoint());
  Credentials c = creds("alice");
  c.secret = "not-the-password-xyzzy";
  auto e = expect_error([&] { s->login(c); });
  EXPECT_EQ(e.kind(), ErrorKind::auth);
  EXPECT_EQ(e.retry(), Retry::never);
  EXPECT_EQ(e.message(), "authentication failed for alice at " + endpoint().address());
  EXPECT_EQ(std::string(e.what()).find("xyzzy"), std::string::npos);

  auto s2 = Session::connect(endpoint());
  c.mechanism = AuthMechanism::plain;
  e = expect_error([&] { s2->login(c); });
  EXPECT_EQ(e.kind(), ErrorKind::auth);
  EXPECT_EQ(std::string(e.what()).find("xyzzy"), std::string::npos);

  auto s3 = Session::connect(endpoint());
  c = creds("alice");
  c.mechanism = AuthMechanism::cram_md5;
  c.secret = "not-the-password-xyzzy";
  e = expect_error([&] { s3->login(c); });
  EXPECT_EQ(e.kind(), ErrorKind::auth);
  EXPECT_EQ(std::string(e.what()).find("xyzzy"), std::string::npos);

  s3 = Session::connect(endpoint());
  c = creds("alice");
  c.mechanism = AuthMechanism::xoauth2;  // not in the harness's auth_mechanisms: a configuration problem (exit 4)
  e = expect_error([&] { s3->login(c); });
  EXPECT_EQ(e.kind(), ErrorKind::protocol);
  EXPECT_NE(e.message().find("does not offer the authentication mechanism XOAUTH2"), std::string::npos);
  EXPECT_NE(e.message().find("XOAUTH2"), std::string::npos);
}

TEST_F(SessionTest, MasterUserAndSaslPlainAuthzid) {
  uint32_t inbox = folder(server_->summary("alice", false), "INBOX")["exists"];
  {
    auto s = Session::connect(endpoint());
    Credentials c;
    c.user = "alice" + server_->master_separator() + server_->master_user();
    c.secret = server_->master_password();
    s->login(c);
    EXPECT_EQ(s->examine("INBOX").exists, inbox);
    s->logout();
  }
  {
    auto s = Session::connect(endpoint());
    Credentials c;
    c.user = "alice";
    c.auth_user = server_->master_user();
    c.secret = server_->master_password();
    c.mechanism = AuthMechanism::plain;
    s->login(c);
    EXPECT_EQ(s->examine("INBOX").exists, inbox);
    s->logout();
  }
  {
    auto s = Session::connect(endpoint());
    Credentials c = creds("alice");
    c.mechanism = AuthMechanism::plain;
    s->login(c);
    EXPECT_EQ(s->examine("INBOX").exists, inbox);
  }
  {
    auto s = Session::connect(endpoint());
    Credentials c = creds("alice");
    c.mechanism = AuthMechanism::cram_md5;  // the password never crosses the wire
    s->login(c);
    EXPECT_EQ(s->examine("INBOX").exists, inbox);
  }
}

TEST_F(SessionTest, ListMatchesServer) {
  auto s = open("alice");
  auto listed = s->list();
  auto summary = server_->summary("alice", false);
  ASSERT_EQ(listed.size(), summary["folders"].size());
  for (size_t i = 0; i + 1 < listed.size(); ++i) EXPECT_LT(listed[i].name_raw, listed[i + 1].name_raw);
  std::map<std::string, const ListEntry*> by_name;
  for (auto& e : listed) by_name[e.name_utf8] = &e;
  for (auto& f : summary["folders"]) {
    std::string name = f["name"];
    ASSERT_TRUE(by_name.count(name)) << name;
    const ListEntry& e = *by_name[name];
    EXPECT_EQ(e.name_raw, f["raw"].get<std::string>());
    EXPECT_EQ(e.subscribed, f["subscribed"].get<bool>()) << name;
    // Attributes are case-insensitive (Dovecot says \UnMarked, libetpan's name is \Unmarked).
    auto lower = [](std::string a) {
      for (auto& c : a) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return a;
    };
    std::set<std::string> want, got;
    for (auto& a : e.attributes) got.insert(lower(a));
    for (auto& a : f["attributes"]) want.insert(lower(a.get<std::string>()));
    EXPECT_EQ(got, want) << name;
    EXPECT_EQ(e.delimiter, '/');
  }
  EXPECT_EQ(by_name.at("Sent")->special_use, "\\Sent");
  EXPECT_EQ(by_name.at("Drafts")->special_use, "\\Drafts");
  EXPECT_EQ(by_name.at("INBOX")->special_use, "");
  EXPECT_EQ(by_name.at("日本語")->name_raw, "&ZeVnLIqe-");
  EXPECT_EQ(by_name.at("Café & Co")->name_raw, utf7_encode("Café & Co"));
  EXPECT_FALSE(by_name.at("Café & Co")->subscribed);
  EXPECT_TRUE(by_name.at("Projekte/Übersicht")->subscribed);
  ASSERT_TRUE(by_name.count("Projects"));
  EXPECT_TRUE(by_name.at("Projects")->noselect);

  auto ns = s->personal_namespace();
  EXPECT_EQ(ns.prefix, "");
  EXPECT_EQ(ns.delimiter, '/');
}

TEST_F(SessionTest, ExamineAndFetchMatchHarness) {
  auto summary = server_->summary("alice", true);
  auto s = open("alice");
  for (std::string name : {"INBOX", "Projekte/Übersicht"}) {
    auto& f = folder(summary, name);
    auto info = s->examine(f["raw"].get<std::string>());
    EXPECT_EQ(info.exists, f["exists"].get<uint32_t>());
    EXPECT_EQ(info.uidvalidity, f["uidvalidity"].get<uint32_t>());
    EXPECT_EQ(info.uidnext, f["uidnext"].get<uint32_t>());
    EXPECT_EQ(info.highestmodseq, f["highestmodseq"].get<uint64_t>());
    EXPECT_TRUE(info.read_only);
    EXPECT_FALSE(info.permanent_flags.empty() && !info.read_only);

    std::map<uint32_t, const nlohmann::json*> want;
    for (auto& m : f["messages"]) want[m["uid"]] = &m;
    size_t seen = 0;
    uint32_t last_uid = 0;
    size_t largest = 0;
    s->fetch_messages({{1, 0}}, [&](FetchedMessage&& m) {
      ++seen;
      EXPECT_GT(m.uid, last_uid);
      last_uid = m.uid;
      ASSERT_TRUE(want.count(m.uid)) << m.uid;
      auto& w = *want[m.uid];
      EXPECT_EQ(hex_sha256(m.body), w["sha256"].get<std::string>()) << name << " UID " << m.uid;
      EXPECT_EQ(m.rfc822_size, w["size"].get<uint64_t>());
      EXPECT_EQ(m.body.size(), m.rfc822_size);
      EXPECT_EQ(m.internaldate, w["internaldate_unix"].get<int64_t>());
      EXPECT_EQ(m.modseq, w["modseq"].get<uint64_t>());
      std::set<std::string> flags(m.flags.begin(), m.flags.end()), wflags;
      for (auto& x : w["flags"]) wflags.insert(x.get<std::string>());
      EXPECT_EQ(flags, wflags) << "UID " << m.uid;
      largest = std::max(largest, m.body.size());
    });
    EXPECT_EQ(seen, want.size());
    if (name == "INBOX") {
      EXPECT_GT(largest, 3'000'000u);
    }  // the multi-MB message came whole, on its own
  }
  // Only the asked UIDs, and sizes agree.
  auto& inbox = folder(summary, "INBOX");
  s->examine("INBOX");
  uint32_t second = inbox["messages"][1]["uid"];
  std::vector<uint32_t> got;
  s->fetch_sizes({{second, second}}, [&](uint32_t uid, uint64_t size) {
    got.push_back(uid);
    EXPECT_EQ(size, inbox["messages"][1]["size"].get<uint64_t>());
  });
  EXPECT_EQ(got, std::vector<uint32_t>{second});
  auto one = s->fetch_one(second);
  ASSERT_TRUE(one);
  EXPECT_EQ(hex_sha256(one->body), inbox["messages"][1]["sha256"].get<std::string>());
  EXPECT_FALSE(s->fetch_one(inbox["uidnext"].get<uint32_t>() + 100));

  auto uids = s->search_all_uids();
  ASSERT_EQ(uids.size(), inbox["messages"].size());
  for (size_t i = 0; i < uids.size(); ++i) EXPECT_EQ(uids[i], inbox["messages"][i]["uid"].get<uint32_t>());
  std::string mid = inbox["messages"][3]["message_id"];
  auto found = s->search_message_id(mid);
  EXPECT_NE(std::find(found.begin(), found.end(), inbox["messages"][3]["uid"].get<uint32_t>()), found.end());

  auto st = s->status("Sent");
  auto& sent = folder(summary, "Sent");
  EXPECT_EQ(st.messages, sent["exists"].get<uint32_t>());
  EXPECT_EQ(st.uidnext, sent["uidnext"].get<uint32_t>());
  EXPECT_EQ(st.uidvalidity, sent["uidvalidity"].get<uint32_t>());
  EXPECT_EQ(st.highestmodseq, sent["highestmodseq"].get<uint64_t>());

  auto e = expect_error([&] { s->examine("No such folder"); });
  EXPECT_EQ(e.kind(), ErrorKind::protocol);
  EXPECT_EQ(e.retry(), Retry::never);
  EXPECT_EQ(e.where().folder, "No such folder");
  EXPECT_NO_THROW(s->examine("INBOX"));  // the session is still usable
}

TEST_F(SessionTest, FetchFlagsChangedSince) {
  auto s = open("alice");
  auto before = s->examine("Archive");
  ASSERT_GT(before.highestmodseq, 0u);
  size_t all = 0;
  s->fetch_flags({{1, 0}}, std::nullopt, [&](FlagUpdate&&) { ++all; });
  EXPECT_EQ(all, before.exists);
  auto summary = server_->summary("alice", false);
  uint32_t uid = folder(summary, "Archive")["messages"][2]["uid"];
  server_->store("alice", "Archive", uid, "+FLAGS", "$Changed");
  s->examine("Archive");
  std::vector<FlagUpdate> changed;
  s->fetch_flags({{1, 0}}, before.highestmodseq, [&](FlagUpdate&& u) { changed.push_back(std::move(u)); });
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_EQ(changed[0].uid, uid);
  EXPECT_GT(changed[0].modseq, before.highestmodseq);
  EXPECT_NE(std::find(changed[0].flags.begin(), changed[0].flags.end(), "$Changed"), changed[0].flags.end());
}

TEST_F(SessionTest, MultiAppendExactBytes) {
  auto s = open("tgt");
  ASSERT_TRUE(s->has_capability("LITERAL+"));
  s->create("Dest");
  s->subscribe("Dest");
  auto info = s->select("Dest");
  std::vector<std::string> bodies = {
      "From: a@example.test\r\nSubject: one\r\nMessage-ID: <one@x>\r\n\r\nbody one\r\n",
      "From: b@example.test\r\nSubject: two\r\n\r\n" + std::string(200'000, 'x') + "\r\n",
      "From: c@example.test\r\nSubject: bare LF\r\n\r\nline\nline\n",
  };
  std::vector<AppendItem> items;
  items.push_back({{"\\Seen", "$Label1"}, 837596665, -420, bodies[0]});
  items.push_back({{}, 0, 0, bodies[1]});
  items.push_back({{"\\Flagged"}, 1700000000, 60, bodies[2]});
  auto results = s->append("Dest", items);
  ASSERT_EQ(results.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(results[i].ok) << results[i].error;
    EXPECT_EQ(results[i].uidvalidity, info.uidvalidity);
    EXPECT_EQ(results[i].uid, info.uidnext + i);
  }
  auto summary = server_->summary("tgt");
  auto& dest = folder(summary, "Dest");
  EXPECT_TRUE(dest["subscribed"].get<bool>());
  ASSERT_EQ(dest["messages"].size(), 3u);
  auto& m0 = dest["messages"][0];
  EXPECT_EQ(m0["sha256"].get<std::string>(), hex_sha256(bodies[0]));
  EXPECT_EQ(m0["internaldate_unix"].get<int64_t>(), 837596665);
  std::set<std::string> f0;
  for (auto& f : m0["flags"]) f0.insert(f.get<std::string>());
  EXPECT_EQ(f0, (std::set<std::string>{"\\Seen", "$Label1"}));
  EXPECT_EQ(dest["messages"][1]["sha256"].get<std::string>(), hex_sha256(bodies[1]));
  // What we fetch back is what the harness sees (Dovecot may turn bare LF into CRLF).
  auto back = s->fetch_one(results[2].uid);
  ASSERT_TRUE(back);
  EXPECT_EQ(hex_sha256(back->body), dest["messages"][2]["sha256"].get<std::string>());
  EXPECT_EQ(back->internaldate, 1700000000);

  s->store_flags(results[1].uid, {"\\Answered", "Custom"});
  std::vector<std::string> flags;
  s->fetch_flags({{results[1].uid, results[1].uid}}, std::nullopt, [&](FlagUpdate&& u) { flags = u.flags; });
  EXPECT_EQ(std::set<std::string>(flags.begin(), flags.end()), (std::set<std::string>{"\\Answered", "Custom"}));

  // A flag that is not an atom is refused before anything is sent.
  auto bad = expect_error([&] { s->append("Dest", {{{"bad flag"}, 0, 0, bodies[0]}}); });
  EXPECT_EQ(bad.kind(), ErrorKind::protocol);

  // A missing folder: NO [TRYCREATE], one result per item. Dovecot may say
  // so before the messages have gone out; then the connection is closed
  // (message bytes must never be read as commands) and a new one goes on.
  auto missing = s->append("Missing", {items[0], items[1]});
  ASSERT_EQ(missing.size(), 2u);
  EXPECT_FALSE(missing[0].ok);
  EXPECT_TRUE(missing[0].trycreate) << missing[0].error;
  if (!s->alive()) s = open("tgt");
  EXPECT_NO_THROW(s->select("Dest"));
  auto single = s->append("Dest", {items[0]});
  ASSERT_EQ(single.size(), 1u);
  EXPECT_TRUE(single[0].ok);
  EXPECT_EQ(single[0].uid, info.uidnext + 3);
}

TEST_F(SessionTest, AppendTooBig) {
  // The harness enforces an APPENDLIMIT (64 MiB by default); a smaller server is not needed:
  // check that the limit is announced and parsed.
  auto s = open("tgt2");
  EXPECT_EQ(s->append_limit(), 64u * 1024 * 1024);
}

TEST_F(SessionTest, StalledServerTimesOut) {
  int fd = listen_on("127.0.0.1");  // accepts (in the kernel) and never answers
  ASSERT_GE(fd, 0);
  for (TlsMode mode : {TlsMode::none, TlsMode::implicit}) {
    Endpoint e;
    e.host = "127.0.0.1";
    e.port = port_of(fd);
    e.tls = mode;
    e.timeout = std::chrono::seconds(1);
    auto start = std::chrono::steady_clock::now();
    auto err = expect_error([&] { Session::connect(e); });
    auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(err.kind(), ErrorKind::network) << err.what();
    EXPECT_EQ(err.retry(), Retry::now);
    EXPECT_LT(took, std::chrono::seconds(5));
  }
  close(fd);
}

TEST_F(SessionTest, DroppedConnectionMidFetchIsRetryableNetworkError) {
  for (TlsMode mode : {TlsMode::none, TlsMode::implicit}) {
    uint16_t target = mode == TlsMode::implicit ? server_->imaps_port() : server_->imap_port();
    Forwarder fwd("127.0.0.1", target, 600'000);  // enough to log in, not for all of INBOX
    Endpoint e = endpoint(mode);
    e.port = fwd.port();
    e.timeout = std::chrono::seconds(10);
    auto s = Session::connect(e);
    s->login(creds("alice"));
    s->examine("INBOX");
    size_t got = 0;
    auto start = std::chrono::steady_clock::now();
    auto err = expect_error([&] { s->fetch_messages({{1, 0}}, [&](FetchedMessage&&) { ++got; }); });
    EXPECT_EQ(err.kind(), ErrorKind::network) << err.what();
    EXPECT_EQ(err.retry(), Retry::now);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(8));
    auto again = expect_error([&] { s->list(); });
    EXPECT_EQ(again.retry(), Retry::now);
    s->logout();  // dead session: closes without waiting
  }
}

TEST_F(SessionTest, CallbackExceptionPropagates) {
  auto s = open("alice");
  s->examine("INBOX");
  int calls = 0;
  EXPECT_THROW(s->fetch_messages({{1, 0}}, [&](FetchedMessage&&) {
    if (++calls == 2) throw std::runtime_error("stop");
  }), std::runtime_error);
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace imapstage::imap

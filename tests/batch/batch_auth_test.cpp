// The ways to log in, through the binary and imap::Session: CRAM-MD5 against
// the harness Dovecot (and a wrong password reported per account, naming the
// account and the mechanism), XOAUTH2 against a scripted server (the SASL
// string it sends, a refused token that never shows up in an error, a batch
// with a token file), and an admin-plain authorization the server refuses.
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "common/error.h"
#include "common/token_command.h"
#include "imap/session.h"
#include "tests/support/fake_imap_server.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::FakeExchange;
using testing::FakeImapServer;
using testing::TempDir;
using testing::TestServer;

const bool sigpipe_ignored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

std::string write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return path;
}

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> events;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) events.push_back(nlohmann::json::parse(line));
  return events;
}

// account -> its account_error / account_done event
std::map<std::string, nlohmann::json> by_account(const std::vector<nlohmann::json>& events, const std::string& name) {
  std::map<std::string, nlohmann::json> out;
  for (auto& e : events)
    if (e.value("event", "") == name) out[e.value("account", "")] = e;
  return out;
}

size_t archived_messages(const std::string& archive_dir, const std::string& account) {
  auto a = Archive::open(archive_dir, Archive::Mode::read);
  auto acc = a->find_account(account);
  if (!acc) return 0;
  size_t n = 0;
  for (auto& f : a->folders(acc->id))
    a->for_each_message(acc->id, f.id, std::nullopt, [&](const archive::MessageRecord&) {
      ++n;
      return true;
    });
  return n;
}

const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view in) {
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = uint8_t(in[i]) << 16 | uint8_t(in[i + 1]) << 8 | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kB64[(v >> s) & 63]);
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16 | uint8_t(in[i + 1]) << 8;
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], kB64[(v >> 6) & 63], '='};
  }
  return out;
}

// Strict: returns "\xff<invalid>" for anything that is not canonical base64.
std::string base64_decode(std::string_view in) {
  if (in.size() % 4) return "\xff<invalid>";
  std::string out;
  for (size_t i = 0; i < in.size(); i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = in[i + k];
      const char* p = c ? std::strchr(kB64, c) : nullptr;
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        ++pad;
        v <<= 6;
      } else if (p && !pad) {
        v = v << 6 | uint32_t(p - kB64);
      } else {
        return "\xff<invalid>";
      }
    }
    out.push_back(char(v >> 16));
    if (pad < 2) out.push_back(char(v >> 8 & 0xff));
    if (pad < 1) out.push_back(char(v & 0xff));
  }
  return out;
}

// Scripts XOAUTH2 on a fake server. The initial response comes inline
// (SASL-IR) or after an empty continuation; it is answered OK when it decodes
// to exactly "user=U\1auth=Bearer TOKEN\1\1" for `token`, otherwise the way
// Gmail does it: a continuation with a JSON error, then NO once the client has
// sent its empty response.
struct XOAuth2Script {
  struct Pending {
    std::string tag;
    bool wants_response = false;  // true: the initial response is due; false: the empty line after the error
  };
  std::mutex mutex;
  std::vector<std::string> decoded;        // every initial response, decoded
  std::map<size_t, Pending> pending;       // by connection
  int refused = 0;
  std::string accepted;                    // when set, the token accepted instead of install()'s

  // Called with the lock held.
  void answer(FakeExchange& x, const std::string& tag, const std::string& ir, const std::string& token) {
    std::string text = base64_decode(ir);
    decoded.push_back(text);
    std::string user;
    if (text.rfind("user=", 0) == 0) user = text.substr(5, text.find('\x01') - 5);
    const std::string& good = accepted.empty() ? token : accepted;
    if (!user.empty() && text == "user=" + user + "\x01" + "auth=Bearer " + good + "\x01\x01") {
      x.send(tag + " OK Thats all she wrote!\r\n");
      return;
    }
    ++refused;
    pending[x.command().connection] = {tag, false};
    x.send("+ " + base64_encode(R"({"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"})") + "\r\n");
  }

  void install(FakeImapServer& server, const std::string& token) {
    server.set_capabilities("IMAP4rev1 LITERAL+ SASL-IR AUTH=XOAUTH2 UIDPLUS NAMESPACE");
    server.on("^AUTHENTICATE XOAUTH2 ", [this, token](FakeExchange& x) {
      std::lock_guard lock(mutex);
      answer(x, x.tag(), x.command().text.substr(std::strlen("AUTHENTICATE XOAUTH2 ")), token);
    });
    server.on("^AUTHENTICATE XOAUTH2$", [this](FakeExchange& x) {
      std::lock_guard lock(mutex);
      pending[x.command().connection] = {x.tag(), true};
      x.send("+ \r\n");
    });
    // A line without a space: the client's response to a continuation (read as a bare tag).
    server.on("^$", [this, token](FakeExchange& x) {
      std::lock_guard lock(mutex);
      auto it = pending.find(x.command().connection);
      if (it == pending.end()) {
        x.send("* BAD empty command\r\n");
        return;
      }
      Pending p = it->second;
      pending.erase(it);
      if (p.wants_response) answer(x, p.tag, x.tag(), token);
      else x.send(p.tag + " NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n");
    });
  }
};

imap::Endpoint fake_endpoint(const FakeImapServer& server) {
  imap::Endpoint e;
  e.host = server.host();
  e.port = server.port();
  e.tls = imap::TlsMode::none;
  e.timeout = std::chrono::seconds(10);
  return e;
}

class BatchAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.seed = "none";
    o.users = {"cram1", "cram2", "alice", "bob"};
    server_ = new TestServer(o);
    for (std::string u : {"cram1", "bob"})
      server_->append(u, "INBOX", "From: x@example.org\r\nSubject: for " + u + "\r\nMessage-ID: <" + u +
                                      "@auth.test>\r\n\r\nHello " + u + "\r\n", "\\Seen");
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  static std::vector<std::string> harness(std::vector<std::string> args) {
    std::vector<std::string> server = {"--host", server_->host(), "--port", std::to_string(server_->imaps_port()),
                                       "--ca-file", server_->ca_file()};
    args.insert(args.end(), server.begin(), server.end());
    return args;
  }

  static TestServer* server_;
};

TestServer* BatchAuthTest::server_ = nullptr;

TEST_F(BatchAuthTest, CramMd5LogsInAndAWrongPasswordIsReportedPerAccount) {
  TempDir dir;
  const std::string host = "@" + server_->host();

  // One account.
  auto one = testing::run_imapstage(harness({"export", "--archive", dir.path() + "/one", "--user", "cram1",
                                             "--password-file", server_->password_file("cram1"), "--auth", "cram-md5",
                                             "--json"}));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(archived_messages(dir.path() + "/one", "cram1" + host), 1u);

  // A wrong password for one account alone: exit 3, the account and the mechanism named.
  std::string wrong = write(dir.path() + "/wrong.secret", "Not-The-Password-77\n");
  auto refused = testing::run_imapstage(harness({"export", "--archive", dir.path() + "/refused", "--user", "cram2",
                                                 "--password-file", wrong, "--auth", "cram-md5"}));
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("cram2"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("cram-md5"), std::string::npos) << refused.err;
  EXPECT_EQ(refused.err.find("Not-The-Password-77"), std::string::npos);

  // A batch: cram1 with its password, cram2 with a wrong one.
  std::string accounts = write(dir.path() + "/accounts.txt", "cram1;" + server_->password("cram1") +
                                                                 "\ncram2;Not-The-Password-77\n");
  auto batch = testing::run_imapstage(harness({"export", "--archive", dir.path() + "/batch", "--accounts", accounts,
                                               "--auth", "cram-md5", "--jobs", "2", "--max-load", "0", "--json"}));
  EXPECT_EQ(batch.exit_code, 1) << batch.err;
  auto events = json_lines(batch.out);
  auto done = by_account(events, "account_done");
  auto errors = by_account(events, "account_error");
  EXPECT_TRUE(done.count("cram1" + host)) << batch.out;
  ASSERT_TRUE(errors.count("cram2" + host)) << batch.out;
  std::string error = errors["cram2" + host]["error"];
  EXPECT_EQ(errors["cram2" + host]["error_kind"], "auth");
  EXPECT_EQ(errors["cram2" + host]["line"], 2);
  EXPECT_NE(error.find("cram2"), std::string::npos) << error;
  EXPECT_NE(error.find("cram-md5"), std::string::npos) << error;
  EXPECT_NE(batch.err.find("cram2" + host + " (line 2)"), std::string::npos) << batch.err;
  EXPECT_EQ(archived_messages(dir.path() + "/batch", "cram1" + host), 1u);
  for (auto* text : {&batch.out, &batch.err}) {
    EXPECT_EQ(text->find("Not-The-Password-77"), std::string::npos);
    EXPECT_EQ(text->find(server_->password("cram1")), std::string::npos);
  }
}

TEST_F(BatchAuthTest, AdminPlainAuthorizationRefusedIsReportedPerAccount) {
  // alice is no master user: SASL PLAIN as alice may act for alice, not for bob.
  TempDir dir;
  const std::string host = "@" + server_->host();
  std::string accounts = write(dir.path() + "/accounts.csv", "alice\nbob\n");
  auto r = testing::run_imapstage(harness({"export", "--archive", dir.path() + "/archive", "--accounts", accounts,
                                           "--auth-mode", "admin-plain", "--auth-user", "alice", "--password-file",
                                           server_->password_file("alice"), "--max-load", "0", "--json"}));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto events = json_lines(r.out);
  auto done = by_account(events, "account_done");
  auto errors = by_account(events, "account_error");
  EXPECT_TRUE(done.count("alice" + host)) << r.out;
  ASSERT_TRUE(errors.count("bob" + host)) << r.out;
  std::string error = errors["bob" + host]["error"];
  EXPECT_EQ(errors["bob" + host]["error_kind"], "auth");
  EXPECT_NE(error.find("bob"), std::string::npos) << error;
  EXPECT_NE(error.find("admin-plain"), std::string::npos) << error;
  EXPECT_NE(error.find("PLAIN"), std::string::npos) << error;
  EXPECT_NE(error.find("alice"), std::string::npos) << error;  // who tried to act for bob
  EXPECT_EQ(archived_messages(dir.path() + "/archive", "bob" + host), 0u);
  for (auto* text : {&r.out, &r.err}) EXPECT_EQ(text->find(server_->password("alice")), std::string::npos);

  auto status = testing::run_imapstage({"status", "--archive", dir.path() + "/archive"});
  EXPECT_EQ(status.exit_code, 1);
  EXPECT_NE(status.out.find("admin-plain"), std::string::npos) << status.out;
}

TEST(XOAuth2Test, SessionSendsTheBearerStringAndNeverShowsTheToken) {
  const std::string token = "ya29.Secret-Access-Token_0123456789";
  FakeImapServer server;
  XOAuth2Script script;
  script.install(server, token);

  {
    auto s = imap::Session::connect(fake_endpoint(server));
    imap::Credentials c;
    c.user = "oauser@example.com";
    c.secret = token;
    c.mechanism = imap::AuthMechanism::xoauth2;
    s->login(c);
    auto folders = s->list();  // authenticated: the session works
    ASSERT_FALSE(folders.empty());
    EXPECT_EQ(folders[0].name_raw, "INBOX");
  }
  {
    std::lock_guard lock(script.mutex);
    ASSERT_EQ(script.decoded.size(), 1u);
    EXPECT_EQ(script.decoded[0], "user=oauser@example.com\x01" "auth=Bearer " + token + "\x01\x01");
    EXPECT_EQ(script.refused, 0);
  }

  // A token the server refuses: an auth Error naming the user, without the token in any form.
  const std::string stale = "ya29.Stale-Token_9876543210";
  auto s = imap::Session::connect(fake_endpoint(server));
  imap::Credentials c;
  c.user = "oauser@example.com";
  c.secret = stale;
  c.mechanism = imap::AuthMechanism::xoauth2;
  try {
    s->login(c);
    FAIL() << "a refused token logged in";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::auth);
    EXPECT_EQ(e.retry(), Retry::never);
    std::string text = e.what();
    EXPECT_NE(text.find("oauser@example.com"), std::string::npos) << text;
    EXPECT_EQ(text.find(stale), std::string::npos) << text;
    EXPECT_EQ(text.find("Stale-Token"), std::string::npos) << text;
    std::string ir = base64_encode("user=oauser@example.com\x01" "auth=Bearer " + stale + "\x01\x01");
    EXPECT_EQ(text.find(ir), std::string::npos) << text;
  }
  std::lock_guard lock(script.mutex);
  EXPECT_EQ(script.refused, 1);
  EXPECT_TRUE(script.pending.empty()) << "the client never answered the error continuation";
}

TEST(XOAuth2Test, AServerWithoutXOAuth2IsRefusedBeforeTheTokenIsSent) {
  FakeImapServer server;
  server.set_capabilities("IMAP4rev1 LITERAL+ AUTH=PLAIN");
  auto s = imap::Session::connect(fake_endpoint(server));
  imap::Credentials c;
  c.user = "oauser@example.com";
  c.secret = "ya29.never-sent";
  c.mechanism = imap::AuthMechanism::xoauth2;
  try {
    s->login(c);
    FAIL() << "logged in without XOAUTH2";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << "a missing mechanism is not refused credentials";
    EXPECT_NE(std::string(e.what()).find("XOAUTH2"), std::string::npos) << e.what();
  }
  for (auto& cmd : server.commands()) EXPECT_EQ(cmd.text.find("AUTHENTICATE"), std::string::npos) << cmd.text;
}

TEST(XOAuth2Test, BatchWithATokenFile) {
  const std::string token = "ya29.Batch-Token_abcdef";
  FakeImapServer server;
  XOAuth2Script script;
  script.install(server, token);
  server.add_message("INBOX", "From: x@example.org\r\nSubject: oauth\r\nMessage-ID: <o@fake>\r\n\r\nhello\r\n",
                     {"\\Seen"});
  TempDir dir;
  std::string token_file = write(dir.path() + "/token", token + "\n");
  // oauser takes the token file; bad gives its own (stale) token in the list.
  std::string accounts = write(dir.path() + "/accounts.txt", "oauser@example.com\nbad@example.com;ya29.Stale_555\n");
  std::string archive_dir = dir.path() + "/archive";
  auto r = testing::run_imapstage({"export", "--archive", archive_dir, "--accounts", accounts, "--host", server.host(),
                                   "--port", std::to_string(server.port()), "--tls", "none", "--auth", "xoauth2",
                                   "--password-file", token_file, "--jobs", "1", "--max-load", "0", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.err << r.out;
  auto events = json_lines(r.out);
  auto done = by_account(events, "account_done");
  auto errors = by_account(events, "account_error");
  const std::string host = "@" + server.host();
  EXPECT_TRUE(done.count("oauser@example.com" + host)) << r.out;
  EXPECT_EQ(archived_messages(archive_dir, "oauser@example.com" + host), 1u);
  ASSERT_TRUE(errors.count("bad@example.com" + host)) << r.out;
  std::string error = errors["bad@example.com" + host]["error"];
  EXPECT_EQ(errors["bad@example.com" + host]["error_kind"], "auth");
  EXPECT_NE(error.find("bad@example.com"), std::string::npos) << error;
  EXPECT_NE(error.find("xoauth2"), std::string::npos) << error;
  for (auto* text : {&r.out, &r.err}) {
    EXPECT_EQ(text->find("Batch-Token"), std::string::npos);
    EXPECT_EQ(text->find("Stale_555"), std::string::npos);
  }
  {
    std::lock_guard lock(script.mutex);
    EXPECT_EQ(script.refused, 1);
    bool good_sent = false;
    for (auto& d : script.decoded)
      if (d == "user=oauser@example.com\x01" "auth=Bearer " + token + "\x01\x01") good_sent = true;
    EXPECT_TRUE(good_sent);
  }
  auto state = nlohmann::json::parse([&] {
    std::ifstream in(std::filesystem::path(archive_dir) / "batches" / "export.json");
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }());
  EXPECT_EQ(state.dump().find("Batch-Token"), std::string::npos);
  EXPECT_EQ(state.dump().find("Stale_555"), std::string::npos);
}

// A token command whose runs are numbered: run N prints the good token when
// N is in `good_runs` (a shell case pattern), a stale one otherwise; every
// run appends $IMAPSTAGE_USER to `log`.
std::string numbered_token_command(const std::string& dir, const std::string& good_token,
                                   const std::string& good_runs) {
  return fmt::format("n=$(( $(cat {0}/runs 2>/dev/null || echo 0) + 1 )); echo $n > {0}/runs; "
                     "echo \"$IMAPSTAGE_USER\" >> {0}/log; "
                     "case $n in {2}) echo {1} ;; *) echo ya29.Stale-Run-$n ;; esac",
                     dir, good_token, good_runs);
}

TEST(XOAuth2Test, ARefusedTokenIsRenewedOnceThenTheLoginFails) {
  const std::string token = "ya29.Fresh-Token_424242";
  FakeImapServer server;
  XOAuth2Script script;
  script.install(server, token);
  TempDir dir;

  // The first token is stale (expired): the command runs again and the new one logs in.
  {
    auto source = std::make_shared<CommandTokenSource>(numbered_token_command(dir.path(), token, "2"),
                                                       "oauser@example.com");
    auto s = imap::Session::connect(fake_endpoint(server));
    imap::Credentials c;
    c.user = "oauser@example.com";
    c.mechanism = imap::AuthMechanism::xoauth2;
    c.tokens = source;
    s->login(c);
    EXPECT_FALSE(s->list().empty());
    EXPECT_EQ(source->fetches(), 2);
    std::lock_guard lock(script.mutex);
    EXPECT_EQ(script.refused, 1);
  }

  // Every token is refused: one renewal, then an auth error that says so (no loop).
  std::filesystem::remove(dir.path() + "/runs");
  auto source = std::make_shared<CommandTokenSource>(numbered_token_command(dir.path(), token, "0"),
                                                     "oauser@example.com");
  auto s = imap::Session::connect(fake_endpoint(server));
  imap::Credentials c;
  c.user = "oauser@example.com";
  c.mechanism = imap::AuthMechanism::xoauth2;
  c.tokens = source;
  try {
    s->login(c);
    FAIL() << "a refused token logged in";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::auth);
    EXPECT_EQ(e.retry(), Retry::never);
    std::string text = e.what();
    EXPECT_NE(text.find("oauser@example.com"), std::string::npos) << text;
    EXPECT_NE(text.find("new token was refused too"), std::string::npos) << text;
    EXPECT_EQ(text.find("Stale-Run"), std::string::npos) << text;
  }
  EXPECT_EQ(source->fetches(), 2);
  std::lock_guard lock(script.mutex);
  EXPECT_EQ(script.refused, 3);
}

TEST(XOAuth2Test, BatchWithATokenCommand) {
  const std::string token = "ya29.Command-Token_777";
  FakeImapServer server;
  XOAuth2Script script;
  script.install(server, token);
  server.add_message("INBOX", "From: x@example.org\r\nSubject: oauth\r\nMessage-ID: <c@fake>\r\n\r\nhello\r\n",
                     {"\\Seen"});
  TempDir dir;
  // Run 1 (oauser) is good; bad@ gets runs 2 and 3, both stale.
  std::string accounts = write(dir.path() + "/accounts.txt", "oauser@example.com\nbad@example.com\n");
  std::string archive_dir = dir.path() + "/archive";
  auto r = testing::run_imapstage({"export", "--archive", archive_dir, "--accounts", accounts, "--host", server.host(),
                                   "--port", std::to_string(server.port()), "--tls", "none", "--oauth2-token-cmd",
                                   numbered_token_command(dir.path(), token, "1"), "--jobs", "1", "--max-load", "0",
                                   "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.err << r.out;
  auto events = json_lines(r.out);
  auto done = by_account(events, "account_done");
  auto errors = by_account(events, "account_error");
  const std::string host = "@" + server.host();
  EXPECT_TRUE(done.count("oauser@example.com" + host)) << r.out;
  EXPECT_EQ(archived_messages(archive_dir, "oauser@example.com" + host), 1u);
  ASSERT_TRUE(errors.count("bad@example.com" + host)) << r.out;
  std::string error = errors["bad@example.com" + host]["error"];
  EXPECT_EQ(errors["bad@example.com" + host]["error_kind"], "auth");
  EXPECT_NE(error.find("refused too"), std::string::npos) << error;
  std::ifstream log(dir.path() + "/log");
  std::string users((std::istreambuf_iterator<char>(log)), {});
  EXPECT_EQ(users, "oauser@example.com\nbad@example.com\nbad@example.com\n");
  for (auto* text : {&r.out, &r.err}) {
    EXPECT_EQ(text->find("Command-Token"), std::string::npos);
    EXPECT_EQ(text->find("Stale-Run"), std::string::npos);
  }
}

TEST(XOAuth2Test, ACommandRefusedWithExpiredReconnectsWithANewToken) {
  FakeImapServer server;
  XOAuth2Script script;
  script.install(server, "ya29.Run-1");
  for (int i = 1; i <= 3; ++i)
    server.add_message("INBOX", fmt::format("From: x@example.org\r\nSubject: m{}\r\nMessage-ID: <e{}@fake>\r\n\r\nhi\r\n",
                                            i, i),
                       {"\\Seen"});
  // The token expires while the account is exported: the first UID FETCH is
  // refused with RFC 5530's EXPIRED, and from then on only the next token logs in.
  server.on("^UID FETCH", [&script](FakeExchange& x) {
    {
      std::lock_guard lock(script.mutex);
      script.accepted = "ya29.Run-2";
    }
    x.tagged("NO [EXPIRED] Access token expired");
  }, 1);
  TempDir dir;
  std::string command = fmt::format("n=$(( $(cat {0}/runs 2>/dev/null || echo 0) + 1 )); echo $n > {0}/runs; "
                                    "echo ya29.Run-$n",
                                    dir.path());
  std::string archive_dir = dir.path() + "/archive";
  auto r = testing::run_imapstage({"export", "--archive", archive_dir, "--host", server.host(), "--port",
                                   std::to_string(server.port()), "--tls", "none", "--user", "oauser@example.com",
                                   "--oauth2-token-cmd", command, "--connections", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(archived_messages(archive_dir, "oauser@example.com@" + server.host()), 3u);
  std::ifstream runs(dir.path() + "/runs");
  int n = 0;
  runs >> n;
  EXPECT_EQ(n, 2);
  size_t reconnects = 0;
  for (auto& e : json_lines(r.out))
    if (e.value("event", "") == "reconnect") ++reconnects;
  EXPECT_EQ(reconnects, 1u) << r.out;
  std::lock_guard lock(script.mutex);
  EXPECT_EQ(script.refused, 1);  // the expired token at the new login, then the new one
  EXPECT_EQ(r.out.find("ya29.Run"), std::string::npos);
  EXPECT_EQ(r.err.find("ya29.Run"), std::string::npos);
}

}  // namespace
}  // namespace imapstage

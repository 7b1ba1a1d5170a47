// Connector profiles: TOML parsing, errors with line numbers, domain routing
// and the logins of every auth mode.
#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

#include "batch/profiles.h"
#include "common/error.h"
#include "tests/support/test_server.h"

namespace imapstage::batch {
namespace {

const char* kConfig = R"(
[profiles.old]
host = "imap.old.example"
port = 1993
tls = "starttls"
timeout = 30
auth = "master-user"
admin_user = "admin"
master_separator = "%"
password_env = "IMAPSTAGE_TEST_MASTER"
domains = ["Example.ORG", "example.net"]

[profiles.any]
host = "imap.any.example"
auth = "user"
mechanism = "xoauth2"
domains = ["*"]

[profiles.named]
host = "imap.named.example"
auth = "admin-plain"
admin_user = "root"
password = "inline-secret"
)";

TEST(Profiles, ParsesEveryField) {
  auto c = parse_config(kConfig, "test.toml");
  ASSERT_EQ(c.profiles.size(), 3u);
  auto& old = c.profile("old");
  EXPECT_EQ(old.host, "imap.old.example");
  EXPECT_EQ(old.port, 1993);
  EXPECT_EQ(old.endpoint().tls, imap::TlsMode::starttls);
  EXPECT_EQ(old.endpoint().timeout, std::chrono::seconds(30));
  EXPECT_EQ(old.auth, AuthMode::master_user);
  EXPECT_EQ(old.master_separator, "%");
  EXPECT_EQ(old.domains, (std::vector<std::string>{"example.org", "example.net"}));
  EXPECT_EQ(c.profile("any").mechanism, imap::AuthMechanism::xoauth2);
  EXPECT_EQ(c.profile("named").mechanism, imap::AuthMechanism::plain);
  // The inline password is accepted with a warning that never shows it.
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("named"), std::string::npos);
  EXPECT_EQ(c.warnings[0].find("inline-secret"), std::string::npos);
}

TEST(Profiles, DomainRouting) {
  auto c = parse_config(kConfig, "test.toml");
  EXPECT_EQ(c.profile_for("alice@example.org")->name, "old");
  EXPECT_EQ(c.profile_for("Bob@EXAMPLE.net")->name, "old");
  EXPECT_EQ(c.profile_for("carol@elsewhere.example")->name, "any");  // "*" catches the rest
  ServerRouting r;
  r.config = parse_config(R"([profiles.only]
host = "h"
domains = ["example.org"]
)");
  EXPECT_EQ(r.route("alice@example.org").name, "only");
  try {
    r.route("mallory@evil.example");
    FAIL() << "an unserved domain was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage);
    EXPECT_NE(e.message().find("mallory@evil.example"), std::string::npos);
    EXPECT_NE(e.message().find("evil.example"), std::string::npos);
  }
  // A fixed profile takes undomained users, and refuses domains it does not list.
  r.fixed = r.config.profile("only");
  EXPECT_EQ(r.route("alice").name, "only");
  EXPECT_THROW(r.route("x@other.example"), Error);
}

TEST(Profiles, ErrorsNameLineAndKey) {
  auto expect_usage = [](const std::string& text, const std::string& needle) {
    try {
      parse_config(text, "bad.toml");
      FAIL() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::usage);
      EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
    }
  };
  expect_usage("[profiles.a]\nhost = \"h\"\nbogus = 1\n", "bad.toml:3");
  expect_usage("[profiles.a]\nhost = \"h\"\nbogus = 1\n", "unknown key bogus");
  expect_usage("[profiles.a]\nhost = \"h\"\nport = 70000\n", "port");
  expect_usage("[profiles.a]\nhost = \"h\"\nauth = \"master-user\"\npassword_env = \"X\"\n", "admin_user");
  expect_usage("[profiles.a]\nhost = \"h\"\nauth = \"magic\"\n", "password_file");
  expect_usage("[profiles.a]\nhost = \"h\"\nauth = \"sideways\"\n", "sideways");
  expect_usage("[profiles.a]\nport = 1\n", "host is missing");
  expect_usage("[profiles.a\n", "bad.toml:1");
}

TEST(Profiles, LoginsOfEveryMode) {
  ::setenv("IMAPSTAGE_TEST_MASTER", "master-secret", 1);
  auto c = parse_config(kConfig, "test.toml");
  auto m = make_login(c.profile("old"), "alice", "ignored");
  EXPECT_EQ(m.credentials.user, "alice%admin");
  EXPECT_EQ(m.credentials.secret, "master-secret");
  EXPECT_EQ(m.credentials.mechanism, imap::AuthMechanism::login);
  EXPECT_EQ(m.mailbox, "alice");
  EXPECT_EQ(m.describe.find("master-secret"), std::string::npos);

  auto a = make_login(c.profile("named"), "bob", "");
  EXPECT_EQ(a.credentials.user, "bob");
  EXPECT_EQ(a.credentials.auth_user, "root");
  EXPECT_EQ(a.credentials.mechanism, imap::AuthMechanism::plain);
  EXPECT_EQ(a.credentials.secret, "inline-secret");

  auto u = make_login(c.profile("any"), "carol", "token-1");
  EXPECT_EQ(u.credentials.secret, "token-1");
  EXPECT_EQ(u.credentials.mechanism, imap::AuthMechanism::xoauth2);
  // User mode without a password anywhere: refused, naming the account and mode.
  try {
    make_login(c.profile("any"), "carol", "");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("carol"), std::string::npos);
    EXPECT_NE(e.message().find("user"), std::string::npos);
  }

  // Magic with a per-user token file.
  testing::TempDir dir;
  std::ofstream(dir.path() + "/dave.token") << "tok-dave\n";
  Profile magic;
  magic.name = "magic";
  magic.host = "h";
  magic.auth = AuthMode::magic;
  magic.password_file = dir.path() + "/{user}.token";
  auto g = make_login(magic, "dave", "");
  EXPECT_EQ(g.credentials.user, "dave");
  EXPECT_EQ(g.credentials.secret, "tok-dave");
  ::unsetenv("IMAPSTAGE_TEST_MASTER");
  EXPECT_THROW(make_login(c.profile("old"), "alice", ""), Error);
}

TEST(Profiles, LoadsFromFileAndDefaultPath) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() + "/imapstage");
  std::ofstream(dir.path() + "/imapstage/config.toml") << "[profiles.p]\nhost = \"h\"\n";
  ::setenv("XDG_CONFIG_HOME", dir.path().c_str(), 1);
  EXPECT_EQ(default_config_path(), std::filesystem::path(dir.path()) / "imapstage" / "config.toml");
  auto c = load_config_or_default("");
  EXPECT_EQ(c.profiles.count("p"), 1u);
  ::setenv("XDG_CONFIG_HOME", (dir.path() + "/none").c_str(), 1);
  EXPECT_TRUE(load_config_or_default("").profiles.empty());
  EXPECT_THROW(load_config(dir.path() + "/missing.toml"), Error);
  ::unsetenv("XDG_CONFIG_HOME");
}

TEST(Profiles, TokenCommand) {
  auto c = parse_config(R"([profiles.m365]
host = "outlook.office365.com"
token_cmd = "echo tok-$IMAPSTAGE_USER"
domains = ["contoso.com"]
)",
                        "m365.toml");
  const Profile& p = c.profile("m365");
  EXPECT_EQ(p.token_cmd, "echo tok-$IMAPSTAGE_USER");
  EXPECT_EQ(p.mechanism, imap::AuthMechanism::xoauth2);  // implied
  EXPECT_TRUE(p.supplies_secret());
  auto login = make_login(p, "alice@contoso.com", "");
  EXPECT_EQ(login.credentials.mechanism, imap::AuthMechanism::xoauth2);
  EXPECT_TRUE(login.credentials.secret.empty());
  ASSERT_TRUE(login.credentials.tokens);
  EXPECT_EQ(login.credentials.tokens->fetches(), 0);  // nothing runs before a login needs it
  EXPECT_EQ(login.credentials.tokens->token(), "tok-alice@contoso.com");
  EXPECT_EQ(login.describe.find("tok-"), std::string::npos);
  // A password from the accounts file wins over the command.
  auto own = make_login(p, "bob@contoso.com", "static-token");
  EXPECT_FALSE(own.credentials.tokens);
  EXPECT_EQ(own.credentials.secret, "static-token");

  auto expect_usage = [](const std::string& text, const std::string& needle) {
    try {
      parse_config(text, "bad.toml");
      FAIL() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::usage);
      EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
    }
  };
  expect_usage("[profiles.a]\nhost = \"h\"\ntoken_cmd = \"x\"\nmechanism = \"login\"\n", "xoauth2");
  expect_usage("[profiles.a]\nhost = \"h\"\ntoken_cmd = \"x\"\nauth = \"admin-plain\"\nadmin_user = \"a\"\n",
               "token_cmd");
  expect_usage("[profiles.a]\nhost = \"h\"\ntoken_cmd = \"\"\n", "token_cmd is empty");
}

}  // namespace
}  // namespace imapstage::batch

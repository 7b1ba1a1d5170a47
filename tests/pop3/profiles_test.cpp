// POP3 in connector profiles: the protocol key, POP3 ports, and how each
// auth mode's login becomes a POP3 login.
#include <cstdlib>

#include <gtest/gtest.h>

#include "batch/profiles.h"
#include "common/error.h"

namespace imapstage::batch {
namespace {

TEST(Pop3Profiles, ProtocolKeyAndPorts) {
  auto c = parse_config(R"(
[profiles.pop]
host = "pop.example"
protocol = "pop3"
tls = "starttls"
auth = "master-user"
admin_user = "admin"
password_env = "IMAPSTAGE_TEST_POP3_MASTER"
domains = ["example.org"]

[profiles.pops]
host = "pops.example"
protocol = "pop3"

[profiles.imap]
host = "imap.example"
)");
  EXPECT_EQ(c.profile("pop").protocol, "pop3");
  EXPECT_EQ(c.profile("imap").protocol, "imap");
  EXPECT_EQ(c.profile("pop").pop3_endpoint().effective_port(), 110);
  EXPECT_EQ(c.profile("pop").pop3_endpoint().tls, net::TlsMode::starttls);
  EXPECT_EQ(c.profile("pops").pop3_endpoint().effective_port(), 995);
  EXPECT_EQ(c.profile("pops").address(), "pops.example:995");
  EXPECT_EQ(c.profile("imap").address(), "imap.example:993");

  setenv("IMAPSTAGE_TEST_POP3_MASTER", "master-secret", 1);
  auto login = make_login(c.profile("pop"), "alice@example.org", "");
  auto p = pop3_credentials(login.credentials);
  EXPECT_EQ(p.user, "alice@example.org*admin");
  EXPECT_EQ(p.mechanism, pop3::Mechanism::user_pass);
  EXPECT_EQ(p.secret, "master-secret");
  unsetenv("IMAPSTAGE_TEST_POP3_MASTER");
}

TEST(Pop3Profiles, BadProtocolIsRefusedWithItsLine) {
  try {
    parse_config("[profiles.x]\nhost = \"h\"\nprotocol = \"smtp\"\n");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage);
    EXPECT_NE(std::string(e.what()).find("protocol must be imap or pop3"), std::string::npos) << e.what();
  }
}

TEST(Pop3Profiles, MechanismsMapToPop3Logins) {
  imap::Credentials c;
  c.user = "alice";
  c.secret = "s";
  for (auto [imap_mech, pop3_mech] :
       {std::pair{imap::AuthMechanism::login, pop3::Mechanism::user_pass},
        std::pair{imap::AuthMechanism::plain, pop3::Mechanism::plain},
        std::pair{imap::AuthMechanism::cram_md5, pop3::Mechanism::cram_md5},
        std::pair{imap::AuthMechanism::xoauth2, pop3::Mechanism::xoauth2},
        std::pair{imap::AuthMechanism::apop, pop3::Mechanism::apop}}) {
    c.mechanism = imap_mech;
    EXPECT_EQ(pop3_credentials(c).mechanism, pop3_mech) << to_string(imap_mech);
  }
  EXPECT_EQ(parse_mechanism("apop"), imap::AuthMechanism::apop);
  c.mechanism = imap::AuthMechanism::plain;
  c.auth_user = "admin";
  EXPECT_EQ(pop3_credentials(c).auth_user, "admin");
}

}  // namespace
}  // namespace imapstage::batch

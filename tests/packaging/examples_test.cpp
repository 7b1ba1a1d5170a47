// The examples the Debian package ships (packaging/examples/, and
// serve/serve.example.toml as examples/serve.toml) are read by the same code
// as the files they show how to write, without a warning or a bad line.
#include <filesystem>

#include <gtest/gtest.h>

#include "batch/accounts_file.h"
#include "batch/profiles.h"
#include "serve/config.h"

namespace imapstage {
namespace {

std::filesystem::path source(const char* rel) { return std::filesystem::path(IMAPSTAGE_SOURCE_DIR) / rel; }

TEST(PackageExamples, ProfilesParseAndServeTheirDomains) {
  auto config = batch::load_config(source("packaging/examples/config.toml"));
  EXPECT_TRUE(config.warnings.empty());
  ASSERT_EQ(config.profiles.size(), 3u);
  EXPECT_EQ(config.profile("old").auth, batch::AuthMode::master_user);
  EXPECT_EQ(config.profile("new").auth, batch::AuthMode::admin_plain);
  EXPECT_EQ(config.profile("pop").protocol, "pop3");
  ASSERT_NE(config.profile_for("alice@example.org"), nullptr);
  EXPECT_EQ(config.profile_for("alice@example.org")->name, "old");
  ASSERT_NE(config.profile_for("carol@example.net"), nullptr);
  EXPECT_EQ(config.profile_for("carol@example.net")->name, "pop");
  for (const auto& [name, profile] : config.profiles) EXPECT_TRUE(profile.supplies_secret()) << name;
}

TEST(PackageExamples, AccountsFileHasNoBadLine) {
  auto accounts = batch::read_accounts(source("packaging/examples/accounts.csv"));
  EXPECT_TRUE(accounts.errors.empty()) << accounts.errors.front().message;
  ASSERT_EQ(accounts.accounts.size(), 3u);
  EXPECT_EQ(accounts.accounts[0].source_user, "alice@example.org");
  EXPECT_EQ(accounts.accounts[0].target_user, "alice@example.com");
  EXPECT_EQ(accounts.accounts[1].target_user, "bob@example.org");
  EXPECT_EQ(accounts.accounts[2].source_user, "carol@example.net");
}

TEST(PackageExamples, ServeConfigParses) {
  // The unit's StateDirectory is /var/lib/imapstage: the example keeps its state there.
  auto config = serve::load_serve_config(source("serve/serve.example.toml"));
  EXPECT_EQ(config.state_dir, "/var/lib/imapstage");
  EXPECT_EQ(config.source_profile, "old");
  EXPECT_EQ(config.profiles.profiles.size(), 2u);
}

}  // namespace
}  // namespace imapstage

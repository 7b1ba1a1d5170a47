// The daemon's state without servers: sealed credentials, the key file's
// checks, the job queue file and the configuration.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "common/aead.h"
#include "common/error.h"
#include "serve/config.h"
#include "serve/jobs.h"
#include "serve/vault.h"
#include "tests/support/test_server.h"

namespace imapstage::testing {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(Aead, SealsAndOpensOnlyWithTheSameKeyAndPurpose) {
  std::string key = random_bytes(kAeadKeySize);
  std::string sealed = aead_seal(key, "job 1", "hunter2-secret");
  EXPECT_EQ(sealed.find("hunter2-secret"), std::string::npos);
  EXPECT_EQ(aead_open(key, "job 1", sealed), "hunter2-secret");
  EXPECT_NE(aead_seal(key, "job 1", "hunter2-secret"), sealed) << "a fresh nonce each time";
  EXPECT_THROW(aead_open(key, "job 2", sealed), Error);
  EXPECT_THROW(aead_open(random_bytes(kAeadKeySize), "job 1", sealed), Error);
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::string damaged = sealed;
    damaged[i] ^= 1;
    EXPECT_THROW(aead_open(key, "job 1", damaged), Error) << "byte " << i;
  }
  EXPECT_THROW(aead_open(key, "job 1", sealed.substr(0, 20)), Error);
}

TEST(Vault, KeyFileIsMadeOwnerOnlyAndRefusedWhenOthersCanRead) {
  TempDir dir;
  fs::path key = dir.path() + "/serve.key";
  auto made = serve::load_key(key, true);
  struct stat st {};
  ASSERT_EQ(stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  EXPECT_EQ(serve::load_key(key, false).get(), made.get());
  chmod(key.c_str(), 0640);
  try {
    serve::load_key(key, false);
    ADD_FAILURE() << "a group-readable key was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage);
    EXPECT_NE(std::string(e.what()).find("readable by it alone"), std::string::npos) << e.what();
  }
  chmod(key.c_str(), 0600);
  std::ofstream(key, std::ios::trunc) << "short";
  EXPECT_THROW(serve::load_key(key, false), Error);
  EXPECT_THROW(serve::load_key(dir.path() + "/missing.key", false), Error);
}

TEST(Vault, StoresSealedAndWipes) {
  TempDir dir;
  fs::create_directory(dir.path() + "/secrets");
  serve::Vault vault(dir.path(), serve::load_key(dir.path() + "/k", true));
  vault.put(7, "alice", "correct horse battery staple");
  std::string stored = read_file(vault.path(7));
  EXPECT_EQ(stored.find("correct horse"), std::string::npos);
  EXPECT_EQ(vault.get(7, "alice").get(), "correct horse battery staple");
  // Another job's name or number does not open it.
  fs::copy_file(vault.path(7), vault.path(8));
  EXPECT_THROW(vault.get(8, "alice"), Error);
  EXPECT_THROW(vault.get(7, "bob"), Error);
  vault.erase(7);
  EXPECT_FALSE(fs::exists(vault.path(7)));
  EXPECT_THROW(vault.get(7, "alice"), Error);
  vault.erase(7);  // nothing there: nothing to do
}

TEST(Vault, KeepsTheTargetPasswordApartAndErasesBoth) {
  TempDir dir;
  fs::create_directory(dir.path() + "/secrets");
  serve::Vault vault(dir.path(), serve::load_key(dir.path() + "/k", true));
  vault.put(9, "olga", "old password");
  vault.put(9, "olga", "new password", serve::Slot::target);
  EXPECT_EQ(vault.path(9, serve::Slot::target), fs::path(dir.path()) / "secrets" / "9.target");
  EXPECT_EQ(vault.get(9, "olga").get(), "old password");
  EXPECT_EQ(vault.get(9, "olga", serve::Slot::target).get(), "new password");
  EXPECT_EQ(read_file(vault.path(9, serve::Slot::target)).find("new password"), std::string::npos);
  // One slot's file does not open as the other's.
  fs::copy_file(vault.path(9, serve::Slot::target), vault.path(9), fs::copy_options::overwrite_existing);
  EXPECT_THROW(vault.get(9, "olga"), Error);
  vault.erase(9);
  EXPECT_FALSE(fs::exists(vault.path(9)));
  EXPECT_FALSE(fs::exists(vault.path(9, serve::Slot::target)));
}

TEST(JobQueue, SurvivesARoundTripAndResumesRunningJobs) {
  TempDir dir;
  serve::JobQueue q;
  serve::Job a;
  a.id = 1;
  a.user = "alice";
  a.target_user = "alice";
  a.status = serve::JobStatus::running;
  a.phase = "import";
  a.attempts = 1;
  a.credentials = serve::CredentialMode::password;
  a.has_secret = true;
  serve::Job b = a;
  b.id = 4;
  b.user = "Bob@Example.org";
  b.status = serve::JobStatus::waiting;
  b.waiting_for = "delta";
  b.next_run = 1.8e9;
  b.verify = {{"equal", true}, {"deep", true}};
  serve::Job c = a;
  c.id = 3;
  c.user = "carol";
  c.cancel_requested = true;
  c.target_credentials = serve::CredentialMode::password;
  c.has_target_secret = true;
  c.verify_only = true;
  c.progress = {{"phase", "import"}, {"bytes", 10}};
  c.runs = nlohmann::json::array({{{"attempt", 1}, {"kind", "migrate"}, {"status", "error"}}});
  q.jobs = {a, b, c};
  q.next_id = 5;
  serve::save_queue(dir.path(), q);
  struct stat st {};
  ASSERT_EQ(stat((dir.path() + "/jobs.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = serve::load_queue(dir.path());
  ASSERT_EQ(loaded.jobs.size(), 3u);
  EXPECT_EQ(loaded.jobs[2].status, serve::JobStatus::cancelled) << "cancelled while running, then the daemon died";
  EXPECT_EQ(loaded.jobs[2].target_credentials, serve::CredentialMode::password);
  EXPECT_TRUE(loaded.jobs[2].has_target_secret);
  EXPECT_TRUE(loaded.jobs[2].verify_only);
  EXPECT_TRUE(loaded.jobs[2].progress.is_null()) << "the progress of a daemon that is gone";
  ASSERT_EQ(loaded.jobs[2].runs.size(), 1u);
  EXPECT_EQ(loaded.jobs[2].runs[0]["kind"], "migrate");
  EXPECT_EQ(loaded.jobs[0].target_credentials, serve::CredentialMode::profile);
  EXPECT_EQ(loaded.next_id, 5u);
  EXPECT_EQ(loaded.jobs[0].status, serve::JobStatus::queued) << "a running job's daemon is gone: it resumes";
  EXPECT_EQ(loaded.jobs[0].phase, "");
  EXPECT_EQ(loaded.jobs[0].attempts, 1);
  EXPECT_EQ(loaded.jobs[1].status, serve::JobStatus::waiting);
  EXPECT_EQ(loaded.jobs[1].next_run, 1.8e9);
  EXPECT_EQ(loaded.jobs[1].verify["deep"], true);
  EXPECT_NE(loaded.find_user("bob@example.ORG"), nullptr);
  EXPECT_EQ(loaded.find_user("dora"), nullptr);
  EXPECT_TRUE(serve::load_queue(dir.path() + "/none").jobs.empty());
  std::ofstream(dir.path() + "/jobs.json", std::ios::trunc) << "{\"version\": 1, \"kind\": \"serve\", \"jobs\": [{";
  try {
    serve::load_queue(dir.path());
    ADD_FAILURE() << "a damaged queue was read";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt);
    EXPECT_NE(std::string(e.what()).find("jobs.json"), std::string::npos) << e.what();
  }
}

TEST(ServeConfig, ReadsTheSectionsAndNamesMistakes) {
  auto c = serve::parse_serve_config(R"([profiles.old]
host = "old.example"
[profiles.new]
host = "new.example"
auth = "master-user"
admin_user = "migrator"
password_file = "/etc/imapstage/new.secret"
[serve]
state_dir = "/var/lib/imapstage"
key_file = "/etc/imapstage/serve.key"
source_profile = "old"
target_profile = "new"
jobs = 3
per_server = 2
max_load = 0
account_timeout = "2h"
retry_delay = "30s"
verify = "counts"
delta_after = "15m"
delta_passes = 2
delta_until = "2027-01-31T00:00:00Z"
hook_users = ["dovecot", "mail"]
[login_hook]
timeout = 25
cutover = "2027-02-01T00:00:00+01:00"
)",
                                     "serve.toml");
  EXPECT_EQ(c.archive, "/var/lib/imapstage/archive");
  EXPECT_EQ(c.socket, "/var/lib/imapstage/control.sock");
  EXPECT_EQ(c.scheduler.jobs, 3);
  EXPECT_EQ(c.scheduler.per_server, 2);
  EXPECT_EQ(c.account_timeout.count(), 7200);
  EXPECT_EQ(c.retry_delay.count(), 30);
  EXPECT_FALSE(c.deep_verify);
  EXPECT_EQ(c.delta_after.count(), 900);
  EXPECT_EQ(c.delta_passes, 2);
  EXPECT_EQ(c.delta_until, 1801353600);
  EXPECT_EQ(c.cutover, 1801436400);
  EXPECT_EQ(c.hook_timeout.count(), 25);
  EXPECT_EQ(c.hook_users.size(), 2u);
  EXPECT_EQ(c.target().admin_user, "migrator");
  EXPECT_EQ(c.source().host, "old.example");
  EXPECT_FALSE(c.target_wants_user_password());
  auto own = serve::parse_serve_config(R"([profiles.old]
host = "old.example"
[profiles.new]
host = "new.example"
auth = "user"
[serve]
source_profile = "old"
target_profile = "new"
[web]
listen = "127.0.0.1:8080"
manifest_key = "/etc/imapstage/manifest.pem"
)",
                                       "own.toml");
  EXPECT_TRUE(own.target_wants_user_password());
  EXPECT_EQ(own.web.manifest_key, "/etc/imapstage/manifest.pem");

  try {
    serve::parse_serve_config("[serve]\njobz = 3\n", "serve.toml");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("serve.toml:2: [serve]: unknown key jobz"), std::string::npos) << e.what();
  }
  EXPECT_THROW(serve::parse_serve_config("[serve]\nverify = \"maybe\"\n", "f"), Error);
  EXPECT_THROW(serve::parse_serve_config("[login_hook]\ncutover = \"tomorrow\"\n", "f"), Error);
  EXPECT_THROW(serve::parse_serve_config("[serve]\nsource_profile = \"x\"\n", "f").source(), Error);
}

}  // namespace
}  // namespace imapstage::testing

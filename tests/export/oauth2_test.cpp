// XOAUTH2 against the harness Dovecot with an oauth2 passdb: Dovecot asks a
// local RFC 7662 introspection endpoint (this test) about each token at
// login. Tokens come from a token command (--oauth2-token-cmd) that mints a
// new one per run; the endpoint takes each token for one login only, so a
// token has expired by the time of any later login, as an hour-long
// Microsoft 365 token has in the middle of a long mailbox. tools/fault-proxy
// cuts the connection mid-account: Dovecot checks tokens at login only, so
// the expiry shows when imapstage logs in again. The export (and the import)
// must end complete, nothing lost or twice, the token command run again, and
// no token anywhere in the output, the archive or the command's argv.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "tests/support/fault_proxy.h"
#include "tests/support/mail_view.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::FaultProxy;
using testing::FaultProxyOptions;
using testing::TempDir;
using testing::TestServer;

// The token issuer's introspection endpoint. Valid tokens are
// PREFIX<user>-<n> with n no higher than the runs of the token command so
// far (its counter file); each is good for `uses_per_token` logins.
class Introspection {
 public:
  Introspection(std::string prefix, std::string counter_file)
      : prefix_(std::move(prefix)), counter_file_(std::move(counter_file)) {
    server_.Post("/introspect", [this](const httplib::Request& q, httplib::Response& r) {
      std::string token = q.has_param("token") ? q.get_param_value("token") : "";
      r.set_content(answer(token).dump(), "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~Introspection() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return fmt::format("http://127.0.0.1:{}/introspect", port_); }

  int accepted() {
    std::lock_guard lock(mutex_);
    return accepted_;
  }
  int refused() {
    std::lock_guard lock(mutex_);
    return refused_;
  }
  void set_uses_per_token(int n) {
    std::lock_guard lock(mutex_);
    uses_per_token_ = n;
  }

 private:
  nlohmann::json answer(const std::string& token) {
    std::lock_guard lock(mutex_);
    nlohmann::json inactive = {{"active", false}};
    size_t dash = token.rfind('-');
    if (token.rfind(prefix_, 0) != 0 || dash == std::string::npos || dash < prefix_.size()) {
      ++refused_;
      return inactive;
    }
    std::string user = token.substr(prefix_.size(), dash - prefix_.size());
    int n = std::atoi(token.c_str() + dash + 1);
    int minted = 0;
    std::ifstream(counter_file_) >> minted;
    if (n < 1 || n > minted || uses_[token] >= uses_per_token_) {
      ++refused_;
      return inactive;
    }
    ++uses_[token];
    ++accepted_;
    return {{"active", true}, {"username", user}, {"scope", "IMAP.AccessAsUser.All"}, {"token_type", "Bearer"}};
  }

  std::string prefix_, counter_file_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mutex_;
  std::map<std::string, int> uses_;
  int uses_per_token_ = 1;
  int accepted_ = 0, refused_ = 0;
};

std::string random_hex(size_t n) {
  std::random_device rd;
  std::string s;
  for (size_t i = 0; i < n; ++i) s += "0123456789abcdef"[rd() % 16];
  return s;
}

bool file_contains(const std::filesystem::path& path, const std::string& needle) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  return text.find(needle) != std::string::npos;
}

// Every regular file under `dir` that contains `needle`.
std::vector<std::string> files_containing(const std::string& dir, const std::string& needle) {
  std::vector<std::string> found;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file() && file_contains(e.path(), needle)) found.push_back(e.path().string());
  return found;
}

class OAuth2DovecotTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir();
    prefix_ = new std::string("ImapstageTestTok" + random_hex(12) + ".");
    introspection_ = new Introspection(*prefix_, counter_file());
    // The token command: the n-th run prints PREFIX$IMAPSTAGE_USER-n; every run
    // notes its arguments ($0 and $@) for the argv check.
    std::string script = work_->path() + "/token-cmd.sh";
    std::ofstream(script) << "#!/bin/sh\n"
                          << "set -e\n"
                          << "n=$(( $(cat '" << counter_file() << "' 2>/dev/null || echo 0) + 1 ))\n"
                          << "echo $n > '" << counter_file() << "'\n"
                          << "echo \"$0 $*\" >> '" << work_->path() << "/argv'\n"
                          << "printf '%s%s-%s\\n' '" << *prefix_ << "' \"$IMAPSTAGE_USER\" \"$n\"\n";
    std::filesystem::permissions(script, std::filesystem::perms::owner_all);
    script_ = new std::string(script);

    testing::TestServerOptions o;
    o.seed = "default";
    o.users = {"oauser"};
    o.target_users = {"oatarget"};
    o.oauth2_introspection = introspection_->url();
    server_ = new TestServer(o);
    source_ = new nlohmann::json(server_->summary("oauser"));
    for (auto& f : (*source_)["folders"]) {
      if (!f["messages"].is_array()) continue;
      ++source_folders_;
      for (auto& m : f["messages"]) {
        ++source_messages_;
        source_bytes_ += m["size"].get<uint64_t>();
      }
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    delete introspection_;
    delete source_;
    delete script_;
    delete prefix_;
    delete work_;
    server_ = nullptr;
  }

  static std::string counter_file() { return work_->path() + "/runs"; }
  static int token_runs() {
    int n = 0;
    std::ifstream(counter_file()) >> n;
    return n;
  }

  // No token (the prefix every token starts with) in these texts, the files
  // under `dir` or the token command's arguments.
  static void expect_no_token(const std::vector<const std::string*>& texts, const std::string& dir) {
    for (auto* t : texts) EXPECT_EQ(t->find(*prefix_), std::string::npos) << *t;
    auto found = files_containing(dir, *prefix_);
    EXPECT_TRUE(found.empty()) << found.front();
    EXPECT_FALSE(file_contains(work_->path() + "/argv", *prefix_));
  }

  static size_t events_named(const std::string& jsonl, const std::string& name) {
    size_t n = 0;
    std::istringstream in(jsonl);
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.value("event", "") == name) ++n;
    }
    return n;
  }

  static inline size_t source_folders_ = 0, source_messages_ = 0;
  static inline uint64_t source_bytes_ = 0;
  static TempDir* work_;
  static std::string* prefix_;
  static std::string* script_;
  static Introspection* introspection_;
  static TestServer* server_;
  static nlohmann::json* source_;
};

TempDir* OAuth2DovecotTest::work_ = nullptr;
std::string* OAuth2DovecotTest::prefix_ = nullptr;
std::string* OAuth2DovecotTest::script_ = nullptr;
Introspection* OAuth2DovecotTest::introspection_ = nullptr;
TestServer* OAuth2DovecotTest::server_ = nullptr;
nlohmann::json* OAuth2DovecotTest::source_ = nullptr;

TEST_F(OAuth2DovecotTest, ExportAndImportGoOnAcrossAnExpiredTokenAfterACut) {
  TempDir dir;
  const std::string archive = dir.path() + "/archive";
  int runs_before = token_runs();
  int refused_before = introspection_->refused();

  // Export: one cut mid-account, then the old token is refused at the new login.
  {
    FaultProxyOptions po;
    po.target_port = server_->imaps_port();
    po.cut_after = source_bytes_ / 2;  // mid-account
    po.cut_direction = "down";
    po.cuts = 1;
    ASSERT_GE(source_folders_, 3u);
    FaultProxy proxy(po);
    auto r = testing::run_imapstage({"export", "--archive", archive, "--account", "oauser@oauth.test", "--host",
                                     proxy.host(), "--port", std::to_string(proxy.port()), "--ca-file",
                                     server_->ca_file(), "--user", "oauser", "--oauth2-token-cmd", *script_,
                                     "--connections", "1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_EQ(proxy.count("cut"), 1u);
    EXPECT_GE(events_named(r.out, "reconnect"), 1u) << r.out;
    EXPECT_GE(token_runs() - runs_before, 2);
    EXPECT_GE(introspection_->refused() - refused_before, 1);  // the expired token was offered and refused
    auto archived = testing::archive_view(archive, "oauser@oauth.test");
    auto source = testing::server_view(*source_);
    EXPECT_EQ(testing::count(archived), source_messages_);
    EXPECT_TRUE(archived == source) << "the archive differs from the source";
    auto d = testing::compare(testing::multiset(source), testing::multiset(archived));
    EXPECT_EQ(d.lost, 0u);
    EXPECT_EQ(d.duplicated, 0u);
    EXPECT_TRUE(testing::verify_archive(archive).ok());
    expect_no_token({&r.out, &r.err}, archive);
    std::printf("[ figures ] export of %zu messages (%llu bytes) in %zu folders: cut after %llu bytes, %d token "
                "runs, %d tokens refused\n",
                source_messages_, static_cast<unsigned long long>(source_bytes_), source_folders_,
                static_cast<unsigned long long>(source_bytes_ / 2), token_runs() - runs_before,
                introspection_->refused() - refused_before);
  }

  // Import to another account the same way: the command gets that user.
  {
    int runs = token_runs();
    FaultProxyOptions po;
    po.target_port = server_->imaps_port();
    po.cut_after = source_bytes_ / 2;
    po.cut_direction = "up";
    po.cuts = 1;
    FaultProxy proxy(po);
    auto r = testing::run_imapstage({"import", "--archive", archive, "--account", "oauser@oauth.test",
                                     "--target-name", "oatarget@oauth.test", "--host", proxy.host(), "--port",
                                     std::to_string(proxy.port()), "--ca-file", server_->ca_file(), "--user",
                                     "oatarget", "--oauth2-token-cmd", *script_, "--connections", "1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_EQ(proxy.count("cut"), 1u);
    EXPECT_GE(token_runs() - runs, 2);
    std::printf("[ figures ] import: %d token runs\n", token_runs() - runs);
    auto target = testing::multiset(testing::server_view(server_->summary("oatarget")));
    auto d = testing::compare(testing::multiset(testing::server_view(*source_)), target);
    EXPECT_EQ(d.lost, 0u);
    EXPECT_EQ(d.duplicated, 0u);
    expect_no_token({&r.out, &r.err}, archive);
  }
  std::ifstream argv(work_->path() + "/argv");
  for (std::string line; std::getline(argv, line);) EXPECT_EQ(line, *script_ + " ");
}

TEST_F(OAuth2DovecotTest, ATokenRefusedAgainAfterRenewalFailsTheAccountOnce) {
  TempDir dir;
  // Each token is good for no login at all: one renewal, then exit 3.
  introspection_->set_uses_per_token(0);
  int runs_before = token_runs();
  auto r = testing::run_imapstage({"export", "--archive", dir.path() + "/archive", "--host", server_->host(),
                                   "--port", std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(),
                                   "--user", "oauser", "--oauth2-token-cmd", *script_});
  introspection_->set_uses_per_token(1);
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_EQ(token_runs() - runs_before, 2);
  EXPECT_NE(r.err.find("oauser"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("new token was refused too"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(*prefix_), std::string::npos) << r.err;

  // A failing command: its status, never its output.
  auto failing = testing::run_imapstage({"export", "--archive", dir.path() + "/archive2", "--host", server_->host(),
                                         "--port", std::to_string(server_->imaps_port()), "--ca-file",
                                         server_->ca_file(), "--user", "oauser", "--oauth2-token-cmd",
                                         "echo " + *prefix_ + "partial; exit 9"});
  EXPECT_EQ(failing.exit_code, 3) << failing.out << failing.err;
  EXPECT_NE(failing.err.find("token command failed: exit 9"), std::string::npos) << failing.err;
  EXPECT_EQ(failing.err.find(*prefix_), std::string::npos) << failing.err;
}

// The built-in client-credentials helper as the token command, against an
// HTTPS token endpoint with the harness's certificate: the endpoint mints the
// tokens the introspection endpoint accepts, so an export logs in with them.
TEST_F(OAuth2DovecotTest, TheClientCredentialsHelperAsTokenCommandOverVerifiedTls) {
  TempDir dir;
  httplib::SSLServer https((server_->dir() + "/server.pem").c_str(), (server_->dir() + "/server.key").c_str());
  ASSERT_TRUE(https.is_valid());
  std::mutex mutex;
  int requests = 0;
  https.Post("/tenant-1/oauth2/v2.0/token", [&](const httplib::Request& q, httplib::Response& r) {
    std::lock_guard lock(mutex);
    ++requests;
    if (q.get_param_value("client_secret") != "Helper-Secret-31" ||
        q.get_param_value("grant_type") != "client_credentials") {
      r.status = 401;
      r.set_content(R"({"error":"invalid_client"})", "application/json");
      return;
    }
    // App-only tokens open any mailbox they were granted; this one is for oauser.
    int n = token_runs() + 1;
    std::ofstream(counter_file()) << n << "\n";
    nlohmann::json answer = {{"token_type", "Bearer"}, {"expires_in", 3599},
                             {"access_token", fmt::format("{}oauser-{}", *prefix_, n)}};
    r.set_content(answer.dump(), "application/json");
  });
  int port = https.bind_to_any_port("127.0.0.1");
  std::thread thread([&] { https.listen_after_bind(); });
  while (!https.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  struct Stop {
    httplib::SSLServer& s;
    std::thread& t;
    ~Stop() {
      s.stop();
      t.join();
    }
  } stop{https, thread};

  std::string secret = dir.path() + "/client.secret";
  std::ofstream(secret) << "Helper-Secret-31\n";
  std::string endpoint = fmt::format("https://127.0.0.1:{}/tenant-1/oauth2/v2.0/token", port);
  std::string helper = fmt::format("'{}' oauth2 token --tenant tenant-1 --client-id app-1 --client-secret-file '{}' "
                                   "--endpoint '{}'",
                                   testing::imapstage_binary(), secret, endpoint);

  // Without the private CA the endpoint's certificate is not trusted: no token.
  auto untrusted = testing::run_imapstage({"oauth2", "token", "--tenant", "tenant-1", "--client-id", "app-1",
                                           "--client-secret-file", secret, "--endpoint", endpoint});
  EXPECT_EQ(untrusted.exit_code, 4) << untrusted.out << untrusted.err;
  EXPECT_EQ(untrusted.out, "");

  auto r = testing::run_imapstage({"export", "--archive", dir.path() + "/archive", "--account", "oauser@helper.test",
                                   "--host", server_->host(), "--port", std::to_string(server_->imaps_port()),
                                   "--ca-file", server_->ca_file(), "--user", "oauser", "--oauth2-token-cmd",
                                   helper + " --ca-file '" + server_->ca_file() + "'", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(testing::count(testing::archive_view(dir.path() + "/archive", "oauser@helper.test")), source_messages_);
  {
    std::lock_guard lock(mutex);
    EXPECT_GE(requests, 1);
  }
  expect_no_token({&r.out, &r.err}, dir.path() + "/archive");
  EXPECT_EQ(r.err.find("Helper-Secret-31"), std::string::npos);
}

}  // namespace
}  // namespace imapstage

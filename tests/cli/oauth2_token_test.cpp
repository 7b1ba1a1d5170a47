// imapstage oauth2 token (the client-credentials grant, Microsoft 365
// app-only access) against a local token endpoint speaking the Microsoft
// identity platform's v2.0 token protocol as documented: a form POST with
// client_id, client_secret, scope and grant_type, answered with JSON
// access_token or error/error_description.
#include <sys/stat.h>

#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::TempDir;

class TokenEndpoint {
 public:
  TokenEndpoint() {
    server_.Post(R"(/([^/]+)/oauth2/v2.0/token)", [this](const httplib::Request& q, httplib::Response& r) {
      std::lock_guard lock(mutex_);
      tenant = q.matches[1];
      content_type = q.get_header_value("Content-Type");
      params.clear();
      for (auto& [k, v] : q.params) params[k] = v;
      ++requests;
      if (params["client_secret"] != "Client-Secret-Value~42" || params["grant_type"] != "client_credentials") {
        r.status = 401;
        r.set_content(R"({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."})",
                      "application/json");
        return;
      }
      r.set_content(R"({"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAi.App-Only-Token.sig"})",
                    "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~TokenEndpoint() {
    server_.stop();
    thread_.join();
  }
  std::string url(const std::string& tenant_id) const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/" + tenant_id + "/oauth2/v2.0/token";
  }

  std::mutex mutex_;
  std::string tenant, content_type;
  std::map<std::string, std::string> params;
  int requests = 0;

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

std::string write_secret(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return path;
}

TEST(OAuth2TokenTest, ClientCredentialsGrantPrintsTheAccessToken) {
  TokenEndpoint endpoint;
  TempDir dir;
  std::string secret = write_secret(dir.path() + "/secret", "Client-Secret-Value~42\n");
  auto r = testing::run_imapstage({"oauth2", "token", "--tenant", "contoso.onmicrosoft.com", "--client-id",
                                   "11111111-2222-3333-4444-555555555555", "--client-secret-file", secret,
                                   "--endpoint", endpoint.url("contoso.onmicrosoft.com")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "eyJ0eXAi.App-Only-Token.sig\n");
  std::lock_guard lock(endpoint.mutex_);
  EXPECT_EQ(endpoint.requests, 1);
  EXPECT_EQ(endpoint.tenant, "contoso.onmicrosoft.com");
  EXPECT_EQ(endpoint.content_type, "application/x-www-form-urlencoded");
  EXPECT_EQ(endpoint.params["client_id"], "11111111-2222-3333-4444-555555555555");
  EXPECT_EQ(endpoint.params["client_secret"], "Client-Secret-Value~42");
  EXPECT_EQ(endpoint.params["scope"], "https://outlook.office365.com/.default");
  EXPECT_EQ(endpoint.params["grant_type"], "client_credentials");
}

TEST(OAuth2TokenTest, ARefusedSecretIsAnAuthErrorWithTheEndpointsReasonAndNoSecret) {
  TokenEndpoint endpoint;
  TempDir dir;
  std::string secret = write_secret(dir.path() + "/secret", "Wrong-Secret-Value-99\n");
  auto r = testing::run_imapstage({"oauth2", "token", "--tenant", "t1", "--client-id", "app-1",
                                   "--client-secret-file", secret, "--endpoint", endpoint.url("t1")});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("invalid_client"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("AADSTS7000215"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("app-1"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("Wrong-Secret"), std::string::npos) << r.err;
}

TEST(OAuth2TokenTest, PlainHttpOnlyOnLoopbackAndTheSecretNeverInArgv) {
  TempDir dir;
  std::string secret = write_secret(dir.path() + "/secret", "Client-Secret-Value~42\n");
  auto r = testing::run_imapstage({"oauth2", "token", "--tenant", "t1", "--client-id", "app-1",
                                   "--client-secret-file", secret, "--endpoint",
                                   "http://login.example.org/t1/oauth2/v2.0/token"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("plain http is accepted only on loopback"), std::string::npos) << r.err;
  // There is no option that takes the secret itself.
  auto inline_secret = testing::run_imapstage(
      {"oauth2", "token", "--tenant", "t1", "--client-id", "app-1", "--client-secret", "Inline-Secret"});
  EXPECT_NE(inline_secret.exit_code, 0);
}

// oauth2 device (RFC 8628) and oauth2 refresh against a local identity platform scripting RFC 8628's
// answers as Microsoft's v2.0 endpoints give them: the device code, then authorization_pending,
// slow_down and the tokens (or expired_token, access_denied); refresh tokens that rotate.
namespace device {

using Clock = std::chrono::steady_clock;
using testing::TempDir;

class IdentityPlatform {
 public:
  IdentityPlatform() {
    server_.Post(R"(/([^/]+)/oauth2/v2.0/devicecode)", [this](const httplib::Request& q, httplib::Response& r) {
      std::lock_guard lock(mutex);
      device_params.clear();
      for (auto& [k, v] : q.params) device_params[k] = v;
      r.set_content(nlohmann::json{{"device_code", "Device-Code-Secret-7"},
                                   {"user_code", "HXQ9-KWTL"},
                                   {"verification_uri", "https://microsoft.com/devicelogin"},
                                   {"expires_in", expires_in},
                                   {"interval", 1},
                                   {"message", "To sign in, use a web browser..."}}
                        .dump(),
                    "application/json");
    });
    server_.Post(R"(/([^/]+)/oauth2/v2.0/token)", [this](const httplib::Request& q, httplib::Response& r) {
      std::lock_guard lock(mutex);
      std::map<std::string, std::string> p;
      for (auto& [k, v] : q.params) p[k] = v;
      polls.push_back(Clock::now());
      token_params.push_back(p);
      if (p["grant_type"] == "refresh_token") {
        if (p["refresh_token"] != refresh_token) {
          r.status = 400;
          r.set_content(R"({"error":"invalid_grant","error_description":"AADSTS70008: The refresh token has expired."})",
                        "application/json");
          return;
        }
        refresh_token = "Refresh-Token-" + std::to_string(++rotations);
        r.set_content(nlohmann::json{{"token_type", "Bearer"},
                                     {"access_token", "Access-Token-" + std::to_string(rotations)},
                                     {"refresh_token", refresh_token},
                                     {"expires_in", 3599}}
                          .dump(),
                      "application/json");
        return;
      }
      std::string answer = script.empty() ? "tokens" : script.front();
      if (!script.empty()) script.pop_front();
      if (p["grant_type"] != "urn:ietf:params:oauth:grant-type:device_code" ||
          p["device_code"] != "Device-Code-Secret-7")
        answer = "invalid_grant";
      if (answer == "tokens") {
        r.set_content(nlohmann::json{{"token_type", "Bearer"},
                                     {"access_token", "Access-Token-0"},
                                     {"refresh_token", refresh_token},
                                     {"expires_in", 3599}}
                          .dump(),
                      "application/json");
        return;
      }
      r.status = 400;
      r.set_content(nlohmann::json{{"error", answer}, {"error_description", "AADSTS: " + answer}}.dump(),
                    "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~IdentityPlatform() {
    server_.stop();
    thread_.join();
  }
  std::string authority(const std::string& tenant) const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/" + tenant + "/oauth2/v2.0";
  }

  std::mutex mutex;
  std::deque<std::string> script;  // the device-code polls' answers, in order; then the tokens
  int expires_in = 900;
  std::map<std::string, std::string> device_params;
  std::vector<std::map<std::string, std::string>> token_params;
  std::vector<Clock::time_point> polls;
  std::string refresh_token = "Refresh-Token-0";
  int rotations = 0;

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

std::vector<std::string> device_args(const IdentityPlatform& idp, const std::string& file) {
  return {"oauth2", "device", "--authority-url", idp.authority("contoso.onmicrosoft.com"), "--client-id", "app-7",
          "--refresh-token-file", file};
}

std::vector<std::string> refresh_args(const IdentityPlatform& idp, const std::string& file) {
  return {"oauth2", "refresh", "--authority-url", idp.authority("contoso.onmicrosoft.com"), "--client-id", "app-7",
          "--refresh-token-file", file};
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(OAuth2DeviceTest, SignInPollsAsToldAndStoresOnlyTheRefreshTokenOwnerOnly) {
  IdentityPlatform idp;
  idp.script = {"authorization_pending", "slow_down", "authorization_pending"};
  TempDir dir;
  std::string file = dir.path() + "/alice.token";
  auto started = Clock::now();
  auto r = testing::run_imapstage(device_args(idp, file));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // The user is told where to go and what to enter, on the terminal (stderr); stdout stays empty.
  EXPECT_NE(r.err.find("https://microsoft.com/devicelogin"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("HXQ9-KWTL"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
  // No token or device code is ever printed.
  for (const char* secret : {"Device-Code-Secret-7", "Refresh-Token-0", "Access-Token-0"}) {
    EXPECT_EQ(r.err.find(secret), std::string::npos) << secret;
    EXPECT_EQ(r.out.find(secret), std::string::npos) << secret;
  }
  EXPECT_EQ(read_file(file), "Refresh-Token-0\n");
  EXPECT_EQ(mode_of(file), 0600u);
  std::lock_guard lock(idp.mutex);
  EXPECT_EQ(idp.device_params["client_id"], "app-7");
  EXPECT_EQ(idp.device_params["scope"], "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access");
  ASSERT_EQ(idp.polls.size(), 4u);
  for (auto& p : idp.token_params) {
    EXPECT_EQ(p.at("grant_type"), "urn:ietf:params:oauth:grant-type:device_code");
    EXPECT_EQ(p.at("client_id"), "app-7");
  }
  // interval 1 s; after slow_down 5 s more: 1, 1, 6, 6.
  auto gap = [&](size_t i) {
    return std::chrono::duration<double>(idp.polls[i] - (i ? idp.polls[i - 1] : started)).count();
  };
  EXPECT_GE(gap(0), 0.95);
  EXPECT_GE(gap(1), 0.95);
  EXPECT_LT(gap(1), 3.0);
  EXPECT_GE(gap(2), 5.95);
  EXPECT_GE(gap(3), 5.95);
}

TEST(OAuth2DeviceTest, RefreshPrintsAnAccessTokenAndKeepsTheRotatedRefreshToken) {
  IdentityPlatform idp;
  TempDir dir;
  std::string file = dir.path() + "/alice.token";
  ASSERT_EQ(testing::run_imapstage(device_args(idp, file)).exit_code, 0);
  auto r = testing::run_imapstage(refresh_args(idp, file));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Access-Token-1\n");
  EXPECT_EQ(read_file(file), "Refresh-Token-1\n");
  EXPECT_EQ(mode_of(file), 0600u);
  {
    std::lock_guard lock(idp.mutex);
    auto& p = idp.token_params.back();
    EXPECT_EQ(p.at("grant_type"), "refresh_token");
    EXPECT_EQ(p.at("refresh_token"), "Refresh-Token-0");
    EXPECT_EQ(p.at("scope"), "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access");
  }
  // As a token command: the refresh token in a file, nothing secret in the command line.
  auto again = testing::run_process({"/bin/sh", "-c",
                                     "\"$IMAPSTAGE\" oauth2 refresh --authority-url \"$AUTHORITY\" --client-id app-7 "
                                     "--refresh-token-file \"$FILE\""},
                                    {"IMAPSTAGE=" + testing::imapstage_binary(),
                                     "AUTHORITY=" + idp.authority("contoso.onmicrosoft.com"), "FILE=" + file});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, "Access-Token-2\n");
  EXPECT_EQ(read_file(file), "Refresh-Token-2\n");

  // A revoked refresh token is an auth error that says what to do; no token is printed.
  std::ofstream(file) << "Refresh-Token-Revoked\n";
  auto refused = testing::run_imapstage(refresh_args(idp, file));
  EXPECT_EQ(refused.exit_code, 3) << refused.err;
  EXPECT_EQ(refused.out, "");
  EXPECT_NE(refused.err.find("invalid_grant"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("oauth2 device"), std::string::npos) << refused.err;
  EXPECT_EQ(refused.err.find("Refresh-Token-Revoked"), std::string::npos) << refused.err;
}

TEST(OAuth2DeviceTest, ARefreshTokenFileOthersCanReadIsRefused) {
  IdentityPlatform idp;
  TempDir dir;
  std::string file = dir.path() + "/alice.token";
  ASSERT_EQ(testing::run_imapstage(device_args(idp, file)).exit_code, 0);
  std::filesystem::permissions(file, std::filesystem::perms::group_read | std::filesystem::perms::others_read,
                               std::filesystem::perm_options::add);
  auto r = testing::run_imapstage(refresh_args(idp, file));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("chmod 600"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
  std::lock_guard lock(idp.mutex);
  for (auto& p : idp.token_params) EXPECT_NE(p.at("grant_type"), "refresh_token");
}

TEST(OAuth2DeviceTest, ExpiredOrDeclinedSignInsFailWithoutWritingAFile) {
  for (const char* ending : {"expired_token", "access_denied"}) {
    IdentityPlatform idp;
    idp.script = {"authorization_pending", ending};
    TempDir dir;
    std::string file = dir.path() + "/alice.token";
    auto r = testing::run_imapstage(device_args(idp, file));
    EXPECT_EQ(r.exit_code, 3) << ending << ": " << r.err;
    EXPECT_NE(r.err.find(std::string(ending) == "expired_token" ? "expired" : "declined"), std::string::npos)
        << r.err;
    EXPECT_FALSE(std::filesystem::exists(file)) << ending;
  }
  // The device code's own lifetime ends the polling too.
  IdentityPlatform idp;
  idp.expires_in = 2;
  idp.script = {"authorization_pending", "authorization_pending", "authorization_pending", "authorization_pending"};
  TempDir dir;
  auto r = testing::run_imapstage(device_args(idp, dir.path() + "/t"));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("expired"), std::string::npos) << r.err;
  std::lock_guard lock(idp.mutex);
  EXPECT_LE(idp.polls.size(), 2u);
}

TEST(OAuth2DeviceTest, PlainHttpOnlyOnLoopback) {
  TempDir dir;
  auto r = testing::run_imapstage({"oauth2", "device", "--authority-url", "http://login.example.org/t/oauth2/v2.0",
                                   "--client-id", "app-7", "--refresh-token-file", dir.path() + "/t"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("plain http is accepted only on loopback"), std::string::npos) << r.err;
}

}  // namespace device

}  // namespace
}  // namespace imapstage

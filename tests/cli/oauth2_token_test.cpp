// imapstage oauth2 token (the client-credentials grant, Microsoft 365
// app-only access) against a local token endpoint speaking the Microsoft
// identity platform's v2.0 token protocol as documented: a form POST with
// client_id, client_secret, scope and grant_type, answered with JSON
// access_token or error/error_description.
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

}  // namespace
}  // namespace imapstage

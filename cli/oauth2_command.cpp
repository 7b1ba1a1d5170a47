// imapstage oauth2 token: an OAuth2 access token by the client-credentials
// grant (Microsoft 365 app-only access, IMAP.AccessAsApp), printed on stdout
// for use as a token command (--oauth2-token-cmd, a profile's token_cmd).
//
// POST https://login.microsoftonline.com/TENANT/oauth2/v2.0/token with
// client_id, client_secret, scope and grant_type=client_credentials (form
// encoded); the answer is JSON with access_token (or error and
// error_description). The client secret is read from a file, never argv; the
// certificate and host name of the endpoint are verified; plain http is
// accepted only for a loopback endpoint.
#include <cstdio>
#include <fstream>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/error.h"

namespace imapstage::cli {

namespace {

struct TokenArgs {
  std::string tenant;
  std::string client_id;
  std::string secret_file;
  std::string scope = "https://outlook.office365.com/.default";
  std::string endpoint;  // default: Microsoft's v2.0 token endpoint of the tenant
  std::string ca_file;
  int timeout_seconds = 30;
};

struct Url {
  std::string scheme, host, port, path;
};

// "scheme://host[:port]/path". Throws Error(usage).
Url parse_url(const std::string& text) {
  auto bad = [&] { return Error(ErrorKind::usage, "--endpoint must be an https:// URL, not " + text); };
  size_t sep = text.find("://");
  if (sep == std::string::npos) throw bad();
  Url u;
  u.scheme = text.substr(0, sep);
  if (u.scheme != "https" && u.scheme != "http") throw bad();
  size_t slash = text.find('/', sep + 3);
  std::string authority = text.substr(sep + 3, slash == std::string::npos ? std::string::npos : slash - sep - 3);
  u.path = slash == std::string::npos ? "/" : text.substr(slash);
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) throw bad();
    u.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') u.port = authority.substr(close + 2);
  } else {
    size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) u.port = authority.substr(colon + 1);
  }
  if (u.host.empty() || authority.find('@') != std::string::npos) throw bad();
  return u;
}

bool loopback(const std::string& host) { return host == "127.0.0.1" || host == "::1" || host == "localhost"; }

std::string read_client_secret(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw_io("cannot read the client secret file", file, errno);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  if (line.empty()) throw Error(ErrorKind::usage, "the client secret file is empty", Retry::never, {.file = file});
  return line;
}

// Only printable ASCII of a server's error text, at most 300 bytes.
std::string printable_text(const std::string& text) {
  std::string out;
  for (char c : text.substr(0, 300)) out += (c >= 0x20 && c < 0x7f) ? c : ' ';
  return out;
}

std::string client_credentials_token(const TokenArgs& a) {
  std::string endpoint =
      a.endpoint.empty() ? fmt::format("https://login.microsoftonline.com/{}/oauth2/v2.0/token", a.tenant) : a.endpoint;
  if (a.endpoint.empty() && (a.tenant.empty() || a.tenant.find_first_of("/?#@: ") != std::string::npos))
    throw Error(ErrorKind::usage, "--tenant must be a tenant ID or domain, not \"" + a.tenant + "\"");
  Url url = parse_url(endpoint);
  if (url.scheme == "http" && !loopback(url.host))
    throw Error(ErrorKind::usage, "--endpoint: plain http is accepted only on loopback; use https");
  std::string secret = read_client_secret(a.secret_file);

  std::string base = url.scheme + "://" + (url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host) +
                     (url.port.empty() ? "" : ":" + url.port);
  httplib::Client client(base);
  client.enable_server_certificate_verification(true);
  if (!a.ca_file.empty()) client.set_ca_cert_path(a.ca_file.c_str());
  client.set_connection_timeout(std::chrono::seconds(a.timeout_seconds));
  client.set_read_timeout(std::chrono::seconds(a.timeout_seconds));
  client.set_write_timeout(std::chrono::seconds(a.timeout_seconds));
  httplib::Params form = {{"client_id", a.client_id},
                          {"client_secret", secret},
                          {"scope", a.scope},
                          {"grant_type", "client_credentials"}};
  auto res = client.Post(url.path, form);
  std::fill(secret.begin(), secret.end(), '\0');
  if (!res) {
    auto err = res.error();
    bool tls = err == httplib::Error::SSLConnection || err == httplib::Error::SSLServerVerification;
    throw Error(tls ? ErrorKind::tls : ErrorKind::network,
                fmt::format("token endpoint {}{}: {}", base, url.path, httplib::to_string(err)), Retry::later);
  }
  nlohmann::json body = nlohmann::json::parse(res->body, nullptr, false);
  if (res->status == 200 && body.is_object() && body.contains("access_token") && body["access_token"].is_string()) {
    std::string token = body["access_token"].get<std::string>();
    if (!token.empty()) return token;
  }
  std::string why = fmt::format("HTTP {}", res->status);
  if (body.is_object()) {
    if (body.contains("error") && body["error"].is_string()) why += ": " + printable_text(body["error"].get<std::string>());
    if (body.contains("error_description") && body["error_description"].is_string())
      why += " (" + printable_text(body["error_description"].get<std::string>()) + ")";
  }
  bool refused = res->status == 400 || res->status == 401 || res->status == 403;
  throw Error(refused ? ErrorKind::auth : ErrorKind::protocol,
              fmt::format("the token endpoint {}{} gave no token for client {}: {}", base, url.path, a.client_id, why),
              refused ? Retry::never : Retry::later);
}

}  // namespace

void add_oauth2_command(CLI::App& app, int& status) {
  auto* cmd = app.add_subcommand("oauth2", "OAuth2 helpers for XOAUTH2 logins (token commands)");
  cmd->require_subcommand(1);
  auto args = std::make_shared<TokenArgs>();
  auto* token = cmd->add_subcommand(
      "token",
      "Print an access token from the client-credentials grant (Microsoft 365 app-only access) on stdout, for "
      "--oauth2-token-cmd or a profile's token_cmd");
  token->add_option("--tenant", args->tenant, "Microsoft Entra tenant ID or domain (e.g. contoso.onmicrosoft.com)");
  token->add_option("--client-id", args->client_id, "Application (client) ID of the app registration")->required();
  token->add_option("--client-secret-file", args->secret_file, "File whose first line is the client secret")
      ->required()
      ->check(CLI::ExistingFile);
  token->add_option("--scope", args->scope, "Scope (default https://outlook.office365.com/.default)");
  token->add_option("--endpoint", args->endpoint,
                    "Token endpoint URL (default https://login.microsoftonline.com/TENANT/oauth2/v2.0/token; "
                    "plain http only on loopback)");
  token->add_option("--ca-file", args->ca_file, "PEM file of CA certificates to trust instead of the system's")
      ->check(CLI::ExistingFile);
  token->add_option("--timeout", args->timeout_seconds, "Seconds to wait for the endpoint (default 30)")
      ->check(CLI::PositiveNumber);
  token->callback([args, &status] {
    if (args->tenant.empty() && args->endpoint.empty())
      throw Error(ErrorKind::usage, "oauth2 token needs --tenant (or --endpoint)");
    std::string t = client_credentials_token(*args);
    t += '\n';
    if (std::fwrite(t.data(), 1, t.size(), stdout) != t.size() || std::fflush(stdout) != 0)
      throw_io("cannot write to stdout", "-", errno);
    std::fill(t.begin(), t.end(), '\0');
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

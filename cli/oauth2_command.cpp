// imapstage oauth2: OAuth2 helpers whose output is an access token on
// stdout, for use as a token command (--oauth2-token-cmd, a profile's
// token_cmd).
//
// oauth2 token: the client-credentials grant (Microsoft 365 app-only
// access, IMAP.AccessAsApp). POST https://login.microsoftonline.com/TENANT/
// oauth2/v2.0/token with client_id, client_secret, scope and
// grant_type=client_credentials (form encoded); the answer is JSON with
// access_token (or error and error_description).
//
// oauth2 device: the device authorization grant (RFC 8628) for delegated
// access. POST AUTHORITY/devicecode with client_id and scope; the answer
// names device_code, user_code, verification_uri, expires_in and interval.
// The user is told on stderr where to go and which code to enter; the token
// endpoint (AUTHORITY/token, grant_type=urn:ietf:params:oauth:grant-type:
// device_code) is polled every `interval` seconds (5 by default; 5 more
// after each slow_down; doubled after a failed connection) while it answers
// authorization_pending, until it gives the tokens, or answers
// expired_token, access_denied or another error, or expires_in has passed.
// Only the refresh token is kept: in the file the user names, owner-only
// (0600), written to a temporary file and renamed into place.
//
// oauth2 refresh: POST AUTHORITY/token with grant_type=refresh_token and the
// stored refresh token; prints the access token; a new refresh token in the
// answer (rotation) replaces the stored one the same way. A refresh-token
// file that others may read is refused.
//
// Secrets (client secret, device code, tokens) come from files or the
// endpoints, never argv, and are never printed except the access token on
// stdout. The certificate and host name of the endpoints are verified;
// plain http is accepted only for a loopback endpoint.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

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

// An endpoint: a client for its origin and the path to POST to.
struct Endpoint {
  std::string role;  // "token endpoint", for messages
  std::string url;   // as given, for messages
  std::string base;  // scheme://host[:port]
  std::string path;
};

Endpoint endpoint_of(std::string role, const std::string& text, const char* option) {
  Url url;
  try {
    url = parse_url(text);
  } catch (const Error&) {
    throw Error(ErrorKind::usage, fmt::format("{} must be an https:// URL, not {}", option, text));
  }
  if (url.scheme == "http" && !loopback(url.host))
    throw Error(ErrorKind::usage, fmt::format("{}: plain http is accepted only on loopback; use https", option));
  std::string host = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  return {std::move(role), text, url.scheme + "://" + host + (url.port.empty() ? "" : ":" + url.port), url.path};
}

struct Answer {
  int status = 0;
  nlohmann::json body;  // discarded (null) when not JSON
  // "error" and "error_description" as printable text ("" when absent).
  std::string error() const {
    if (!body.is_object() || !body.contains("error") || !body["error"].is_string()) return "";
    return printable_text(body["error"].get<std::string>());
  }
  std::string describe() const {
    std::string why = fmt::format("HTTP {}", status);
    if (!error().empty()) why += ": " + error();
    if (body.is_object() && body.contains("error_description") && body["error_description"].is_string())
      why += " (" + printable_text(body["error_description"].get<std::string>()) + ")";
    return why;
  }
  std::string text(const char* key) const {
    if (!body.is_object() || !body.contains(key) || !body[key].is_string()) return "";
    return body[key].get<std::string>();
  }
};

// POSTs `form` (form encoded), the server's certificate verified (against
// `ca_file` when given), `timeout_seconds` per step. Throws Error(network or
// tls, later) naming the endpoint when no answer came.
Answer post_form(const Endpoint& e, const httplib::Params& form, const std::string& ca_file, int timeout_seconds) {
  httplib::Client client(e.base);
  client.enable_server_certificate_verification(true);
  if (!ca_file.empty()) client.set_ca_cert_path(ca_file.c_str());
  client.set_connection_timeout(std::chrono::seconds(timeout_seconds));
  client.set_read_timeout(std::chrono::seconds(timeout_seconds));
  client.set_write_timeout(std::chrono::seconds(timeout_seconds));
  auto res = client.Post(e.path, form);
  if (!res) {
    auto err = res.error();
    bool tls = err == httplib::Error::SSLConnection || err == httplib::Error::SSLServerVerification;
    throw Error(tls ? ErrorKind::tls : ErrorKind::network, fmt::format("{} {}: {}", e.role, e.url, httplib::to_string(err)),
                Retry::later);
  }
  return {res->status, nlohmann::json::parse(res->body, nullptr, false)};
}

std::string client_credentials_token(const TokenArgs& a) {
  std::string endpoint =
      a.endpoint.empty() ? fmt::format("https://login.microsoftonline.com/{}/oauth2/v2.0/token", a.tenant) : a.endpoint;
  if (a.endpoint.empty() && (a.tenant.empty() || a.tenant.find_first_of("/?#@: ") != std::string::npos))
    throw Error(ErrorKind::usage, "--tenant must be a tenant ID or domain, not \"" + a.tenant + "\"");
  Endpoint token_endpoint = endpoint_of("token endpoint", endpoint, "--endpoint");
  std::string secret = read_client_secret(a.secret_file);
  httplib::Params form = {{"client_id", a.client_id},
                          {"client_secret", secret},
                          {"scope", a.scope},
                          {"grant_type", "client_credentials"}};
  std::fill(secret.begin(), secret.end(), '\0');
  Answer t = post_form(token_endpoint, form, a.ca_file, a.timeout_seconds);
  std::string token = t.text("access_token");
  if (t.status == 200 && !token.empty()) return token;
  bool refused = t.status == 400 || t.status == 401 || t.status == 403;
  throw Error(refused ? ErrorKind::auth : ErrorKind::protocol,
              fmt::format("the token endpoint {} gave no token for client {}: {}", token_endpoint.url, a.client_id,
                          t.describe()),
              refused ? Retry::never : Retry::later);
}

// --- delegated access: the device authorization grant and refresh tokens ---

struct DeviceArgs {
  std::string tenant;
  std::string authority;        // base URL of the endpoints (default Microsoft's v2.0 of the tenant)
  std::string device_endpoint;  // default AUTHORITY/devicecode
  std::string token_endpoint;   // default AUTHORITY/token
  std::string client_id;
  std::string client_secret_file;  // optional (public clients have none)
  std::string scope = "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access";
  std::string refresh_token_file;
  std::string ca_file;
  int timeout_seconds = 30;
};

// The device and token endpoints the options name.
std::pair<Endpoint, Endpoint> device_endpoints(const DeviceArgs& a) {
  std::string base = a.authority;
  if (base.empty()) {
    if (a.tenant.empty() && (a.device_endpoint.empty() || a.token_endpoint.empty()))
      throw Error(ErrorKind::usage, "give --tenant (Microsoft 365) or --authority-url");
    if (!a.tenant.empty() && a.tenant.find_first_of("/?#@: ") != std::string::npos)
      throw Error(ErrorKind::usage, "--tenant must be a tenant ID or domain, not \"" + a.tenant + "\"");
    base = fmt::format("https://login.microsoftonline.com/{}/oauth2/v2.0", a.tenant);
  }
  while (!base.empty() && base.back() == '/') base.pop_back();
  return {endpoint_of("device authorization endpoint", a.device_endpoint.empty() ? base + "/devicecode" : a.device_endpoint,
                      a.device_endpoint.empty() ? "--authority-url" : "--device-endpoint"),
          endpoint_of("token endpoint", a.token_endpoint.empty() ? base + "/token" : a.token_endpoint,
                      a.token_endpoint.empty() ? "--authority-url" : "--token-endpoint")};
}

// The form fields that identify the client (client_id, and client_secret when a file names one).
httplib::Params client_form(const DeviceArgs& a) {
  httplib::Params form = {{"client_id", a.client_id}};
  if (!a.client_secret_file.empty()) form.emplace("client_secret", read_client_secret(a.client_secret_file));
  return form;
}

// Writes the refresh token to `path`, owner-only: a temporary file (0600)
// beside it, synced, renamed over it. Throws Error(io) naming the path.
void store_refresh_token(const std::string& path, const std::string& token) {
  std::string tmp = path + ".XXXXXX";
  int fd = ::mkstemp(tmp.data());  // created 0600
  if (fd < 0) throw_io("cannot create the refresh-token file", path, errno);
  std::string text = token + "\n";
  bool ok = ::fchmod(fd, S_IRUSR | S_IWUSR) == 0;
  for (size_t done = 0; ok && done < text.size();) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  int err = errno;
  std::fill(text.begin(), text.end(), '\0');
  ok = ok && ::fsync(fd) == 0;
  if (!ok) err = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    throw_io("cannot write the refresh-token file", path, err);
  }
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// The stored refresh token. Throws Error(usage) when others may read the
// file (a refresh token is a password), Error(io) when it cannot be read.
std::string load_refresh_token(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_io("cannot read the refresh-token file", path, errno);
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    throw Error(ErrorKind::usage,
                fmt::format("the refresh-token file can be read by others (mode {:04o}); make it owner-only "
                            "(chmod 600)", st.st_mode & 07777),
                Retry::never, {.file = path});
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) throw_io("cannot read the refresh-token file", path, errno ? errno : EIO);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  if (line.empty()) throw Error(ErrorKind::usage, "the refresh-token file is empty", Retry::never, {.file = path});
  return line;
}

void say_err(const std::string& text) {
  std::fputs(text.c_str(), stderr);
  std::fflush(stderr);
}

// RFC 8628: asks for a device code, tells the user where to sign in, polls
// until the sign-in is done, and stores the refresh token.
void device_flow(const DeviceArgs& a) {
  auto [device, token_endpoint] = device_endpoints(a);
  httplib::Params form = client_form(a);
  form.emplace("scope", a.scope);
  Answer d = post_form(device, form, a.ca_file, a.timeout_seconds);
  std::string device_code = d.text("device_code"), user_code = d.text("user_code");
  std::string uri = d.text("verification_uri");
  if (uri.empty()) uri = d.text("verification_url");  // as Google spells it
  if (d.status != 200 || device_code.empty() || user_code.empty() || uri.empty()) {
    bool refused = d.status == 400 || d.status == 401 || d.status == 403;
    throw Error(refused ? ErrorKind::auth : ErrorKind::protocol,
                fmt::format("the device authorization endpoint {} gave no device code for client {}: {}", device.url,
                            a.client_id, d.describe()),
                refused ? Retry::never : Retry::later);
  }
  auto number = [&](const char* key, int64_t fallback) {
    return d.body.contains(key) && d.body[key].is_number_integer() ? d.body[key].get<int64_t>() : fallback;
  };
  int64_t interval = std::clamp<int64_t>(number("interval", 5), 1, 300);
  int64_t expires_in = std::clamp<int64_t>(number("expires_in", 900), 1, 86400);
  std::string complete = d.text("verification_uri_complete");
  say_err(fmt::format("To sign in, open {} and enter the code {}{} (within {} minutes).\n", printable_text(uri),
                      printable_text(user_code),
                      complete.empty() ? "" : fmt::format(", or open {}", printable_text(complete)),
                      (expires_in + 59) / 60));

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(expires_in);
  httplib::Params poll = client_form(a);
  poll.emplace("grant_type", "urn:ietf:params:oauth:grant-type:device_code");
  poll.emplace("device_code", device_code);
  for (;;) {
    std::this_thread::sleep_for(std::chrono::seconds(interval));
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error(ErrorKind::auth, "the device code expired before the sign-in was completed; run it again",
                  Retry::never);
    Answer t;
    try {
      t = post_form(token_endpoint, poll, a.ca_file, a.timeout_seconds);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::tls) throw;
      interval = std::min<int64_t>(interval * 2, 300);  // RFC 8628 3.5: poll less often after a failed connection
      continue;
    }
    std::string error = t.error();
    if (error == "authorization_pending") continue;
    if (error == "slow_down") {
      interval += 5;
      continue;
    }
    std::string access = t.text("access_token"), refresh = t.text("refresh_token");
    if (t.status == 200 && !access.empty()) {
      std::fill(access.begin(), access.end(), '\0');
      if (refresh.empty())
        throw Error(ErrorKind::auth,
                    "signed in, but the token endpoint gave no refresh token (ask for the offline_access scope)",
                    Retry::never);
      store_refresh_token(a.refresh_token_file, refresh);
      std::fill(refresh.begin(), refresh.end(), '\0');
      say_err(fmt::format("Signed in; the refresh token is stored in {} (owner-only). Log in with "
                          "--oauth2-token-cmd 'imapstage oauth2 refresh ... --refresh-token-file {}'.\n",
                          a.refresh_token_file, a.refresh_token_file));
      return;
    }
    if (error == "expired_token")
      throw Error(ErrorKind::auth, "the device code expired before the sign-in was completed; run it again",
                  Retry::never);
    if (error == "access_denied")
      throw Error(ErrorKind::auth, "the sign-in was declined (access_denied)", Retry::never);
    bool refused = t.status == 400 || t.status == 401 || t.status == 403;
    throw Error(refused ? ErrorKind::auth : ErrorKind::protocol,
                fmt::format("the token endpoint {} gave no token for client {}: {}", token_endpoint.url, a.client_id,
                            t.describe()),
                refused ? Retry::never : Retry::later);
  }
}

// A fresh access token from the stored refresh token; a rotated refresh token replaces it.
std::string refresh_access_token(const DeviceArgs& a) {
  auto endpoints = device_endpoints(a);
  const Endpoint& token_endpoint = endpoints.second;
  std::string refresh = load_refresh_token(a.refresh_token_file);
  httplib::Params form = client_form(a);
  form.emplace("grant_type", "refresh_token");
  form.emplace("refresh_token", refresh);
  form.emplace("scope", a.scope);
  Answer t = post_form(token_endpoint, form, a.ca_file, a.timeout_seconds);
  std::string access = t.text("access_token"), rotated = t.text("refresh_token");
  if (t.status == 200 && !access.empty()) {
    if (!rotated.empty() && rotated != refresh) store_refresh_token(a.refresh_token_file, rotated);
    std::fill(refresh.begin(), refresh.end(), '\0');
    std::fill(rotated.begin(), rotated.end(), '\0');
    return access;
  }
  std::fill(refresh.begin(), refresh.end(), '\0');
  bool refused = t.status == 400 || t.status == 401 || t.status == 403;
  std::string hint = t.error() == "invalid_grant" ? " (expired or revoked: sign in again with imapstage oauth2 device)" : "";
  throw Error(refused ? ErrorKind::auth : ErrorKind::protocol,
              fmt::format("the token endpoint {} refused the refresh token of {} for client {}: {}{}",
                          token_endpoint.url, a.refresh_token_file, a.client_id, t.describe(), hint),
              refused ? Retry::never : Retry::later);
}

void print_token(std::string t) {
  t += '\n';
  if (std::fwrite(t.data(), 1, t.size(), stdout) != t.size() || std::fflush(stdout) != 0)
    throw_io("cannot write to stdout", "-", errno);
  std::fill(t.begin(), t.end(), '\0');
}

// The options device and refresh share.
void add_device_options(CLI::App* cmd, DeviceArgs& a) {
  cmd->add_option("--tenant", a.tenant, "Microsoft Entra tenant ID or domain (organizations and common work too)");
  cmd->add_option("--authority-url", a.authority,
                  "Base URL of the identity platform's endpoints, AUTHORITY/devicecode and AUTHORITY/token "
                  "(default https://login.microsoftonline.com/TENANT/oauth2/v2.0; plain http only on loopback)");
  cmd->add_option("--device-endpoint", a.device_endpoint, "Device authorization endpoint URL (overrides the authority's)");
  cmd->add_option("--token-endpoint", a.token_endpoint, "Token endpoint URL (overrides the authority's)");
  cmd->add_option("--client-id", a.client_id, "Application (client) ID")->required();
  cmd->add_option("--client-secret-file", a.client_secret_file,
                  "File whose first line is the client secret, for clients that have one (e.g. Google's)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--scope", a.scope,
                  "Scopes, space-separated (default https://outlook.office365.com/IMAP.AccessAsUser.All "
                  "offline_access)");
  cmd->add_option("--refresh-token-file", a.refresh_token_file,
                  "The refresh token's file: written owner-only (0600) by device, read (and replaced when the "
                  "endpoint rotates it) by refresh")
      ->required();
  cmd->add_option("--ca-file", a.ca_file, "PEM file of CA certificates to trust instead of the system's")
      ->check(CLI::ExistingFile);
  cmd->add_option("--timeout", a.timeout_seconds, "Seconds to wait for an endpoint (default 30)")
      ->check(CLI::PositiveNumber);
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
    print_token(client_credentials_token(*args));
    status = kExitOk;
  });

  auto device_args = std::make_shared<DeviceArgs>();
  auto* device = cmd->add_subcommand(
      "device",
      "Sign in a delegated account with the device authorization grant (RFC 8628): prints where to sign in and the "
      "code to enter, waits, and stores the refresh token owner-only in --refresh-token-file");
  add_device_options(device, *device_args);
  device->callback([device_args, &status] {
    device_flow(*device_args);
    status = kExitOk;
  });

  auto refresh_args = std::make_shared<DeviceArgs>();
  auto* refresh = cmd->add_subcommand(
      "refresh",
      "Print a fresh access token from the refresh token `oauth2 device` stored, for --oauth2-token-cmd or a "
      "profile's token_cmd");
  add_device_options(refresh, *refresh_args);
  refresh->callback([refresh_args, &status] {
    print_token(refresh_access_token(*refresh_args));
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

#include "batch/profiles.h"

#include <set>

#include "batch/providers.h"
#include "common/message_filter.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "common/error.h"
#include "common/token_command.h"

namespace imapstage::batch {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string replace_user(std::string text, const std::string& mailbox) {
  for (size_t at = text.find("{user}"); at != std::string::npos; at = text.find("{user}", at + mailbox.size()))
    text.replace(at, 6, mailbox);
  return text;
}

[[noreturn]] void bad(const std::filesystem::path& origin, const toml::node& node, const std::string& what) {
  auto line = node.source().begin.line;
  throw Error(ErrorKind::usage, fmt::format("{}:{}: {}", origin.empty() ? "config" : origin.string(), line, what),
              Retry::never, {.file = origin.string()});
}

std::string want_string(const std::filesystem::path& origin, const std::string& profile, const std::string& key,
                        const toml::node& node) {
  auto v = node.value<std::string>();
  if (!v) bad(origin, node, fmt::format("profile {}: {} must be a string", profile, key));
  return *v;
}

int64_t want_int(const std::filesystem::path& origin, const std::string& profile, const std::string& key,
                 const toml::node& node, int64_t lo, int64_t hi) {
  // Only an integer node: value<int64_t>() would convert a float, and toml++
  // does that without a range check.
  const auto* integer = node.as_integer();
  if (!integer) bad(origin, node, fmt::format("profile {}: {} must be an integer", profile, key));
  std::optional<int64_t> v = integer->get();
  if (*v < lo || *v > hi) bad(origin, node, fmt::format("profile {}: {} must be between {} and {}", profile, key, lo, hi));
  return *v;
}

Profile parse_profile(const std::filesystem::path& origin, const std::string& name, const toml::table& t,
                      std::vector<std::string>& warnings) {
  Profile p;
  p.name = name;
  bool have_mechanism = false;
  std::set<std::string> explicit_keys;
  if (auto* prov = t.get("provider")) {
    try {
      p.apply_provider(want_string(origin, name, "provider", *prov));
    } catch (const Error& e) {
      bad(origin, *prov, fmt::format("profile {}: {}", name, e.message()));
    }
  }
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    try {
      if (key == "host") p.host = want_string(origin, name, key, v);
      else if (key == "protocol") {
        p.protocol = want_string(origin, name, key, v);
        if (p.protocol != "imap" && p.protocol != "pop3")
          bad(origin, v, fmt::format("profile {}: protocol must be imap or pop3", name));
      }
      else if (key == "port") p.port = static_cast<uint16_t>(want_int(origin, name, key, v, 1, 65535));
      else if (key == "tls") {
        p.tls = want_string(origin, name, key, v);
        if (p.tls != "implicit" && p.tls != "starttls" && p.tls != "none")
          bad(origin, v, fmt::format("profile {}: tls must be implicit, starttls or none", name));
      } else if (key == "ca_file") p.ca_file = want_string(origin, name, key, v);
      else if (key == "insecure") {
        auto b = v.value<bool>();
        if (!b || !v.is_boolean()) bad(origin, v, fmt::format("profile {}: insecure must be true or false", name));
        p.insecure = *b;
      } else if (key == "timeout") p.timeout_seconds = static_cast<int>(want_int(origin, name, key, v, 1, 86400));
      else if (key == "auth") p.auth = parse_auth_mode(want_string(origin, name, key, v));
      else if (key == "mechanism") {
        p.mechanism = parse_mechanism(want_string(origin, name, key, v));
        have_mechanism = true;
      } else if (key == "admin_user") p.admin_user = want_string(origin, name, key, v);
      else if (key == "master_separator") p.master_separator = want_string(origin, name, key, v);
      else if (key == "password_file" || key == "token_file") p.password_file = want_string(origin, name, key, v);
      else if (key == "password_env" || key == "token_env") p.password_env = want_string(origin, name, key, v);
      else if (key == "token_cmd") {
        p.token_cmd = want_string(origin, name, key, v);
        if (p.token_cmd.empty()) bad(origin, v, fmt::format("profile {}: token_cmd is empty", name));
      } else if (key == "password" || key == "token") {
        p.inline_password = want_string(origin, name, key, v);
        warnings.push_back(fmt::format("profile {} has an inline {} in {}: prefer password_file or password_env "
                                       "(and keep the file readable only by you)",
                                       name, key, origin.empty() ? "the config" : origin.string()));
      } else if (key == "provider") {
        // applied after the loop: the profile's own keys win
      } else if (key == "daily_budget") {
        if (auto n = v.value<int64_t>(); n && v.is_integer()) p.daily_budget = static_cast<uint64_t>(std::max<int64_t>(0, *n));
        else {
          std::string text = want_string(origin, name, key, v);
          p.daily_budget = text.empty() ? 0 : parse_size(text);
        }
        explicit_keys.insert(key);
      } else if (key == "server_max_bandwidth") {
        p.server_max_bytes_per_second = double(parse_size(want_string(origin, name, key, v)));
        explicit_keys.insert(key);
      } else if (key == "server_max_messages_per_second") {
        p.server_max_messages_per_second = double(want_int(origin, name, key, v, 0, 1000000));
        explicit_keys.insert(key);
      } else if (key == "restore_flagged") {
        auto b = v.value<bool>();
        if (!b || !v.is_boolean()) bad(origin, v, fmt::format("profile {}: restore_flagged must be true or false", name));
        p.restore_flagged = *b;
        explicit_keys.insert(key);
      } else if (key == "case_insensitive_names") {
        auto b = v.value<bool>();
        if (!b || !v.is_boolean())
          bad(origin, v, fmt::format("profile {}: case_insensitive_names must be true or false", name));
        p.case_insensitive_names = *b;
        explicit_keys.insert(key);
      } else if (key == "reserved_folders") {
        auto* arr = v.as_array();
        if (!arr) bad(origin, v, fmt::format("profile {}: reserved_folders must be an array of strings", name));
        p.reserved_folders.clear();
        for (auto& r : *arr) p.reserved_folders.push_back(want_string(origin, name, key, r));
        explicit_keys.insert(key);
      } else if (key == "max_command_length") {
        p.max_command_length = static_cast<size_t>(want_int(origin, name, key, v, 200, 1000000));
        explicit_keys.insert(key);
      } else if (key == "domains") {
        auto* arr = v.as_array();
        if (!arr) bad(origin, v, fmt::format("profile {}: domains must be an array of strings", name));
        for (auto& d : *arr) p.domains.push_back(lower(want_string(origin, name, key, d)));
      } else {
        bad(origin, v, fmt::format("profile {}: unknown key {}", name, key));
      }
    } catch (const Error& e) {
      if (e.message().find(':') != std::string::npos && e.message().starts_with(origin.empty() ? "config" : origin.string()))
        throw;
      bad(origin, v, fmt::format("profile {}: {}", name, e.message()));
    }
  }
  if (p.host.empty()) bad(origin, t, fmt::format("profile {}: host is missing", name));
  if ((p.auth == AuthMode::admin_plain || p.auth == AuthMode::master_user) && p.admin_user.empty())
    bad(origin, t, fmt::format("profile {}: auth = \"{}\" needs admin_user", name, to_string(p.auth)));
  if (p.auth == AuthMode::admin_plain) {
    if (have_mechanism && p.mechanism != imap::AuthMechanism::plain)
      bad(origin, t, fmt::format("profile {}: admin-plain always uses mechanism plain", name));
    p.mechanism = imap::AuthMechanism::plain;
  }
  if (p.auth == AuthMode::master_user) {
    if (have_mechanism && p.mechanism != imap::AuthMechanism::login && p.mechanism != imap::AuthMechanism::plain)
      bad(origin, t, fmt::format("profile {}: master-user logs in with login or plain", name));
    if (p.master_separator.empty()) bad(origin, t, fmt::format("profile {}: master_separator is empty", name));
  }
  if (!p.token_cmd.empty()) {
    if (p.auth != AuthMode::user && p.auth != AuthMode::magic)
      bad(origin, t, fmt::format("profile {}: token_cmd needs auth = \"user\" or \"magic\" (XOAUTH2)", name));
    if (have_mechanism && p.mechanism != imap::AuthMechanism::xoauth2)
      bad(origin, t, fmt::format("profile {}: token_cmd logs in with mechanism xoauth2", name));
    p.mechanism = imap::AuthMechanism::xoauth2;
  }
  if (p.auth != AuthMode::user && p.password_file.empty() && p.password_env.empty() && p.inline_password.empty() &&
      p.token_cmd.empty())
    bad(origin, t, fmt::format("profile {}: auth = \"{}\" needs password_file or password_env", name,
                               to_string(p.auth)));
  return p;
}

}  // namespace

const char* to_string(AuthMode mode) {
  switch (mode) {
    case AuthMode::user: return "user";
    case AuthMode::admin_plain: return "admin-plain";
    case AuthMode::master_user: return "master-user";
    case AuthMode::magic: return "magic";
  }
  return "?";
}

AuthMode parse_auth_mode(std::string_view text) {
  if (text == "user") return AuthMode::user;
  if (text == "admin-plain" || text == "admin") return AuthMode::admin_plain;
  if (text == "master-user" || text == "master") return AuthMode::master_user;
  if (text == "magic") return AuthMode::magic;
  throw Error(ErrorKind::usage,
              fmt::format("auth mode must be user, admin-plain, master-user or magic, not {}", text));
}

const char* to_string(imap::AuthMechanism m) {
  switch (m) {
    case imap::AuthMechanism::login: return "login";
    case imap::AuthMechanism::plain: return "plain";
    case imap::AuthMechanism::cram_md5: return "cram-md5";
    case imap::AuthMechanism::xoauth2: return "xoauth2";
    case imap::AuthMechanism::apop: return "apop";
  }
  return "?";
}

imap::AuthMechanism parse_mechanism(std::string_view text) {
  std::string t = lower(text);
  if (t == "login") return imap::AuthMechanism::login;
  if (t == "plain") return imap::AuthMechanism::plain;
  if (t == "cram-md5" || t == "cram_md5") return imap::AuthMechanism::cram_md5;
  if (t == "xoauth2") return imap::AuthMechanism::xoauth2;
  if (t == "apop") return imap::AuthMechanism::apop;
  throw Error(ErrorKind::usage, fmt::format("mechanism must be login, plain, cram-md5, xoauth2 or apop (POP3), not {}", text));
}

std::string domain_of(std::string_view user) {
  auto at = user.rfind('@');
  return at == std::string_view::npos ? std::string() : lower(user.substr(at + 1));
}

bool Profile::serves(std::string_view user) const {
  std::string d = domain_of(user);
  for (auto& x : domains)
    if (x == "*" || (!d.empty() && x == d)) return true;
  return false;
}

imap::Endpoint Profile::endpoint() const {
  imap::Endpoint e;
  e.host = host;
  e.port = port;
  if (tls == "implicit") e.tls = imap::TlsMode::implicit;
  else if (tls == "starttls") e.tls = imap::TlsMode::starttls;
  else if (tls == "none") e.tls = imap::TlsMode::none;
  else throw Error(ErrorKind::usage, fmt::format("profile {}: tls must be implicit, starttls or none", name));
  e.ca_file = ca_file;
  e.insecure = insecure;
  e.timeout = std::chrono::seconds(timeout_seconds);
  e.max_message_size = max_message_mib << 20;
  if (max_command_length) e.max_command_length = max_command_length;
  return e;
}

pop3::Endpoint Profile::pop3_endpoint() const {
  imap::Endpoint e = endpoint();
  pop3::Endpoint p;
  p.host = e.host;
  p.port = e.port;
  p.tls = e.tls;
  p.ca_file = e.ca_file;
  p.insecure = e.insecure;
  p.timeout = e.timeout;
  p.max_message_size = e.max_message_size;
  return p;
}

std::string Profile::address() const { return protocol == "pop3" ? pop3_endpoint().address() : endpoint().address(); }

pop3::Credentials pop3_credentials(const imap::Credentials& c) {
  pop3::Credentials p;
  p.user = c.user;
  p.secret = c.secret;
  p.tokens = c.tokens;
  p.auth_user = c.auth_user;
  switch (c.mechanism) {
    case imap::AuthMechanism::login: p.mechanism = pop3::Mechanism::user_pass; break;
    case imap::AuthMechanism::plain: p.mechanism = pop3::Mechanism::plain; break;
    case imap::AuthMechanism::cram_md5: p.mechanism = pop3::Mechanism::cram_md5; break;
    case imap::AuthMechanism::xoauth2: p.mechanism = pop3::Mechanism::xoauth2; break;
    case imap::AuthMechanism::apop: p.mechanism = pop3::Mechanism::apop; break;
  }
  return p;
}

bool Profile::supplies_secret() const {
  return auth != AuthMode::user || !password_file.empty() || !password_env.empty() || !inline_password.empty() ||
         !token_cmd.empty();
}

const Profile& Config::profile(std::string_view name) const {
  auto it = profiles.find(std::string(name));
  if (it != profiles.end()) return it->second;
  std::string known;
  for (auto& [n, p] : profiles) known += (known.empty() ? "" : ", ") + n;
  throw Error(ErrorKind::usage,
              fmt::format("no profile named {} in {}{}", name, origin.empty() ? "the config" : origin.string(),
                          known.empty() ? " (it has none)" : " (known: " + known + ")"));
}

const Profile* Config::profile_for(std::string_view user) const {
  std::string d = domain_of(user);
  const Profile* wildcard = nullptr;
  for (auto& [n, p] : profiles) {
    for (auto& x : p.domains) {
      if (!d.empty() && x == d) return &p;
      if (x == "*" && !wildcard) wildcard = &p;
    }
  }
  return wildcard;
}

Config parse_config(std::string_view text, const std::filesystem::path& origin) {
  Config config;
  config.origin = origin;
  toml::table root;
  try {
    root = toml::parse(text, origin.string());
  } catch (const toml::parse_error& e) {
    throw Error(ErrorKind::usage,
                fmt::format("{}:{}: {}", origin.empty() ? "config" : origin.string(), e.source().begin.line,
                            e.description()),
                Retry::never, {.file = origin.string()});
  }
  for (auto&& [k, v] : root) {
    if (k.str() == "serve" || k.str() == "login_hook" || k.str() == "web") continue;  // read by serve/config.h
    if (k.str() != "profiles") bad(origin, v, fmt::format("unknown section or key {}", k.str()));
    auto* profiles = v.as_table();
    if (!profiles) bad(origin, v, "profiles must be a table of [profiles.NAME] sections");
    for (auto&& [name, body] : *profiles) {
      auto* t = body.as_table();
      if (!t) bad(origin, body, fmt::format("profiles.{} must be a table", name.str()));
      std::string n(name.str());
      config.profiles.emplace(n, parse_profile(origin, n, *t, config.warnings));
    }
  }
  return config;
}

Config load_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_io("cannot read the config file", path.string(), errno);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return parse_config(buffer.str(), path);
}

std::filesystem::path default_config_path() {
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg)
    return std::filesystem::path(xdg) / "imapstage" / "config.toml";
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::filesystem::path(home) / ".config" / "imapstage" / "config.toml";
  return {};
}

Config load_config_or_default(const std::string& explicit_path) {
  if (!explicit_path.empty()) return load_config(explicit_path);
  auto path = default_config_path();
  std::error_code ec;
  if (!path.empty() && std::filesystem::exists(path, ec)) return load_config(path);
  return Config{};
}

std::string profile_secret(const Profile& p, const std::string& mailbox) {
  if (!p.password_file.empty()) {
    std::string path = replace_user(p.password_file, mailbox);
    std::ifstream in(path);
    if (!in) throw_io(fmt::format("profile {}: cannot read the password file", p.name), path, errno);
    std::string line;
    std::getline(in, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty())
      throw Error(ErrorKind::usage, fmt::format("profile {}: the password file is empty", p.name), Retry::never,
                  {.file = path});
    return line;
  }
  if (!p.password_env.empty()) {
    const char* value = std::getenv(p.password_env.c_str());
    if (!value || !*value)
      throw Error(ErrorKind::usage,
                  fmt::format("profile {}: environment variable {} is not set or empty", p.name, p.password_env));
    return value;
  }
  return p.inline_password;
}

AccountLogin make_login(const Profile& p, const std::string& mailbox, const std::string& account_secret) {
  AccountLogin login;
  login.mailbox = mailbox;
  auto& c = login.credentials;
  auto need_secret = [&](const char* what) {
    std::string s = profile_secret(p, mailbox);
    if (s.empty())
      throw Error(ErrorKind::usage,
                  fmt::format("no {} for {} (auth mode {}): give it in the accounts file or as the profile's "
                              "password_file or password_env",
                              what, mailbox, to_string(p.auth)),
                  Retry::never, {.account = mailbox});
    return s;
  };
  switch (p.auth) {
    case AuthMode::user:
      c.user = mailbox;
      c.mechanism = p.mechanism;
      if (account_secret.empty() && !p.token_cmd.empty()) {
        c.mechanism = imap::AuthMechanism::xoauth2;
        c.tokens = make_token_source(p.token_cmd, mailbox);
        login.describe = fmt::format("xoauth2 as {} (token command)", mailbox);
        break;
      }
      c.secret = account_secret.empty()
                     ? need_secret(p.mechanism == imap::AuthMechanism::xoauth2 ? "token" : "password")
                     : account_secret;
      login.describe = fmt::format("{} as {}", to_string(c.mechanism), mailbox);
      break;
    case AuthMode::admin_plain:
      c.user = mailbox;
      c.auth_user = p.admin_user;
      c.mechanism = imap::AuthMechanism::plain;
      c.secret = need_secret("admin password");
      login.describe = fmt::format("admin-plain: SASL PLAIN as {} for {}", p.admin_user, mailbox);
      break;
    case AuthMode::master_user:
      c.user = mailbox + p.master_separator + p.admin_user;
      c.mechanism = p.mechanism == imap::AuthMechanism::plain ? imap::AuthMechanism::plain : imap::AuthMechanism::login;
      c.secret = need_secret("master password");
      login.describe = fmt::format("master-user: {} as {}", to_string(c.mechanism), c.user);
      break;
    case AuthMode::magic:
      c.user = mailbox;
      c.mechanism = p.mechanism;
      if (!p.token_cmd.empty()) {
        c.mechanism = imap::AuthMechanism::xoauth2;
        c.tokens = make_token_source(p.token_cmd, mailbox);
        login.describe = fmt::format("xoauth2 as {} (token command)", mailbox);
        break;
      }
      c.secret = need_secret("magic password");
      login.describe = fmt::format("magic password: {} as {}", to_string(c.mechanism), mailbox);
      break;
  }
  return login;
}

const Profile& ServerRouting::route(const std::string& user) const {
  std::string d = domain_of(user);
  if (fixed) {
    if (!d.empty() && !fixed->domains.empty() && !fixed->serves(user))
      throw Error(ErrorKind::usage, fmt::format("account {}: profile {} does not serve the domain {}", user,
                                                fixed->name, d),
                  Retry::never, {.account = user});
    return *fixed;
  }
  if (const Profile* p = config.profile_for(user)) return *p;
  if (config.profiles.empty())
    throw Error(ErrorKind::usage,
                fmt::format("account {}: no server given (use --host, a profile option or a config file)", user),
                Retry::never, {.account = user});
  throw Error(ErrorKind::usage,
              d.empty() ? fmt::format("account {}: has no domain, and no profile serves \"*\" (name a profile)", user)
                        : fmt::format("account {}: no profile serves the domain {}", user, d),
              Retry::never, {.account = user});
}

void Profile::apply_provider(std::string_view provider_name) {
  const Provider& p = find_provider(provider_name);
  Profile defaults;
  provider = p.name;
  if (host.empty()) host = p.host;
  if (port == defaults.port) port = p.port;
  if (tls == defaults.tls) tls = p.tls;
  if (mechanism == defaults.mechanism) mechanism = parse_mechanism(p.mechanism);
  if (max_message_mib == defaults.max_message_mib && p.max_message_bytes)
    max_message_mib = (p.max_message_bytes + (1u << 20) - 1) >> 20;
  if (!restore_flagged) restore_flagged = p.restore_flagged;
  if (!case_insensitive_names) case_insensitive_names = p.case_insensitive_names;
  if (reserved_folders.empty()) reserved_folders = p.reserved;
  if (!max_command_length) max_command_length = p.max_command_length;
  provider_download_budget = p.daily_download_bytes;
  provider_upload_budget = p.daily_upload_bytes;
}

}  // namespace imapstage::batch

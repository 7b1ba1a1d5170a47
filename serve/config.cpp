#include "serve/config.h"

#include <ctime>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "cli/server_options.h"
#include "common/error.h"

namespace imapstage::serve {

namespace {

[[noreturn]] void bad(const std::filesystem::path& origin, const toml::node& node, const std::string& what) {
  throw Error(ErrorKind::usage,
              fmt::format("{}:{}: {}", origin.empty() ? "config" : origin.string(), node.source().begin.line, what),
              Retry::never, {.file = origin.string()});
}

std::string text_of(const std::filesystem::path& origin, const std::string& key, const toml::node& node) {
  auto v = node.value<std::string>();
  if (!v) bad(origin, node, key + " must be a string");
  return *v;
}

int64_t int_of(const std::filesystem::path& origin, const std::string& key, const toml::node& node, int64_t lo,
               int64_t hi) {
  const auto* i = node.as_integer();
  if (!i) bad(origin, node, key + " must be an integer");
  int64_t v = i->get();
  if (v < lo || v > hi) bad(origin, node, fmt::format("{} must be between {} and {}", key, lo, hi));
  return v;
}

double number_of(const std::filesystem::path& origin, const std::string& key, const toml::node& node) {
  if (const auto* i = node.as_integer()) return static_cast<double>(i->get());
  if (const auto* f = node.as_floating_point()) return f->get();
  bad(origin, node, key + " must be a number");
}

std::chrono::seconds duration_of(const std::filesystem::path& origin, const std::string& key, const toml::node& node) {
  if (const auto* i = node.as_integer()) {
    if (i->get() < 0) bad(origin, node, key + " must not be negative");
    return std::chrono::seconds(i->get());
  }
  try {
    return cli::parse_duration(text_of(origin, key, node));
  } catch (const Error& e) {
    bad(origin, node, key + ": " + e.message());
  }
}

int64_t time_of(const std::filesystem::path& origin, const std::string& key, const toml::node& node) {
  std::string t = text_of(origin, key, node);
  if (t.empty()) return 0;
  try {
    return parse_rfc3339(t);
  } catch (const Error& e) {
    bad(origin, node, key + ": " + e.message());
  }
}

std::vector<std::string> names_of(const std::filesystem::path& origin, const std::string& key,
                                  const toml::node& node) {
  const auto* a = node.as_array();
  if (!a) bad(origin, node, key + " must be an array of user names");
  std::vector<std::string> out;
  for (auto& e : *a) out.push_back(text_of(origin, key, e));
  return out;
}

}  // namespace

int64_t parse_rfc3339(const std::string& text) {
  std::tm tm{};
  int offset = 0;
  const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end) end = strptime(text.c_str(), "%Y-%m-%d %H:%M:%S", &tm);
  if (!end) throw Error(ErrorKind::usage, "a time is written like 2026-12-31T18:00:00Z or 2026-12-31T18:00:00+01:00, not " + text);
  std::string zone = end;
  if (zone == "Z" || zone == "z") {
    offset = 0;
  } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':' && isdigit(zone[1]) &&
             isdigit(zone[2]) && isdigit(zone[4]) && isdigit(zone[5])) {
    offset = ((zone[1] - '0') * 10 + (zone[2] - '0')) * 3600 + ((zone[4] - '0') * 10 + (zone[5] - '0')) * 60;
    if (zone[0] == '-') offset = -offset;
  } else {
    throw Error(ErrorKind::usage, "a time needs its zone (Z or +HH:MM): " + text);
  }
  return static_cast<int64_t>(timegm(&tm)) - offset;
}

const batch::Profile& ServeConfig::source() const {
  if (source_profile.empty()) throw Error(ErrorKind::usage, "[serve] names no source_profile");
  return profiles.profile(source_profile);
}

const batch::Profile& ServeConfig::target() const {
  if (target_profile.empty()) throw Error(ErrorKind::usage, "[serve] names no target_profile");
  return profiles.profile(target_profile);
}

ServeConfig parse_serve_config(const std::string& text, const std::filesystem::path& origin) {
  ServeConfig c;
  c.profiles = batch::parse_config(text, origin);
  toml::table root = toml::parse(text, origin.string());  // parse_config has checked the syntax
  std::string archive, socket;
  if (auto* serve = root["serve"].as_table()) {
    for (auto&& [k, v] : *serve) {
      std::string key(k.str());
      if (key == "state_dir") c.state_dir = text_of(origin, key, v);
      else if (key == "archive") archive = text_of(origin, key, v);
      else if (key == "socket") socket = text_of(origin, key, v);
      else if (key == "key_file") c.key_file = text_of(origin, key, v);
      else if (key == "source_profile") c.source_profile = text_of(origin, key, v);
      else if (key == "target_profile") c.target_profile = text_of(origin, key, v);
      else if (key == "jobs") c.scheduler.jobs = static_cast<int>(int_of(origin, key, v, 0, 256));
      else if (key == "per_server") c.scheduler.per_server = static_cast<int>(int_of(origin, key, v, 0, 256));
      else if (key == "max_load") c.scheduler.max_load = number_of(origin, key, v);
      else if (key == "account_timeout") c.account_timeout = duration_of(origin, key, v);
      else if (key == "retries") c.retries = static_cast<int>(int_of(origin, key, v, 0, 100));
      else if (key == "retry_delay") c.retry_delay = duration_of(origin, key, v);
      else if (key == "verify") {
        std::string mode = text_of(origin, key, v);
        if (mode != "deep" && mode != "counts") bad(origin, v, "verify must be \"deep\" or \"counts\"");
        c.deep_verify = mode == "deep";
      } else if (key == "delta_after") c.delta_after = duration_of(origin, key, v);
      else if (key == "delta_passes") c.delta_passes = static_cast<int>(int_of(origin, key, v, 0, 1000));
      else if (key == "delta_until") c.delta_until = time_of(origin, key, v);
      else if (key == "admin_users") c.admin_users = names_of(origin, key, v);
      else if (key == "hook_users") c.hook_users = names_of(origin, key, v);
      else bad(origin, v, "[serve]: unknown key " + key);
    }
  } else if (root.contains("serve")) {
    bad(origin, *root.get("serve"), "serve must be a table");
  }
  if (auto* hook = root["login_hook"].as_table()) {
    for (auto&& [k, v] : *hook) {
      std::string key(k.str());
      if (key == "timeout") c.hook_timeout = std::chrono::seconds(int_of(origin, key, v, 1, 3600));
      else if (key == "cutover") c.cutover = time_of(origin, key, v);
      else bad(origin, v, "[login_hook]: unknown key " + key);
    }
  }
  if (auto* web = root["web"].as_table()) {
    for (auto&& [k, v] : *web) {
      std::string key(k.str());
      if (key == "listen") c.web.listen = text_of(origin, key, v);
      else if (key == "tls_cert") c.web.tls_cert = text_of(origin, key, v);
      else if (key == "tls_key") c.web.tls_key = text_of(origin, key, v);
      else if (key == "base_url") c.web.base_url = text_of(origin, key, v);
      else if (key == "invite_ttl") c.web.invite_ttl = duration_of(origin, key, v);
      else if (key == "attempts_per_link") c.web.attempts_per_link = static_cast<int>(int_of(origin, key, v, 1, 1000));
      else if (key == "attempts_per_ip") c.web.attempts_per_ip = static_cast<int>(int_of(origin, key, v, 1, 100000));
      else if (key == "attempts_window") c.web.attempts_window = duration_of(origin, key, v);
      else if (key == "admin_token_file") c.web.admin_token_file = text_of(origin, key, v);
      else if (key == "manifest_key") c.web.manifest_key = text_of(origin, key, v);
      else if (key == "refresh") c.web.refresh = static_cast<int>(int_of(origin, key, v, 1, 3600));
      else bad(origin, v, "[web]: unknown key " + key);
    }
    if (c.web.tls_cert.empty() != c.web.tls_key.empty())
      bad(origin, *web, "[web]: tls_cert and tls_key go together");
    if (!c.web.listen.empty() && c.web.tls_cert.empty()) {
      std::string host = c.web.listen.substr(0, c.web.listen.rfind(':'));
      if (host != "localhost" && host != "[::1]" && host.rfind("127.", 0) != 0)
        bad(origin, *web->get("listen"),
            fmt::format("[web] listen {} is not a loopback address: give tls_cert and tls_key (plain HTTP is "
                        "served only on loopback)",
                        c.web.listen));
    }
  }
  c.archive = archive.empty() ? c.state_dir / "archive" : std::filesystem::path(archive);
  c.socket = socket.empty() ? c.state_dir / "control.sock" : std::filesystem::path(socket);
  return c;
}

ServeConfig load_serve_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_io("cannot read the config file", path.string(), errno);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return parse_serve_config(buffer.str(), path);
}

}  // namespace imapstage::serve

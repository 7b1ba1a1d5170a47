#include "tests/support/test_server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <stdexcept>

#include <fmt/core.h>

#include "imap/utf7.h"
#include "tests/support/process.h"

namespace imapstage::testing {
namespace {

namespace fs = std::filesystem;

std::string temp_base() {
  const char* t = std::getenv("TMPDIR");
  return (t && *t) ? t : "/tmp";
}

std::string make_temp_dir(const std::string& prefix) {
  std::string templ = temp_base() + "/" + prefix + ".XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error(fmt::format("mkdtemp {}: {}", templ, std::strerror(errno)));
  return buf.data();
}

void write_private_file(const std::string& path, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error(fmt::format("open {}: {}", path, std::strerror(errno)));
  fchmod(fd, 0600);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      throw std::runtime_error(fmt::format("write {}: {}", path, std::strerror(e)));
    }
    off += static_cast<size_t>(n);
  }
  if (close(fd) != 0) throw std::runtime_error(fmt::format("close {}: {}", path, std::strerror(errno)));
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (auto& s : v) {
    if (!out.empty()) out += ",";
    out += s;
  }
  return out;
}

std::string describe(const std::vector<std::string>& args) {
  std::string out = "tools/test-server";
  for (auto& a : args) out += " " + a;
  return out;
}

// Runs tools/test-server; throws with its stderr unless it exits with 0. The
// wrappers below put "--" before positional arguments, so a folder name or a
// "-FLAGS" operation is never taken for an option.
std::string run_script(const std::vector<std::string>& args, std::chrono::seconds limit) {
  std::vector<std::string> argv = TestServer::script_command();
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_process(argv, {}, std::chrono::duration_cast<std::chrono::milliseconds>(limit));
  if (r.exit_code != 0) {
    std::string why = r.signal ? fmt::format("killed by signal {} (time limit {} s?)", r.signal, limit.count())
                               : fmt::format("exit {}", r.exit_code);
    throw std::runtime_error(fmt::format("{} failed ({}): {}", describe(args), why, r.err));
  }
  return r.out;
}

nlohmann::json parse_json(const std::string& text, const std::vector<std::string>& args) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("{}: output is not JSON ({}): {}", describe(args), e.what(),
                                         text.substr(0, 500)));
  }
}

constexpr std::chrono::seconds kStartLimit{600};
constexpr std::chrono::seconds kCommandLimit{300};

}  // namespace

std::string TestServer::script() {
  const char* src = std::getenv("IMAPSTAGE_SOURCE_DIR");
  std::string root = (src && *src) ? src : IMAPSTAGE_SOURCE_DIR;
  return root + "/tools/test-server";
}

std::vector<std::string> TestServer::script_command() {
  const char* py = std::getenv("IMAPSTAGE_PYTHON");
  if (py && *py) return {py, script()};
  // The system interpreter starts fastest; `env python3` may go through a wrapper script.
  if (access("/usr/bin/python3", X_OK) == 0) return {"/usr/bin/python3", script()};
  return {script()};
}

TestServer::TestServer(TestServerOptions options) {
  root_ = make_temp_dir("imapstage-ts");
  // Dovecot reaches the mail as an unprivileged user when started as root: let it through.
  chmod(root_.c_str(), 0711);
  dir_ = root_ + "/server";
  files_ = root_ + "/files";
  try {
    fs::create_directory(files_);
    fs::permissions(files_, fs::perms::owner_all, fs::perm_options::replace);
    std::vector<std::string> args{"start",   dir_,         "--seed", options.seed, "--users", join(options.users),
                                  "--target-users", join(options.target_users)};
    if (!options.alt_special_use.empty()) args.push_back("--alt-special-use=" + options.alt_special_use);
    if (options.append_limit) args.push_back("--append-limit=" + std::to_string(*options.append_limit));
    args.push_back("--kind=" + options.kind);
    if (options.cyrus_altnamespace) args.push_back("--altnamespace");
    if (options.cyrus_unixhierarchysep) args.push_back("--unixhierarchysep");
    if (!options.login_hook.empty()) {
      args.push_back("--login-hook");
      args.push_back(options.login_hook);
    }
    if (options.trust_loopback) args.push_back("--trust-loopback");
    if (!options.oauth2_introspection.empty()) args.push_back("--oauth2-introspection=" + options.oauth2_introspection);
    if (!options.post_login.empty()) {
      args.push_back("--post-login");
      args.push_back(options.post_login);
    }
    info_ = parse_json(run_script(args, kStartLimit), args);
    host_ = info_.at("host").get<std::string>();
    kind_ = info_.value("kind", "dovecot");
    const auto& ns = info_.at("personal_namespace");
    personal_prefix_ = ns.at("prefix").get<std::string>();
    std::string sep = ns.at("separator").is_string() ? ns.at("separator").get<std::string>() : "";
    personal_separator_ = sep.empty() ? '\0' : sep[0];
    imap_port_ = info_.at("imap_port").get<uint16_t>();
    imaps_port_ = info_.at("imaps_port").get<uint16_t>();
    if (info_.contains("pop3_port") && info_["pop3_port"].is_number()) {
      pop3_port_ = info_["pop3_port"].get<uint16_t>();
      pop3s_port_ = info_["pop3s_port"].get<uint16_t>();
    }
    ca_file_ = info_.at("ca_file").get<std::string>();
  } catch (...) {
    try {
      run_script({"stop", dir_}, kCommandLimit);
    } catch (const std::exception&) {
    }
    std::error_code ec;
    fs::remove_all(root_, ec);
    throw;
  }
}

TestServer::~TestServer() {
  try {
    stop();
  } catch (const std::exception& e) {
    std::cerr << "TestServer: " << e.what() << "\n";
  }
  std::error_code ec;
  fs::remove_all(root_, ec);
  if (ec) std::cerr << "TestServer: cannot remove " << root_ << ": " << ec.message() << "\n";
}

void TestServer::stop() {
  if (stopped_) return;
  run_script({"stop", dir_}, kCommandLimit);
  stopped_ = true;
}

std::string TestServer::password(const std::string& user) const {
  const auto& users = info_.at("users");
  auto it = users.find(user);
  if (it == users.end()) throw std::runtime_error("TestServer: no account " + user);
  return it->get<std::string>();
}

namespace {
// A string field of server.json, "" when it is null or absent.
std::string string_or_empty(const nlohmann::json& info, const char* key) {
  auto it = info.find(key);
  return (it == info.end() || it->is_null()) ? std::string() : it->get<std::string>();
}
}  // namespace

std::string TestServer::login(const std::string& user) const {
  password(user);  // throws for an unknown user
  auto logins = info_.find("logins");
  if (logins == info_.end()) return user;
  auto it = logins->find(user);
  return it == logins->end() ? user : it->get<std::string>();
}

std::string TestServer::master_user() const { return string_or_empty(info_, "master_user"); }
std::string TestServer::master_password() const { return string_or_empty(info_, "master_password"); }
std::string TestServer::master_separator() const { return string_or_empty(info_, "master_separator"); }
std::string TestServer::admin_user() const { return string_or_empty(info_, "admin_user"); }
std::string TestServer::admin_password() const { return string_or_empty(info_, "admin_password"); }
bool TestServer::special_use() const { return info_.value("special_use", true); }
const nlohmann::json& TestServer::rewrites() const { return info_.at("rewrites"); }

std::string TestServer::raw_name(const std::string& logical) const {
  std::string upper;
  for (char c : logical) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper == "INBOX") return "INBOX";
  // Modified UTF-7 of each level; the Python harness is the reference (ops.raw_name).
  std::string out = personal_prefix_;
  size_t start = 0;
  while (true) {
    size_t slash = logical.find('/', start);
    std::string level = logical.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    out += imapstage::imap::utf7_encode(level);
    if (slash == std::string::npos) break;
    out += personal_separator_;
    start = slash + 1;
  }
  return out;
}

std::optional<std::string> TestServer::expected_after_append(const std::string& bytes) const {
  const auto& r = rewrites();
  auto rule = [&](const char* key) { return r.value(key, std::string("kept")); };
  auto bare_lf_at = [](const std::string& s, size_t i) { return s[i] == '\n' && (i == 0 || s[i - 1] != '\r'); };
  bool has_bare_lf = false;
  for (size_t i = 0; i < bytes.size(); ++i) has_bare_lf = has_bare_lf || bare_lf_at(bytes, i);
  if (rule("bare_lf") == "refused" && has_bare_lf) return std::nullopt;
  if (rule("nul") == "refused" && bytes.find('\0') != std::string::npos) return std::nullopt;
  std::string out = bytes;
  if (rule("bare_cr") == "removed") {
    std::string t;
    for (size_t i = 0; i < out.size(); ++i)
      if (!(out[i] == '\r' && (i + 1 >= out.size() || out[i + 1] != '\n'))) t += out[i];
    out = std::move(t);
  }
  if (rule("bare_lf") == "crlf") {
    std::string t;
    for (size_t i = 0; i < out.size(); ++i) {
      if (bare_lf_at(out, i)) t += '\r';
      t += out[i];
    }
    out = std::move(t);
  }
  if (rule("nul") == "0x80")
    for (auto& c : out)
      if (c == '\0') c = '\x80';
  if (rule("header_8bit") == "X") {
    size_t end = out.find("\r\n\r\n");
    size_t header_end = end == std::string::npos ? out.size() : end + 4;
    for (size_t i = 0; i < header_end; ++i)
      if (static_cast<unsigned char>(out[i]) >= 0x80) out[i] = 'X';
  }
  if (rule("missing_final_crlf") == "added" && !out.empty() &&
      !(out.size() >= 2 && out.compare(out.size() - 2, 2, "\r\n") == 0))
    out += "\r\n";
  return out;
}

std::string TestServer::setacl(const std::string& owner, const std::string& folder, const std::string& grantee,
                               const std::string& rights) {
  std::string out = run({"setacl", "--", dir_, owner, folder, grantee, rights});
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

SharedFolder TestServer::create_shared(const std::string& folder, const std::vector<std::string>& grantees,
                                       const std::string& message_bytes, const std::string& rights) {
  std::vector<std::string> args{"create-shared", "--grant=" + join(grantees), "--rights=" + rights};
  std::string file;
  if (!message_bytes.empty()) {
    file = scratch_file("shared");
    write_private_file(file, message_bytes);
    args.push_back("--message=" + file);
  }
  args.insert(args.end(), {"--", dir_, folder});
  std::string out;
  try {
    out = run_script(args, kCommandLimit);
  } catch (...) {
    std::error_code ec;
    if (!file.empty()) fs::remove(file, ec);
    throw;
  }
  std::error_code ec;
  if (!file.empty()) fs::remove(file, ec);
  auto j = parse_json(out, args);
  SharedFolder result;
  result.mailbox = j.at("mailbox").get<std::string>();
  result.uid = j.at("uid").is_null() ? 0 : j.at("uid").get<uint32_t>();
  return result;
}
std::string TestServer::instance() const { return info_.at("instance").get<std::string>(); }

std::string TestServer::add_user(const std::string& name) {
  std::string out = run({"add-user", "--", dir_, name});
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (out.empty()) throw std::runtime_error("TestServer: add-user printed no password");
  info_["users"][name] = out;
  // The login name comes from server.json (Courier's carry the instance token).
  std::vector<std::string> args{"info", "--", dir_};
  auto fresh = parse_json(run_script(args, kCommandLimit), args);
  if (fresh.contains("logins")) info_["logins"] = fresh["logins"];
  return out;
}

nlohmann::json TestServer::summary(const std::string& user, bool hashes) const {
  std::vector<std::string> args{"summary"};
  if (!hashes) args.push_back("--no-hash");
  args.insert(args.end(), {"--", dir_, user});
  return parse_json(run_script(args, kCommandLimit), args);
}

uint32_t TestServer::append(const std::string& user, const std::string& folder, const std::string& message_bytes,
                            const std::string& flags, const std::string& date) {
  std::string file = scratch_file("message");
  write_private_file(file, message_bytes);
  std::vector<std::string> args{"append"};
  if (!flags.empty()) args.push_back("--flags=" + flags);
  if (!date.empty()) args.push_back("--date=" + date);
  args.insert(args.end(), {"--", dir_, user, folder, file});
  std::string out;
  try {
    out = run_script(args, kCommandLimit);
  } catch (...) {
    std::error_code ec;
    fs::remove(file, ec);
    throw;
  }
  std::error_code ec;
  fs::remove(file, ec);
  try {
    unsigned long uid = std::stoul(out);
    if (uid == 0 || uid > 0xFFFFFFFFul) throw std::out_of_range("uid");
    return static_cast<uint32_t>(uid);
  } catch (const std::logic_error&) {
    throw std::runtime_error(fmt::format("{}: no UID in the output: {}", describe(args), out));
  }
}

void TestServer::store(const std::string& user, const std::string& folder, uint32_t uid, const std::string& op,
                       const std::string& flags) {
  run({"store", "--", dir_, user, folder, std::to_string(uid), op, flags});
}

void TestServer::expunge(const std::string& user, const std::string& folder, std::vector<uint32_t> uids) {
  std::vector<std::string> args{"expunge", "--", dir_, user, folder};
  for (auto u : uids) args.push_back(std::to_string(u));
  run(args);
}

std::string TestServer::run(std::vector<std::string> args) const { return run_script(args, kCommandLimit); }

std::string TestServer::password_file(const std::string& user) const {
  std::string file = scratch_file("password-" + user);
  write_private_file(file, password(user) + "\n");
  return file;
}

std::string TestServer::scratch_file(const std::string& stem) const {
  std::string safe;
  for (char c : stem) safe += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  return fmt::format("{}/{}-{}", files_, safe, counter_.fetch_add(1));
}

TempDir::TempDir() : path_(make_temp_dir("imapstage-test")) {}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

TestServer* SharedServerTest::server_ = nullptr;

imap::Endpoint TestServer::endpoint(int timeout_seconds) const {
  imap::Endpoint e;
  e.host = host_;
  e.port = imaps_port_;
  e.tls = imap::TlsMode::implicit;
  e.ca_file = ca_file_;
  e.timeout = std::chrono::seconds(timeout_seconds);
  return e;
}

}  // namespace imapstage::testing

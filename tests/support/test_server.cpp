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
    info_ = parse_json(run_script(args, kStartLimit), args);
    host_ = info_.at("host").get<std::string>();
    imap_port_ = info_.at("imap_port").get<uint16_t>();
    imaps_port_ = info_.at("imaps_port").get<uint16_t>();
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

std::string TestServer::master_user() const { return info_.at("master_user").get<std::string>(); }
std::string TestServer::master_password() const { return info_.at("master_password").get<std::string>(); }
std::string TestServer::master_separator() const { return info_.at("master_separator").get<std::string>(); }
std::string TestServer::instance() const { return info_.at("instance").get<std::string>(); }

std::string TestServer::add_user(const std::string& name) {
  std::string out = run({"add-user", "--", dir_, name});
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (out.empty()) throw std::runtime_error("TestServer: add-user printed no password");
  info_["users"][name] = out;
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

}  // namespace imapstage::testing

// The web pages of imapstage serve against two real Dovecots on loopback:
// invitations from `imapstage invite`, the self-service page (wrong and right
// passwords, the status page until done, the target equal to the source),
// every refusal (unknown, expired, reused, CSRF, rate limits), the security
// headers, a target that needs the user's own password (asked, checked,
// imported with, erased), the console (login, history, verify again, JSON
// and CSV reports, signed manifests, invitations, logout, each action
// refused without a session or its CSRF token), and no password or token in
// any answer, log or state file. The daemon runs as `nobody` (setpriv) as
// under its own user.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include "common/error.h"
#include "serve/control.h"
#include "verify/signing.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr uid_t kNobody = 65534;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const fs::path& p, const std::string& text, mode_t mode, uid_t owner = 0) {
  fs::path tmp = p.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
  }
  ::chmod(tmp.c_str(), mode);
  if (owner) (void)!::chown(tmp.c_str(), owner, owner);
  fs::rename(tmp, p);
}

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string token_of(const std::string& link) {
  auto at = link.rfind('/');
  return link.substr(at + 1);
}

std::string csrf_in(const std::string& html) {
  std::smatch m;
  if (std::regex_search(html, m, std::regex("name=\"csrf\" value=\"([0-9a-f]{64})\""))) return m[1];
  return "";
}

class WebTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir();
    ::chmod(work_->path().c_str(), 0711);
    dir_ = work_->path();
    config_ = dir_ + "/serve.toml";
    state_ = dir_ + "/state";
    logs_ = dir_ + "/logs";
    for (auto* d : {&logs_, &state_}) {
      fs::create_directory(*d);
      ::chmod(d->c_str(), 0711);
      (void)!::chown(d->c_str(), kNobody, kNobody);
    }
    TestServerOptions old_options;
    old_options.users = {};
    old_options.seed = "none";
    old_ = new TestServer(old_options);
    for (auto& u : users()) {
      std::string pw = old_->run({"add-user", old_->dir(), u, "--seed", "small:6"});
      while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r')) pw.pop_back();
      passwords_[u] = pw;
    }
    TestServerOptions new_options;
    new_options.seed = "none";
    new_options.users = {};
    new_options.target_users = users();
    new_options.target_users.push_back("olga");
    new_ = new TestServer(new_options);
    {
      std::string pw = old_->run({"add-user", old_->dir(), "olga", "--seed", "small:6"});
      while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r')) pw.pop_back();
      passwords_["olga"] = pw;
    }
    for (auto u : {"olga", "yara"}) passwords_[std::string("new:") + u] = new_->password(u);
    auto key = run_process({"/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", dir_ + "/manifest.pem"});
    ASSERT_EQ(key.exit_code, 0) << key.err;
    ::chmod((dir_ + "/manifest.pem").c_str(), 0600);
    (void)!::chown((dir_ + "/manifest.pem").c_str(), kNobody, kNobody);
    write_file(dir_ + "/old-admin.secret", old_->master_password() + "\n", 0600, kNobody);
    write_file(dir_ + "/new-admin.secret", new_->master_password() + "\n", 0600, kNobody);
    write_file(dir_ + "/admin.token", std::string(kAdminToken) + "\n", 0600, kNobody);
    port_ = free_port();
    write_config(20);
  }

  static std::vector<std::string> users() { return {"wendy", "xavier", "yara", "zoe", "quinn"}; }

  void SetUp() override {
    if (!daemon_pid_) start_daemon();
  }

  static void TearDownTestSuite() {
    stop_daemon();
    delete new_;
    delete old_;
    delete work_;
  }

  // `own_target`: the target profile logs users in with their own password (auth "user", no password source).
  static void write_config(int attempts_per_ip, bool tls = false, bool own_target = false) {
    std::string text = fmt::format(R"([profiles.old]
host = "127.0.0.1"
port = {}
tls = "implicit"
ca_file = "{}"
auth = "master-user"
admin_user = "{}"
password_file = "{}/old-admin.secret"

[profiles.new]
host = "127.0.0.1"
port = {}
tls = "implicit"
ca_file = "{}"
{}

[serve]
state_dir = "{}"
key_file = "{}/serve.key"
source_profile = "old"
target_profile = "new"
jobs = 2
max_load = 0
retries = 1
retry_delay = "1s"
verify = "deep"
delta_after = 0

[web]
listen = "127.0.0.1:{}"
invite_ttl = "2d"
attempts_per_link = 3
attempts_per_ip = {}
attempts_window = "10m"
refresh = 1
admin_token_file = "{}/admin.token"
manifest_key = "{}/manifest.pem"
{}
)",
                                   old_->imaps_port(), old_->ca_file(), old_->master_user(), dir_,
                                   new_->imaps_port(), new_->ca_file(),
                                   own_target ? std::string("auth = \"user\"")
                                              : fmt::format("auth = \"master-user\"\nadmin_user = \"{}\"\n"
                                                            "password_file = \"{}/new-admin.secret\"",
                                                            new_->master_user(), dir_),
                                   state_, logs_, port_, attempts_per_ip, dir_, dir_,
                                   tls ? fmt::format("tls_cert = \"{0}/web.pem\"\ntls_key = \"{0}/web.key\"", dir_) : "");
    write_file(config_, text, 0644);
  }

  static void start_daemon() {
    ASSERT_EQ(daemon_pid_, 0);
    int out = open((dir_ + "/daemon.out").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid_t pid = fork();
    if (pid == 0) {
      dup2(out, 1);
      dup2(out, 2);
      std::vector<std::string> argv{"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                    imapstage_binary(), "serve", "--config", config_,
                                    "--log-file", logs_ + "/daemon.jsonl"};
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      char* envp[] = {const_cast<char*>("PATH=/usr/bin:/bin"), nullptr};
      execve(args[0], args.data(), envp);
      _exit(127);
    }
    close(out);
    daemon_pid_ = pid;
    auto end = Clock::now() + 20s;
    while (Clock::now() < end) {
      try {
        httplib::Client c(fmt::format("{}://127.0.0.1:{}", daemon_tls_ ? "https" : "http", port_));
        c.enable_server_certificate_verification(false);
        if (call({{"op", "list"}}).value("ok", false) && c.Get("/")) return;
      } catch (const Error&) {
      }
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        daemon_pid_ = 0;
        FAIL() << "the daemon exited: " << read_file(dir_ + "/daemon.out");
      }
      std::this_thread::sleep_for(50ms);
    }
    FAIL() << "the daemon did not answer: " << read_file(dir_ + "/daemon.out");
  }

  static void stop_daemon() {
    if (!daemon_pid_) return;
    kill(daemon_pid_, SIGTERM);
    int status = 0;
    waitpid(daemon_pid_, &status, 0);
    daemon_pid_ = 0;
  }

  // Runs the daemon with a target where users log in with their own password
  // until the end of the scope, then with the usual configuration again.
  struct OwnTargetPasswords {
    OwnTargetPasswords() {
      stop_daemon();
      write_config(20, false, true);
      start_daemon();
    }
    ~OwnTargetPasswords() {
      stop_daemon();
      write_config(20);
      start_daemon();
    }
  };

  static nlohmann::json call(const nlohmann::json& request) {
    return serve::control_call(state_ + "/control.sock", request, 10s);
  }

  // A link for `user` through the control socket (`ttl` seconds, or the configured default).
  static std::string invite(const std::string& user, uint64_t ttl = 0) {
    nlohmann::json r = {{"op", "invite"}, {"users", {{{"user", user}}}}};
    if (ttl) r["ttl"] = ttl;
    auto reply = call(r);
    EXPECT_TRUE(reply.value("ok", false)) << reply.dump();
    std::string link = reply["invites"][0]["link"];
    tokens_.push_back(token_of(link));
    return link;
  }

  static std::string path_of(const std::string& link) { return link.substr(link.find("/i/")); }

  static httplib::Client client() {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60);
    return c;
  }

  static httplib::Result post(const std::string& path, const std::string& csrf, const std::string& password,
                              const std::string& new_password = "") {
    httplib::Params params;
    if (!csrf.empty()) params.emplace("csrf", csrf);
    params.emplace("password", password);
    if (!new_password.empty()) params.emplace("new_password", new_password);
    return client().Post(path.c_str(), params);
  }

  // Logs in to the console; the session's Cookie header.
  static httplib::Headers console_session() {
    auto login = client().Get("/admin/login");
    EXPECT_TRUE(login);
    if (!login) return {};
    httplib::Params right{{"csrf", csrf_in(login->body)}, {"token", kAdminToken}};
    auto ok = client().Post("/admin/login", right);
    EXPECT_TRUE(ok && ok->status == 303);
    if (!ok) return {};
    std::string cookie = ok->get_header_value("Set-Cookie");
    return {{"Cookie", cookie.substr(0, cookie.find(';'))}};
  }

  // Polls the job of `user` until it is done, error or cancelled (up to 120 s).
  static nlohmann::json wait_final(const std::string& user) {
    auto end = Clock::now() + 120s;
    nlohmann::json job;
    while (Clock::now() < end) {
      job = job_of(user);
      std::string st = job.is_null() ? "" : job.value("status", "");
      if (st == "done" || st == "error" || st == "cancelled") break;
      std::this_thread::sleep_for(100ms);
    }
    return job;
  }

  static nlohmann::json job_of(const std::string& user) {
    auto reply = call({{"op", "list"}});
    for (auto& j : reply["jobs"])
      if (j["user"] == user) return j;
    return nullptr;
  }

  static std::map<std::string, std::multiset<std::string>> content(TestServer& server, const std::string& user) {
    std::map<std::string, std::multiset<std::string>> out;
    auto summary = server.summary(user);
    for (auto& f : summary["folders"]) {
      if (f["messages"].is_null()) continue;
      auto& set = out[f["canonical"].get<std::string>()];
      for (auto& m : f["messages"])
        set.insert(m["sha256"].get<std::string>() + " " + m["flags"].dump() + " " +
                   std::to_string(m["internaldate_unix"].get<int64_t>()));
    }
    return out;
  }

  static void expect_no_secret(const std::string& where, const std::string& text) {
    for (auto& [user, pw] : passwords_) EXPECT_EQ(text.find(pw), std::string::npos) << user << "'s password in " << where;
    EXPECT_EQ(text.find(kWrong), std::string::npos) << "a wrong password in " << where;
    EXPECT_EQ(text.find(kAdminToken), std::string::npos) << "the admin token in " << where;
  }

  static constexpr const char* kAdminToken = "console-token-0123456789abcdef";
  static constexpr const char* kWrong = "Wrong-Passw0rd-xyzzy";
  static std::map<std::string, std::string> passwords_;
  static std::vector<std::string> tokens_;
  static std::vector<std::string> bodies_;
  static TempDir* work_;
  static TestServer* old_;
  static TestServer* new_;
  static std::string dir_, config_, state_, logs_;
  static pid_t daemon_pid_;
  static uint16_t port_;
  static bool daemon_tls_;
};

std::map<std::string, std::string> WebTest::passwords_;
std::vector<std::string> WebTest::tokens_;
std::vector<std::string> WebTest::bodies_;
TempDir* WebTest::work_ = nullptr;
TestServer* WebTest::old_ = nullptr;
TestServer* WebTest::new_ = nullptr;
std::string WebTest::dir_, WebTest::config_, WebTest::state_, WebTest::logs_;
pid_t WebTest::daemon_pid_ = 0;
uint16_t WebTest::port_ = 0;
bool WebTest::daemon_tls_ = false;

TEST_F(WebTest, InviteCommandWritesSingleUseLinksAsCsvAndMail) {
  write_file(dir_ + "/accounts.txt", "# mailboxes\nxavier\nyara,yara\n", 0644);
  auto r = run_imapstage({"invite", "--config", config_, "--accounts", dir_ + "/accounts.txt", "--csv",
                          dir_ + "/links.csv", "--eml-dir", dir_ + "/mails", "--ttl", "1d"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string csv = read_file(dir_ + "/links.csv");
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/links.csv").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::regex row("(xavier|yara),(xavier|yara),http://127\\.0\\.0\\.1:[0-9]+/i/([0-9a-f]{64}),20[0-9-]+T[0-9:]+Z\r");
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "user,target_user,link,expires\r");
  std::set<std::string> tokens;
  while (std::getline(in, line)) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, row)) << line;
    tokens.insert(m[3]);
    tokens_.push_back(m[3]);
  }
  EXPECT_EQ(tokens.size(), 2u);
  std::string mail = read_file(dir_ + "/mails/xavier.eml");
  EXPECT_NE(mail.find("To: xavier\r\n"), std::string::npos) << mail;
  EXPECT_NE(mail.find("/i/"), std::string::npos);
  // The daemon keeps only hashes.
  std::string stored = read_file(state_ + "/invites.json");
  for (auto& t : tokens) EXPECT_EQ(stored.find(t), std::string::npos);
  EXPECT_NE(stored.find("xavier"), std::string::npos);
}

TEST_F(WebTest, WrongThenRightPasswordMigratesAndTheLinkIsUsedUp) {
  std::string link = invite("wendy");
  ASSERT_EQ(token_of(link).size(), 64u);
  auto page = client().Get(path_of(link).c_str());
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  bodies_.push_back(page->body);
  EXPECT_NE(page->body.find("wendy"), std::string::npos);
  EXPECT_NE(page->body.find("id=\"plain-http\""), std::string::npos) << "plain HTTP must say so";
  EXPECT_NE(page->get_header_value("Content-Security-Policy").find("default-src 'none'"), std::string::npos);
  EXPECT_EQ(page->get_header_value("Cache-Control"), "no-store");
  EXPECT_EQ(page->get_header_value("Referrer-Policy"), "no-referrer");
  EXPECT_EQ(page->get_header_value("X-Content-Type-Options"), "nosniff");
  EXPECT_FALSE(page->has_header("Set-Cookie"));
  std::string csrf = csrf_in(page->body);
  ASSERT_FALSE(csrf.empty()) << page->body;

  auto wrong = post(path_of(link), csrf, kWrong);
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 422);
  EXPECT_NE(wrong->body.find("id=\"error\""), std::string::npos) << wrong->body;
  bodies_.push_back(wrong->body);
  EXPECT_TRUE(job_of("wendy").is_null()) << "a wrong password queued a job";

  auto right = post(path_of(link), csrf, passwords_["wendy"]);
  ASSERT_TRUE(right);
  EXPECT_EQ(right->status, 303) << right->body;
  bodies_.push_back(right->body);
  std::string status_path = right->get_header_value("Location");
  ASSERT_TRUE(std::regex_match(status_path, std::regex("/s/[0-9a-f]{64}"))) << status_path;
  tokens_.push_back(status_path.substr(3));

  std::string status = "";
  std::string body;
  auto end = Clock::now() + 120s;
  while (Clock::now() < end) {
    auto s = client().Get(status_path.c_str());
    ASSERT_TRUE(s) << read_file(dir_ + "/daemon.out");
    ASSERT_EQ(s->status, 200);
    body = s->body;
    bodies_.push_back(body);
    std::smatch m;
    if (std::regex_search(body, m, std::regex("data-status=\"([a-z]+)\""))) status = m[1];
    if (status == "done" || status == "error" || status == "cancelled") break;
    EXPECT_NE(body.find("http-equiv=\"refresh\""), std::string::npos);
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_EQ(status, "done") << body << read_file(dir_ + "/daemon.out");
  EXPECT_NE(body.find("id=\"verify\">equal"), std::string::npos) << body;
  EXPECT_EQ(body.find("http-equiv=\"refresh\""), std::string::npos) << "a finished page refreshes no more";
  auto source = content(*old_, "wendy");
  auto target = content(*new_, "wendy");
  EXPECT_FALSE(source.empty());
  EXPECT_EQ(target, source);
  auto job = job_of("wendy");
  EXPECT_EQ(job["origin"], "web");
  EXPECT_EQ(job["has_secret"], false);

  // The link is used up: refused with a clear page, and a second POST starts nothing.
  auto again = client().Get(path_of(link).c_str());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 410);
  EXPECT_NE(again->body.find("already used"), std::string::npos) << again->body;
  auto repost = post(path_of(link), csrf, passwords_["wendy"]);
  ASSERT_TRUE(repost);
  EXPECT_EQ(repost->status, 410);
  size_t jobs = 0;
  auto list = call({{"op", "list"}});
  for (auto& j : list["jobs"]) jobs += j["user"] == "wendy";
  EXPECT_EQ(jobs, 1u);
}

TEST_F(WebTest, UnknownAndExpiredLinksAreRefused) {
  auto unknown = client().Get(("/i/" + std::string(64, 'a')).c_str());
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_NE(unknown->body.find("not valid"), std::string::npos);
  auto garbage = client().Get("/i/xyz");
  ASSERT_TRUE(garbage);
  EXPECT_EQ(garbage->status, 404);

  std::string link = invite("zoe", 1);
  auto page = client().Get(path_of(link).c_str());
  ASSERT_TRUE(page);
  std::string csrf = csrf_in(page->body);
  std::this_thread::sleep_for(1500ms);
  auto expired = client().Get(path_of(link).c_str());
  ASSERT_TRUE(expired);
  EXPECT_EQ(expired->status, 410);
  EXPECT_NE(expired->body.find("expired"), std::string::npos) << expired->body;
  auto posted = post(path_of(link), csrf, passwords_["zoe"]);
  ASSERT_TRUE(posted);
  EXPECT_EQ(posted->status, 410);
  EXPECT_TRUE(job_of("zoe").is_null());
}

TEST_F(WebTest, FormsWithoutTheCsrfTokenAndTooManyAttemptsAreRefused) {
  std::string link = invite("quinn");
  auto page = client().Get(path_of(link).c_str());
  ASSERT_TRUE(page);
  std::string csrf = csrf_in(page->body);
  auto none = post(path_of(link), "", passwords_["quinn"]);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 403);
  auto other = post(path_of(link), std::string(64, '0'), passwords_["quinn"]);
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 403);
  EXPECT_TRUE(job_of("quinn").is_null());

  // attempts_per_link = 3: three wrong passwords, then even the right one waits.
  for (int i = 0; i < 3; ++i) {
    auto r = post(path_of(link), csrf, kWrong);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422) << i;
  }
  auto limited = post(path_of(link), csrf, passwords_["quinn"]);
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->status, 429);
  EXPECT_TRUE(limited->has_header("Retry-After"));
  bodies_.push_back(limited->body);
  EXPECT_TRUE(job_of("quinn").is_null());
}

TEST_F(WebTest, AttemptsPerAddressAreLimitedAcrossLinks) {
  stop_daemon();
  write_config(2);
  start_daemon();
  std::string a = invite("xavier"), b = invite("yara");
  auto pa = client().Get(path_of(a).c_str());
  auto pb = client().Get(path_of(b).c_str());
  ASSERT_TRUE(pa && pb);
  EXPECT_EQ(post(path_of(a), csrf_in(pa->body), kWrong)->status, 422);
  EXPECT_EQ(post(path_of(b), csrf_in(pb->body), kWrong)->status, 422);
  auto limited = post(path_of(b), csrf_in(pb->body), passwords_["yara"]);
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->status, 429);
  EXPECT_TRUE(job_of("yara").is_null());
  stop_daemon();
  write_config(20);
  start_daemon();
}

TEST_F(WebTest, ATargetWithOwnPasswordsAsksForItChecksItAndImportsWithIt) {
  OwnTargetPasswords own;
  std::string link = invite("olga");
  auto page = client().Get(path_of(link).c_str());
  ASSERT_TRUE(page);
  ASSERT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("id=\"new_password\""), std::string::npos) << page->body;
  std::string csrf = csrf_in(page->body);

  // The right old password and a wrong new one, or none: refused, nothing queued
  // (attempts_per_link = 3: the third attempt is the right one).
  auto wrong_new = post(path_of(link), csrf, passwords_["olga"], kWrong);
  ASSERT_TRUE(wrong_new);
  EXPECT_EQ(wrong_new->status, 422);
  EXPECT_NE(wrong_new->body.find("new server refused"), std::string::npos) << wrong_new->body;
  bodies_.push_back(wrong_new->body);
  auto no_new = post(path_of(link), csrf, passwords_["olga"]);
  ASSERT_TRUE(no_new);
  EXPECT_EQ(no_new->status, 422);
  bodies_.push_back(no_new->body);
  EXPECT_TRUE(job_of("olga").is_null());

  auto right = post(path_of(link), csrf, passwords_["olga"], passwords_["new:olga"]);
  ASSERT_TRUE(right);
  ASSERT_EQ(right->status, 303) << right->body;
  bodies_.push_back(right->body);
  std::string status_path = right->get_header_value("Location");
  tokens_.push_back(status_path.substr(3));
  auto job = wait_final("olga");
  ASSERT_EQ(job.value("status", ""), "done") << job.dump() << read_file(dir_ + "/daemon.out");
  EXPECT_EQ(job["target_credentials"], "password");
  EXPECT_EQ(job["has_target_secret"], false);
  EXPECT_EQ(job["has_secret"], false);
  EXPECT_EQ(job["verify"]["equal"], true);
  EXPECT_EQ(content(*new_, "olga"), content(*old_, "olga"));
  uint64_t id = job["id"];
  EXPECT_FALSE(fs::exists(state_ + "/secrets/" + std::to_string(id)));
  EXPECT_FALSE(fs::exists(state_ + "/secrets/" + std::to_string(id) + ".target")) << "the target password was kept";
  auto s = client().Get(status_path.c_str());
  ASSERT_TRUE(s);
  EXPECT_NE(s->body.find("data-status=\"done\""), std::string::npos);
  bodies_.push_back(s->body);

  // Its history: one migrate attempt, with progress samples of the bytes it moved.
  ASSERT_EQ(job["runs"].size(), 1u) << job.dump();
  auto& run = job["runs"][0];
  EXPECT_EQ(run["kind"], "migrate");
  EXPECT_EQ(run["status"], "done");
  ASSERT_GE(run["samples"].size(), 2u) << run.dump();
  EXPECT_GT(run["samples"].back()[1].get<uint64_t>(), 0u) << run.dump();
  EXPECT_TRUE(job["progress"].is_null());
  auto list = call({{"op", "list"}});
  EXPECT_GT(list["daemon"]["moved_bytes"].get<uint64_t>(), 0u) << list["daemon"].dump();

  // Verify again from the console is refused now: the target password is gone.
  auto session = console_session();
  auto detail = client().Get(fmt::format("/admin/job/{}", id).c_str(), session);
  ASSERT_TRUE(detail);
  httplib::Params form{{"csrf", csrf_in(detail->body)}};
  auto again = client().Post(fmt::format("/admin/job/{}/reverify", id).c_str(), session, form);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 409);
  EXPECT_NE(again->body.find("erased"), std::string::npos) << again->body;
}

// Debian's chromium, driven by tests/serve/web_browser.py (Selenium and
// chromium-driver), against a target where users log in with their own
// password: the user's flow (wrong old password, wrong new one, both right,
// the status page until done, the link refused afterwards), then the
// console (login, the account listed as done, its JSON and CSV reports
// downloaded). Its screenshots are kept in the build directory under
// artifacts/web-browser/.
TEST_F(WebTest, InARealBrowserTheUserMovesTheMailboxAndTheConsoleReportsIt) {
  OwnTargetPasswords own;
  std::string link = invite("yara");
  write_file(dir_ + "/wrong.pw", std::string(kWrong) + "\n", 0600);
  write_file(dir_ + "/right.pw", passwords_["yara"] + "\n", 0600);
  write_file(dir_ + "/new.pw", passwords_["new:yara"] + "\n", 0600);
  fs::path shots = fs::current_path() / "artifacts" / "web-browser";
  fs::remove_all(shots);
  fs::create_directories(shots);
  auto r = run_process({"/usr/bin/python3", std::string(IMAPSTAGE_SOURCE_DIR) + "/tests/serve/web_browser.py", link,
                        dir_ + "/wrong.pw", dir_ + "/right.pw", dir_ + "/new.pw", dir_ + "/admin.token",
                        shots.string()},
                       {"HOME=" + dir_}, 300s);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto parsed = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  nlohmann::json seen;  // what the page did not show is ""
  for (auto& [k, v] : parsed.items()) seen[k] = v.is_null() ? nlohmann::json("") : v;
  EXPECT_EQ(seen["form_user"], "yara") << seen.dump();
  EXPECT_TRUE(seen.value("asks_new_password", false)) << seen.dump();
  EXPECT_NE(seen.value("wrong_error", "").find("old server refused this password"), std::string::npos) << seen.dump();
  EXPECT_TRUE(seen.value("wrong_field_empty", false));
  EXPECT_NE(seen.value("wrong_new_error", "").find("new server refused"), std::string::npos) << seen.dump();
  ASSERT_FALSE(seen["statuses"].empty()) << seen.dump();
  EXPECT_EQ(seen["statuses"].back(), "done") << seen.dump();
  EXPECT_TRUE(seen.value("status_path", false));
  EXPECT_EQ(seen.value("verify", "").rfind("equal", 0), 0u) << seen.dump();
  EXPECT_NE(seen.value("reuse", "").find("already used"), std::string::npos) << seen.dump();
  EXPECT_EQ(content(*new_, "yara"), content(*old_, "yara"));
  // The console in the same browser.
  EXPECT_EQ(seen["console_status"], "done") << seen.dump();
  auto job = job_of("yara");
  ASSERT_TRUE(seen["report"].is_object()) << seen.dump();
  EXPECT_EQ(seen["report"]["id"], job["id"]);
  EXPECT_EQ(seen["report"]["user"], "yara");
  EXPECT_EQ(seen["report"]["status"], "done");
  EXPECT_EQ(seen["report"]["verify"]["equal"], true);
  std::string csv = seen.value("report_csv", "");
  EXPECT_EQ(csv.rfind("record,job,user,target_user,", 0), 0u) << csv;
  EXPECT_NE(csv.find(fmt::format("run,{},yara,yara,", job["id"].get<uint64_t>())), std::string::npos) << csv;
  bodies_.push_back(r.out);
  for (auto name : {"1-form.png", "2-wrong-password.png", "2b-wrong-new-password.png", "4-done.png",
                    "5-link-reused.png", "6-console.png", "7-job.png"})
    EXPECT_GT(fs::file_size(shots / name), 1000u) << name;
  for (auto name : {"downloads/job-" + job["id"].dump() + ".json", "downloads/job-" + job["id"].dump() + ".csv"})
    EXPECT_TRUE(fs::exists(shots / name)) << name;
}

TEST_F(WebTest, TheConsoleNeedsALoginAndListsRetriesAndReportsJobs) {
  // No session: the pages send to the login, the actions are refused.
  auto page = client().Get("/admin");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 303);
  EXPECT_EQ(page->get_header_value("Location"), "/admin/login");
  auto json = client().Get("/admin/job/1.json");
  ASSERT_TRUE(json);
  EXPECT_EQ(json->status, 303);
  httplib::Params none;
  auto action = client().Post("/admin/job/1/retry", none);
  ASSERT_TRUE(action);
  EXPECT_EQ(action->status, 401);

  auto login = client().Get("/admin/login");
  ASSERT_TRUE(login);
  std::string csrf = csrf_in(login->body);
  ASSERT_FALSE(csrf.empty());
  httplib::Params wrong{{"csrf", csrf}, {"token", "not-the-token-at-all"}};
  auto refused = client().Post("/admin/login", wrong);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
  EXPECT_FALSE(refused->has_header("Set-Cookie"));
  httplib::Params no_csrf{{"token", kAdminToken}};
  EXPECT_EQ(client().Post("/admin/login", no_csrf)->status, 403);
  httplib::Params right{{"csrf", csrf}, {"token", kAdminToken}};
  auto ok = client().Post("/admin/login", right);
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 303);
  std::string cookie = ok->get_header_value("Set-Cookie");
  EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
  EXPECT_NE(cookie.find("SameSite=Strict"), std::string::npos);
  EXPECT_EQ(cookie.find(kAdminToken), std::string::npos);
  cookie = cookie.substr(0, cookie.find(';'));
  httplib::Headers session{{"Cookie", cookie}};

  auto c = client();
  auto list = c.Get("/admin?state=done", session);
  ASSERT_TRUE(list);
  ASSERT_EQ(list->status, 200) << list->body;
  bodies_.push_back(list->body);
  EXPECT_NE(list->body.find("data-user=\"wendy\" data-status=\"done\""), std::string::npos) << list->body;
  EXPECT_EQ(list->body.find("data-status=\"queued\""), std::string::npos);
  EXPECT_NE(list->body.find("<svg id=\"by-state\""), std::string::npos);
  uint64_t id = job_of("wendy")["id"];
  auto report = c.Get(fmt::format("/admin/job/{}.json", id).c_str(), session);
  ASSERT_TRUE(report);
  ASSERT_EQ(report->status, 200);
  auto j = nlohmann::json::parse(report->body);
  EXPECT_EQ(j["user"], "wendy");
  EXPECT_EQ(j["verify"]["equal"], true);
  bodies_.push_back(report->body);

  auto detail = c.Get(fmt::format("/admin/job/{}", id).c_str(), session);
  ASSERT_TRUE(detail);
  std::string action_csrf = csrf_in(detail->body);
  ASSERT_FALSE(action_csrf.empty()) << detail->body;
  httplib::Params bad{{"csrf", std::string(64, '1')}};
  EXPECT_EQ(c.Post(fmt::format("/admin/job/{}/retry", id).c_str(), session, bad)->status, 403);
  EXPECT_EQ(job_of("wendy")["status"], "done");
  httplib::Params good{{"csrf", action_csrf}};
  auto retried = c.Post(fmt::format("/admin/job/{}/retry", id).c_str(), session, good);
  ASSERT_TRUE(retried);
  EXPECT_EQ(retried->status, 303);
  std::string status = job_of("wendy")["status"];
  EXPECT_TRUE(status == "queued" || status == "running" || status == "done") << status;
  auto end = Clock::now() + 120s;
  while (Clock::now() < end && job_of("wendy")["status"] != "done") std::this_thread::sleep_for(200ms);
  EXPECT_EQ(job_of("wendy")["status"], "done");
  EXPECT_EQ(content(*new_, "wendy"), content(*old_, "wendy")) << "a second pass duplicated mail";
}

TEST_F(WebTest, TheConsoleShowsHistoryVerifiesAgainAndGivesReportsManifestsAndLinks) {
  uint64_t id = job_of("wendy")["id"];
  std::string job_path = fmt::format("/admin/job/{}", id);
  // Without a session every action is 401, with one but without its CSRF token 403.
  httplib::Params none;
  for (std::string path : {job_path + "/reverify", std::string("/admin/logout"), std::string("/admin/invite")}) {
    auto r = client().Post(path.c_str(), none);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 401) << path;
  }
  for (std::string path : {job_path + ".csv", job_path + ".manifest.json", job_path + ".manifest.sig"}) {
    auto r = client().Get(path.c_str());
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 303) << path;
  }
  auto session = console_session();
  auto c = client();
  httplib::Params bad{{"csrf", std::string(64, '2')}, {"users", "zoe"}, {"ttl_days", "1"}};
  for (std::string path : {job_path + "/reverify", std::string("/admin/logout"), std::string("/admin/invite")}) {
    auto r = c.Post(path.c_str(), session, bad);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 403) << path;
  }
  EXPECT_EQ(job_of("wendy")["status"], "done") << "a refused action acted";

  // The list: totals, both plots, totals per origin.
  auto list = c.Get("/admin", session);
  ASSERT_TRUE(list);
  ASSERT_EQ(list->status, 200);
  bodies_.push_back(list->body);
  EXPECT_NE(list->body.find("id=\"totals\""), std::string::npos);
  EXPECT_NE(list->body.find("id=\"throughput\""), std::string::npos);
  EXPECT_NE(list->body.find("id=\"throughput-plot\""), std::string::npos) << list->body;
  EXPECT_NE(list->body.find("data-origin=\"web\""), std::string::npos);

  // The job: its history (the first pass and the retried one), the throughput of its latest attempt.
  auto detail = c.Get(job_path.c_str(), session);
  ASSERT_TRUE(detail);
  ASSERT_EQ(detail->status, 200);
  bodies_.push_back(detail->body);
  std::regex run_row("<tr class=\"run\" data-kind=\"migrate\" data-status=\"done\">");
  EXPECT_EQ(std::distance(std::sregex_iterator(detail->body.begin(), detail->body.end(), run_row),
                          std::sregex_iterator()),
            2)
      << detail->body;
  EXPECT_NE(detail->body.find("<svg id=\"job-throughput\""), std::string::npos);
  EXPECT_NE(detail->body.find("Signed manifest"), std::string::npos);
  std::string csrf = csrf_in(detail->body);

  // Verify again: a verify-only attempt, the pass count unchanged, nothing copied again.
  int passes = job_of("wendy")["passes"];
  httplib::Params form{{"csrf", csrf}};
  auto again = c.Post((job_path + "/reverify").c_str(), session, form);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 303) << again->body;
  auto job = wait_final("wendy");
  ASSERT_EQ(job.value("status", ""), "done") << job.dump();
  EXPECT_EQ(job["passes"], passes);
  EXPECT_EQ(job["runs"].back()["kind"], "verify");
  EXPECT_EQ(job["runs"].back()["verify"]["equal"], true);
  EXPECT_EQ(job["verify_only"], false);
  EXPECT_EQ(content(*new_, "wendy"), content(*old_, "wendy"));

  // The reports: CSV with the job, its runs; the manifest and its signature.
  auto csv = c.Get((job_path + ".csv").c_str(), session);
  ASSERT_TRUE(csv);
  ASSERT_EQ(csv->status, 200);
  EXPECT_EQ(csv->get_header_value("Content-Type").rfind("text/csv", 0), 0u);
  EXPECT_EQ(csv->body.rfind("record,job,user,target_user,", 0), 0u) << csv->body;
  EXPECT_NE(csv->body.find(fmt::format("job,{},wendy,wendy,", id)), std::string::npos) << csv->body;
  EXPECT_NE(csv->body.find(fmt::format("run,{},wendy,wendy,", id)), std::string::npos) << csv->body;
  EXPECT_NE(csv->body.find(",verify,"), std::string::npos) << csv->body;
  bodies_.push_back(csv->body);
  EXPECT_EQ(c.Get((job_path + ".manifest.sig").c_str(), session)->status, 404) << "a signature before its manifest";
  auto manifest = c.Get((job_path + ".manifest.json").c_str(), session);
  ASSERT_TRUE(manifest);
  ASSERT_EQ(manifest->status, 200) << manifest->body;
  auto m = nlohmann::json::parse(manifest->body);
  ASSERT_EQ(m["accounts"].size(), 1u) << manifest->body;
  EXPECT_EQ(m["accounts"][0]["account"], "wendy@127.0.0.1");
  EXPECT_GT(m["messages"].get<uint64_t>(), 0u);
  auto sig = c.Get((job_path + ".manifest.sig").c_str(), session);
  ASSERT_TRUE(sig);
  ASSERT_EQ(sig->status, 200);
  EXPECT_EQ(sig->body.size(), 64u);
  EXPECT_TRUE(verify::ed25519_verify(manifest->body, sig->body, dir_ + "/manifest.pem"));
  EXPECT_FALSE(verify::ed25519_verify(manifest->body + " ", sig->body, dir_ + "/manifest.pem"));

  // Invitations from the console: the links shown once, and they open the page.
  httplib::Params invite{{"csrf", csrf}, {"users", "zoe\nquinn,quinn\n"}, {"ttl_days", "2"}};
  auto made = c.Post("/admin/invite", session, invite);
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 200) << made->body;
  std::regex link_re("/i/([0-9a-f]{64})");
  std::vector<std::string> links;
  for (auto it = std::sregex_iterator(made->body.begin(), made->body.end(), link_re); it != std::sregex_iterator(); ++it)
    links.push_back((*it)[1]);
  ASSERT_EQ(links.size(), 2u) << made->body;
  for (auto& t : links) tokens_.push_back(t);
  auto opened = client().Get(("/i/" + links[0]).c_str());
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->status, 200);
  EXPECT_NE(opened->body.find("id=\"user\">zoe<"), std::string::npos) << opened->body;
  httplib::Params bad_ttl{{"csrf", csrf}, {"users", "zoe"}, {"ttl_days", "0"}};
  EXPECT_EQ(c.Post("/admin/invite", session, bad_ttl)->status, 422);

  // Logout: the session no longer opens anything.
  auto out = c.Post("/admin/logout", session, form);
  ASSERT_TRUE(out);
  EXPECT_EQ(out->status, 303);
  EXPECT_NE(out->get_header_value("Set-Cookie").find("Max-Age=0"), std::string::npos);
  auto after = c.Get("/admin", session);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 303);
  EXPECT_EQ(c.Post((job_path + "/reverify").c_str(), session, form)->status, 401);
}

TEST_F(WebTest, WithACertificateThePagesAreHttpsOnly) {
  fs::path certs = fs::path(old_->ca_file()).parent_path();
  write_file(dir_ + "/web.pem", read_file(certs / "server.pem"), 0644, kNobody);
  write_file(dir_ + "/web.key", read_file(certs / "server.key"), 0600, kNobody);
  stop_daemon();
  write_config(20, true);
  daemon_tls_ = true;
  start_daemon();
  httplib::SSLClient c("127.0.0.1", port_);
  c.set_ca_cert_path(old_->ca_file().c_str());
  c.enable_server_certificate_verification(true);
  std::string link = invite("xavier");
  EXPECT_EQ(link.rfind("https://127.0.0.1:", 0), 0u) << link;
  auto page = c.Get(path_of(link).c_str());
  ASSERT_TRUE(page) << httplib::to_string(page.error());
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->body.find("id=\"plain-http\""), std::string::npos) << "HTTPS pages do not warn";
  EXPECT_NE(page->get_header_value("Strict-Transport-Security").find("max-age="), std::string::npos);
  EXPECT_FALSE(client().Get("/")) << "plain HTTP answered on the HTTPS port";
  stop_daemon();
  daemon_tls_ = false;
  write_config(20);
  start_daemon();
}

TEST_F(WebTest, NoPasswordOrTokenInAnswersLogsOrStateFiles) {
  ASSERT_FALSE(tokens_.empty());
  for (size_t i = 0; i < bodies_.size(); ++i) expect_no_secret("answer " + std::to_string(i), bodies_[i]);
  std::vector<fs::path> files = {dir_ + "/daemon.out", logs_ + "/daemon.jsonl"};
  for (auto& e : fs::recursive_directory_iterator(state_))
    if (e.is_regular_file() && e.path().string().find("/archive/") == std::string::npos) files.push_back(e.path());
  for (auto& f : files) {
    std::string text = read_file(f);
    expect_no_secret(f.string(), text);
    for (auto& t : tokens_) EXPECT_EQ(text.find(t), std::string::npos) << "a link's token in " << f;
  }
  EXPECT_NE(read_file(logs_ + "/daemon.jsonl").find("web_accepted"), std::string::npos);
}

TEST_F(WebTest, PlainHttpOffLoopbackIsRefused) {
  std::string text = read_file(config_);
  std::string bad = std::regex_replace(text, std::regex("listen = \"127\\.0\\.0\\.1:"), "listen = \"0.0.0.0:");
  write_file(dir_ + "/open.toml", bad, 0644);
  auto r = run_imapstage({"serve", "--allow-root", "--config", dir_ + "/open.toml"}, {}, 20s);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("not a loopback address"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace imapstage::testing

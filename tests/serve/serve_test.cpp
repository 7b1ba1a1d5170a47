// imapstage serve and login-hook against two real Dovecots on loopback: the
// old server holds the mail, the new one runs `imapstage login-hook` as its
// checkpassword passdb; the daemon runs as `nobody` (setpriv), as it would
// under its own user.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "archive-format/hash.h"
#include "common/error.h"
#include "imap/session.h"
#include "serve/control.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr uid_t kNobody = 65534;
const std::vector<std::string> kSmallUsers = {"u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"};

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

struct HookRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr
  double seconds = 0;
};

// Runs `imapstage login-hook` as Dovecot does: `input` on fd 3, the reply
// program last on the command line.
HookRun run_hook(const std::string& config, const std::string& input, const std::vector<std::string>& reply,
                 const std::vector<std::string>& env = {}) {
  int in[2], out[2];
  if (pipe(in) != 0 || pipe(out) != 0) throw std::runtime_error("pipe");
  auto t0 = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    dup2(in[0], 3);
    for (int fd = 4; fd < 256; ++fd) close(fd);
    std::vector<std::string> argv{imapstage_binary(), "login-hook", "--config", config};
    argv.insert(argv.end(), reply.begin(), reply.end());
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    std::vector<std::string> env_strings = {"PATH=/usr/bin:/bin"};
    env_strings.insert(env_strings.end(), env.begin(), env.end());
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  (void)!write(in[1], input.data(), input.size());
  close(in[1]);
  HookRun r;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return r;
}

std::string hook_input(const std::string& user, const std::string& password) {
  return user + std::string(1, '\0') + password + std::string(1, '\0') + "1700000000" + std::string(1, '\0');
}

class ServeTest : public ::testing::Test {
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
    old_options.users = {"alice", "carol"};
    old_options.trust_loopback = true;
    old_ = new TestServer(old_options);
    for (auto& u : {"alice", "carol"}) passwords_[u] = old_->password(u);
    auto add = [](const std::string& user, const std::string& seed) {
      std::string pw = old_->run({"add-user", old_->dir(), user, "--seed", seed});
      while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r')) pw.pop_back();
      passwords_[user] = pw;
    };
    for (auto& u : kSmallUsers) add(u, "small:20");
    for (auto& u : {"dave", "erin", "frank", "gina", "hana"}) add(u, "small:5");

    TestServerOptions new_options;
    new_options.seed = "none";
    new_options.users = {};
    new_options.target_users = {"alice", "carol", "dave", "erin", "frank", "gina", "hana"};
    for (auto& u : kSmallUsers) new_options.target_users.push_back(u);
    new_options.login_hook = imapstage_binary() + " login-hook --config " + config_;
    new_ = new TestServer(new_options);

    write_file(dir_ + "/old-admin.secret", old_->master_password() + "\n", 0600, kNobody);
    write_file(dir_ + "/new-admin.secret", new_->master_password() + "\n", 0600, kNobody);
    write_config(old_->imaps_port());
  }

  // Every test finds the daemon running (a test that stops it starts it again).
  void SetUp() override {
    if (!daemon_pid_) start_daemon();
  }

  static void TearDownTestSuite() {
    stop_daemon();
    delete new_;
    delete old_;
    delete work_;
    new_ = old_ = nullptr;
    work_ = nullptr;
  }

  // The config every run reads (the hook reads it at each login); `source_port` lets a test point it elsewhere.
  static void write_config(uint16_t source_port, int hook_timeout = 30, int delta_after = 0) {
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
auth = "master-user"
admin_user = "{}"
password_file = "{}/new-admin.secret"

[serve]
state_dir = "{}"
key_file = "{}/serve.key"
source_profile = "old"
target_profile = "new"
jobs = 3
per_server = 2
max_load = 0
retries = 2
retry_delay = "1s"
verify = "deep"
delta_after = {}
delta_passes = 1
hook_users = ["dovecot"]

[login_hook]
timeout = {}
)",
                                   source_port, old_->ca_file(), old_->master_user(), dir_, new_->imaps_port(),
                                   new_->ca_file(), new_->master_user(), dir_, state_, logs_, delta_after,
                                   hook_timeout);
    write_file(config_, text, 0644);
  }

  static void start_daemon() {
    ASSERT_EQ(daemon_pid_, 0);
    int out = open((dir_ + "/daemon.out").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid_t pid = fork();
    if (pid == 0) {
      dup2(out, 1);
      dup2(out, 2);
      int devnull = open("/dev/null", O_RDONLY);
      dup2(devnull, 0);
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
        if (call({{"op", "list"}}).value("ok", false)) return;
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

  static void stop_daemon(int sig = SIGTERM) {
    if (!daemon_pid_) return;
    kill(daemon_pid_, sig);
    int status = 0;
    waitpid(daemon_pid_, &status, 0);
    daemon_pid_ = 0;
  }

  static nlohmann::json call(const nlohmann::json& request) {
    return serve::control_call(state_ + "/control.sock", request, 10s);
  }

  static nlohmann::json job_of(const std::string& user) {
    auto reply = call({{"op", "list"}});
    for (auto& j : reply["jobs"])
      if (j["user"] == user) return j;
    return nullptr;
  }

  static size_t jobs_of(const std::string& user) {
    size_t n = 0;
    auto reply = call({{"op", "list"}});
    for (auto& j : reply["jobs"]) n += j["user"] == user;
    return n;
  }

  // Waits until `user`'s job is done (or failed for good); returns it.
  static nlohmann::json wait_done(const std::string& user, std::chrono::seconds timeout = 120s) {
    auto end = Clock::now() + timeout;
    nlohmann::json j;
    while (Clock::now() < end) {
      j = job_of(user);
      if (!j.is_null() && (j["status"] == "done" || j["status"] == "error" || j["status"] == "cancelled")) return j;
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "job of " << user << " not finished: " << j.dump() << "\n" << read_file(dir_ + "/daemon.out");
    return j;
  }

  // Logs in to the new server with the user's old password; throws on refusal.
  static double login_new(const std::string& user, const std::string& password) {
    imap::Endpoint e;
    e.host = new_->host();
    e.port = new_->imaps_port();
    e.ca_file = new_->ca_file();
    e.timeout = 60s;
    auto t0 = Clock::now();
    auto s = imap::Session::connect(e);
    imap::Credentials c;
    c.user = user;
    c.secret = password;
    s->login(c);
    double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    s->logout();
    return seconds;
  }

  // Every selectable folder and its messages (sha256, flags, date), by folder name.
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

  static void expect_migrated(const std::string& user) {
    auto source = content(*old_, user);
    auto target = content(*new_, user);
    size_t messages = 0;
    for (auto& [folder, set] : source) {
      messages += set.size();
      EXPECT_EQ(target[folder], set) << user << ": folder " << folder;
    }
    EXPECT_GT(messages, 0u);
    EXPECT_EQ(target.size(), source.size()) << user;
  }

  static std::vector<nlohmann::json> daemon_events() {
    std::vector<nlohmann::json> out;
    std::istringstream in(read_file(logs_ + "/daemon.jsonl"));
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  static std::string password_of(const std::string& user) { return passwords_.at(user); }

  static std::map<std::string, std::string> passwords_;
  static TempDir* work_;
  static TestServer* old_;
  static TestServer* new_;
  static std::string dir_, config_, state_, logs_;
  static pid_t daemon_pid_;
};

std::map<std::string, std::string> ServeTest::passwords_;
TempDir* ServeTest::work_ = nullptr;
TestServer* ServeTest::old_ = nullptr;
TestServer* ServeTest::new_ = nullptr;
std::string ServeTest::dir_, ServeTest::config_, ServeTest::state_, ServeTest::logs_;
pid_t ServeTest::daemon_pid_ = 0;

TEST_F(ServeTest, RefusesToRunAsRoot) {
  auto r = run_imapstage({"serve", "--config", config_});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("refusing to run as root"), std::string::npos) << r.err;
}

TEST_F(ServeTest, LoginWithOldPasswordMigratesTheMailbox) {
  double seconds = login_new("alice", password_of("alice"));
  EXPECT_LT(seconds, 3.0) << "the login took too long";
  auto job = wait_done("alice");
  EXPECT_EQ(job["status"], "done") << job.dump();
  EXPECT_EQ(job["verify"]["equal"], true);
  EXPECT_EQ(job["verify"]["deep"], true);
  EXPECT_EQ(job["has_secret"], false);
  EXPECT_FALSE(fs::exists(state_ + "/secrets/" + std::to_string(job["id"].get<uint64_t>())));
  expect_migrated("alice");

  // A second login queues nothing.
  login_new("alice", password_of("alice"));
  EXPECT_EQ(jobs_of("alice"), 1u);
  size_t added = 0;
  for (auto& e : daemon_events()) added += e.value("event", "") == "job_added" && e.value("user", "") == "alice";
  EXPECT_EQ(added, 1u);
  // The old server saw the client's address from the hook's ID.
  EXPECT_NE(read_file(old_->info()["log"].get<std::string>()).find("x-originating-ip"), std::string::npos);
}

TEST_F(ServeTest, WrongPasswordIsRefusedAndQueuesNothing) {
  auto r = run_hook(config_, hook_input("bob", "not-the-password"), {"/usr/bin/env"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  r = run_hook(config_, hook_input("dave", "not-the-password"), {"/usr/bin/env"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THROW(login_new("dave", "not-the-password"), Error);
  EXPECT_TRUE(job_of("dave").is_null());
}

TEST_F(ServeTest, RightPasswordExecsTheReplyProgramWithUserAndNoSecret) {
  auto r = run_hook(config_, hook_input("dave", password_of("dave")), {"/usr/bin/env"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("USER=dave\n"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(password_of("dave")), std::string::npos);
  // The hook queues the migration and lets the login go on: it must not wait
  // for the migration. (Under AddressSanitizer, on a loaded machine, the
  // hook's own TLS login to the old server alone has taken 2.07 s.)
#ifdef __SANITIZE_ADDRESS__
  constexpr double kHookSeconds = 10.0;
#else
  constexpr double kHookSeconds = 2.0;
#endif
  EXPECT_LT(r.seconds, kHookSeconds);
  auto job = wait_done("dave");
  EXPECT_EQ(job["status"], "done") << job.dump();
  EXPECT_EQ(job["origin"], "hook");
  expect_migrated("dave");
}

TEST_F(ServeTest, OldServerDownIsATemporaryFailure) {
  // Nothing listens on the port: 111 at once.
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  uint16_t port = ntohs(a.sin_port);
  write_config(port, 2);
  auto r = run_hook(config_, hook_input("erin", password_of("erin")), {"/usr/bin/env"});
  EXPECT_EQ(r.exit_code, 111) << r.output;
  // Through Dovecot the client is told to try later.
  try {
    login_new("erin", password_of("erin"));
    ADD_FAILURE() << "the login passed with the old server down";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::auth);
  }
  // A server that accepts and never answers: the hook's own timeout (2 s here) ends it with 111.
  ASSERT_EQ(listen(s, 8), 0);
  r = run_hook(config_, hook_input("erin", password_of("erin")), {"/usr/bin/env"});
  EXPECT_EQ(r.exit_code, 111) << r.output;
  EXPECT_GE(r.seconds, 1.5);
  EXPECT_LT(r.seconds, 10.0);
  close(s);
  write_config(old_->imaps_port());
  EXPECT_TRUE(job_of("erin").is_null());
}

TEST_F(ServeTest, TenUsersAtOnceRunUnderTheCaps) {
  std::vector<std::thread> threads;
  std::vector<double> seconds(kSmallUsers.size(), -1);
  for (size_t i = 0; i < kSmallUsers.size(); ++i)
    threads.emplace_back([&, i] {
      try {
        seconds[i] = login_new(kSmallUsers[i], password_of(kSmallUsers[i]));
      } catch (const std::exception& e) {
        ADD_FAILURE() << kSmallUsers[i] << ": " << e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < kSmallUsers.size(); ++i) EXPECT_GE(seconds[i], 0) << kSmallUsers[i];
  for (auto& u : kSmallUsers) {
    auto job = wait_done(u);
    EXPECT_EQ(job["status"], "done") << job.dump();
    EXPECT_EQ(jobs_of(u), 1u);
  }
  // At most per_server (2) jobs ran at once against the old server, and they did overlap.
  std::set<std::string> users(kSmallUsers.begin(), kSmallUsers.end());
  std::vector<std::pair<double, int>> edges;
  for (auto& e : daemon_events()) {
    if (!users.count(e.value("user", ""))) continue;
    if (e["event"] == "job_start") {
      edges.push_back({e["time"].get<double>(), +1});
      EXPECT_LE(e["running"].get<int>(), 2);
    }
    if (e["event"] == "job_done") edges.push_back({e["time"].get<double>(), -1});
  }
  std::sort(edges.begin(), edges.end());
  int now = 0, most = 0;
  for (auto& [t, d] : edges) most = std::max(most, now += d);
  EXPECT_LE(most, 2);
  EXPECT_EQ(edges.size(), 2 * kSmallUsers.size());
  for (auto& u : {"u0", "u9"}) expect_migrated(u);
}

TEST_F(ServeTest, KillNineMidJobLosesAndDuplicatesNothing) {
  login_new("carol", password_of("carol"));
  // Kill the daemon once the job is importing.
  auto end = Clock::now() + 60s;
  bool importing = false;
  while (!importing && Clock::now() < end) {
    for (auto& e : daemon_events())
      importing = importing || (e.value("event", "") == "job_phase" && e.value("user", "") == "carol" &&
                                e.value("phase", "") == "import");
    if (!importing) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(importing);
  std::this_thread::sleep_for(300ms);
  stop_daemon(SIGKILL);
  start_daemon();
  auto job = wait_done("carol");
  EXPECT_EQ(job["status"], "done") << job.dump();
  EXPECT_EQ(job["attempts"], 0);
  EXPECT_EQ(job["verify"]["equal"], true);
  EXPECT_EQ(jobs_of("carol"), 1u);
  expect_migrated("carol");  // every message once: no duplicate on the target
}

TEST_F(ServeTest, DaemonDownSpoolsTheLoginAndTriggerQueuesWithoutPassword) {
  stop_daemon();
  auto r = run_hook(config_, hook_input("frank", password_of("frank")), {"/usr/bin/env"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("spooled"), std::string::npos) << r.output;
  // The spool holds the name only.
  size_t files = 0;
  for (auto& f : fs::directory_iterator(state_ + "/spool")) {
    ++files;
    EXPECT_EQ(read_file(f.path()).find(password_of("frank")), std::string::npos);
  }
  EXPECT_EQ(files, 1u);
  start_daemon();
  auto job = wait_done("frank");
  EXPECT_EQ(job["status"], "done") << job.dump();
  EXPECT_EQ(job["origin"], "spool");
  EXPECT_EQ(job["credentials"], "profile");
  expect_migrated("frank");

  // login-trigger (post-login): the user in USER, no password; runs the rest of its command line.
  auto t = run_process({imapstage_binary(), "login-trigger", "--config", config_, "/usr/bin/env"}, {"USER=nobodyhere"});
  EXPECT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("USER=nobodyhere"), std::string::npos);
  EXPECT_FALSE(job_of("nobodyhere").is_null());
  // Through Dovecot: a server that authenticates its users itself runs the trigger after each login.
  TestServerOptions options;
  options.users = {"erin"};
  options.seed = "none";
  options.post_login = imapstage_binary() + " login-trigger --config " + config_;
  TestServer triggering(options);
  imap::Endpoint e;
  e.host = triggering.host();
  e.port = triggering.imaps_port();
  e.ca_file = triggering.ca_file();
  auto session = imap::Session::connect(e);
  imap::Credentials c;
  c.user = "erin";
  c.secret = triggering.password("erin");
  session->login(c);
  session->examine("INBOX");  // the session works: the trigger ran the imap binary after it
  session->logout();
  job = wait_done("erin");
  EXPECT_EQ(job["status"], "done") << job.dump();
  EXPECT_EQ(job["origin"], "trigger");
  expect_migrated("erin");
}

TEST_F(ServeTest, DeltaPassTakesMailThatArrivedAfterTheFirstPass) {
  stop_daemon();
  write_config(old_->imaps_port(), 30, 3);
  start_daemon();
  login_new("gina", password_of("gina"));
  auto end = Clock::now() + 60s;
  nlohmann::json job;
  while (Clock::now() < end) {
    job = job_of("gina");
    if (!job.is_null() && job["passes"] == 1) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(job["passes"], 1) << job.dump();
  EXPECT_TRUE(job["status"] == "waiting" || job["status"] == "queued" || job["status"] == "running") << job.dump();
  EXPECT_EQ(job["has_secret"], true) << "the password is kept for the delta pass";
  std::string message = "From: a@example.org\r\nTo: gina@example.org\r\nSubject: after the first pass\r\n"
                        "Message-ID: <late@example.org>\r\n\r\nlate mail\r\n";
  std::string file = dir_ + "/late.eml";
  write_file(file, message, 0644);
  old_->run({"append", old_->dir(), "gina", "INBOX", file});
  job = wait_done("gina");
  EXPECT_EQ(job["status"], "done") << job.dump();
  EXPECT_EQ(job["passes"], 2);
  EXPECT_EQ(job["has_secret"], false);
  expect_migrated("gina");
  auto inbox = content(*new_, "gina")["INBOX"];
  bool late = false;
  for (auto& m : inbox) late = late || m.rfind(archive::to_hex(archive::sha256(message)), 0) == 0;
  EXPECT_TRUE(late) << "the late message reached the new server";
  stop_daemon();
  write_config(old_->imaps_port());
  start_daemon();
}

TEST_F(ServeTest, JobsCommands) {
  // Without a password: the source profile's master-user credential.
  auto r = run_imapstage({"jobs", "--config", config_, "add", "hana"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto job = wait_done("hana");
  EXPECT_EQ(job["status"], "done") << job.dump();
  EXPECT_EQ(job["credentials"], "profile");
  EXPECT_EQ(job["origin"], "add");
  expect_migrated("hana");
  std::string id = std::to_string(job["id"].get<uint64_t>());
  r = run_imapstage({"jobs", "--config", config_, "list"});
  EXPECT_NE(r.out.find("hana"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("done"), std::string::npos);
  r = run_imapstage({"jobs", "--config", config_, "show", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("equal"), std::string::npos) << r.out;
  // A finished job runs again: nothing new moves.
  r = run_imapstage({"jobs", "--config", config_, "retry", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  job = wait_done("hana");
  EXPECT_EQ(job["status"], "done");
  EXPECT_EQ(job["passes"], 2);
  EXPECT_EQ(job["messages"], 0) << "a second pass moves nothing new";
  expect_migrated("hana");
  r = run_imapstage({"jobs", "--config", config_, "add", "nosuchuser"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run_imapstage({"jobs", "--config", config_, "add", "nosuchuser"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("already has job"), std::string::npos) << r.err;
  // The source refuses the master login of a mailbox it does not have: an error for good, no retry.
  auto failed = wait_done("nosuchuser");
  EXPECT_EQ(failed["status"], "error") << failed.dump();
  EXPECT_EQ(failed["error_kind"], "auth");
  EXPECT_EQ(failed["attempts"], 1);
  r = run_imapstage({"jobs", "--config", config_, "cancel", std::to_string(failed["id"].get<uint64_t>())});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(job_of("nosuchuser")["status"], "cancelled");
  // Only root, the daemon's user and the configured users may ask.
  auto own = run_process({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                          imapstage_binary(), "jobs", "--socket", state_ + "/control.sock", "list"});
  EXPECT_NE(own.out.find("hana"), std::string::npos) << "the daemon's own user may ask: " << own.err;
  auto stranger = run_process({"/usr/bin/setpriv", "--reuid=102", "--regid=105", "--clear-groups", "--",
                               imapstage_binary(), "jobs", "--socket", state_ + "/control.sock", "list"});
  EXPECT_EQ(stranger.exit_code, 3) << stranger.out << stranger.err;
}

TEST_F(ServeTest, NoPasswordInAnyFileLogProcessListOrEnvironment) {
  std::vector<std::string> secrets;
  for (auto& u : {"alice", "carol", "dave", "frank"}) secrets.push_back(password_of(u));
  for (auto& u : kSmallUsers) secrets.push_back(password_of(u));
  auto check = [&](const std::string& what, const std::string& text) {
    for (auto& s : secrets) EXPECT_EQ(text.find(s), std::string::npos) << "a password in " << what;
  };
  size_t files = 0;
  for (auto* root : {&state_, &logs_})
    for (auto& f : fs::recursive_directory_iterator(*root))
      if (f.is_regular_file()) {
        ++files;
        check(f.path().string(), read_file(f.path()));
      }
  EXPECT_GT(files, 3u);
  check("daemon output", read_file(dir_ + "/daemon.out"));
  check("the new server's log", read_file(new_->info()["log"].get<std::string>()));
  check("the old server's log", read_file(old_->info()["log"].get<std::string>()));
  check("ps", run_process({"/bin/ps", "-eo", "args"}).out);
  check("the daemon's environment", read_file(fmt::format("/proc/{}/environ", daemon_pid_)));
  check("the daemon's command line", read_file(fmt::format("/proc/{}/cmdline", daemon_pid_)));
  // No sealed credential is left: every job with a password is done.
  EXPECT_TRUE(fs::is_empty(state_ + "/secrets"));
}

}  // namespace
}  // namespace imapstage::testing

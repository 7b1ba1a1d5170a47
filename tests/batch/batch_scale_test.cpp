// Batches at scale through the real binary against the harness Dovecot:
// twenty accounts exported through the master user and again through a magic
// password (a connector profile), imported into twenty other accounts and
// compared message by message; the concurrency caps seen in the event log;
// an account over its deadline, a malformed line and a wrong password in one
// list, and the re-run that finishes the rest.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "tests/support/fault_proxy.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::ProcessResult;
using testing::TempDir;
using testing::TestServer;

constexpr int kAccounts = 20;
const char* const kMagic = "Magic-Shared-pw-2024";

std::string source_user(int i) { return fmt::format("s{:02d}", i); }
std::string target_user(int i) { return fmt::format("t{:02d}", i); }

std::string write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return path;
}

// Calls fn(0) .. fn(n - 1) from `threads` threads (the harness script is slow to start, not to run).
void parallel_for(int n, int threads, const std::function<void(int)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::string> errors;
  std::mutex mutex;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (int i; (i = next++) < n;) {
        try {
          fn(i);
        } catch (const std::exception& e) {
          std::lock_guard lock(mutex);
          errors.push_back(e.what());
        }
      }
    });
  for (auto& t : pool) t.join();
  if (!errors.empty()) throw std::runtime_error(errors.front());
}

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> events;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    events.push_back(nlohmann::json::parse(line));  // throws (failing the test) on anything else
  }
  return events;
}

std::vector<nlohmann::json> named(const std::vector<nlohmann::json>& events, const std::string& name) {
  std::vector<nlohmann::json> out;
  for (auto& e : events)
    if (e.value("event", "") == name) out.push_back(e);
  return out;
}

// Accounts running at once, as the log shows them.
struct Concurrency {
  int by_order = 0;  // most account_start seen before the matching end, in log order
  int by_time = 0;   // most intervals [start time, end time] overlapping (an end at the same instant comes first)
};

Concurrency concurrency(const std::vector<nlohmann::json>& events) {
  Concurrency c;
  std::set<std::string> running;
  std::map<std::string, double> started;
  std::vector<std::pair<double, int>> edges;  // (time, +1 start / -1 end)
  for (auto& e : events) {
    std::string name = e.value("event", "");
    if (name == "account_start") {
      std::string key = e.at("key");
      EXPECT_TRUE(running.insert(key).second) << key << " started twice";
      c.by_order = std::max(c.by_order, static_cast<int>(running.size()));
      EXPECT_TRUE(e.contains("time")) << e.dump();
      started[key] = e.value("time", 0.0);
    } else if (name == "account_done" || name == "account_error") {
      std::string key = e.at("key");
      EXPECT_EQ(running.erase(key), 1u) << key << " ended without a start";
      EXPECT_TRUE(e.contains("time")) << e.dump();
      double end = e.value("time", 0.0);
      EXPECT_GE(end, started[key]) << key;
      edges.push_back({started[key], +1});
      edges.push_back({end, -1});
    }
  }
  EXPECT_TRUE(running.empty()) << "accounts never ended: " << running.size();
  std::sort(edges.begin(), edges.end());  // at equal times -1 sorts before +1
  int now = 0;
  for (auto& [t, d] : edges) c.by_time = std::max(c.by_time, now += d);
  return c;
}

// One message as a comparable string: hash, INTERNALDATE, flags (sorted, no \Recent).
std::string fingerprint(const nlohmann::json& m) {
  std::vector<std::string> flags;
  for (auto& f : m["flags"])
    if (f != "\\Recent") flags.push_back(f);
  std::sort(flags.begin(), flags.end());
  std::string out = m["sha256"].get<std::string>() + " " + m["internaldate"].get<std::string>();
  for (auto& f : flags) out += " " + f;
  return out;
}

// folder name -> sorted fingerprints
std::map<std::string, std::vector<std::string>> mailbox_view(const nlohmann::json& summary) {
  std::map<std::string, std::vector<std::string>> out;
  for (auto& f : summary["folders"]) {
    if (!f.contains("messages") || !f["messages"].is_array()) continue;
    auto& v = out[f["name"].get<std::string>()];
    for (auto& m : f["messages"]) v.push_back(fingerprint(m));
    std::sort(v.begin(), v.end());
  }
  return out;
}

size_t message_count(const nlohmann::json& summary) {
  size_t n = 0;
  for (auto& [folder, messages] : mailbox_view(summary)) n += messages.size();
  return n;
}

// folder (UTF-8) -> sorted hex hashes of the present messages of `account` in the archive.
std::map<std::string, std::vector<std::string>> archived(const std::string& archive_dir, const std::string& account) {
  std::map<std::string, std::vector<std::string>> out;
  auto a = Archive::open(archive_dir, Archive::Mode::read);
  auto acc = a->find_account(account);
  if (!acc) return out;
  for (auto& f : a->folders(acc->id)) {
    if (f.noselect) continue;
    auto& v = out[f.name_utf8];
    a->for_each_message(acc->id, f.id, f.uidvalidity, [&](const archive::MessageRecord& m) {
      if (m.state == archive::MessageState::present) v.push_back(archive::to_hex(m.hash));
      return true;
    });
    std::sort(v.begin(), v.end());
  }
  return out;
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

class BatchScaleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.seed = "none";
    o.users = {};
    server_ = new TestServer(o);
    // Twenty source accounts sharing one password (the magic one), each with
    // four messages of its own over several folders (flags, keywords and
    // dates vary), and twenty empty targets.
    parallel_for(2 * kAccounts, 4, [](int k) {
      if (k < kAccounts)
        server_->run({"add-user", "--seed", "bench:4", "--", server_->dir(), source_user(k + 1), kMagic});
      else
        server_->run({"add-user", "--", server_->dir(), target_user(k - kAccounts + 1), "Target-pw-" + std::to_string(k)});
    });
    sources_ = new std::vector<nlohmann::json>(kAccounts);
    parallel_for(kAccounts, 4, [](int i) { (*sources_)[i] = server_->summary(source_user(i + 1)); });
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete sources_;
    sources_ = nullptr;
  }

  static std::vector<std::string> server_args() {
    return {"--host", server_->host(), "--port", std::to_string(server_->imaps_port()), "--tls", "implicit",
            "--ca-file", server_->ca_file()};
  }

  static std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }

  static TestServer* server_;
  static std::vector<nlohmann::json>* sources_;
};

TestServer* BatchScaleTest::server_ = nullptr;
std::vector<nlohmann::json>* BatchScaleTest::sources_ = nullptr;

TEST_F(BatchScaleTest, TwentyAccountsByMasterUserAndMagicPasswordImportEqualUnderTheCaps) {
  TempDir dir;
  const std::string master_archive = dir.path() + "/by-master";
  const std::string magic_archive = dir.path() + "/by-magic";
  std::string master_secret = write(dir.path() + "/master.secret", server_->master_password() + "\n");
  std::string magic_secret = write(dir.path() + "/magic.secret", std::string(kMagic) + "\n");
  std::string sources_csv = "source_user\n", import_csv = "source_user,source_password,target_user\n";
  for (int i = 1; i <= kAccounts; ++i) {
    sources_csv += source_user(i) + "\n";
    import_csv += source_user(i) + ",," + target_user(i) + "\n";
  }
  std::string sources_file = write(dir.path() + "/sources.csv", sources_csv);
  std::string import_file = write(dir.path() + "/import.csv", import_csv);

  // 1. Master user from the command line, at most 3 accounts at once (no cap per server).
  auto by_master = testing::run_imapstage(concat({"export", "--archive", master_archive, "--accounts", sources_file},
                                                 concat(server_args(), {"--auth-mode", "master-user", "--auth-user",
                                                                        server_->master_user(), "--master-separator",
                                                                        server_->master_separator(), "--password-file",
                                                                        master_secret, "--jobs", "3", "--per-server",
                                                                        "0", "--max-load", "0", "--json"})));
  ASSERT_EQ(by_master.exit_code, 0) << by_master.err << by_master.out.substr(0, 3000);
  auto events = json_lines(by_master.out);
  EXPECT_EQ(named(events, "account_done").size(), static_cast<size_t>(kAccounts));
  EXPECT_TRUE(named(events, "account_error").empty());
  auto c = concurrency(events);
  EXPECT_LE(c.by_time, 3);
  EXPECT_LE(c.by_order, 3);
  EXPECT_GE(c.by_order, 2) << "the accounts ran one after the other: the cap was never tested";
  EXPECT_EQ(by_master.out.find(server_->master_password()), std::string::npos);
  EXPECT_EQ(by_master.err.find(server_->master_password()), std::string::npos);

  // 2. Magic password from a connector profile, 3 at once but at most 2 against one server.
  std::string config = write(dir.path() + "/config.toml", fmt::format(R"([profiles.harness]
host = "{}"
port = {}
tls = "implicit"
ca_file = "{}"
timeout = 30
auth = "magic"
password_file = "{}"
)",
                                                                       server_->host(), server_->imaps_port(),
                                                                       server_->ca_file(), magic_secret));
  auto by_magic = testing::run_imapstage({"export", "--archive", magic_archive, "--accounts", sources_file, "--config",
                                          config, "--source-profile", "harness", "--jobs", "3", "--per-server", "2",
                                          "--max-load", "0", "--json"});
  ASSERT_EQ(by_magic.exit_code, 0) << by_magic.err << by_magic.out.substr(0, 3000);
  events = json_lines(by_magic.out);
  EXPECT_EQ(named(events, "account_done").size(), static_cast<size_t>(kAccounts));
  c = concurrency(events);
  EXPECT_LE(c.by_time, 2);
  EXPECT_LE(c.by_order, 2);
  EXPECT_EQ(c.by_order, 2) << "the accounts ran one after the other: the cap was never tested";
  EXPECT_EQ(by_magic.out.find(kMagic), std::string::npos);
  EXPECT_EQ(by_magic.err.find(kMagic), std::string::npos);

  // Both archives hold every account, under its mailbox name, with every message of the source.
  {
    auto a = Archive::open(master_archive, Archive::Mode::read);
    EXPECT_EQ(a->accounts().size(), static_cast<size_t>(kAccounts));  // nothing under "sNN*admin"
  }
  for (int i = 1; i <= kAccounts; ++i) {
    std::string account = source_user(i) + "@" + server_->host();
    auto m = archived(master_archive, account);
    size_t n = 0;
    for (auto& [folder, hashes] : m) n += hashes.size();
    EXPECT_EQ(n, message_count((*sources_)[i - 1])) << account;
    EXPECT_EQ(m, archived(magic_archive, account)) << account;
  }

  // 3. Import into the twenty targets through the master user.
  auto imported = testing::run_imapstage(concat({"import", "--archive", master_archive, "--accounts", import_file},
                                                concat(server_args(), {"--auth-mode", "master-user", "--auth-user",
                                                                       server_->master_user(), "--password-file",
                                                                       master_secret, "--jobs", "3", "--max-load",
                                                                       "0", "--json"})));
  ASSERT_EQ(imported.exit_code, 0) << imported.err << imported.out.substr(0, 3000);
  events = json_lines(imported.out);
  EXPECT_EQ(named(events, "account_done").size(), static_cast<size_t>(kAccounts));
  EXPECT_LE(concurrency(events).by_time, 3);
  auto state = nlohmann::json::parse(slurp(std::filesystem::path(master_archive) / "batches" / "import.json"));
  ASSERT_EQ(state["accounts"].size(), static_cast<size_t>(kAccounts));
  for (auto& a : state["accounts"]) {
    EXPECT_EQ(a["status"], "done") << a.dump();
    EXPECT_GT(a["messages"].get<uint64_t>(), 0u) << a.dump();
  }

  // Every target equals its source: bytes, flags and INTERNALDATE per folder.
  std::vector<nlohmann::json> targets(kAccounts);
  parallel_for(kAccounts, 4, [&](int i) { targets[i] = server_->summary(target_user(i + 1)); });
  size_t compared = 0;
  for (int i = 0; i < kAccounts; ++i) {
    auto src = mailbox_view((*sources_)[i]);
    auto dst = mailbox_view(targets[i]);
    size_t here = 0;
    for (auto& [folder, messages] : src) {
      if (messages.empty()) continue;
      ASSERT_TRUE(dst.count(folder)) << target_user(i + 1) << ": folder " << folder << " missing";
      EXPECT_EQ(dst[folder], messages) << source_user(i + 1) << " -> " << target_user(i + 1) << ", " << folder;
      here += messages.size();
    }
    EXPECT_EQ(message_count(targets[i]), here) << target_user(i + 1) << " holds messages its source does not";
    EXPECT_EQ(here, 4u) << source_user(i + 1);
    compared += here;
  }
  EXPECT_EQ(compared, static_cast<size_t>(4 * kAccounts));
}

// An account slowed down (through a bandwidth-capped proxy, chosen by its
// domain's profile) past --account-timeout ends in error while the other
// finishes; status shows it; the re-run finishes it without fetching again
// what it had committed. (No login fails here: Dovecot delays the next
// logins from an address after a failed one, which would move the deadline.)
TEST_F(BatchScaleTest, AccountOverItsDeadlineIsResumedWithoutRefetching) {
  TempDir dir;
  const std::string archive_dir = dir.path() + "/archive";
  const std::string fast = "tq1@fast.test", slow = "big@slow.test";
  const std::map<std::string, std::string> pw = {{fast, "Fast-1-pw"}, {slow, "Slow-pw-3"}};
  // The slow account: a small folder first, then two folders of 120 KB each
  // (3 s each through the proxy), so the deadline falls inside the second folder.
  auto message = [](const std::string& id, size_t size) {
    std::string m = fmt::format("From: a@example.org\r\nTo: b@example.org\r\nSubject: {}\r\nMessage-ID: <{}@scale.test>\r\n"
                                "Date: Mon, 4 Mar 2024 10:00:00 +0100\r\n\r\n",
                                id, id);
    std::string line = "The quick brown fox " + id + " jumps over the lazy dog 0123456789.\r\n";
    while (m.size() < size) m += line;
    return m;
  };
  parallel_for(2, 2, [&](int k) {
    const std::string& user = k == 0 ? fast : slow;
    server_->run({"add-user", "--", server_->dir(), user, pw.at(user)});
    if (user == slow) {
      server_->append(slow, "A-small", message("small", 500), "\\Seen", "01-Feb-2024 09:00:00 +0000");
      server_->append(slow, "B-big", message("big1", 120000), "\\Flagged", "02-Feb-2024 09:00:00 +0000");
      server_->append(slow, "C-big", message("big2", 120000), "", "03-Feb-2024 09:00:00 +0000");
    } else {
      server_->append(user, "INBOX", message(user, 800), "\\Seen");
    }
  });

  testing::FaultProxyOptions po;
  po.target_host = server_->host();
  po.target_port = server_->imaps_port();
  po.rate = 40000;
  testing::FaultProxy proxy(po);

  auto config_text = [&](uint16_t slow_port) {
    std::string out;
    for (auto [name, port] : {std::pair<std::string, uint16_t>{"fast", server_->imaps_port()}, {"slow", slow_port}})
      out += fmt::format("[profiles.{}]\nhost = \"{}\"\nport = {}\ntls = \"implicit\"\nca_file = \"{}\"\ntimeout = 30\n"
                         "domains = [\"{}.test\"]\n\n",
                         name, server_->host(), port, server_->ca_file(), name);
    return out;
  };
  std::string config = write(dir.path() + "/config.toml", config_text(proxy.port()));
  std::string accounts = write(dir.path() + "/accounts.txt", fast + ";" + pw.at(fast) + "\n" + slow + ";" + pw.at(slow) + "\n");
  std::vector<std::string> args = {"export", "--archive", archive_dir, "--accounts",  accounts,           "--config",
                                   config,   "--jobs",    "3",         "--max-load",  "0",                "--json",
                                   "--account-timeout"};

  auto first = testing::run_imapstage(concat(args, {"1s"}));
  EXPECT_EQ(first.exit_code, 1) << first.err;
  auto events = json_lines(first.out);
  std::map<std::string, nlohmann::json> errors, done;
  for (auto& e : named(events, "account_error")) errors[e["account"]] = e;
  for (auto& e : named(events, "account_done")) done[e["account"]] = e;
  const std::string host = "@" + server_->host();
  ASSERT_EQ(errors.size(), 1u) << first.out;
  ASSERT_TRUE(errors.count(slow + host)) << first.out;
  EXPECT_EQ(errors[slow + host]["error_kind"], "timeout");
  EXPECT_EQ(errors[slow + host]["line"], 2);
  EXPECT_NE(first.err.find(slow + host + " (line 2): timed out"), std::string::npos) << first.err;
  EXPECT_EQ(done.size(), 1u);
  EXPECT_TRUE(done.count(fast + host));

  // What the slow account committed before it was stopped.
  size_t total = message_count(server_->summary(slow));
  ASSERT_EQ(total, 3u);
  size_t committed = 0;
  for (auto& [folder, hashes] : archived(archive_dir, slow + host)) committed += hashes.size();
  EXPECT_GT(committed, 0u) << "nothing committed before the deadline";
  EXPECT_LT(committed, total) << "the account finished: the deadline was not tested";

  // status: the timeout, exit 1.
  auto status = testing::run_imapstage({"status", "--archive", archive_dir});
  EXPECT_EQ(status.exit_code, 1) << status.out << status.err;
  auto row = [&](const std::string& key) {
    size_t at = status.out.find(key);
    return at == std::string::npos ? std::string() : status.out.substr(at, status.out.find('\n', at) - at);
  };
  EXPECT_NE(row(slow + host).find("error"), std::string::npos) << status.out;
  EXPECT_NE(row(slow + host).find("timed out"), std::string::npos) << status.out;
  EXPECT_NE(row(fast + host).find("done"), std::string::npos) << status.out;
  // The same as JSON, for scripts.
  auto status_json = testing::run_imapstage({"status", "--archive", archive_dir, "--json"});
  EXPECT_EQ(status_json.exit_code, 1) << status_json.err;
  auto sj = nlohmann::json::parse(status_json.out);
  ASSERT_TRUE(sj.contains("export")) << status_json.out;
  int seen = 0;
  for (auto& acc : sj["export"]["accounts"]) {
    std::string name = acc["account"].get<std::string>();
    if (name.rfind(slow, 0) == 0) {
      EXPECT_EQ(acc["status"], "error") << acc.dump();
      EXPECT_NE(acc["error"].get<std::string>().find("timed out"), std::string::npos) << acc.dump();
      EXPECT_GE(acc["attempts"].get<int>(), 1);
      ++seen;
    } else if (name.rfind(fast, 0) == 0) {
      EXPECT_EQ(acc["status"], "done") << acc.dump();
      EXPECT_GT(acc["messages"].get<uint64_t>(), 0u) << acc.dump();
      ++seen;
    }
  }
  EXPECT_EQ(seen, 2) << status_json.out;

  // The re-run, with the slow profile now going straight to the server and no deadline.
  write(config, config_text(server_->imaps_port()));
  auto second = testing::run_imapstage(concat(args, {"0"}));
  ASSERT_EQ(second.exit_code, 0) << second.err << second.out;
  events = json_lines(second.out);
  auto skipped = named(events, "account_skip");
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_EQ(skipped[0]["account"], fast + host);
  EXPECT_EQ(named(events, "account_done").size(), 1u);
  bool slow_summary = false;
  for (auto& s : named(events, "summary")) {
    if (s["account"] != slow + host) continue;
    slow_summary = true;
    EXPECT_EQ(s["messages"].get<size_t>(), total - committed) << s.dump();
    EXPECT_TRUE(s["complete"].get<bool>());
  }
  EXPECT_TRUE(slow_summary) << second.out;
  size_t now = 0;
  for (auto& [folder, hashes] : archived(archive_dir, slow + host)) now += hashes.size();
  EXPECT_EQ(now, total);

  auto state = nlohmann::json::parse(slurp(std::filesystem::path(archive_dir) / "batches" / "export.json"));
  for (auto& a : state["accounts"]) {
    EXPECT_EQ(a["status"], "done") << a.dump();
    EXPECT_EQ(a["attempts"], a["account"] == fast + host ? 1 : 2) << a.dump();
  }
  auto status2 = testing::run_imapstage({"status", "--archive", archive_dir});
  EXPECT_EQ(status2.exit_code, 0) << status2.out << status2.err;
}

// A list with a malformed line and a wrong password: both reported with their
// line numbers, the rest done, exit 1, and status exits 1 too.
TEST_F(BatchScaleTest, MalformedLineAndWrongPasswordAreReportedAndTheRestRuns) {
  TempDir dir;
  const std::string archive_dir = dir.path() + "/archive";
  const std::map<std::string, std::string> pw = {{"w1", "W1-pw-aaaa"}, {"w2", "W2-pw-bbbb"}, {"w3", "W3-pw-cccc"}};
  parallel_for(3, 3, [&](int k) {
    std::string user = "w" + std::to_string(k + 1);
    server_->run({"add-user", "--", server_->dir(), user, pw.at(user)});
  });
  std::string accounts = write(dir.path() + "/accounts.txt", "w1;" + pw.at("w1") + "\n" +  // line 1
                                                                 "w2;WRONG-pw-4711\n" +      // line 2
                                                                 "w4;p;w4;p;SECRET-Q\n" +    // line 3: five columns
                                                                 "w3;" + pw.at("w3") + "\n");  // line 4
  auto r = testing::run_imapstage(concat({"export", "--archive", archive_dir, "--accounts", accounts},
                                         concat(server_args(), {"--jobs", "3", "--max-load", "0", "--json"})));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto events = json_lines(r.out);
  const std::string host = "@" + server_->host();
  auto refused = named(events, "line_error");
  ASSERT_EQ(refused.size(), 1u) << r.out;
  EXPECT_EQ(refused[0]["line"], 3);
  EXPECT_NE(r.err.find(accounts + " line 3: 5 columns"), std::string::npos) << r.err;
  auto errors = named(events, "account_error");
  ASSERT_EQ(errors.size(), 1u) << r.out;
  EXPECT_EQ(errors[0]["account"], "w2" + host);
  EXPECT_EQ(errors[0]["line"], 2);
  EXPECT_EQ(errors[0]["error_kind"], "auth");
  std::string error = errors[0]["error"];
  EXPECT_NE(error.find("w2"), std::string::npos) << error;
  EXPECT_NE(error.find("login"), std::string::npos) << error;  // the mechanism
  EXPECT_NE(r.err.find("w2" + host + " (line 2)"), std::string::npos) << r.err;
  std::set<std::string> done;
  for (auto& e : named(events, "account_done")) done.insert(e["account"]);
  EXPECT_EQ(done, (std::set<std::string>{"w1" + host, "w3" + host}));
  for (auto* text : {&r.out, &r.err})
    for (auto& secret : {pw.at("w1"), pw.at("w3"), std::string("WRONG-pw-4711"), std::string("SECRET-Q")})
      EXPECT_EQ(text->find(secret), std::string::npos) << secret;

  // Without --json the summary names both lines too.
  auto text_run = testing::run_imapstage(concat({"export", "--archive", archive_dir, "--accounts", accounts},
                                                concat(server_args(), {"--retry-errors", "--max-load", "0"})));
  EXPECT_EQ(text_run.exit_code, 1);
  std::string all = text_run.out + text_run.err;
  EXPECT_NE(all.find("line 3"), std::string::npos) << all;
  EXPECT_NE(all.find("w2" + host + " (line 2)"), std::string::npos) << all;

  auto status = testing::run_imapstage({"status", "--archive", archive_dir});
  EXPECT_EQ(status.exit_code, 1) << status.out;
  size_t at = status.out.find("w2" + host);
  ASSERT_NE(at, std::string::npos) << status.out;
  std::string row = status.out.substr(at, status.out.find('\n', at) - at);
  EXPECT_NE(row.find("error"), std::string::npos) << row;
  EXPECT_NE(row.find("login refused"), std::string::npos) << row;
}

}  // namespace
}  // namespace imapstage

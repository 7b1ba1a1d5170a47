// Progress a person can follow: the account line (totals, percentage, rate,
// elapsed, ETA) on a pseudo-terminal and as plain lines without one; the real
// binary exporting from the harness Dovecot on a pseudo-terminal; --log-file;
// `status` after single-account runs that finished, failed and were killed.
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "batch/batch_display.h"
#include "cli/display.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::TempDir;

// Everything readable on `fd` now.
std::string drain(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) break;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// The ETAs shown ("ETA h:mm:ss"), in seconds, in order.
std::vector<int> etas(const std::string& screen) {
  std::vector<int> out;
  std::regex re("ETA (\\d+):(\\d\\d):(\\d\\d)");
  for (auto it = std::sregex_iterator(screen.begin(), screen.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back(std::stoi((*it)[1]) * 3600 + std::stoi((*it)[2]) * 60 + std::stoi((*it)[3]));
  return out;
}

nlohmann::json progress(uint64_t messages, uint64_t bytes, bool final = false) {
  return {{"event", "progress"}, {"account", "alice@h"}, {"folder", "INBOX"}, {"folder_index", 1}, {"folders", 2},
          {"messages", messages}, {"messages_total", 600}, {"bytes", bytes}, {"bytes_total", 60'000'000},
          {"elapsed", 1.0}, {"final", final}};
}

TEST(ProgressDisplay, TerminalShowsAccountTotalsAndAFallingEta) {
  int master = -1, slave = -1;
  ASSERT_EQ(openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  std::FILE* out = fdopen(slave, "w");
  double clock = 1000;
  cli::TerminalSink sink(0, out, {.clock = [&] { return clock; }});
  sink.emit({{"event", "totals"}, {"command", "export"}, {"account", "alice@h"}, {"folders", 2},
             {"messages_total", 1000}, {"bytes_total", 100'000'000}});
  std::string screen = drain(master);
  EXPECT_NE(screen.find("alice@h: 1000 messages, 100.0 MB to fetch in 2 folders"), std::string::npos) << screen;

  // 10 MB a second: 9 s left after 1 s, 5 s after 5 s, 4 s after 6 s.
  clock += 1;
  sink.emit(progress(100, 10'000'000));
  std::string first = drain(master);
  EXPECT_NE(first.find("export 100/1000 messages  10.0 MB/100.0 MB  10.0%  10.0 MB/s  elapsed 0:00:01  ETA 0:00:09"),
            std::string::npos) << first;
  EXPECT_NE(first.find("[1/2] INBOX  100/600  10.0 MB/60.0 MB"), std::string::npos) << first;
  clock += 4;
  sink.emit(progress(500, 50'000'000));
  std::string second = drain(master);
  EXPECT_NE(second.find("500/1000 messages  50.0 MB/100.0 MB  50.0%"), std::string::npos) << second;
  // Redrawn in place: the earlier block is erased (cursor up, clear to the end), not scrolled.
  EXPECT_NE(second.find("\033[A\033[J"), std::string::npos) << second;
  // The folder finishes: its count stays in the account's, its line goes.
  clock += 1;
  sink.emit(progress(600, 60'000'000, true));
  std::string third = drain(master);
  EXPECT_NE(third.find("600/1000 messages  60.0 MB/100.0 MB  60.0%"), std::string::npos) << third;
  EXPECT_EQ(third.find("[1/2] INBOX"), std::string::npos) << third;
  auto shown = etas(first + second + third);
  ASSERT_EQ(shown.size(), 3u) << first + second + third;
  EXPECT_EQ(shown[0], 9);
  EXPECT_EQ(shown[1], 5);
  EXPECT_EQ(shown[2], 4);
  sink.finish();
  std::fclose(out);
  close(master);
}

TEST(ProgressDisplay, WithoutTerminalPlainLinesAtTheInterval) {
  std::FILE* out = std::tmpfile();
  double clock = 0;
  cli::TerminalSink sink(0, out, {.plain_interval = 10, .clock = [&] { return clock; }});
  sink.emit({{"event", "totals"}, {"command", "export"}, {"account", "alice@h"}, {"folders", 2},
             {"messages_total", 1000}, {"bytes_total", 100'000'000}});
  for (int s = 1; s <= 25; ++s) {
    clock = s;
    sink.emit(progress(s * 20, s * 2'000'000));
  }
  sink.emit({{"event", "folder_done"}, {"account", "alice@h"}, {"folder", "INBOX"}, {"new", 600},
             {"flags_updated", 0}, {"expunged", 0}, {"bytes_fetched", 14'471'755}, {"failed", 0}});
  std::rewind(out);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, out)) > 0) text.append(buf, n);
  std::fclose(out);
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  EXPECT_EQ(text.find('\033'), std::string::npos) << text;
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  // The totals, a progress line at 10 s and 20 s, the folder.
  ASSERT_EQ(lines.size(), 4u) << text;
  EXPECT_EQ(lines[0], "alice@h: 1000 messages, 100.0 MB to fetch in 2 folders");
  EXPECT_EQ(lines[1], "alice@h: export 200/1000 messages  20.0 MB/100.0 MB  20.0%  2.0 MB/s  elapsed 0:00:10  "
                      "ETA 0:00:40");
  EXPECT_NE(lines[2].find("400/1000 messages"), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find("ETA 0:00:30"), std::string::npos) << lines[2];
  EXPECT_EQ(lines[3], "alice@h: INBOX: 600 new, 0 flag changes, 0 expunged, 14.5 MB fetched");
}

TEST(ProgressDisplay, BatchTotalLineHasAnEtaThatFalls) {
  std::FILE* out = std::tmpfile();
  double clock = 0;
  batch::BatchTerminalSink sink(0, out, {.live = false, .plain_interval = 10, .clock = [&] { return clock; }});
  sink.emit({{"event", "batch_start"}, {"selected", 4}, {"text", "export batch started: 4 accounts"}});
  auto account_progress = [&](const std::string& account, uint64_t bytes, bool final) {
    sink.emit({{"event", "progress"}, {"account", account}, {"folder", "INBOX"}, {"folder_index", 1}, {"folders", 1},
               {"messages", bytes / 1000}, {"messages_total", 1000}, {"bytes", bytes}, {"bytes_total", 1'000'000},
               {"elapsed", clock}, {"final", final}});
  };
  for (std::string a : {"a", "b"}) {
    sink.emit({{"event", "account_start"}, {"account", a}, {"text", a + ": started"}});
    sink.emit({{"event", "totals"}, {"account", a}, {"command", "export"}, {"messages_total", 1000},
               {"bytes_total", 1'000'000}});
  }
  // Two of four accounts run. At 5 s "a" is half done: 1/8 of the batch, 35 s left at that pace.
  clock = 5;
  account_progress("a", 500'000, false);
  // At 15 s "b" has its bytes too: 3/8 done, 25 s left.
  clock = 15;
  account_progress("b", 1'000'000, false);
  // "a" finishes; at 30 s half the batch is done.
  sink.emit({{"event", "account_done"}, {"account", "a"}, {"messages", 1000}, {"bytes", 1'000'000},
             {"text", "a: done"}});
  clock = 30;
  account_progress("b", 1'000'000, false);
  std::rewind(out);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, out)) > 0) text.append(buf, n);
  std::fclose(out);
  EXPECT_EQ(text.find('\033'), std::string::npos) << text;
  EXPECT_NE(text.find("total: 0/4 accounts done, 0 failed, 2 running, 0 messages, 0 B  12.5%  elapsed 0:00:05  "
                      "ETA 0:00:35"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("total: 0/4 accounts done, 0 failed, 2 running, 0 messages, 0 B  37.5%  elapsed 0:00:15  "
                      "ETA 0:00:25"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("total: 1/4 accounts done, 0 failed, 1 running, 1000 messages, 1.0 MB  50.0%  elapsed 0:00:30  "
                      "ETA 0:00:30"),
            std::string::npos)
      << text;
}

using ProgressTest = testing::SharedServerTest;

// The arguments of an export of `user` from the harness server into `archive`.
std::vector<std::string> export_args(testing::TestServer& server, const std::string& archive, const std::string& user) {
  return {"export", "--archive", archive, "--host", server.host(), "--port", std::to_string(server.imaps_port()),
          "--ca-file", server.ca_file(), "--user", user, "--password-file", server.password_file(user)};
}

TEST_F(ProgressTest, ExportOnATerminalShowsTheAccountLine) {
  TempDir dir;
  auto args = export_args(*server_, dir.path() + "/archive", "alice");
  args.insert(args.begin(), testing::imapstage_binary());
  int master = -1;
  pid_t pid = forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // stdout away from the terminal: only stderr (the progress) is on it.
    FILE* null = std::fopen("/dev/null", "w");
    dup2(fileno(null), 1);
    std::vector<char*> cargv;
    for (auto& a : args) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  std::string screen;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{master, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0) break;
    screen.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  close(master);
  ASSERT_TRUE(WIFEXITED(status)) << screen;
  EXPECT_EQ(WEXITSTATUS(status), 0) << screen;
  // The totals from the size pass, before any folder line.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(screen, m, std::regex("alice@[^:]+: (\\d+) messages, [0-9.]+ [kMG]?B to fetch in \\d+ folders")))
      << screen;
  std::string messages = m[1];
  EXPECT_GT(std::stoi(messages), 100);
  EXPECT_LT(static_cast<size_t>(m.position(0)), screen.find(" new, ")) << screen;
  // The final account line: everything done, ETA 0.
  std::regex done("export " + messages + "/" + messages +
                  " messages .* 100\\.0% .* ETA 0:00:00");
  EXPECT_TRUE(std::regex_search(screen, done)) << screen;
  // Folder lines in human units, never a raw byte count.
  EXPECT_TRUE(std::regex_search(screen, std::regex("INBOX: \\d+ new, \\d+ flag changes, \\d+ expunged, [0-9.]+ [kMG]?B fetched")))
      << screen;
}

TEST_F(ProgressTest, LogFileHasEveryEventOfJson) {
  TempDir dir;
  auto json = testing::run_imapstage([&] {
    auto a = export_args(*server_, dir.path() + "/a", "bob");
    a.push_back("--json");
    return a;
  }());
  ASSERT_EQ(json.exit_code, 0) << json.err;
  std::string log = dir.path() + "/run.log";
  auto a = export_args(*server_, dir.path() + "/b", "bob");
  a.insert(a.end(), {"--log-file", log});
  auto human = testing::run_imapstage(a);
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_EQ(human.out.find("\"event\""), std::string::npos) << human.out;  // stdout keeps the human summary
  auto names = [](std::istream& in) {
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) {
      auto e = nlohmann::json::parse(line);
      if (e["event"] != "progress") out.push_back(e["event"]);  // progress is paced by the clock
    }
    return out;
  };
  std::istringstream json_in(json.out);
  std::ifstream log_in(log);
  auto expected = names(json_in);
  auto got = names(log_in);
  // Connections work side by side: the same events, not necessarily in the same order.
  ASSERT_GE(got.size(), 3u);
  ASSERT_GE(expected.size(), 3u);
  std::sort(expected.begin() + 2, expected.end() - 1);
  std::sort(got.begin() + 2, got.end() - 1);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(got[0], "connections");  // how many, from the first connection's round trip
  EXPECT_EQ(got[1], "totals");
  EXPECT_EQ(got.back(), "summary");
}

TEST_F(ProgressTest, StatusTellsHowTheLastSingleRunEnded) {
  TempDir dir;
  std::string archive = dir.path() + "/archive";
  auto status = [&] {
    auto r = testing::run_imapstage({"status", "--archive", archive, "--json"});
    return std::make_pair(r.exit_code, nlohmann::json::parse(r.out.empty() ? "{}" : r.out));
  };

  // Complete.
  auto ok = testing::run_imapstage(export_args(*server_, archive, "bob"));
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  auto [code, j] = status();
  EXPECT_EQ(code, 0) << j.dump();
  ASSERT_EQ(j["runs"].size(), 1u) << j.dump();
  EXPECT_EQ(j["runs"][0]["kind"], "export");
  EXPECT_EQ(j["runs"][0]["shown_status"], "ok");
  EXPECT_EQ(j["runs"][0]["complete"], true);
  EXPECT_GT(j["runs"][0]["messages"].get<uint64_t>(), 0u);
  EXPECT_GT(j["runs"][0]["bytes"].get<uint64_t>(), 0u);
  auto text = testing::run_imapstage({"status", "--archive", archive});
  EXPECT_NE(text.out.find("last runs:"), std::string::npos) << text.out;
  EXPECT_TRUE(std::regex_search(text.out, std::regex("bob@\\S+ +export +ok "))) << text.out;

  // Failed: the run began and stopped on an error, which status repeats.
  auto args = export_args(*server_, archive, "bob");
  args.insert(args.end(), {"--folder", "NoSuchFolder"});
  auto failed = testing::run_imapstage(args);
  ASSERT_EQ(failed.exit_code, 2) << failed.err;
  std::tie(code, j) = status();
  EXPECT_EQ(code, 1) << j.dump();
  ASSERT_EQ(j["runs"].size(), 1u) << j.dump();
  EXPECT_EQ(j["runs"][0]["shown_status"], "failed");
  EXPECT_NE(j["runs"][0].value("error", "").find("NoSuchFolder"), std::string::npos) << j.dump();

  // Killed (SIGKILL) after the first finished folder: interrupted.
  std::string other = dir.path() + "/other";
  auto killed = testing::run_imapstage(
      [&] {
        auto a = export_args(*server_, other, "alice");
        a.push_back("--json");
        return a;
      }(),
      {}, std::nullopt, [](const std::string& out) { return out.find("\"folder_done\"") != std::string::npos; });
  ASSERT_EQ(killed.signal, SIGKILL) << killed.out;
  auto r = testing::run_imapstage({"status", "--archive", other, "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  auto k = nlohmann::json::parse(r.out);
  ASSERT_EQ(k["runs"].size(), 1u) << k.dump();
  EXPECT_EQ(k["runs"][0]["shown_status"], "interrupted") << k.dump();
  auto t = testing::run_imapstage({"status", "--archive", other});
  EXPECT_TRUE(std::regex_search(t.out, std::regex("alice@\\S+ +export +interrupted "))) << t.out;
}

TEST_F(ProgressTest, ImportAnnouncesTotalsFromTheIndexAndStatusShowsIt) {
  TempDir dir;
  std::string archive = dir.path() + "/archive";
  auto exported = testing::run_imapstage(export_args(*server_, archive, "bob"));
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  std::string target = "progress_target";
  server_->add_user(target);
  std::string log = dir.path() + "/import.log";
  std::vector<std::string> args = {"import", "--archive", archive, "--host", server_->host(), "--port",
                                   std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user",
                                   target, "--password-file", server_->password_file(target), "--log-file", log};
  auto r = testing::run_imapstage(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(log);
  nlohmann::json totals, summary;
  uint64_t progressed = 0;
  for (std::string line; std::getline(in, line);) {
    auto e = nlohmann::json::parse(line);
    if (e["event"] == "totals") totals = e;
    if (e["event"] == "summary") summary = e;
    if (e["event"] == "progress" && e["final"] == true) progressed += e["messages"].get<uint64_t>();
  }
  ASSERT_FALSE(totals.is_null());
  EXPECT_EQ(totals["command"], "import");
  EXPECT_GT(totals["messages_total"].get<uint64_t>(), 0u);
  EXPECT_EQ(totals["messages_total"], summary["appended"]) << summary.dump();
  EXPECT_EQ(totals["bytes_total"], summary["bytes_appended"]) << summary.dump();
  EXPECT_EQ(progressed, totals["messages_total"].get<uint64_t>());
  // Without a terminal: the totals as a plain line, folder lines, no control characters.
  EXPECT_NE(r.err.find(" messages, "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" to append in "), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\033'), std::string::npos) << r.err;

  // Nothing left to do the second time: the totals say so.
  auto again = testing::run_imapstage(args);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find(": 0 messages, 0 B to append in "), std::string::npos) << again.err;

  auto st = testing::run_imapstage({"status", "--archive", archive, "--json"});
  EXPECT_EQ(st.exit_code, 0) << st.out << st.err;
  auto j = nlohmann::json::parse(st.out);
  ASSERT_EQ(j["runs"].size(), 2u) << j.dump();
  EXPECT_EQ(j["runs"][1]["kind"], "import");
  EXPECT_EQ(j["runs"][1]["shown_status"], "ok");
  EXPECT_EQ(j["runs"][1]["messages"], 0) << "the last import appended nothing";
}

TEST_F(ProgressTest, OnlineVerifyAnnouncesTotalsAndReportsEachFolder) {
  TempDir dir;
  std::string archive = dir.path() + "/archive";
  auto exported = testing::run_imapstage(export_args(*server_, archive, "bob"));
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  auto args = export_args(*server_, archive, "bob");
  args[0] = "verify";
  args.insert(args.end(), {"--against", "source", "--json"});
  auto r = testing::run_imapstage(args);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  nlohmann::json totals;
  uint64_t messages = 0, bytes = 0, folders = 0, archived = 0;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    auto e = nlohmann::json::parse(line);
    if (e["event"] == "totals") totals = e;
    if (e["event"] == "progress" && e["final"] == true) {
      EXPECT_FALSE(totals.is_null()) << "progress before the totals";
      messages += e["messages"].get<uint64_t>();
      bytes += e["bytes"].get<uint64_t>();
      ++folders;
    }
  }
  ASSERT_FALSE(totals.is_null());
  EXPECT_EQ(totals["command"], "verify");
  auto summary = server_->summary("bob", false);
  for (auto& f : summary["folders"])
    if (f["messages"].is_array()) archived += f["messages"].size();
  EXPECT_EQ(totals["messages_total"].get<uint64_t>(), archived);
  EXPECT_EQ(messages, archived);
  EXPECT_EQ(bytes, totals["bytes_total"].get<uint64_t>());
  EXPECT_EQ(folders, totals["folders"].get<uint64_t>());
}

TEST_F(ProgressTest, TlsMismatchIsOneMessageOfOursSayingWhatToTry) {
  TempDir dir;
  // Implicit TLS (the default) against the port that speaks plain IMAP first.
  auto r = testing::run_imapstage({"export", "--archive", dir.path() + "/archive", "--host", server_->host(), "--port",
                                   std::to_string(server_->imap_port()), "--ca-file", server_->ca_file(), "--user",
                                   "bob", "--password-file", server_->password_file("bob")});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_EQ(r.err.rfind("imapstage: ", 0), 0u) << r.err;  // nothing printed ahead of ours
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("TLS handshake with"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("failed (GnuTLS: "), std::string::npos) << r.err;  // its reason, inside our message
  EXPECT_NE(r.err.find("try --tls starttls or --tls none"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("GnuTLS error"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace imapstage

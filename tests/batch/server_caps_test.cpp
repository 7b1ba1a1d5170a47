// Per-server rate caps in a batch, against the harness Dovecot: three
// accounts exported side by side share one cap, so together they stay
// within ±10 % of it (each at the cap alone would be three times over).
// The runs are long (12 s, 10 s) so that what no cap changes (logins,
// folder lists, size passes: under a second) stays well inside the 10 %.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::TempDir;
using testing::TestServer;

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') out.push_back(nlohmann::json::parse(line));
  return out;
}

struct Totals {
  uint64_t bytes = 0;
  uint64_t messages = 0;
  double seconds = 0;  // first account_start to last account_done
  size_t done = 0;
};

Totals totals(const std::string& out) {
  Totals t;
  double first = 1e300, last = 0;
  for (auto& e : json_lines(out)) {
    std::string name = e.value("event", "");
    if (name == "account_start") first = std::min(first, e.value("time", 0.0));
    if (name == "account_done") {
      last = std::max(last, e.value("time", 0.0));
      t.bytes += e.value("bytes", uint64_t{0});
      t.messages += e.value("messages", uint64_t{0});
      ++t.done;
    }
  }
  t.seconds = last - first;
  return t;
}

class ServerCapsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.users = {"alice", "bob", "carol"};
    server_ = new TestServer(o);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  std::vector<std::string> args(const std::string& archive, const std::vector<std::string>& extra) {
    std::vector<std::string> a = {"export", "--archive", archive, "--accounts", accounts_, "--host", server_->host(),
                                  "--port", std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(),
                                  "--jobs", "3", "--per-server", "3", "--max-load", "0", "--json"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  void SetUp() override {
    accounts_ = dir_.path() + "/accounts.txt";
    std::ofstream out(accounts_);
    for (auto u : {"alice", "bob", "carol"}) out << server_->login(u) << ";" << server_->password(u) << "\n";
  }

  TempDir dir_;
  std::string accounts_;
  static TestServer* server_;
};

TestServer* ServerCapsTest::server_ = nullptr;

TEST_F(ServerCapsTest, BandwidthAndMessageRateAreSharedByTheServersAccounts) {
  auto free = testing::run_imapstage(args(dir_.path() + "/free", {}));
  ASSERT_EQ(free.exit_code, 0) << free.err << free.out.substr(0, 2000);
  Totals all = totals(free.out);
  ASSERT_EQ(all.done, 3u);
  ASSERT_GT(all.bytes, 1000000u);

  // A cap that makes the three accounts take about twelve seconds together.
  uint64_t cap = all.bytes / 12;
  auto capped = testing::run_imapstage(args(dir_.path() + "/capped", {"--server-max-bandwidth", std::to_string(cap)}));
  ASSERT_EQ(capped.exit_code, 0) << capped.err << capped.out.substr(0, 2000);
  Totals t = totals(capped.out);
  ASSERT_EQ(t.done, 3u);
  EXPECT_EQ(t.bytes, all.bytes);
  double rate = double(t.bytes) / t.seconds;
  std::printf("bandwidth: %llu bytes in %.2f s (%.2f s uncapped) = %.0f bytes/s, cap %llu\n",
              (unsigned long long)t.bytes, t.seconds, all.seconds, rate, (unsigned long long)cap);
  EXPECT_NEAR(rate, double(cap), 0.10 * double(cap))
      << t.bytes << " bytes in " << t.seconds << " s, cap " << cap << " bytes/s";

  double per_second = double(all.messages) / 10;
  auto counted = testing::run_imapstage(
      args(dir_.path() + "/counted", {"--server-max-messages-per-second", fmt::format("{:.3f}", per_second)}));
  ASSERT_EQ(counted.exit_code, 0) << counted.err << counted.out.substr(0, 2000);
  Totals m = totals(counted.out);
  ASSERT_EQ(m.done, 3u);
  double mrate = double(m.messages) / m.seconds;
  std::printf("messages: %llu in %.2f s (%.2f s uncapped) = %.2f/s, cap %.2f\n", (unsigned long long)m.messages,
              m.seconds, all.seconds, mrate, per_second);
  EXPECT_NEAR(mrate, per_second, 0.10 * per_second)
      << m.messages << " messages in " << m.seconds << " s, cap " << per_second << " per second";
}

}  // namespace
}  // namespace imapstage

// Reliability under network faults: export and import of a 2,000-message
// account through tools/fault-proxy while it cuts connections at random byte
// offsets (mid-FETCH and mid-APPEND literals) or stalls one for good. Each run
// must finish by itself with bounded retries, and afterwards the archive
// verifies and equals the source, the target equals the source, and nothing
// was fetched or appended twice. The server's view comes from the harness's
// own IMAP client, never from imapstage's code.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "common/error.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "tests/support/fault_proxy.h"
#include "tests/support/mail_view.h"
#include "tests/support/test_server.h"
#include "verify/offline.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::FaultProxy;
using testing::FaultProxyOptions;
using testing::TempDir;
using testing::TestServer;
using Clock = std::chrono::steady_clock;

constexpr size_t kMessages = 2000;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

using testing::archive_view;
using testing::compare;
using testing::count;
using testing::Difference;
using testing::MultisetView;
using testing::multiset;
using testing::server_view;
using testing::UidView;
using testing::verify_archive;
struct ProxyTotals {
  size_t connections = 0;
  uint64_t up = 0;    // client to server, over every connection
  uint64_t down = 0;  // server to client
};

ProxyTotals proxy_totals(const FaultProxy& proxy) {
  ProxyTotals t;
  for (auto& e : proxy.events()) {
    if (e.value("event", "") != "close") continue;
    ++t.connections;
    t.up += e.value("up", uint64_t{0});
    t.down += e.value("down", uint64_t{0});
  }
  return t;
}

size_t reconnects_mentioning(const RecordingSink& events, const std::string& word) {
  size_t n = 0;
  for (auto& e : events.events())
    if (e.value("event", "") == "reconnect" && e.value("error", "").find(word) != std::string::npos) ++n;
  return n;
}

class NetworkFaultsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto started = Clock::now();
    testing::TestServerOptions o;
    o.seed = "bench:" + std::to_string(kMessages);
    o.users = {"bench"};
    server_ = new TestServer(o);
    source_ = new nlohmann::json(server_->summary("bench"));
    auto view = server_view(*source_);
    source_messages_ = count(view);
    for (auto& f : (*source_)["folders"]) {
      if (!f["messages"].is_array()) continue;
      for (auto& m : f["messages"]) {
        source_bytes_ += m["size"].get<uint64_t>();
        largest_ = std::max(largest_, m["size"].get<uint64_t>());
      }
    }
    // A clean export, straight to the server: the archive the import tests
    // start from, and the time a run takes without faults.
    archive_dir_ = new TempDir();
    auto clean_started = Clock::now();
    NullSink quiet;
    auto s = exporting::run_export(export_options(archive_path(), server_->host(), server_->imaps_port()), quiet);
    clean_export_seconds_ = seconds_since(clean_started);
    if (!s.complete()) throw std::runtime_error("the clean export is incomplete");
    std::printf("[ figures ] server seeded with %zu messages (%.1f MB, largest %.1f MB); clean export %.2f s; "
                "suite setup %.1f s\n",
                source_messages_, source_bytes_ / 1e6, largest_ / 1e6, clean_export_seconds_, seconds_since(started));
  }
  static void TearDownTestSuite() {
    delete archive_dir_;
    delete source_;
    delete server_;
    archive_dir_ = nullptr;
    source_ = nullptr;
    server_ = nullptr;
  }

  static std::string archive_path() { return archive_dir_->path() + "/archive"; }
  static std::string account_name() { return "bench@" + server_->host(); }

  static imap::Endpoint endpoint(const std::string& host, uint16_t port, int timeout_seconds = 20) {
    imap::Endpoint e;
    e.host = host;
    e.port = port;
    e.tls = imap::TlsMode::implicit;
    e.ca_file = server_->ca_file();
    e.timeout = std::chrono::seconds(timeout_seconds);
    return e;
  }

  static RetryPolicy short_backoff() {
    RetryPolicy r;
    r.backoff = std::chrono::milliseconds(20);
    r.max_backoff = std::chrono::milliseconds(200);
    return r;
  }

  static exporting::ExportOptions export_options(const std::string& archive_dir, const std::string& host,
                                                 uint16_t port, int timeout_seconds = 20) {
    exporting::ExportOptions o;
    o.archive_dir = archive_dir;
    o.endpoint = endpoint(host, port, timeout_seconds);
    o.account_name = account_name();  // the same account whichever port the proxy has
    o.credentials.user = "bench";
    o.credentials.secret = server_->password("bench");
    o.retry = short_backoff();
    return o;
  }

  static importing::ImportOptions import_options(const std::string& target_user, const std::string& host,
                                                 uint16_t port, int timeout_seconds = 20) {
    importing::ImportOptions o;
    o.archive_dir = archive_path();
    o.endpoint = endpoint(host, port, timeout_seconds);
    o.target_name = target_user + "@target";  // the same target whichever port the proxy has
    o.credentials.user = target_user;
    o.credentials.secret = server_->password(target_user);
    o.retry = short_backoff();
    return o;
  }

  // The archive equals the source message for message (UID, hash, flags,
  // INTERNALDATE) and verifies offline.
  static void expect_archive_equals_source(const std::string& dir) {
    auto report = verify_archive(dir);
    EXPECT_TRUE(report.ok()) << report.to_json().dump(2);
    EXPECT_EQ(report.messages, source_messages_);
    auto archived = archive_view(dir, account_name());
    auto source = server_view(*source_);
    EXPECT_EQ(count(archived), source_messages_);
    EXPECT_TRUE(archived == source) << "the archive differs from the source";
    auto d = compare(multiset(source), multiset(archived));
    EXPECT_EQ(d.lost, 0u);
    EXPECT_EQ(d.duplicated, 0u);
  }

  // The target holds exactly the source's messages, each once.
  static Difference expect_target_equals_source(const std::string& target_user) {
    auto target = multiset(server_view(server_->summary(target_user)));
    auto d = compare(multiset(server_view(*source_)), target);
    EXPECT_EQ(d.lost, 0u) << "messages missing on the target";
    EXPECT_EQ(d.duplicated, 0u) << "messages duplicated on the target";
    size_t n = 0;
    for (auto& [_, v] : target) n += v.size();
    EXPECT_EQ(n, source_messages_);
    return d;
  }

  // Every append record of the target is done, one per source message.
  static void expect_append_records_done(const std::string& target_name) {
    auto a = Archive::open(archive_path(), Archive::Mode::read);
    auto id = a->find_target(target_name);
    ASSERT_TRUE(id) << target_name;
    size_t done = 0, other = 0;
    a->for_each_append(*id, [&](const archive::AppendRecord& r) {
      if (r.state == archive::AppendState::done && r.target_uid != 0) ++done;
      else ++other;
      return true;
    });
    EXPECT_EQ(done, source_messages_);
    EXPECT_EQ(other, 0u);
  }

  static TestServer* server_;
  static nlohmann::json* source_;
  static TempDir* archive_dir_;
  static size_t source_messages_;
  static uint64_t source_bytes_;
  static uint64_t largest_;
  static double clean_export_seconds_;
};

TestServer* NetworkFaultsTest::server_ = nullptr;
nlohmann::json* NetworkFaultsTest::source_ = nullptr;
TempDir* NetworkFaultsTest::archive_dir_ = nullptr;
size_t NetworkFaultsTest::source_messages_ = 0;
uint64_t NetworkFaultsTest::source_bytes_ = 0;
uint64_t NetworkFaultsTest::largest_ = 0;
double NetworkFaultsTest::clean_export_seconds_ = 0;

// 25 connections cut at random offsets between 200 KB and 4 MB: past the
// login, inside the stream of FETCH literals.
FaultProxyOptions cutting_proxy(uint16_t target_port, const std::string& seed) {
  FaultProxyOptions p;
  p.target_port = target_port;
  p.cut_random = std::make_pair(uint64_t{200'000}, uint64_t{4'000'000});
  p.cuts = 25;
  p.seed = seed;
  p.max_seconds = 600;
  return p;
}

TEST_F(NetworkFaultsTest, ExportThroughCutsCompletesWithoutLossOrRefetch) {
  ASSERT_GE(source_messages_, kMessages);
  FaultProxy proxy(cutting_proxy(server_->imaps_port(), "export-cuts-20261125"));
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  RecordingSink events;
  auto started = Clock::now();
  exporting::ExportSummary s;
  ASSERT_NO_THROW(s = exporting::run_export(export_options(archive_dir, proxy.host(), proxy.port()), events));
  double seconds = seconds_since(started);
  size_t cuts = proxy.count("cut");
  auto totals = proxy_totals(proxy);
  size_t mid_fetch = reconnects_mentioning(events, "FETCH");
  std::printf("[ figures ] export through cuts: seed %s, %zu cuts (%zu during a FETCH), %d reconnects, "
              "%zu connections, %.1f s; %llu messages, %.1f MB fetched, %.1f MB down the wire (%.3f x the source)\n",
              proxy.seed().c_str(), cuts, mid_fetch, s.reconnects, totals.connections, seconds,
              (unsigned long long)s.total(&exporting::FolderResult::new_messages),
              s.total(&exporting::FolderResult::bytes_fetched) / 1e6, totals.down / 1e6,
              double(totals.down) / double(source_bytes_));

  EXPECT_TRUE(s.complete());
  EXPECT_GE(cuts, 20u);
  EXPECT_GE(s.reconnects, 20);
  EXPECT_GE(mid_fetch, cuts / 2) << "most cuts should land while FETCH literals stream";
  // Each message fetched exactly once: what reached the archive counts once,
  // and nothing archived before a cut was asked for again.
  EXPECT_EQ(s.total(&exporting::FolderResult::new_messages), source_messages_);
  EXPECT_EQ(s.total(&exporting::FolderResult::bytes_fetched), source_bytes_);
  // On the wire, a cut wastes at most the message in flight (plus protocol).
  EXPECT_LT(totals.down, source_bytes_ + cuts * (largest_ + 200'000) + 5'000'000);
  expect_archive_equals_source(archive_dir);

  // A re-run straight to the server finds nothing left to fetch.
  NullSink quiet;
  auto again = exporting::run_export(export_options(archive_dir, server_->host(), server_->imaps_port()), quiet);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(again.total(&exporting::FolderResult::new_messages), 0u);
}

TEST_F(NetworkFaultsTest, ImportThroughCutsCompletesWithoutLossOrDuplicates) {
  server_->add_user("cut_target");
  auto p = cutting_proxy(server_->imaps_port(), "import-cuts-20261125");
  FaultProxy proxy(p);
  RecordingSink events;
  auto started = Clock::now();
  importing::ImportSummary s;
  ASSERT_NO_THROW(s = importing::run_import(import_options("cut_target", proxy.host(), proxy.port()), events));
  double seconds = seconds_since(started);
  size_t cuts = proxy.count("cut");
  auto totals = proxy_totals(proxy);
  size_t mid_append = reconnects_mentioning(events, "APPEND");
  uint64_t appended = s.total(&importing::ImportFolderResult::appended);
  uint64_t reconciled = s.total(&importing::ImportFolderResult::reconciled);
  std::printf("[ figures ] import through cuts: seed %s, %zu cuts (%zu during an APPEND), %d reconnects, "
              "%zu connections, %.1f s; %llu appended + %llu reconciled; %.1f MB up the wire (%.3f x the source)\n",
              proxy.seed().c_str(), cuts, mid_append, s.reconnects, totals.connections, seconds,
              (unsigned long long)appended, (unsigned long long)reconciled, totals.up / 1e6,
              double(totals.up) / double(source_bytes_));

  EXPECT_TRUE(s.complete());
  EXPECT_GE(cuts, 20u);
  EXPECT_GE(s.reconnects, 20);
  EXPECT_GE(mid_append, cuts / 2) << "most cuts should land while APPEND literals stream";
  // Every message settled exactly once: appended, or found on the target after a cut.
  EXPECT_EQ(appended + reconciled, source_messages_);
  expect_target_equals_source("cut_target");
  expect_append_records_done("cut_target@target");
  auto report = verify_archive(archive_path());
  EXPECT_TRUE(report.ok()) << report.to_json().dump(2);

  // A re-run straight to the server appends nothing.
  NullSink quiet;
  auto again = importing::run_import(import_options("cut_target", server_->host(), server_->imaps_port()), quiet);
  EXPECT_TRUE(again.complete());
  EXPECT_EQ(again.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(again.total(&importing::ImportFolderResult::already_there), source_messages_);
}

// A link that drops every connection after 2 MB, for good: an APPEND group
// of 100 messages (~4 MB) never gets through, so the import must shrink its
// groups, and every cut must still count against the retry budget only when
// nothing was settled.
TEST_F(NetworkFaultsTest, ImportOverALinkThatAlwaysDropsStillCompletes) {
  server_->add_user("drop_target");
  FaultProxyOptions p;
  p.target_port = server_->imaps_port();
  p.cut_after = 2'000'000;
  p.cut_direction = "up";
  p.max_seconds = 600;
  FaultProxy proxy(p);
  auto o = import_options("drop_target", proxy.host(), proxy.port());
  o.include = {"INBOX", "Sent"};
  RecordingSink events;
  auto started = Clock::now();
  importing::ImportSummary s;
  ASSERT_NO_THROW(s = importing::run_import(o, events));
  size_t cuts = proxy.count("cut");
  std::printf("[ figures ] import over a link cut every 2 MB up: %zu cuts, %d reconnects, %.1f s, "
              "%llu appended + %llu reconciled\n",
              cuts, s.reconnects, seconds_since(started),
              (unsigned long long)s.total(&importing::ImportFolderResult::appended),
              (unsigned long long)s.total(&importing::ImportFolderResult::reconciled));
  EXPECT_TRUE(s.complete());
  EXPECT_GE(cuts, 10u);
  auto source = multiset(server_view(*source_));
  auto target = multiset(server_view(server_->summary("drop_target")));
  for (std::string name : {"INBOX", "Sent"}) {
    EXPECT_EQ(target[name], source[name]) << name;
  }
  size_t expected = source["INBOX"].size() + source["Sent"].size();
  EXPECT_EQ(s.total(&importing::ImportFolderResult::appended) + s.total(&importing::ImportFolderResult::reconciled),
            expected);
}

// A connection that stops forwarding for good mid-literal: the per-read
// timeout notices, the connection is dropped and a new one (not stalled)
// finishes the job.
TEST_F(NetworkFaultsTest, ExportStalledMidFetchTimesOutAndCompletes) {
  constexpr int kTimeout = 2;
  FaultProxyOptions p;
  p.target_port = server_->imaps_port();
  p.stall_after = 3'000'000;
  p.stall_direction = "down";
  p.stalls = 1;
  p.max_seconds = 600;
  FaultProxy proxy(p);
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  RecordingSink events;
  auto started = Clock::now();
  exporting::ExportSummary s;
  ASSERT_NO_THROW(
      s = exporting::run_export(export_options(archive_dir, proxy.host(), proxy.port(), kTimeout), events));
  double seconds = seconds_since(started);
  double detected = -1;
  double stall_at = -1;
  for (auto& e : proxy.events()) {
    if (e.value("event", "") == "stall") stall_at = e.value("t", 0.0);
    if (e.value("event", "") == "close" && e.value("conn", 0) == 1 && stall_at >= 0)
      detected = e.value("t", 0.0) - stall_at;
  }
  std::printf("[ figures ] export stalled mid-FETCH: timeout %d s, stall noticed and dropped after %.2f s, "
              "%d reconnects, %.1f s in all (clean run %.1f s)\n",
              kTimeout, detected, s.reconnects, seconds, clean_export_seconds_);
  EXPECT_EQ(proxy.count("stall"), 1u);
  EXPECT_TRUE(s.complete());
  EXPECT_GE(s.reconnects, 1);
  EXPECT_GE(reconnects_mentioning(events, "FETCH"), 1u);
  EXPECT_GE(detected, kTimeout - 0.5);
  EXPECT_LT(detected, 2 * kTimeout + 2.0);
  EXPECT_LT(seconds, clean_export_seconds_ * 2 + kTimeout * 3 + 10);
  EXPECT_EQ(s.total(&exporting::FolderResult::new_messages), source_messages_);
  expect_archive_equals_source(archive_dir);
}

TEST_F(NetworkFaultsTest, ImportStalledMidAppendTimesOutAndCompletes) {
  constexpr int kTimeout = 2;
  server_->add_user("stall_target");
  FaultProxyOptions p;
  p.target_port = server_->imaps_port();
  p.stall_after = 3'000'000;
  p.stall_direction = "up";
  p.stalls = 1;
  p.max_seconds = 600;
  FaultProxy proxy(p);
  RecordingSink events;
  auto started = Clock::now();
  importing::ImportSummary s;
  ASSERT_NO_THROW(
      s = importing::run_import(import_options("stall_target", proxy.host(), proxy.port(), kTimeout), events));
  double seconds = seconds_since(started);
  double detected = -1, stall_at = -1, second_open = -1;
  for (auto& e : proxy.events()) {
    std::string name = e.value("event", "");
    if (name == "stall") stall_at = e.value("t", 0.0);
    if (name == "close" && e.value("conn", 0) == 1 && stall_at >= 0) detected = e.value("t", 0.0) - stall_at;
    if (name == "open" && e.value("conn", 0) == 2) second_open = e.value("t", 0.0);
  }
  double rest = second_open >= 0 ? seconds - second_open : -1;
  std::printf("[ figures ] import stalled mid-APPEND: timeout %d s, stall noticed and dropped after %.2f s, "
              "%d reconnects, %.1f s in all (%.1f s after the reconnect)\n",
              kTimeout, detected, s.reconnects, seconds, rest);
  EXPECT_EQ(proxy.count("stall"), 1u);
  EXPECT_TRUE(s.complete());
  EXPECT_GE(s.reconnects, 1);
  EXPECT_GE(reconnects_mentioning(events, "APPEND"), 1u);
  EXPECT_GE(detected, kTimeout - 0.5);
  EXPECT_LT(detected, 2 * kTimeout + 2.0);
  // No hang: the stall cost at most a few timeouts on top of the work itself.
  ASSERT_GE(second_open, 0);
  EXPECT_LT(second_open, stall_at + kTimeout * 3 + 2.0);
  EXPECT_EQ(s.total(&importing::ImportFolderResult::appended) + s.total(&importing::ImportFolderResult::reconciled),
            source_messages_);
  expect_target_equals_source("stall_target");
}

}  // namespace
}  // namespace imapstage

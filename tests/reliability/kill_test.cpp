// Reliability under kill -9: the real binary exports and imports, is killed
// (SIGKILL) at seeded random moments, once to three times a trial, then run
// again to the end. After each final run the archive verifies offline and
// equals the source, the target equals the source, nothing is lost and
// nothing is duplicated, and the final run fetched only what the killed runs
// had not committed. tools/trials runs the same trials in bulk.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "common/error.h"
#include "tests/support/mail_view.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"
#include "verify/offline.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::TempDir;
using testing::TestServer;
using Clock = std::chrono::steady_clock;

constexpr size_t kMessages = 800;
constexpr int kTrials = 5;

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
// The summary event: the last line of a --json run's stdout.
nlohmann::json last_json_line(const std::string& out) {
  size_t end = out.find_last_not_of('\n');
  if (end == std::string::npos) return {};
  size_t start = out.rfind('\n', end);
  start = start == std::string::npos ? 0 : start + 1;
  try {
    return nlohmann::json::parse(out.substr(start, end - start + 1));
  } catch (...) {
    return {};
  }
}

class KillTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto started = Clock::now();
    testing::TestServerOptions o;
    o.seed = "bench:" + std::to_string(kMessages);
    o.users = {"bench"};
    server_ = new TestServer(o);
    source_ = new UidView(server_view(server_->summary("bench")));
    archive_dir_ = new TempDir();
    // Clean runs: the archive the import trials start from, and how long a
    // whole export and import take (the range of the kill delays).
    auto t = Clock::now();
    auto r = testing::run_imapstage(export_args(archive_path()));
    export_seconds_ = seconds_since(t);
    if (r.exit_code != 0) throw std::runtime_error("clean export failed: " + r.err);
    server_->add_user("baseline");
    t = Clock::now();
    r = testing::run_imapstage(import_args(archive_path(), "baseline"));
    import_seconds_ = seconds_since(t);
    if (r.exit_code != 0) throw std::runtime_error("clean import failed: " + r.err);
    std::printf("[ figures ] %zu messages; clean export %.2f s, clean import %.2f s; setup %.1f s\n",
                count(*source_), export_seconds_, import_seconds_, seconds_since(started));
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

  static std::vector<std::string> export_args(const std::string& archive_dir) {
    return {"export", "--archive", archive_dir, "--host", server_->host(), "--port",
            std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", "bench",
            "--password-file", server_->password_file("bench"), "--json"};
  }
  static std::vector<std::string> import_args(const std::string& archive_dir, const std::string& target_user) {
    return {"import", "--archive", archive_dir, "--host", server_->host(), "--port",
            std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", target_user,
            "--password-file", server_->password_file(target_user), "--json"};
  }

  // Present messages of the archive's current generations (0 when there is no archive yet).
  static size_t archived_messages(const std::string& dir) {
    if (!std::filesystem::exists(dir + "/FORMAT")) return 0;
    return count(archive_view(dir, account_name()));
  }

  static TestServer* server_;
  static UidView* source_;
  static TempDir* archive_dir_;
  static double export_seconds_;
  static double import_seconds_;
};

TestServer* KillTest::server_ = nullptr;
UidView* KillTest::source_ = nullptr;
TempDir* KillTest::archive_dir_ = nullptr;
double KillTest::export_seconds_ = 0;
double KillTest::import_seconds_ = 0;

TEST_F(KillTest, KilledExportsResumeToTheSameArchive) {
  std::mt19937 rng(20261125);
  size_t total = count(*source_);
  int kills = 0, ok_trials = 0;
  size_t lost = 0, duplicated = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    TempDir dir;
    std::string archive_dir = dir.path() + "/archive";
    int rounds = 1 + static_cast<int>(rng() % 3);
    std::string delays;
    for (int k = 0; k < rounds; ++k) {
      auto max_ms = static_cast<unsigned>(export_seconds_ * 600) + 10;  // within the first 60 % of a clean run
      std::chrono::milliseconds delay(20 + rng() % max_ms);
      auto r = testing::run_imapstage(export_args(archive_dir), {}, delay);
      delays += (delays.empty() ? "" : ", ") + std::to_string(delay.count()) + " ms";
      if (r.signal == SIGKILL) ++kills, delays += " (killed)";
      else EXPECT_EQ(r.exit_code, 0) << r.err;
    }
    size_t committed = archived_messages(archive_dir);
    auto final_run = testing::run_imapstage(export_args(archive_dir));
    ASSERT_EQ(final_run.exit_code, 0) << final_run.err;
    auto summary = last_json_line(final_run.out);
    ASSERT_EQ(summary.value("event", ""), "summary") << final_run.out;
    // Only what the killed runs had not committed was fetched again.
    EXPECT_EQ(summary["messages"].get<size_t>(), total - committed) << "trial " << trial;

    auto report = verify_archive(archive_dir);
    EXPECT_TRUE(report.ok()) << "trial " << trial << ": " << report.to_json().dump(2);
    auto archived = archive_view(archive_dir, account_name());
    auto d = compare(multiset(*source_), multiset(archived));
    EXPECT_TRUE(archived == *source_) << "trial " << trial << ": the archive differs from the source";
    lost += d.lost;
    duplicated += d.duplicated;
    if (report.ok() && archived == *source_) ++ok_trials;
    std::printf("[ trial %d ] export killed after %s; %zu committed before the final run, which fetched %zu; "
                "lost %zu, duplicated %zu, verified %s\n",
                trial, delays.c_str(), committed, summary["messages"].get<size_t>(), d.lost, d.duplicated,
                report.ok() ? "ok" : "FAILED");
  }
  std::printf("[ figures ] export: %d/%d trials: lost %zu, duplicated %zu, archive verified (%d kills)\n", ok_trials,
              kTrials, lost, duplicated, kills);
  EXPECT_EQ(ok_trials, kTrials);
  EXPECT_GE(kills, 3) << "the kill delays should mostly land mid-run";
}

TEST_F(KillTest, KilledImportsResumeWithoutLossOrDuplicates) {
  std::mt19937 rng(20261126);
  size_t total = count(*source_);
  auto source_set = multiset(*source_);
  int kills = 0, ok_trials = 0;
  size_t lost = 0, duplicated = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    std::string user = "killed" + std::to_string(trial);
    server_->add_user(user);
    TempDir dir;
    std::string archive_dir = dir.path() + "/archive";
    std::filesystem::copy(archive_path(), archive_dir, std::filesystem::copy_options::recursive);
    int rounds = 1 + static_cast<int>(rng() % 3);
    std::string delays;
    for (int k = 0; k < rounds; ++k) {
      auto max_ms = static_cast<unsigned>(import_seconds_ * 600) + 10;  // within the first 60 % of a clean run
      std::chrono::milliseconds delay(50 + rng() % max_ms);
      auto r = testing::run_imapstage(import_args(archive_dir, user), {}, delay);
      delays += (delays.empty() ? "" : ", ") + std::to_string(delay.count()) + " ms";
      if (r.signal == SIGKILL) ++kills, delays += " (killed)";
      else EXPECT_EQ(r.exit_code, 0) << r.err;
    }
    auto final_run = testing::run_imapstage(import_args(archive_dir, user));
    ASSERT_EQ(final_run.exit_code, 0) << final_run.err;
    auto summary = last_json_line(final_run.out);
    ASSERT_EQ(summary.value("event", ""), "summary") << final_run.out;

    auto target = multiset(server_view(server_->summary(user)));
    auto d = compare(source_set, target);
    EXPECT_EQ(d.lost, 0u) << "trial " << trial;
    EXPECT_EQ(d.duplicated, 0u) << "trial " << trial;
    lost += d.lost;
    duplicated += d.duplicated;
    // Every message recorded as appended, with its target UID.
    size_t done = 0, other = 0;
    {
      auto a = Archive::open(archive_dir, Archive::Mode::read);
      auto id = a->find_target(user + "@" + server_->host() + ":" + std::to_string(server_->imaps_port()));
      ASSERT_TRUE(id);
      a->for_each_append(*id, [&](const archive::AppendRecord& r) {
        if (r.state == archive::AppendState::done && r.target_uid) ++done;
        else ++other;
        return true;
      });
    }
    EXPECT_EQ(done, total) << "trial " << trial;
    EXPECT_EQ(other, 0u) << "trial " << trial;
    auto report = verify_archive(archive_dir);
    EXPECT_TRUE(report.ok()) << "trial " << trial << ": " << report.to_json().dump(2);
    bool archive_same = archive_view(archive_dir, account_name()) == *source_;
    EXPECT_TRUE(archive_same) << "trial " << trial;
    if (d.lost == 0 && d.duplicated == 0 && done == total && report.ok() && archive_same) ++ok_trials;
    std::printf("[ trial %d ] import killed after %s; the final run appended %llu, reconciled %llu, found %llu "
                "already there; lost %zu, duplicated %zu, verified %s\n",
                trial, delays.c_str(), (unsigned long long)summary.value("appended", uint64_t{0}),
                (unsigned long long)summary.value("reconciled", uint64_t{0}),
                (unsigned long long)summary.value("already_there", uint64_t{0}), d.lost, d.duplicated,
                report.ok() ? "ok" : "FAILED");
  }
  std::printf("[ figures ] import: %d/%d trials: lost %zu, duplicated %zu, archive verified (%d kills)\n", ok_trials,
              kTrials, lost, duplicated, kills);
  EXPECT_EQ(ok_trials, kTrials);
  EXPECT_GE(kills, 3) << "the kill delays should mostly land mid-run";
}

// The same for an encrypted archive: killed mid-commit, a sealed pack is
// cut back to its committed size like a plain one, and the re-run fetches
// only what was not committed.
TEST_F(KillTest, KilledEncryptedExportsResumeToTheSameArchive) {
  std::mt19937 rng(20261203);
  size_t total = count(*source_);
  TempDir keys;
  std::string pass_file = keys.path() + "/pass";
  {
    std::FILE* f = std::fopen(pass_file.c_str(), "w");
    std::fputs("kill trial passphrase\n", f);
    std::fclose(f);
  }
  archive::set_default_passphrase_source([](const std::filesystem::path&) { return std::string("kill trial passphrase"); });
  int kills = 0, ok_trials = 0;
  constexpr int kEncryptedTrials = 3;
  for (int trial = 0; trial < kEncryptedTrials; ++trial) {
    TempDir dir;
    std::string archive_dir = dir.path() + "/archive";
    auto init = testing::run_imapstage(
        {"init", "--archive", archive_dir, "--encrypt", "--scrypt-log-n", "12", "--passphrase-file", pass_file});
    ASSERT_EQ(init.exit_code, 0) << init.err;
    auto args = export_args(archive_dir);
    // Frequent commits, so kills land between and inside commits of sealed records.
    args.insert(args.end(), {"--passphrase-file", pass_file, "--commit-interval", "0.05"});
    int rounds = 1 + static_cast<int>(rng() % 3);
    std::string delays;
    for (int k = 0; k < rounds; ++k) {
      auto max_ms = static_cast<unsigned>(export_seconds_ * 600) + 10;
      std::chrono::milliseconds delay(20 + rng() % max_ms);
      auto r = testing::run_imapstage(args, {}, delay);
      delays += (delays.empty() ? "" : ", ") + std::to_string(delay.count()) + " ms";
      if (r.signal == SIGKILL) ++kills, delays += " (killed)";
      else EXPECT_EQ(r.exit_code, 0) << r.err;
    }
    size_t committed = archived_messages(archive_dir);
    auto final_run = testing::run_imapstage(args);
    ASSERT_EQ(final_run.exit_code, 0) << final_run.err;
    auto summary = last_json_line(final_run.out);
    ASSERT_EQ(summary.value("event", ""), "summary") << final_run.out;
    EXPECT_EQ(summary["messages"].get<size_t>(), total - committed) << "trial " << trial;
    auto report = verify_archive(archive_dir);
    EXPECT_TRUE(report.ok()) << "trial " << trial << ": " << report.to_json().dump(2);
    auto archived = archive_view(archive_dir, account_name());
    auto d = compare(multiset(*source_), multiset(archived));
    EXPECT_TRUE(archived == *source_) << "trial " << trial;
    if (report.ok() && archived == *source_) ++ok_trials;
    std::printf("[ trial %d ] encrypted export killed after %s; %zu committed before the final run, which fetched "
                "%zu; lost %zu, duplicated %zu, verified %s\n",
                trial, delays.c_str(), committed, summary["messages"].get<size_t>(), d.lost, d.duplicated,
                report.ok() ? "ok" : "FAILED");
  }
  archive::set_default_passphrase_source({});
  std::printf("[ figures ] encrypted export: %d/%d trials verified (%d kills)\n", ok_trials, kEncryptedTrials, kills);
  EXPECT_EQ(ok_trials, kEncryptedTrials);
  EXPECT_GE(kills, 2) << "the kill delays should mostly land mid-run";
}

}  // namespace
}  // namespace imapstage

// A batch spread over three processes and merged: thirty accounts on the
// harness Dovecot exported by three shard processes (one named by --shard,
// one by a Kubernetes Indexed Job's environment, one by a Slurm array's),
// merged with `imapstage merge`, and compared with one process over the same
// accounts by their manifests; a shard killed after its first account and run
// again finishes without duplicates, and so does a killed merge; merging
// again changes nothing; a conflicting archive is refused; status adds the
// shards up; import shards find their accounts in the export shards'
// archives; the Slurm and GNU parallel recipes of examples/ run as written.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "batch/shard.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using archive::Archive;
using testing::ProcessResult;
using testing::TempDir;
using testing::TestServer;

constexpr int kAccounts = 30;
constexpr int kShards = 3;
const char* const kPassword = "Shard-pw-2024";

std::string user(int i) { return fmt::format("u{:02d}", i); }

std::string write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return path;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> events;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) events.push_back(nlohmann::json::parse(line));
  return events;
}

std::vector<nlohmann::json> named(const std::vector<nlohmann::json>& events, const std::string& name) {
  std::vector<nlohmann::json> out;
  for (auto& e : events)
    if (e.value("event", "") == name) out.push_back(e);
  return out;
}

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

// The manifest of an archive without what names that archive (its id and
// the time it was made): what a merged archive shares with one process's.
nlohmann::json manifest_contents(const std::string& archive, const std::string& out) {
  auto r = testing::run_imapstage({"manifest", "--archive", archive, "--out", out});
  if (r.exit_code != 0) throw std::runtime_error("manifest failed: " + r.err);
  auto j = nlohmann::json::parse(slurp(out));
  j.erase("archive_id");
  j.erase("created");
  return j;
}

// How many message rows refer to each hash, and how many objects the index holds.
struct Rows {
  size_t messages = 0;
  std::set<archive::Hash> hashes;
  size_t objects = 0;
};
Rows rows(const std::string& dir) {
  Rows r;
  auto a = Archive::open(dir, Archive::Mode::read);
  a->for_each_message([&](const archive::MessageRecord& m) {
    ++r.messages;
    r.hashes.insert(m.hash);
    return true;
  });
  a->for_each_object([&](const archive::Hash&, const archive::ObjectLocation&) {
    ++r.objects;
    return true;
  });
  return r;
}

class ShardMergeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TestServerOptions o;
    o.seed = "none";
    o.users = {};
    server_ = new TestServer(o);
    // Thirty accounts of small mail each, and one message every account has
    // (a newsletter), so the shards hold copies of one object.
    static const std::string newsletter =
        "From: news@example.test\r\nTo: all@example.test\r\nSubject: Monthly news\r\n"
        "Message-ID: <news-1@example.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nThe same for everyone.\r\n";
    parallel_for(kAccounts, 4, [](int i) {
      server_->run({"add-user", "--seed", "small:6", "--", server_->dir(), user(i + 1), kPassword});
      server_->append(user(i + 1), "INBOX", newsletter, "\\Seen", "01-Jan-2024 10:00:00 +0000");
    });
    dir_ = new TempDir;
    std::string csv;
    for (int i = 1; i <= kAccounts; ++i) csv += user(i) + ";" + kPassword + "\n";
    accounts_ = new std::string(write(dir_->path() + "/accounts.txt", csv));
    // One process over every account: what the shards together must equal.
    single_ = new std::string(dir_->path() + "/single");
    auto r = export_batch(*single_, {});
    if (r.exit_code != 0) throw std::runtime_error("single export failed: " + r.err + r.out.substr(0, 2000));
    single_manifest_ = new nlohmann::json(manifest_contents(*single_, dir_->path() + "/single.manifest.json"));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
    delete accounts_;
    delete single_;
    delete single_manifest_;
  }

  static ProcessResult export_batch(const std::string& archive, const std::vector<std::string>& extra,
                                    const std::vector<std::string>& env = {},
                                    const std::function<bool(const std::string&)>& kill_when = nullptr) {
    std::vector<std::string> args = {"export",    "--archive", archive,  "--accounts", *accounts_,
                                     "--host",    server_->host(), "--port", std::to_string(server_->imaps_port()),
                                     "--tls",     "implicit",  "--ca-file", server_->ca_file(), "--jobs", "2",
                                     "--max-load", "0",        "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return testing::run_imapstage(args, env, std::nullopt, kill_when);
  }

  // The three shards as separate processes at once, each told its shard another way.
  static std::vector<ProcessResult> run_shards(const std::string& parent) {
    std::vector<ProcessResult> results(kShards);
    std::vector<std::thread> threads;
    threads.emplace_back([&] { results[0] = export_batch(parent, {"--shard", "0/3"}); });
    threads.emplace_back([&] {
      results[1] = export_batch(parent, {}, {"JOB_COMPLETION_INDEX=1", "JOB_COMPLETIONS=3"});
    });
    threads.emplace_back([&] {
      results[2] = export_batch(parent, {}, {"SLURM_ARRAY_TASK_ID=3", "SLURM_ARRAY_TASK_MIN=1",
                                             "SLURM_ARRAY_TASK_COUNT=3"});
    });
    for (auto& t : threads) t.join();
    return results;
  }

  static std::vector<std::string> shard_dirs(const std::string& parent) {
    std::vector<std::string> out;
    for (int i = 0; i < kShards; ++i) out.push_back(fmt::format("{}/shard-{}-of-{}", parent, i, kShards));
    return out;
  }

  static TestServer* server_;
  static TempDir* dir_;
  static std::string* accounts_;
  static std::string* single_;
  static nlohmann::json* single_manifest_;
};

TestServer* ShardMergeTest::server_ = nullptr;
TempDir* ShardMergeTest::dir_ = nullptr;
std::string* ShardMergeTest::accounts_ = nullptr;
std::string* ShardMergeTest::single_ = nullptr;
nlohmann::json* ShardMergeTest::single_manifest_ = nullptr;

TEST_F(ShardMergeTest, ThreeShardProcessesMergedEqualOneProcess) {
  TempDir dir;
  std::string parent = dir.path() + "/shards";
  auto results = run_shards(parent);
  std::map<std::string, int> done;  // account -> times exported
  size_t assigned = 0;
  for (int i = 0; i < kShards; ++i) {
    ASSERT_EQ(results[i].exit_code, 0) << "shard " << i << ": " << results[i].err << results[i].out.substr(0, 2000);
    auto events = json_lines(results[i].out);
    auto shard = named(events, "shard");
    ASSERT_EQ(shard.size(), 1u) << "shard " << i;
    EXPECT_EQ(shard[0]["shard"], i);
    EXPECT_EQ(shard[0]["shards"], kShards);
    EXPECT_EQ(shard[0]["archive"], shard_dirs(parent)[i]);
    EXPECT_EQ(shard[0]["origin"], std::vector<std::string>({"--shard", "JOB_COMPLETION_INDEX",
                                                              "SLURM_ARRAY_TASK_ID"})[i]);
    assigned += shard[0]["accounts"].get<size_t>();
    EXPECT_GT(shard[0]["accounts"].get<size_t>(), 0u) << "shard " << i << " got nothing";
    for (auto& e : named(events, "account_done")) {
      std::string account = e["account"];
      ++done[account];
      // The account is where rendezvous hashing of its source user puts it.
      EXPECT_EQ(batch::shard_of(account.substr(0, account.find('@')), kShards), uint32_t(i)) << account;
    }
    EXPECT_TRUE(named(events, "account_error").empty()) << results[i].out.substr(0, 2000);
  }
  EXPECT_EQ(assigned, size_t(kAccounts));
  EXPECT_EQ(done.size(), size_t(kAccounts));
  for (auto& [account, times] : done) EXPECT_EQ(times, 1) << account;

  // Merge: every object once, the manifest that of one process.
  std::string merged = dir.path() + "/merged";
  std::vector<std::string> args = {"merge", "--archive", merged, "--json"};
  for (auto& s : shard_dirs(parent)) args.push_back(s);
  auto m = testing::run_imapstage(args);
  ASSERT_EQ(m.exit_code, 0) << m.err << m.out;
  auto done_event = named(json_lines(m.out), "merge_done");
  ASSERT_EQ(done_event.size(), 1u);
  EXPECT_EQ(done_event[0]["accounts"], kAccounts);
  EXPECT_EQ(done_event[0]["accounts_written"], kAccounts);
  EXPECT_EQ(manifest_contents(merged, dir.path() + "/merged.json"), *single_manifest_);

  Rows shard_rows[kShards] = {rows(shard_dirs(parent)[0]), rows(shard_dirs(parent)[1]), rows(shard_dirs(parent)[2])};
  Rows merged_rows = rows(merged), single_rows = rows(*single_);
  EXPECT_EQ(merged_rows.messages, single_rows.messages);
  EXPECT_EQ(merged_rows.messages, shard_rows[0].messages + shard_rows[1].messages + shard_rows[2].messages);
  // The newsletter is in every shard, and once in the merged archive.
  EXPECT_EQ(shard_rows[0].objects + shard_rows[1].objects + shard_rows[2].objects, merged_rows.objects + 2);
  EXPECT_EQ(merged_rows.objects, merged_rows.hashes.size());
  EXPECT_EQ(merged_rows.objects, single_rows.objects);
  auto check = testing::run_imapstage({"manifest", "check", "--archive", merged, "--manifest",
                                       dir_->path() + "/single.manifest.json", "--json"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

  // Merging again finds every account whole and writes nothing.
  m = testing::run_imapstage(args);
  ASSERT_EQ(m.exit_code, 0) << m.err << m.out;
  done_event = named(json_lines(m.out), "merge_done");
  ASSERT_EQ(done_event.size(), 1u);
  EXPECT_EQ(done_event[0]["accounts_written"], 0);
  EXPECT_EQ(done_event[0]["accounts_unchanged"], kAccounts);
  EXPECT_EQ(rows(merged).objects, merged_rows.objects);
  EXPECT_EQ(manifest_contents(merged, dir.path() + "/merged2.json"), *single_manifest_);

  // The merged archive carries the shards' batch states: status over it sees every account done.
  auto merged_status = testing::run_imapstage({"status", "--archive", merged, "--kind", "export", "--json"});
  ASSERT_EQ(merged_status.exit_code, 0) << merged_status.err << merged_status.out;
  auto ms = nlohmann::json::parse(merged_status.out);
  ASSERT_EQ(ms["export"]["accounts"].size(), size_t(kAccounts));
  for (auto& acc : ms["export"]["accounts"]) EXPECT_EQ(acc["status"], "done") << acc.dump();

  // Status adds the shards up, given one by one or as their parent directory.
  for (auto status_args : {std::vector<std::string>{"status", "--archive", parent, "--kind", "export", "--json"},
                           std::vector<std::string>{"status", "--archive", shard_dirs(parent)[0], "--archive",
                                                    shard_dirs(parent)[1], "--archive", shard_dirs(parent)[2],
                                                    "--kind", "export", "--json"}}) {
    auto st = testing::run_imapstage(status_args);
    ASSERT_EQ(st.exit_code, 0) << st.err << st.out;
    auto j = nlohmann::json::parse(st.out);
    EXPECT_EQ(j["archives"].size(), size_t(kShards));
    EXPECT_EQ(j["total"]["export"]["accounts"], kAccounts);
    EXPECT_EQ(j["total"]["export"]["done"], kAccounts);
  }
}

TEST_F(ShardMergeTest, ShardedImportTakesEachShardsAccountsFromItsArchive) {
  TempDir dir;
  std::string parent = dir.path() + "/shards";
  for (auto& r : run_shards(parent)) ASSERT_EQ(r.exit_code, 0) << r.err;
  // Targets t01..t30; the import file adds the target columns to the same source users.
  parallel_for(kAccounts, 4, [](int i) {
    server_->run({"add-user", "--", server_->dir(), fmt::format("t{:02d}", i + 1), kPassword});
  });
  std::string csv;
  for (int i = 1; i <= kAccounts; ++i) csv += fmt::format("{};;t{:02d};{}\n", user(i), i, kPassword);
  std::string file = write(dir.path() + "/import.txt", csv);
  for (int i = 0; i < kShards; ++i) {
    auto r = testing::run_imapstage({"import", "--archive", parent, "--accounts", file, "--host", server_->host(),
                                     "--port", std::to_string(server_->imaps_port()), "--tls", "implicit",
                                     "--ca-file", server_->ca_file(), "--jobs", "3", "--max-load", "0", "--json",
                                     "--folder", "INBOX", "--shard", fmt::format("{}/{}", i, kShards)});
    ASSERT_EQ(r.exit_code, 0) << "shard " << i << ": " << r.err << r.out.substr(0, 2000);
    auto events = json_lines(r.out);
    auto shard = named(events, "shard");
    ASSERT_EQ(shard.size(), 1u);
    EXPECT_EQ(shard[0]["archive"], shard_dirs(parent)[i]);
    // Exactly the accounts the export shard archived, each imported once.
    std::set<std::string> imported, archived;
    for (auto& e : named(events, "account_done")) imported.insert(e["account"]);
    for (auto& acc : Archive::open(shard_dirs(parent)[i], Archive::Mode::read)->accounts()) archived.insert(acc.name);
    EXPECT_EQ(imported, archived) << "shard " << i;
  }
  // Every target's INBOX holds what its source's holds (INBOX only: the
  // shards are what is tested here, not the import of twenty folders).
  for (int i : {1, 17, 30}) {
    auto count = [](const nlohmann::json& summary) {
      for (auto& f : summary["folders"])
        if (f["name"] == "INBOX") return f["messages"].size();
      return size_t(0);
    };
    EXPECT_EQ(count(server_->summary(fmt::format("t{:02d}", i), false)), count(server_->summary(user(i), false)))
        << user(i);
  }
}

TEST_F(ShardMergeTest, ConflictingRowsAreRefusedAndNothingIsWritten) {
  TempDir dir;
  // Two archives of one account exported by separate runs: the folders'
  // last export times differ (and would any flag changed between them).
  std::string one = dir.path() + "/one", two = dir.path() + "/two";
  std::string file = write(dir.path() + "/one.txt", user(7) + ";" + kPassword + "\n");
  for (auto& a : {one, two}) {
    auto r = testing::run_imapstage({"export", "--archive", a, "--accounts", file, "--host", server_->host(),
                                     "--port", std::to_string(server_->imaps_port()), "--tls", "implicit",
                                     "--ca-file", server_->ca_file(), "--max-load", "0", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // another second: another last_export
  }
  std::string merged = dir.path() + "/merged";
  auto m = testing::run_imapstage({"merge", "--archive", merged, one, two});
  EXPECT_NE(m.exit_code, 0);
  EXPECT_NE(m.err.find("conflicting rows"), std::string::npos) << m.err;
  EXPECT_NE(m.err.find(user(7) + "@"), std::string::npos) << m.err;
  EXPECT_NE(m.err.find(one), std::string::npos) << m.err;
  EXPECT_NE(m.err.find(two), std::string::npos) << m.err;
  auto a = Archive::open(merged, Archive::Mode::read);
  EXPECT_TRUE(a->accounts().empty());
  EXPECT_EQ(rows(merged).objects, 0u);
  // An input given twice, and OUT given as an input, are refused too.
  EXPECT_NE(testing::run_imapstage({"merge", "--archive", merged, one, one}).exit_code, 0);
  EXPECT_NE(testing::run_imapstage({"merge", "--archive", one, one}).exit_code, 0);
}

TEST_F(ShardMergeTest, ShardKilledAfterItsFirstAccountFinishesWithoutDuplicates) {
  TempDir dir;
  std::string parent = dir.path() + "/shards";
  // Shard 1 is killed (SIGKILL) as soon as its log shows an account done.
  std::string shard1 = shard_dirs(parent)[1];
  auto killed = export_batch(parent, {"--shard", "1/3"}, {}, [](const std::string& out) {
    return out.find("\"event\":\"account_done\"") != std::string::npos;
  });
  ASSERT_EQ(killed.signal, 9) << "the shard finished before it could be killed: " << killed.out.substr(0, 1000);
  auto first_done = named(json_lines(killed.out.substr(0, killed.out.rfind('\n') + 1)), "account_done");
  ASSERT_GE(first_done.size(), 1u);

  // The other shards run; shard 1 runs again and finishes what it had left.
  auto again = export_batch(parent, {"--shard", "1/3"});
  ASSERT_EQ(again.exit_code, 0) << again.err << again.out.substr(0, 2000);
  auto events = json_lines(again.out);
  for (auto& e : named(events, "account_start"))
    for (auto& d : first_done) EXPECT_NE(e["account"], d["account"]) << "a finished account ran again";
  for (int i : {0, 2}) {
    auto r = export_batch(parent, {"--shard", fmt::format("{}/3", i)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // No duplicate: every message once (the manifests equal one process's,
  // which counts every row), every object once in the shard.
  Rows r1 = rows(shard1);
  EXPECT_EQ(r1.objects, r1.hashes.size());
  std::string merged = dir.path() + "/merged";
  std::vector<std::string> args = {"merge", "--archive", merged, "-q"};
  for (auto& s : shard_dirs(parent)) args.push_back(s);
  auto m = testing::run_imapstage(args);
  ASSERT_EQ(m.exit_code, 0) << m.err << m.out;
  EXPECT_EQ(manifest_contents(merged, dir.path() + "/merged.json"), *single_manifest_);
  EXPECT_EQ(rows(merged).messages, rows(*single_).messages);
}

TEST_F(ShardMergeTest, MergeKilledAndRunAgainFinishes) {
  TempDir dir;
  std::string parent = dir.path() + "/shards";
  for (auto& r : run_shards(parent)) ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string merged = dir.path() + "/merged";
  std::vector<std::string> args = {"merge", "--archive", merged, "--json"};
  for (auto& s : shard_dirs(parent)) args.push_back(s);
  auto killed = testing::run_imapstage(args, {}, std::nullopt, [](const std::string& out) {
    return out.find("\"event\":\"merge_account\"") != std::string::npos;
  });
  ASSERT_EQ(killed.signal, 9) << killed.out;
  // What it left is a valid archive holding whole accounts only.
  auto partial = manifest_contents(merged, dir.path() + "/partial.json");
  for (auto& acc : partial["accounts"]) {
    auto it = std::find_if(single_manifest_->at("accounts").begin(), single_manifest_->at("accounts").end(),
                           [&](const nlohmann::json& s) { return s["account"] == acc["account"]; });
    ASSERT_NE(it, single_manifest_->at("accounts").end());
    EXPECT_EQ(acc, *it) << acc["account"];
  }
  auto m = testing::run_imapstage(args);
  ASSERT_EQ(m.exit_code, 0) << m.err << m.out;
  EXPECT_EQ(manifest_contents(merged, dir.path() + "/merged.json"), *single_manifest_);
  Rows r = rows(merged);
  EXPECT_EQ(r.objects, r.hashes.size());
}

TEST_F(ShardMergeTest, SlurmArrayRecipeRunsTheShardsAndMerges) {
  // examples/slurm as sbatch would run it: one task per shard with Slurm's
  // array variables (--array=1-3), then the merge script.
  TempDir dir;
  std::string archive = dir.path() + "/archive";
  std::string config = write(dir.path() + "/config.toml", fmt::format(R"([profiles.source]
host = "{}"
port = {}
tls = "implicit"
ca_file = "{}"
timeout = 30
)",
                                                                       server_->host(), server_->imaps_port(),
                                                                       server_->ca_file()));
  std::vector<std::string> env = {"IMAPSTAGE=" + testing::imapstage_binary(), "ARCHIVE=" + archive,
                                  "ACCOUNTS=" + *accounts_, "CONFIG=" + config, "SLURM_ARRAY_TASK_COUNT=3",
                                  "SLURM_ARRAY_TASK_MIN=1", "SLURM_CPUS_PER_TASK=2"};
  std::string examples = std::string(IMAPSTAGE_SOURCE_DIR) + "/examples/slurm";
  for (int task = 1; task <= kShards; ++task) {
    auto task_env = env;
    task_env.push_back(fmt::format("SLURM_ARRAY_TASK_ID={}", task));
    auto r = testing::run_process({"/bin/bash", examples + "/export-array.sbatch", "--max-load", "0"}, task_env);
    ASSERT_EQ(r.exit_code, 0) << "task " << task << ": " << r.err << r.out.substr(0, 2000);
    auto shard = named(json_lines(r.out), "shard");
    ASSERT_EQ(shard.size(), 1u);
    EXPECT_EQ(shard[0]["shard"], task - 1);
  }
  auto merged = testing::run_process({"/bin/bash", examples + "/merge.sbatch"}, env);
  ASSERT_EQ(merged.exit_code, 0) << merged.err << merged.out;
  EXPECT_NE(merged.out.find("export batch over 3 archives: 30 accounts: 30 done"), std::string::npos) << merged.out;
  EXPECT_EQ(manifest_contents(archive + "/merged", dir.path() + "/merged.json"), *single_manifest_);
}

TEST_F(ShardMergeTest, GnuParallelRecipeRunsTheShardsAndMerges) {
  TempDir dir;
  std::string archive = dir.path() + "/archive";
  std::string config = write(dir.path() + "/config.toml",
                             fmt::format("[profiles.source]\nhost = \"{}\"\nport = {}\ntls = \"implicit\"\n"
                                         "ca_file = \"{}\"\n",
                                         server_->host(), server_->imaps_port(), server_->ca_file()));
  auto r = testing::run_process(
      {"/bin/bash", std::string(IMAPSTAGE_SOURCE_DIR) + "/examples/slurm/parallel.sh", "--max-load", "0"},
      {"IMAPSTAGE=" + testing::imapstage_binary(), "ARCHIVE=" + archive, "ACCOUNTS=" + *accounts_, "CONFIG=" + config,
       "SHARDS=3", "HOME=" + dir.path()});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("export batch over 3 archives: 30 accounts: 30 done"), std::string::npos) << r.out;
  for (int i = 0; i < kShards; ++i)
    EXPECT_EQ(named(json_lines(slurp(fmt::format("{}/export-{}.jsonl", archive, i))), "shard").size(), 1u) << i;
  EXPECT_EQ(manifest_contents(archive + "/merged", dir.path() + "/merged.json"), *single_manifest_);
}

}  // namespace
}  // namespace imapstage

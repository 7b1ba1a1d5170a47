// Shard assignment (rendezvous hashing over the source user), the shard named
// by --shard or by a Kubernetes Indexed Job / Slurm array environment, the
// shard's archive and its part of the per-server cap.
#include <map>
#include <set>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "batch/shard.h"
#include "common/error.h"

namespace imapstage::batch {
namespace {

std::string user(int i) { return fmt::format("user{:05d}@example.org", i); }

TEST(Shard, ParsesIndexOverCount) {
  auto s = parse_shard("2/3");
  EXPECT_EQ(s.index, 2u);
  EXPECT_EQ(s.count, 3u);
  EXPECT_TRUE(s.sharded());
  EXPECT_FALSE(parse_shard("0/1").sharded());
  for (const char* bad : {"3/3", "1", "-1/3", "1/0", "a/3", "1/3x", "", "/3", "1/"})
    EXPECT_THROW(parse_shard(bad), Error) << bad;
}

TEST(Shard, AssignmentIsDeterministicAndBalanced) {
  constexpr int kUsers = 6000;
  constexpr uint32_t kShards = 3;
  std::map<uint32_t, int> per_shard;
  for (int i = 0; i < kUsers; ++i) {
    uint32_t s = shard_of(user(i), kShards);
    ASSERT_LT(s, kShards);
    EXPECT_EQ(s, shard_of(user(i), kShards));
    ++per_shard[s];
  }
  // 2000 expected each; a binomial spread of about 37: within 10%.
  for (uint32_t s = 0; s < kShards; ++s) EXPECT_NEAR(per_shard[s], kUsers / kShards, kUsers / kShards / 10) << s;
  EXPECT_EQ(shard_of("anything", 1), 0u);
}

TEST(Shard, PinnedAssignmentsDoNotChangeBetweenVersions) {
  // The documented weights computed outside imapstage (Python hashlib:
  // sha256(name + b"\0" + str(i)), first 8 bytes big-endian, largest wins), so
  // a change of the assignment, which would strand accounts in the wrong
  // shard archives of a running migration, cannot pass unnoticed.
  std::map<std::string, uint32_t> pinned = {{"alice", 1}, {"bob", 0}, {"carol", 0}, {"dave@example.org", 2}};
  for (auto& [name, expected] : pinned) EXPECT_EQ(shard_of(name, 3), expected) << name;
}

TEST(Shard, GrowingTheAccountsFileMovesNoExistingAccount) {
  // The assignment depends on the name and N only: accounts added to the file
  // (anywhere in it) land somewhere, and no account already there moves.
  std::map<std::string, uint32_t> before;
  for (int i = 0; i < 3000; ++i) before[user(i)] = shard_of(user(i), 4);
  for (int i = 0; i < 4000; ++i) {
    uint32_t now = shard_of(user(i), 4);
    if (i < 3000) EXPECT_EQ(now, before[user(i)]) << user(i);
  }
}

TEST(Shard, AddingAShardMovesAboutOneInNAndOnlyToTheNewShard) {
  constexpr int kUsers = 6000;
  int moved = 0;
  for (int i = 0; i < kUsers; ++i) {
    uint32_t old_shard = shard_of(user(i), 4), new_shard = shard_of(user(i), 5);
    if (old_shard != new_shard) {
      ++moved;
      EXPECT_EQ(new_shard, 4u) << user(i) << " moved between old shards";
    }
  }
  // Rendezvous: exactly the accounts the new shard wins, about 1/5 of them (1200).
  EXPECT_NEAR(moved, kUsers / 5, kUsers / 5 / 8);
}

TEST(Shard, KubernetesIndexedJobEnvironment) {
  std::map<std::string, std::string> env = {{"JOB_COMPLETION_INDEX", "2"}, {"JOB_COMPLETIONS", "5"}};
  auto get = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto s = shard_from_environment(get);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->index, 2u);
  EXPECT_EQ(s->count, 5u);
  EXPECT_EQ(s->origin, "JOB_COMPLETION_INDEX");

  env.erase("JOB_COMPLETIONS");
  try {
    shard_from_environment(get);
    ADD_FAILURE() << "an index without a count was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.message()).find("JOB_COMPLETIONS"), std::string::npos) << e.message();
  }
  env["JOB_COMPLETIONS"] = "2";  // index 2 of 2
  EXPECT_THROW(shard_from_environment(get), Error);
  env["JOB_COMPLETIONS"] = "x";
  EXPECT_THROW(shard_from_environment(get), Error);
}

TEST(Shard, SlurmArrayEnvironment) {
  std::map<std::string, std::string> env = {
      {"SLURM_ARRAY_TASK_ID", "3"}, {"SLURM_ARRAY_TASK_COUNT", "3"}, {"SLURM_ARRAY_TASK_MIN", "1"}};
  auto get = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto s = shard_from_environment(get);  // --array=1-3: task 3 is shard 2
  ASSERT_TRUE(s);
  EXPECT_EQ(s->describe(), "2/3");
  EXPECT_EQ(s->origin, "SLURM_ARRAY_TASK_ID");
  env = {{"SLURM_ARRAY_TASK_ID", "4"}, {"SLURM_ARRAY_TASK_COUNT", "3"}, {"SLURM_ARRAY_TASK_MIN", "0"},
         {"SLURM_ARRAY_TASK_STEP", "2"}};  // --array=0-4:2 -> 0, 2, 4
  s = shard_from_environment(get);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->describe(), "2/3");
  env["SLURM_ARRAY_TASK_ID"] = "3";  // not on the step
  EXPECT_THROW(shard_from_environment(get), Error);
  env = {{"SLURM_ARRAY_TASK_ID", "0"}};
  EXPECT_THROW(shard_from_environment(get), Error);
  env = {};
  EXPECT_FALSE(shard_from_environment(get));
  // The Kubernetes variables win when both are set.
  env = {{"SLURM_ARRAY_TASK_ID", "0"}, {"SLURM_ARRAY_TASK_COUNT", "2"}, {"JOB_COMPLETION_INDEX", "1"},
         {"JOB_COMPLETIONS", "2"}};
  EXPECT_EQ(shard_from_environment(get)->describe(), "1/2");
}

TEST(Shard, OwnArchiveUnderTheSharedOne) {
  EXPECT_EQ(shard_archive_dir("/data/archive", parse_shard("1/3")), "/data/archive/shard-1-of-3");
  EXPECT_EQ(shard_archive_dir("/data/archive", parse_shard("0/1")), "/data/archive");
}

TEST(Shard, PerServerCapIsSplitSoThePartsAddUpToIt) {
  for (int cap : {1, 2, 3, 4, 7, 10, 12}) {
    for (uint32_t n : {1u, 2u, 3u, 5u}) {
      int sum = 0;
      bool any_exceeded = false;
      for (uint32_t i = 0; i < n; ++i) {
        bool exceeded = false;
        int part = shard_per_server_cap(cap, Shard{i, n}, &exceeded);
        EXPECT_GE(part, 1);
        sum += part;
        any_exceeded = any_exceeded || exceeded;
      }
      if (cap >= int(n)) {
        EXPECT_EQ(sum, cap) << cap << " over " << n;
        EXPECT_FALSE(any_exceeded);
      } else {
        EXPECT_EQ(sum, int(n)) << cap << " over " << n;
        EXPECT_TRUE(any_exceeded);
      }
    }
  }
  EXPECT_EQ(shard_per_server_cap(0, Shard{1, 3}), 0);  // no cap stays no cap
}

}  // namespace
}  // namespace imapstage::batch

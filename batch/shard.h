// Spreading one batch over many processes or machines (`--shard I/N`, or the
// index and count of a Kubernetes Indexed Job or a Slurm job array).
//
// Assignment: rendezvous (highest random weight) hashing over the source
// user of each accounts-file line. Shard i's weight for user U is the first 8
// bytes, read big-endian, of SHA-256(U || 0x00 || decimal i); the shard with
// the largest weight takes the account (a tie goes to the lower index). So
// an account's shard depends only on its name and N: lines added to, removed
// from or reordered in the accounts file never move another account, and an
// account lands on each shard with probability 1/N.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace imapstage::batch {

struct Shard {
  uint32_t index = 0;  // 0 .. count - 1
  uint32_t count = 1;  // 1: no sharding
  bool sharded() const { return count > 1; }
  std::string describe() const;  // "1/3"
  // Where it came from: "--shard", "JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID" or "" (none).
  std::string origin;
};

// "I/N" with 0 <= I < N, N >= 1, both decimal. Throws Error(usage).
Shard parse_shard(std::string_view text);

// The shard the environment names, read through `getenv` (std::getenv by
// default): JOB_COMPLETION_INDEX with JOB_COMPLETIONS (a Kubernetes Indexed
// Job; the Job's manifest sets JOB_COMPLETIONS to its spec.completions),
// else SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT (index = (ID - MIN) /
// STEP with SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_STEP when set).
// nullopt when neither index variable is set. Throws Error(usage) naming the
// variable when an index is set without its count or a value is out of range.
std::optional<Shard> shard_from_environment(
    const std::function<const char*(const char*)>& getenv = nullptr);

// The shard (0 .. count - 1) that takes the account of source user `user`.
uint32_t shard_of(std::string_view user, uint32_t count);

// The archive a shard writes: DIR itself without sharding, else its own
// directory DIR/shard-I-of-N under the shared one.
std::filesystem::path shard_archive_dir(const std::filesystem::path& dir, const Shard& shard);

// This shard's part of a per-server cap that holds across all shards: the
// cap split as evenly as possible (the first cap % N shards take one more),
// so the parts add up to `cap`. 0 (no cap) stays 0. A shard whose part would
// be 0 (cap < N) still gets 1, so every shard makes progress; the servers
// then see up to N at once, and `exceeded` is set so the caller can say so.
int shard_per_server_cap(int cap, const Shard& shard, bool* exceeded = nullptr);

}  // namespace imapstage::batch

#include "batch/shard.h"

#include <charconv>
#include <cstdlib>

#include <fmt/format.h>

#include "archive-format/hash.h"
#include "common/error.h"

namespace imapstage::batch {

namespace {

std::optional<uint64_t> parse_number(std::string_view text) {
  uint64_t v = 0;
  if (text.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

uint64_t weight(std::string_view user, uint32_t shard) {
  std::string input(user);
  input.push_back('\0');
  input += std::to_string(shard);
  auto h = archive::sha256(input);
  uint64_t w = 0;
  for (int i = 0; i < 8; ++i) w = (w << 8) | h[i];
  return w;
}

constexpr uint64_t kMaxShards = 1u << 20;

}  // namespace

std::string Shard::describe() const { return fmt::format("{}/{}", index, count); }

Shard parse_shard(std::string_view text) {
  auto slash = text.find('/');
  std::optional<uint64_t> i, n;
  if (slash != std::string_view::npos) {
    i = parse_number(text.substr(0, slash));
    n = parse_number(text.substr(slash + 1));
  }
  if (!i || !n || *n == 0 || *n > kMaxShards || *i >= *n)
    throw Error(ErrorKind::usage,
                fmt::format("--shard takes I/N with 0 <= I < N (e.g. 0/3, 1/3, 2/3), not \"{}\"", text));
  return {uint32_t(*i), uint32_t(*n), "--shard"};
}

std::optional<Shard> shard_from_environment(const std::function<const char*(const char*)>& getenv_fn) {
  auto get = [&](const char* name) -> std::optional<std::string> {
    const char* v = getenv_fn ? getenv_fn(name) : std::getenv(name);
    if (!v || !*v) return std::nullopt;
    return std::string(v);
  };
  auto number = [&](const char* name, const std::string& text) {
    auto v = parse_number(text);
    if (!v || *v > 0xffffffffull)
      throw Error(ErrorKind::usage, fmt::format("{}={} is not a non-negative number", name, text));
    return *v;
  };
  auto make = [&](uint64_t index, uint64_t count, const char* index_name, const char* count_name) {
    if (count == 0 || count > kMaxShards || index >= count)
      throw Error(ErrorKind::usage, fmt::format("{} gives shard {} of {} ({}): the index must be below the count",
                                                index_name, index, count, count_name));
    return Shard{uint32_t(index), uint32_t(count), index_name};
  };
  if (auto index = get("JOB_COMPLETION_INDEX")) {
    auto count = get("JOB_COMPLETIONS");
    if (!count)
      throw Error(ErrorKind::usage,
                  "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but JOB_COMPLETIONS is not: set it in the "
                  "pod's env to the Job's spec.completions, or give --shard I/N");
    return make(number("JOB_COMPLETION_INDEX", *index), number("JOB_COMPLETIONS", *count), "JOB_COMPLETION_INDEX",
                "JOB_COMPLETIONS");
  }
  if (auto id = get("SLURM_ARRAY_TASK_ID")) {
    auto count = get("SLURM_ARRAY_TASK_COUNT");
    if (!count)
      throw Error(ErrorKind::usage,
                  "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: give --shard I/N");
    uint64_t task = number("SLURM_ARRAY_TASK_ID", *id);
    uint64_t min = 0, step = 1;
    if (auto m = get("SLURM_ARRAY_TASK_MIN")) min = number("SLURM_ARRAY_TASK_MIN", *m);
    if (auto s = get("SLURM_ARRAY_TASK_STEP")) step = number("SLURM_ARRAY_TASK_STEP", *s);
    if (task < min || step == 0 || (task - min) % step != 0)
      throw Error(ErrorKind::usage,
                  fmt::format("SLURM_ARRAY_TASK_ID={} is not MIN + k * STEP (MIN {}, STEP {}): give --shard I/N",
                              task, min, step));
    return make((task - min) / step, number("SLURM_ARRAY_TASK_COUNT", *count), "SLURM_ARRAY_TASK_ID",
                "SLURM_ARRAY_TASK_COUNT");
  }
  return std::nullopt;
}

uint32_t shard_of(std::string_view user, uint32_t count) {
  uint32_t best = 0;
  uint64_t best_weight = 0;
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t w = weight(user, i);
    if (i == 0 || w > best_weight) {
      best = i;
      best_weight = w;
    }
  }
  return best;
}

std::filesystem::path shard_archive_dir(const std::filesystem::path& dir, const Shard& shard) {
  if (!shard.sharded()) return dir;
  return dir / fmt::format("shard-{}-of-{}", shard.index, shard.count);
}

int shard_per_server_cap(int cap, const Shard& shard, bool* exceeded) {
  if (exceeded) *exceeded = false;
  if (cap <= 0 || !shard.sharded()) return cap;
  int n = int(shard.count);
  int part = cap / n + (int(shard.index) < cap % n ? 1 : 0);
  if (part == 0) {
    if (exceeded) *exceeded = true;
    part = 1;
  }
  return part;
}

}  // namespace imapstage::batch

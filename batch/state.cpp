#include "batch/state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "archive-format/archive.h"
#include "archive-format/keys.h"
#include "archive-format/layout.h"
#include "common/error.h"

namespace imapstage::batch {

const char* to_string(AccountStatus s) {
  switch (s) {
    case AccountStatus::queued: return "queued";
    case AccountStatus::running: return "running";
    case AccountStatus::done: return "done";
    case AccountStatus::error: return "error";
    case AccountStatus::throttled: return "throttled";
    case AccountStatus::parked: return "parked";
  }
  return "?";
}

AccountStatus parse_account_status(const std::string& t) {
  if (t == "queued") return AccountStatus::queued;
  if (t == "running") return AccountStatus::running;
  if (t == "done") return AccountStatus::done;
  if (t == "error") return AccountStatus::error;
  if (t == "throttled") return AccountStatus::throttled;
  if (t == "parked") return AccountStatus::parked;
  throw Error(ErrorKind::corrupt, "unknown account status " + t);
}

nlohmann::json AccountState::to_json() const {
  return {{"key", key}, {"account", account}, {"server", server}, {"target", target}, {"line", line},
          {"status", to_string(status)}, {"attempts", attempts}, {"started", started}, {"finished", finished},
          {"seconds", seconds}, {"messages", messages}, {"bytes", bytes}, {"error", error},
          {"error_kind", error_kind}, {"resume_at", resume_at}};
}

AccountState AccountState::from_json(const nlohmann::json& j) {
  AccountState a;
  a.key = j.at("key").get<std::string>();
  a.account = j.value("account", "");
  a.server = j.value("server", "");
  a.target = j.value("target", "");
  a.line = j.value("line", size_t{0});
  a.status = parse_account_status(j.at("status").get<std::string>());
  a.attempts = j.value("attempts", 0);
  a.started = j.value("started", int64_t{0});
  a.finished = j.value("finished", int64_t{0});
  a.seconds = j.value("seconds", 0.0);
  a.messages = j.value("messages", uint64_t{0});
  a.bytes = j.value("bytes", uint64_t{0});
  a.error = j.value("error", "");
  a.error_kind = j.value("error_kind", "");
  a.resume_at = j.value("resume_at", int64_t{0});
  return a;
}

AccountState* BatchState::find(const std::string& key) {
  for (auto& a : accounts)
    if (a.key == key) return &a;
  return nullptr;
}

const AccountState* BatchState::find(const std::string& key) const {
  return const_cast<BatchState*>(this)->find(key);
}

bool BatchState::unfinished() const {
  for (auto& a : accounts)
    if (a.status != AccountStatus::done) return true;
  return false;
}

nlohmann::json BatchState::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (auto& a : accounts) list.push_back(a.to_json());
  return {{"version", 1}, {"kind", kind}, {"batch", batch_id}, {"created", created},
          {"invocations", invocations}, {"accounts", list}};
}

BatchState BatchState::from_json(const nlohmann::json& j) {
  if (j.value("version", 0) != 1) throw Error(ErrorKind::corrupt, "not a version 1 batch state");
  BatchState s;
  s.kind = j.value("kind", "");
  s.batch_id = j.value("batch", "");
  s.created = j.value("created", int64_t{0});
  s.invocations = j.value("invocations", 0);
  for (auto& a : j.at("accounts")) s.accounts.push_back(AccountState::from_json(a));
  return s;
}

std::filesystem::path state_path(const std::filesystem::path& archive_dir, const std::string& kind) {
  return archive_dir / "batches" / (kind + ".json");
}

std::optional<std::string> read_state_file(const std::filesystem::path& root, const std::filesystem::path& path,
                                           const std::string& what) {
  // No link and no special file is followed from root down.
  archive::Fd fd;
  try {
    fd = archive::open_in_archive(root, path, O_RDONLY);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::not_found) return std::nullopt;
    throw;
  }
  std::string text;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_io("cannot read the " + what, path.string(), errno);
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (64u << 20))
      throw Error(ErrorKind::corrupt, "the " + what + " is implausibly large", Retry::never, {.file = path.string()});
  }
  return text;
}

void write_state_file(const std::filesystem::path& root, const std::filesystem::path& path, const std::string& text,
                      const std::string& what) {
  auto dir = path.parent_path();
  if (dir != root) archive::make_dir_in_archive(root, dir);
  archive::check_in_archive(root, path, false);  // a link or special file in its place is refused
  std::string tmp = path.string() + fmt::format(".tmp.{}", ::getpid());
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) throw_io("cannot write the " + what, tmp, errno);
  int fd = archive::open_in_archive(root, tmp, O_WRONLY | O_CREAT | O_EXCL).release();
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw_io("cannot write the " + what, tmp, err, Retry::later);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw_io("cannot sync the " + what, tmp, err, Retry::later);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw_io("cannot replace the " + what, path.string(), err);
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

namespace {

// The name a sealed state file is bound to: its path below the archive directory.
std::string state_name(const std::filesystem::path& root, const std::filesystem::path& path) {
  return path.lexically_normal().lexically_relative(root.lexically_normal()).generic_string();
}

}  // namespace

std::shared_ptr<const archive::ArchiveKeys> state_keys(const std::filesystem::path& root) {
  if (!archive::has_key_file(root)) return nullptr;
  return archive::unlock_archive(root, {});
}

std::optional<std::string> read_archive_state(const std::filesystem::path& root, const std::filesystem::path& path,
                                              const std::string& what, const archive::ArchiveKeys* keys) {
  auto text = read_state_file(root, path, what);
  if (!text || !keys) return text;
  if (!text->empty() && (*text)[0] == '{') return text;  // written before state files were sealed
  try {
    return keys->open_state(state_name(root, path), *text);
  } catch (const Error& e) {
    throw Error(ErrorKind::corrupt, "the " + what + " does not open with the archive's key: " + e.message(),
                Retry::never, {.file = path.string()});
  }
}

void write_archive_state(const std::filesystem::path& root, const std::filesystem::path& path, const std::string& text,
                         const std::string& what, const archive::ArchiveKeys* keys) {
  if (!keys) return write_state_file(root, path, text, what);
  write_state_file(root, path, keys->seal_state(state_name(root, path), text), what);
}

std::optional<BatchState> load_state(const std::filesystem::path& path) {
  auto root = path.parent_path().parent_path();
  auto text = read_archive_state(root, path, "batch state", state_keys(root).get());
  if (!text) return std::nullopt;
  try {
    return BatchState::from_json(nlohmann::json::parse(*text));
  } catch (const Error& e) {
    throw Error(ErrorKind::corrupt, "the batch state is damaged: " + e.message(), Retry::never,
                {.file = path.string()});
  } catch (const std::exception& e) {
    throw Error(ErrorKind::corrupt, std::string("the batch state is damaged: ") + e.what(), Retry::never,
                {.file = path.string()});
  }
}

namespace {
void save_state_with(const std::filesystem::path& path, const BatchState& state, const archive::ArchiveKeys* keys) {
  write_archive_state(path.parent_path().parent_path(), path, state.to_json().dump(1) + "\n", "batch state", keys);
}
}  // namespace

void save_state(const std::filesystem::path& path, const BatchState& state) {
  save_state_with(path, state, state_keys(path.parent_path().parent_path()).get());
}

StateStore::StateStore(std::filesystem::path path, BatchState state)
    : path_(std::move(path)), state_(std::move(state)), keys_(state_keys(path_.parent_path().parent_path())) {}

void StateStore::update(const std::string& key, const std::function<void(AccountState&)>& change) {
  std::lock_guard lock(mutex_);
  auto* a = state_.find(key);
  if (!a) throw Error(ErrorKind::internal, "no batch entry " + key);
  change(*a);
  save_state_with(path_, state_, keys_.get());
}

BatchState StateStore::snapshot() const {
  std::lock_guard lock(mutex_);
  return state_;
}

}  // namespace imapstage::batch

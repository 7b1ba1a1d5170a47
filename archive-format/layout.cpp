#include "archive-format/layout.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>

#include <fmt/format.h>

#include "common/error.h"

namespace imapstage::archive {

namespace fs = std::filesystem;

// The writer lock: an flock on DIR/lock, which holds the writer's pid.
std::unique_ptr<WriterLock> WriterLock::acquire(const fs::path& file) {
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw_io("cannot open the lock file", file.string(), errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char buf[32] = {};
    ssize_t n = err == EWOULDBLOCK ? ::pread(fd, buf, sizeof buf - 1, 0) : 0;
    ::close(fd);
    if (err != EWOULDBLOCK) throw_io("cannot lock", file.string(), err);
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    throw Error(ErrorKind::locked,
                "the archive is being written by another process" + (pid.empty() ? "" : " (pid " + pid + ")"),
                Retry::later, {.file = file.string()});
  }
  std::unique_ptr<WriterLock> lock(new WriterLock(fd));
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    throw_io("cannot write the lock file", file.string(), errno);
  return lock;
}

WriterLock::~WriterLock() {
  // Emptied while still locked; a stale pid would be harmless anyway (the flock is what counts).
  if (::ftruncate(fd_, 0) != 0) {
  }
  ::close(fd_);  // releases the flock
}

void sync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_io("cannot open directory", dir.string(), errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) throw_io("cannot sync directory", dir.string(), err);
}

// Writes `content` to `file` durably: temporary file, fsync, rename, fsync of the directory.
void write_file_durably(const fs::path& file, const std::string& content) {
  fs::path tmp = file;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_io("cannot create", tmp.string(), errno);
  ssize_t n = ::write(fd, content.data(), content.size());
  int err = errno;
  if (n != static_cast<ssize_t>(content.size()) || ::fsync(fd) != 0) {
    err = n < 0 ? err : (errno ? errno : EIO);
    ::close(fd);
    throw_io("cannot write", tmp.string(), err);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), file.c_str()) != 0) throw_io("cannot rename", tmp.string(), errno);
  sync_dir(file.parent_path());
}

// The version in DIR/FORMAT; throws Error(format) for anything unrecognised.
uint32_t read_format_file(const fs::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      throw Error(ErrorKind::not_found, "not an imapstage archive (no FORMAT file)", Retry::never,
                  {.file = file.parent_path().string()});
    throw_io("cannot open", file.string(), errno);
  }
  char buf[64];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  std::string text = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  auto bad = [&] {
    return Error(ErrorKind::format, "unrecognised FORMAT file", Retry::never, {.file = file.string()});
  };
  if (text.rfind(kFormatPrefix, 0) != 0 || text.back() != '\n') throw bad();
  std::string digits = text.substr(kFormatPrefix.size(), text.size() - kFormatPrefix.size() - 1);
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) throw bad();
  return static_cast<uint32_t>(std::stoul(digits));
}

fs::path pack_file(const fs::path& dir, uint64_t pack_id) {
  std::string hex = fmt::format("{:016x}", pack_id);
  return dir / "packs" / hex.substr(0, 2) / (hex + ".pack");
}

}  // namespace imapstage::archive

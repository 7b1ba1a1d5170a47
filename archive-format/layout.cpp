#include "archive-format/layout.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"

namespace imapstage::archive {

namespace fs = std::filesystem;

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void Fd::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

namespace {

// `what` names what was found, e.g. "a symbolic link".
[[noreturn]] void refuse(const fs::path& path, const std::string& what) {
  throw Error(ErrorKind::corrupt, "refused " + what + ": an archive holds only regular files and directories",
              Retry::never, {.file = path.string()});
}

[[noreturn]] void open_failed(const fs::path& path, int err) {
  if (err == ELOOP) refuse(path, "a symbolic link");
  if (err == ENOENT) throw Error(ErrorKind::not_found, "no such file", Retry::never, {.file = path.string()});
  throw_io("cannot open", path.string(), err);
}

// The components of `path` below `root`, or nothing when it is not below.
std::vector<fs::path> below(const fs::path& root, const fs::path& path) {
  if (root.empty()) return {};
  fs::path base = root.lexically_normal();
  if (base.has_relative_path() && base.filename().empty()) base = base.parent_path();  // "DIR/" is DIR
  fs::path rel = path.lexically_normal().lexically_relative(base);
  if (rel.empty() || rel == "." || *rel.begin() == "..") return {};
  return {rel.begin(), rel.end()};
}

// Opens a directory entry `name` of `dir` (a directory fd) as a directory, refusing a link.
Fd open_subdir(int dir, const fs::path& name, const fs::path& shown) {
  int fd;
  do fd = ::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == ENOTDIR) {
      struct stat st{};
      if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
        refuse(shown, "a symbolic link");
      refuse(shown, "a file where a directory belongs");
    }
    open_failed(shown, errno);
  }
  return Fd(fd);
}

// The directory holding the last component of `path`, walked from `root`
// without links; `create` makes missing directories (kDirMode).
Fd walk_to_parent(const fs::path& root, const fs::path& path, bool create) {
  auto parts = below(root, path);
  if (parts.empty()) {
    fs::path parent = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    if (create) {
      std::error_code ec;
      fs::create_directories(parent, ec);
      if (ec) throw_io("cannot create the directory", parent.string(), ec.value());
    }
    int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) open_failed(parent, errno);
    return Fd(fd);
  }
  if (create) {
    std::error_code ec;
    if (!fs::exists(root, ec)) {
      if (!root.parent_path().empty()) fs::create_directories(root.parent_path(), ec);
      if (::mkdir(root.c_str(), kDirMode) != 0 && errno != EEXIST) throw_io("cannot create the directory", root.string(), errno);
    }
  }
  int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) open_failed(root, errno);
  Fd cur(fd);
  fs::path shown = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    shown /= parts[i];
    if (create && ::mkdirat(cur.get(), parts[i].c_str(), kDirMode) != 0 && errno != EEXIST)
      throw_io("cannot create the directory", shown.string(), errno);
    cur = open_subdir(cur.get(), parts[i], shown);
  }
  return cur;
}

bool writes(int flags) { return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC); }

}  // namespace

Fd open_in_archive(const fs::path& root, const fs::path& path, int flags) {
  Fd dir = walk_to_parent(root, path, false);
  fs::path name = path.filename();
  bool want_dir = flags & O_DIRECTORY;
  struct stat st{};
  if (::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) refuse(path, "a symbolic link");
    if (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
      refuse(path, want_dir ? "a file where a directory belongs" : "a FIFO, device, socket or directory where a file belongs");
    if (!want_dir && writes(flags) && st.st_nlink > 1) refuse(path, "a file with other hard links (writing it would change them too)");
  } else if (errno != ENOENT) {
    throw_io("cannot inspect", path.string(), errno);
  }
  int fd;
  do fd = ::openat(dir.get(), name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC | (want_dir ? 0 : O_NONBLOCK), kFileMode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == ENXIO) refuse(path, "a FIFO, device, socket or directory where a file belongs");
    open_failed(path, errno);
  }
  Fd out(fd);
  struct stat now{};
  if (::fstat(fd, &now) != 0) throw_io("cannot stat", path.string(), errno);
  if (want_dir ? !S_ISDIR(now.st_mode) : !S_ISREG(now.st_mode)) refuse(path, "a FIFO, device, socket or directory where a file belongs");
  if (!want_dir && writes(flags) && now.st_nlink > 1) refuse(path, "a file with other hard links (writing it would change them too)");
  if (!want_dir) {
    int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0) ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  }
  return out;
}

Fd make_dir_in_archive(const fs::path& root, const fs::path& path) {
  Fd parent = walk_to_parent(root, path, true);
  if (::mkdirat(parent.get(), path.filename().c_str(), kDirMode) != 0 && errno != EEXIST)
    throw_io("cannot create the directory", path.string(), errno);
  return open_subdir(parent.get(), path.filename(), path);
}

bool check_in_archive(const fs::path& root, const fs::path& path, bool directory, bool written) {
  Fd dir;
  try {
    dir = walk_to_parent(root, path, false);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::not_found) return false;
    throw;
  }
  struct stat st{};
  if (::fstatat(dir.get(), path.filename().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return false;
    throw_io("cannot inspect", path.string(), errno);
  }
  if (S_ISLNK(st.st_mode)) refuse(path, "a symbolic link");
  if (directory ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
    refuse(path, directory ? "a file where a directory belongs" : "a FIFO, device, socket or directory where a file belongs");
  if (!directory && written && st.st_nlink > 1) refuse(path, "a file with other hard links (writing it would change them too)");
  return true;
}

// The writer lock: an flock on DIR/lock, which holds the writer's pid.
std::unique_ptr<WriterLock> WriterLock::acquire(const fs::path& file) {
  int fd = open_in_archive(file.parent_path(), file, O_RDWR | O_CREAT).release();
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
  check_in_archive(file.parent_path(), file, false);
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) throw_io("cannot remove", tmp.string(), errno);
  int fd = open_in_archive(tmp.parent_path(), tmp, O_WRONLY | O_CREAT | O_EXCL).release();
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
  Fd fd;
  try {
    fd = open_in_archive(file.parent_path(), file, O_RDONLY);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::not_found)
      throw Error(ErrorKind::not_found, "not an imapstage archive (no FORMAT file)", Retry::never,
                  {.file = file.parent_path().string()});
    throw;
  }
  char buf[64];
  ssize_t n = ::read(fd.get(), buf, sizeof buf);
  std::string text = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  auto bad = [&] {
    return Error(ErrorKind::format, "unrecognised FORMAT file", Retry::never, {.file = file.string()});
  };
  if (text.rfind(kFormatPrefix, 0) != 0 || text.back() != '\n' || n >= static_cast<ssize_t>(sizeof buf)) throw bad();
  std::string digits = text.substr(kFormatPrefix.size(), text.size() - kFormatPrefix.size() - 1);
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) throw bad();
  return static_cast<uint32_t>(std::stoul(digits));
}

fs::path pack_file(const fs::path& dir, uint64_t pack_id) {
  std::string hex = fmt::format("{:016x}", pack_id);
  return dir / "packs" / hex.substr(0, 2) / (hex + ".pack");
}

}  // namespace imapstage::archive

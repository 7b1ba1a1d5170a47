#include "sources/source_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/error.h"
#include "sources/message_text.h"

namespace imapstage::sources {

namespace fs = std::filesystem;

FileStamp stamp_of(const struct stat& st) {
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_size),
          static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

namespace {

[[noreturn]] void fail(const std::string& what, const fs::path& path, int err) {
  if (err == ENOENT)
    throw Error(ErrorKind::not_found, what + ": no such file or directory", Retry::never, {.file = path.string()});
  if (err == ENOTDIR)
    throw Error(ErrorKind::not_found, what + ": not a directory", Retry::never, {.file = path.string()});
  throw Error(ErrorKind::io, fmt::format("{}: {}", what, std::strerror(err)), Retry::never, {.file = path.string()});
}

DirEntry::Type type_of(mode_t mode) {
  if (S_ISREG(mode)) return DirEntry::file;
  if (S_ISDIR(mode)) return DirEntry::directory;
  if (S_ISLNK(mode)) return DirEntry::link;
  return DirEntry::other;
}

}  // namespace

std::string level_name(std::string_view name) {
  size_t i = 0;
  bool valid = true;
  while (i < name.size() && valid) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 0 || i + n > name.size() || (n == 2 && c < 0xc2)) {
      valid = false;
      break;
    }
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(name[i + k]) & 0xc0) != 0x80) valid = false;
    i += n;
  }
  if (valid) return std::string(name);
  std::string out;
  for (unsigned char c : name) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(0xc0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  return out;
}

std::vector<DirEntry> list_directory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot read the directory", dir, errno);
  DIR* d = ::fdopendir(fd);
  if (!d) {
    int err = errno;
    ::close(fd);
    fail("cannot read the directory", dir, err);
  }
  std::vector<DirEntry> out;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    out.push_back({name, type_of(st.st_mode), stamp_of(st)});
  }
  int err = errno;
  ::closedir(d);
  if (err) fail("cannot read the directory", dir, err);
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

ReadOnlyFile ReadOnlyFile::open(const fs::path& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) fail("cannot open the file", path, errno);
  if (S_ISLNK(st.st_mode))
    throw Error(ErrorKind::corrupt, "a symbolic link; not followed", Retry::never, {.file = path.string()});
  if (!S_ISREG(st.st_mode))
    throw Error(ErrorKind::corrupt, "not a regular file; not read", Retry::never, {.file = path.string()});
  int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
  int fd = ::open(path.c_str(), flags | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = ::open(path.c_str(), flags);  // O_NOATIME needs ownership
  if (fd < 0) {
    if (errno == ELOOP)
      throw Error(ErrorKind::corrupt, "a symbolic link; not followed", Retry::never, {.file = path.string()});
    fail("cannot open the file", path, errno);
  }
  ReadOnlyFile f{archive::Fd(fd), {}, path};
  if (::fstat(fd, &st) != 0) fail("cannot read the file", path, errno);
  if (!S_ISREG(st.st_mode))
    throw Error(ErrorKind::corrupt, "not a regular file; not read", Retry::never, {.file = path.string()});
  f.stamp = stamp_of(st);
  return f;
}

void ReadOnlyFile::read_at(uint64_t offset, size_t n, std::string& out) const {
  out.resize(n);
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd.get(), out.data() + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(fmt::format("cannot read at byte {}", offset + got), path, errno);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
}

FileStamp ReadOnlyFile::current() const {
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) fail("cannot read the file", path, errno);
  return stamp_of(st);
}

std::string read_message_file(const fs::path& path, const FileStamp& expected, uint64_t max_size) {
  auto changed = [&] {
    return Error(ErrorKind::io, "the file changed while it was read (or since it was listed); not archived",
                 Retry::later, {.file = path.string()});
  };
  ReadOnlyFile f = ReadOnlyFile::open(path);
  if (f.stamp != expected) throw changed();
  if (f.stamp.size > max_size)
    throw Error(ErrorKind::limit,
                fmt::format("{} bytes is over the maximum message size of {} bytes (--max-message-size); not read",
                            f.stamp.size, max_size),
                Retry::never, {.file = path.string()});
  std::string out;
  out.reserve(f.stamp.size + f.stamp.size / 32 + 64);
  std::string chunk;
  bool prev_cr = false;
  constexpr size_t kChunk = 1 << 20;
  uint64_t offset = 0;
  for (;;) {
    f.read_at(offset, kChunk, chunk);
    if (chunk.empty()) break;
    if (offset == 0 && !looks_like_message(chunk))
      throw Error(ErrorKind::corrupt, "not a mail message (no header field at byte 0); not archived", Retry::never,
                  {.file = path.string()});
    append_crlf(out, chunk, prev_cr);
    offset += chunk.size();
    if (offset > expected.size) throw changed();
  }
  if (offset == 0)
    throw Error(ErrorKind::corrupt, "an empty file is not a mail message; not archived", Retry::never,
                {.file = path.string()});
  if (offset != expected.size || f.current() != expected) throw changed();
  return out;
}

}  // namespace imapstage::sources

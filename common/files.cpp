#include "common/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "common/error.h"

namespace imapstage {

namespace {

int open_private(const std::string& path) {
  int fd;
  do fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_io("cannot write", path, errno);
  return fd;
}

}  // namespace

void write_private_file(const std::string& path, const std::string& text) {
  int fd = open_private(path);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      ::close(fd);
      throw_io("cannot write", path, err);
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) throw_io("cannot write", path, errno);
}

std::FILE* open_private_file(const std::string& path) {
  int fd = open_private(path);
  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) {
    int err = errno;
    ::close(fd);
    throw_io("cannot write", path, err);
  }
  return f;
}

}  // namespace imapstage

#include "serve/vault.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "batch/state.h"
#include "common/error.h"

namespace imapstage::serve {

namespace {

std::string aad(uint64_t id, const std::string& user, Slot slot) {
  return fmt::format("imapstage job {} {}{}", id, user, slot == Slot::target ? " target" : "");
}

void write_all(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw_io("cannot write", path, n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
}

}  // namespace

SecretString load_key(const std::filesystem::path& path, bool create) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT && create) {
    std::string key = random_bytes(kAeadKeySize);
    int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
      wipe(key);
      throw_io("cannot create the key file", path.string(), errno);
    }
    try {
      write_all(out, key, path.string());
    } catch (...) {
      wipe(key);
      ::close(out);
      throw;
    }
    ::fsync(out);
    ::close(out);
    return SecretString(std::move(key));
  }
  if (fd < 0) {
    if (errno == ENOENT)
      throw Error(ErrorKind::usage, "the key file does not exist (serve makes it when started)", Retry::never,
                  {.file = path.string()});
    throw_io("cannot open the key file", path.string(), errno);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorKind::usage, "the key file is not a regular file", Retry::never, {.file = path.string()});
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    ::close(fd);
    throw Error(ErrorKind::usage,
                fmt::format("the key file must belong to the daemon's user and be readable by it alone (it is "
                            "owned by uid {}, mode {:04o}): chown it and chmod 600",
                            st.st_uid, st.st_mode & 07777),
                Retry::never, {.file = path.string()});
  }
  std::string key(kAeadKeySize + 1, '\0');
  ssize_t n;
  do n = ::read(fd, key.data(), key.size());
  while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n != static_cast<ssize_t>(kAeadKeySize)) {
    wipe(key);
    throw Error(ErrorKind::usage, "the key file must hold exactly 32 bytes (head -c 32 /dev/urandom)", Retry::never,
                {.file = path.string()});
  }
  key.resize(kAeadKeySize);
  return SecretString(std::move(key));
}

Vault::Vault(std::filesystem::path state_dir, SecretString key) : state_dir_(std::move(state_dir)), key_(std::move(key)) {}

std::filesystem::path Vault::path(uint64_t id, Slot slot) const {
  return state_dir_ / "secrets" / (std::to_string(id) + (slot == Slot::target ? ".target" : ""));
}

void Vault::put(uint64_t id, const std::string& user, const std::string& secret, Slot slot) {
  std::string sealed = aead_seal(key_.get(), aad(id, user, slot), secret);
  batch::write_state_file(state_dir_, path(id, slot), sealed, "sealed credential");
}

SecretString Vault::get(uint64_t id, const std::string& user, Slot slot) const {
  auto sealed = batch::read_state_file(state_dir_, path(id, slot), "sealed credential");
  if (!sealed)
    throw Error(ErrorKind::not_found, fmt::format("job {} has no stored credential", id), Retry::never,
                {.account = user});
  try {
    return SecretString(aead_open(key_.get(), aad(id, user, slot), *sealed));
  } catch (const Error& e) {
    throw Error(ErrorKind::corrupt, fmt::format("the stored credential of job {}: {}", id, e.message()), Retry::never,
                {.account = user, .file = path(id, slot).string()});
  }
}

void Vault::erase(uint64_t id) {
  erase_file(path(id, Slot::source));
  erase_file(path(id, Slot::target));
}

void Vault::erase_file(const std::filesystem::path& p) {
  int fd = ::open(p.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return;
    throw_io("cannot wipe the stored credential", p.string(), errno);
  }
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    std::string zeros(static_cast<size_t>(st.st_size), '\0');
    try {
      write_all(fd, zeros, p.string());
    } catch (...) {
    }
    ::fsync(fd);
  }
  ::close(fd);
  if (::unlink(p.c_str()) != 0 && errno != ENOENT) throw_io("cannot remove the stored credential", p.string(), errno);
  int dfd = ::open(p.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace imapstage::serve

// The archive directory around the index and the packs: DIR/FORMAT, DIR/lock,
// DIR/packs/<xx>/<id>.pack (FORMAT.md, "Directory layout").
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace imapstage::archive {

inline constexpr std::string_view kFormatPrefix = "imapstage-archive ";

// Modes of everything imapstage creates: owner-only, whatever the umask.
inline constexpr unsigned kFileMode = 0600;
inline constexpr unsigned kDirMode = 0700;

// Owns a file descriptor, closed by the destructor. Move-only.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd& operator=(Fd&& other) noexcept;
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() noexcept;
  // Gives up ownership.
  int release() noexcept {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// Opens `path` (open(2) `flags`; with O_CREAT the file is made with
// kFileMode) without following a symbolic link in any component below
// `root`: the archive directory, which itself may be a link (the user's
// choice). With `root` empty or not above `path`, only the last component is
// checked. Refuses anything but a regular file (a directory with O_DIRECTORY)
// before opening it, so a FIFO or device is never opened, and, when writing,
// a file with more than one hard link. Throws Error(corrupt) naming the path
// for a link or a special file, Error(not_found) when it does not exist (and
// no O_CREAT), Error(io) otherwise.
Fd open_in_archive(const std::filesystem::path& root, const std::filesystem::path& path, int flags);

// Creates the directory `path` and any missing parents below `root` with
// kDirMode, refusing symbolic links as open_in_archive does (a `root`
// that does not exist is created too, parents with default modes). Returns the
// directory opened. Throws Error(corrupt) for a link or a non-directory,
// Error(io) otherwise.
Fd make_dir_in_archive(const std::filesystem::path& root, const std::filesystem::path& path);

// Error(corrupt) unless `path` below `root` is absent, or a regular file (a
// directory when `directory`) reached without symbolic links, with one link
// when it is to be `written` (hard-linked copies of an archive stay readable).
// Returns whether it exists.
bool check_in_archive(const std::filesystem::path& root, const std::filesystem::path& path, bool directory,
                      bool written = false);

// The exclusive writer lock: an flock on DIR/lock, which then holds the
// writer's pid. Released (and the file emptied) by the destructor.
class WriterLock {
 public:
  // Throws Error(locked) naming the holder's pid when another open file
  // description (another process, or another open in this one) holds it.
  static std::unique_ptr<WriterLock> acquire(const std::filesystem::path& file);
  ~WriterLock();
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  explicit WriterLock(int fd) : fd_(fd) {}
  int fd_;
};

// fsyncs a directory. Throws Error(io).
void sync_dir(const std::filesystem::path& dir);

// Writes `content` to `file` durably: temporary file, fsync, rename, fsync of
// the directory. Neither name may be a symbolic link or a special file (the
// temporary file is made afresh, kFileMode).
void write_file_durably(const std::filesystem::path& file, const std::string& content);

// The version in DIR/FORMAT. Throws Error(not_found) if there is none,
// Error(format) for anything but "imapstage-archive <decimal>\n".
uint32_t read_format_file(const std::filesystem::path& file);

// DIR/packs/<xx>/<16 hex digits>.pack
std::filesystem::path pack_file(const std::filesystem::path& dir, uint64_t pack_id);

}  // namespace imapstage::archive

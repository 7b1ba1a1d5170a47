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

// Writes `content` to `file` durably: temporary file, fsync, rename, fsync of the directory.
void write_file_durably(const std::filesystem::path& file, const std::string& content);

// The version in DIR/FORMAT. Throws Error(not_found) if there is none,
// Error(format) for anything but "imapstage-archive <decimal>\n".
uint32_t read_format_file(const std::filesystem::path& file);

// DIR/packs/<xx>/<16 hex digits>.pack
std::filesystem::path pack_file(const std::filesystem::path& dir, uint64_t pack_id);

}  // namespace imapstage::archive

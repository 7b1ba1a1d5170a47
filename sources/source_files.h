// Reading mail files read-only and without following symbolic links, for
// the Maildir, mbox and EML sources. Nothing here writes, renames or changes
// the access time of a source file (O_NOATIME where the kernel allows it).
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "archive-format/layout.h"
#include "sources/source.h"

namespace imapstage::sources {

// What identifies a file's state: a change to any of these between listing
// and reading means the file changed.
struct FileStamp {
  uint64_t device = 0;
  uint64_t inode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};
FileStamp stamp_of(const struct stat& st);

// One entry of a directory, as lstat sees it (a link is never followed).
struct DirEntry {
  enum Type { file, directory, link, other };
  std::string name;
  Type type = other;
  FileStamp stamp;
};

// A folder level made from a file or directory name: the name itself when
// it is valid UTF-8, else the name read as Latin-1 (each byte one character),
// so that every level is valid UTF-8 and two different names stay different.
std::string level_name(std::string_view file_name);

// The entries of `dir` except "." and "..", sorted by name. Throws
// Error(not_found) or Error(io) naming the directory.
std::vector<DirEntry> list_directory(const std::filesystem::path& dir);

// A regular file opened read-only. Throws Error(not_found) when it is gone,
// Error(corrupt) naming it when it is a symbolic link or not a regular file
// (a FIFO or device is refused before it is opened, so nothing blocks),
// Error(io) otherwise.
struct ReadOnlyFile {
  archive::Fd fd;
  FileStamp stamp;
  std::filesystem::path path;

  static ReadOnlyFile open(const std::filesystem::path& path);
  // Reads up to `n` bytes at `offset` into `out` (resized to what was read:
  // fewer only at the end of the file). Throws Error(io) naming the file.
  void read_at(uint64_t offset, size_t n, std::string& out) const;
  // The file's stamp now (fstat). Throws Error(io).
  FileStamp current() const;
};

// The whole file, converted to CRLF line ends, when it is at most `max_size`
// bytes; checked against `expected` (the listing's stamp) before and after
// reading, so a file that changed meanwhile is reported (Error(io), Retry::later,
// "changed while it was read") rather than archived half-written. Throws as
// ReadOnlyFile::open, and Error(limit) for a file over max_size.
std::string read_message_file(const std::filesystem::path& path, const FileStamp& expected, uint64_t max_size);

}  // namespace imapstage::sources

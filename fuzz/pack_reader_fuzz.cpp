// Pack files (archive-format/pack.h): a PackReader over arbitrary file bytes
// returns records or throws Error(corrupt/io), never crashes, loops or
// throws anything else; decode_payload checks whatever the header claims;
// group member tables stay inside their payload or are refused.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "archive-format/pack.h"
#include "common/error.h"

using namespace imapstage;
using namespace imapstage::archive;

namespace {

// One file reused for every input (a regular file: readers refuse links and special files).
const std::string& scratch_path() {
  static const std::string path = [] {
    std::string dir = "/tmp/pack_reader_fuzz.XXXXXX";
    if (!mkdtemp(dir.data())) std::abort();
    return dir + "/pack";
  }();
  // Registered after `path` is built, so it runs before `path` is destroyed.
  static const bool cleaned_at_exit = std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path(scratch_path()).parent_path(), ec);
  }) == 0;
  (void)cleaned_at_exit;
  return path;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  static const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) std::abort();
  if (ftruncate(fd, 0) != 0) std::abort();
  size_t off = 0;
  while (off < size) {
    ssize_t w = pwrite(fd, data + off, size - off, static_cast<off_t>(off));
    if (w <= 0) std::abort();
    off += static_cast<size_t>(w);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = scratch_path();
  write_file(path, data, size);
  try {
    PackReader reader(path);
    uint64_t last_offset = 0;
    for (int n = 0; n < 10000; ++n) {
      auto info = reader.next();
      if (!info) break;
      if (info->offset < kPackHeaderSize || info->offset + info->record_size > size) std::abort();
      if (n > 0 && info->offset <= last_offset) std::abort();
      last_offset = info->offset;
      std::string stored = reader.read_payload();
      if (stored.size() != info->stored_size) std::abort();
      try {
        std::string raw = decode_payload(*info, stored, path);
        if (raw.size() != info->raw_size || sha256(raw) != info->hash) std::abort();
      } catch (const Error& e) {
        if (e.kind() != ErrorKind::corrupt) std::abort();
      }
      if (info->kind == RecordKind::group) {
        // The member table read alone and from the whole payload: in bounds, or refused.
        try {
          auto members = decode_group_table(*info, stored, path);
          for (auto& m : members)
            if (m.offset > info->raw_size || m.size > info->raw_size - m.offset) std::abort();
        } catch (const Error& e) {
          if (e.kind() != ErrorKind::corrupt) std::abort();
        }
        try {
          std::string raw = read_group(path, info->offset);
          for (auto& m : parse_group(raw, path, info->offset))
            if (m.offset > raw.size() || m.size > raw.size() - m.offset) std::abort();
        } catch (const Error& e) {
          if (e.kind() != ErrorKind::corrupt) std::abort();
        }
        continue;
      }
      try {
        std::string again = read_record(path, info->offset, info->kind, info->hash);
        if (again.size() != info->raw_size) std::abort();
      } catch (const Error& e) {
        if (e.kind() != ErrorKind::corrupt) std::abort();
      }
    }
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::corrupt && e.kind() != ErrorKind::io) std::abort();
  }
  // The same bytes as a bare payload with a header that claims anything.
  if (size >= 17) {
    PackRecordInfo info;
    info.kind = RecordKind::object;
    info.raw_size = data[0] | (uint64_t{data[1]} << 8);
    info.stored_size = size - 16;
    std::copy(data, data + 16, info.hash.begin());
    std::copy(data, data + 16, info.hash.begin() + 16);
    try {
      decode_payload(info, std::string_view(reinterpret_cast<const char*>(data) + 16, size - 16), "fuzz");
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::corrupt) std::abort();
    }
  }
  return 0;
}

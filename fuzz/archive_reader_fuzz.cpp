// Whole-archive reading (archive-format/archive.h): an archive whose index
// (data.mdb) and pack file are arbitrary bytes opens and reads as records or
// Error, never a crash, a hang, an unbounded allocation or another exception.
//
// Input: u16 page count, then per 4 KiB page of data.mdb "u16 head length,
// head bytes, u16 tail length, tail bytes" (the middle is zeros: LMDB keeps
// page headers at the front and nodes at the back), then the pack file.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>

#include "archive-format/archive.h"
#include "archive-format/layout.h"
#include "common/error.h"
#include "fuzz/fuzz_input.h"

using namespace imapstage;
using namespace imapstage::archive;

namespace {

namespace fs = std::filesystem;
constexpr size_t kPage = 4096;

const fs::path& scratch() {
  static const fs::path dir = [] {
    std::string t = (fs::temp_directory_path() / "archive_reader_fuzz.XXXXXX").string();
    if (!::mkdtemp(t.data())) std::abort();
    return fs::path(t);
  }();
  // Registered after `dir` is built, so it runs before `dir` is destroyed.
  static const bool cleaned_at_exit = std::atexit([] {
    std::error_code ec;
    fs::remove_all(scratch(), ec);
  }) == 0;
  (void)cleaned_at_exit;
  return dir;
}

void write(const fs::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
}

uint16_t u16(fuzzing::Input& in) {
  uint16_t lo = in.byte();
  return static_cast<uint16_t>(lo | (in.byte() << 8));
}

void read_everything(const Archive& a) {
  size_t budget = 2000;
  for (auto& account : a.accounts()) {
    a.find_account(account.name);
    for (auto& folder : a.folders(account.id)) {
      a.find_folder(account.id, folder.name_raw);
      a.for_each_message(account.id, folder.id, std::nullopt, [&](const MessageRecord& m) {
        a.message(m.key);
        return --budget > 0;
      });
    }
  }
  size_t objects = 0;
  a.for_each_object([&](const Hash& hash, const ObjectLocation&) {
    try {
      a.check_object(hash);
      std::string raw = a.read_object(hash);
      if (sha256(raw) != hash) std::abort();  // returned bytes are always the checked ones
    } catch (const Error&) {
    }
    return ++objects < 64;
  });
  a.packs();
  a.runs();
  for (uint32_t t = 1; t <= 3; ++t) a.for_each_append(t, [&](const AppendRecord&) { return --budget > 0; });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzzing::Input in(data, size);
  const fs::path& dir = scratch();
  std::error_code ec;
  fs::remove_all(dir / "index", ec);
  fs::remove_all(dir / "packs", ec);
  fs::create_directories(dir / "index");
  fs::create_directories(dir / "packs");
  write(dir / "FORMAT", "imapstage-archive 1\n");

  size_t pages = std::min<size_t>(u16(in), 256);
  std::string mdb(pages * kPage, '\0');
  for (size_t p = 0; p < pages; ++p) {
    std::string_view head = in.take(std::min<size_t>(u16(in), kPage));
    std::string_view tail = in.take(std::min<size_t>(u16(in), kPage - head.size()));
    std::copy(head.begin(), head.end(), mdb.begin() + p * kPage);
    std::copy(tail.begin(), tail.end(), mdb.begin() + (p + 1) * kPage - tail.size());
  }
  write(dir / "index" / "data.mdb", mdb);
  std::string_view pack = in.rest();
  uint64_t id = 0;
  for (size_t i = 0; i < 8 && 16 + i < pack.size(); ++i) id |= uint64_t(uint8_t(pack[16 + i])) << (8 * i);
  fs::create_directories(pack_file(dir, id).parent_path());
  write(pack_file(dir, id), pack);

  try {
    auto a = Archive::open(dir, Archive::Mode::read);
    read_everything(*a);
  } catch (const Error&) {
  } catch (const std::bad_alloc&) {
    std::abort();  // every size from the archive is bounded before it is allocated
  }
  return 0;
}

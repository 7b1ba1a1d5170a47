#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <thread>
#include <random>

#include "archive-format/codec.h"
#include "archive-format/pack.h"
#include "common/error.h"
#include "tests/support/test_server.h"

namespace imapstage::archive {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Pack, Crc32cMatchesTheStandardCheckValue) { EXPECT_EQ(crc32c("123456789"), 0xE3069283u); }

TEST(Pack, WriteThenScanEveryRecord) {
  TempDir dir;
  fs::path file = dir.path() + "/packs/ab/abcdef0123456789.pack";
  Compressor c(3);
  std::vector<std::string> raws = {"", "hello", std::string(100000, 'a'), "journal bytes"};
  std::vector<PackRecordInfo> written;
  {
    auto w = PackWriter::create(file, 0xabcdef0123456789ull);
    EXPECT_EQ(w.size(), kPackHeaderSize);
    for (size_t i = 0; i < raws.size(); ++i)
      written.push_back(w.append(i == 3 ? RecordKind::journal : RecordKind::object, sha256(raws[i]), raws[i].size(),
                                 c.compress(raws[i])));
    w.sync();
  }
  PackReader r(file);
  EXPECT_EQ(r.pack_id(), 0xabcdef0123456789ull);
  for (size_t i = 0; i < raws.size(); ++i) {
    auto info = r.next();
    ASSERT_TRUE(info);
    EXPECT_EQ(info->kind, written[i].kind);
    EXPECT_EQ(info->offset, written[i].offset);
    EXPECT_EQ(info->record_size, written[i].record_size);
    EXPECT_EQ(info->raw_size, raws[i].size());
    EXPECT_EQ(decode_payload(*info, r.read_payload(), file), raws[i]);
  }
  EXPECT_FALSE(r.next());
  EXPECT_EQ(read_record(file, written[2].offset, sha256(raws[2])), raws[2]);
  EXPECT_EQ(read_record(file, written[3].offset, RecordKind::journal, sha256(raws[3])), raws[3]);
  EXPECT_THROW(read_record(file, written[3].offset, sha256(raws[3])), Error);  // not an object
  EXPECT_THROW(read_record(file, written[1].offset, sha256(raws[2])), Error);  // another object
  EXPECT_THROW(read_record(file, written[1].offset + 1, sha256(raws[1])), Error);
  EXPECT_THROW(PackWriter::create(file, 1), Error);  // never overwrites, nor removes
  PackReader again(file);
  EXPECT_EQ(again.pack_id(), 0xabcdef0123456789ull);
  EXPECT_EQ(again.file_size(), written.back().offset + written.back().record_size);
}

// A group payload parses back into the members that went in, whether its
// table fits the room kept before the members (3 members) or not (600), and
// a builder reused after finish_in_place() starts a fresh group.
TEST(Pack, GroupPayloadsHoldWhatWasAddedAndTheBuilderIsReusable) {
  GroupBuilder g;
  for (size_t count : {3u, 600u, 1u, 40u}) {
    std::vector<std::string> bodies;
    for (size_t i = 0; i < count; ++i) bodies.push_back(fmt::format("member {} of {}: {}", i, count, std::string(i % 7, 'x')));
    for (auto& b : bodies) g.add(sha256(b), b);
    uint64_t expected = g.raw_size();
    auto table = g.table();
    std::string copy;
    std::string_view payload;
    if (count == 40) {
      copy = g.finish();
      payload = copy;
    } else {
      payload = g.finish_in_place();
    }
    ASSERT_EQ(payload.size(), expected) << count;
    auto members = parse_group(payload, "group", 0);
    ASSERT_EQ(members.size(), count);
    for (size_t i = 0; i < count; ++i) {
      EXPECT_EQ(members[i].hash, sha256(bodies[i]));
      EXPECT_EQ(members[i].offset, table[i].offset);
      EXPECT_EQ(payload.substr(members[i].offset, members[i].size), bodies[i]);
    }
    EXPECT_EQ(g.members(), 0u);
  }
}

// Another process listing the packs while packs are being created (a
// verify beside an export) never finds a pack file without its header.
TEST(Pack, AConcurrentReaderNeverSeesAPackWithoutItsHeader) {
  TempDir dir;
  fs::path packs = fs::path(dir.path()) / "packs" / "ab";
  fs::create_directories(packs);
  std::atomic<bool> done{false};
  std::atomic<int> looked{0}, headerless{0};
  std::thread reader([&] {
    while (!done) {
      DIR* d = ::opendir(packs.c_str());
      if (!d) continue;
      while (auto* e = ::readdir(d)) {
        int fd = ::openat(::dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW);
        if (fd < 0) continue;
        struct stat st{};
        if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
          ++looked;
          if (st.st_size < static_cast<off_t>(kPackHeaderSize)) ++headerless;
        }
        ::close(fd);
      }
      ::closedir(d);
    }
  });
  for (uint64_t i = 1; i <= 400; ++i) {
    fs::path file = packs / fmt::format("ab{:014x}.pack", i);
    { auto w = PackWriter::create(file, 0xab00000000000000ull | i); }
    fs::remove(file);
  }
  done = true;
  reader.join();
  EXPECT_GT(looked.load(), 0);
  EXPECT_EQ(headerless.load(), 0) << "of " << looked.load() << " pack files seen";
}

// The file is named only once its header is written (a writer killed while
// creating a pack leaves no headerless pack file), and nothing else is left.
TEST(Pack, CreationLeavesOnlyTheNamedPackWithItsHeader) {
  TempDir dir;
  fs::path file = dir.path() + "/packs/5e/5e00000000000001.pack";
  {
    auto w = PackWriter::create(file, 0x5e00000000000001ull, dir.path());
    EXPECT_EQ(fs::file_size(file), kPackHeaderSize);
  }
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(file.parent_path())) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"5e00000000000001.pack"});
  struct stat st{};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(PackReader(file).pack_id(), 0x5e00000000000001ull);
}

TEST(Pack, StreamedRecordsEqualWholeOnesAndAFailedOneLeavesNoTrace) {
  TempDir dir;
  fs::path file = dir.path() + "/packs/01/0123456789abcdef.pack";
  Compressor c(3);
  std::string big;
  for (int i = 0; big.size() < (5u << 20); ++i) big += "line " + std::to_string(i * 7919 % 100003) + " of a large message\r\n";
  std::vector<std::string> raws = {"", "small", big};
  std::vector<PackRecordInfo> written;
  auto w = PackWriter::create(file, 0x0123456789abcdefull);
  for (auto& raw : raws) {
    size_t pieces = 0;
    written.push_back(w.append_streamed(RecordKind::object, sha256(raw), raw.size(), [&](const auto& out) {
      c.compress_to(raw, [&](std::string_view piece) {
        EXPECT_LE(piece.size(), 256u << 10);
        ++pieces;
        out(piece);
      });
    }));
    EXPECT_GE(pieces, 1u);
    if (raw.size() == big.size()) {
      EXPECT_GT(pieces, 1u);  // never one buffer for the whole frame
    }
  }
  // A producer that fails half way: the pack is cut back, the next record follows the last good one.
  uint64_t before = w.size();
  EXPECT_THROW(w.append_streamed(RecordKind::object, sha256(big), big.size(),
                                 [&](const auto& out) {
                                   out("partial");
                                   throw Error(ErrorKind::io, "disk full", Retry::later);
                                 }),
               Error);
  EXPECT_EQ(w.size(), before);
  w.sync();  // small records wait in the write buffer until then
  EXPECT_EQ(fs::file_size(file), before);
  written.push_back(w.append(RecordKind::object, sha256("after"), 5, c.compress("after")));
  raws.push_back("after");
  w.sync();

  PackReader r(file);
  for (size_t i = 0; i < raws.size(); ++i) {
    auto info = r.next();
    ASSERT_TRUE(info);
    EXPECT_EQ(info->offset, written[i].offset);
    EXPECT_EQ(info->stored_size, written[i].stored_size);
    EXPECT_EQ(decode_payload(*info, r.read_payload(), file), raws[i]);
    EXPECT_EQ(read_record(file, written[i].offset, sha256(raws[i])), raws[i]);
  }
  EXPECT_FALSE(r.next());
}

TEST(Pack, SmallRecordsAreWrittenTogetherAndAllReachTheFileAtSync) {
  TempDir dir;
  fs::path file = dir.path() + "/b.pack";
  Compressor c(1);
  auto w = PackWriter::create(file, 9);
  std::vector<std::string> raws;
  std::vector<PackRecordInfo> written;
  auto add = [&](std::string raw) {
    written.push_back(w.append(RecordKind::object, sha256(raw), raw.size(), c.compress(raw)));
    raws.push_back(std::move(raw));
  };
  for (int i = 0; i < 20; ++i) add("message " + std::to_string(i));
  EXPECT_EQ(fs::file_size(file), kPackHeaderSize);  // still buffered
  // A record larger than the buffer (incompressible) between small ones.
  std::string noise;
  uint64_t x = 88172645463325252ull;
  while (noise.size() < (3u << 20)) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    noise.append(reinterpret_cast<const char*>(&x), 8);
  }
  add(noise);
  EXPECT_GE(fs::file_size(file), written.back().offset + written.back().record_size);
  add("after the large one");
  // Cutting back inside the buffer drops only buffered bytes.
  uint64_t keep = w.size();
  add("dropped");
  w.truncate(keep);
  raws.pop_back();
  written.pop_back();
  add("last");
  w.sync();
  EXPECT_EQ(fs::file_size(file), w.size());
  PackReader r(file);
  for (size_t i = 0; i < raws.size(); ++i) {
    auto info = r.next();
    ASSERT_TRUE(info) << i;
    EXPECT_EQ(info->offset, written[i].offset);
    EXPECT_EQ(decode_payload(*info, r.read_payload(), file), raws[i]);
  }
  EXPECT_FALSE(r.next());
}

TEST(Pack, TornTailIsRecognised) {
  TempDir dir;
  fs::path file = dir.path() + "/p.pack";
  Compressor c(1);
  std::string raw(5000, 'q');
  uint64_t end = 0;
  {
    auto w = PackWriter::create(file, 7);
    w.append(RecordKind::object, sha256(raw), raw.size(), c.compress(raw));
    end = w.size();
    w.append(RecordKind::object, sha256("x"), 1, c.compress("x"));
    w.sync();
  }
  std::string whole = read_file(file);
  for (uint64_t cut : {end + 10, end + kRecordHeaderSize, static_cast<uint64_t>(whole.size() - 1)}) {
    std::ofstream(file, std::ios::binary | std::ios::trunc) << whole.substr(0, cut);
    PackReader r(file);
    ASSERT_TRUE(r.next());
    try {
      r.next();
      FAIL() << "a tail cut at " << cut << " went unnoticed";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::corrupt);
      EXPECT_EQ(e.where().file, file.string());
      EXPECT_NE(e.message().find(std::to_string(end)), std::string::npos) << e.what();
    }
  }
  // Reopening for writing cuts the tail away.
  std::ofstream(file, std::ios::binary | std::ios::trunc) << whole.substr(0, end + 10);
  PackWriter::open(file, end);
  EXPECT_EQ(fs::file_size(file), end);
  EXPECT_THROW(PackWriter::open(file, end + 1), Error);  // shorter than committed
}

TEST(Pack, DamagedHeadersAreRejected) {
  TempDir dir;
  fs::path file = dir.path() + "/p.pack";
  Compressor c(1);
  {
    auto w = PackWriter::create(file, 9);
    w.append(RecordKind::object, sha256("abc"), 3, c.compress("abc"));
  }
  std::string whole = read_file(file);
  for (size_t at = 0; at < whole.size(); ++at) {
    std::string bad = whole;
    bad[at] ^= 0x10;
    std::ofstream(file, std::ios::binary | std::ios::trunc) << bad;
    try {
      PackReader r(file);
      auto info = r.next();
      ASSERT_TRUE(info);
      // Only a bit zstd ignores (its frame header's unused bit) may pass, and then the content is intact.
      EXPECT_EQ(decode_payload(*info, r.read_payload(), file), "abc") << "a flipped bit at " << at << " went unnoticed";
    } catch (const Error& e) {
      EXPECT_TRUE(e.kind() == ErrorKind::corrupt || e.kind() == ErrorKind::format) << e.what();
    }
  }
  std::ofstream(file, std::ios::binary | std::ios::trunc) << "not a pack at all, certainly not";
  EXPECT_THROW(PackReader{file}, Error);
}

TEST(Codec, ValuesRoundTrip) {
  MessageRecord m;
  m.key = {1, 2, 3, 4};
  m.hash = sha256("x");
  m.flags = kSeen | kDeleted;
  m.keywords = {"a", "", "$b"};
  m.internaldate = -1;
  m.internaldate_tz = 330;
  m.size = 1ull << 33;
  m.modseq = 5;
  m.state = MessageState::expunged;
  auto back = codec::decode_message(codec::message_key(m.key), codec::encode_message(m));
  EXPECT_EQ(back.key, m.key);
  EXPECT_EQ(back.keywords, m.keywords);
  EXPECT_EQ(back.size, m.size);
  EXPECT_EQ(back.state, m.state);
  EXPECT_EQ(codec::decode_u64_key(codec::u64_key(0x0102030405060708ull)), 0x0102030405060708ull);
  EXPECT_EQ(codec::u32_key(0x01020304), std::string("\x01\x02\x03\x04", 4));
  std::string long_name(1000, 'n');
  EXPECT_LE(codec::folder_name_key(1, long_name).size(), 511u);
  EXPECT_NE(codec::name_key(long_name), codec::name_key(long_name + "x"));
}

// Arbitrary bytes either decode or throw Error(corrupt); nothing else (run under the sanitizers too).
TEST(Codec, MalformedInputIsRejectedAsCorrupt) {
  std::mt19937_64 rng(1);
  MessageRecord m;
  m.keywords = {"$a", "$b"};
  FolderRecord f;
  f.attributes = {"\\X"};
  codec::Journal j;
  j.sequence = 3;
  j.ops.push_back({codec::OpKind::put_message, codec::message_key(m.key), codec::encode_message(m)});
  j.ops.push_back({codec::OpKind::erase_append, codec::append_key({}), ""});
  std::vector<std::string> seeds = {codec::encode_message(m), codec::encode_folder(f), codec::encode_journal(j),
                                    codec::encode_account({}), codec::encode_append({}), codec::encode_run({}),
                                    codec::encode_pack({}), codec::encode_object({})};
  EXPECT_EQ(codec::decode_journal(seeds[2]).ops.size(), 2u);
  auto try_all = [](const std::string& v) {
    std::string k16(16, '\0'), k8(8, '\0'), k4(4, '\0'), k20(20, '\0');
    auto attempt = [](auto&& fn) {
      try {
        fn();
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
      }
    };
    attempt([&] { codec::decode_message(k16, v); });
    attempt([&] { codec::decode_folder(k8, v); });
    attempt([&] { codec::decode_account(k4, v); });
    attempt([&] { codec::decode_append(k20, v); });
    attempt([&] { codec::decode_run(k8, v); });
    attempt([&] { codec::decode_pack(k8, v); });
    attempt([&] { codec::decode_object(v); });
    attempt([&] { codec::decode_target(v); });
    attempt([&] { codec::decode_journal(v); });
  };
  for (auto& s : seeds) {
    for (size_t n = 0; n < s.size(); ++n) try_all(s.substr(0, n));  // every truncation
    try_all(s + "x");                                                 // trailing bytes
    for (int i = 0; i < 300; ++i) {
      std::string v = s;
      v[rng() % v.size()] = static_cast<char>(rng());
      if (rng() % 2) v[rng() % v.size()] = static_cast<char>(rng());
      try_all(v);
    }
  }
  std::string huge_count = std::string("\x01", 1) + std::string(32, '\0') + std::string("\0\0\0\0\xff\xff\xff\x7f", 8);
  try_all(huge_count);
  EXPECT_THROW(codec::decode_message(std::string(15, '\0'), seeds[0]), Error);  // short key
}

}  // namespace
}  // namespace imapstage::archive

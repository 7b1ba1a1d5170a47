// `imapstage extract` (the real binary, run_imapstage) on the sample archive:
// Maildir, mboxrd and EML read back by Python's mailbox and csv modules,
// byte for byte; hostile names stay inside --out; re-runs add only what is
// missing; filters select folders and dates.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "archive-format/archive.h"
#include "filesystem/extract.h"
#include "filesystem/names.h"
#include "tests/filesystem/python_readers.h"
#include "tests/filesystem/sample_archive.h"
#include "tests/support/mount_helpers.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Relative paths of every file below `root`, each checked to resolve inside it.
std::set<std::string> tree(const fs::path& root) {
  std::set<std::string> out;
  std::string prefix = fs::canonical(root).string() + "/";
  for (auto& e : fs::recursive_directory_iterator(root)) {
    EXPECT_TRUE(fs::canonical(e.path()).string().starts_with(prefix)) << e.path();
    EXPECT_FALSE(e.is_symlink()) << e.path();
    for (auto& part : e.path().lexically_relative(root)) EXPECT_LE(part.string().size(), 255u);
    if (e.is_regular_file()) out.insert(e.path().lexically_relative(root).string());
  }
  return out;
}

nlohmann::json summary_of(const testing::ProcessResult& r) {
  std::string out = r.out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  auto last = nlohmann::json::parse(out.substr(out.rfind('\n') + 1));
  EXPECT_EQ(last["event"], "summary");
  return last;
}

testing::ProcessResult extract(const std::string& archive, const std::string& to, const std::string& out,
                               std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"extract", "--archive", archive, "--to", to, "--out", out, "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  return testing::run_imapstage(args);
}

TEST(ExtractTest, MaildirIsTheMountsTreeAndPythonReadsEveryMessage) {
  TempDir dir;
  auto sample = testing::make_sample_archive(dir.path() + "/archive");
  auto r = extract(dir.path() + "/archive", "maildir", dir.path() + "/out");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto s = summary_of(r);
  EXPECT_EQ(s["written"], sample.current_messages);
  EXPECT_EQ(s["failed"].size(), 0u);

  // The same names as the mount shows.
  auto written = tree(dir.path() + "/out");
  {
    testing::Mount mount(dir.path() + "/archive", dir.path() + "/mnt");
    ASSERT_TRUE(mount.ok()) << mount.result().err;
    EXPECT_EQ(written, tree(dir.path() + "/mnt"));
  }

  auto maildirs = testing::run_python(testing::kReadMaildirs, {dir.path() + "/out"});
  size_t read = 0;
  for (auto& [path, messages] : maildirs.items()) {
    for (auto& m : messages) {
      auto it = sample.by_hash.find(m["sha256"]);
      ASSERT_NE(it, sample.by_hash.end()) << path;
      EXPECT_EQ(m["date"].get<int64_t>(), it->second.internaldate);
      EXPECT_EQ(m["size"].get<uint64_t>(), it->second.size);
      EXPECT_EQ(m["subdir"], "cur");
      std::vector<std::string> keywords = it->second.keywords;
      std::sort(keywords.begin(), keywords.end());
      EXPECT_EQ(m["keywords"].get<std::vector<std::string>>(), keywords) << path;
      ++read;
    }
  }
  EXPECT_EQ(read, sample.current_messages);
  auto inbox = maildirs[dir.path() + "/out/" + filesystem::escape_level(testing::kSampleAccount) + "/INBOX"];
  std::multiset<std::string> flags;
  for (auto& m : inbox) flags.insert(m["flags"]);
  EXPECT_EQ(flags, (std::multiset<std::string>{"FS", "R", ""}));

  // grep finds a message by a header.
  auto g = testing::run_process({"/bin/grep", "-rl", "Message-ID: <2.f1@example.org>", dir.path() + "/out"});
  EXPECT_EQ(g.exit_code, 0);
  EXPECT_EQ(std::count(g.out.begin(), g.out.end(), '\n'), 1) << g.out;
  EXPECT_NE(g.out.find("/INBOX/cur/"), std::string::npos) << g.out;

  // A re-run writes nothing; with one file gone, exactly that one.
  r = extract(dir.path() + "/archive", "maildir", dir.path() + "/out");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(summary_of(r)["written"], 0);
  EXPECT_EQ(summary_of(r)["already_present"], sample.current_messages);
  fs::remove(dir.path() + "/out/" + g.out.substr(dir.path().size() + 5, g.out.size() - dir.path().size() - 6));
  r = extract(dir.path() + "/archive", "maildir", dir.path() + "/out");
  EXPECT_EQ(summary_of(r)["written"], 1);
  EXPECT_EQ(tree(dir.path() + "/out"), written);
}

TEST(ExtractTest, MaildirPlusPlusLayoutOpensAsOneRootInPython) {
  TempDir dir;
  auto sample = testing::make_sample_archive(dir.path() + "/archive");
  auto r = extract(dir.path() + "/archive", "maildir", dir.path() + "/out",
                   {"--layout", "maildir++", "--account", testing::kSampleAccount});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string root = dir.path() + "/out/" + filesystem::escape_level(testing::kSampleAccount);
  auto folders = testing::run_python(testing::kReadMaildirs, {root, "maildir++"});
  EXPECT_EQ(folders[""].size(), 3u);  // INBOX at the root
  ASSERT_TRUE(folders.contains("Archive.2023")) << folders.dump();
  EXPECT_EQ(folders["Archive.2023"].size(), 1u);
  EXPECT_TRUE(folders.contains("A%2EB"));
  size_t total = 0;
  for (auto& [name, messages] : folders.items()) total += messages.size();
  EXPECT_EQ(total, sample.current_messages - 1);  // the hostile account left out
  tree(dir.path() + "/out");
}

TEST(ExtractTest, MboxRoundTripsBytesAndFromLines) {
  TempDir dir;
  auto sample = testing::make_sample_archive(dir.path() + "/archive");
  auto r = extract(dir.path() + "/archive", "mbox", dir.path() + "/out");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(summary_of(r)["written"], sample.current_messages);
  auto boxes = testing::run_python(testing::kReadMboxes, {dir.path() + "/out"});
  size_t read = 0, without_final_newline = 0;
  for (auto& [file, messages] : boxes.items()) {
    for (auto& m : messages) {
      auto it = sample.by_hash.find(m["sha256"]);
      if (it == sample.by_hash.end()) {
        // The one message that did not end in a line feed got one.
        it = sample.by_hash.find(m["nolf_sha256"]);
        ASSERT_NE(it, sample.by_hash.end()) << file;
        EXPECT_NE(sample.bytes[it->first].back(), '\n');
        ++without_final_newline;
      }
      EXPECT_NE(m["from"].get<std::string>().find(fmt::format("{}.{}@imapstage.invalid", it->second.key.uidvalidity,
                                                              it->second.key.uid)),
                std::string::npos);
      ++read;
    }
  }
  EXPECT_EQ(read, sample.current_messages);
  EXPECT_EQ(without_final_newline, 1u);
  // The body's From lines are quoted in the file, never a message boundary.
  std::string inbox = dir.path() + "/out/" + filesystem::escape_level(testing::kSampleAccount) + "/INBOX.mbox";
  std::ifstream in(inbox, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("\n>From here on"), std::string::npos);
  EXPECT_NE(text.str().find("\n>>From quoted once"), std::string::npos);
  EXPECT_NE(text.str().find("\n>>>From quoted twice"), std::string::npos);
  EXPECT_NE(text.str().find("\n>From the end"), std::string::npos);
  EXPECT_NE(text.str().find("\nFrom\r\n"), std::string::npos);
  EXPECT_NE(text.str().find("From 7.1@imapstage.invalid Mon Jan  2 10:00:00 2023\n"), std::string::npos);

  // A re-run leaves the files as they are; a missing message is appended.
  std::string before = testing::file_sha256(inbox);
  r = extract(dir.path() + "/archive", "mbox", dir.path() + "/out");
  EXPECT_EQ(summary_of(r)["written"], 0);
  EXPECT_EQ(testing::file_sha256(inbox), before);
  r = extract(dir.path() + "/archive", "mbox", dir.path() + "/out2", {"--folder", "INBOX", "--before", "2023-01-02"});
  EXPECT_EQ(summary_of(r)["written"], 0);  // every INBOX message is from 2023-01-02
  r = extract(dir.path() + "/archive", "mbox", dir.path() + "/out2",
              {"--folder", "INBOX", "--account", testing::kSampleAccount, "--since", "2023-01-02", "--before", "2023-01-03"});
  EXPECT_EQ(summary_of(r)["written"], 3);
  EXPECT_EQ(testing::run_python(testing::kReadMboxes, {dir.path() + "/out2"}).begin()->size(), 3u);
}

TEST(ExtractTest, EmlFilesAndIndexCsv) {
  TempDir dir;
  auto sample = testing::make_sample_archive(dir.path() + "/archive");
  auto r = extract(dir.path() + "/archive", "eml", dir.path() + "/out", {"--folder", "INBOX", "--folder", "Archive/*"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto indexes = testing::run_python(testing::kReadEml, {dir.path() + "/out"});
  size_t rows = 0;
  for (auto& [d, index] : indexes.items()) {
    EXPECT_EQ(index["rows"].size(), index["eml_files"].get<size_t>()) << d;
    for (auto& row : index["rows"]) {
      auto it = sample.by_hash.find(row["sha256"]);
      ASSERT_NE(it, sample.by_hash.end());
      EXPECT_EQ(row["file"], fmt::format("{}-{}.eml", it->second.key.uidvalidity, it->second.key.uid));
      EXPECT_EQ(row["uid"], std::to_string(it->second.key.uid));
      EXPECT_EQ(row["size"], std::to_string(it->second.size));
      EXPECT_EQ(row["message-id"].get<std::string>().front(), '<');
      EXPECT_TRUE(row["subject"].get<std::string>().starts_with("Sample ")) << row.dump();
      EXPECT_TRUE(row["from"].get<std::string>().starts_with("Sender ")) << row.dump();
      EXPECT_TRUE(row["internaldate"].get<std::string>().starts_with("2023-01-0")) << row.dump();
      ++rows;
    }
  }
  EXPECT_EQ(rows, 5u);  // INBOX (3), Archive/2023 (1), the other account's INBOX (1)
  auto inbox = indexes[dir.path() + "/out/" + filesystem::escape_level(testing::kSampleAccount) + "/INBOX"]["rows"];
  ASSERT_EQ(inbox.size(), 3u);
  EXPECT_EQ(inbox[0]["flags"], "\\Seen \\Flagged");
  EXPECT_EQ(inbox[0]["keywords"], "Work $Label1");
  r = extract(dir.path() + "/archive", "eml", dir.path() + "/out", {"--folder", "INBOX", "--folder", "Archive/*"});
  EXPECT_EQ(summary_of(r)["written"], 0);
  EXPECT_EQ(summary_of(r)["already_present"], 5);
}

TEST(ExtractTest, HostileNamesStayInsideOutInEveryFormat) {
  TempDir dir;
  auto sample = testing::make_sample_archive(dir.path() + "/archive");
  fs::create_directories(dir.path() + "/out");
  for (std::string to : {"maildir", "mbox", "eml"}) {
    auto r = extract(dir.path() + "/archive", to, dir.path() + "/out/" + to);
    ASSERT_EQ(r.exit_code, 0) << to << r.err;
  }
  // Nothing was written beside --out, and every file is below it.
  std::set<std::string> top;
  for (auto& e : fs::directory_iterator(dir.path())) top.insert(e.path().filename());
  EXPECT_EQ(top, (std::set<std::string>{"archive", "out"}));
  auto all = tree(dir.path() + "/out");
  size_t maildir = 0, mbox = 0, eml = 0;
  for (auto& f : all) {
    maildir += f.starts_with("maildir/") && f.find("/cur/") != std::string::npos;
    mbox += f.starts_with("mbox/") && f.ends_with(".mbox");
    eml += f.starts_with("eml/") && f.ends_with(".eml");
  }
  EXPECT_EQ(maildir, sample.current_messages);
  EXPECT_EQ(eml, sample.current_messages);
  EXPECT_EQ(mbox, testing::sample_hostile_levels().size() + 3);  // + INBOX, Archive/2023, the other account's INBOX
}

TEST(ExtractTest, SymlinkInsideOutIsRefusedAndNothingIsWrittenThrough) {
  TempDir dir;
  testing::make_sample_archive(dir.path() + "/archive");
  fs::create_directories(dir.path() + "/out");
  fs::create_directories(dir.path() + "/elsewhere");
  fs::create_directory_symlink(dir.path() + "/elsewhere", dir.path() + "/out/" + filesystem::escape_level(testing::kSampleAccount));
  auto r = extract(dir.path() + "/archive", "eml", dir.path() + "/out");
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_TRUE(fs::is_empty(dir.path() + "/elsewhere"));
}


TEST(ExtractTest, DamagedObjectIsNamedLeftOutAndLeavesNoPartialFile) {
  TempDir dir;
  auto sample = testing::make_sample_archive(dir.path() + "/archive", false);  // one record per message
  {
    auto a = archive::Archive::open(dir.path() + "/archive", archive::Archive::Mode::read);
    auto loc = a->object(sample.inbox_uid1.hash);
    ASSERT_TRUE(loc);
    std::fstream f(a->pack_path(loc->pack_id), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(loc->offset + loc->record_size - 12));
    f.put('\x7f');
  }
  for (std::string to : {"maildir", "mbox", "eml"}) {
    std::string out = dir.path() + "/out-" + to;
    auto r = extract(dir.path() + "/archive", to, out, {"--account", testing::kSampleAccount, "--folder", "INBOX"});
    EXPECT_EQ(r.exit_code, 1) << to << r.err;
    auto s = summary_of(r);
    ASSERT_EQ(s["failed"].size(), 1u) << to;
    EXPECT_NE(s["failed"][0].get<std::string>().find("UID 1"), std::string::npos) << s.dump();
    EXPECT_EQ(s["written"], 2) << to;
    EXPECT_NE(r.out.find("\"message_error\""), std::string::npos);
    // Nothing half-written: no temporary file is left, and no file holds the damaged message.
    for (auto& f : tree(out)) {
      EXPECT_EQ(f.find("imapstage-tmp"), std::string::npos) << f;
      EXPECT_EQ(f.find(".U7_1."), std::string::npos) << f;
      EXPECT_EQ(f.find("7-1.eml"), std::string::npos) << f;
    }
    if (to == "mbox") {
      auto boxes = testing::run_python(testing::kReadMboxes, {out});
      ASSERT_EQ(boxes.size(), 1u);
      EXPECT_EQ(boxes.begin()->size(), 2u);
    }
  }
}

}  // namespace
}  // namespace imapstage

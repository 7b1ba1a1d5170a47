// The naming shared by mount and extract: escaping of folder levels and
// Maildir file names (filesystem/names.h).
#include <set>

#include <gtest/gtest.h>

#include "archive-format/hash.h"
#include "filesystem/names.h"

namespace imapstage::filesystem {
namespace {

TEST(NamesTest, EscapeLevelTable) {
  struct Case {
    std::string level;
    Layout layout;
    std::string name;
  };
  std::vector<Case> cases = {
      {"INBOX", Layout::nested, "INBOX"},
      {"Grüße ✓", Layout::nested, "Grüße ✓"},
      {"a/b", Layout::nested, "a%2Fb"},
      {std::string("x\0y", 3), Layout::nested, "x%00y"},
      {"..", Layout::nested, "%2E."},
      {".", Layout::nested, "%2E"},
      {"", Layout::nested, "%"},
      {".hidden", Layout::nested, "%2Ehidden"},
      {"100%", Layout::nested, "100%25"},
      {"tab\there\x7f", Layout::nested, "tab%09here%7F"},
      {"\xff\xfe", Layout::nested, "%FF%FE"},
      {"\xc3", Layout::nested, "%C3"},             // a truncated UTF-8 sequence
      {"\xed\xa0\x80", Layout::nested, "%ED%A0%80"},  // a UTF-16 surrogate
      {"cur", Layout::nested, "%63ur"},
      {"tmp", Layout::nested, "%74mp"},
      {"new", Layout::nested, "%6Eew"},
      {"current", Layout::nested, "current"},
      {"uidvalidity-12", Layout::nested, "%75idvalidity-12"},
      {"all-generations", Layout::nested, "%61ll-generations"},
      {"A.B", Layout::nested, "A.B"},
      {"A.B", Layout::maildir_plus, "A%2EB"},
  };
  for (auto& c : cases) EXPECT_EQ(escape_level(c.level, c.layout), c.name) << c.level;
}

TEST(NamesTest, LongNamesAreCutAtABoundaryAndStayDistinct) {
  std::string a(300, 'a'), b = std::string(299, 'a') + "b";
  std::string ea = escape_level(a), eb = escape_level(b);
  EXPECT_EQ(ea.size(), 200u + 1 + 16);
  EXPECT_NE(ea, eb);
  EXPECT_EQ(ea.substr(201), archive::to_hex(archive::sha256(a)).substr(0, 16));
  // Never inside a %XX escape or a UTF-8 sequence.
  std::string slashes(199, 'x');
  slashes += std::string(50, '/');
  // 199 bytes kept: the 200th would split "%2F".
  EXPECT_EQ(escape_level(slashes).substr(195), "xxxx~" + archive::to_hex(archive::sha256(slashes)).substr(0, 16));
  std::string wide;
  for (int i = 0; i < 100; ++i) wide += "日";
  std::string ew = escape_level(wide);
  EXPECT_LE(ew.size(), 255u);
  EXPECT_EQ(ew.find('~') % 3, 0u);
}

TEST(NamesTest, DistinctLevelsGiveDistinctNames) {
  std::set<std::string> levels = {"a/b", "a%2Fb", "a%b", "a%25b", ".a", "%2Ea", "cur", "%63ur", "", "%", "x\x01", "x%01"};
  std::set<std::string> names;
  for (auto& l : levels) names.insert(escape_level(l));
  EXPECT_EQ(names.size(), levels.size());
}

TEST(NamesTest, FolderDirsPerLayout) {
  archive::FolderRecord f;
  f.path = {"Archive", "2023.Q1"};
  EXPECT_EQ(folder_dirs(f, Layout::nested), (std::vector<std::string>{"Archive", "2023.Q1"}));
  EXPECT_EQ(folder_dirs(f, Layout::maildir_plus), (std::vector<std::string>{".Archive.2023%2EQ1"}));
  f.path = {"INBOX"};
  EXPECT_TRUE(folder_dirs(f, Layout::maildir_plus).empty());
  f.ns_kind = archive::NamespaceKind::shared;
  f.path = {"Team", "../x"};
  EXPECT_EQ(folder_dirs(f, Layout::nested), (std::vector<std::string>{"#shared", "Team", "%2E.%2Fx"}));
}

TEST(NamesTest, MaildirNameAndKeywordLetters) {
  archive::MessageRecord m;
  m.key = {1, 2, 77, 123};
  m.internaldate = 1700000000;
  m.size = 4321;
  m.flags = archive::kSeen | archive::kAnswered | archive::kFlagged | archive::kDraft | archive::kDeleted;
  m.keywords = {"Work", "$Label1", "Unlisted"};
  std::vector<std::string> table = {"$Label1", "Other", "Work"};
  EXPECT_EQ(maildir_base(m), "1700000000.U77_123.imapstage,S=4321");
  EXPECT_EQ(maildir_info(m, table), ":2,DFRSTac");
  EXPECT_EQ(dovecot_keywords(table), "0 $Label1\n1 Other\n2 Work\n");
  EXPECT_EQ(keyword_table({m}), (std::vector<std::string>{"$Label1", "Unlisted", "Work"}));
}

}  // namespace
}  // namespace imapstage::filesystem

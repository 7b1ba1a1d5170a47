#include "import/folder_map.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace imapstage::importing {
namespace {

archive::FolderRecord folder(const std::string& utf8, char delim = '/', std::vector<std::string> attrs = {}) {
  archive::FolderRecord f;
  f.name_utf8 = utf8;
  f.name_raw = utf8;
  f.delimiter = delim;
  f.attributes = std::move(attrs);
  return f;
}

imap::ListEntry target(const std::string& name, const std::string& use = "") {
  imap::ListEntry e;
  e.name_raw = name;
  e.name_utf8 = name;
  e.delimiter = '/';
  e.special_use = use;
  return e;
}

const FolderMapping& find(const std::vector<FolderMapping>& v, const std::string& source) {
  for (auto& m : v)
    if (m.source.name_utf8 == source) return m;
  throw std::runtime_error("no mapping for " + source);
}

TEST(FolderMap, SpecialUseGoesToTheTargetsFolderWhateverItsName) {
  auto v = map_folders({folder("Sent", '/', {"\\Sent"}), folder("Trash", '/', {"\\Trash"}), folder("INBOX")},
                       {target("INBOX"), target("Sent Items", "\\Sent"), target("Gelöscht", "\\Trash")},
                       {"", '/'}, {});
  EXPECT_EQ(find(v, "Sent").target_utf8, "Sent Items");
  EXPECT_EQ(find(v, "Sent").reason, "special-use \\Sent");
  EXPECT_TRUE(find(v, "Sent").exists);
  EXPECT_EQ(find(v, "Trash").target_utf8, "Gelöscht");
  EXPECT_EQ(find(v, "INBOX").target_raw, "INBOX");
}

TEST(FolderMap, SpecialUseWithoutCounterpartKeepsItsName) {
  auto v = map_folders({folder("Junk", '/', {"\\Junk"})}, {target("INBOX")}, {"", '/'}, {});
  EXPECT_EQ(find(v, "Junk").target_utf8, "Junk");
  EXPECT_FALSE(find(v, "Junk").exists);
}

TEST(FolderMap, HierarchyIsRebuiltWithTheTargetsSeparatorAndPrefix) {
  auto v = map_folders({folder("Projects/2024/Q1"), folder("v1.2 notes")}, {target("INBOX")}, {"INBOX.", '.'}, {});
  EXPECT_EQ(find(v, "Projects/2024/Q1").target_utf8, "INBOX.Projects.2024.Q1");
  // A name containing the target's separator is mapped, never skipped.
  EXPECT_EQ(find(v, "v1.2 notes").target_utf8, "INBOX.v1_2 notes");
}

TEST(FolderMap, NonAsciiNamesAreSentAsModifiedUtf7) {
  auto v = map_folders({folder("Projekte/Übersicht")}, {}, {"", '/'}, {});
  EXPECT_EQ(find(v, "Projekte/Übersicht").target_raw, "Projekte/&ANw-bersicht");
}

TEST(FolderMap, OverridesApplyToSubfoldersAndWin) {
  auto v = map_folders({folder("Projects"), folder("Projects/2024"), folder("Sent", '/', {"\\Sent"})},
                       {target("Sent", "\\Sent")}, {"", '/'}, {{"Projects", "Old/Projects"}, {"Sent", "Sent-old"}});
  EXPECT_EQ(find(v, "Projects").target_utf8, "Old/Projects");
  EXPECT_EQ(find(v, "Projects/2024").target_utf8, "Old/Projects/2024");
  EXPECT_EQ(find(v, "Sent").target_utf8, "Sent-old");
  EXPECT_EQ(find(v, "Sent").reason, "--map");
}

TEST(FolderMap, UnknownOverrideSourceIsAnError) {
  try {
    map_folders({folder("INBOX")}, {}, {"", '/'}, {{"Nope", "X"}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::usage);
    EXPECT_NE(std::string(e.what()).find("Nope"), std::string::npos);
  }
}

TEST(FolderMap, FoldersNeverMergeByAccident) {
  // "a.b" is rebuilt as "a_b" for a '.' target, beside a real "a_b": the
  // rebuilt one is numbered, whatever the order.
  for (bool real_first : {true, false}) {
    std::vector<archive::FolderRecord> src = {folder("a.b"), folder("a_b")};
    if (real_first) std::swap(src[0], src[1]);
    auto v = map_folders(src, {target("INBOX")}, {"", '.'}, {});
    EXPECT_EQ(find(v, "a_b").target_utf8, "a_b");
    EXPECT_EQ(find(v, "a.b").target_utf8, "a_b (2)");
    EXPECT_NE(find(v, "a.b").reason.find("numbered"), std::string::npos);
  }
  // Three claimants, one of them already numbered by its own name.
  auto v = map_folders({folder("x.y"), folder("x_y"), folder("x_y (2)"), folder("x?y")}, {}, {"", '.'}, {});
  EXPECT_EQ(find(v, "x_y").target_utf8, "x_y");
  EXPECT_EQ(find(v, "x_y (2)").target_utf8, "x_y (2)");
  EXPECT_EQ(find(v, "x.y").target_utf8, "x_y (3)");
  // A folder that lands on a special-use or --map target by name yields to it.
  auto w = map_folders({folder("Sent", '/', {"\\Sent"}), folder("Sent Items")},
                       {target("INBOX"), target("Sent Items", "\\Sent")}, {"", '/'}, {});
  EXPECT_EQ(find(w, "Sent").target_utf8, "Sent Items");
  EXPECT_EQ(find(w, "Sent Items").target_utf8, "Sent Items (2)");
  EXPECT_FALSE(find(w, "Sent Items").exists);
  // Merges asked for stay merges.
  auto m = map_folders({folder("Old"), folder("Older")}, {}, {"", '/'}, {{"Old", "Archive"}, {"Older", "Archive"}});
  EXPECT_EQ(find(m, "Old").target_utf8, "Archive");
  EXPECT_EQ(find(m, "Older").target_utf8, "Archive");
}

TEST(FolderMap, NoselectFoldersAreLeftToTheirChildren) {
  auto parent = folder("Archive-parent");
  parent.noselect = true;
  auto v = map_folders({parent, folder("Archive-parent/2020")}, {}, {"", '/'}, {});
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].source.name_utf8, "Archive-parent/2020");
}

}  // namespace
}  // namespace imapstage::importing

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

// Dovecot lists the parent of a created subfolder as "\Noselect \HasChildren"
// (an interrupted import that created Archive/2020 before Archive leaves
// this): the parent is still to be created, the subfolder is there.
TEST(FolderMap, ATargetsNoselectEntryIsNotAnExistingFolder) {
  auto placeholder = target("Archive", "\\Archive");
  placeholder.noselect = true;
  auto v = map_folders({folder("Archive"), folder("Archive/2020")},
                       {target("INBOX"), placeholder, target("Archive/2020")}, {"", '/'}, {});
  EXPECT_EQ(find(v, "Archive").target_utf8, "Archive");
  EXPECT_FALSE(find(v, "Archive").exists);
  EXPECT_TRUE(find(v, "Archive/2020").exists);
}

// A folder as export records it from a server whose personal namespace is "INBOX." / '.' (Cyrus, Courier).
archive::FolderRecord cyrus_folder(const std::string& raw, std::vector<std::string> attrs = {}) {
  auto f = folder(raw, '.', std::move(attrs));
  std::string prefix;
  f.path = archive::path_of_v1_name(raw, '.', f.ns_prefix);
  return f;
}

imap::ListEntry cyrus_target(const std::string& name, const std::string& use = "") {
  auto e = target(name, use);
  e.delimiter = '.';
  return e;
}

const std::vector<imap::Namespace> kCyrusNamespaces = {{imap::Namespace::personal, "INBOX.", '.'},
                                                       {imap::Namespace::other_users, "user.", '.'},
                                                       {imap::Namespace::shared, "", '.'}};

TEST(FolderMap, CyrusFoldersLoseTheSourcePrefixOnDovecot) {
  auto v = map_folders({cyrus_folder("INBOX"), cyrus_folder("INBOX.Projects"), cyrus_folder("INBOX.Archive.2023"),
                        cyrus_folder("INBOX.Sent", {"\\Sent"})},
                       {target("INBOX"), target("Sent", "\\Sent")}, imap::PersonalNamespace{"", '/'}, {});
  EXPECT_EQ(find(v, "INBOX").target_raw, "INBOX");
  EXPECT_EQ(find(v, "INBOX.Projects").target_raw, "Projects");
  EXPECT_EQ(find(v, "INBOX.Projects").reason, "same name in the target's namespace");
  EXPECT_EQ(find(v, "INBOX.Archive.2023").target_raw, "Archive/2023");
  EXPECT_EQ(find(v, "INBOX.Sent").target_raw, "Sent");
  EXPECT_EQ(find(v, "INBOX.Sent").reason, "special-use \\Sent");
}

TEST(FolderMap, RecordsWithoutAPathAreReadAsVersion1Did) {
  // Folder records of a version 1 archive carry no path: "INBOX." under '.' is the personal prefix.
  auto v = map_folders({folder("INBOX.Archive.2023", '.'), folder("Archive/2024", '/')}, {target("INBOX")},
                       imap::PersonalNamespace{"", '/'}, {});
  EXPECT_EQ(find(v, "INBOX.Archive.2023").target_raw, "Archive/2023");
  EXPECT_EQ(find(v, "Archive/2024").target_raw, "Archive/2024");
  EXPECT_EQ(find(v, "Archive/2024").reason, "same name");
}

TEST(FolderMap, DovecotFoldersGoUnderTheCyrusPrefix) {
  auto v = map_folders({folder("INBOX"), folder("Archive/2023"), folder("Ünïcode/x")},
                       {cyrus_target("INBOX"), cyrus_target("user.bob"), cyrus_target("Shared stuff")},
                       kCyrusNamespaces, {});
  EXPECT_EQ(find(v, "INBOX").target_raw, "INBOX");
  EXPECT_EQ(find(v, "Archive/2023").target_raw, "INBOX.Archive.2023");
  EXPECT_EQ(find(v, "Archive/2023").target_utf8, "INBOX.Archive.2023");
  EXPECT_EQ(find(v, "Ünïcode/x").target_raw, "INBOX.&ANw-n&AO8-code.x");
  for (auto& m : v) EXPECT_EQ(m.exists, m.target_raw == "INBOX") << m.target_raw;
}

TEST(FolderMap, SubfoldersFollowASpecialUseParent) {
  auto v = map_folders({folder("Archive", '/', {"\\Archive"}), folder("Archive/2023"), folder("Archive/2023/Q1"),
                        folder("Archived")},
                       {cyrus_target("INBOX"), cyrus_target("INBOX.Archives", "\\Archive")}, kCyrusNamespaces, {});
  EXPECT_EQ(find(v, "Archive").target_raw, "INBOX.Archives");
  EXPECT_EQ(find(v, "Archive/2023").target_raw, "INBOX.Archives.2023");
  EXPECT_EQ(find(v, "Archive/2023/Q1").target_raw, "INBOX.Archives.2023.Q1");
  EXPECT_NE(find(v, "Archive/2023").reason.find("follows its parent Archive"), std::string::npos);
  EXPECT_EQ(find(v, "Archived").target_raw, "INBOX.Archived");  // a name that only starts alike stays
}

TEST(FolderMap, SpecialUseByNameWhereTheTargetHasNoAttributes) {
  // Courier lists no special-use attributes: its "Sent Items" is found by the table.
  auto v = map_folders({folder("Sent", '/', {"\\Sent"}), folder("Trash", '/', {"\\Trash"})},
                       {cyrus_target("INBOX"), cyrus_target("INBOX.Sent Items"), cyrus_target("INBOX.Trash")},
                       std::vector<imap::Namespace>{{imap::Namespace::personal, "INBOX.", '.'}}, {});
  EXPECT_EQ(find(v, "Sent").target_raw, "INBOX.Sent Items");
  EXPECT_EQ(find(v, "Sent").reason, "special-use \\Sent, by name");
  EXPECT_EQ(find(v, "Trash").target_raw, "INBOX.Trash");
  EXPECT_TRUE(find(v, "Trash").exists);
}

TEST(FolderMap, ASourceWithoutAttributesIsRecognisedByName) {
  auto v = map_folders({cyrus_folder("INBOX.Sent"), cyrus_folder("INBOX.Gesendete Elemente"),
                        cyrus_folder("INBOX.Projects.Sent")},
                       {target("INBOX"), target("Sent Mail", "\\Sent")}, imap::PersonalNamespace{"", '/'}, {});
  EXPECT_EQ(find(v, "INBOX.Sent").target_raw, "Sent Mail");
  EXPECT_EQ(find(v, "INBOX.Sent").reason, "special-use \\Sent, by name");
  // Only the first of each use: the second keeps its name, and a lower level is never taken.
  EXPECT_EQ(find(v, "INBOX.Gesendete Elemente").target_raw, "Gesendete Elemente");
  EXPECT_EQ(find(v, "INBOX.Projects.Sent").target_raw, "Projects/Sent");
}

TEST(FolderMap, MissingSpecialUseIsCreatedWithItsAttribute) {
  auto v = map_folders({folder("Junk", '/', {"\\Junk"}), folder("Notes")}, {target("INBOX")},
                       imap::PersonalNamespace{"", '/'}, {});
  EXPECT_EQ(find(v, "Junk").create_use, "\\Junk");
  EXPECT_EQ(find(v, "Junk").reason, "same name");
  EXPECT_EQ(find(v, "Notes").create_use, "");
}

TEST(FolderMap, OtherNamespacesAreLeftOutUnlessMapped) {
  auto bob = cyrus_folder("user.bob.Sent");
  bob.ns_kind = archive::NamespaceKind::other_users;
  bob.ns_prefix = "user.";
  bob.path = {"bob", "Sent"};
  auto shared = cyrus_folder("Public.News");
  shared.ns_kind = archive::NamespaceKind::shared;
  shared.ns_prefix = "";
  shared.path = {"Public", "News"};
  auto v = map_folders({cyrus_folder("INBOX"), bob, shared}, {target("INBOX")}, imap::PersonalNamespace{"", '/'}, {});
  EXPECT_TRUE(find(v, "user.bob.Sent").skipped);
  EXPECT_NE(find(v, "user.bob.Sent").reason.find("#other/bob/Sent"), std::string::npos);
  EXPECT_TRUE(find(v, "Public.News").skipped);
  auto w = map_folders({cyrus_folder("INBOX"), bob, shared}, {target("INBOX")}, imap::PersonalNamespace{"", '/'},
                       {{"#other/bob", "From Bob"}});
  EXPECT_FALSE(find(w, "user.bob.Sent").skipped);
  EXPECT_EQ(find(w, "user.bob.Sent").target_raw, "From Bob/Sent");
  EXPECT_TRUE(find(w, "Public.News").skipped);
}

TEST(FolderMap, MapTargetsAreCanonicalNamesInTheTargetsNamespace) {
  auto v = map_folders({cyrus_folder("INBOX.Projects"), cyrus_folder("INBOX.Projects.2024")},
                       {cyrus_target("INBOX")}, kCyrusNamespaces, {{"Projects", "Old/Projects"}});
  EXPECT_EQ(find(v, "INBOX.Projects").target_raw, "INBOX.Old.Projects");
  EXPECT_EQ(find(v, "INBOX.Projects.2024").target_raw, "INBOX.Old.Projects.2024");
}

TEST(FolderMap, SpecialUseNamesTableKnowsCommonNames) {
  auto& sent = special_use_names("\\Sent");
  for (auto n : {"Sent", "Sent Items", "Sent Messages", "Gesendete Elemente", "Éléments envoyés"})
    EXPECT_NE(std::find(sent.begin(), sent.end(), n), sent.end()) << n;
  auto& trash = special_use_names("\\Trash");
  EXPECT_NE(std::find(trash.begin(), trash.end(), "Deleted Items"), trash.end());
  auto& junk = special_use_names("\\Junk");
  EXPECT_NE(std::find(junk.begin(), junk.end(), "Spam"), junk.end());
  EXPECT_TRUE(special_use_names("\\Flagged").empty());
}

}  // namespace
TEST(FolderMap, TargetSubfolderTakesTheWholeAccountWithoutSpecialUse) {
  TargetSubfolder sub{{"Archive", "old-server"}, false};
  auto v = map_folders({folder("INBOX"), folder("Sent", '/', {"\\Sent"}), folder("Projects/2024"), folder("a.b", '.')},
                       {target("INBOX"), target("Sent Items", "\\Sent")}, imap::PersonalNamespace{"INBOX.", '.'},
                       {}, sub);
  EXPECT_EQ(find(v, "INBOX").target_utf8, "INBOX.Archive.old-server.INBOX");
  EXPECT_EQ(find(v, "Sent").target_utf8, "INBOX.Archive.old-server.Sent");
  EXPECT_TRUE(find(v, "Sent").create_use.empty());
  EXPECT_EQ(find(v, "Sent").reason, "same name under the target subfolder");
  EXPECT_EQ(find(v, "Projects/2024").target_utf8, "INBOX.Archive.old-server.Projects.2024");
  for (auto& m : v) EXPECT_FALSE(m.exists) << m.target_utf8;
}

TEST(FolderMap, TargetSubfolderWithSpecialUseSendsOnlyThoseToTheTargetsOwn) {
  TargetSubfolder sub{{"Old"}, true};
  auto v = map_folders({folder("INBOX"), folder("Sent", '/', {"\\Sent"}), folder("Trash", '/', {"\\Trash"}),
                        folder("Notes")},
                       {target("INBOX"), target("Sent Items", "\\Sent")}, {"", '/'}, {}, sub);
  EXPECT_EQ(find(v, "INBOX").target_utf8, "Old/INBOX");
  EXPECT_EQ(find(v, "Sent").target_utf8, "Sent Items");
  EXPECT_EQ(find(v, "Trash").target_utf8, "Old/Trash");  // no \Trash on the target: created below, marked
  EXPECT_EQ(find(v, "Trash").create_use, "\\Trash");
  EXPECT_EQ(find(v, "Notes").target_utf8, "Old/Notes");
}

TEST(FolderMap, TargetSubfolderKeepsExplicitMaps) {
  auto v = map_folders({folder("INBOX"), folder("Clients")}, {target("INBOX")}, {"", '/'}, {{"Clients", "Work/Clients"}},
                       TargetSubfolder{{"Old"}, false});
  EXPECT_EQ(find(v, "Clients").target_utf8, "Work/Clients");
  EXPECT_EQ(find(v, "INBOX").target_utf8, "Old/INBOX");
}

TargetNames case_insensitive(std::vector<std::string> reserved = {}) {
  TargetNames n;
  n.case_insensitive = true;
  n.reserved = std::move(reserved);
  return n;
}

TEST(FolderMap, CaseFoldingCoversLatinGreekAndCyrillic) {
  EXPECT_EQ(fold_case("Projects"), "projects");
  EXPECT_EQ(fold_case("ÜBERSICHT Ärger"), "übersicht ärger");
  EXPECT_EQ(fold_case("ŁÓDŹ ČR"), "łódź čr");
  EXPECT_EQ(fold_case("ΑΡΧΕΙΟ"), "αρχειο");
  EXPECT_EQ(fold_case("ПАПКА Ёж"), "папка ёж");
  EXPECT_EQ(fold_case("日本 ×"), "日本 ×");
}

TEST(FolderMap, CaseInsensitiveTargetsGetDistinctNames) {
  std::vector<archive::FolderRecord> src = {folder("Projects"), folder("projects"), folder("PROJECTS/2024"),
                                            folder("projects/2024"), folder("Other")};
  // A case-sensitive target keeps them apart by itself.
  auto plain = map_folders(src, {target("INBOX")}, {"", '/'}, {});
  EXPECT_EQ(find(plain, "projects").target_utf8, "projects");
  EXPECT_EQ(find(plain, "projects").reason, "same name");

  auto v = map_folders(src, {target("INBOX")}, {"", '/'}, {}, {}, case_insensitive());
  EXPECT_EQ(find(v, "Projects").target_utf8, "Projects");
  EXPECT_EQ(find(v, "Projects").reason, "same name");
  EXPECT_EQ(find(v, "projects").target_utf8, "projects (2)");
  EXPECT_TRUE(find(v, "projects").reason.starts_with("renamed: projects differs only in case"));
  // Subfolders follow their renamed level; "PROJECTS" is a third spelling.
  EXPECT_EQ(find(v, "projects/2024").target_utf8, "projects (2)/2024");
  EXPECT_EQ(find(v, "PROJECTS/2024").target_utf8, "PROJECTS (3)/2024");
  EXPECT_EQ(find(v, "Other").target_utf8, "Other");
  // The same every time, and whatever this run selects: left-out folders still claim their names.
  auto again = map_folders(src, {target("INBOX"), target("Projects"), target("projects (2)")}, {"", '/'}, {}, {},
                           case_insensitive());
  for (auto& m : v) EXPECT_EQ(find(again, m.source.name_utf8).target_utf8, m.target_utf8);
  EXPECT_TRUE(find(again, "projects").exists);
  // (The archive's order is its folder ids: "Projects" was archived first.)
  auto with_id = [](archive::FolderRecord f, uint32_t id) {
    f.id = id;
    return f;
  };
  auto only = map_folders({with_id(folder("projects"), 2)}, {target("INBOX")}, {"", '/'}, {}, {}, case_insensitive(),
                          {with_id(folder("Projects"), 1), with_id(folder("PROJECTS/2024"), 3),
                           with_id(folder("projects/2024"), 4), with_id(folder("Other"), 5)});
  ASSERT_EQ(only.size(), 1u);
  EXPECT_EQ(only[0].target_utf8, "projects (2)");
  // A name already taken by a folder of its own is skipped when numbering.
  auto taken = map_folders({folder("A"), folder("a"), folder("a (2)")}, {}, {"", '/'}, {}, {}, case_insensitive());
  EXPECT_EQ(find(taken, "a (2)").target_utf8, "a (2)");
  EXPECT_EQ(find(taken, "a").target_utf8, "a (3)");
}

TEST(FolderMap, CaseInsensitiveNamesYieldToMergesAskedFor) {
  // Sent goes to the target's "Sent Items"; a folder "SENT ITEMS" of its own is not merged into it.
  auto v = map_folders({folder("SENT ITEMS"), folder("Sent", '/', {"\\Sent"})},
                       {target("INBOX"), target("Sent Items", "\\Sent")}, {"", '/'}, {}, {}, case_insensitive());
  EXPECT_EQ(find(v, "Sent").target_utf8, "Sent Items");
  EXPECT_EQ(find(v, "SENT ITEMS").target_utf8, "SENT ITEMS (2)");
  EXPECT_FALSE(find(v, "SENT ITEMS").exists);
  // A target folder spelled otherwise is the same folder: its spelling is used.
  auto w = map_folders({folder("Clients")}, {target("INBOX"), target("CLIENTS")}, {"", '/'}, {}, {},
                       case_insensitive());
  EXPECT_EQ(find(w, "Clients").target_utf8, "CLIENTS");
  EXPECT_TRUE(find(w, "Clients").exists);
  // Two --map to names differing in case stay as asked.
  auto m = map_folders({folder("x"), folder("y")}, {}, {"", '/'}, {{"x", "Old"}, {"y", "OLD"}}, {},
                       case_insensitive());
  EXPECT_EQ(find(m, "x").target_utf8, "Old");
  EXPECT_EQ(find(m, "y").target_utf8, "OLD");
}

TEST(FolderMap, ReservedNamesAreRenamedUnlessTheTargetsOwn) {
  auto names = case_insensitive({"[Gmail]/", "Chats"});
  auto gmail = target("[Gmail]");
  gmail.noselect = true;
  auto v = map_folders({folder("[Gmail]/Foo"), folder("[GMAIL]/Bar/Baz"), folder("[Gmail]/All Mail"), folder("Chats"),
                        folder("Chats/old"), folder("[Gmail]")},
                       {target("INBOX"), gmail, target("[Gmail]/All Mail", "\\All")}, {"", '/'}, {}, {}, names);
  EXPECT_EQ(find(v, "[Gmail]/Foo").target_utf8, "[Gmail] (imported)/Foo");
  EXPECT_TRUE(find(v, "[Gmail]/Foo").reason.starts_with("renamed: [Gmail]/Foo is reserved by the target ([Gmail]/)"));
  // A second spelling of the renamed level is numbered too (the target would merge them).
  EXPECT_EQ(find(v, "[GMAIL]/Bar/Baz").target_utf8, "[GMAIL] (imported) (2)/Bar/Baz");
  EXPECT_NE(find(v, "[GMAIL]/Bar/Baz").reason.find("; [GMAIL] (imported) differs only in case"), std::string::npos);
  EXPECT_EQ(find(v, "Chats").target_utf8, "Chats (imported)");
  EXPECT_EQ(find(v, "Chats/old").target_utf8, "Chats/old");  // "Chats" owns only itself
  EXPECT_EQ(find(v, "[Gmail]").target_utf8, "[Gmail] (imported)");  // the target's own is \Noselect
  // The service's own folder is mapped to as it is.
  EXPECT_EQ(find(v, "[Gmail]/All Mail").target_utf8, "[Gmail]/All Mail");
  EXPECT_TRUE(find(v, "[Gmail]/All Mail").exists);
  // Without a reservation nothing changes.
  auto plain = map_folders({folder("[Gmail]/Foo")}, {target("INBOX")}, {"", '/'}, {});
  EXPECT_EQ(find(plain, "[Gmail]/Foo").target_utf8, "[Gmail]/Foo");
}

}  // namespace imapstage::importing

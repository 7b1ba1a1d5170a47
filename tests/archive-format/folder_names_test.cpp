// Folder names are data, never paths: whatever a server calls a folder, the
// archive writes only under its own directory, with names it makes itself.
#include <filesystem>
#include <set>

#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

namespace fs = std::filesystem;
using archive::Archive;
using archive::Batch;

std::set<std::string> tree(const fs::path& root) {
  std::set<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(root)) out.insert(fs::relative(e.path(), root).string());
  return out;
}

TEST(FolderNames, HostileNamesStayInsideTheArchive) {
  testing::TempDir dir;
  fs::path outer = fs::path(dir.path()) / "outer";
  fs::path root = outer / "a" / "b" / "archive";
  fs::create_directories(root.parent_path());
  const std::vector<std::string> names = {"../../x", "../../../x/y", "/etc/imapstage-test", "a/../../../z",
                                          "..", ".", "INBOX/\x01\x7f", std::string("nul\0byte", 8)};
  {
    auto a = Archive::open(root, Archive::Mode::create);
    Batch b(*a);
    archive::AccountRecord acc{.name = "../../acct", .host = "../h", .user = "../u"};
    b.put_account(acc);
    uint32_t uid = 1;
    for (auto& n : names) {
      archive::FolderRecord f;
      f.account_id = acc.id;
      f.name_raw = n;
      f.name_utf8 = n;
      f.delimiter = '/';
      f.uidvalidity = 7;
      b.put_folder(f);
      std::string body = "Subject: " + n + "\r\n\r\nbody " + std::to_string(uid) + "\r\n";
      archive::MessageRecord m;
      m.key = {acc.id, f.id, 7, uid++};
      m.hash = archive::sha256(body);
      m.size = body.size();
      b.put_object(m.hash, body);
      b.put_message(m);
    }
    b.commit();
  }
  // Nothing appeared beside or above the archive.
  for (auto& p : tree(outer)) EXPECT_TRUE(p.rfind("a/b/archive", 0) == 0 || p == "a" || p == "a/b") << p;
  EXPECT_FALSE(fs::exists("/etc/imapstage-test"));
  EXPECT_FALSE(fs::exists(root.parent_path().parent_path() / "x"));
  // Every file inside is one the format defines.
  for (auto& p : tree(root)) {
    bool known = p == "FORMAT" || p == "lock" || p.rfind("index", 0) == 0 || p.rfind("packs", 0) == 0;
    EXPECT_TRUE(known) << p;
  }
  // And every name reads back exactly.
  auto a = Archive::open(root, Archive::Mode::read);
  auto acc = a->find_account("../../acct");
  ASSERT_TRUE(acc);
  for (auto& n : names) {
    auto f = a->find_folder(acc->id, n);
    ASSERT_TRUE(f) << n;
    EXPECT_EQ(f->name_utf8, n);
  }
}

}  // namespace
}  // namespace imapstage

// The command line against the harness Dovecot: what `ls` and `cat` show of
// an exported account, dedupe across accounts, the --insecure warning, and
// the choice of account when an archive holds several.
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "archive-format/hash.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::TempDir;
using testing::TestServer;

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

class BrowseTest : public testing::SharedServerTest {
 protected:
  static std::vector<std::string> export_args(const std::string& archive_dir, const std::string& user) {
    return {"export", "--archive", archive_dir, "--host", server_->host(), "--port",
            std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", user,
            "--password-file", server_->password_file(user), "--json"};
  }
};

TEST_F(BrowseTest, LsAndCatShowWhatTheServerHolds) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  auto r = testing::run_imapstage(export_args(archive_dir, "alice"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string account = "alice@" + server_->host();
  auto view = server_->summary("alice");

  // Accounts: one, with every selectable message of the server; objects are
  // the distinct SHA-256 values.
  auto ls = testing::run_imapstage({"ls", "--archive", archive_dir, "--json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  auto top = nlohmann::json::parse(ls.out);
  size_t messages = 0;
  std::set<std::string> distinct;
  std::map<std::string, nlohmann::json> by_name;
  for (auto& f : view["folders"]) {
    by_name[f["name"].get<std::string>()] = f;
    if (!f["messages"].is_array()) continue;
    for (auto& m : f["messages"]) distinct.insert(m["sha256"].get<std::string>()), ++messages;
  }
  ASSERT_EQ(top["accounts"].size(), 1u);
  EXPECT_EQ(top["accounts"][0]["account"], account);
  EXPECT_EQ(top["accounts"][0]["messages"].get<size_t>(), messages);
  EXPECT_EQ(top["objects"].get<size_t>(), distinct.size());
  EXPECT_LT(distinct.size(), messages);  // the seed puts identical messages in several folders

  // Folders: every folder of the server, with its count and attributes.
  auto lf = testing::run_imapstage({"ls", "--archive", archive_dir, account, "--json"});
  ASSERT_EQ(lf.exit_code, 0) << lf.err;
  auto folders = nlohmann::json::parse(lf.out)["folders"];
  EXPECT_EQ(folders.size(), view["folders"].size());
  for (auto& f : folders) {
    auto it = by_name.find(f["folder"].get<std::string>());
    ASSERT_NE(it, by_name.end()) << f.dump();
    EXPECT_EQ(f["raw"], it->second["raw"]);
    if (it->second["messages"].is_array())
      EXPECT_EQ(f["messages"].get<size_t>(), it->second["messages"].size()) << f["folder"];
    else
      EXPECT_TRUE(f["noselect"].get<bool>()) << f["folder"];
  }

  // Messages of a non-ASCII nested folder and of INBOX: UID, hash, size, flags;
  // `cat` gives back the exact bytes.
  size_t catted = 0;
  for (auto& [name, sf] : by_name) {
    if (!sf["messages"].is_array() || sf["messages"].empty()) continue;
    if (name != "INBOX" && sf["raw"] == sf["name"]) continue;
    auto lm = testing::run_imapstage({"ls", "--archive", archive_dir, account, name, "--json"});
    ASSERT_EQ(lm.exit_code, 0) << name << ": " << lm.err;
    auto listed = json_lines(lm.out);
    ASSERT_EQ(listed.size(), sf["messages"].size()) << name;
    std::map<uint32_t, nlohmann::json> server_by_uid;
    for (auto& m : sf["messages"]) server_by_uid[m["uid"].get<uint32_t>()] = m;
    for (auto& m : listed) {
      auto it = server_by_uid.find(m["uid"].get<uint32_t>());
      ASSERT_NE(it, server_by_uid.end()) << name << " " << m.dump();
      EXPECT_EQ(m["sha256"], it->second["sha256"]) << name;
      EXPECT_EQ(m["size"], it->second["size"]) << name;
      EXPECT_EQ(m["state"], "present");
    }
    auto& first = sf["messages"][0];
    auto cat = testing::run_imapstage(
        {"cat", "--archive", archive_dir, account, name, std::to_string(first["uid"].get<uint32_t>())});
    ASSERT_EQ(cat.exit_code, 0) << cat.err;
    EXPECT_EQ(cat.out.size(), first["size"].get<size_t>()) << name;
    EXPECT_EQ(archive::to_hex(archive::sha256(cat.out)), first["sha256"].get<std::string>()) << name;
    ++catted;
  }
  EXPECT_GE(catted, 2u);

  // A UID that does not exist is an error naming the folder and UID.
  auto missing = testing::run_imapstage({"cat", "--archive", archive_dir, account, "INBOX", "999999"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("999999"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("INBOX"), std::string::npos) << missing.err;
}

TEST_F(BrowseTest, SecondAccountWithTheSameMailStoresNothingNew) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  auto first = testing::run_imapstage(export_args(archive_dir, "alice"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto before = nlohmann::json::parse(testing::run_imapstage({"ls", "--archive", archive_dir, "--json"}).out);

  // The same mailbox again under another account name: every message is
  // indexed a second time, no byte is stored again.
  auto args = export_args(archive_dir, "alice");
  args.insert(args.end(), {"--account-name", "alice-copy"});
  auto second = testing::run_imapstage(args);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  auto summary = json_lines(second.out).back();
  ASSERT_EQ(summary["event"], "summary");
  EXPECT_EQ(summary["bytes_stored"].get<uint64_t>(), 0u);
  EXPECT_GT(summary["messages"].get<uint64_t>(), 0u);

  auto after = nlohmann::json::parse(testing::run_imapstage({"ls", "--archive", archive_dir, "--json"}).out);
  ASSERT_EQ(after["accounts"].size(), 2u);
  EXPECT_EQ(after["accounts"][1]["messages"], after["accounts"][0]["messages"]);
  EXPECT_EQ(after["objects"], before["objects"]);
  EXPECT_EQ(after["stored_bytes"], before["stored_bytes"]);

  // Importing from an archive with two accounts needs --account; the error lists both.
  auto import = testing::run_imapstage({"import", "--archive", archive_dir, "--host", server_->host(), "--port",
                                        std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(),
                                        "--user", "bob", "--password-file", server_->password_file("bob"),
                                        "--dry-run"});
  EXPECT_NE(import.exit_code, 0);
  EXPECT_NE(import.err.find("several accounts"), std::string::npos) << import.err;
  EXPECT_NE(import.err.find("alice-copy"), std::string::npos) << import.err;
  EXPECT_NE(import.err.find("alice@" + server_->host()), std::string::npos) << import.err;
}

TEST_F(BrowseTest, InsecureSaysSoOnEveryRun) {
  TempDir dir;
  std::string archive_dir = dir.path() + "/archive";
  auto args = export_args(archive_dir, "bob");
  args.insert(args.end(), {"--insecure", "--folder", "INBOX"});
  for (int run = 0; run < 2; ++run) {
    auto r = testing::run_imapstage(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    bool warned = false;
    for (auto& e : json_lines(r.out))
      if (e["event"] == "warning" && e["text"].get<std::string>().find("NOT verified") != std::string::npos)
        warned = true;
    EXPECT_TRUE(warned) << "run " << run << ": " << r.out.substr(0, 2000);
  }
  // Without --insecure, no such warning.
  auto r = testing::run_imapstage(export_args(archive_dir, "bob"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("NOT verified"), std::string::npos);

  // A batch says so too.
  std::string accounts = dir.path() + "/accounts.csv";
  {
    std::ofstream(accounts) << "bob," << server_->password("bob") << ",,\n";
  }
  auto batch = testing::run_imapstage({"export", "--archive", dir.path() + "/batch", "--accounts", accounts, "--host",
                                       server_->host(), "--port", std::to_string(server_->imaps_port()),
                                       "--insecure", "--json"});
  ASSERT_EQ(batch.exit_code, 0) << batch.err;
  EXPECT_NE(batch.out.find("NOT verified"), std::string::npos) << batch.out.substr(0, 2000);
  EXPECT_EQ(batch.out.find(server_->password("bob")), std::string::npos);
}

}  // namespace
}  // namespace imapstage

// The test harness itself: the private Dovecot starts on free ports with the
// planned sample mail, its helpers change mail as asked, and destroying a
// TestServer leaves no process, port or file behind.
#include "tests/support/test_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

namespace imapstage::testing {
namespace {

namespace fs = std::filesystem;

// Connects to 127.0.0.1:port; returns the first line the server sends, or
// nullopt if the connection is refused.
std::optional<std::string> greeting(uint16_t port, bool read_line = true) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return std::nullopt;
  }
  std::string line;
  if (read_line) {
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    while (line.size() < 1000 && read(fd, &c, 1) == 1 && c != '\n') line += c;
  }
  close(fd);
  return line;
}

// Live (not zombie) processes whose command line contains `needle`.
std::vector<std::string> processes_matching(const std::string& needle) {
  std::vector<std::string> out;
  for (auto& entry : fs::directory_iterator("/proc")) {
    std::string pid = entry.path().filename();
    if (!std::all_of(pid.begin(), pid.end(), ::isdigit)) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string s((std::istreambuf_iterator<char>(stat)), {});
    auto close_paren = s.rfind(')');
    if (close_paren == std::string::npos || close_paren + 2 >= s.size() || s[close_paren + 2] == 'Z') continue;
    std::ifstream in(entry.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), {});
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(needle) != std::string::npos) out.push_back(pid + ": " + cmd);
  }
  return out;
}

const nlohmann::json* find_folder(const nlohmann::json& summary, const std::string& name) {
  for (auto& f : summary["folders"])
    if (f["name"] == name) return &f;
  return nullptr;
}

const nlohmann::json* find_message(const nlohmann::json& folder, uint32_t uid) {
  for (auto& m : folder["messages"])
    if (m["uid"] == uid) return &m;
  return nullptr;
}

std::set<std::string> flags_of(const nlohmann::json& m) { return m["flags"].get<std::set<std::string>>(); }

bool has_attribute(const nlohmann::json& folder, const std::string& attr) {
  for (auto& a : folder["attributes"]) {
    std::string s = a;
    if (s.size() == attr.size() && std::equal(s.begin(), s.end(), attr.begin(),
                                              [](char x, char y) { return std::tolower(x) == std::tolower(y); }))
      return true;
  }
  return false;
}

using TestServerTest = SharedServerTest;

TEST_F(TestServerTest, InfoAndPortsAnswer) {
  EXPECT_EQ(server_->host(), "127.0.0.1");
  EXPECT_NE(server_->imap_port(), server_->imaps_port());
  auto plain = greeting(server_->imap_port());
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->rfind("* OK", 0), 0u) << *plain;
  EXPECT_TRUE(greeting(server_->imaps_port(), false));  // TLS: just the TCP accept
  EXPECT_TRUE(fs::exists(server_->ca_file()));
  EXPECT_EQ(server_->master_user(), "admin");
  EXPECT_EQ(server_->master_separator(), "*");
  EXPECT_FALSE(server_->master_password().empty());
  EXPECT_FALSE(server_->password("alice").empty());
  EXPECT_NE(server_->password("alice"), server_->password("bob"));
  EXPECT_THROW(server_->password("nobody-here"), std::runtime_error);
  auto info = nlohmann::json::parse(server_->run({"info", server_->dir()}));
  EXPECT_EQ(info["imaps_port"], server_->imaps_port());
  EXPECT_EQ(info["dir"], server_->dir());
  // The default kind, with the names and namespace tests written for Dovecot assume.
  EXPECT_EQ(server_->kind(), "dovecot");
  EXPECT_EQ(server_->login("alice"), "alice");
  EXPECT_EQ(server_->personal_prefix(), "");
  EXPECT_EQ(server_->personal_separator(), '/');
  EXPECT_TRUE(server_->special_use());
  EXPECT_EQ(server_->raw_name("Projekte/Übersicht"), "Projekte/&ANw-bersicht");
  EXPECT_EQ(server_->rewrites()["bare_lf"], "crlf");
  EXPECT_EQ(server_->expected_after_append("a\nb\r\n"), "a\r\nb\r\n");
  EXPECT_TRUE(server_->admin_user().empty());
  // server.json holds passwords: owner only.
  struct stat st{};
  ASSERT_EQ(stat((server_->dir() + "/server.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(TestServerTest, DefaultSeedHasEverythingTestsRelyOn) {
  auto s = server_->summary("alice");
  std::map<std::string, const nlohmann::json*> by_name;
  for (auto& f : s["folders"]) by_name[f["name"]] = &f;
  for (auto& f : s["folders"]) {
    EXPECT_EQ(f["canonical"], f["name"]);  // Dovecot: prefix "", separator "/"
    EXPECT_EQ(f["namespace"], "personal");
  }

  // Special-use folders carry their attribute in a plain LIST.
  for (auto [name, use] : std::map<std::string, std::string>{
           {"Sent", "\\Sent"}, {"Drafts", "\\Drafts"}, {"Trash", "\\Trash"}, {"Junk", "\\Junk"},
           {"Archive", "\\Archive"}}) {
    ASSERT_TRUE(by_name.count(name)) << name;
    EXPECT_TRUE(has_attribute(*by_name[name], use)) << name << " " << by_name[name]->dump();
  }
  // Non-ASCII names (modified UTF-7 on the wire), nested folders, \Noselect parents.
  ASSERT_TRUE(by_name.count("Café & Co"));
  EXPECT_EQ((*by_name["Café & Co"])["raw"], "Caf&AOk- &- Co");
  ASSERT_TRUE(by_name.count("日本語"));
  ASSERT_TRUE(by_name.count("Projekte/Übersicht"));
  EXPECT_EQ((*by_name["Projekte/Übersicht"])["raw"], "Projekte/&ANw-bersicht");
  ASSERT_TRUE(by_name.count("Projects/2024/Q1"));
  EXPECT_EQ((*by_name["Projects/2024/Q1"])["delimiter"], "/");
  ASSERT_TRUE(by_name.count("Projects/2024"));
  EXPECT_TRUE(has_attribute(*by_name["Projects/2024"], "\\Noselect"));
  EXPECT_TRUE((*by_name["Projects/2024"])["messages"].is_null());
  ASSERT_TRUE(by_name.count("Empty Folder"));
  EXPECT_TRUE((*by_name["Empty Folder"])["messages"].empty());

  // Subscriptions: some folders are, some are not.
  EXPECT_TRUE((*by_name["Sent"])["subscribed"].get<bool>());
  EXPECT_FALSE((*by_name["Junk"])["subscribed"].get<bool>());

  std::set<std::string> flags;
  std::map<std::string, std::set<std::string>> folders_of_hash;
  size_t messages = 0, large = 0;
  int64_t oldest = INT64_MAX, newest = 0;
  for (auto& f : s["folders"]) {
    if (f["messages"].is_null()) continue;
    EXPECT_TRUE(f["uidvalidity"].is_number()) << f["name"];
    EXPECT_TRUE(f["highestmodseq"].is_number()) << f["name"];
    uint32_t last_uid = 0;
    for (auto& m : f["messages"]) {
      ++messages;
      EXPECT_GT(m["uid"].get<uint32_t>(), last_uid);
      last_uid = m["uid"];
      EXPECT_EQ(m["sha256"].get<std::string>().size(), 64u);
      for (auto& fl : m["flags"]) flags.insert(fl);
      if (m["size"].get<uint64_t>() >= 3'000'000) ++large;
      folders_of_hash[m["sha256"]].insert(f["name"]);
      oldest = std::min(oldest, m["internaldate_unix"].get<int64_t>());
      newest = std::max(newest, m["internaldate_unix"].get<int64_t>());
    }
  }
  EXPECT_GE(messages, 150u);
  EXPECT_LE(messages, 300u);
  EXPECT_GE(large, 1u);
  for (auto f : {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded", "$Junk", "$NotJunk",
                 "$Label1", "Project_X"})
    EXPECT_TRUE(flags.count(f)) << f;
  EXPECT_FALSE(flags.count("\\Recent"));
  EXPECT_TRUE(std::any_of(folders_of_hash.begin(), folders_of_hash.end(),
                          [](auto& kv) { return kv.second.size() >= 2; }));
  EXPECT_LT(oldest, 1'200'000'000);  // before 2008
  EXPECT_GT(newest, 1'700'000'000);  // after 2023

  // Some messages are byte-identical in alice's and bob's accounts.
  auto b = server_->summary("bob");
  size_t shared = 0;
  for (auto& f : b["folders"])
    if (!f["messages"].is_null())
      for (auto& m : f["messages"]) shared += folders_of_hash.count(m["sha256"]);
  EXPECT_GE(shared, 2u);

  // Without hashes: same messages, no sha256.
  auto quick = server_->summary("alice", false);
  auto inbox = find_folder(quick, "INBOX");
  ASSERT_TRUE(inbox);
  EXPECT_EQ((*inbox)["messages"].size(), (*find_folder(s, "INBOX"))["messages"].size());
  EXPECT_FALSE((*inbox)["messages"][0].contains("sha256"));

  // What the server reports is exactly what was planned.
  EXPECT_NO_THROW(server_->run({"check-seed", server_->dir(), "alice", "bob"}));
}

TEST_F(TestServerTest, AppendStoreExpungeChangeTheSummary) {
  std::string pw = server_->add_user("tester");
  EXPECT_EQ(server_->add_user("tester"), pw);
  EXPECT_EQ(server_->password("tester"), pw);
  auto empty = server_->summary("tester");
  ASSERT_EQ(empty["folders"].size(), 1u);
  EXPECT_EQ(empty["folders"][0]["name"], "INBOX");
  EXPECT_TRUE(empty["folders"][0]["messages"].empty());

  const std::string m1 = "Subject: one\r\nMessage-ID: <one@test>\r\n\r\nfirst\r\n";
  const std::string m2 = "Subject: two\r\nMessage-ID: <two@test>\r\n\r\nsecond\r\n";
  uint32_t u1 = server_->append("tester", "INBOX", m1, "\\Seen $Label2", "01-Feb-2010 10:00:00 +0100");
  uint32_t u2 = server_->append("tester", "INBOX", m2);
  uint32_t u3 = server_->append("tester", "Neu/Größe", m1, "\\Flagged");  // created on the way
  EXPECT_GT(u2, u1);
  EXPECT_EQ(u3, 1u);

  auto s = server_->summary("tester");
  auto inbox = find_folder(s, "INBOX");
  ASSERT_TRUE(inbox);
  ASSERT_EQ((*inbox)["messages"].size(), 2u);
  auto a = find_message(*inbox, u1);
  ASSERT_TRUE(a);
  EXPECT_EQ(flags_of(*a), (std::set<std::string>{"\\Seen", "$Label2"}));
  EXPECT_EQ((*a)["internaldate_unix"], 1265014800);
  EXPECT_EQ((*a)["size"], m1.size());
  EXPECT_EQ((*a)["message_id"], "<one@test>");
  auto nested = find_folder(s, "Neu/Größe");
  ASSERT_TRUE(nested);
  EXPECT_EQ((*nested)["raw"], "Neu/Gr&APYA3w-e");
  EXPECT_EQ((*nested)["messages"][0]["sha256"], (*a)["sha256"]);
  EXPECT_NE((*find_message(*inbox, u2))["sha256"], (*a)["sha256"]);
  auto modseq_before = (*inbox)["highestmodseq"].get<uint64_t>();

  server_->store("tester", "INBOX", u1, "+FLAGS", "\\Answered $Forwarded");
  server_->store("tester", "INBOX", u1, "-FLAGS", "\\Seen");
  server_->store("tester", "INBOX", u2, "FLAGS", "\\Flagged");
  s = server_->summary("tester", false);
  inbox = find_folder(s, "INBOX");
  EXPECT_EQ(flags_of(*find_message(*inbox, u1)), (std::set<std::string>{"\\Answered", "$Forwarded", "$Label2"}));
  EXPECT_EQ(flags_of(*find_message(*inbox, u2)), (std::set<std::string>{"\\Flagged"}));
  EXPECT_GT((*inbox)["highestmodseq"].get<uint64_t>(), modseq_before);

  EXPECT_THROW(server_->expunge("tester", "INBOX", {u1, 999}), std::runtime_error);
  server_->expunge("tester", "INBOX", {u1});
  s = server_->summary("tester", false);
  inbox = find_folder(s, "INBOX");
  ASSERT_EQ((*inbox)["messages"].size(), 1u);
  EXPECT_EQ((*inbox)["messages"][0]["uid"], u2);
  EXPECT_GT((*inbox)["uidnext"].get<uint32_t>(), u2);

  // Folders and UIDVALIDITY.
  uint32_t validity = (*inbox)["uidvalidity"];
  server_->run({"bump-uidvalidity", server_->dir(), "tester", "INBOX"});
  server_->run({"create", server_->dir(), "tester", "Gesendet"});
  server_->run({"delete-folder", server_->dir(), "tester", "Neu/Größe"});
  s = server_->summary("tester", false);
  inbox = find_folder(s, "INBOX");
  EXPECT_NE((*inbox)["uidvalidity"].get<uint32_t>(), validity);
  EXPECT_EQ((*inbox)["messages"][0]["uid"], u2);
  auto sent = find_folder(s, "Gesendet");
  ASSERT_TRUE(sent);
  EXPECT_TRUE(has_attribute(*sent, "\\Sent"));
  EXPECT_FALSE(find_folder(s, "Neu/Größe"));

  // A password file for --password-file.
  std::string file = server_->password_file("tester");
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, pw);
  struct stat st{};
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(TestServerTest, FailuresThrowWithTheReason) {
  try {
    server_->store("alice", "No Such Folder", 1, "+FLAGS", "\\Seen");
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("No Such Folder"), std::string::npos) << e.what();
  }
  EXPECT_THROW(server_->summary("nobody-here"), std::runtime_error);
  EXPECT_THROW(server_->run({"no-such-command"}), std::runtime_error);
}

TEST(TestServerLifecycle, DestructionLeavesNothingBehind) {
  std::string dir, instance;
  uint16_t imap_port = 0, imaps_port = 0;
  {
    TestServerOptions o;
    o.seed = "none";
    o.users = {"src"};
    o.target_users = {"dst"};
    o.alt_special_use = "de";
    o.append_limit = 100'000;
    TestServer server(o);
    dir = server.dir();
    instance = server.instance();
    imap_port = server.imap_port();
    imaps_port = server.imaps_port();
    EXPECT_FALSE(processes_matching(dir).empty());
    EXPECT_GE(processes_matching(instance + "/").size(), 3u);

    // Target accounts are empty; --alt-special-use gives them other special-use names.
    auto s = server.summary("dst");
    auto gesendet = find_folder(s, "Gesendet");
    ASSERT_TRUE(gesendet);
    EXPECT_TRUE(has_attribute(*gesendet, "\\Sent"));
    auto papierkorb = find_folder(s, "Papierkorb");
    ASSERT_TRUE(papierkorb);
    EXPECT_TRUE(has_attribute(*papierkorb, "\\Trash"));
    ASSERT_TRUE(find_folder(s, "Entwürfe"));
    EXPECT_FALSE(find_folder(s, "Sent"));
    for (auto& f : s["folders"]) EXPECT_TRUE(f["messages"].empty()) << f["name"];
    auto src = server.summary("src");
    for (auto& f : src["folders"]) EXPECT_TRUE(f["messages"].empty()) << f["name"];

    // APPENDLIMIT is enforced.
    EXPECT_EQ(server.info()["append_limit"], 100'000);
    std::string big = "Subject: big\r\n\r\n" + std::string(150'000, 'x') + "\r\n";
    try {
      server.append("src", "INBOX", big);
      ADD_FAILURE() << "a message over the limit was accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("[LIMIT]"), std::string::npos) << e.what();
    }
    EXPECT_EQ(server.append("src", "INBOX", "Subject: small\r\n\r\nx\r\n"), 1u);
  }
  EXPECT_TRUE(processes_matching(dir).empty()) << ::testing::PrintToString(processes_matching(dir));
  EXPECT_TRUE(processes_matching(instance + "/").empty())
      << ::testing::PrintToString(processes_matching(instance + "/"));
  EXPECT_FALSE(greeting(imap_port, false));
  EXPECT_FALSE(greeting(imaps_port, false));
  EXPECT_FALSE(fs::exists(dir));
}

TEST(TestServerLifecycle, StopIsIdempotent) {
  TestServerOptions o;
  o.seed = "none";
  o.users = {"x"};
  TestServer server(o);
  server.stop();
  server.stop();
  EXPECT_NO_THROW(server.run({"stop", server.dir()}));
  EXPECT_FALSE(greeting(server.imap_port(), false));
}

TEST(TempDirTest, CreatedAndRemoved) {
  std::string path;
  {
    TempDir d;
    path = d.path();
    ASSERT_TRUE(fs::is_directory(path));
    std::ofstream(path + "/file") << "x";
    fs::create_directories(path + "/a/b");
  }
  EXPECT_FALSE(fs::exists(path));
}

}  // namespace
}  // namespace imapstage::testing

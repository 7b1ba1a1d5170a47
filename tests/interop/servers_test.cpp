// The interop harness itself, for each kind of server (Dovecot, Cyrus IMAP,
// Courier-IMAP): the server starts, imapstage's own Session logs in over
// STARTTLS and implicit TLS with the certificate verified, sees the folders
// and the namespace the harness reports, and messages appended through the
// harness come back byte for byte as the harness's recorded rewrites say.
// A server that cannot be installed or started fails these tests.
#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "archive-format/hash.h"
#include "common/error.h"
#include "imap/session.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using imap::AuthMechanism;
using imap::Credentials;
using imap::Endpoint;
using imap::Session;
using imap::TlsMode;
using testing::TestServer;
using testing::TestServerOptions;

class ServersTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() { servers_ = new std::map<std::string, std::unique_ptr<TestServer>>(); }
  static void TearDownTestSuite() {
    delete servers_;
    servers_ = nullptr;
  }

  // One seeded server per kind, shared by the tests of that kind.
  TestServer& server() {
    auto& slot = (*servers_)[GetParam()];
    if (!slot) {
      TestServerOptions o;
      o.kind = GetParam();
      o.users = {"alice"};
      o.target_users = {"tgt"};
      auto t0 = std::chrono::steady_clock::now();
      slot = std::make_unique<TestServer>(o);
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
      RecordProperty("start_ms", static_cast<int>(ms.count()));
      std::cerr << GetParam() << " started and seeded in " << ms.count() << " ms\n";
    }
    return *slot;
  }

  Endpoint endpoint(TlsMode tls, const std::string& host) {
    Endpoint e;
    e.host = host;
    e.tls = tls;
    e.port = tls == TlsMode::implicit ? server().imaps_port() : server().imap_port();
    e.ca_file = server().ca_file();
    e.timeout = std::chrono::seconds(30);
    return e;
  }

  std::unique_ptr<Session> open(TlsMode tls, AuthMechanism mechanism, const std::string& user = "alice",
                                const std::string& host = "localhost") {
    auto s = Session::connect(endpoint(tls, host));
    Credentials c;
    c.user = server().login(user);
    c.secret = server().password(user);
    c.mechanism = mechanism;
    s->login(c);
    return s;
  }

  static std::map<std::string, std::unique_ptr<TestServer>>* servers_;
};

std::map<std::string, std::unique_ptr<TestServer>>* ServersTest::servers_ = nullptr;

const nlohmann::json* find_canonical(const nlohmann::json& summary, const std::string& canonical) {
  for (auto& f : summary["folders"])
    if (f["canonical"] == canonical && f["namespace"] == "personal") return &f;
  return nullptr;
}

TEST_P(ServersTest, InfoDescribesTheServer) {
  auto& s = server();
  EXPECT_EQ(s.kind(), GetParam());
  EXPECT_EQ(s.host(), "127.0.0.1");
  EXPECT_NE(s.imap_port(), s.imaps_port());
  if (GetParam() == "dovecot") {
    EXPECT_EQ(s.personal_prefix(), "");
    EXPECT_EQ(s.personal_separator(), '/');
    EXPECT_EQ(s.login("alice"), "alice");
    EXPECT_EQ(s.master_user(), "admin");
  } else {
    EXPECT_EQ(s.personal_prefix(), "INBOX.");
    EXPECT_EQ(s.personal_separator(), '.');
    EXPECT_TRUE(s.master_user().empty());
  }
  if (GetParam() == "courier") {
    EXPECT_NE(s.login("alice"), "alice");  // unique per instance: Courier's accounts are global
    EXPECT_EQ(s.login("alice").rfind("alice.", 0), 0u) << s.login("alice");
    EXPECT_FALSE(s.special_use());
  } else {
    EXPECT_EQ(s.login("alice"), "alice");
    EXPECT_TRUE(s.special_use());
  }
  EXPECT_EQ(s.admin_user().empty(), GetParam() != "cyrus");
  EXPECT_EQ(s.raw_name("INBOX"), "INBOX");
  EXPECT_EQ(s.raw_name("Projects/2024/Q1"),
            GetParam() == "dovecot" ? "Projects/2024/Q1" : "INBOX.Projects.2024.Q1");
  EXPECT_EQ(s.raw_name("Café & Co"), s.personal_prefix() + "Caf&AOk- &- Co");
  EXPECT_THROW(s.login("nobody-here"), std::runtime_error);
  for (const char* key : {"header_8bit", "bare_cr", "bare_lf", "nul", "missing_final_crlf"})
    EXPECT_TRUE(s.rewrites().contains(key)) << key;
}

TEST_P(ServersTest, SessionLogsInOverStartTlsAndImplicitTlsAndSeesTheHarnessFolders) {
  auto& s = server();
  auto summary = s.summary("alice", false);
  std::set<std::string> harness_raw;
  for (auto& f : summary["folders"]) harness_raw.insert(f["raw"].get<std::string>());
  ASSERT_EQ(summary["personal_namespace"]["prefix"], s.personal_prefix());
  for (const char* logical : {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive", "Archive/2019",
                              "Projects/2024/Q1", "Projects/2024/Q2", "Projekte/Übersicht", "日本語", "Café & Co",
                              "Empty Folder"}) {
    auto* f = find_canonical(summary, logical);
    ASSERT_NE(f, nullptr) << logical;
    EXPECT_EQ((*f)["raw"], s.raw_name(logical)) << logical;
  }
  EXPECT_EQ((*find_canonical(summary, "Archive/2019"))["exists"].get<int>() > 0, true);

  struct Way {
    TlsMode tls;
    AuthMechanism mechanism;
    const char* host;
  };
  for (Way way : {Way{TlsMode::starttls, AuthMechanism::login, "localhost"},
                  Way{TlsMode::starttls, AuthMechanism::plain, "127.0.0.1"},
                  Way{TlsMode::implicit, AuthMechanism::login, "127.0.0.1"},
                  Way{TlsMode::implicit, AuthMechanism::plain, "localhost"}}) {
    SCOPED_TRACE(std::string(way.tls == TlsMode::implicit ? "implicit" : "starttls") + " " +
                 (way.mechanism == AuthMechanism::login ? "LOGIN" : "PLAIN") + " " + way.host);
    std::unique_ptr<Session> session;
    ASSERT_NO_THROW(session = open(way.tls, way.mechanism, "alice", way.host));
    auto ns = session->personal_namespace();
    EXPECT_EQ(ns.prefix, s.personal_prefix());
    EXPECT_EQ(ns.delimiter, s.personal_separator());
    std::set<std::string> session_raw;
    std::map<std::string, std::string> special;
    for (auto& e : session->list()) {
      session_raw.insert(e.name_raw);
      if (!e.special_use.empty()) special[e.name_raw] = e.special_use;
    }
    EXPECT_EQ(session_raw, harness_raw);
    if (s.special_use()) {
      EXPECT_EQ(special[s.raw_name("Sent")], "\\Sent");
      EXPECT_EQ(special[s.raw_name("Drafts")], "\\Drafts");
      EXPECT_EQ(special[s.raw_name("Trash")], "\\Trash");
      EXPECT_EQ(special[s.raw_name("Junk")], "\\Junk");
      EXPECT_EQ(special[s.raw_name("Archive")], "\\Archive");
    } else {
      EXPECT_TRUE(special.empty());
    }
    auto box = session->examine(s.raw_name("Archive/2019"));
    EXPECT_EQ(box.exists, (*find_canonical(summary, "Archive/2019"))["exists"].get<uint32_t>());
    session->logout();
  }
}

TEST_P(ServersTest, WrongPasswordAndUntrustedCertificateAreRefused) {
  auto& s = server();
  {
    auto session = Session::connect(endpoint(TlsMode::implicit, "localhost"));
    Credentials c;
    c.user = s.login("alice");
    c.secret = s.password("alice") + "x";
    try {
      session->login(c);
      ADD_FAILURE() << "a wrong password was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::auth) << e.what();
    }
  }
  for (TlsMode tls : {TlsMode::implicit, TlsMode::starttls}) {
    Endpoint e = endpoint(tls, "localhost");
    e.ca_file.clear();  // the system's trust store does not know the harness's CA
    try {
      Session::connect(e);
      ADD_FAILURE() << "a certificate from an unknown CA was accepted";
    } catch (const Error& err) {
      EXPECT_EQ(err.kind(), ErrorKind::tls) << err.what();
    }
  }
}

// Messages that show each recorded rewrite; the clean one must come back unchanged everywhere.
std::vector<std::pair<std::string, std::string>> probe_messages() {
  std::string head = "From: probe@example.org\r\nTo: alice@example.test\r\nSubject: probe\r\n";
  return {
      {"clean", head + "Message-ID: <clean@probe>\r\n\r\nline one\r\nline two\r\n"},
      {"header_8bit", head + "Message-ID: <h8@probe>\r\nX-Name: J\xc3\xb6rg M\xc3\xbcller\r\n\r\nbody\r\n"},
      {"body_8bit", head + "Message-ID: <b8@probe>\r\n\r\nGr\xc3\xbc\xc3\x9f" "e\r\n"},
      {"part_header_8bit", head + "Message-ID: <p8@probe>\r\nMIME-Version: 1.0\r\n"
                            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                            "Content-Type: text/plain; name=\"\xc3\xbc.txt\"\r\n\r\nhi\r\n--b--\r\n"},
      {"bare_cr", head + "Message-ID: <cr@probe>\r\n\r\nbefore\rafter\r\n"},
      {"bare_lf", head + "Message-ID: <lf@probe>\r\n\r\nbefore\nafter\r\n"},
      {"nul", head + "Message-ID: <nul@probe>\r\n\r\nbefore" + std::string(1, '\0') + "after\r\n"},
      {"missing_final_crlf", head + "Message-ID: <end@probe>\r\n\r\nno line end"},
  };
}

TEST_P(ServersTest, AppendedMessagesComeBackAsTheRecordedRewritesSay) {
  auto& s = server();
  const std::string folder = "Interop/Probes";
  std::map<uint32_t, std::pair<std::string, std::string>> appended;  // uid -> (probe, expected bytes)
  int refused = 0;
  for (auto& [name, bytes] : probe_messages()) {
    SCOPED_TRACE(name);
    auto expected = s.expected_after_append(bytes);
    if (name == "clean" || name == "body_8bit" || name == "part_header_8bit") {
      ASSERT_TRUE(expected);
      EXPECT_EQ(*expected, bytes);
    }
    if (!expected) {
      EXPECT_THROW(s.append("alice", folder, bytes, "\\Seen", "03-Feb-2011 04:05:06 +0100"), std::runtime_error);
      ++refused;
      continue;
    }
    uint32_t uid = s.append("alice", folder, bytes, "\\Seen $Probe", "03-Feb-2011 04:05:06 +0100");
    appended[uid] = {name, *expected};
  }
  EXPECT_EQ(refused, GetParam() == "cyrus" ? 2 : 0);

  auto summary = s.summary("alice");
  auto* f = find_canonical(summary, folder);
  ASSERT_NE(f, nullptr);
  ASSERT_EQ((*f)["messages"].size(), appended.size());
  for (auto& m : (*f)["messages"]) {
    auto it = appended.find(m["uid"].get<uint32_t>());
    ASSERT_NE(it, appended.end()) << m.dump();
    SCOPED_TRACE(it->second.first);
    const std::string& expected = it->second.second;
    EXPECT_EQ(m["sha256"], archive::to_hex(archive::sha256(expected)));
    EXPECT_EQ(m["size"].get<size_t>(), expected.size());
    EXPECT_EQ(m["flags"], nlohmann::json({"$Probe", "\\Seen"}));
    EXPECT_EQ(m["internaldate_unix"].get<int64_t>(), 1296702306);
  }

  // imapstage's session fetches the same bytes.
  auto session = open(TlsMode::implicit, AuthMechanism::login);
  session->examine(s.raw_name(folder));
  for (auto& [uid, probe] : appended) {
    SCOPED_TRACE(probe.first);
    auto m = session->fetch_one(uid);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->body, probe.second);
  }
  session->logout();
}

TEST_P(ServersTest, OpsWorkInTheServersNamespace) {
  auto& s = server();
  std::string msg = "From: a@example.org\r\nSubject: ops\r\nMessage-ID: <ops@probe>\r\n\r\nops\r\n";
  uint32_t uid = s.append("tgt", "Ops/Deep/Folder", msg, "\\Seen", "01-Jan-2020 00:00:00 +0000");
  s.store("tgt", "Ops/Deep/Folder", uid, "+FLAGS", "\\Flagged $Ops");
  s.store("tgt", "Ops/Deep/Folder", uid, "-FLAGS", "\\Seen");
  auto summary = s.summary("tgt");
  auto* f = find_canonical(summary, "Ops/Deep/Folder");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ((*f)["raw"], s.raw_name("Ops/Deep/Folder"));
  ASSERT_EQ((*f)["messages"].size(), 1u);
  EXPECT_EQ((*f)["messages"][0]["flags"], nlohmann::json({"$Ops", "\\Flagged"}));
  s.expunge("tgt", "Ops/Deep/Folder", {uid});
  summary = s.summary("tgt");
  EXPECT_TRUE((*find_canonical(summary, "Ops/Deep/Folder"))["messages"].empty());

  std::string pw = s.add_user("newbie");
  auto session = open(TlsMode::starttls, AuthMechanism::login, "newbie");
  auto list = session->list();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name_raw, "INBOX");
  session->logout();
}

// (uid, flags, INTERNALDATE, sha256) of every message of a summary folder.
std::vector<std::tuple<uint32_t, nlohmann::json, int64_t, std::string>> messages_of(const nlohmann::json& folder) {
  std::vector<std::tuple<uint32_t, nlohmann::json, int64_t, std::string>> out;
  for (auto& m : folder["messages"])
    out.emplace_back(m["uid"].get<uint32_t>(), m["flags"], m["internaldate_unix"].get<int64_t>(),
                     m["sha256"].get<std::string>());
  return out;
}

TEST_P(ServersTest, BumpUidvalidityKeepsMessagesUidsAndChildren) {
  auto& s = server();
  // A gap in the UIDs and a child folder make it harder (Cyrus recreates the folder).
  auto first = s.summary("alice");
  auto uids = messages_of(*find_canonical(first, "Archive"));
  ASSERT_GT(uids.size(), 3u);
  s.expunge("alice", "Archive", {std::get<0>(uids[1])});
  auto before = s.summary("alice");
  std::string out = s.run({"bump-uidvalidity", "--", s.dir(), "alice", "Archive"});
  auto after = s.summary("alice");
  auto* b = find_canonical(before, "Archive");
  auto* a = find_canonical(after, "Archive");
  ASSERT_NE(a, nullptr);
  EXPECT_GT((*a)["uidvalidity"].get<uint32_t>(), (*b)["uidvalidity"].get<uint32_t>());
  EXPECT_EQ(out, std::to_string((*b)["uidvalidity"].get<uint32_t>()) + " " +
                     std::to_string((*a)["uidvalidity"].get<uint32_t>()) + "\n");
  EXPECT_EQ((*a)["uidnext"], (*b)["uidnext"]);
  EXPECT_EQ(messages_of(*a), messages_of(*b));
  EXPECT_EQ((*a)["attributes"], (*b)["attributes"]);
  EXPECT_EQ((*a)["subscribed"], (*b)["subscribed"]);
  auto* child_before = find_canonical(before, "Archive/2019");
  auto* child_after = find_canonical(after, "Archive/2019");
  ASSERT_NE(child_after, nullptr);
  EXPECT_EQ((*child_after)["uidvalidity"], (*child_before)["uidvalidity"]);
  EXPECT_EQ(messages_of(*child_after), messages_of(*child_before));
  EXPECT_EQ(after["folders"].size(), before["folders"].size());
}

TEST(CyrusSharingTest, OtherUsersAndSharedFoldersAreListedOutsideThePersonalNamespace) {
  TestServerOptions o;
  o.kind = "cyrus";
  o.seed = "none";
  o.users = {"alice", "bob"};
  TestServer s(o);
  std::string msg = "From: b@example.org\r\nSubject: shared\r\nMessage-ID: <shared@probe>\r\n\r\nhello\r\n";
  s.append("bob", "Sent", msg);
  EXPECT_EQ(s.setacl("bob", "Sent", "alice", "lrs"), "user.bob.Sent");
  auto shared = s.create_shared("Team/Notes", {"alice"}, msg);
  EXPECT_EQ(shared.mailbox, "Team.Notes");
  EXPECT_EQ(shared.uid, 1u);

  auto summary = s.summary("alice");
  std::map<std::string, std::string> ns_of;
  for (auto& f : summary["folders"]) ns_of[f["canonical"]] = f["namespace"];
  EXPECT_EQ(ns_of["user/bob/Sent"], "other");
  EXPECT_EQ(ns_of["Team/Notes"], "shared");
  EXPECT_EQ(ns_of["INBOX"], "personal");

  Endpoint e;
  e.host = "localhost";
  e.port = s.imaps_port();
  e.ca_file = s.ca_file();
  auto session = Session::connect(e);
  Credentials c;
  c.user = s.login("alice");
  c.secret = s.password("alice");
  session->login(c);
  std::set<std::string> raw;
  for (auto& entry : session->list()) raw.insert(entry.name_raw);
  EXPECT_TRUE(raw.count("user.bob.Sent"));
  EXPECT_TRUE(raw.count("Team.Notes"));
  EXPECT_EQ(session->examine("user.bob.Sent").exists, 1u);
  session->logout();
}

TEST(CyrusOptionsTest, AltNamespaceAndUnixHierarchySep) {
  TestServerOptions o;
  o.kind = "cyrus";
  o.seed = "none";
  o.users = {"alice"};
  o.cyrus_altnamespace = true;
  o.cyrus_unixhierarchysep = true;
  TestServer s(o);
  EXPECT_EQ(s.personal_prefix(), "");
  EXPECT_EQ(s.personal_separator(), '/');
  s.append("alice", "A/B", "From: a@example.org\r\nSubject: x\r\n\r\nx\r\n");
  auto summary = s.summary("alice");
  auto* f = find_canonical(summary, "A/B");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ((*f)["raw"], "A/B");
}

INSTANTIATE_TEST_SUITE_P(Kinds, ServersTest, ::testing::Values("dovecot", "cyrus", "courier"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace imapstage

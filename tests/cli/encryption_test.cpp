// Encrypted archives from the command line, against the harness Dovecot:
// export, import and a deep verify against the target; nothing of the mail
// in any archive file; a wrong passphrase writes nothing; key slots; an
// incremental re-export; verify without the passphrase; bundles between two
// archives sharing a key; the version 4 fixture read by ls, cat, verify and
// import.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::TestServer;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = read_file(e.path());
  return out;
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

nlohmann::json last_json_line(const std::string& out) {
  size_t end = out.find_last_not_of('\n');
  if (end == std::string::npos) return {};
  size_t start = out.rfind('\n', end);
  start = start == std::string::npos ? 0 : start + 1;
  try {
    return nlohmann::json::parse(out.substr(start, end - start + 1));
  } catch (...) {
    return {};
  }
}

const std::string kSubject = "Nordlicht board minutes 31337";
const std::string kSender = "kwame.treasurer@nordlicht-holding.example";
const std::string kMessageId = "<nordlicht-7731-secret@nordlicht-holding.example>";
const std::string kFolder = "Geheimsache Nordlicht";
const std::string kAccount = "nordlicht-account-name";

class EncryptionCli : public testing::SharedServerTest {
 protected:
  void SetUp() override {
    pass_ = fs::path(tmp_.path()) / "pass";
    write_file(pass_, "first passphrase\n");
    if (!seeded_) {
      server_->add_user("enc_src");
      server_->add_user("enc_dst");
      server_->append("enc_src", kFolder,
                      "From: " + kSender + "\r\nTo: someone@example.org\r\nSubject: " + kSubject +
                          "\r\nMessage-ID: " + kMessageId + "\r\n\r\nThe numbers of the quarter.\r\n",
                      "\\Seen $Nordlicht");
      server_->append("enc_src", "INBOX", "From: a@example.org\r\nSubject: hello\r\n\r\nplain body\r\n");
      seeded_ = true;
    }
  }
  std::vector<std::string> server_args(const std::string& user) const {
    return {"--host", server_->host(), "--port", std::to_string(server_->imaps_port()), "--ca-file",
            server_->ca_file(), "--user", user, "--password-file", server_->password_file(user)};
  }
  std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& more) const {
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }
  std::vector<std::string> pass(const fs::path& file) const { return {"--passphrase-file", file.string()}; }
  testing::ProcessResult run(const std::vector<std::string>& args) { return testing::run_imapstage(args); }

  std::string make_encrypted_export(const fs::path& dir) {
    auto init = run({"init", "--archive", dir.string(), "--encrypt", "--scrypt-log-n", "12", "--passphrase-file",
                     pass_.string()});
    EXPECT_EQ(init.exit_code, 0) << init.err;
    auto ex = run(with(with({"export", "--archive", dir.string(), "--account-name", kAccount, "--json"},
                            server_args("enc_src")),
                       pass(pass_)));
    EXPECT_EQ(ex.exit_code, 0) << ex.err;
    return ex.out;
  }

  TempDir tmp_;
  fs::path pass_;
  static bool seeded_;
};
bool EncryptionCli::seeded_ = false;

TEST_F(EncryptionCli, ExportImportDeepVerifyAndNothingPlainInTheArchive) {
  fs::path dir = fs::path(tmp_.path()) / "enc";
  make_encrypted_export(dir);
  auto ls = run(with({"ls", "--archive", dir.string(), "--json"}, pass(pass_)));
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_NE(ls.out.find(kAccount), std::string::npos) << ls.out;

  auto import = run(with(with({"import", "--archive", dir.string(), "--account", kAccount}, server_args("enc_dst")),
                         pass(pass_)));
  ASSERT_EQ(import.exit_code, 0) << import.err;
  auto verify = run(with(with({"verify", "--archive", dir.string(), "--account", kAccount, "--against", "target",
                               "--deep", "--json"},
                              server_args("enc_dst")),
                         pass(pass_)));
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  auto offline = run(with({"verify", "--archive", dir.string()}, pass(pass_)));
  EXPECT_EQ(offline.exit_code, 0) << offline.out << offline.err;

  // The manifest root is that of a plain archive of the same mail.
  fs::path plain = fs::path(tmp_.path()) / "plain";
  ASSERT_EQ(run(with({"export", "--archive", plain.string(), "--account-name", kAccount}, server_args("enc_src")))
                .exit_code,
            0);
  auto m1 = run(with({"manifest", "--archive", dir.string(), "--out", (fs::path(tmp_.path()) / "m1.json").string()},
                     pass(pass_)));
  auto m2 = run({"manifest", "--archive", plain.string(), "--out", (fs::path(tmp_.path()) / "m2.json").string()});
  ASSERT_EQ(m1.exit_code, 0) << m1.err;
  ASSERT_EQ(m2.exit_code, 0) << m2.err;
  auto j1 = nlohmann::json::parse(read_file(fs::path(tmp_.path()) / "m1.json"));
  auto j2 = nlohmann::json::parse(read_file(fs::path(tmp_.path()) / "m2.json"));
  EXPECT_EQ(j1["root"], j2["root"]);
  EXPECT_EQ(j1["messages"], j2["messages"]);

  // A batch (one account that works, one whose login fails) with a daily
  // budget writes DIR/batches/{export,budgets}.json: sealed, like the rest.
  std::string source_password = read_file(server_->password_file("enc_src"));
  while (!source_password.empty() && (source_password.back() == '\n' || source_password.back() == '\r'))
    source_password.pop_back();
  fs::path accounts = fs::path(tmp_.path()) / "accounts.csv";
  write_file(accounts, "enc_src," + source_password + "\nnordlicht_nobody,wrong-password\n");
  auto batch = run(with({"export", "--archive", dir.string(), "--accounts", accounts.string(), "--host",
                         server_->host(), "--port", std::to_string(server_->imaps_port()), "--ca-file",
                         server_->ca_file(), "--daily-budget", "1G", "--json"},
                        pass(pass_)));
  EXPECT_NE(batch.exit_code, 0) << batch.out << batch.err;  // the second account failed
  ASSERT_TRUE(fs::exists(dir / "batches" / "export.json")) << batch.err;
  ASSERT_TRUE(fs::exists(dir / "batches" / "budgets.json")) << batch.err;
  auto status = run(with({"status", "--archive", dir.string(), "--json"}, pass(pass_)));
  EXPECT_NE(status.out.find("nordlicht_nobody"), std::string::npos) << status.out << status.err;
  EXPECT_NE(status.out.find("enc_src@"), std::string::npos) << status.out << status.err;
  EXPECT_EQ(run({"status", "--archive", dir.string()}).exit_code, 2);  // no passphrase

  // A bundle of one account gives it by keyed name only.
  fs::path bundle = fs::path(tmp_.path()) / "account.bundle";
  auto create = run(with({"bundle", "create", "--archive", dir.string(), "--out", bundle.string(), "--full",
                          "--account", kAccount, "--marker", (fs::path(tmp_.path()) / "account-marker.json").string()},
                         pass(pass_)));
  ASSERT_EQ(create.exit_code, 0) << create.err;
  auto named = run(with({"bundle", "verify", bundle.string(), "--keys-from", dir.string()}, pass(pass_)));
  EXPECT_EQ(named.exit_code, 0) << named.err;
  EXPECT_NE(named.out.find("accounts: " + kAccount), std::string::npos) << named.out;
  std::map<std::string, std::string> carried = {
      {"account.bundle", read_file(bundle)},
      {"account-marker.json", read_file(fs::path(tmp_.path()) / "account-marker.json")}};

  auto files = snapshot(dir);
  for (auto& [name, bytes] : carried) files["(carried) " + name] = bytes;
  for (auto& [name, bytes] : files)
    for (const std::string& secret : {kSubject, kSender, kMessageId, kFolder, std::string("Nordlicht"), kAccount,
                                      std::string("enc_src"), server_->host(), std::string("numbers of the quarter"),
                                      std::string("nordlicht_nobody"), std::string("login")})
      EXPECT_EQ(bytes.find(secret), std::string::npos) << name << " shows \"" << secret << "\"";


  // Without a passphrase verify checks the structure only, and says so.
  auto structure = run({"verify", "--archive", dir.string()});
  EXPECT_EQ(structure.exit_code, 0) << structure.out << structure.err;
  EXPECT_NE(structure.out.find("structure only"), std::string::npos) << structure.out;
  // Other commands need it: a usage error.
  EXPECT_EQ(run({"ls", "--archive", dir.string()}).exit_code, 2);
}

TEST_F(EncryptionCli, AWrongPassphraseWritesNothingAndKeySlotsChangeOnlyTheKeyFile) {
  fs::path dir = fs::path(tmp_.path()) / "enc";
  make_encrypted_export(dir);
  fs::path wrong = fs::path(tmp_.path()) / "wrong";
  write_file(wrong, "First passphrase\n");
  auto before = snapshot(dir);
  auto ex = run(with(with({"export", "--archive", dir.string(), "--account-name", kAccount}, server_args("enc_src")),
                     pass(wrong)));
  EXPECT_EQ(ex.exit_code, 3) << ex.err;
  EXPECT_NE(ex.err.find("wrong passphrase"), std::string::npos) << ex.err;
  EXPECT_EQ(run(with({"ls", "--archive", dir.string()}, pass(wrong))).exit_code, 3);
  EXPECT_EQ(run(with({"repair", "--archive", dir.string(), "--rebuild-index"}, pass(wrong))).exit_code, 3);
  EXPECT_EQ(snapshot(dir), before);

  // A second passphrase, then the first removed: the first stops working, no data byte changes.
  fs::path second = fs::path(tmp_.path()) / "second";
  write_file(second, "second passphrase");
  auto add = run(with({"key", "add", "--archive", dir.string(), "--new-passphrase-file", second.string(),
                       "--scrypt-log-n", "12"},
                      pass(pass_)));
  ASSERT_EQ(add.exit_code, 0) << add.err;
  auto list = run({"key", "list", "--archive", dir.string(), "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(nlohmann::json::parse(list.out)["slots"].size(), 2u) << list.out;
  EXPECT_EQ(run(with({"ls", "--archive", dir.string()}, pass(second))).exit_code, 0);
  auto remove = run(with({"key", "remove", "--archive", dir.string(), "--slot", "1"}, pass(second)));
  ASSERT_EQ(remove.exit_code, 0) << remove.err;
  EXPECT_EQ(run(with({"ls", "--archive", dir.string()}, pass(pass_))).exit_code, 3);
  EXPECT_EQ(run(with({"ls", "--archive", dir.string()}, pass(second))).exit_code, 0);
  // The last slot is never removed.
  EXPECT_EQ(run(with({"key", "remove", "--archive", dir.string()}, pass(second))).exit_code, 2);
  auto after = snapshot(dir);
  for (auto& [name, bytes] : before)
    if (name.rfind("packs/", 0) == 0) EXPECT_EQ(after[name], bytes) << name << " was rewritten";
  EXPECT_NE(after["keys"], before["keys"]);
}

TEST_F(EncryptionCli, IncrementalExportFetchesOnlyNewMailAndBundlesStaySealed) {
  fs::path dir = fs::path(tmp_.path()) / "enc";
  make_encrypted_export(dir);
  fs::path bundle1 = fs::path(tmp_.path()) / "full.bundle";
  auto create = run(with({"bundle", "create", "--archive", dir.string(), "--out", bundle1.string(), "--full", "--marker",
                          (fs::path(tmp_.path()) / "marker.json").string()},
                         pass(pass_)));
  ASSERT_EQ(create.exit_code, 0) << create.err;

  server_->append("enc_src", kFolder, "From: " + kSender + "\r\nSubject: Nordlicht follow-up\r\n\r\nmore\r\n");
  auto again = run(with(with({"export", "--archive", dir.string(), "--account-name", kAccount, "--json"},
                             server_args("enc_src")),
                        pass(pass_)));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(last_json_line(again.out).value("messages", -1), 1) << again.out;
  fs::path bundle2 = fs::path(tmp_.path()) / "incr.bundle";
  ASSERT_EQ(run(with({"bundle", "create", "--archive", dir.string(), "--out", bundle2.string(), "--since",
                      (fs::path(tmp_.path()) / "marker.json").string()},
                     pass(pass_)))
                .exit_code,
            0);

  for (auto& b : {bundle1, bundle2}) {
    std::string bytes = read_file(b);
    for (const std::string& secret : {kSubject, kSender, kMessageId, kFolder, kAccount})
      EXPECT_EQ(bytes.find(secret), std::string::npos) << b << " shows \"" << secret << "\"";
  }
  auto structure = run({"bundle", "verify", bundle1.string()});
  EXPECT_EQ(structure.exit_code, 0) << structure.err;
  EXPECT_NE(structure.out.find("without its keys"), std::string::npos) << structure.out;
  auto full_check = run(with({"bundle", "verify", bundle1.string(), "--keys-from", dir.string()}, pass(pass_)));
  EXPECT_EQ(full_check.exit_code, 0) << full_check.err;
  EXPECT_NE(full_check.out.find("every object re-hashed"), std::string::npos) << full_check.out;

  // The receiving archive shares the master key; a plain one is refused.
  fs::path plain = fs::path(tmp_.path()) / "plain-receiver";
  EXPECT_EQ(run(with({"bundle", "apply", bundle1.string(), "--archive", plain.string()}, pass(pass_))).exit_code, 2);
  fs::path copy = fs::path(tmp_.path()) / "copy";
  auto init = run(with({"init", "--archive", copy.string(), "--same-key-as", dir.string()}, pass(pass_)));
  ASSERT_EQ(init.exit_code, 0) << init.err;
  auto a1 = run(with({"bundle", "apply", bundle1.string(), "--archive", copy.string()}, pass(pass_)));
  ASSERT_EQ(a1.exit_code, 0) << a1.err;
  auto a2 = run(with({"bundle", "apply", bundle2.string(), "--archive", copy.string()}, pass(pass_)));
  ASSERT_EQ(a2.exit_code, 0) << a2.err;
  auto m1 = run(with({"manifest", "--archive", dir.string(), "--out", (fs::path(tmp_.path()) / "m1.json").string()},
                     pass(pass_)));
  auto m2 = run(with({"manifest", "--archive", copy.string(), "--out", (fs::path(tmp_.path()) / "m2.json").string()},
                     pass(pass_)));
  ASSERT_EQ(m1.exit_code, 0) << m1.err;
  ASSERT_EQ(m2.exit_code, 0) << m2.err;
  EXPECT_EQ(nlohmann::json::parse(read_file(fs::path(tmp_.path()) / "m1.json"))["root"],
            nlohmann::json::parse(read_file(fs::path(tmp_.path()) / "m2.json"))["root"]);
  EXPECT_EQ(run(with({"verify", "--archive", copy.string()}, pass(pass_))).exit_code, 0);
  for (auto& [name, bytes] : snapshot(copy))
    EXPECT_EQ(bytes.find(kSubject), std::string::npos) << name;
}

TEST_F(EncryptionCli, TheVersion4FixtureIsReadByLsCatVerifyAndImport) {
  fs::path dir = fs::path(tmp_.path()) / "archive-v4";
  fs::copy(fs::path(IMAPSTAGE_SOURCE_DIR) / "tests/fixtures/archive-v4", dir, fs::copy_options::recursive);
  auto ls = run({"ls", "--archive", dir.string(), "fixture", "INBOX", "--json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_NE(ls.out.find("$Label1"), std::string::npos) << ls.out;
  auto cat = run({"cat", "--archive", dir.string(), "fixture", "INBOX", "1"});
  ASSERT_EQ(cat.exit_code, 0) << cat.err;
  EXPECT_NE(cat.out.find("First message of the version 4 fixture."), std::string::npos) << cat.out;
  EXPECT_EQ(run({"verify", "--archive", dir.string()}).exit_code, 0);
  server_->add_user("v4_target");
  auto import = run(with({"import", "--archive", dir.string(), "--account", "fixture", "--json"},
                         server_args("v4_target")));
  ASSERT_EQ(import.exit_code, 0) << import.err;
  auto verify = run(with({"verify", "--archive", dir.string(), "--account", "fixture", "--against", "target",
                          "--deep"},
                         server_args("v4_target")));
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_EQ(read_file(dir / "FORMAT"), "imapstage-archive 7\n");  // the import wrote its records
}

}  // namespace
}  // namespace imapstage

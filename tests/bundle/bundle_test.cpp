// Bundles across an air gap: archives exported from the harness Dovecot at
// "site A", bundles made with the real binary, applied to an archive at
// "site B"; manifest roots compared on both sides. Faults (wrong base, a
// flipped byte, a truncated file, a wrong signature, a replayed bundle,
// kill -9 during apply) are made on real files.
#include <sys/stat.h>

#include <csignal>

#include <chrono>
#include <cstring>
#include <iterator>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "archive-format/archive.h"
#include "bundle/bundle.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"
#include "verify/manifest.h"

namespace imapstage {
namespace {

namespace fs = std::filesystem;
using archive::Archive;
using testing::run_imapstage;

std::string root_of(const fs::path& dir) {
  if (!fs::exists(dir / "FORMAT")) return archive::to_hex(archive::sha256(""));
  auto a = Archive::open(dir, Archive::Mode::read);
  return verify::compute_manifest(*a).root;
}

// Every file below the archive's packs/ with its size: what "unchanged" means for the bytes.
std::map<std::string, uintmax_t> pack_files(const fs::path& dir) {
  std::map<std::string, uintmax_t> out;
  if (!fs::exists(dir / "packs")) return out;
  for (auto& e : fs::recursive_directory_iterator(dir / "packs"))
    if (e.is_regular_file()) out[e.path().string()] = e.file_size();
  return out;
}

void flip_byte(const std::string& file, uint64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(std::streamoff(offset));
  char c = 0;
  f.get(c);
  f.seekp(std::streamoff(offset));
  f.put(char(c ^ 0x01));
}

class BundleTest : public testing::SharedServerTest {
 protected:
  std::string path(const std::string& name) const { return (fs::path(tmp_.path()) / name).string(); }

  void export_user(const std::string& archive_dir, const std::string& user) {
    auto r = run_imapstage({"export", "--archive", archive_dir, "--host", server_->host(), "--port",
                            std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", user,
                            "--password-file", server_->password_file(user)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  testing::ProcessResult bundle(std::vector<std::string> args) {
    args.insert(args.begin(), "bundle");
    return run_imapstage(args);
  }

  void make_keys() {
    for (auto& argv : std::vector<std::vector<std::string>>{
             {"/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", path("key.pem")},
             {"/usr/bin/openssl", "pkey", "-in", path("key.pem"), "-pubout", "-out", path("key.pub")},
             {"/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", path("other.pem")},
             {"/usr/bin/openssl", "pkey", "-in", path("other.pem"), "-pubout", "-out", path("other.pub")}}) {
      auto r = testing::run_process(argv);
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
  }

  // Site A: a fresh account exported, then changed and exported three times,
  // a bundle after each export (full, then --since the previous one).
  // Returns the bundles; heads[i] is A's root when bundle i was made.
  void build_chain(const std::string& user, std::vector<std::string>& bundles, std::vector<std::string>& heads,
                   const std::vector<std::string>& extra = {}) {
    server_->add_user(user);
    std::string a = path("site-a");
    for (int i = 1; i <= 3; ++i)
      server_->append(user, "INBOX", fmt::format("Subject: first {}\r\nMessage-ID: <f{}@a>\r\n\r\nbody {}\r\n", i, i, i),
                      i == 1 ? "\\Seen" : "");
    export_user(a, user);
    auto step = [&](const std::string& since) {
      std::string out = path(fmt::format("b{}.bundle", bundles.size() + 1));
      std::vector<std::string> args = {"create", "--archive", a, "--out", out};
      if (since.empty()) args.push_back("--full");
      else args.insert(args.end(), {"--since", since});
      args.insert(args.end(), extra.begin(), extra.end());
      auto r = bundle(args);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      // Progress on stderr (a line per step without a terminal), ending at 100 %.
      EXPECT_NE(r.err.find("bundle create: writing"), std::string::npos) << r.err;
      EXPECT_NE(r.err.find("100.0%"), std::string::npos) << r.err;
      bundles.push_back(out);
      heads.push_back(root_of(a));
    };
    step("");
    // New messages, a flag change, a keyword.
    uint32_t uid4 = server_->append(user, "INBOX", "Subject: second\r\n\r\nmore\r\n");
    server_->append(user, "Projects", "Subject: project\r\n\r\nplan\r\n", "$Label1");
    server_->store(user, "INBOX", 2, "+FLAGS", "\\Flagged");
    export_user(a, user);
    step(bundles.back());
    // An expunge and a new UIDVALIDITY generation.
    server_->expunge(user, "INBOX", {uid4});
    server_->run({"bump-uidvalidity", server_->dir(), user, "Projects"});
    export_user(a, user);
    step(bundles.back());
    // A new folder; a flag taken away.
    server_->append(user, "Archive/2024", "Subject: archived\r\n\r\nold\r\n");
    server_->store(user, "INBOX", 1, "-FLAGS", "\\Seen");
    export_user(a, user);
    step(bundles.back());
  }

  testing::TempDir tmp_;
};

TEST_F(BundleTest, AChainOfIncrementalBundlesReproducesTheSourceAndImportSendsOnlyWhatChanged) {
  std::vector<std::string> bundles, heads;
  build_chain("airgap_chain", bundles, heads);
  ASSERT_EQ(bundles.size(), 4u);
  EXPECT_EQ(heads.back(), root_of(path("site-a")));
  for (size_t i = 1; i < heads.size(); ++i) EXPECT_NE(heads[i], heads[i - 1]) << "step " << i << " changed nothing";

  // Bundles are owner-only whatever the umask the test runs with.
  for (auto& b : bundles) {
    struct stat st{};
    ASSERT_EQ(::stat(b.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << b;
  }
  // An incremental bundle carries only the new objects.
  auto v = bundle({"verify", bundles[2], "--json"});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  EXPECT_NE(v.err.find("bundle verify: checking"), std::string::npos) << v.err;
  EXPECT_NE(v.err.find("bundle verify: reading"), std::string::npos) << v.err;
  auto vj = nlohmann::json::parse(v.out);
  EXPECT_EQ(vj["base"]["root"], heads[1]);
  EXPECT_EQ(vj["head"]["root"], heads[2]);
  EXPECT_EQ(vj["objects"], 0);  // an expunge and a new generation of a stored message: no new bytes

  std::string b = path("site-b");
  std::string target = "airgap_chain_target";
  server_->add_user(target);
  auto import_b = [&] {
    auto r = run_imapstage({"import", "--archive", b, "--host", server_->host(), "--port",
                            std::to_string(server_->imaps_port()), "--ca-file", server_->ca_file(), "--user", target,
                            "--password-file", server_->password_file(target), "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  };
  for (size_t i = 0; i < bundles.size(); ++i) {
    auto r = bundle({"apply", bundles[i], "--archive", b});
    ASSERT_EQ(r.exit_code, 0) << "bundle " << i + 1 << ": " << r.err;
    EXPECT_NE(r.err.find("bundle apply: applying"), std::string::npos) << r.err;
    EXPECT_EQ(root_of(b), heads[i]) << "after bundle " << i + 1;
    if (i == 2) import_b();  // site B imports between two trips
  }
  EXPECT_EQ(root_of(b), root_of(path("site-a")));
  import_b();

  // The target holds each present message exactly once, with its folder.
  auto summary = server_->summary(target);
  std::map<std::string, size_t> on_target;
  for (auto& f : summary["folders"])
    if (f["messages"].is_array()) on_target[f["canonical"].get<std::string>()] = f["messages"].size();
  EXPECT_EQ(on_target["INBOX"], 3u);
  EXPECT_EQ(on_target["Projects"], 1u);
  EXPECT_EQ(on_target["Archive/2024"], 1u);

  // The same bundle again: nothing to do, nothing written.
  auto files = pack_files(b);
  auto again = bundle({"apply", bundles.back(), "--archive", b});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("already applied"), std::string::npos) << again.out;
  EXPECT_EQ(pack_files(b), files);

  // A marker file stands for the bundle it came with: a bundle since it
  // carries nothing when nothing changed, and applies as a no-op.
  auto marked = bundle({"create", "--archive", path("site-a"), "--out", path("m.bundle"), "--since", bundles[2],
                        "--marker", path("head.json")});
  ASSERT_EQ(marked.exit_code, 0) << marked.err;
  std::ifstream marker_in(path("head.json"));
  auto marker = nlohmann::json::parse(marker_in);
  EXPECT_EQ(marker["root"], heads.back());
  EXPECT_EQ(fs::status(path("head.json")).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  auto nothing = bundle({"create", "--archive", path("site-a"), "--out", path("nothing.bundle"), "--since",
                         path("head.json"), "--json"});
  ASSERT_EQ(nothing.exit_code, 0) << nothing.err;
  auto nj = nlohmann::json::parse(nothing.out);
  EXPECT_EQ(nj["objects"], 0);
  EXPECT_EQ(nj["records"], 0);
  EXPECT_EQ(nj["base"]["root"], heads.back());
  auto noop = bundle({"apply", path("nothing.bundle"), "--archive", b});
  EXPECT_EQ(noop.exit_code, 0) << noop.err;
  EXPECT_EQ(root_of(b), heads.back());
  EXPECT_EQ(pack_files(b), files);

  // A replayed old bundle: refused, naming both roots.
  auto old = bundle({"apply", bundles[1], "--archive", b});
  EXPECT_EQ(old.exit_code, 2) << old.out;
  EXPECT_NE(old.err.find("not at the bundle's base"), std::string::npos) << old.err;
  EXPECT_NE(old.err.find(heads.back()), std::string::npos) << old.err;
  EXPECT_NE(old.err.find(heads[0]), std::string::npos) << old.err;
  EXPECT_EQ(root_of(b), heads.back());
  EXPECT_EQ(pack_files(b), files);
}

TEST_F(BundleTest, DamagedWrongOrUnsignedBundlesAreRefusedAndLeaveTheArchiveAsItWas) {
  make_keys();
  std::vector<std::string> bundles, heads;
  build_chain("airgap_faults", bundles, heads, {"--sign", path("key.pem")});
  std::string b = path("site-b");
  ASSERT_EQ(bundle({"apply", bundles[0], "--archive", b, "--pubkey", path("key.pub")}).exit_code, 0);
  ASSERT_EQ(root_of(b), heads[0]);
  auto files = pack_files(b);

  auto refused = [&](const std::string& file, const std::vector<std::string>& extra, const std::string& says) {
    std::vector<std::string> args = {"apply", file, "--archive", b};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = bundle(args);
    EXPECT_NE(r.exit_code, 0) << file;
    EXPECT_NE(r.err.find(says), std::string::npos) << r.err;
    EXPECT_EQ(root_of(b), heads[0]) << file;
    EXPECT_EQ(pack_files(b), files) << file;
    return r;
  };

  // Wrong base: the third bundle starts where the second ends.
  refused(bundles[2], {}, "not at the bundle's base");
  // An incremental bundle does not make an archive where there was none.
  auto none = bundle({"apply", bundles[1], "--archive", path("nowhere")});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("not at the bundle's base"), std::string::npos) << none.err;
  EXPECT_FALSE(fs::exists(path("nowhere")));
  // Nor writes through a link.
  fs::create_directory_symlink(b, path("link"));
  auto link = bundle({"apply", bundles[1], "--archive", path("link")});
  EXPECT_EQ(link.exit_code, 2);
  EXPECT_NE(link.err.find("symbolic link"), std::string::npos) << link.err;

  // A flipped byte, anywhere: header, an object, the trailer's hash.
  for (uint64_t offset : {uint64_t(20), fs::file_size(bundles[1]) / 2, fs::file_size(bundles[1]) - 100}) {
    std::string copy = path(fmt::format("flipped-{}.bundle", offset));
    fs::copy_file(bundles[1], copy);
    flip_byte(copy, offset);
    refused(copy, {}, "SHA-256 does not match");
    auto v = bundle({"verify", copy});
    EXPECT_NE(v.exit_code, 0);
  }

  // Truncated: a part missing at the end.
  std::string cut = path("truncated.bundle");
  fs::copy_file(bundles[1], cut);
  fs::resize_file(cut, fs::file_size(cut) - 300);
  refused(cut, {}, "truncated");

  // Signed by a key other than the one given.
  auto wrong = refused(bundles[1], {"--pubkey", path("other.pub")}, "signature does not match");
  (void)wrong;
  // An unsigned bundle where a signature is required.
  std::string unsigned_bundle = path("unsigned.bundle");
  ASSERT_EQ(bundle({"create", "--archive", path("site-a"), "--out", unsigned_bundle, "--since", bundles[0]}).exit_code, 0);
  refused(unsigned_bundle, {"--pubkey", path("key.pub")}, "not signed");

  // The signature also checks with openssl, over the text BUNDLE.md names:
  // "imapstage-bundle 1 sha256 <hex of the trailer's hash>\n".
  auto info = bundle::verify(bundles[1], path("key.pub"));
  EXPECT_TRUE(info.signed_);
  {
    std::ifstream in(bundles[1], std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string trailer = bytes.substr(bytes.size() - 120);
    archive::Hash digest{};
    std::memcpy(digest.data(), trailer.data() + 16, 32);
    EXPECT_EQ(archive::to_hex(digest), archive::to_hex(archive::sha256(bytes.substr(0, bytes.size() - 120))));
    std::ofstream(path("signed.txt"), std::ios::binary) << "imapstage-bundle 1 sha256 " << archive::to_hex(digest) << "\n";
    std::ofstream(path("signed.sig"), std::ios::binary) << trailer.substr(56, 64);
    for (auto [key, good] : {std::pair{path("key.pub"), true}, std::pair{path("other.pub"), false}}) {
      auto r = testing::run_process({"/usr/bin/openssl", "pkeyutl", "-verify", "-pubin", "-inkey", key, "-rawin",
                                     "-in", path("signed.txt"), "-sigfile", path("signed.sig")});
      EXPECT_EQ(r.exit_code == 0, good) << key << r.out << r.err;
    }
  }

  // Split into parts: a missing part is refused by name, a missing last part
  // as a truncated bundle; the whole set verifies and applies.
  std::string split = path("split.bundle");
  auto made = bundle({"create", "--archive", path("site-a"), "--out", split, "--since", bundles[0], "--split", "500",
                      "--sign", path("key.pem")});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  EXPECT_FALSE(fs::exists(split));
  int parts = 0;
  while (fs::exists(fmt::format("{}.{:03}", split, parts + 1))) ++parts;
  ASSERT_GE(parts, 3) << made.out;
  for (int n = 1; n <= parts; ++n) {
    std::string part = fmt::format("{}.{:03}", split, n);
    EXPECT_LE(fs::file_size(part), 500u);
    EXPECT_EQ(fs::status(part).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  }
  std::string second = split + ".002", last = fmt::format("{}.{:03}", split, parts);
  fs::rename(second, path("aside"));
  refused(split, {"--pubkey", path("key.pub")}, "part " + second + " of the bundle is missing");
  fs::rename(path("aside"), second);
  fs::rename(last, path("aside"));
  refused(split, {"--pubkey", path("key.pub")}, "truncated");
  fs::rename(path("aside"), last);
  auto v = bundle({"verify", split, "--pubkey", path("key.pub")});
  EXPECT_EQ(v.exit_code, 0) << v.err;
  EXPECT_NE(v.out.find(fmt::format("in {} parts", parts)), std::string::npos) << v.out;

  // And the good ones still apply.
  auto ok = bundle({"apply", split, "--archive", b, "--pubkey", path("key.pub")});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(root_of(b), heads.back());
  EXPECT_EQ(root_of(b), root_of(path("site-a")));
}

// A bigger archive (written through the Archive API: real LMDB, real packs),
// so that kill -9 lands inside apply at several points.
// The archived name of the account exported for `user`.
std::string account_of(const fs::path& dir, const std::string& user) {
  auto a = Archive::open(dir, Archive::Mode::read);
  for (auto& account : a->accounts())
    if (account.name.rfind(user + "@", 0) == 0) return account.name;
  ADD_FAILURE() << "no account for " << user << " in " << dir;
  return "";
}

std::string root_over(const fs::path& dir, const std::set<std::string>& accounts) {
  auto a = Archive::open(dir, Archive::Mode::read);
  return verify::compute_manifest(*a, nullptr, accounts).root;
}

TEST_F(BundleTest, BundlesOfSomeAccountsCarryThemAndTheObjectsTheyShareWithOthers) {
  std::string a = path("site-a"), b = path("site-b");
  server_->add_user("part_one");
  server_->add_user("part_two");
  const std::string shared = "Subject: shared\r\nMessage-ID: <shared@a>\r\n\r\nthe same bytes in two mailboxes\r\n";
  server_->append("part_two", "INBOX", shared);
  uint32_t own = server_->append("part_one", "INBOX", "Subject: own\r\n\r\nonly here\r\n");
  export_user(a, "part_one");
  export_user(a, "part_two");
  std::string one = account_of(a, "part_one"), two = account_of(a, "part_two");

  auto r = bundle({"create", "--archive", a, "--out", path("one-1.bundle"), "--full", "--account", one, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["objects"], 1);
  EXPECT_EQ(j["head"]["accounts"], nlohmann::json::array({one}));
  EXPECT_EQ(j["head"]["root"], root_over(a, {one}));
  EXPECT_NE(j["head"]["root"], root_of(a));

  // part_one now also gets the message part_two had at the base (its object
  // was in the archive, but not in part_one's bundles) and a flag change.
  server_->append("part_one", "INBOX", shared);
  server_->store("part_one", "INBOX", own, "+FLAGS", "\\Flagged");
  export_user(a, "part_one");
  // The base covers part_one only: a bundle of every account since it is refused.
  auto mixed = bundle({"create", "--archive", a, "--out", path("mixed.bundle"), "--since", path("one-1.bundle")});
  EXPECT_EQ(mixed.exit_code, 2) << mixed.err;
  EXPECT_NE(mixed.err.find("same --account"), std::string::npos) << mixed.err;
  EXPECT_FALSE(fs::exists(path("mixed.bundle")));
  auto unknown = bundle({"create", "--archive", a, "--out", path("u.bundle"), "--full", "--account", "nobody@x"});
  EXPECT_EQ(unknown.exit_code, 2) << unknown.err;
  EXPECT_NE(unknown.err.find("nobody@x"), std::string::npos) << unknown.err;

  r = bundle({"create", "--archive", a, "--out", path("one-2.bundle"), "--since", path("one-1.bundle"), "--account",
              one, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_GE(j["objects"], 1);  // the shared object travels with part_one's bundle
  EXPECT_GE(j["records"], 2);  // at least the own message (flag) and the shared one

  for (auto name : {"one-1.bundle", "one-2.bundle"}) {
    auto applied = bundle({"apply", path(name), "--archive", b});
    ASSERT_EQ(applied.exit_code, 0) << name << ": " << applied.err;
  }
  EXPECT_EQ(root_of(b), root_over(a, {one}));
  {
    auto arch = Archive::open(b, Archive::Mode::read);
    ASSERT_EQ(arch->accounts().size(), 1u);
    EXPECT_TRUE(verify::check_manifest_data(*arch).empty());
  }
  // part_two's own chain lands beside it: then B holds what A holds.
  r = bundle({"create", "--archive", a, "--out", path("two-1.bundle"), "--full", "--account", two});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto applied = bundle({"apply", path("two-1.bundle"), "--archive", b});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  EXPECT_EQ(root_of(b), root_of(a));
  EXPECT_EQ(root_over(b, {one}), root_over(a, {one}));
  // Applying part_one's first bundle again: its accounts are past it, refused.
  auto replay = bundle({"apply", path("one-1.bundle"), "--archive", b});
  EXPECT_EQ(replay.exit_code, 2) << replay.err;
  EXPECT_EQ(root_of(b), root_of(a));
}

// tests/fixtures/bundle-v3: a sealed bundle of one account written by the
// version 3 code (its name in clear), and the encrypted archive it came from.
// This build verifies and applies it, and continues the chain with a version 4
// bundle (keyed account names) made --since it.
TEST(BundleVersions, TheVersion3FixtureIsAppliedAndContinuedByVersion4) {
  testing::TempDir tmp;
  fs::path fixture = fs::path(IMAPSTAGE_SOURCE_DIR) / "tests/fixtures/bundle-v3";
  fs::path src = fs::path(tmp.path()) / "src";
  fs::copy(fixture / "archive", src, fs::copy_options::recursive);
  fs::path pass = fs::path(tmp.path()) / "pass";
  std::ofstream(pass) << "bundle v3 fixture passphrase";
  std::vector<std::string> p = {"--passphrase-file", pass.string()};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), p.begin(), p.end());
    return a;
  };
  std::string v3 = (fixture / "accounts.bundle").string();
  auto check = run_imapstage(with({"bundle", "verify", v3, "--keys-from", src.string()}));
  ASSERT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("accounts: v3-fixture-account"), std::string::npos) << check.out;

  fs::path dst = fs::path(tmp.path()) / "dst";
  ASSERT_EQ(run_imapstage(with({"init", "--archive", dst.string(), "--same-key-as", src.string()})).exit_code, 0);
  auto applied = run_imapstage(with({"bundle", "apply", v3, "--archive", dst.string()}));
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  auto ls = run_imapstage(with({"ls", "--archive", dst.string(), "--json"}));
  EXPECT_NE(ls.out.find("v3-fixture-account"), std::string::npos) << ls.out;
  EXPECT_EQ(ls.out.find("other-account"), std::string::npos) << ls.out;  // not in the bundle

  // One more message in the source, then a version 4 bundle since the version 3 one.
  fs::path eml = fs::path(tmp.path()) / "eml";
  fs::copy(fixture / "eml", eml, fs::copy_options::recursive);
  std::ofstream(eml / "INBOX" / "3.eml") << "From: v3.sender@fixture.example\r\nSubject: third\r\n\r\nThird.\r\n";
  auto ex = run_imapstage(with({"export", "--archive", src.string(), "--source", "eml:" + eml.string(), "--account",
                                "v3-fixture-account", "-q"}));
  ASSERT_EQ(ex.exit_code, 0) << ex.err;
  fs::path v4 = fs::path(tmp.path()) / "next.bundle";
  auto create = run_imapstage(with({"bundle", "create", "--archive", src.string(), "--out", v4.string(), "--since", v3,
                                    "--account", "v3-fixture-account"}));
  ASSERT_EQ(create.exit_code, 0) << create.err;
  std::ifstream in(v4, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(bytes.find("v3-fixture-account"), std::string::npos);
  EXPECT_NE(bytes.find("\"keyed_accounts\""), std::string::npos);
  EXPECT_EQ(bytes.substr(8, 4), std::string("\x04\0\0\0", 4));  // version 4
  auto next = run_imapstage(with({"bundle", "apply", v4.string(), "--archive", dst.string()}));
  ASSERT_EQ(next.exit_code, 0) << next.err;
  auto again = run_imapstage(with({"bundle", "apply", v4.string(), "--archive", dst.string()}));
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("already applied"), std::string::npos) << again.out;
  auto root = [&](const fs::path& dir) {
    fs::path out = fs::path(tmp.path()) / "m.json";
    auto m = run_imapstage(with({"manifest", "--archive", dir.string(), "--out", out.string()}));
    EXPECT_EQ(m.exit_code, 0) << m.err;
    std::ifstream f(out);
    return nlohmann::json::parse(f).value("root", "");
  };
  // The source also holds other-account: compare the roots over the bundle's account.
  auto info = run_imapstage(with({"bundle", "verify", v4.string(), "--keys-from", src.string(), "--json"}));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["accounts"], nlohmann::json::array({"v3-fixture-account"})) << info.out;
  EXPECT_EQ(j["head"]["root"], root(dst));
}

TEST(BundleKill, KillDuringApplyThenApplyAgainGivesTheSameRoot) {
  testing::TempDir tmp;
  fs::path a = fs::path(tmp.path()) / "site-a";
  {
    auto arch = Archive::open(a, Archive::Mode::create);
    archive::Batch batch(*arch);
    archive::AccountRecord account;
    account.name = "kill@example.org";
    batch.put_account(account);
    archive::FolderRecord f;
    f.account_id = account.id;
    f.name_raw = f.name_utf8 = "INBOX";
    f.path = {"INBOX"};
    f.delimiter = '/';
    f.uidvalidity = 7;
    uint32_t folder = batch.put_folder(f);
    uint64_t x = 88172645463325252ull;
    for (uint32_t uid = 1; uid <= 3000; ++uid) {
      std::string raw = fmt::format("Subject: message {}\r\n\r\n", uid);
      for (int k = 0; k < 2000; ++k) {  // about 40 KB of poorly compressible text
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        raw += fmt::format("{:x}", x & 0xffffffffffull);
        raw += k % 8 == 7 ? "\r\n" : " ";
      }
      archive::MessageRecord m;
      m.key = {account.id, folder, 7, uid};
      m.hash = archive::sha256(raw);
      m.size = raw.size();
      m.internaldate = 1700000000 + uid;
      batch.put_object(m.hash, raw);
      batch.put_message(m);
      if (uid % 500 == 0) batch.commit();
    }
    batch.commit();
  }
  std::string file = (fs::path(tmp.path()) / "full.bundle").string();
  ASSERT_EQ(run_imapstage({"bundle", "create", "--archive", a.string(), "--out", file, "--full"}).exit_code, 0);
  std::string head = root_of(a);
  std::string empty = archive::to_hex(archive::sha256(""));

  // One apply to time it; then kills spread over that time.
  auto start = std::chrono::steady_clock::now();
  auto whole = run_imapstage({"bundle", "apply", file, "--archive", (fs::path(tmp.path()) / "site-b-whole").string()});
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(root_of(fs::path(tmp.path()) / "site-b-whole"), head);
  int killed = 0, trials = 0;
  for (double fraction : {0.1, 0.3, 0.5, 0.7, 0.85, 0.95}) {
    int delay = int(double(took) * fraction);
    ++trials;
    fs::path b = fs::path(tmp.path()) / fmt::format("site-b-{}", delay);
    auto r = run_imapstage({"bundle", "apply", file, "--archive", b.string()}, {}, std::chrono::milliseconds(delay));
    if (r.signal == SIGKILL) {
      ++killed;
      std::string mid = root_of(b);
      // At its base, or (killed after the commit, during the final check) at the head: nothing between.
      EXPECT_TRUE(mid == empty || mid == head) << "killed after " << delay << " ms: root " << mid;
    }
    auto again = run_imapstage({"bundle", "apply", file, "--archive", b.string()});
    ASSERT_EQ(again.exit_code, 0) << again.err;
    EXPECT_EQ(root_of(b), head) << "killed after " << delay << " ms";
  }
  std::printf("%d of %d applies were killed before they finished (one apply: %lld ms)\n", killed, trials, (long long)took);
  EXPECT_GT(killed, 0) << "no run was killed during apply: the archive is too small for this machine";
}

}  // namespace
}  // namespace imapstage

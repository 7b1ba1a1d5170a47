// The archive manifest (Merkle roots per account and folder) and its Ed25519
// signature, on real archives built through the Archive API and real keys
// made with the openssl command line, as an auditor would make them.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "common/error.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"
#include "verify/manifest.h"
#include "verify/signing.h"

namespace imapstage {
namespace {

namespace fs = std::filesystem;
using archive::Archive;
using archive::Hash;
using testing::TempDir;

std::string hex(const Hash& h) { return archive::to_hex(h); }

// RFC 6962 by its recursive definition, to check the incremental tree.
Hash reference_root(const std::vector<std::string>& leaves, size_t begin, size_t end) {
  if (end - begin == 1) return archive::sha256(std::string(1, '\0') + leaves[begin]);
  size_t k = 1;
  while (k * 2 < end - begin) k *= 2;
  Hash l = reference_root(leaves, begin, begin + k), r = reference_root(leaves, begin + k, end);
  return archive::sha256(std::string(1, '\1') + std::string(l.begin(), l.end()) + std::string(r.begin(), r.end()));
}

TEST(MerkleTree, MatchesTheRecursiveDefinition) {
  EXPECT_EQ(hex(verify::MerkleTree().root()), hex(archive::sha256("")));
  std::vector<std::string> leaves;
  for (int n = 1; n <= 13; ++n) {
    leaves.push_back(fmt::format("leaf {}\n", n));
    verify::MerkleTree t;
    for (auto& l : leaves) t.add_leaf(l);
    EXPECT_EQ(t.leaves(), uint64_t(n));
    EXPECT_EQ(hex(t.root()), hex(reference_root(leaves, 0, leaves.size()))) << n << " leaves";
  }
}

TEST(ManifestLeaf, FollowsTheGrammar) {
  archive::MessageRecord m;
  m.key = {1, 2, 1000, 7};
  m.hash = archive::sha256("x");
  m.flags = archive::kFlagged | archive::kSeen;
  m.keywords = {"$Label2", "$Label1"};
  m.internaldate = 1700000000;
  m.state = archive::MessageState::expunged;
  EXPECT_EQ(verify::manifest_leaf("alice", "INBOX", m),
            "alice\tINBOX\t1000\t7\t" + hex(m.hash) + "\t\\Seen \\Flagged $Label1 $Label2\t1700000000\texpunged\n");
}

class ManifestTest : public ::testing::Test {
 protected:
  fs::path dir() const { return fs::path(tmp_.path()) / "archive"; }
  std::string file(const std::string& name) const { return (fs::path(tmp_.path()) / name).string(); }

  void SetUp() override {
    auto a = Archive::open(dir(), Archive::Mode::create);
    archive::Batch batch(*a);
    for (std::string name : {"alice@example.org", "bob@example.org"}) {
      archive::AccountRecord account;
      account.name = name;
      batch.put_account(account);
      for (std::string folder : {"INBOX", "Archive/2024", "Sent"}) {
        archive::FolderRecord f;
        f.account_id = account.id;
        f.name_raw = folder;
        f.name_utf8 = folder;
        f.delimiter = '/';
        f.uidvalidity = 5;
        uint32_t folder_id = batch.put_folder(f);
        for (uint32_t uid = 1; uid <= 4; ++uid) {
          std::string raw = fmt::format("Subject: {} {} {}\r\n\r\nbody\r\n", name, folder, uid);
          archive::MessageRecord m;
          m.key = {account.id, folder_id, 5, uid};
          m.hash = archive::sha256(raw);
          m.flags = uid % 2 ? uint32_t{archive::kSeen} : 0u;
          m.internaldate = 1700000000 + uid;
          m.size = raw.size();
          batch.put_object(m.hash, raw);
          batch.put_message(m);
        }
      }
    }
    batch.commit();
  }

  verify::Manifest manifest() const {
    auto a = Archive::open(dir(), Archive::Mode::read);
    auto m = verify::compute_manifest(*a);
    m.archive_id = a->archive_id();
    return m;
  }

  void make_keys() {
    for (auto& argv : std::vector<std::vector<std::string>>{
             {"openssl", "genpkey", "-algorithm", "ed25519", "-out", file("key.pem")},
             {"openssl", "pkey", "-in", file("key.pem"), "-pubout", "-out", file("key.pub")},
             {"openssl", "genpkey", "-algorithm", "ed25519", "-out", file("other.pem")}}) {
      std::vector<std::string> full = argv;
      full[0] = "/usr/bin/openssl";
      auto r = testing::run_process(full);
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
  }

  TempDir tmp_;
};

TEST_F(ManifestTest, SameArchiveGivesTheSameRoots) {
  auto first = manifest();
  auto second = manifest();
  EXPECT_EQ(first.root, second.root);
  EXPECT_EQ(first.messages, 24u);
  ASSERT_EQ(first.accounts.size(), 2u);
  EXPECT_EQ(first.accounts[0].account, "alice@example.org");
  ASSERT_EQ(first.accounts[0].folders.size(), 3u);
  for (size_t a = 0; a < 2; ++a) {
    EXPECT_EQ(first.accounts[a].root, second.accounts[a].root);
    for (size_t f = 0; f < 3; ++f) {
      EXPECT_EQ(first.accounts[a].folders[f].root, second.accounts[a].folders[f].root);
      EXPECT_EQ(first.accounts[a].folders[f].messages, 4u);
      EXPECT_EQ(first.accounts[a].folders[f].present, 4u);
    }
  }
  // Folders are in raw-name order; distinct folders have distinct roots.
  EXPECT_EQ(first.accounts[0].folders[0].raw, "Archive/2024");
  EXPECT_NE(first.accounts[0].folders[0].root, first.accounts[0].folders[1].root);
  EXPECT_TRUE(verify::compare_manifests(first, second).empty());

  // Through its JSON form, as written to and read from a file.
  auto parsed = verify::Manifest::from_json(nlohmann::json::parse(first.to_json().dump(2)));
  EXPECT_EQ(parsed.root, first.root);
  EXPECT_EQ(parsed.archive_id, first.archive_id);
  EXPECT_TRUE(verify::compare_manifests(parsed, second).empty());

  // The listing holds every leaf; its Merkle root is the manifest's root.
  auto a = Archive::open(dir(), Archive::Mode::read);
  std::FILE* listing = std::fopen(file("leaves.txt").c_str(), "wb");
  ASSERT_NE(listing, nullptr);
  auto third = verify::compute_manifest(*a, listing);
  std::fclose(listing);
  std::ifstream in(file("leaves.txt"));
  verify::MerkleTree tree;
  std::string line;
  while (std::getline(in, line)) tree.add_leaf(line + "\n");
  EXPECT_EQ(tree.leaves(), 24u);
  EXPECT_EQ(hex(tree.root()), third.root);
  EXPECT_EQ(third.root, first.root);
}

TEST_F(ManifestTest, ChangedByteFailsTheSignature) {
  make_keys();
  std::string text = manifest().to_json().dump(2) + "\n";
  std::string sig = verify::ed25519_sign(text, file("key.pem"));
  EXPECT_EQ(sig.size(), 64u);
  EXPECT_TRUE(verify::ed25519_verify(text, sig, file("key.pub")));
  EXPECT_TRUE(verify::ed25519_verify(text, sig, file("key.pem")));  // a private key file holds the public key

  std::string changed = text;
  size_t at = changed.find("\"messages\": 24");
  ASSERT_NE(at, std::string::npos);
  changed[at + 13] = '5';  // 24 -> 25
  EXPECT_FALSE(verify::ed25519_verify(changed, sig, file("key.pub")));

  std::string bad_sig = sig;
  bad_sig[10] ^= 1;
  EXPECT_FALSE(verify::ed25519_verify(text, bad_sig, file("key.pub")));
  EXPECT_FALSE(verify::ed25519_verify(text, sig, file("other.pem")));

  // The signature is the raw 64 bytes the openssl command line checks too.
  {
    std::ofstream(file("manifest.json"), std::ios::binary) << text;
    std::ofstream(file("manifest.json.sig"), std::ios::binary) << sig;
  }
  auto r = testing::run_process({"/usr/bin/openssl", "pkeyutl", "-verify", "-pubin", "-inkey", file("key.pub"),
                                 "-rawin", "-in", file("manifest.json"), "-sigfile", file("manifest.json.sig")});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;

  std::ofstream(file("not-a-key.pem")) << "hello\n";
  EXPECT_THROW(verify::ed25519_sign(text, file("not-a-key.pem")), Error);
}

TEST_F(ManifestTest, ArchiveChangedAfterSigningNamesTheFolder) {
  make_keys();
  std::string text = manifest().to_json().dump(2) + "\n";
  std::string sig = verify::ed25519_sign(text, file("key.pem"));

  // Flag one message of bob's Archive/2024 as \Flagged.
  {
    auto a = Archive::open(dir(), Archive::Mode::write);
    auto bob = a->find_account("bob@example.org");
    ASSERT_TRUE(bob);
    auto folder = a->find_folder(bob->id, "Archive/2024");
    ASSERT_TRUE(folder);
    auto m = a->message({bob->id, folder->id, 5, 3});
    ASSERT_TRUE(m);
    m->flags |= archive::kFlagged;
    archive::Batch batch(*a);
    batch.put_message(*m);
    batch.commit();
  }

  // The manifest itself is intact, but the archive no longer matches it.
  EXPECT_TRUE(verify::ed25519_verify(text, sig, file("key.pub")));
  auto expected = verify::Manifest::from_json(nlohmann::json::parse(text));
  auto now = manifest();
  EXPECT_NE(now.root, expected.root);
  auto diffs = verify::compare_manifests(expected, now);
  ASSERT_EQ(diffs.size(), 1u);
  EXPECT_EQ(diffs[0].account, "bob@example.org");
  EXPECT_EQ(diffs[0].folder, "Archive/2024");
  EXPECT_NE(diffs[0].what.find("root differs"), std::string::npos) << diffs[0].what;
  // Counts and bytes are unchanged: only the root catches a flag change.
  EXPECT_EQ(now.messages, expected.messages);
  EXPECT_EQ(now.bytes, expected.bytes);
  EXPECT_EQ(now.accounts[0].root, expected.accounts[0].root);  // alice untouched
}

TEST_F(ManifestTest, MalformedManifestIsCorrupt) {
  auto j = manifest().to_json();
  j.erase("root");
  try {
    verify::Manifest::from_json(j);
    FAIL() << "accepted a manifest without a root";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt);
  }
}

}  // namespace
}  // namespace imapstage

// The archive manifest: per account and folder, message counts, bytes and a
// Merkle root over every message record, so an auditor can pin down an
// archive's exact contents and later check it, offline, with standard tools.
// Normative definition: archive-format/FORMAT.md, "Manifest".
//
//   leaf line  = account TAB folder_raw TAB uidvalidity TAB uid TAB sha256hex
//                TAB flags TAB internaldate TAB state LF
//       flags       system flags in the order \Seen \Answered \Flagged \Deleted \Draft,
//                   then keywords sorted bytewise, separated by one space
//       internaldate unix seconds, decimal
//       state       "present" or "expunged"
//   leaf hash  = SHA-256(0x00 || leaf line)
//   node hash  = SHA-256(0x01 || left || right)
//   tree       = RFC 6962 Merkle Tree Hash over the leaves in order
//                (account name, folder raw name, uidvalidity, uid); empty tree = SHA-256("")
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "archive-format/archive.h"
#include "archive-format/hash.h"

namespace imapstage::verify {

// RFC 6962 Merkle Tree Hash computed incrementally: O(log n) memory.
class MerkleTree {
 public:
  void add_leaf(std::string_view leaf_data);  // hashes 0x00 || data
  archive::Hash root() const;
  uint64_t leaves() const { return count_; }

 private:
  struct Node {
    uint64_t size;
    archive::Hash hash;
  };
  std::vector<Node> stack_;
  uint64_t count_ = 0;
};

// The leaf line of one message record (with the trailing LF).
std::string manifest_leaf(const std::string& account, const std::string& folder_raw,
                          const archive::MessageRecord& message);

struct FolderManifest {
  std::string folder;        // UTF-8
  std::string raw;
  uint64_t messages = 0;     // records, every generation and state
  uint64_t present = 0;
  uint64_t bytes = 0;
  std::string root;          // hex
};

struct AccountManifest {
  std::string account;
  std::string source = "imap";  // what the account was exported from (informational: not in the leaves)
  uint64_t messages = 0;
  uint64_t bytes = 0;
  std::string root;
  std::vector<FolderManifest> folders;
};

struct Manifest {
  std::string archive_id;
  std::string created;       // ISO 8601 UTC
  uint64_t messages = 0;
  uint64_t bytes = 0;
  std::string root;
  std::vector<AccountManifest> accounts;

  nlohmann::json to_json() const;
  static Manifest from_json(const nlohmann::json& j);  // throws Error(corrupt) if malformed
};

// Computes the manifest of the archive as it is now. With `listing` set,
// also writes every leaf line to it (for recomputation with other tools).
// With `only_accounts` non-empty, only the accounts of those names count
// (the others are left out of every figure and of the root): the manifest an
// archive holding only those accounts would have.
Manifest compute_manifest(const archive::Archive& archive, std::FILE* listing = nullptr,
                          const std::set<std::string>& only_accounts = {});

// What differs between a manifest and the archive now.
struct ManifestDifference {
  std::string account;
  std::string folder;        // "" for the account as a whole
  std::string what;          // "root differs", "missing from the archive", "not in the manifest", ...
};
std::vector<ManifestDifference> compare_manifests(const Manifest& expected, const Manifest& actual);

// The messages' bytes, which a manifest pins only by hash: every object a
// message record refers to is read, decompressed and re-hashed (each once, in
// bounded memory). One difference per folder holding messages whose bytes
// are missing or damaged, naming how many and the first UID.
std::vector<ManifestDifference> check_manifest_data(const archive::Archive& archive);

}  // namespace imapstage::verify

// The mounted view as an immutable tree of directories and files, built once
// from a catalog: ACCOUNT/<folder dirs>/{cur,new,tmp}, cur holding one file
// per message, and a dovecot-keywords file beside cur when the folder has keywords.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "archive-format/hash.h"
#include "filesystem/catalog.h"

namespace imapstage::filesystem {

struct TreeNode {
  std::string name;                  // one escaped level ("" for the root)
  bool directory = false;
  int64_t mtime = 0;                 // unix seconds: INTERNALDATE for messages
  uint64_t size = 0;                 // exact bytes of a file
  std::vector<uint32_t> children;    // of a directory, in insertion order
  uint32_t parent = 0;               // the directory holding it (the root: itself)
  uint32_t position = 0;             // its index in the parent's children
  std::optional<archive::Hash> hash; // a message: its object
  std::string content;               // a file that is not a message (dovecot-keywords)
};

class Tree {
 public:
  // `now`: the mtime of directories and of files that are not messages.
  Tree(const std::vector<CatalogFolder>& catalog, int64_t now);

  // The node at `path` ("/", "/acct/INBOX/cur/x"), or nullptr.
  const TreeNode* find(std::string_view path) const;
  const TreeNode& node(uint32_t index) const { return nodes_[index]; }
  size_t size() const { return nodes_.size(); }
  // The index of a node returned by find().
  uint32_t index_of(const TreeNode* n) const { return static_cast<uint32_t>(n - nodes_.data()); }
  size_t files() const { return files_; }

 private:
  uint32_t child_dir(uint32_t parent, const std::string& parent_path, const std::string& name, std::string& path);
  uint32_t add(uint32_t parent, const std::string& path, TreeNode node);
  std::vector<TreeNode> nodes_;
  std::unordered_map<std::string, uint32_t> by_path_;
  size_t files_ = 0;
  int64_t now_;
};

}  // namespace imapstage::filesystem

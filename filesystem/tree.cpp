#include "filesystem/tree.h"

namespace imapstage::filesystem {

Tree::Tree(const std::vector<CatalogFolder>& catalog, int64_t now) : now_(now) {
  TreeNode root;
  root.directory = true;
  root.mtime = now;
  nodes_.push_back(std::move(root));
  by_path_["/"] = 0;
  for (auto& folder : catalog) {
    uint32_t dir = 0;
    std::string path;
    for (auto& level : folder.dirs) dir = child_dir(dir, path, level, path);
    std::string cur_path;
    uint32_t cur = child_dir(dir, path, "cur", cur_path);
    std::string ignored;
    child_dir(dir, path, "new", ignored);
    child_dir(dir, path, "tmp", ignored);
    if (!folder.keywords.empty()) {
      TreeNode k;
      k.name = "dovecot-keywords";
      k.content = dovecot_keywords(folder.keywords);
      k.size = k.content.size();
      k.mtime = now;
      std::string kpath = path + "/" + k.name;
      if (!by_path_.count(kpath)) add(dir, kpath, std::move(k));
    }
    for (auto& m : folder.messages) {
      TreeNode f;
      f.name = m.base + m.info;
      f.mtime = m.record.internaldate;
      f.size = m.record.size;
      f.hash = m.record.hash;
      std::string fpath = cur_path + "/" + f.name;
      if (by_path_.count(fpath)) continue;
      add(cur, fpath, std::move(f));
      ++files_;
    }
  }
}

uint32_t Tree::add(uint32_t parent, const std::string& path, TreeNode node) {
  auto index = static_cast<uint32_t>(nodes_.size());
  node.parent = parent;
  node.position = static_cast<uint32_t>(nodes_[parent].children.size());
  nodes_.push_back(std::move(node));
  nodes_[parent].children.push_back(index);
  by_path_[path] = index;
  return index;
}

uint32_t Tree::child_dir(uint32_t parent, const std::string& parent_path, const std::string& name,
                         std::string& path) {
  path = parent_path + "/" + name;
  auto it = by_path_.find(path);
  if (it != by_path_.end()) return it->second;
  TreeNode d;
  d.name = name;
  d.directory = true;
  d.mtime = now_;
  return add(parent, path, std::move(d));
}

const TreeNode* Tree::find(std::string_view path) const {
  auto it = by_path_.find(std::string(path));
  return it == by_path_.end() ? nullptr : &nodes_[it->second];
}

}  // namespace imapstage::filesystem

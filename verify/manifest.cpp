#include "verify/manifest.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>

#include <fmt/format.h>

#include "common/checked.h"
#include "common/civil_time.h"
#include "common/error.h"

namespace imapstage::verify {

using archive::Hash;

namespace {

Hash node_hash(const Hash& left, const Hash& right) {
  archive::Sha256 h;
  const char prefix = 0x01;
  h.update({&prefix, 1});
  h.update({reinterpret_cast<const char*>(left.data()), left.size()});
  h.update({reinterpret_cast<const char*>(right.data()), right.size()});
  return h.finish();
}

}  // namespace

void MerkleTree::add_leaf(std::string_view leaf_data) {
  archive::Sha256 h;
  const char prefix = 0x00;
  h.update({&prefix, 1});
  h.update(leaf_data);
  stack_.push_back({1, h.finish()});
  ++count_;
  // Merge equal-sized perfect subtrees: the stack holds the binary digits of count_.
  while (stack_.size() >= 2 && stack_[stack_.size() - 1].size == stack_[stack_.size() - 2].size) {
    Node right = stack_.back();
    stack_.pop_back();
    Node& left = stack_.back();
    left.hash = node_hash(left.hash, right.hash);
    left.size += right.size;
  }
}

Hash MerkleTree::root() const {
  if (stack_.empty()) return archive::sha256("");
  // RFC 6962: MTH(D[0:n]) = H(0x01 || MTH(D[0:k]) || MTH(D[k:n])) with k the largest
  // power of two below n; the perfect subtrees on the stack fold from the right.
  Hash h = stack_.back().hash;
  for (size_t i = stack_.size() - 1; i-- > 0;) h = node_hash(stack_[i].hash, h);
  return h;
}

std::string manifest_leaf(const std::string& account, const std::string& folder_raw,
                          const archive::MessageRecord& m) {
  std::vector<std::string> keywords = m.keywords;
  std::sort(keywords.begin(), keywords.end());
  std::string flags;
  for (auto& f : archive::flags_to_imap(m.flags, {})) flags += (flags.empty() ? "" : " ") + f;
  for (auto& k : keywords) flags += (flags.empty() ? "" : " ") + k;
  return fmt::format("{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n", account, folder_raw, m.key.uidvalidity, m.key.uid,
                     archive::to_hex(m.hash), flags, m.internaldate,
                     m.state == archive::MessageState::present ? "present" : "expunged");
}

Manifest compute_manifest(const archive::Archive& a, std::FILE* listing, const std::set<std::string>& only_accounts) {
  Manifest out;
  out.created = iso_utc_now();
  MerkleTree all;
  auto accounts = a.accounts();
  std::sort(accounts.begin(), accounts.end(), [](auto& x, auto& y) { return x.name < y.name; });
  for (auto& account : accounts) {
    if (!only_accounts.empty() && !only_accounts.count(account.name)) continue;
    AccountManifest am;
    am.account = account.name;
    am.source = archive::source_kind_name(account.source);
    MerkleTree account_tree;
    auto folders = a.folders(account.id);
    std::sort(folders.begin(), folders.end(), [](auto& x, auto& y) { return x.name_raw < y.name_raw; });
    for (auto& folder : folders) {
      FolderManifest fm;
      fm.folder = folder.name_utf8;
      fm.raw = folder.name_raw;
      MerkleTree folder_tree;
      a.for_each_message(account.id, folder.id, std::nullopt, [&](const archive::MessageRecord& m) {
        std::string leaf = manifest_leaf(account.name, folder.name_raw, m);
        folder_tree.add_leaf(leaf);
        account_tree.add_leaf(leaf);
        all.add_leaf(leaf);
        if (listing) std::fwrite(leaf.data(), 1, leaf.size(), listing);
        ++fm.messages;
        if (m.state == archive::MessageState::present) ++fm.present;
        fm.bytes = checked_add(fm.bytes, m.size, "the size of folder " + folder.name_utf8);
        return true;
      });
      fm.root = archive::to_hex(folder_tree.root());
      am.messages += fm.messages;
      am.bytes = checked_add(am.bytes, fm.bytes, "the size of account " + account.name);
      am.folders.push_back(std::move(fm));
    }
    am.root = archive::to_hex(account_tree.root());
    out.messages += am.messages;
    out.bytes = checked_add(out.bytes, am.bytes, "the size of the archive");
    out.accounts.push_back(std::move(am));
  }
  out.root = archive::to_hex(all.root());
  return out;
}

nlohmann::json Manifest::to_json() const {
  nlohmann::json accounts_json = nlohmann::json::array();
  for (auto& am : accounts) {
    nlohmann::json folders_json = nlohmann::json::array();
    for (auto& f : am.folders)
      folders_json.push_back({{"folder", f.folder}, {"raw", f.raw}, {"messages", f.messages},
                              {"present", f.present}, {"bytes", f.bytes}, {"root", f.root}});
    accounts_json.push_back({{"account", am.account}, {"source", am.source}, {"messages", am.messages},
                             {"bytes", am.bytes}, {"root", am.root}, {"folders", folders_json}});
  }
  return {{"manifest", "imapstage-manifest"},
          {"version", 1},
          {"archive_id", archive_id},
          {"created", created},
          {"leaf", "SHA-256(0x00 || account TAB folder_raw TAB uidvalidity TAB uid TAB sha256 TAB flags TAB "
                   "internaldate TAB state LF)"},
          {"tree", "RFC 6962 Merkle Tree Hash, node = SHA-256(0x01 || left || right)"},
          {"messages", messages},
          {"bytes", bytes},
          {"root", root},
          {"accounts", accounts_json}};
}

Manifest Manifest::from_json(const nlohmann::json& j) {
  try {
    if (j.at("manifest") != "imapstage-manifest")
      throw Error(ErrorKind::corrupt, "not an imapstage manifest");
    if (j.at("version").get<int>() != 1)
      throw Error(ErrorKind::format, fmt::format("manifest version {} is not supported", j.at("version").dump()));
    Manifest m;
    m.archive_id = j.value("archive_id", "");
    m.created = j.value("created", "");
    m.messages = j.at("messages");
    m.bytes = j.at("bytes");
    m.root = j.at("root");
    for (auto& aj : j.at("accounts")) {
      AccountManifest am;
      am.account = aj.at("account");
      am.source = aj.value("source", std::string("imap"));  // manifests written before sources: IMAP
      am.messages = aj.at("messages");
      am.bytes = aj.at("bytes");
      am.root = aj.at("root");
      for (auto& fj : aj.at("folders")) {
        FolderManifest f;
        f.folder = fj.at("folder");
        f.raw = fj.at("raw");
        f.messages = fj.at("messages");
        f.present = fj.value("present", uint64_t{0});
        f.bytes = fj.at("bytes");
        f.root = fj.at("root");
        am.folders.push_back(std::move(f));
      }
      m.accounts.push_back(std::move(am));
    }
    return m;
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::corrupt, std::string("malformed manifest: ") + e.what());
  }
}

std::vector<ManifestDifference> compare_manifests(const Manifest& expected, const Manifest& actual) {
  std::vector<ManifestDifference> out;
  std::map<std::string, const AccountManifest*> now;
  for (auto& a : actual.accounts) now[a.account] = &a;
  for (auto& ea : expected.accounts) {
    auto it = now.find(ea.account);
    if (it == now.end()) {
      out.push_back({ea.account, "", "account missing from the archive"});
      continue;
    }
    const AccountManifest& aa = *it->second;
    now.erase(it);
    std::map<std::string, const FolderManifest*> folders;
    for (auto& f : aa.folders) folders[f.raw] = &f;
    for (auto& ef : ea.folders) {
      auto fit = folders.find(ef.raw);
      if (fit == folders.end()) {
        out.push_back({ea.account, ef.folder, "folder missing from the archive"});
        continue;
      }
      const FolderManifest& af = *fit->second;
      folders.erase(fit);
      if (af.root != ef.root)
        out.push_back({ea.account, ef.folder,
                       fmt::format("root differs ({} messages, {} bytes in the manifest; {} messages, {} bytes now)",
                                   ef.messages, ef.bytes, af.messages, af.bytes)});
    }
    for (auto& [raw, f] : folders) out.push_back({ea.account, f->folder, "folder not in the manifest"});
    if (ea.root != aa.root && out.empty()) out.push_back({ea.account, "", "account root differs"});
  }
  for (auto& [name, a] : now) out.push_back({name, "", "account not in the manifest"});
  if (out.empty() && expected.root != actual.root) out.push_back({"", "", "archive root differs"});
  return out;
}

std::vector<ManifestDifference> check_manifest_data(const archive::Archive& a) {
  std::vector<ManifestDifference> out;
  std::map<Hash, std::string> checked;  // hash -> "" when sound, else the problem
  auto accounts = a.accounts();
  std::sort(accounts.begin(), accounts.end(), [](auto& x, auto& y) { return x.name < y.name; });
  for (auto& account : accounts) {
    for (auto& folder : a.folders(account.id)) {
      uint64_t bad = 0;
      std::string first;
      a.for_each_message(account.id, folder.id, std::nullopt, [&](const archive::MessageRecord& m) {
        auto it = checked.find(m.hash);
        if (it == checked.end()) {
          std::string problem;
          try {
            a.check_object(m.hash);
          } catch (const std::exception& e) {
            problem = e.what();
            if (problem.empty()) problem = "unreadable";
          }
          it = checked.emplace(m.hash, std::move(problem)).first;
        }
        if (!it->second.empty() && bad++ == 0)
          first = fmt::format("UIDVALIDITY {} UID {}: {}", m.key.uidvalidity, m.key.uid, it->second);
        return true;
      });
      if (bad)
        out.push_back({account.name, folder.name_utf8.empty() ? folder.name_raw : folder.name_utf8,
                       fmt::format("the bytes of {} messages are missing or damaged (first: {})", bad, first)});
    }
  }
  return out;
}

}  // namespace imapstage::verify

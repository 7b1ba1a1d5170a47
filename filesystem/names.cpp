#include "filesystem/names.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "archive-format/hash.h"

namespace imapstage::filesystem {

namespace {

constexpr size_t kNameMax = 255;
constexpr size_t kKeptOnTruncation = 200;

// Length of the valid UTF-8 sequence of two or more bytes starting at s[i], or 0.
size_t utf8_sequence(std::string_view s, size_t i) {
  auto b = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t cp;
  if (b >= 0xC2 && b <= 0xDF) n = 2, cp = b & 0x1F;
  else if (b >= 0xE0 && b <= 0xEF) n = 3, cp = b & 0x0F;
  else if (b >= 0xF0 && b <= 0xF4) n = 4, cp = b & 0x07;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

bool reserved(std::string_view level) {
  static const std::set<std::string_view> names = {"cur", "new", "tmp", "dovecot-keywords", "index.csv",
                                                   "all-generations"};
  return names.count(level) > 0 || level.starts_with("uidvalidity-");
}

void escape_byte(std::string& out, unsigned char b) { out += fmt::format("%{:02X}", b); }

}  // namespace

std::string escape_level(std::string_view level, Layout layout) {
  if (level.empty()) return "%";
  std::string out;
  // Pieces that may not be split by a truncation: each appended whole.
  std::vector<size_t> cuts;
  bool escape_first = level[0] == '.' || reserved(level);
  for (size_t i = 0; i < level.size();) {
    cuts.push_back(out.size());
    auto b = static_cast<unsigned char>(level[i]);
    if (i == 0 && escape_first) {
      escape_byte(out, b);
      ++i;
    } else if (b < 0x20 || b == 0x7F || b == '/' || b == '%' || (b == '.' && layout == Layout::maildir_plus)) {
      escape_byte(out, b);
      ++i;
    } else if (b < 0x80) {
      out += static_cast<char>(b);
      ++i;
    } else if (size_t n = utf8_sequence(level, i)) {
      out.append(level.substr(i, n));
      i += n;
    } else {
      escape_byte(out, b);
      ++i;
    }
  }
  if (out.size() <= kNameMax) return out;
  size_t keep = 0;
  for (size_t c : cuts)
    if (c <= kKeptOnTruncation) keep = c;
  return out.substr(0, keep) + "~" + archive::to_hex(archive::sha256(level)).substr(0, 16);
}

std::vector<std::string> folder_dirs(const archive::FolderRecord& folder, Layout layout) {
  std::vector<std::string> levels;
  if (folder.ns_kind != archive::NamespaceKind::personal)
    levels.push_back("#" + std::string(archive::namespace_name(folder.ns_kind)));
  for (auto& l : folder.path) levels.push_back(l);
  if (levels.empty()) levels.push_back(folder.name_utf8);
  if (layout == Layout::nested) {
    for (auto& l : levels) l = escape_level(l, layout);
    return levels;
  }
  if (levels.size() == 1 && levels[0] == "INBOX") return {};
  std::string name;
  for (auto& l : levels) name += "." + escape_level(l, layout);
  if (name.size() > kNameMax) name = name.substr(0, kKeptOnTruncation) + "~" +
                                     archive::to_hex(archive::sha256(name)).substr(0, 16);
  return {name};
}

std::vector<std::string> keyword_table(const std::vector<archive::MessageRecord>& messages) {
  std::set<std::string> all;
  for (auto& m : messages) all.insert(m.keywords.begin(), m.keywords.end());
  return {all.begin(), all.end()};
}

std::string maildir_base(const archive::MessageRecord& m) {
  return fmt::format("{}.U{}_{}.imapstage,S={}", m.internaldate, m.key.uidvalidity, m.key.uid, m.size);
}

std::string maildir_info(const archive::MessageRecord& m, const std::vector<std::string>& keywords) {
  std::string letters;
  if (m.flags & archive::kDraft) letters += 'D';
  if (m.flags & archive::kFlagged) letters += 'F';
  if (m.flags & archive::kAnswered) letters += 'R';
  if (m.flags & archive::kSeen) letters += 'S';
  if (m.flags & archive::kDeleted) letters += 'T';
  std::string lower;
  for (auto& k : m.keywords) {
    auto it = std::find(keywords.begin(), keywords.end(), k);
    if (it == keywords.end()) continue;
    size_t index = static_cast<size_t>(it - keywords.begin());
    if (index < 26) lower += static_cast<char>('a' + index);
  }
  std::sort(lower.begin(), lower.end());
  lower.erase(std::unique(lower.begin(), lower.end()), lower.end());
  return ":2," + letters + lower;
}

std::string dovecot_keywords(const std::vector<std::string>& keywords) {
  std::string out;
  for (size_t i = 0; i < keywords.size() && i < 26; ++i) out += fmt::format("{} {}\n", i, keywords[i]);
  return out;
}

}  // namespace imapstage::filesystem

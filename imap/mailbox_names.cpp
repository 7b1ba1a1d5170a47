#include "imap/mailbox_names.h"

#include <cctype>

#include "imap/utf7.h"

namespace imapstage::imap {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// Prefixes compare case-insensitively only where they begin with INBOX (RFC 3501 §5.1).
bool starts_with_prefix(std::string_view name, std::string_view prefix) {
  if (name.size() < prefix.size()) return false;
  if (prefix.size() >= 5 && iequals(prefix.substr(0, 5), "INBOX"))
    return iequals(name.substr(0, 5), "INBOX") && name.substr(5, prefix.size() - 5) == prefix.substr(5);
  return name.substr(0, prefix.size()) == prefix;
}

std::vector<std::string> split(std::string_view text, char delimiter) {
  std::vector<std::string> out;
  if (delimiter == 0) {
    out.emplace_back(text);
    return out;
  }
  size_t start = 0;
  for (;;) {
    size_t at = text.find(delimiter, start);
    if (at == std::string_view::npos) {
      out.emplace_back(text.substr(start));
      return out;
    }
    out.emplace_back(text.substr(start, at - start));
    start = at + 1;
  }
}

}  // namespace

Placement place_mailbox(std::string_view name_raw, char delimiter, const std::vector<Namespace>& namespaces) {
  Placement p;
  if (iequals(name_raw, "INBOX")) {
    p.path = {"INBOX"};
    return p;
  }
  const Namespace* best = nullptr;
  bool is_root = false;
  for (auto& n : namespaces) {
    bool root = !n.prefix.empty() && n.delimiter && n.prefix.back() == n.delimiter &&
                name_raw.size() + 1 == n.prefix.size() && starts_with_prefix(n.prefix, name_raw);
    if (!root && !starts_with_prefix(name_raw, n.prefix)) continue;
    if (!best || n.prefix.size() > best->prefix.size()) {
      best = &n;
      is_root = root;
    }
  }
  if (!best) {
    p.path = split(utf7_decode(name_raw), delimiter);
    return p;
  }
  p.kind = best->kind;
  p.prefix = best->prefix;
  if (is_root) return p;  // the namespace's own root: no levels
  std::string_view rest = name_raw.substr(best->prefix.size());
  p.path = split(utf7_decode(rest), delimiter);
  return p;
}

BuiltName build_mailbox_name(const std::vector<std::string>& path, std::string_view prefix_raw, char delimiter) {
  BuiltName out;
  if (path.size() == 1 && iequals(path[0], "INBOX")) {
    out.utf8 = out.raw = "INBOX";
    return out;
  }
  std::string joined;
  for (size_t i = 0; i < path.size(); ++i) {
    if (i) joined += delimiter ? delimiter : '/';
    for (char c : path[i]) {
      if (delimiter && c == delimiter) {
        joined += '_';
        out.changed = true;
      } else {
        joined += c;
      }
    }
  }
  out.utf8 = utf7_decode(prefix_raw) + joined;
  out.raw = utf7_encode(out.utf8);  // the prefix as announced, for any prefix that is valid modified UTF-7
  return out;
}

std::string join_path(const std::vector<std::string>& path) {
  std::string out;
  for (size_t i = 0; i < path.size(); ++i) {
    if (i) out += '/';
    out += path[i];
  }
  return out;
}

std::vector<std::string> split_path(std::string_view canonical) { return split(canonical, '/'); }

}  // namespace imapstage::imap

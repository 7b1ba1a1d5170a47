// Mailbox names between servers: where a raw name sits in the server's
// namespaces (RFC 2342), as a path of UTF-8 levels that no longer carries the
// server's prefix or separator, and back to a raw name in another server's
// personal namespace. Pure functions over strings.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "imap/session.h"

namespace imapstage::imap {

struct Placement {
  Namespace::Kind kind = Namespace::personal;
  std::string prefix;              // raw prefix of the namespace the name is in ("" when none)
  std::vector<std::string> path;   // UTF-8 levels below the prefix; {"INBOX"} for INBOX
};

// Where `name_raw` (listed with `delimiter`) sits: INBOX (any case) is
// personal {"INBOX"}; otherwise the namespace with the longest prefix that
// begins the name (a prefix "P." also owns "P" itself, whose path is empty);
// a name outside every namespace is personal with no prefix. The rest is
// decoded from modified UTF-7 and split at `delimiter` (not at all when 0).
Placement place_mailbox(std::string_view name_raw, char delimiter, const std::vector<Namespace>& namespaces);

// A name in a personal namespace: `path`'s levels joined with `delimiter`
// after `prefix` (UTF-8 in `utf8`, modified UTF-7 in `raw`). A level holding
// the delimiter has it replaced by '_' (`changed` says so). {"INBOX"} is INBOX.
struct BuiltName {
  std::string utf8;
  std::string raw;
  bool changed = false;
};
BuiltName build_mailbox_name(const std::vector<std::string>& path, std::string_view prefix_raw, char delimiter);

// The canonical form people see: levels joined with '/'.
std::string join_path(const std::vector<std::string>& path);
// Splits a canonical name at '/' (empty levels kept).
std::vector<std::string> split_path(std::string_view canonical);

}  // namespace imapstage::imap

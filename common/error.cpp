#include "common/error.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace imapstage {

std::string ErrorWhere::describe() const {
  std::string out;
  auto add = [&out](const std::string& part) {
    if (!out.empty()) out += ", ";
    out += part;
  };
  if (!account.empty()) add("account " + account);
  if (!server.empty()) add("server " + server);
  if (!folder.empty()) add("folder " + folder);
  if (uid) add(fmt::format("UID {}", *uid));
  if (!hash.empty()) add("object " + hash);
  if (!file.empty()) add("file " + file);
  return out;
}

// what() is a C string: a NUL (from a name a server sent) would end it early.
static std::string compose(const std::string& message, const ErrorWhere& where) {
  std::string text = where.empty() ? message : message + " (" + where.describe() + ")";
  for (size_t p; (p = text.find('\0')) != std::string::npos;) text.replace(p, 1, "\\x00");
  return text;
}

Error::Error(ErrorKind kind, std::string message, Retry retry, ErrorWhere where)
    : std::runtime_error(compose(message, where)),
      kind_(kind),
      retry_(retry),
      where_(std::move(where)),
      message_(std::move(message)) {}

Error Error::with(const ErrorWhere& outer) const {
  ErrorWhere merged = where_;
  if (merged.account.empty()) merged.account = outer.account;
  if (merged.folder.empty()) merged.folder = outer.folder;
  if (!merged.uid) merged.uid = outer.uid;
  if (merged.file.empty()) merged.file = outer.file;
  if (merged.hash.empty()) merged.hash = outer.hash;
  if (merged.server.empty()) merged.server = outer.server;
  Error out(kind_, message_, retry_, merged);
  out.retry_after_ = retry_after_;
  return out;
}

Error Error::with_retry_after(std::optional<std::chrono::milliseconds> delay) const {
  Error out = *this;
  out.retry_after_ = delay;
  return out;
}

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::usage: return "usage";
    case ErrorKind::io: return "io";
    case ErrorKind::corrupt: return "corrupt";
    case ErrorKind::format: return "format";
    case ErrorKind::locked: return "locked";
    case ErrorKind::not_found: return "not_found";
    case ErrorKind::network: return "network";
    case ErrorKind::tls: return "tls";
    case ErrorKind::auth: return "auth";
    case ErrorKind::protocol: return "protocol";
    case ErrorKind::limit: return "limit";
    case ErrorKind::interrupted: return "interrupted";
    case ErrorKind::policy: return "policy";
    case ErrorKind::throttled: return "throttled";
    case ErrorKind::internal: return "internal";
  }
  return "unknown";
}

const char* to_string(Retry retry) {
  switch (retry) {
    case Retry::now: return "now";
    case Retry::later: return "later";
    case Retry::never: return "never";
  }
  return "unknown";
}

void throw_io(const std::string& what, const std::string& path, int errno_value, Retry retry) {
  // Disk full and quota are worth retrying once space is freed.
  if (errno_value == ENOSPC || errno_value == EDQUOT) retry = Retry::later;
  ErrorWhere where;
  where.file = path;
  throw Error(ErrorKind::io, what + ": " + std::strerror(errno_value), retry, where);
}

}  // namespace imapstage

// The one error type of imapstage.
//
// Every failure that crosses a module boundary is an imapstage::Error: it says
// what failed (kind + message), where (account, folder, UID, file, hash) and
// whether retrying can help (Retry::now / later / never). Low-level wrappers
// throw it; only the command line (cli/) turns it into text and exit codes.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace imapstage {

// What went wrong, coarse enough to pick an exit code and a retry policy.
enum class ErrorKind {
  usage,        // bad command line or configuration
  io,           // a local file operation failed (disk full, permissions, ...)
  corrupt,      // stored data fails its checks (hash, checksum, structure)
  format,       // archive format version or layout this build cannot read
  locked,       // another writer holds the archive
  not_found,    // the named account, folder, message or object does not exist
  network,      // connection refused, dropped, timed out
  tls,          // TLS handshake or certificate verification failed
  auth,         // the server refused the credentials or the mechanism
  protocol,     // the server answered NO/BAD or something we cannot parse
  limit,        // a server limit (APPENDLIMIT, quota, over-quota) refused it
  interrupted,  // stopped by a signal or a timeout of ours
  policy,       // stopped by a policy of the run (--max-errors)
  throttled,    // the server asked us to slow down or come back later (throttling, bandwidth
                // or daily limits, [UNAVAILABLE]); retry_after() says when, if it said. From a
                // session it comes with Retry::now (the connection is closed: reconnect, after the wait)
  internal,     // a bug: an invariant of ours does not hold
};

// Whether the same operation can succeed if tried again.
enum class Retry {
  now,    // transient: reconnect and retry at once (dropped connection)
  later,  // may succeed after a wait or a change elsewhere (server busy, disk full)
  never,  // permanent: retrying repeats the failure (bad password, corrupt object)
};

// Where a failure happened. Every field is optional; fill what is known.
struct ErrorWhere {
  std::string account{};           // archived account name, or USER@HOST
  std::string folder{};            // folder name as shown to people (UTF-8)
  std::optional<uint32_t> uid{};   // message UID in that folder
  std::string file{};              // a local path
  std::string hash{};              // object hash, hex
  std::string server{};            // HOST:PORT

  bool empty() const {
    return account.empty() && folder.empty() && !uid && file.empty() && hash.empty() && server.empty();
  }
  // "account alice@h, folder INBOX, UID 12" — the filled fields, in a fixed order.
  std::string describe() const;
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message, Retry retry = Retry::never, ErrorWhere where = {});

  ErrorKind kind() const { return kind_; }
  Retry retry() const { return retry_; }
  const ErrorWhere& where() const { return where_; }
  // The bare message, without location.
  const std::string& message() const { return message_; }

  // How long the server asked us to wait (M365 "Suggested Backoff Time"),
  // or, for a parked account, until when; nullopt when it did not say.
  const std::optional<std::chrono::milliseconds>& retry_after() const { return retry_after_; }
  // Returns a copy that carries `delay` as retry_after().
  Error with_retry_after(std::optional<std::chrono::milliseconds> delay) const;

  // Returns a copy with the empty location fields filled from `outer`
  // (inner, more precise fields win). Used to add context as errors rise.
  Error with(const ErrorWhere& outer) const;

  // what() is "message (account A, folder F, UID U)", a NUL in them written as \x00.

 private:
  ErrorKind kind_;
  Retry retry_;
  ErrorWhere where_;
  std::string message_;
  std::string full_;
  std::optional<std::chrono::milliseconds> retry_after_{};
};

// The lower-case name of a kind, e.g. "network"; stable, used in JSON output.
const char* to_string(ErrorKind kind);
// "now", "later", "never".
const char* to_string(Retry retry);

// Throws Error(io) naming `path` and strerror(errno_value).
[[noreturn]] void throw_io(const std::string& what, const std::string& path, int errno_value,
                           Retry retry = Retry::never);

}  // namespace imapstage

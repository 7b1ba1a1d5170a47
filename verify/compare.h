// Online comparison of the archive with a server, folder by folder.
//
// Against the source: each archived folder (current UIDVALIDITY generation,
// messages present on the source at the last export) versus the server's
// folder of the same name: counts, total bytes, UIDs, sizes and flags; with
// `deep`, every message is fetched and its SHA-256 and INTERNALDATE compared too.
//
// Against a target: what import recorded (source message -> target folder and
// UID) versus the target's folders: messages missing on the target, messages
// there that no import put there, and messages whose size, flags (or, deep,
// bytes and INTERNALDATE) differ from the archived source.
//
// Read-only on the server: EXAMINE and BODY.PEEK only.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/events.h"
#include "common/retry.h"
#include "imap/session.h"

namespace imapstage::verify {

enum class Against { source, target };

struct CompareOptions {
  std::filesystem::path archive_dir;
  imap::Endpoint endpoint;
  imap::Credentials credentials;
  Against against = Against::source;
  std::string account;       // archived account; "" means the only one
  std::string target_name;   // target identity as import recorded it; "" means USER@HOST:PORT
  bool deep = false;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  RetryPolicy retry;
};

struct MessageDifference {
  std::string kind;          // "missing", "extra", "differs", "not imported"
  uint32_t archive_uid = 0;  // source UID in the archive, 0 if none
  uint32_t server_uid = 0;   // UID on the compared server, 0 if none
  std::string message_id;    // when known
  std::string detail;        // what differs
};

struct FolderComparison {
  std::string folder;         // archive folder(s), UTF-8
  std::string server_folder;  // folder on the server, UTF-8
  uint64_t archive_messages = 0;
  uint64_t server_messages = 0;
  uint64_t archive_bytes = 0;
  uint64_t server_bytes = 0;
  uint64_t hashes_compared = 0;  // deep only
  std::vector<MessageDifference> differences;
  std::string error;          // the folder could not be compared
  bool equal() const {
    return error.empty() && differences.empty() && archive_messages == server_messages &&
           archive_bytes == server_bytes;
  }
};

struct Comparison {
  std::string account;
  std::string against;        // "source" or "target"
  std::string server;         // identity compared with
  bool deep = false;
  std::vector<FolderComparison> folders;
  double seconds = 0;
  bool equal() const;
  nlohmann::json to_json() const;
};

// Throws Error for what stops the whole comparison (login refused, archive
// unreadable, no import recorded for that target).
Comparison compare_online(const CompareOptions& options, EventSink& events);

}  // namespace imapstage::verify

// A POP3 maildrop as a sources::Source, for export/source_export.h.
//
// One folder, INBOX. Messages are keyed by their UIDL; a UIDL the listing
// shows more than once is kept apart as "UIDL#2", "UIDL#3"... (in message
// number order), so no message is lost. Without UIDL every message is
// fetched on each run and recognised by its SHA-256 (the listing's note says
// so). INTERNALDATE is the topmost Received: date, else the Date: header,
// else the time of the fetch; which one is recorded per message.
//
// The source never deletes anything. delete_archived() is the one call that
// sends DELE, and only for messages whose archived object reads back and
// re-hashes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "archive-format/archive.h"
#include "common/events.h"
#include "pop3/session.h"
#include "sources/source.h"

namespace imapstage::pop3 {

// How the RETR commands are paced under rate caps (--max-bandwidth,
// --max-messages-per-second, a batch's per-server caps), as the IMAP export
// paces its FETCHes: the messages are paid for in groups, each just before
// its first RETR is sent.
struct Pacing {
  // Blocks until `messages` messages of `bytes` (their LIST sizes) may be
  // asked for. Empty: no pacing.
  std::function<void(uint64_t bytes, uint64_t messages)> acquire;
  // A group is at most this many messages and bytes (a message larger than
  // group_bytes is a group of its own): a quarter second's worth of the caps
  // (RateLimiter::messages_per_send, bytes_per_send).
  uint64_t group_messages = UINT64_MAX;
  uint64_t group_bytes = UINT64_MAX;
};

// The source. Connects and logs in at folders() (a refused login throws
// there, before the export touches the archive); reconnects in list() after
// a dropped connection. RETR commands are pipelined `in_flight` deep when
// the server offers PIPELINING, and paced by `pacing`.
std::unique_ptr<sources::Source> open_source(const Endpoint& endpoint, const Credentials& credentials,
                                             size_t in_flight = 16, Pacing pacing = {});

// The identities of a maildrop's messages, in message number order: the
// UIDL, with "#N" added to the N-th (N >= 2) message showing the same UIDL;
// all "" without UIDL.
std::vector<std::string> identities(const Maildrop& drop);

struct DeleteResult {
  uint64_t deleted = 0;          // DELE sent and committed by QUIT
  uint64_t not_archived = 0;     // on the server, not (or not durably) in the archive: kept
  uint64_t failed_check = 0;     // archived object did not read back or re-hash: kept, reported
  bool no_uidl = false;          // the server has no UIDL: nothing deleted
};

// --delete-after-verify: after an export has committed, deletes from the
// server the messages of the INBOX that the archive's account `account_name`
// holds as present with the identity the server shows now, each only after
// its object has been read back from the packs and its SHA-256 recomputed
// (Archive::check_object). Opens its own connection; the DELEs take effect
// at its QUIT only. Emits a "warning" event per message kept for a failed
// check and one when the server has no UIDL. Throws Error for a connection
// or login failure (then nothing is deleted).
DeleteResult delete_archived(const Endpoint& endpoint, const Credentials& credentials, const archive::Archive& archive,
                             const std::string& account_name, EventSink& events);

}  // namespace imapstage::pop3

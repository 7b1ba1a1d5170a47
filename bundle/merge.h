// Merging archives: the union of the accounts, folders, messages and objects
// of several archives (the shards of one batch) into one, as if one process
// had exported every account. No format change: OUT is written only through
// the archive's ordinary commit protocol (FORMAT.md, "Commit protocol").
//
//   For each input, account by account (by name), in commits of whole accounts:
//     objects their new messages need    -> objects-only commits (ObjectSink)
//     account, folder and message rows   -> then one batch: one journal record, one LMDB transaction
//   Account and folder ids are OUT's (given out afresh for names OUT lacks);
//   objects are stored once (by hash) however many inputs hold them.
//
// Rows present in OUT or in several inputs must be equal (apart from ids and
// the account's creation time); otherwise nothing is written and the
// conflict is reported naming the account, folder, UIDVALIDITY/UID and both
// archives. A killed merge leaves OUT valid (whole accounts or nothing of
// each, as merge_account events said; objects without a message are invisible), and running it again
// finishes it: rows already in OUT are equal, so they are skipped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/events.h"

namespace imapstage::bundle {

struct MergeResult {
  size_t inputs = 0;
  size_t accounts = 0;           // accounts in OUT afterwards
  size_t accounts_written = 0;   // accounts this run added to or completed in OUT
  size_t accounts_unchanged = 0; // accounts OUT already held whole (an earlier merge)
  uint64_t messages_written = 0; // message rows added
  uint64_t folders_written = 0;  // folder rows added
  uint64_t objects_written = 0;  // objects OUT did not have
  uint64_t bytes_written = 0;    // their raw sizes
};

// Merges the archives `inputs` into `out` (created when missing or empty).
// Takes OUT's writer lock and every input's (so no shard still writing is
// merged half way; Error(locked) names it). Refuses (Error(usage)) an input
// that is OUT itself or given twice, a symbolic link as OUT, and conflicting
// rows (checked for every input before anything is written).
// The inputs' export batch states are merged into OUT's
// (OUT/batches/export.json), so `status --archive OUT` shows every account.
// Emits merge_start, merge_account (per account written or found whole, once it
// is committed) and merge_done events.
MergeResult merge(const std::string& out, const std::vector<std::string>& inputs, EventSink& events);

}  // namespace imapstage::bundle

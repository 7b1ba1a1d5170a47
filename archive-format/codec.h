// Byte encodings of the LMDB index (keys and values) and of journal records,
// as specified in archive-format/FORMAT.md ("Index" and "Journal records").
// Pure functions over bytes: no LMDB, no files. Every decode_* function
// accepts arbitrary input and throws Error(corrupt) for anything that is not a
// well-formed encoding (wrong layout version, truncated, trailing bytes, values
// out of range); it never reads outside `bytes`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "archive-format/archive.h"

namespace imapstage::archive::codec {

// Every value starts with this layout version byte.
inline constexpr uint8_t kValueVersion = 1;
// Except folder values, which are at layout 2 since format version 2 (layout 1
// is still read: its path is derived by path_of_v1_name).
inline constexpr uint8_t kFolderValueVersion = 2;
// Journal payloads start with this version byte.
inline constexpr uint8_t kJournalVersion = 1;
// Names longer than this are keyed by a prefix plus their SHA-256 (LMDB keys are at most 511 bytes).
inline constexpr size_t kMaxNameKey = 400;

// ---- keys (big-endian, so LMDB's byte order is numeric order) --------------
std::string u32_key(uint32_t v);
std::string u64_key(uint64_t v);
uint32_t decode_u32_key(std::string_view bytes);
uint64_t decode_u64_key(std::string_view bytes);
std::string folder_key(uint32_t account_id, uint32_t folder_id);
void decode_folder_key(std::string_view bytes, uint32_t& account_id, uint32_t& folder_id);
std::string name_key(std::string_view name);  // account_names, target_names
std::string folder_name_key(uint32_t account_id, std::string_view name_raw);
std::string message_key(const MessageKey& key);
MessageKey decode_message_key(std::string_view bytes);
// message_counts: the first 12 bytes of the message keys it counts.
std::string message_counts_key(uint32_t account_id, uint32_t folder_id, uint32_t uidvalidity);
std::string append_key(const AppendKey& key);
AppendKey decode_append_key(std::string_view bytes);

// ---- values ----------------------------------------------------------------
// The id fields that live in the key are taken from it when decoding.
std::string encode_account(const AccountRecord& r);
AccountRecord decode_account(std::string_view key, std::string_view value);
std::string encode_folder(const FolderRecord& r);
FolderRecord decode_folder(std::string_view key, std::string_view value);
std::string encode_message(const MessageRecord& r);
MessageRecord decode_message(std::string_view key, std::string_view value);
// Only the key and state of a message value (a folder's UIDs counted
// without decoding the rest). Throws like decode_message for a value too
// short to reach its state.
std::pair<MessageKey, MessageState> decode_message_state(std::string_view key, std::string_view value);
std::string encode_message_counts(const MessageCounts& r);
MessageCounts decode_message_counts(std::string_view value);
// import_marks: u32be target id, then the message_counts key of the generation.
std::string import_mark_key(uint32_t target_id, uint32_t account_id, uint32_t folder_id, uint32_t uidvalidity);
std::string encode_import_mark(const ImportMark& r);
ImportMark decode_import_mark(std::string_view value);
std::string encode_append(const AppendRecord& r);
AppendRecord decode_append(std::string_view key, std::string_view value);
std::string encode_object(const ObjectLocation& r);
ObjectLocation decode_object(std::string_view value);
std::string encode_pack(const PackInfo& r);
PackInfo decode_pack(std::string_view key, std::string_view value);
std::string encode_run(const RunRecord& r);
RunRecord decode_run(std::string_view key, std::string_view value);
std::string encode_target(std::string_view identity);
std::string decode_target(std::string_view value);

// ---- journal records -------------------------------------------------------
enum class OpKind : uint8_t {
  put_account = 1,   // key: accounts key, value: accounts value
  put_folder = 2,    // key: folders key, value: folders value
  put_message = 3,   // key: messages key, value: messages value
  put_append = 4,    // key: appends key, value: appends value
  erase_append = 5,  // key: appends key, value: empty
  put_target = 6,    // key: targets key, value: targets value
};

struct JournalOp {
  OpKind kind = OpKind::put_account;
  std::string key;
  std::string value;
};

struct Journal {
  uint64_t sequence = 0;  // increasing over the archive's life; replay order
  int64_t time = 0;       // unix seconds of the commit
  std::vector<JournalOp> ops;
};

std::string encode_journal(const Journal& journal);
// Checks the framing and that every op's key and value decode.
Journal decode_journal(std::string_view bytes);
// Throws Error(corrupt) unless op's key and value are well-formed for its kind.
void check_op(const JournalOp& op);

}  // namespace imapstage::archive::codec

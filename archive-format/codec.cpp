#include "archive-format/codec.h"

#include <cstring>

#include "archive-format/pack.h"
#include "common/error.h"

namespace imapstage::archive::codec {

namespace {

[[noreturn]] void malformed(const std::string& what) {
  throw Error(ErrorKind::corrupt, "malformed index or journal encoding: " + what);
}

class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void i32(int32_t v) { u32(static_cast<uint32_t>(v)); }
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void bytes(std::string_view b) { out_.append(b); }
  void str(std::string_view s) {
    if (s.size() > UINT32_MAX) throw Error(ErrorKind::internal, "string too long for the index");
    u32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void strs(const std::vector<std::string>& v) {
    u32(static_cast<uint32_t>(v.size()));
    for (auto& s : v) str(s);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(std::string_view in, const char* what) : in_(in), what_(what) {}
  void need(size_t n) {
    if (in_.size() - pos_ < n) malformed(std::string(what_) + " is truncated");
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(in_[pos_++]);
  }
  uint32_t u32() {
    need(4);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    pos_ += 4;
    return v;
  }
  uint64_t u64() {
    need(8);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    pos_ += 8;
    return v;
  }
  int32_t i32() { return static_cast<int32_t>(u32()); }
  int64_t i64() { return static_cast<int64_t>(u64()); }
  std::string_view bytes(size_t n) {
    need(n);
    auto out = in_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  std::string str() {
    uint32_t n = u32();
    return std::string(bytes(n));
  }
  std::vector<std::string> strs() {
    uint32_t n = u32();
    // Each string takes at least its 4-byte length: bounds the count before reserving.
    if (n > (in_.size() - pos_) / 4) malformed(std::string(what_) + " has an impossible list length");
    std::vector<std::string> out;
    out.reserve(n);
    for (uint32_t i = 0; i < n; ++i) out.push_back(str());
    return out;
  }
  void version(uint8_t expected) {
    uint8_t v = u8();
    if (v != expected) malformed(std::string(what_) + " has unknown layout version " + std::to_string(v));
  }
  // One of the layouts lo..hi; returns it.
  uint8_t version(uint8_t lo, uint8_t hi) {
    uint8_t v = u8();
    if (v < lo || v > hi) malformed(std::string(what_) + " has unknown layout version " + std::to_string(v));
    return v;
  }
  bool boolean() {
    uint8_t v = u8();
    if (v > 1) malformed(std::string(what_) + " has a boolean that is neither 0 nor 1");
    return v == 1;
  }
  void end() {
    if (pos_ != in_.size()) malformed(std::string(what_) + " has trailing bytes");
  }

 private:
  std::string_view in_;
  size_t pos_ = 0;
  const char* what_;
};

void be32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void be64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint32_t read_be32(std::string_view b, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | static_cast<uint8_t>(b[at + i]);
  return v;
}
uint64_t read_be64(std::string_view b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | static_cast<uint8_t>(b[at + i]);
  return v;
}

void key_size(std::string_view key, size_t size, const char* what) {
  if (key.size() != size) malformed(std::string(what) + " key has the wrong length");
}

constexpr uint32_t kAllFlags = kSeen | kAnswered | kFlagged | kDeleted | kDraft;

}  // namespace

std::string u32_key(uint32_t v) {
  std::string out;
  be32(out, v);
  return out;
}
std::string u64_key(uint64_t v) {
  std::string out;
  be64(out, v);
  return out;
}
uint32_t decode_u32_key(std::string_view bytes) {
  key_size(bytes, 4, "32-bit");
  return read_be32(bytes, 0);
}
uint64_t decode_u64_key(std::string_view bytes) {
  key_size(bytes, 8, "64-bit");
  return read_be64(bytes, 0);
}

std::string folder_key(uint32_t account_id, uint32_t folder_id) {
  std::string out;
  be32(out, account_id);
  be32(out, folder_id);
  return out;
}
void decode_folder_key(std::string_view bytes, uint32_t& account_id, uint32_t& folder_id) {
  key_size(bytes, 8, "folder");
  account_id = read_be32(bytes, 0);
  folder_id = read_be32(bytes, 4);
}

std::string name_key(std::string_view name) {
  if (name.size() <= kMaxNameKey) return std::string(name);
  Hash h = sha256(name);
  std::string out(name.substr(0, kMaxNameKey));
  out.append(reinterpret_cast<const char*>(h.data()), h.size());
  return out;
}

std::string folder_name_key(uint32_t account_id, std::string_view name_raw) {
  std::string out;
  be32(out, account_id);
  out += name_key(name_raw);
  return out;
}

std::string message_key(const MessageKey& key) {
  std::string out;
  be32(out, key.account_id);
  be32(out, key.folder_id);
  be32(out, key.uidvalidity);
  be32(out, key.uid);
  return out;
}
MessageKey decode_message_key(std::string_view bytes) {
  key_size(bytes, 16, "message");
  return {read_be32(bytes, 0), read_be32(bytes, 4), read_be32(bytes, 8), read_be32(bytes, 12)};
}

std::string append_key(const AppendKey& key) {
  std::string out;
  be32(out, key.target_id);
  out += message_key(key.source);
  return out;
}
AppendKey decode_append_key(std::string_view bytes) {
  key_size(bytes, 20, "append");
  return {read_be32(bytes, 0), decode_message_key(bytes.substr(4))};
}

// ---- values ----------------------------------------------------------------

// Layout 1: no source kind (an IMAP account); layout 2 (format version 4): a
// u8 source kind after the layout 1 fields.
constexpr uint8_t kAccountValueVersion = 2;
constexpr uint8_t kLastSourceKind = static_cast<uint8_t>(SourceKind::eml);

std::string encode_account(const AccountRecord& r) {
  Writer w;
  w.u8(kAccountValueVersion);
  w.str(r.name);
  w.str(r.host);
  w.str(r.user);
  w.i64(r.created);
  w.u8(static_cast<uint8_t>(r.source));
  return w.take();
}
AccountRecord decode_account(std::string_view key, std::string_view value) {
  AccountRecord r;
  r.id = decode_u32_key(key);
  Reader in(value, "account value");
  uint8_t layout = in.version(kValueVersion, kAccountValueVersion);
  r.name = in.str();
  r.host = in.str();
  r.user = in.str();
  r.created = in.i64();
  if (layout == kAccountValueVersion) {
    uint8_t kind = in.u8();
    if (kind > kLastSourceKind) malformed("account value has an unknown source kind");
    r.source = static_cast<SourceKind>(kind);
  }
  in.end();
  return r;
}

std::string encode_folder(const FolderRecord& r) {
  Writer w;
  w.u8(kFolderValueVersion);
  w.str(r.name_raw);
  w.str(r.name_utf8);
  w.u8(static_cast<uint8_t>(r.delimiter));
  w.strs(r.attributes);
  w.u8(static_cast<uint8_t>((r.subscribed ? 1 : 0) | (r.noselect ? 2 : 0) | (r.gone ? 4 : 0)));
  w.u32(r.uidvalidity);
  w.u32(r.uidnext);
  w.u64(r.highestmodseq);
  w.i64(r.last_export);
  w.u8(static_cast<uint8_t>(r.ns_kind));
  w.str(r.ns_prefix);
  w.strs(r.path);
  return w.take();
}
FolderRecord decode_folder(std::string_view key, std::string_view value) {
  FolderRecord r;
  decode_folder_key(key, r.account_id, r.id);
  Reader in(value, "folder value");
  uint8_t layout = in.u8();
  if (layout != 1 && layout != kFolderValueVersion)
    malformed("folder value has unknown layout version " + std::to_string(layout));
  r.name_raw = in.str();
  r.name_utf8 = in.str();
  r.delimiter = static_cast<char>(in.u8());
  r.attributes = in.strs();
  uint8_t bits = in.u8();
  if (bits & ~7u) malformed("folder value has unknown state bits");
  r.subscribed = bits & 1;
  r.noselect = bits & 2;
  r.gone = bits & 4;
  r.uidvalidity = in.u32();
  r.uidnext = in.u32();
  r.highestmodseq = in.u64();
  r.last_export = in.i64();
  if (layout == 1) {
    r.path = path_of_v1_name(r.name_utf8, r.delimiter, r.ns_prefix);
  } else {
    uint8_t kind = in.u8();
    if (kind > 2) malformed("folder value has an unknown namespace kind");
    r.ns_kind = static_cast<NamespaceKind>(kind);
    r.ns_prefix = in.str();
    r.path = in.strs();
  }
  in.end();
  return r;
}

// Layout 1: an IMAP message; layout 2 (format version 4): the layout 1 fields,
// then str source_id and u8 date_source. Written only for messages that have
// either, so IMAP message values stay at layout 1.
constexpr uint8_t kSourceMessageLayout = 2;
// Layout 3 (format version 6): the layout 1 fields, then u64 gm_msgid,
// u64 gm_thrid and strs gm_labels. Written only for messages of a Gmail
// source (gm_msgid not 0), which never have a source_id.
constexpr uint8_t kGmailMessageLayout = 3;
constexpr uint8_t kLastDateSource = static_cast<uint8_t>(DateSource::fetch_time);

std::string encode_message(const MessageRecord& r) {
  Writer w;
  bool from_source = !r.source_id.empty() || r.date_source != DateSource::server;
  bool gmail = r.gm_msgid != 0;
  if (from_source && gmail) throw Error(ErrorKind::internal, "a message with both a source identity and a Gmail id");
  w.u8(gmail ? kGmailMessageLayout : from_source ? kSourceMessageLayout : kValueVersion);
  w.bytes(std::string_view(reinterpret_cast<const char*>(r.hash.data()), r.hash.size()));
  w.u32(r.flags);
  w.strs(r.keywords);
  w.i64(r.internaldate);
  w.i32(r.internaldate_tz);
  w.u64(r.size);
  w.u64(r.modseq);
  w.u8(static_cast<uint8_t>(r.state));
  if (from_source) {
    w.str(r.source_id);
    w.u8(static_cast<uint8_t>(r.date_source));
  }
  if (gmail) {
    w.u64(r.gm_msgid);
    w.u64(r.gm_thrid);
    w.strs(r.gm_labels);
  }
  return w.take();
}
MessageRecord decode_message(std::string_view key, std::string_view value) {
  MessageRecord r;
  r.key = decode_message_key(key);
  Reader in(value, "message value");
  uint8_t layout = in.version(kValueVersion, kGmailMessageLayout);
  auto h = in.bytes(32);
  std::memcpy(r.hash.data(), h.data(), 32);
  r.flags = in.u32();
  if (r.flags & ~kAllFlags) malformed("message value has unknown flag bits");
  r.keywords = in.strs();
  r.internaldate = in.i64();
  r.internaldate_tz = in.i32();
  if (r.internaldate_tz < -24 * 60 || r.internaldate_tz > 24 * 60) malformed("message value has an impossible time zone");
  r.size = in.u64();
  r.modseq = in.u64();
  uint8_t state = in.u8();
  if (state > 1) malformed("message value has an unknown state");
  r.state = static_cast<MessageState>(state);
  if (layout == kSourceMessageLayout) {
    r.source_id = in.str();
    uint8_t source = in.u8();
    if (source > kLastDateSource) malformed("message value has an unknown date source");
    r.date_source = static_cast<DateSource>(source);
  } else if (layout == kGmailMessageLayout) {
    r.gm_msgid = in.u64();
    if (r.gm_msgid == 0) malformed("message value has a Gmail layout without a message id");
    r.gm_thrid = in.u64();
    r.gm_labels = in.strs();
  }
  in.end();
  return r;
}

std::pair<MessageKey, MessageState> decode_message_state(std::string_view key, std::string_view value) {
  Reader in(value, "message value");
  in.version(kValueVersion, kGmailMessageLayout);
  in.bytes(32 + 4);  // hash, flags
  for (uint32_t n = in.u32(); n > 0; --n) in.bytes(in.u32());  // keywords
  in.bytes(8 + 4 + 8 + 8);  // internaldate, zone, size, modseq
  uint8_t state = in.u8();
  if (state > 1) malformed("message value has an unknown state");
  return {decode_message_key(key), static_cast<MessageState>(state)};
}

std::string message_counts_key(uint32_t account_id, uint32_t folder_id, uint32_t uidvalidity) {
  return folder_key(account_id, folder_id) + u32_key(uidvalidity);
}

std::string encode_message_counts(const MessageCounts& r) {
  Writer w;
  w.u8(kValueVersion);
  w.u64(r.records);
  w.u64(r.present);
  w.u64(r.changes);
  return w.take();
}
MessageCounts decode_message_counts(std::string_view value) {
  MessageCounts r;
  Reader in(value, "message counts value");
  in.version(kValueVersion);
  r.records = in.u64();
  r.present = in.u64();
  r.changes = in.u64();
  in.end();
  if (r.present > r.records) malformed("message counts value has more present messages than messages");
  return r;
}

std::string import_mark_key(uint32_t target_id, uint32_t account_id, uint32_t folder_id, uint32_t uidvalidity) {
  return u32_key(target_id) + message_counts_key(account_id, folder_id, uidvalidity);
}

std::string encode_import_mark(const ImportMark& r) {
  Writer w;
  w.u8(kValueVersion);
  w.u64(r.changes);
  w.str(r.target_folder);
  w.u32(r.target_uidvalidity);
  w.u32(r.target_uidnext);
  w.u32(r.target_messages);
  w.u8(r.expunges_synced ? 1 : 0);
  return w.take();
}
ImportMark decode_import_mark(std::string_view value) {
  ImportMark r;
  Reader in(value, "import mark value");
  in.version(kValueVersion);
  r.changes = in.u64();
  r.target_folder = in.str();
  r.target_uidvalidity = in.u32();
  r.target_uidnext = in.u32();
  r.target_messages = in.u32();
  r.expunges_synced = in.boolean();
  in.end();
  return r;
}

std::string encode_append(const AppendRecord& r) {
  Writer w;
  w.u8(kValueVersion);
  w.u8(static_cast<uint8_t>(r.state));
  w.str(r.target_folder);
  w.u32(r.target_uidvalidity);
  w.u32(r.target_uid);
  w.u32(r.flags);
  w.strs(r.keywords);
  w.i64(r.when);
  return w.take();
}
AppendRecord decode_append(std::string_view key, std::string_view value) {
  AppendRecord r;
  r.key = decode_append_key(key);
  Reader in(value, "append value");
  in.version(kValueVersion);
  uint8_t state = in.u8();
  if (state > 1) malformed("append value has an unknown state");
  r.state = static_cast<AppendState>(state);
  r.target_folder = in.str();
  r.target_uidvalidity = in.u32();
  r.target_uid = in.u32();
  r.flags = in.u32();
  if (r.flags & ~kAllFlags) malformed("append value has unknown flag bits");
  r.keywords = in.strs();
  r.when = in.i64();
  in.end();
  return r;
}

// Layout 1: an object record of its own; layout 2 (format version 3): a member
// of a group record, with its offset in the group's payload.
constexpr uint8_t kGroupedObjectLayout = 2;

std::string encode_object(const ObjectLocation& r) {
  Writer w;
  w.u8(r.grouped ? kGroupedObjectLayout : kValueVersion);
  w.u64(r.pack_id);
  w.u64(r.offset);
  w.u64(r.record_size);
  w.u64(r.raw_size);
  if (r.grouped) w.u64(r.member_offset);
  return w.take();
}
ObjectLocation decode_object(std::string_view value) {
  ObjectLocation r;
  Reader in(value, "object value");
  uint8_t layout = in.version(kValueVersion, kGroupedObjectLayout);
  r.pack_id = in.u64();
  r.offset = in.u64();
  r.record_size = in.u64();
  r.raw_size = in.u64();
  if (layout == kGroupedObjectLayout) {
    r.grouped = true;
    r.member_offset = in.u64();
    if (r.raw_size > kMaxGroupRaw || r.member_offset > kMaxGroupRaw - r.raw_size)
      malformed("object value has an impossible place in its group");
  }
  in.end();
  if (r.offset > UINT64_MAX - r.record_size) malformed("object value has an impossible extent");
  return r;
}

std::string encode_pack(const PackInfo& r) {
  Writer w;
  w.u8(kValueVersion);
  w.u64(r.committed_size);
  w.u64(r.records);
  w.u8(r.sealed ? 1 : 0);
  return w.take();
}
PackInfo decode_pack(std::string_view key, std::string_view value) {
  PackInfo r;
  r.id = decode_u64_key(key);
  Reader in(value, "pack value");
  in.version(kValueVersion);
  r.committed_size = in.u64();
  r.records = in.u64();
  r.sealed = in.boolean();
  in.end();
  return r;
}

std::string encode_run(const RunRecord& r) {
  Writer w;
  w.u8(kValueVersion);
  w.str(r.kind);
  w.str(r.account);
  w.i64(r.started);
  w.i64(r.finished);
  w.str(r.result);
  w.str(r.details);
  return w.take();
}
RunRecord decode_run(std::string_view key, std::string_view value) {
  RunRecord r;
  r.id = decode_u64_key(key);
  Reader in(value, "run value");
  in.version(kValueVersion);
  r.kind = in.str();
  r.account = in.str();
  r.started = in.i64();
  r.finished = in.i64();
  r.result = in.str();
  r.details = in.str();
  in.end();
  return r;
}

std::string encode_target(std::string_view identity) {
  Writer w;
  w.u8(kValueVersion);
  w.str(identity);
  return w.take();
}
std::string decode_target(std::string_view value) {
  Reader in(value, "target value");
  in.version(kValueVersion);
  std::string identity = in.str();
  in.end();
  return identity;
}

// ---- journal ---------------------------------------------------------------

std::string encode_journal(const Journal& journal) {
  Writer w;
  w.u8(kJournalVersion);
  w.u64(journal.sequence);
  w.i64(journal.time);
  w.u32(static_cast<uint32_t>(journal.ops.size()));
  for (auto& op : journal.ops) {
    w.u8(static_cast<uint8_t>(op.kind));
    w.str(op.key);
    w.str(op.value);
  }
  return w.take();
}

void check_op(const JournalOp& op) {
  switch (op.kind) {
    case OpKind::put_account: decode_account(op.key, op.value); return;
    case OpKind::put_folder: decode_folder(op.key, op.value); return;
    case OpKind::put_message: decode_message(op.key, op.value); return;
    case OpKind::put_append: decode_append(op.key, op.value); return;
    case OpKind::erase_append:
      decode_append_key(op.key);
      if (!op.value.empty()) malformed("erase_append op carries a value");
      return;
    case OpKind::put_target:
      decode_u32_key(op.key);
      decode_target(op.value);
      return;
  }
  malformed("unknown journal op kind " + std::to_string(static_cast<int>(op.kind)));
}

Journal decode_journal(std::string_view bytes) {
  Reader in(bytes, "journal");
  in.version(kJournalVersion);
  Journal j;
  j.sequence = in.u64();
  j.time = in.i64();
  uint32_t n = in.u32();
  if (n > bytes.size() / 9) malformed("journal has an impossible op count");
  j.ops.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    JournalOp op;
    op.kind = static_cast<OpKind>(in.u8());
    op.key = in.str();
    op.value = in.str();
    check_op(op);
    j.ops.push_back(std::move(op));
  }
  in.end();
  return j;
}

}  // namespace imapstage::archive::codec

// The imapstage archive: content-addressed message objects in append-only
// pack files, and an LMDB index of accounts, folders, messages, objects, packs,
// runs and imports. The normative description is archive-format/FORMAT.md.
//
// Layout of an archive directory DIR:
//   DIR/FORMAT                 "imapstage-archive <version>\n" (written once, at creation)
//   DIR/index/                 LMDB environment (data.mdb, lock.mdb)
//   DIR/packs/<xx>/<id>.pack   pack files; <id> is 16 lower-case hex digits, <xx> its first two
//   DIR/lock                   writer lock (flock), holds the writer's pid as text
//
// Concurrency: one Archive object per directory per process. Any number of
// readers (other processes too); one writer process at a time (the lock).
// Within the writer process, Batch objects may be used from several threads at
// once: each commit() is serialized internally.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "archive-format/hash.h"
#include "archive-format/pack.h"

namespace imapstage::archive {

// The format version this build writes and the newest it reads. Every older
// version (1 to 5) is read too; a writer opening an older archive upgrades it.
inline constexpr uint32_t kFormatVersion = 7;

class ArchiveKeys;   // archive-format/keys.h
struct KeyFile;      // archive-format/keys.h
struct ScryptParams;  // archive-format/keys.h

// Gives the passphrase of the encrypted archive at `dir` (FORMAT.md,
// "Encryption"), e.g. from a file, the environment or a terminal prompt.
// Throws (Error(usage)) when it has none.
using PassphraseSource = std::function<std::string(const std::filesystem::path& dir)>;
// The source used when Archive::Options::passphrase is empty (the command
// line sets it once). Without either, opening an encrypted archive fails
// with Error(usage).
void set_default_passphrase_source(PassphraseSource source);
// Whether a passphrase source is set (so an encrypted archive can be opened).
bool has_default_passphrase_source();

// System flags, as a bit set. \Recent is never stored.
enum Flag : uint32_t {
  kSeen = 1u << 0,
  kAnswered = 1u << 1,
  kFlagged = 1u << 2,
  kDeleted = 1u << 3,
  kDraft = 1u << 4,
};

// What kind of source an account's mail was exported from (format version 4;
// accounts of older archives are IMAP accounts).
enum class SourceKind : uint8_t {
  imap = 0,
  pop3 = 1,
  maildir = 2,
  mbox = 3,
  eml = 4,  // a directory of .eml files
};
// "imap", "pop3", "maildir", "mbox", "eml": the names the command line, reports and JSON use.
std::string_view source_kind_name(SourceKind kind);
// The kind a name above stands for; nullopt for anything else.
std::optional<SourceKind> parse_source_kind(std::string_view name);

// Where a message's INTERNALDATE came from (format version 4).
enum class DateSource : uint8_t {
  server = 0,       // the source server's INTERNALDATE (IMAP), or not recorded (older archives)
  file_mtime = 1,   // the message file's modification time (Maildir, EML)
  from_line = 2,    // the date of the mbox "From " line
  received = 3,     // the topmost Received: header's date
  date_header = 4,  // the Date: header
  fetch_time = 5,   // the time the message was read (no date in the message)
};
// "server", "mtime", "from-line", "received", "date", "fetch-time".
std::string_view date_source_name(DateSource source);

struct AccountRecord {
  uint32_t id = 0;           // assigned by put_account when 0
  std::string name;          // unique archived account name, e.g. "alice@mail.example.org"
  std::string host;          // source server, informational; for file sources the path read
  std::string user;          // source login, informational (never a password); "" for file sources
  int64_t created = 0;       // unix seconds
  SourceKind source = SourceKind::imap;  // what the mail was exported from
};

// Which RFC 2342 namespace a folder was listed in on its source server.
enum class NamespaceKind : uint8_t {
  personal = 0,     // the user's own folders (INBOX and the personal namespace)
  other_users = 1,  // another user's folders made visible (e.g. Cyrus "user.bob", by ACL)
  shared = 2,       // shared / public folders
};
// "personal", "other", "shared": the names --namespaces and JSON output use.
std::string_view namespace_name(NamespaceKind kind);

struct FolderRecord {
  uint32_t account_id = 0;
  uint32_t id = 0;                      // assigned by put_folder when 0; unique within the account
  std::string name_raw;                 // exactly as the server LISTed it (modified UTF-7)
  std::string name_utf8;                // decoded for display
  char delimiter = 0;                   // hierarchy separator, 0 when NIL
  std::vector<std::string> attributes;  // every LIST attribute, e.g. "\\Noselect", "\\Sent", "\\HasChildren"
  bool subscribed = false;
  bool noselect = false;                // \Noselect or \NonExistent: holds no messages
  bool gone = false;                    // no longer listed on the source (kept in the archive)
  uint32_t uidvalidity = 0;             // of the newest generation exported; 0 before the first export
  uint32_t uidnext = 0;                 // UIDs below this (in uidvalidity) have been exported
  uint64_t highestmodseq = 0;           // 0 when the server has no CONDSTORE
  int64_t last_export = 0;              // unix seconds of the last complete export of this folder
  // Where the folder sits, independent of the source server's prefix and separator:
  NamespaceKind ns_kind = NamespaceKind::personal;
  std::string ns_prefix;                // the namespace prefix as the server announced it ("INBOX.", "user.", "")
  std::vector<std::string> path;        // UTF-8 levels below that prefix: {"INBOX"}, {"Archive", "2023"};
                                        // a separator inside a level stays in the level

  // The name people see and patterns match: the path's levels joined with
  // '/', after "#other/" or "#shared/" outside the personal namespace
  // ("Archive/2023", "#other/bob/Sent"). The same on every server.
  std::string canonical_name() const;

  // The special-use attribute (\Sent, \Drafts, \Trash, \Junk, \Archive, \All, \Flagged), or "".
  std::string special_use() const;
};

enum class MessageState : uint8_t {
  present = 0,   // on the source at the last export
  expunged = 1,  // expunged on the source since; the archive keeps it
};

// How many message records one folder holds under one UIDVALIDITY
// (FORMAT.md, `message_counts`), kept in step by every commit.
struct MessageCounts {
  uint64_t records = 0;  // message values
  uint64_t present = 0;  // of those, in state present
  // Message values written under the prefix since the counts began (every
  // put, changed or not): equal at two times means no message of the
  // generation was written in between.
  uint64_t changes = 0;
};

struct MessageKey {
  uint32_t account_id = 0;
  uint32_t folder_id = 0;
  uint32_t uidvalidity = 0;
  uint32_t uid = 0;
  auto operator<=>(const MessageKey&) const = default;
};

struct MessageRecord {
  MessageKey key;
  Hash hash{};                          // SHA-256 of the raw message
  uint32_t flags = 0;                   // Flag bits
  std::vector<std::string> keywords;    // every other flag, as the server spelled it
  int64_t internaldate = 0;             // unix seconds, UTC
  int32_t internaldate_tz = 0;          // the zone the server gave, minutes east of UTC
  uint64_t size = 0;                    // raw size in bytes (RFC822.SIZE as fetched)
  uint64_t modseq = 0;                  // MODSEQ at the last fetch, 0 without CONDSTORE
  MessageState state = MessageState::present;
  // Sources without IMAP UIDs (POP3, files): the message's identity on the
  // source (a POP3 UIDL, a Maildir base name, ...; FORMAT.md, "Sources"), by
  // which a re-run finds it again. "" for IMAP.
  std::string source_id;
  DateSource date_source = DateSource::server;  // where internaldate came from
  // Gmail sources (X-GM-EXT-1, format version 6): X-GM-MSGID, the message's
  // identity across every folder (label) of the account, and X-GM-THRID;
  // 0 for every other message. gm_labels: its X-GM-LABELS as the server
  // sent them ("\\Inbox", "Work", modified UTF-7) when the record was made
  // (FORMAT.md, "Gmail").
  uint64_t gm_msgid = 0;
  uint64_t gm_thrid = 0;
  std::vector<std::string> gm_labels;
};

// Where an object's bytes live.
// A small object may share a group record with others (format version 3):
// then offset and record_size are the group record's, and the object's bytes
// start at member_offset of the group's uncompressed payload.
struct ObjectLocation {
  uint64_t pack_id = 0;
  uint64_t offset = 0;       // of the record's first byte in the pack
  uint64_t record_size = 0;  // the whole record, header included
  uint64_t raw_size = 0;     // uncompressed message size
  bool grouped = false;      // in a group record
  uint64_t member_offset = 0;
};

struct PackInfo {
  uint64_t id = 0;
  uint64_t committed_size = 0;  // bytes that are durable and indexed; anything past it is garbage
  uint64_t records = 0;
  bool sealed = false;          // a sealed pack never changes again
};

// One export or import run, as kept in the history.
struct RunRecord {
  uint64_t id = 0;          // assigned by begin_run, increasing
  std::string kind;         // "export", "import", "verify", ...
  std::string account;      // account name, or "" for the whole archive
  int64_t started = 0;      // unix seconds
  int64_t finished = 0;     // 0 while running or if the run never finished
  std::string result;       // "running", "ok", "partial", "failed"
  std::string details;      // JSON text: counters, target, errors
};

// What an import recorded for one source message on one target.
enum class AppendState : uint8_t {
  in_flight = 0,  // about to be APPENDed; outcome unknown until reconciled
  done = 1,       // the target confirmed it
};

struct AppendKey {
  uint32_t target_id = 0;  // from put_target
  MessageKey source;
  auto operator<=>(const AppendKey&) const = default;
};

struct AppendRecord {
  AppendKey key;
  AppendState state = AppendState::in_flight;
  std::string target_folder;       // raw (modified UTF-7) name on the target
  uint32_t target_uidvalidity = 0; // 0 when the server gave no APPENDUID
  uint32_t target_uid = 0;         // 0 when unknown
  uint32_t flags = 0;              // flags and keywords last applied on the target
  std::vector<std::string> keywords;
  int64_t when = 0;                // unix seconds
};

// What an import saw when it last finished a folder generation on a target
// completely (FORMAT.md, `import_marks`): while the generation's
// MessageCounts::changes and the target folder's UIDVALIDITY, UIDNEXT and
// message count are still these, importing it again has nothing to do.
struct ImportMark {
  uint64_t changes = 0;             // MessageCounts::changes of the source generation then
  std::string target_folder;        // raw (modified UTF-7) name on the target
  uint32_t target_uidvalidity = 0;
  uint32_t target_uidnext = 0;
  uint32_t target_messages = 0;
  bool expunges_synced = false;     // that import also expunged what the source had expunged
  bool operator==(const ImportMark&) const = default;
};

struct PackRecordInfo;  // archive-format/pack.h

class Archive;

// Message bodies at least this large are better streamed than held in
// memory: export spools them (Batch::spool), import streams them to the target.
inline constexpr uint64_t kStreamedObject = 4ull << 20;

// A unit of writing: objects appended to the pack and index changes staged in
// memory; commit() makes them durable together (pack data fsynced first, then
// one LMDB transaction), so an object is indexed only after its bytes are on
// disk. Destroying an uncommitted batch discards its index changes; object
// bytes it wrote past the committed pack size are truncated away on the next
// open. Not thread-safe itself: one Batch per thread.
class Batch {
 public:
  explicit Batch(Archive& archive);
  ~Batch();
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  // Stores `raw` compressed under `hash` unless the archive (or this batch)
  // already has that hash. Returns true when the bytes were new. An object
  // under 64 KiB waits (raw) until about 256 KiB of them can be compressed
  // together into one group record (FORMAT.md, "Group records").
  // REQUIRES: hash == sha256(raw) (checked in debug builds).
  bool put_object(const Hash& hash, std::string_view raw);
  // A spool for one object of `raw_size` bytes that is not to be held in
  // memory (see FrameSpool): its frame waits in a temporary file beside the
  // packs, encrypted in an encrypted archive. Pass it to put_spooled once
  // finished; dropping it instead leaves nothing behind.
  FrameSpool spool(uint64_t raw_size);
  // Stores the finished spool's object (its hash: spool.finish()) as
  // put_object would store its bytes: written into a pack now, unless the
  // archive (or this batch) already has it. Returns true when it was new.
  bool put_spooled(FrameSpool& spool);
  // Compresses the small objects waiting for a group now (commit() does too).
  void close_group();
  // Compressed objects this batch holds in memory before it commits them
  // early (written, synced and indexed, as a commit does): about `bytes`
  // (default 8 MiB), plus one object. Batches side by side share a budget.
  void hold_at_most(uint64_t bytes);
  // Compressed bytes of every record this batch has made so far (objects whose
  // group is still open are not counted yet), for reporting what was stored.
  uint64_t stored_bytes() const;
  // Raw bytes of objects this batch staged as new that another batch wrote
  // first (connections side by side fetching the same message): each object
  // is written once, so these were left out at commit. Grows at commits.
  uint64_t late_duplicate_bytes() const;

  // Assigns record.id when 0 (ids come from the index, never reused).
  uint32_t put_account(AccountRecord& record);
  uint32_t put_folder(FolderRecord& record);
  void put_message(const MessageRecord& record);
  void put_append(const AppendRecord& record);
  void erase_append(const AppendKey& key);

  // Bytes staged so far (compressed; raw for objects waiting for a group) and
  // number of staged changes, for deciding when to commit.
  uint64_t pending_bytes() const;
  size_t pending_changes() const;

  // Makes everything staged durable; the batch is empty and reusable afterwards.
  // Throws Error(io) (e.g. disk full) with nothing of this batch indexed.
  void commit();

 private:
  friend class Archive;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class Archive {
 public:
  enum class Mode {
    read,    // readers alongside a writer; no lock taken
    write,   // takes the writer lock; throws Error(locked) if another process holds it
    create,  // like write; creates the archive if DIR is missing or empty
  };

  struct Options {
    uint64_t pack_size_limit = 256ull << 20;  // seal a pack once it reaches this size
    // Level 2 stores mail (text plus base64 attachments) within 0.5% of level
    // 3's size at about 20% less CPU: 237.5 MB of the bench corpus became
    // 149.4 MB in 0.37 s against 148.7 MB in 0.45 s.
    int zstd_level = 2;
    uint64_t map_size = 64ull << 30;          // LMDB map size (sparse)
    // Gather objects under 64 KiB into group records (FORMAT.md, "Group
    // records"). False writes one object record per object, as version 2
    // writers did: damage to one record then touches one message only.
    bool group_small_objects = true;
    // The passphrase of an encrypted archive (else the default source). It
    // is asked once per open; an archive unlocked with the same key file and
    // passphrase before, in this process, reuses the keys it derived.
    PassphraseSource passphrase;
  };

  // Opens the archive at `dir`. Throws Error(not_found) if it is not an
  // archive (and mode != create), Error(format) if its version is newer than
  // kFormatVersion, Error(locked) naming the holder's pid for a second writer.
  // A writer truncates each unsealed pack to its committed size.
  static std::unique_ptr<Archive> open(const std::filesystem::path& dir, Mode mode, Options options);
  static std::unique_ptr<Archive> open(const std::filesystem::path& dir, Mode mode);
  // An encrypted archive is unlocked first, before anything is written (a
  // wrong passphrase: Error(auth), the archive untouched).
  //
  // Creates a new, empty encrypted archive at `dir` (missing or empty) with a
  // random master key and one key slot for `passphrase`, and opens it for
  // writing. Throws Error(usage) if `dir` already is an archive.
  static std::unique_ptr<Archive> create_encrypted(const std::filesystem::path& dir, std::string_view passphrase,
                                                   const ScryptParams& kdf, Options options);
  // The same with a given key file and its master key (another archive's:
  // both then share their keys, so bundles of one apply to the other).
  static std::unique_ptr<Archive> create_with_key_file(const std::filesystem::path& dir, const KeyFile& file,
                                                       std::string_view master, Options options);
  ~Archive();

  const std::filesystem::path& dir() const;
  bool writable() const;
  // The archive's random id (32 hex digits), made at creation and kept in the meta table.
  std::string archive_id() const;
  // The keys of an encrypted archive (FORMAT.md, "Encryption"), or nullptr.
  const ArchiveKeys* keys() const;
  bool encrypted() const { return keys() != nullptr; }

  // The sequence number of the last journal record committed (FORMAT.md,
  // "meta"): as read at open, or as last committed by this writer. Journal
  // records 1 to this number are all in the packs of a sound archive.
  uint64_t journal_sequence() const;

  // ---- reading (each call is its own short read transaction) -------------
  std::vector<AccountRecord> accounts() const;
  std::optional<AccountRecord> find_account(std::string_view name) const;
  std::vector<FolderRecord> folders(uint32_t account_id) const;  // sorted by name_raw
  std::optional<FolderRecord> find_folder(uint32_t account_id, std::string_view name_raw) const;
  std::optional<FolderRecord> folder(uint32_t account_id, uint32_t folder_id) const;

  // Calls `fn` for every message of the folder (of every UIDVALIDITY
  // generation, or only `uidvalidity` when given) in key order. Return false
  // from `fn` to stop.
  void for_each_message(uint32_t account_id, uint32_t folder_id, std::optional<uint32_t> uidvalidity,
                        const std::function<bool(const MessageRecord&)>& fn) const;
  // The UID and state of every message of the folder's `uidvalidity`
  // generation, in UID order, without decoding the rest of each record
  // (for counting), in one read transaction: `fn` must not write to the
  // archive. Return false from `fn` to stop.
  void for_each_message_state(uint32_t account_id, uint32_t folder_id, uint32_t uidvalidity,
                              const std::function<bool(uint32_t uid, MessageState state)>& fn) const;
  // How many messages the folder's `uidvalidity` generation holds, read
  // from message_counts without visiting them; nullopt for an index older
  // than version 7 opened read-only, which has no counts (count with
  // for_each_message_state then).
  std::optional<MessageCounts> message_counts(uint32_t account_id, uint32_t folder_id, uint32_t uidvalidity) const;
  // Compares message_counts with a count of the messages, in one read
  // transaction; one line per disagreement (naming account, folder,
  // uidvalidity and both counts), none when they agree or the index keeps
  // no counts (older than version 7, opened read-only).
  std::vector<std::string> check_message_counts() const;
  // Every message of every account, in key order.
  void for_each_message(const std::function<bool(const MessageRecord&)>& fn) const;
  std::optional<MessageRecord> message(const MessageKey& key) const;

  std::optional<ObjectLocation> object(const Hash& hash) const;
  void for_each_object(const std::function<bool(const Hash&, const ObjectLocation&)>& fn) const;
  std::vector<PackInfo> packs() const;
  std::filesystem::path pack_path(uint64_t pack_id) const;

  // The raw message bytes, decompressed and checked against the hash.
  // Throws Error(not_found) if the index has no such object, Error(corrupt)
  // naming the hash, pack file and offset if the record fails any check or
  // is larger than kMaxObjectInMemory (then only read_object_to can read it).
  // Memory follows the object's real size, never what a record claims.
  std::string read_object(const Hash& hash) const;
  // The same bytes streamed to `out` in pieces, in bounded memory; they are
  // checked as they pass, so the call may throw Error(corrupt) after handing
  // some out (the caller must then discard them).
  void read_object_to(const Hash& hash, const std::function<void(std::string_view)>& out) const;
  // Decompresses and re-hashes the object without keeping it; throws like read_object_to.
  void check_object(const Hash& hash) const;

  std::optional<uint32_t> find_target(std::string_view identity) const;
  std::optional<AppendRecord> append(const AppendKey& key) const;
  // Every append record of a target, in key order.
  void for_each_append(uint32_t target_id, const std::function<bool(const AppendRecord&)>& fn) const;
  // The import mark of a source folder generation on a target, if any.
  std::optional<ImportMark> import_mark(uint32_t target_id, uint32_t account_id, uint32_t folder_id,
                                        uint32_t uidvalidity) const;

  std::vector<RunRecord> runs() const;

  // ---- writing (REQUIRES: writable()) -------------------------------------
  // A target server identity such as "user@host:port"; returns its id, creating it.
  uint32_t put_target(std::string_view identity);
  // Stores the import mark of a source folder generation on a target,
  // replacing any. Durable at once; kept in the index only (not journaled:
  // a rebuilt index has none, and the next import reads every folder).
  void put_import_mark(uint32_t target_id, uint32_t account_id, uint32_t folder_id, uint32_t uidvalidity,
                       const ImportMark& mark);
  // Records a run as started ("running"); returns its id. Durable at once.
  uint64_t begin_run(const std::string& kind, const std::string& account, const std::string& details_json);
  void end_run(uint64_t id, const std::string& result, const std::string& details_json);

  // Seals the current pack (if it has records) so the next object starts a new one.
  void seal_current_pack();

 private:
  friend class Batch;
  struct Impl;
  struct NewKeys;
  static std::unique_ptr<Archive> open(const std::filesystem::path& dir, Mode mode, Options options,
                                       const NewKeys* new_keys);
  explicit Archive(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Flags <-> IMAP text. parse_flags splits IMAP flag atoms into system bits
// and keywords (dropping \Recent); flags_to_imap gives them back in a stable
// order: system flags first (\Seen \Answered \Flagged \Deleted \Draft), then keywords.
// The canonical path of a folder recorded by a version 1 archive, which kept
// no namespace: the name split at its separator, and for names under "INBOX"
// with separator '.' (the Cyrus and Courier personal namespace) the "INBOX."
// prefix taken off and returned in `prefix`. INBOX itself is {"INBOX"}.
// The keys of the archive at `dir` when it is encrypted (unlocked with
// options.passphrase or the default source), nullptr when it has no key file.
// Throws Error(auth) for a wrong passphrase, Error(usage) without a source.
std::shared_ptr<const ArchiveKeys> unlock_archive(const std::filesystem::path& dir,
                                                  const Archive::Options& options);

std::vector<std::string> path_of_v1_name(const std::string& name_utf8, char delimiter, std::string& prefix);

void parse_flags(const std::vector<std::string>& imap_flags, uint32_t& bits, std::vector<std::string>& keywords);
std::vector<std::string> flags_to_imap(uint32_t bits, const std::vector<std::string>& keywords);

}  // namespace imapstage::archive

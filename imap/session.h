// One IMAP connection, wrapping libetpan. The only code that includes
// <libetpan/...>; everything above sees these small C++ types and
// imapstage::Error (kinds network/tls/auth/protocol/limit).
//
// A Session is not thread-safe; use one per thread. After an Error with
// retry() == Retry::now the session is dead (closed): make a new one.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/token_command.h"
#include "net/transport.h"

namespace imapstage::imap {

using imapstage::TokenSource;

// implicit (port 993), starttls (port 143; refused if the server does not offer STARTTLS), none.
using TlsMode = net::TlsMode;

// Where and how to connect.
struct Endpoint {
  std::string host;
  uint16_t port = 0;                       // 0: 993 for implicit, 143 otherwise
  TlsMode tls = TlsMode::implicit;
  std::string ca_file;                     // PEM bundle; empty: the system's trust store
  bool insecure = false;                   // skip certificate and host-name verification
  std::chrono::seconds timeout{120};       // per network read or write
  // The largest message body accepted from the server (a larger literal
  // drops the connection; export does not fetch a message whose RFC822.SIZE
  // is larger, import does not send one). Other literals (names, strings) are limited to 1 MiB, a
  // response line to 64 MiB, nesting to 256 parentheses, and the responses
  // to one command to 2 x timeout of waiting plus a second per 4 KiB received.
  uint64_t max_message_size = 1ull << 30;
  // The longest command line sent: a UID set that would make a UID FETCH,
  // UID STORE or UID EXPUNGE longer is split over several commands
  // (Microsoft 365 answers "BAD Command Argument Error. 11" to long lines).
  size_t max_command_length = 8000;

  uint16_t effective_port() const { return port ? port : (tls == TlsMode::implicit ? 993 : 143); }
  std::string address() const;             // "host:port"
};

enum class AuthMechanism {
  login,     // IMAP LOGIN
  plain,     // SASL PLAIN (with authzid for admin mode)
  cram_md5,  // SASL CRAM-MD5
  xoauth2,   // SASL XOAUTH2; secret is the OAuth2 access token
  apop,      // POP3 only (APOP); an IMAP login with it is refused
};

// Who to log in as. `secret` is a password or token: never logged or echoed.
struct Credentials {
  std::string user;         // the mailbox to open (authorization identity)
  std::string secret;
  AuthMechanism mechanism = AuthMechanism::login;
  std::string auth_user;    // authentication identity when it differs from `user` (admin mode); "" otherwise
  // XOAUTH2 only: when set, the token comes from here instead of `secret`,
  // and a login the server refuses is tried once more with a renewed token.
  std::shared_ptr<TokenSource> tokens;  // common/token_command.h
};

// One LIST answer, with subscription state from LSUB.
struct ListEntry {
  std::string name_raw;                 // as sent by the server (modified UTF-7)
  std::string name_utf8;                // decoded
  char delimiter = 0;                   // 0 when NIL
  std::vector<std::string> attributes;  // e.g. "\\Noselect", "\\HasChildren", "\\Sent"
  bool noselect = false;                // \Noselect or \NonExistent
  bool subscribed = false;
  std::string special_use;              // "\\Sent" etc., or ""
};

// What SELECT/EXAMINE reported.
struct MailboxInfo {
  uint32_t exists = 0;
  uint32_t uidvalidity = 0;
  uint32_t uidnext = 0;                  // 0 if the server did not say
  uint64_t highestmodseq = 0;            // 0 without CONDSTORE (or NOMODSEQ)
  std::vector<std::string> permanent_flags;  // may contain "\\*"
  bool read_only = false;
};

// What STATUS reported (MESSAGES UIDNEXT UIDVALIDITY, HIGHESTMODSEQ with CONDSTORE).
struct StatusInfo {
  uint32_t messages = 0;
  uint32_t uidnext = 0;
  uint32_t uidvalidity = 0;
  uint64_t highestmodseq = 0;
};

// A fully received message from a body fetch.
// Where a message body too large to hold goes, piece by piece, instead of
// into FetchData's body (FetchReader::stream_large_bodies).
class BodySink {
 public:
  virtual ~BodySink() = default;
  // The next piece of the body; every piece arrives, in order, before the
  // response is done. May throw: the reader then reads the rest of the body
  // without passing it on and reports the exception in FetchData::body_error.
  virtual void write(std::string_view piece) = 0;
};

// Which BODY[] literals are streamed, and to what.
struct LargeBodies {
  uint64_t from = UINT64_MAX;  // literals of at least this many bytes
  // A sink for a body of exactly `size` bytes.
  std::function<std::unique_ptr<BodySink>(uint64_t size)> open;
};

struct FetchedMessage {
  uint32_t uid = 0;
  std::vector<std::string> flags;     // as sent, without \Recent
  int64_t internaldate = 0;           // unix seconds UTC
  int32_t internaldate_tz = 0;        // minutes east of UTC as the server gave it
  uint64_t rfc822_size = 0;
  uint64_t modseq = 0;                // 0 without CONDSTORE
  std::string body;                   // BODY[] bytes exactly as sent
  // A body streamed instead (Session::stream_large_bodies): the sink that
  // took every byte; body is then empty.
  std::unique_ptr<BodySink> large_body;
  uint64_t body_size = 0;             // bytes of BODY[], in body or streamed
  // Gmail (X-GM-EXT-1 offered): X-GM-MSGID, X-GM-THRID and X-GM-LABELS, asked
  // for with every body; 0 and empty otherwise.
  uint64_t gm_msgid = 0;
  uint64_t gm_thrid = 0;
  std::vector<std::string> gm_labels;
  // What the server sent for this message that cannot be kept as sent (an
  // impossible INTERNALDATE, a flag that is not an IMAP atom, too many or too
  // long keywords), one sentence each. The fields above then hold what can
  // be kept: internaldate 0 (none), the valid flags.
  std::vector<std::string> anomalies;
};

// Flags of one message from a flags-only fetch.
struct FlagUpdate {
  uint32_t uid = 0;
  std::vector<std::string> flags;       // the valid ones (see FetchedMessage::anomalies)
  uint64_t modseq = 0;
  std::vector<std::string> anomalies;
  // Gmail (X-GM-EXT-1 offered): the message's X-GM-MSGID and X-GM-LABELS;
  // has_labels is false on other servers.
  uint64_t gm_msgid = 0;
  bool has_labels = false;
  std::vector<std::string> gm_labels;
};

// A set of UIDs as IMAP sequence-set text, e.g. "1:100,205,300:*".
struct UidRange {
  uint32_t first = 1;
  uint32_t last = 0;  // 0 means '*'
};

// An APPEND to do.
struct AppendItem {
  std::vector<std::string> flags;   // system flags and keywords; never \Recent
  int64_t internaldate = 0;         // unix seconds
  int32_t internaldate_tz = 0;      // minutes east of UTC
  std::string_view bytes;           // the exact message bytes (sent unchanged)
  // Or, for a message too large to hold: its size, and a call that hands
  // exactly that many bytes to its argument, in order, as they are sent
  // (`bytes` is then not used). If it throws, the connection is closed
  // (the literal cannot be finished) and the exception propagates.
  uint64_t size = 0;
  std::function<void(const std::function<void(std::string_view)>&)> produce;
  uint64_t length() const { return produce ? size : bytes.size(); }
};

// What the server said about one APPEND.
struct AppendResult {
  bool ok = false;
  uint32_t uidvalidity = 0;   // from APPENDUID, 0 if none
  uint32_t uid = 0;           // from APPENDUID, 0 if none
  std::string error;          // the server's text when !ok
  bool too_big = false;       // [TOOBIG] or over APPENDLIMIT
  bool trycreate = false;     // [TRYCREATE]
};

// Namespace of personal mailboxes (prefix and delimiter).
struct PersonalNamespace {
  std::string prefix;   // e.g. "" or "INBOX."
  char delimiter = '/';
};

// One RFC 2342 namespace as the server announced it.
struct Namespace {
  enum Kind : uint8_t { personal = 0, other_users = 1, shared = 2 };
  Kind kind = personal;
  std::string prefix;   // raw (modified UTF-7), e.g. "INBOX.", "user.", "#shared.", ""
  char delimiter = 0;   // 0 when NIL
};

class Session {
 public:
  // Connects and, for implicit/starttls, completes TLS and verifies the
  // certificate chain and host name (unless insecure). Throws
  // Error(network, retry now/later) if unreachable, Error(tls) if the
  // certificate is not trusted or does not match the host, Error(protocol) if
  // starttls is asked for and not offered.
  static std::unique_ptr<Session> connect(const Endpoint& endpoint);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Logs in. Throws Error(auth, never) "authentication failed for USER at
  // HOST:PORT" on refusal; Error(auth) naming the mechanism if the server
  // lacks it. Capabilities are refreshed afterwards. With
  // `credentials.tokens` (XOAUTH2), a refused token is renewed once and
  // tried again on the same connection; a refused renewed token is the
  // Error(auth, never) above, saying so.
  void login(const Credentials& credentials);

  // ID (RFC 2971) with these name/value pairs, before login when the server
  // offers ID: e.g. "x-originating-ip" and "x-originating-port", which a
  // server that trusts this client (Dovecot: login_trusted_networks) uses
  // for its per-IP login penalties and logs. A pair whose name or value
  // cannot be a quoted string (CR, LF, NUL, 8-bit) is left out. Returns
  // false, sending nothing, when the server lacks ID; the answer's
  // content is ignored (a NO is not an error).
  bool send_id(const std::vector<std::pair<std::string, std::string>>& fields);

  const Endpoint& endpoint() const;
  // Upper-case capability names, e.g. "IMAP4REV1", "CONDSTORE", "UIDPLUS", "LITERAL+", "APPENDLIMIT=...".
  const std::set<std::string>& capabilities() const;
  bool has_capability(std::string_view name) const;
  // The APPENDLIMIT the server announced, 0 if none.
  uint64_t append_limit() const;
  // The hosted service the capabilities give away: "gmail" when X-GM-EXT-1
  // is offered; "" otherwise. (Microsoft 365 announces nothing of its own.)
  std::string detected_provider() const;

  // All mailboxes (LIST "" "*") with subscription state (LSUB "" "*"), sorted by name_raw.
  std::vector<ListEntry> list();
  // Every namespace the server announces (NAMESPACE), personal ones first.
  // Without the NAMESPACE capability (or when the command fails harmlessly):
  // one personal namespace, prefix "" and the separator LIST "" "" reports.
  std::vector<Namespace> namespaces();
  // The first personal namespace of namespaces() (delimiter '/' when NIL).
  PersonalNamespace personal_namespace();

  // EXAMINE (read-only) or SELECT. With CONDSTORE the server is asked to
  // report HIGHESTMODSEQ. Throws Error(protocol, never) with the server's
  // text if the mailbox cannot be opened.
  MailboxInfo examine(std::string_view name_raw);
  MailboxInfo select(std::string_view name_raw);
  StatusInfo status(std::string_view name_raw);

  // UID FETCH range (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[] [MODSEQ]),
  // streamed: `on_message` is called once per complete message as it
  // arrives; only that one message is held in memory (its body gets the
  // literal's announced size reserved up front: address space, only what
  // arrives is touched). Messages the server reports but fails to deliver
  // are absent from the callbacks (the caller compares with what it
  // expected); a NO reply is not an error, a BAD is Error(protocol, never).
  // Unsolicited FETCH responses (flag changes by other sessions) and other
  // untagged responses in between are ignored. The responses are read by
  // our own reader (fetch_reader.h) with the limits of the Endpoint; what
  // breaks them or does not parse closes the connection (Error(protocol,
  // now), or never for a limit).
  void fetch_messages(const std::vector<UidRange>& uids, const std::function<void(FetchedMessage&&)>& on_message);

  // fetch_messages for several batches on this one connection, pipelined:
  // up to `in_flight` UID FETCH commands are out before the oldest one is
  // answered (a further one as soon as the newest has begun to be answered),
  // so a distant server never waits for the next command. Each
  // response goes to its command: `on_message(k, message)` for a message of
  // batches[k] (its UID decides; with overlapping batches, the oldest
  // unanswered one), `on_done(k)` once the server answered batches[k] with
  // OK or NO: the messages of batches[k] not delivered by then are not
  // coming (an empty batch is answered at once, without a command). After
  // a BAD no further batch is sent; once the sent ones are answered (their
  // callbacks run), Error(protocol, never) with the server's text is thrown.
  // An exception from a callback stops the callbacks and the sending; the
  // replies to what was sent are read (the session stays usable), then it
  // propagates. `before_send(k)`, when given, is called just before the
  // command of batches[k] is sent (what was written before is flushed
  // first): a rate cap waits there, while the answers to the commands
  // already out keep arriving.
  // From now on, bodies of at least `large.from` bytes that fetch_batches,
  // fetch_messages and fetch_one receive are handed to a sink from
  // `large.open` as they arrive (FetchedMessage::large_body) instead of
  // being held. A sink that throws fails the fetch with its exception,
  // after the replies to what was sent are read (the session stays usable).
  void stream_large_bodies(LargeBodies large);

  void fetch_batches(const std::vector<std::vector<UidRange>>& batches,
                     const std::function<void(size_t batch, FetchedMessage&&)>& on_message,
                     const std::function<void(size_t batch)>& on_done, size_t in_flight = 3,
                     const std::function<void(size_t batch)>& before_send = {});

  // UID FETCH range (UID FLAGS [MODSEQ] [X-GM-MSGID X-GM-LABELS]) [CHANGEDSINCE n];
  // one callback per message. The Gmail items are asked for when the server
  // offers X-GM-EXT-1.
  void fetch_flags(const std::vector<UidRange>& uids, std::optional<uint64_t> changed_since,
                   const std::function<void(FlagUpdate&&)>& on_flags);

  // UID FETCH range (UID RFC822.SIZE); one callback per message (for progress
  // totals and --dry-run). Memory: one small entry per message while parsing;
  // callers pass bounded ranges.
  void fetch_sizes(const std::vector<UidRange>& uids,
                   const std::function<void(uint32_t uid, uint64_t size)>& on_size);

  // UID FETCH range (UID RFC822.SIZE INTERNALDATE); one callback per
  // message (internaldate 0 when absent or impossible), for a selection by
  // date and size checked on the client.
  void fetch_sizes_and_dates(const std::vector<UidRange>& uids,
                             const std::function<void(uint32_t uid, uint64_t size, int64_t internaldate)>& on_message);

  // Gmail (X-GM-EXT-1): UID FETCH range (UID X-GM-MSGID FLAGS [MODSEQ]),
  // without bodies, one callback per message that has an X-GM-MSGID (flags
  // as in fetch_flags). Error(protocol, never) when the server lacks X-GM-EXT-1.
  void fetch_gmail_ids(const std::vector<UidRange>& uids, const std::function<void(FlagUpdate&&)>& on_message);
  // Gmail (X-GM-EXT-1): UID STORE uid +X-GM-LABELS.SILENT (labels) in the
  // selected mailbox: adds labels to the message (idempotent; Gmail creates
  // a user label that does not exist yet). Labels are sent as the server
  // sends them: "\\Inbox" and other system labels as atoms, the others as
  // strings. Nothing is sent for no labels. Error(protocol, never) with the
  // server's text when refused.
  void store_gmail_labels(uint32_t uid, const std::vector<std::string>& labels);

  // UID SEARCH ALL in the selected mailbox, ascending.
  std::vector<uint32_t> search_all_uids();
  // UID SEARCH UID <uids> [SINCE d] [BEFORE d] [LARGER n] [SMALLER n] in the
  // selected mailbox, ascending (RFC 3501: SINCE/BEFORE compare the date of
  // INTERNALDATE in the server's time zone, its time disregarded; the day
  // sent is the UTC day of `since_day`/`before_day`; LARGER/SMALLER compare
  // RFC822.SIZE strictly). A server refusing the criteria: Error(protocol, never).
  std::vector<uint32_t> search_selected(const std::vector<UidRange>& uids, std::optional<int64_t> since_day,
                                        std::optional<int64_t> before_day, std::optional<uint64_t> larger,
                                        std::optional<uint64_t> smaller);
  // UID SEARCH HEADER Message-ID <id>, ascending.
  std::vector<uint32_t> search_message_id(std::string_view message_id);
  // UID FETCH uid BODY.PEEK[] of one message; nullopt if the server has no such UID.
  std::optional<FetchedMessage> fetch_one(uint32_t uid);

  // Mailbox management (import side).
  // CREATE; with `special_use` ("\\Sent", ...) and CREATE-SPECIAL-USE
  // offered, CREATE name (USE (attr)). Throws Error(protocol, never) with the
  // server's text when refused.
  void create(std::string_view name_raw, std::string_view special_use = "");
  void subscribe(std::string_view name_raw);

  // APPENDs to `mailbox_raw`. When the server offers LITERAL+ and
  // MULTIAPPEND, items are sent as one MULTIAPPEND per call with
  // non-synchronizing literals, exact bytes, streamed; otherwise one
  // synchronizing APPEND each. Returns one result per item (a MULTIAPPEND
  // fails or succeeds as a whole; APPENDUID then carries a UID set).
  //
  // The target must never read message bytes as commands. So: an item with
  // an append_problem() is refused before anything is sent (Error(protocol,
  // never)); non-synchronizing literals are used only for items whose line
  // cannot be rejected for its syntax (the five system flags, atom keywords,
  // a valid date), never with `synchronizing`, and never again on this
  // connection once an APPEND was answered NO or BAD. A tagged reply that
  // arrives while non-synchronizing literals are being sent, or a BAD after
  // them, closes the connection at once (alive() is false afterwards; the
  // results say the server's text).
  std::vector<AppendResult> append(std::string_view mailbox_raw, const std::vector<AppendItem>& items,
                                   bool synchronizing = false);

  // False once the connection was closed (an error, or append() closing it).
  bool alive() const;

  // UID STORE uid FLAGS.SILENT (flags) in the selected mailbox (replaces the flags).
  void store_flags(uint32_t uid, const std::vector<std::string>& flags);

  // NOOP: lets the server report what changed in the selected mailbox (some,
  // like Courier, show messages APPENDed by this session only then).
  void noop();

  // UID STORE +FLAGS.SILENT (\Deleted) then UID EXPUNGE of exactly `uids`
  // in the selected mailbox (import --sync-expunges; never used on a
  // source). Throws Error(protocol, never) without UIDPLUS: a plain EXPUNGE
  // would also remove other messages marked \Deleted.
  void expunge_uids(const std::vector<uint32_t>& uids);

  // LOGOUT and close. Safe to call on a dead session (closes without waiting).
  void logout();

 private:
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  void login_once(const Credentials& credentials);
  std::unique_ptr<Impl> impl_;
};

// Renders ranges as an IMAP sequence set ("1:5,9,12:*").
std::string to_sequence_set(const std::vector<UidRange>& ranges);
// Splits `ranges`, in order, into parts whose sequence set is at most
// `max_chars` long (a single range longer than that stays alone).
std::vector<std::vector<UidRange>> split_sequence_set(const std::vector<UidRange>& ranges, size_t max_chars);

// Parses an IMAP date-time ("17-Jul-1996 02:44:25 -0700") into unix seconds
// and zone minutes; formats one back (always two-digit day with leading space
// replaced by zero: "07-Jul-1996 ...").
bool parse_date_time(std::string_view text, int64_t& unix_seconds, int32_t& tz_minutes);
// Any value is formatted without overflow; one that valid_internaldate()
// refuses comes out as "(impossible date UNIX +TZ)".
std::string format_date_time(int64_t unix_seconds, int32_t tz_minutes);

// True if an INTERNALDATE can be stored and sent as it is: from 1970-01-02
// to 9999-12-30 (UTC), zone within +-18:00, and a four-digit local year.
bool valid_internaldate(int64_t unix_seconds, int32_t tz_minutes);

// At most this many keywords per message, each at most kMaxFlagLength bytes
// (export keeps the first ones and reports the rest; import refuses the message).
constexpr size_t kMaxKeywords = 256;
constexpr size_t kMaxFlagLength = 255;

// True for a flag imapstage sends: a system flag ("\\Seen") or a keyword,
// made of IMAP atom characters only, at most kMaxFlagLength bytes; never "\\Recent".
bool valid_flag_name(std::string_view flag);

// Why `item` cannot be sent to a server (an impossible date, a flag that is
// not valid_flag_name(), more than kMaxKeywords keywords, an empty message),
// or nullopt.
std::optional<std::string> append_problem(const AppendItem& item);

// Parses `bytes` as what a server sends (a greeting, then responses) with
// the guard and libetpan's parser as a session does for every response but
// those to UID FETCH (which fetch_reader.h reads; see replay_fetch there),
// FETCH bodies through libetpan's body handler. Returns "" when every
// response parsed, else what stopped it (a broken limit, a parse error). No
// network; for fuzzing and tests.
std::string replay_responses(std::string_view bytes, const Endpoint& limits = {});

// The libetpan library this process runs with, e.g. "1.9".
std::string libetpan_version();

}  // namespace imapstage::imap

// A scripted IMAP server for tests of faults a real server will not produce.
//
// Listens on 127.0.0.1 (a free port), cleartext only (connect with
// TlsMode::none), one thread per connection. Out of the box it is a small
// but honest IMAP4rev1 server over in-memory folders: greeting, CAPABILITY,
// LOGIN, LIST/LSUB, NAMESPACE, STATUS, EXAMINE/SELECT, UID SEARCH, UID FETCH,
// APPEND (also MULTIAPPEND, synchronizing and LITERAL+ literals, with
// APPENDUID), CREATE, SUBSCRIBE, UID STORE, NOOP, LOGOUT.
//
// A test scripts it two ways, both tried before the standard behaviour:
//  - expect(pattern, response): an ordered list of expected commands, each
//    answered by a canned response once; unmet() tells which were not seen.
//  - on(pattern, handler or response, times): rules for any command
//    matching `pattern`, tried in the order added, each at most `times`
//    times (0: always). A handler can write anything (garbage, wrong literal
//    lengths, unsolicited responses), run the standard behaviour for the
//    command, and drop the connection.
// Patterns are ECMAScript regular expressions, case-insensitive, searched in
// the command line without its tag (literals appear as "{N}" or "{N+}").
// Canned responses may use "$TAG" for the command's tag; each must end with CRLF.
//
// Destroying the server closes every connection and joins every thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "imap/session.h"

namespace imapstage::testing {

struct FakeMessage {
  uint32_t uid = 0;
  std::vector<std::string> flags;                      // e.g. "\\Seen", "$Label1"
  std::string internaldate = "01-Jan-2024 10:00:00 +0000";
  std::string body;
  // Gmail's dialect (FakeImapServer::set_gmail): the same message in several
  // folders has one X-GM-MSGID; X-GM-LABELS as the server sends them.
  uint64_t gm_msgid = 0;
  uint64_t gm_thrid = 0;
  std::vector<std::string> gm_labels;                 // e.g. "\\Inbox", "Work"
};

struct FakeFolder {
  std::string name;                                    // raw (modified UTF-7), as listed
  std::vector<std::string> attributes;                 // e.g. "\\HasNoChildren", "\\Sent", "\\Noselect"
  bool subscribed = true;
  uint32_t uidvalidity = 1;
  uint32_t uidnext = 1;
  std::vector<FakeMessage> messages;                   // ascending UIDs; sequence number = index + 1
};

// One command as the server read it.
struct FakeCommand {
  std::string tag;
  std::string text;                    // after the tag; literals shown as {N} / {N+}
  std::vector<std::string> literals;   // their bytes, in order
  size_t connection = 0;               // 1 for the first connection accepted, ...
  std::chrono::steady_clock::time_point received;  // when its first line arrived
};

// The pace of paced commands: of `commands`, those for which `amount` (the
// messages or bytes each asked for or carried) is above zero, in order of
// arrival; the amount of all but the first, divided by the seconds from the
// first to the last. A limiter that pays for each command just before it is
// sent shows its cap here, however long the setup and commits around the
// sending took. 0 with fewer than two such commands.
double paced_rate(const std::vector<FakeCommand>& commands, const std::function<double(const FakeCommand&)>& amount);

class FakeImapServer;

// What a rule's handler gets: the command, a way to answer it, and the server.
class FakeExchange {
 public:
  const FakeCommand& command() const { return command_; }
  const std::string& tag() const { return command_.tag; }
  FakeImapServer& server() { return server_; }
  // The folder this connection has selected ("" if none).
  const std::string& selected() const;

  void send(std::string_view raw);                     // bytes exactly as given
  void untagged(std::string_view line);                // "* " line CRLF
  void tagged(std::string_view status_and_text);       // TAG " " text CRLF
  // Answers the command as the standard server would.
  void standard();
  // The standard UID FETCH, calling `after(uid)` after each message's
  // response is sent (to interleave unsolicited responses) and stopping
  // early (no tagged reply) when it returns false.
  void standard_fetch(const std::function<bool(FakeExchange&, uint32_t uid)>& after);
  // The FETCH response the standard server sends for `uid` of the selected
  // folder, for the items this command asked ("* 3 FETCH (...)\r\n").
  std::string fetch_response(uint32_t uid);
  // Closes the connection once the handler returns.
  void close() { close_ = true; }

 private:
  friend class FakeImapServer;
  struct Connection;
  FakeExchange(FakeImapServer& server, Connection& connection, const FakeCommand& command)
      : server_(server), connection_(connection), command_(command) {}
  FakeImapServer& server_;
  Connection& connection_;
  const FakeCommand& command_;
  bool close_ = false;
};

class FakeImapServer {
 public:
  using Handler = std::function<void(FakeExchange&)>;

  // Starts listening at once. The mailbox holds an empty INBOX. Sets SIGPIPE
  // to be ignored in the process (a write to a dropped connection fails instead).
  FakeImapServer();
  ~FakeImapServer();
  FakeImapServer(const FakeImapServer&) = delete;
  FakeImapServer& operator=(const FakeImapServer&) = delete;

  const std::string& host() const { return host_; }   // "127.0.0.1"
  uint16_t port() const { return port_; }
  // Where imapstage connects to it: cleartext, `timeout_seconds` per read.
  imap::Endpoint endpoint(int timeout_seconds = 3) const;

  // --- scripting ---
  void expect(std::string pattern, std::string response);
  void on(std::string pattern, Handler handler, int times = 0);
  void on(std::string pattern, std::string response, int times = 0);
  // Forgets every rule added with on().
  void clear_rules();
  // Expected commands not seen (in order), as their patterns.
  std::vector<std::string> unmet() const;
  // Commands that arrived while an expectation was pending and did not match it.
  std::vector<std::string> unexpected() const;

  // --- behaviour ---
  // The CAPABILITY list (without "CAPABILITY"); default
  // "IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS NAMESPACE".
  void set_capabilities(std::string caps);
  // The PERMANENTFLAGS list of SELECT/EXAMINE (without parentheses); default
  // "\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*".
  void set_permanent_flags(std::string flags);
  // Whether SELECT/EXAMINE and STATUS report UIDNEXT (default true; Courier's
  // SELECT reports none).
  void set_reports_uidnext(bool select, bool status);
  // When set, LOGIN accepts only this user and password; default: anyone.
  void set_login(std::string user, std::string password);
  // The greeting line (default "* OK fake IMAP server ready\r\n").
  void set_greeting(std::string raw);
  // Folder names compared ignoring ASCII case, as Gmail and Microsoft 365
  // do: SELECT/STATUS/APPEND of "projects" reach "Projects", CREATE of it
  // answers NO [ALREADYEXISTS]. Default: exact names.
  void set_case_insensitive_names(bool on);
  // CREATE of one of these names, or of a name below one ending in '/'
  // ("[Gmail]/"), compared ignoring case, answers NO [CANNOT].
  void set_reserved_names(std::vector<std::string> names);

  // --- Gmail's dialect (developers.google.com/gmail/imap/imap-extensions) ---
  // Turns the server into a small Gmail: X-GM-EXT-1 in the capabilities,
  // "[Gmail]" (\\Noselect) with "[Gmail]/All Mail" (\\All) that holds every
  // message but those of Spam and Trash, and one folder per label: a
  // message with labels is in All Mail and in each label's folder (its own
  // UID in each, one X-GM-MSGID). FETCH answers X-GM-MSGID, X-GM-THRID and
  // X-GM-LABELS; UID STORE +X-GM-LABELS[.SILENT] (labels) adds labels (the
  // message appears in their folders, created as needed); APPEND gives the
  // message a new X-GM-MSGID, the label of the folder appended to, and
  // (unless that is All Mail, Spam or Trash) a copy in All Mail.
  void set_gmail();
  // The folder of a label: "\\Inbox" INBOX, "\\Sent" "[Gmail]/Sent Mail",
  // "\\Starred" "[Gmail]/Starred", "\\Important" "[Gmail]/Important",
  // "\\Draft" "[Gmail]/Drafts", another system label none (""), a user
  // label the folder of its name.
  static std::string gmail_folder_of(const std::string& label);
  static constexpr const char* kAllMail = "[Gmail]/All Mail";
  // Adds a message with these labels to All Mail and the labels' folders
  // (created as needed), or, with `only_in` ("[Gmail]/Spam", "[Gmail]/Trash"),
  // to that folder alone without labels. Returns its X-GM-MSGID.
  uint64_t add_gmail_message(std::string body, std::vector<std::string> labels, std::vector<std::string> flags = {},
                             std::string internaldate = "01-Jan-2024 10:00:00 +0000", std::string only_in = "");
  // Every copy of X-GM-MSGID `msgid`: (folder, UID), in folder order.
  std::vector<std::pair<std::string, uint32_t>> gmail_copies(uint64_t msgid) const;

  // --- mailbox state (thread-safe) ---
  void add_folder(const std::string& name, uint32_t uidvalidity = 1, std::vector<std::string> attributes = {});
  // Appends a message to an existing folder; returns its UID.
  uint32_t add_message(const std::string& folder, std::string body, std::vector<std::string> flags = {},
                       std::string internaldate = "01-Jan-2024 10:00:00 +0000");
  // Removes a message (no response is sent to anyone).
  void remove_message(const std::string& folder, uint32_t uid);
  void set_flags(const std::string& folder, uint32_t uid, std::vector<std::string> flags);
  // A new UIDVALIDITY: the folder's messages are renumbered from 1.
  void renumber(const std::string& folder, uint32_t new_uidvalidity);
  FakeFolder folder(const std::string& name) const;  // a copy; throws std::out_of_range if absent
  bool has_folder(const std::string& name) const;

  // --- observation ---
  std::vector<FakeCommand> commands() const;          // every command received, in order
  size_t connections() const;                         // accepted so far
  // Closes every open connection now (from the server side).
  void drop_connections();

 private:
  friend class FakeExchange;
  struct Rule;
  struct Expectation;
  void accept_loop();
  void serve(int fd, size_t number);
  void dispatch(FakeExchange::Connection& c, const FakeCommand& cmd);
  void standard(FakeExchange& x);
  void standard_fetch(FakeExchange& x, const std::function<bool(FakeExchange&, uint32_t)>* after);
  std::string fetch_response(FakeExchange& x, const FakeFolder& f, size_t index);
  FakeFolder* find(const std::string& name);
  const FakeFolder* find(const std::string& name) const;

  mutable std::recursive_mutex mutex_;
  std::string host_ = "127.0.0.1";
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  struct Threads;
  std::unique_ptr<Threads> threads_;
  std::vector<std::unique_ptr<Rule>> rules_;
  std::vector<std::unique_ptr<Expectation>> expectations_;
  std::vector<std::string> unexpected_;
  std::vector<FakeFolder> folders_;
  std::vector<FakeCommand> log_;
  std::string capabilities_ = "IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS NAMESPACE";
  bool select_uidnext_ = true;
  bool status_uidnext_ = true;
  std::string permanent_flags_ = "\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*";
  std::string user_, password_;
  std::string greeting_ = "* OK fake IMAP server ready\r\n";
  bool gmail_ = false;
  uint64_t next_msgid_ = 1600000000000000001ull;
  // Gmail: adds `labels` to every copy of `msgid` and copies it into their folders.
  void add_gmail_labels(uint64_t msgid, const std::vector<std::string>& labels);
  bool case_insensitive_ = false;
  std::vector<std::string> reserved_;
  size_t accepted_ = 0;
};

}  // namespace imapstage::testing

// A private IMAP server for integration tests, driven through tools/test-server:
// Dovecot (the default), Cyrus IMAP 3.6 or Courier-IMAP 5.0 (TestServerOptions::kind).
//
// The server lives in a fresh temporary directory (under $TMPDIR or /tmp),
// listens on free loopback ports (plain/STARTTLS and implicit TLS, with a CA
// made for it), and is stopped and removed when the TestServer is destroyed.
// Mail is inspected and changed through the script's own IMAP client, never
// through imapstage's code. Every failure throws std::runtime_error carrying
// the script's stderr.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "imap/session.h"

namespace imapstage::testing {

struct TestServerOptions {
  std::string seed = "default";                        // "default", "none" or "bench:N"
  std::vector<std::string> users = {"alice", "bob"};   // seeded accounts
  std::vector<std::string> target_users;               // empty accounts
  std::string alt_special_use;                         // "", "de" or "outlook": pre-made special-use
                                                       // folders with those names in target_users
  std::optional<uint64_t> append_limit;                // APPENDLIMIT, enforced; unset: 64 MiB, 0: none
                                                       // (Dovecot and Cyrus; Courier has none)
  std::string kind = "dovecot";                        // "dovecot", "cyrus" or "courier"
  bool cyrus_altnamespace = false;                     // Cyrus: personal folders beside INBOX (prefix "")
  bool cyrus_unixhierarchysep = false;                 // Cyrus: "/" as the hierarchy separator
  std::string login_hook;                              // Dovecot: a checkpassword passdb running this command
                                                       // after the accounts' own passdb
  bool trust_loopback = false;                         // Dovecot: login_trusted_networks = 127.0.0.0/8, imap_id_log = *
  std::string post_login;                              // Dovecot: run this command after each IMAP login
                                                       // (script-login: USER set, it execs the rest)
  std::string oauth2_introspection;                    // Dovecot: an oauth2 passdb (XOAUTH2, OAUTHBEARER) asking
                                                       // this RFC 7662 introspection URL (POST token=...)
};

// A shared folder made by TestServer::create_shared.
struct SharedFolder {
  std::string mailbox;  // its name on the server (the administrator's view), e.g. "Team.Notes"
  uint32_t uid = 0;     // UID of the message appended to it, 0 if none
};

class TestServer {
 public:
  explicit TestServer(TestServerOptions options = {});
  ~TestServer();
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  const std::string& host() const { return host_; }
  uint16_t imap_port() const { return imap_port_; }    // plain, STARTTLS offered
  uint16_t imaps_port() const { return imaps_port_; }  // implicit TLS
  // Dovecot's POP3 (plain with STLS, and POP3S); 0 when not served (other kinds).
  uint16_t pop3_port() const { return pop3_port_; }
  uint16_t pop3s_port() const { return pop3s_port_; }
  const std::string& ca_file() const { return ca_file_; }
  // Where imapstage connects to it: implicit TLS on imaps_port(), verified
  // against ca_file(), `timeout_seconds` per read.
  imap::Endpoint endpoint(int timeout_seconds = 30) const;
  const std::string& dir() const { return dir_; }      // the server's directory (tools/test-server DIR)

  // Password of an account; throws for an unknown one.
  std::string password(const std::string& user) const;
  // The name `user` logs in with: the user itself on Dovecot and Cyrus; on
  // Courier the user with the instance's token ("alice.1a2b3c4d"), because
  // Courier's accounts are global to the machine. Throws for an unknown user.
  std::string login(const std::string& user) const;
  // The master user (Dovecot only; "" elsewhere): log in as "USER*admin", or
  // SASL PLAIN with authzid USER.
  std::string master_user() const;
  std::string master_password() const;
  std::string master_separator() const;
  // The administrator (Cyrus only; "" elsewhere): may CREATE, SETACL and,
  // with SASL PLAIN and an authzid, act as any user.
  std::string admin_user() const;
  std::string admin_password() const;

  // "dovecot", "cyrus" or "courier".
  const std::string& kind() const { return kind_; }
  // The personal namespace as the server announces it (NAMESPACE): Dovecot
  // prefix "" and '/', Cyrus and Courier "INBOX." and '.' (Cyrus options change it).
  const std::string& personal_prefix() const { return personal_prefix_; }
  char personal_separator() const { return personal_separator_; }
  // Whether the server supports SPECIAL-USE (the seed's Sent, Drafts, Trash,
  // Junk and Archive carry the attributes): Dovecot and Cyrus, not Courier.
  bool special_use() const;
  // The server's name (modified UTF-7, in the personal namespace) of a logical
  // folder name (UTF-8 levels joined with "/"), e.g. "Projects/2024" becomes
  // "INBOX.Projects.2024" on Cyrus and Courier. "INBOX" stays INBOX.
  std::string raw_name(const std::string& logical) const;

  // What the server does to APPENDed bytes, from server.json "rewrites":
  // {"header_8bit": "kept"|"X", "bare_cr": "kept"|"removed",
  //  "bare_lf": "crlf"|"refused", "nul": "kept"|"0x80"|"refused",
  //  "missing_final_crlf": "kept"|"added"}.
  const nlohmann::json& rewrites() const;
  // The bytes the server stores for an APPEND of `bytes` according to
  // rewrites(), or nullopt when it refuses them.
  std::optional<std::string> expected_after_append(const std::string& bytes) const;

  // Cyrus only: as the administrator, grants `rights` (e.g. "lrs") on
  // `owner`'s logical `folder` ("INBOX" for the account itself) to `grantee`
  // (a user of this server, or "anyone"); returns the mailbox name.
  std::string setacl(const std::string& owner, const std::string& folder, const std::string& grantee,
                     const std::string& rights);
  // Cyrus only: creates a shared folder (logical name, outside every user's
  // personal namespace) readable by `grantees` with `rights`, holding
  // `message_bytes` unless empty.
  SharedFolder create_shared(const std::string& folder, const std::vector<std::string>& grantees,
                             const std::string& message_bytes = "", const std::string& rights = "lrs");

  // Adds an empty account (or returns the password of an existing one).
  std::string add_user(const std::string& name);

  // tools/test-server summary: {"personal_namespace": {prefix, separator},
  // "folders": [{name, raw, canonical, namespace, delimiter, attributes,
  // subscribed, uidvalidity, uidnext, highestmodseq, exists, messages: [{uid,
  // flags, internaldate, internaldate_unix, size, modseq, sha256, message_id}]}]}.
  // "canonical" is the logical name (personal prefix removed, levels joined
  // with "/"; other users' and shared folders keep their prefix), "namespace"
  // is "personal", "other" or "shared". Read-only (EXAMINE, BODY.PEEK);
  // \Noselect folders have "messages": null; modseq and highestmodseq are
  // null without CONDSTORE (Courier).
  nlohmann::json summary(const std::string& user, bool hashes = true) const;

  // APPENDs the exact bytes (creating the folder if needed) and returns the UID.
  // `flags`: space-separated ("\\Seen $Label1"); `date`: "DD-Mon-YYYY HH:MM:SS +ZZZZ".
  uint32_t append(const std::string& user, const std::string& folder, const std::string& message_bytes,
                  const std::string& flags = "", const std::string& date = "");
  // UID STORE; `op` is "+FLAGS", "-FLAGS" or "FLAGS".
  void store(const std::string& user, const std::string& folder, uint32_t uid, const std::string& op,
             const std::string& flags);
  // Expunges exactly these UIDs; throws (changing nothing) if one is missing.
  void expunge(const std::string& user, const std::string& folder, std::vector<uint32_t> uids);

  // Any tools/test-server command, arguments as they are (no shell), e.g.
  // run({"bump-uidvalidity", dir(), "alice", "INBOX"}). Returns its stdout.
  std::string run(std::vector<std::string> args) const;

  // Writes a file holding the password (mode 0600) and returns its path, for --password-file.
  std::string password_file(const std::string& user) const;

  // DIR/server.json as returned by start (accounts added later included).
  const nlohmann::json& info() const { return info_; }
  // A name for the instance: for Dovecot the ps title prefix of its processes
  // ("dovecot-ts-xxxxxxxx"); "cyrus-xxxxxxxx" or "courier-xxxxxxxx" otherwise.
  std::string instance() const;
  // Path of tools/test-server.
  static std::string script();
  // The command that runs it: $IMAPSTAGE_PYTHON or /usr/bin/python3 (when present) then the script,
  // else the script alone.
  static std::vector<std::string> script_command();

  // Stops the server now (idempotent); the destructor also removes the directory.
  void stop();

 private:
  std::string scratch_file(const std::string& stem) const;

  std::string root_;  // temporary directory holding dir_ and scratch files
  std::string dir_;
  std::string files_;
  std::string host_;
  std::string ca_file_;
  std::string kind_ = "dovecot";
  std::string personal_prefix_;
  char personal_separator_ = '/';
  uint16_t imap_port_ = 0;
  uint16_t imaps_port_ = 0;
  uint16_t pop3_port_ = 0;
  uint16_t pop3s_port_ = 0;
  nlohmann::json info_;
  bool stopped_ = false;
  mutable std::atomic<unsigned> counter_{0};
};

// A per-test temporary directory (under $TMPDIR or /tmp), removed with its
// contents at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A fixture whose tests share one TestServer with the default options,
// started before the suite's first test and stopped after its last.
class SharedServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new TestServer(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static TestServer* server_;
};

}  // namespace imapstage::testing

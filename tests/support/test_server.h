// A private Dovecot for integration tests, driven through tools/test-server.
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

namespace imapstage::testing {

struct TestServerOptions {
  std::string seed = "default";                        // "default", "none" or "bench:N"
  std::vector<std::string> users = {"alice", "bob"};   // seeded accounts
  std::vector<std::string> target_users;               // empty accounts
  std::string alt_special_use;                         // "", "de" or "outlook": pre-made special-use
                                                       // folders with those names in target_users
  std::optional<uint64_t> append_limit;                // APPENDLIMIT, enforced; unset: 64 MiB, 0: none
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
  const std::string& ca_file() const { return ca_file_; }
  const std::string& dir() const { return dir_; }      // the server's directory (tools/test-server DIR)

  // Password of an account; throws for an unknown one.
  std::string password(const std::string& user) const;
  // The master user: log in as "USER*admin", or SASL PLAIN with authzid USER.
  std::string master_user() const;
  std::string master_password() const;
  std::string master_separator() const;

  // Adds an empty account (or returns the password of an existing one).
  std::string add_user(const std::string& name);

  // tools/test-server summary: {"folders": [{name, raw, delimiter, attributes,
  // subscribed, uidvalidity, uidnext, highestmodseq, exists, messages: [{uid,
  // flags, internaldate, internaldate_unix, size, modseq, sha256, message_id}]}]}.
  // Read-only (EXAMINE, BODY.PEEK); \Noselect folders have "messages": null.
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
  // Ps title prefix of this instance's processes ("dovecot-ts-xxxxxxxx").
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
  uint16_t imap_port_ = 0;
  uint16_t imaps_port_ = 0;
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

// OAuth2 access tokens from a command (`--oauth2-token-cmd`, a profile's
// `token_cmd`): run whenever a token is needed and again when the server
// refuses the one it gave (it expired mid-run).
//
// How the command is run: `/bin/sh -c CMD`, CMD exactly as configured, with
// the environment of imapstage plus IMAPSTAGE_USER=<the mailbox> (the
// mailbox never goes into argv or into the command text). stdin is
// /dev/null; stdout is the token (surrounding white space trimmed, at most
// 64 KiB); stderr is imapstage's stderr (for a device-code prompt or the
// command's own errors). Exit 0 with a non-empty token is success. The
// command is killed (its process group) after the timeout.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace imapstage {

// Where XOAUTH2 logins get short-lived access tokens (a token command
// below). Shared by every connection of an account; thread-safe. Tokens are secrets: never logged or echoed.
class TokenSource {
 public:
  virtual ~TokenSource() = default;
  // The token to log in with: fetched on first use, then the cached one.
  // Throws Error(auth) when none can be had.
  virtual std::string token() = 0;
  // A fresh token after the server refused `rejected`. Fetches a new one
  // unless another connection already replaced `rejected` (then that one).
  // Throws Error(auth) when none can be had.
  virtual std::string renew(const std::string& rejected) = 0;
  // How often a token was fetched (for reports; never the tokens).
  virtual int fetches() const = 0;
};

// Logs in with `tokens`' token through `login_once(token)`. When the server
// refuses it (Error(auth, never)) and `connection_alive()` says the
// connection can take another attempt, logs in once more with a renewed
// token; a second refusal is Error(auth, never) saying the new token was
// refused too. Any other error passes through. Never loops.
void login_with_renewal(TokenSource& tokens, const std::function<void(const std::string&)>& login_once,
                        const std::function<bool()>& connection_alive);

// Runs `command` once for `user` as described above and returns the token.
// Throws Error(auth, never) "token command failed: exit N" (or "killed by
// signal N", "timed out after N s", "printed no token"), never with any of
// its output.
std::string run_token_command(const std::string& command, const std::string& user,
                              std::chrono::seconds timeout = std::chrono::seconds(60));

// A TokenSource that runs a token command (thread-safe; the token is cached
// until a server refuses it).
class CommandTokenSource : public TokenSource {
 public:
  CommandTokenSource(std::string command, std::string user,
                     std::chrono::seconds timeout = std::chrono::seconds(60));
  std::string token() override;
  std::string renew(const std::string& rejected) override;
  int fetches() const override;

 private:
  std::string fetch_locked();

  std::string command_;
  std::string user_;
  std::chrono::seconds timeout_;
  mutable std::mutex mutex_;
  std::string token_;
  int fetches_ = 0;
};

// A CommandTokenSource for `command` and `user`.
std::shared_ptr<TokenSource> make_token_source(const std::string& command, const std::string& user);

}  // namespace imapstage

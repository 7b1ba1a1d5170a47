// Limits on what an IMAP server may send, checked on the raw bytes before
// libetpan's parser sees them.
//
// libetpan keeps a response line and every literal in memory, and parses
// nested parentheses by recursion: a server that sends an endless line, a
// gigabyte literal or a million '(' would exhaust memory or the stack. The
// guard follows the byte stream (response text, "{N}" literals announced at
// the end of a line) and refuses, for good, the first byte that breaks a
// limit; the session then drops the connection and reports why.
//
// The guard does not need to agree with libetpan's grammar: it counts
// parentheses in the response text and, inside what it takes for a literal,
// line by line as if it were text (a literal announced where libetpan expects
// none starts a new response for libetpan). Parentheses libetpan can see
// nested are therefore at most twice `max_depth`.
//
// It also refuses the one input known to crash libetpan 1.9.4 outside
// nesting: a PERMANENTFLAGS response code whose first flag does not parse
// (libetpan then walks a list it never made).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "net/transport.h"

namespace imapstage::imap {

struct WireLimits {
  uint64_t max_text = 64ull << 20;         // non-literal bytes of one response
  uint64_t max_literal = 1ull << 20;       // one literal (the session raises it for message bodies)
  uint32_t max_depth = 256;                // parentheses open at once
  // A command's response may make us wait (in reads) at most `wait_base`
  // plus one second per `min_rate` bytes received: a server that drips
  // bytes to dodge the per-read timeout is dropped all the same.
  std::chrono::milliseconds wait_base{240000};
  uint64_t min_rate = 4096;                // bytes per second
};

class WireGuard final : public net::WireObserver {
 public:
  explicit WireGuard(WireLimits limits = {}) : limits_(limits) {}

  // Follows `bytes`, received from the server in order. Returns false once a
  // limit is broken (and from then on); violation() says which.
  bool feed(std::string_view bytes) override;

  // Someone else reads the responses for a while and enforces these limits
  // itself (the FETCH reader): bytes are only counted, for the wait budget.
  void suspend() { suspended_ = true; }
  // Follows the bytes again, from the start of a response; `unread` are the
  // bytes received and not read while suspended (checked now). Returns
  // false if they break a limit.
  bool resume(std::string_view unread);
  bool suspended() const { return suspended_; }

  // A command (or any bytes) went to the server: the wait budget starts afresh.
  void sent() override;
  // Time spent waiting for the server in one read. Returns false (for good)
  // when the current command's responses have taken longer than its budget.
  bool waited(std::chrono::steady_clock::duration wait) override;

  // The size a literal may have from now on (message bodies: the maximum
  // message size). Literals already announced keep the limit they had.
  void set_max_literal(uint64_t bytes, std::string what = "");
  uint64_t max_literal() const { return limits_.max_literal; }
  const WireLimits& limits() const { return limits_; }

  bool broken() const override { return !violation_.empty(); }
  // What broke a limit ("" if nothing), e.g. "a response line longer than 67108864 bytes".
  const std::string& violation() const { return violation_; }
  // True when the budget of waits ran out (the server is slow rather than hostile).
  bool too_slow() const { return too_slow_; }
  // True when what broke the limit is garbage (a literal size no number can
  // hold) rather than too much of something: like any garbage, it may not recur.
  bool garbled() const { return garbled_; }

 private:
  bool fail(std::string why);
  // At a line feed: returns the literal size announced just before it, if any.
  bool announced(std::string_view before, uint64_t& size, bool& impossible) const;
  // Follows "[PERMANENTFLAGS (" and the first flag after it; false if that flag cannot start.
  struct PermanentFlags {
    uint8_t matched = 0;  // bytes of "[PERMANENTFLAGS (" seen in a row
    uint8_t check = 0;    // 1: the next byte starts the first flag; 2: it follows that flag's backslash
  };
  static bool permanent_flags_byte(char c, PermanentFlags& state);
  void remember_tail(std::string& tail, std::string_view bytes);

  WireLimits limits_;
  std::string literal_what_;   // how a too-large literal is described
  std::string violation_;
  bool too_slow_ = false;
  bool garbled_ = false;
  bool suspended_ = false;
  // response text
  uint64_t text_ = 0;          // non-literal bytes of the current response
  uint64_t literals_ = 0;      // literal bytes of the current response
  uint32_t depth_ = 0;
  std::string tail_;           // the last bytes of the current line (literal announcements)
  PermanentFlags flags_;
  PermanentFlags shadow_flags_;
  // The literal's last line may go on after it, for libetpan, as one line:
  // followed too, until the line ends.
  PermanentFlags carried_flags_;
  // inside a literal
  uint64_t literal_left_ = 0;
  uint32_t shadow_depth_ = 0;  // parentheses of the literal's bytes read as text, line by line
  std::string shadow_tail_;
  // waits
  std::chrono::steady_clock::duration waited_{};
  uint64_t received_ = 0;
};

}  // namespace imapstage::imap

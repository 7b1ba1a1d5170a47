// The known ways IMAP servers change a message on APPEND, so that a copy a
// server stored in a changed form can be told from a real mismatch.
//
// The rewrites (each applied by the server to the bytes it was sent):
//
//   munge8bit        Cyrus replaces every byte >= 0x80 in the header section
//                    with 'X' (one byte, one 'X'); the body is untouched.
//   bare CR          A server may change every bare CR (a CR not followed
//                    by LF, including a CR at the very end): removed (Courier
//                    5.0, measured), replaced by CRLF or replaced by a space.
//                    The three count as one class; one server treats all its
//                    bare CRs alike. (Cyrus 3.6 keeps them.)
//   final CRLF       Courier appends CRLF to a message that does not end
//                    with CRLF.
//
// The header section is the bytes before the first empty line, where lines
// end with LF and a line holding nothing or only CR bytes is empty (a message
// starting with such a line has an empty header section; one with no empty
// line is all header). This is how Cyrus decides what munge8bit touches: on
// the message as it was sent, before any other change.
//
// Pure functions of their arguments; no I/O, thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "archive-format/hash.h"

namespace imapstage {

// Descriptions classify_rewrite joins (with ", ", in this order).
inline constexpr std::string_view kRewrite8bitHeader = "8-bit header bytes replaced";
inline constexpr std::string_view kRewriteBareCr = "bare CR changed";
inline constexpr std::string_view kRewriteFinalCrlf = "final CRLF added";

// When `server` is exactly `archived` after the smallest combination of the
// rewrites above (munge8bit first, then the bare-CR change, then the final
// CRLF), the classes that combination used, e.g. "8-bit header bytes
// replaced, final CRLF added". A class is named only when it changed a byte.
// nullopt when the two are equal (nothing to explain) or when no combination
// produces `server` (a real difference). Reads each input at most 15 times,
// without copying it.
std::optional<std::string> classify_rewrite(std::string_view archived, std::string_view server);

// SHA-256 of the rewrite-invariant form of `bytes`: every byte >= 0x80 in
// the header section replaced by 'X', then every CR, LF and space (0x20)
// dropped. A message and any rewrite of it above have the same fingerprint;
// messages that differ in any other byte (a letter, a tab, an 8-bit body
// byte, an added or removed byte other than CR, LF or space) have different
// ones. Messages that differ only in where their CR, LF and space bytes are,
// or in the values of their 8-bit header bytes, share a fingerprint too:
// equal fingerprints make a rewrite possible, classify_rewrite confirms it.
archive::Hash rewrite_fingerprint(std::string_view bytes);

// True when a known server would change `bytes` on APPEND: an 8-bit byte in
// the header section, a bare CR, or no final CRLF (an empty message too).
bool at_risk(std::string_view bytes);

// Follows the header section of a message byte by byte.
class HeaderTracker {
 public:
  // Call for each byte in order, before looking at in_header() for it.
  void next(char c) {
    if (c == '\n') {
      if (line_blank_) in_header_ = false;
      line_blank_ = true;
    } else if (c != '\r') {
      line_blank_ = false;
    }
  }
  // Whether the byte last passed to next() is in the header section. The
  // LF ending the empty line is counted as header, which changes nothing:
  // only bytes >= 0x80 are looked at.
  bool in_header() const { return in_header_; }

 private:
  bool in_header_ = true;
  bool line_blank_ = true;
};

// at_risk() of a message handed over in pieces (a message too large to
// hold): add() the pieces in order, then ask at_risk().
class AtRiskScan {
 public:
  void add(std::string_view piece);
  // Whether at_risk() holds for the pieces added so far, as one message.
  bool at_risk() const;

 private:
  HeaderTracker header_;
  bool risky_ = false;
  bool cr_open_ = false;  // the last byte was a CR (bare unless an LF follows)
  char last_[2] = {0, 0};
  uint64_t size_ = 0;
};

}  // namespace imapstage

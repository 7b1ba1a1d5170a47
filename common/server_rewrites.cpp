#include "common/server_rewrites.h"

#include <array>

namespace imapstage {

namespace {

enum class CrChange { keep, remove, crlf, space };

bool is_8bit(char c) { return static_cast<unsigned char>(c) >= 0x80; }

// Whether `server` is `archived` after munge8bit (if `munge`), then
// `cr`, then the final CRLF (if `final_crlf`), each of them changing at
// least one byte; streams over both, no copy.
bool produces(std::string_view archived, std::string_view server, bool munge, CrChange cr, bool final_crlf) {
  size_t j = 0;
  bool munged = false, cr_changed = false;
  auto emit = [&](std::string_view s) {
    if (server.size() - j < s.size() || server.compare(j, s.size(), s) != 0) return false;
    j += s.size();
    return true;
  };
  HeaderTracker header;
  for (size_t i = 0; i < archived.size(); ++i) {
    char c = archived[i];
    bool in_header = header.in_header();  // whether c is in the header section
    header.next(c);
    if (c == '\r' && (i + 1 == archived.size() || archived[i + 1] != '\n')) {
      if (cr != CrChange::keep) cr_changed = true;
      std::string_view out = cr == CrChange::keep ? "\r" : cr == CrChange::remove ? "" : cr == CrChange::crlf ? "\r\n" : " ";
      if (!emit(out)) return false;
      continue;
    }
    if (munge && in_header && is_8bit(c)) {
      munged = true;
      c = 'X';
    }
    if (j >= server.size() || server[j] != c) return false;
    ++j;
  }
  if (munge && !munged) return false;
  if (cr != CrChange::keep && !cr_changed) return false;
  if (final_crlf) {
    if (j >= 2 && server.compare(j - 2, 2, "\r\n") == 0) return false;  // already ends with CRLF
    if (!emit("\r\n")) return false;
  }
  return j == server.size();
}

}  // namespace

std::optional<std::string> classify_rewrite(std::string_view archived, std::string_view server) {
  if (archived == server) return std::nullopt;
  struct Candidate {
    bool munge;
    CrChange cr;
    bool final_crlf;
  };
  // Smallest combinations first, so a difference one class explains is named by that class alone.
  static constexpr std::array<Candidate, 15> kCandidates{{
      {true, CrChange::keep, false},
      {false, CrChange::remove, false},
      {false, CrChange::crlf, false},
      {false, CrChange::space, false},
      {false, CrChange::keep, true},
      {true, CrChange::remove, false},
      {true, CrChange::crlf, false},
      {true, CrChange::space, false},
      {true, CrChange::keep, true},
      {false, CrChange::remove, true},
      {false, CrChange::crlf, true},
      {false, CrChange::space, true},
      {true, CrChange::remove, true},
      {true, CrChange::crlf, true},
      {true, CrChange::space, true},
  }};
  for (const Candidate& c : kCandidates) {
    if (!produces(archived, server, c.munge, c.cr, c.final_crlf)) continue;
    std::string out;
    auto add = [&](std::string_view what) {
      if (!out.empty()) out += ", ";
      out += what;
    };
    if (c.munge) add(kRewrite8bitHeader);
    if (c.cr != CrChange::keep) add(kRewriteBareCr);
    if (c.final_crlf) add(kRewriteFinalCrlf);
    return out;
  }
  return std::nullopt;
}

archive::Hash rewrite_fingerprint(std::string_view bytes) {
  archive::Sha256 sha;
  std::string chunk;
  chunk.reserve(64 * 1024);
  HeaderTracker header;
  for (char c : bytes) {
    bool in_header = header.in_header();
    header.next(c);
    if (c == '\r' || c == '\n' || c == ' ') continue;
    chunk += in_header && is_8bit(c) ? 'X' : c;
    if (chunk.size() == chunk.capacity()) {
      sha.update(chunk);
      chunk.clear();
    }
  }
  sha.update(chunk);
  return sha.finish();
}

void AtRiskScan::add(std::string_view piece) {
  if (piece.empty()) return;
  if (cr_open_ && piece[0] != '\n') risky_ = true;
  for (size_t i = 0; i < piece.size() && !risky_; ++i) {
    char c = piece[i];
    bool in_header = header_.in_header();
    header_.next(c);
    if (c == '\r' && i + 1 < piece.size() && piece[i + 1] != '\n') risky_ = true;
    if (in_header && is_8bit(c)) risky_ = true;
  }
  cr_open_ = piece.back() == '\r';
  if (piece.size() >= 2) {
    last_[0] = piece[piece.size() - 2];
    last_[1] = piece.back();
  } else {
    last_[0] = last_[1];
    last_[1] = piece[0];
  }
  size_ += piece.size();
}

bool AtRiskScan::at_risk() const {
  // A final CR is followed by nothing: bare, and no final CRLF either.
  return risky_ || size_ < 2 || last_[0] != '\r' || last_[1] != '\n';
}

bool at_risk(std::string_view bytes) {
  AtRiskScan scan;
  scan.add(bytes);
  return scan.at_risk();
}

}  // namespace imapstage

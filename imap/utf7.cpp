// Modified UTF-7 (RFC 3501 section 5.1.3).
#include "imap/utf7.h"

#include <cstdint>
#include <vector>

namespace imapstage::imap {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == ',') return 63;
  return -1;
}

bool printable(uint32_t c) { return c >= 0x20 && c <= 0x7e; }

// Next code point of `s` from `i`; U+FFFD (consuming one byte) for an invalid sequence.
uint32_t next_code_point(std::string_view s, size_t& i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b = byte(i);
  if (b < 0x80) {
    ++i;
    return b;
  }
  int len = 0;
  uint32_t cp = 0;
  uint32_t min = 0;
  if ((b & 0xe0) == 0xc0) {
    len = 2, cp = b & 0x1f, min = 0x80;
  } else if ((b & 0xf0) == 0xe0) {
    len = 3, cp = b & 0x0f, min = 0x800;
  } else if ((b & 0xf8) == 0xf0) {
    len = 4, cp = b & 0x07, min = 0x10000;
  } else {
    ++i;
    return 0xfffd;
  }
  if (i + len > s.size()) {
    ++i;
    return 0xfffd;
  }
  for (int k = 1; k < len; ++k) {
    unsigned char c = byte(i + k);
    if ((c & 0xc0) != 0x80) {
      ++i;
      return 0xfffd;
    }
    cp = (cp << 6) | (c & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    ++i;
    return 0xfffd;
  }
  i += len;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

void flush_shifted(std::string& out, const std::vector<uint16_t>& units) {
  if (units.empty()) return;
  out += '&';
  uint32_t bits = 0;
  int nbits = 0;
  for (uint16_t u : units) {
    for (int shift = 8; shift >= 0; shift -= 8) {
      bits = (bits << 8) | ((u >> shift) & 0xff);
      nbits += 8;
      while (nbits >= 6) {
        nbits -= 6;
        out += kAlphabet[(bits >> nbits) & 0x3f];
      }
    }
  }
  if (nbits > 0) out += kAlphabet[(bits << (6 - nbits)) & 0x3f];
  out += '-';
}

}  // namespace

std::string utf7_encode(std::string_view utf8) {
  std::string out;
  std::vector<uint16_t> units;
  size_t i = 0;
  while (i < utf8.size()) {
    uint32_t cp = next_code_point(utf8, i);
    if (printable(cp)) {
      flush_shifted(out, units);
      units.clear();
      if (cp == '&') out += "&-";
      else out += static_cast<char>(cp);
      continue;
    }
    if (cp >= 0x10000) {
      uint32_t v = cp - 0x10000;
      units.push_back(static_cast<uint16_t>(0xd800 | (v >> 10)));
      units.push_back(static_cast<uint16_t>(0xdc00 | (v & 0x3ff)));
    } else {
      units.push_back(static_cast<uint16_t>(cp));
    }
  }
  flush_shifted(out, units);
  return out;
}

std::optional<std::string> utf7_decode_strict(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (!printable(static_cast<unsigned char>(c))) return std::nullopt;
    if (c != '&') {
      out += c;
      ++i;
      continue;
    }
    ++i;
    if (i < s.size() && s[i] == '-') {
      out += '&';
      ++i;
      continue;
    }
    // A shifted run: base64 up to '-'.
    uint32_t bits = 0;
    int nbits = 0;
    std::vector<uint16_t> units;
    bool closed = false;
    while (i < s.size()) {
      char d = s[i++];
      if (d == '-') {
        closed = true;
        break;
      }
      int v = b64_value(d);
      if (v < 0) return std::nullopt;
      bits = (bits << 6) | static_cast<uint32_t>(v);
      nbits += 6;
      if (nbits >= 16) {
        nbits -= 16;
        units.push_back(static_cast<uint16_t>((bits >> nbits) & 0xffff));
      }
    }
    if (!closed || units.empty()) return std::nullopt;
    // A shifted run right after another is a null shift ("-&"), which RFC 3501 forbids;
    // "-&-" (a run, then the character '&') is fine.
    if (i + 1 < s.size() && s[i] == '&' && s[i + 1] != '-') return std::nullopt;
    if (i + 1 == s.size() && s[i] == '&') return std::nullopt;
    // Leftover bits: fewer than 6, and all zero.
    if (nbits >= 6 || (bits & ((1u << nbits) - 1)) != 0) return std::nullopt;
    for (size_t k = 0; k < units.size(); ++k) {
      uint32_t u = units[k];
      uint32_t cp;
      if (u >= 0xd800 && u <= 0xdbff) {
        if (k + 1 >= units.size()) return std::nullopt;
        uint32_t low = units[++k];
        if (low < 0xdc00 || low > 0xdfff) return std::nullopt;
        cp = 0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00);
      } else if (u >= 0xdc00 && u <= 0xdfff) {
        return std::nullopt;
      } else {
        cp = u;
      }
      if (printable(cp)) return std::nullopt;  // must have been sent as itself
      append_utf8(out, cp);
    }
  }
  return out;
}

std::string utf7_decode(std::string_view mutf7) {
  if (auto decoded = utf7_decode_strict(mutf7)) return *decoded;
  return std::string(mutf7);
}

}  // namespace imapstage::imap

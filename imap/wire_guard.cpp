#include "imap/wire_guard.h"

#include <algorithm>
#include <array>
#include <cctype>

#include <fmt/format.h>

namespace imapstage::imap {

namespace {
constexpr size_t kTail = 32;             // enough for "{18446744073709551615+}\r"
constexpr uint64_t kPerLiteralText = 64;  // what one literal costs of the text budget (bounds their count)
}  // namespace

bool WireGuard::fail(std::string why) {
  if (violation_.empty()) violation_ = std::move(why);
  return false;
}

void WireGuard::remember_tail(std::string& tail, std::string_view bytes) {
  if (bytes.size() >= kTail) {
    tail.assign(bytes.substr(bytes.size() - kTail));
    return;
  }
  tail.append(bytes);
  if (tail.size() > kTail) tail.erase(0, tail.size() - kTail);
}

bool WireGuard::announced(std::string_view s, uint64_t& size, bool& impossible) const {
  impossible = false;
  if (s.size() > kTail) s = s.substr(s.size() - kTail);  // the same view however the bytes arrived
  if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  if (s.empty() || s.back() != '}') return false;
  s.remove_suffix(1);
  if (!s.empty() && s.back() == '+') s.remove_suffix(1);
  size_t digits = 0;
  while (digits < s.size() && s[s.size() - 1 - digits] >= '0' && s[s.size() - 1 - digits] <= '9') ++digits;
  if (digits == 0 || digits == s.size() || s[s.size() - 1 - digits] != '{') return false;
  std::string_view number = s.substr(s.size() - digits);
  uint64_t n = 0;
  for (char c : number) {
    if (n > (UINT64_MAX - 9) / 10) {
      impossible = true;
      return true;
    }
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  size = n;
  return true;
}

bool WireGuard::permanent_flags_byte(char c, PermanentFlags& st) {
  static constexpr std::string_view kCode = "[PERMANENTFLAGS (";
  auto atom = [](char ch) {
    auto u = static_cast<unsigned char>(ch);
    return u > 0x20 && u < 0x7f && std::string_view("(){%*\"\\]").find(ch) == std::string_view::npos;
  };
  if (st.check == 1) {
    st.check = 0;
    if (c == '\\') st.check = 2;
    else if (c != ')' && !atom(c)) return false;
  } else if (st.check == 2) {
    st.check = 0;
    if (c != '*' && !atom(c)) return false;
  }
  char up = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (up == kCode[st.matched]) {
    if (++st.matched == kCode.size()) {
      st.matched = 0;
      st.check = 1;
    }
  } else {
    st.matched = c == '[' ? 1 : 0;
  }
  return true;
}

// The bytes inside a literal that the shadow parse in feed() acts on.
constexpr std::array<bool, 256> kShadowByte = [] {
  std::array<bool, 256> t{};
  t['['] = t['('] = t[')'] = t['\n'] = true;
  return t;
}();

bool WireGuard::feed(std::string_view b) {
  if (broken()) return false;
  received_ += b.size();
  if (suspended_) return true;
  size_t i = 0;
  while (i < b.size()) {
    if (literal_left_ > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(literal_left_, b.size() - i));
      std::string_view chunk = b.substr(i, n);
      size_t line_start = 0;
      const auto* bytes = reinterpret_cast<const unsigned char*>(chunk.data());
      for (size_t k = 0; k < n; ++k) {
        // Message bodies are most of what arrives: bytes that change nothing
        // (all but [ ( ) LF while no PERMANENTFLAGS list is being read) are
        // skipped in a tight loop.
        if (!shadow_flags_.matched && !shadow_flags_.check) {
          while (k < n && !kShadowByte[bytes[k]]) ++k;
          if (k == n) break;
        }
        char c = chunk[k];
        if ((c == '[' || shadow_flags_.matched || shadow_flags_.check) && !permanent_flags_byte(c, shadow_flags_))
          return fail("a PERMANENTFLAGS list whose first flag cannot be parsed");
        if (c == '(') {
          if (++shadow_depth_ > limits_.max_depth)
            return fail(fmt::format("parentheses nested deeper than {}", limits_.max_depth));
        } else if (c == ')') {
          if (shadow_depth_) --shadow_depth_;
        } else if (c == '\n') {
          std::string_view part = chunk.substr(line_start, k - line_start);
          std::string joined;
          if (part.size() < kTail && !shadow_tail_.empty()) {
            joined = shadow_tail_;
            joined.append(part);
            part = joined;
          }
          uint64_t size = 0;
          bool impossible = false;
          // A line inside the literal that does not announce one ends
          // whatever libetpan might take these bytes for.
          if (!announced(part, size, impossible)) shadow_depth_ = 0;
          shadow_flags_ = {};
          shadow_tail_.clear();
          line_start = k + 1;
        }
      }
      remember_tail(shadow_tail_, chunk.substr(line_start));
      literal_left_ -= n;
      i += n;
      if (literal_left_ == 0) carried_flags_ = shadow_flags_;
      continue;
    }
    char c = b[i++];
    if (++text_ > limits_.max_text)
      return fail(fmt::format("a response line longer than {} bytes", limits_.max_text));
    if (!permanent_flags_byte(c, flags_) || !permanent_flags_byte(c, carried_flags_))
      return fail("a PERMANENTFLAGS list whose first flag cannot be parsed");
    if (c == '(') {
      if (++depth_ > limits_.max_depth)
        return fail(fmt::format("parentheses nested deeper than {}", limits_.max_depth));
    } else if (c == ')') {
      if (depth_) --depth_;
    } else if (c == '\n') {
      uint64_t size = 0;
      bool impossible = false;
      if (announced(tail_, size, impossible)) {
        if (impossible) {
          garbled_ = true;
          return fail("a literal of an impossible size");
        }
        if (size > limits_.max_literal)
          return fail(fmt::format("a literal of {} bytes, over {}", size,
                                  literal_what_.empty() ? fmt::format("the limit of {} bytes", limits_.max_literal)
                                                        : literal_what_));
        literals_ += size;
        text_ += kPerLiteralText;
        if (literals_ > limits_.max_literal + (1u << 20))
          return fail(fmt::format("{} bytes of literals in one response", literals_));
        if (text_ > limits_.max_text)
          return fail(fmt::format("a response line longer than {} bytes", limits_.max_text));
        literal_left_ = size;
        shadow_depth_ = depth_;
        shadow_flags_ = {};
        shadow_tail_.clear();
      } else {
        text_ = 0;
        literals_ = 0;
        depth_ = 0;
      }
      tail_.clear();
      flags_ = {};
      carried_flags_ = {};
      continue;
    }
    if (c != '\n') {
      tail_.push_back(c);
      if (tail_.size() > 2 * kTail) tail_.erase(0, tail_.size() - kTail);
    }
  }
  return true;
}

bool WireGuard::resume(std::string_view unread) {
  suspended_ = false;
  text_ = literals_ = 0;
  depth_ = 0;
  tail_.clear();
  flags_ = shadow_flags_ = carried_flags_ = {};
  literal_left_ = 0;
  shadow_depth_ = 0;
  shadow_tail_.clear();
  received_ -= std::min<uint64_t>(received_, unread.size());  // counted when they arrived
  return feed(unread);
}

void WireGuard::sent() {
  waited_ = {};
  received_ = 0;
}

bool WireGuard::waited(std::chrono::steady_clock::duration wait) {
  if (broken()) return false;
  waited_ += wait;
  auto budget = std::chrono::duration_cast<std::chrono::steady_clock::duration>(limits_.wait_base) +
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::duration<double>(static_cast<double>(received_) / std::max<uint64_t>(1, limits_.min_rate)));
  if (waited_ <= budget) return true;
  too_slow_ = true;
  return fail(fmt::format("no complete answer after waiting {:.0f} s for {} bytes (slower than {} bytes/s)",
                          std::chrono::duration<double>(waited_).count(), received_, limits_.min_rate));
}

void WireGuard::set_max_literal(uint64_t bytes, std::string what) {
  limits_.max_literal = bytes;
  literal_what_ = std::move(what);
}

}  // namespace imapstage::imap

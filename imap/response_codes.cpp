#include "imap/response_codes.h"

#include <algorithm>
#include <cctype>

namespace imapstage::imap {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool digit(char c) { return c >= '0' && c <= '9'; }

// A non-zero 32-bit number without leading zeros at s[i...]; advances i.
bool nz_number(std::string_view s, size_t& i, uint32_t& v) {
  size_t start = i;
  uint64_t n = 0;
  while (i < s.size() && digit(s[i])) {
    n = n * 10 + static_cast<uint64_t>(s[i] - '0');
    if (n > 0xffffffffu) return false;
    ++i;
  }
  if (i == start || s[start] == '0') return false;
  v = static_cast<uint32_t>(n);
  return true;
}

}  // namespace

std::optional<TaggedReply> parse_tagged_reply(std::string_view line, std::string_view tag) {
  if (tag.empty() || line.size() <= tag.size() || line.substr(0, tag.size()) != tag || line[tag.size()] != ' ')
    return std::nullopt;
  TaggedReply r;
  std::string_view rest = line.substr(tag.size() + 1);
  while (!rest.empty() && (rest.back() == '\n' || rest.back() == '\r')) rest.remove_suffix(1);
  size_t sp = rest.find(' ');
  std::string_view status = rest.substr(0, sp);
  r.status.reserve(status.size());
  for (char c : status) r.status += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
  r.text = std::string(rest);
  if (!rest.empty() && rest[0] == '[') {
    size_t close = rest.find(']');
    if (close != std::string_view::npos) r.code = std::string(rest.substr(1, close - 1));
  }
  return r;
}

std::optional<std::vector<uint32_t>> parse_uid_set(std::string_view s, size_t max) {
  std::vector<uint32_t> out;
  size_t i = 0;
  for (;;) {
    uint32_t a, b;
    if (!nz_number(s, i, a)) return std::nullopt;
    b = a;
    if (i < s.size() && s[i] == ':') {
      ++i;
      if (!nz_number(s, i, b)) return std::nullopt;
    }
    uint32_t lo = std::min(a, b), hi = std::max(a, b);
    if (static_cast<uint64_t>(hi) - lo + 1 + out.size() > max) return std::nullopt;
    for (uint64_t u = lo; u <= hi; ++u) out.push_back(static_cast<uint32_t>(u));
    if (i == s.size()) break;
    if (s[i] != ',') return std::nullopt;
    ++i;
  }
  return out;
}

std::optional<AppendUid> parse_appenduid(std::string_view code, size_t count) {
  constexpr std::string_view name = "APPENDUID ";
  if (code.size() <= name.size() || !iequals(code.substr(0, name.size()), name)) return std::nullopt;
  std::string_view args = code.substr(name.size());
  size_t i = 0;
  AppendUid out;
  if (!nz_number(args, i, out.uidvalidity)) return std::nullopt;
  if (i >= args.size() || args[i] != ' ') return std::nullopt;
  auto set = parse_uid_set(args.substr(i + 1), count);
  if (!set || set->size() != count) return std::nullopt;
  // Each message gets its own UID.
  auto sorted = *set;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) return std::nullopt;
  out.uids = std::move(*set);
  return out;
}

std::optional<uint64_t> parse_literal_size(std::string_view line, bool* malformed) {
  if (malformed) *malformed = false;
  if (line.empty() || line.back() != '}') return std::nullopt;
  size_t open = line.rfind('{');
  if (open == std::string_view::npos) return std::nullopt;
  std::string_view num = line.substr(open + 1, line.size() - open - 2);
  if (!num.empty() && num.back() == '+') num.remove_suffix(1);
  if (num.empty() || !std::all_of(num.begin(), num.end(), digit)) return std::nullopt;
  uint64_t n = 0;
  for (char c : num) {
    if (n > (uint64_t{1} << 62) / 5) {  // n * 10 would not fit in 63 bits
      if (malformed) *malformed = true;
      return std::nullopt;
    }
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

std::optional<std::vector<uint32_t>> parse_search_response(std::string_view line) {
  constexpr std::string_view name = "SEARCH";
  if (line.size() < name.size() || !iequals(line.substr(0, name.size()), name)) return std::nullopt;
  std::string_view rest = line.substr(name.size());
  while (!rest.empty() && (rest.back() == '\n' || rest.back() == '\r')) rest.remove_suffix(1);
  if (!rest.empty() && rest[0] != ' ') return std::nullopt;  // "SEARCHX"
  std::vector<uint32_t> uids;
  size_t i = 0;
  while (i < rest.size()) {
    if (rest[i] == ' ') {
      ++i;
      continue;
    }
    if (rest[i] == '(') break;  // (MODSEQ n)
    uint32_t v;
    if (!nz_number(rest, i, v)) return std::nullopt;
    if (i < rest.size() && rest[i] != ' ') return std::nullopt;
    uids.push_back(v);
  }
  return uids;
}

namespace {

// Case-insensitive find of `needle` (lower-case) in `hay`.
size_t ifind(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return std::string_view::npos;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    bool same = true;
    for (size_t k = 0; k < needle.size() && same; ++k)
      same = std::tolower(static_cast<unsigned char>(hay[i + k])) == needle[k];
    if (same) return i;
  }
  return std::string_view::npos;
}

}  // namespace

std::optional<ThrottleHint> parse_throttle_hint(std::string_view text, ThrottleContext context) {
  std::optional<ThrottleHint> hint;
  // The response code, if the text starts with one.
  std::string code;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close != std::string_view::npos) {
      std::string_view c = text.substr(1, close - 1);
      c = c.substr(0, c.find(' '));
      for (char ch : c) code += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    }
  }
  if (code == "THROTTLED" || code == "UNAVAILABLE" || (code == "OVERQUOTA" && context == ThrottleContext::download))
    hint = ThrottleHint{code, std::nullopt};
  if (ifind(text, "exceeded bandwidth limits") != std::string_view::npos && context == ThrottleContext::download)
    hint = ThrottleHint{"bandwidth limit exceeded", std::nullopt};
  if (ifind(text, "too many simultaneous connections") != std::string_view::npos)
    hint = ThrottleHint{"too many simultaneous connections", std::nullopt};
  if (ifind(text, "request is throttled") != std::string_view::npos) hint = ThrottleHint{"throttled", std::nullopt};
  constexpr std::string_view label = "suggested backoff time:";
  size_t at = ifind(text, label);
  if (at != std::string_view::npos) {
    size_t i = at + label.size();
    while (i < text.size() && text[i] == ' ') ++i;
    uint64_t n = 0;
    size_t start = i;
    while (i < text.size() && digit(text[i]) && i - start < 13) n = n * 10 + static_cast<uint64_t>(text[i++] - '0');
    if (!hint) hint = ThrottleHint{"throttled", std::nullopt};
    hint->reason = "Suggested Backoff Time";
    if (i > start) hint->backoff_ms = std::min<uint64_t>(n, uint64_t{1} << 40);
  }
  return hint;
}

}  // namespace imapstage::imap

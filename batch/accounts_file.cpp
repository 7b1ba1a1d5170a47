#include "batch/accounts_file.h"

#include <cerrno>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "common/error.h"

namespace imapstage::batch {

namespace {

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return std::string(s.substr(b, e - b));
}

// Splits one CSV record (RFC 4180 quoting) into fields; returns false with
// `why` set when the quoting is broken. `text` and `pos` let a quoted field
// span lines; `lines` counts the extra lines consumed.
bool split_csv(std::string_view text, size_t& pos, std::vector<std::string>& fields, size_t& lines,
               std::string& why) {
  fields.clear();
  std::string field;
  bool quoted = false, was_quoted = false;
  while (pos < text.size()) {
    char c = text[pos];
    if (quoted) {
      if (c == '"') {
        if (pos + 1 < text.size() && text[pos + 1] == '"') {
          field.push_back('"');
          pos += 2;
          continue;
        }
        quoted = false;
        ++pos;
        continue;
      }
      if (c == '\n') ++lines;
      field.push_back(c);
      ++pos;
      continue;
    }
    if (c == '\n') {
      ++pos;
      break;
    }
    if (c == ',') {
      fields.push_back(was_quoted ? field : trim(field));
      field.clear();
      was_quoted = false;
      ++pos;
      continue;
    }
    if (c == '"') {
      if (!trim(field).empty()) {
        why = fmt::format("a quote inside an unquoted field (column {})", fields.size() + 1);
        while (pos < text.size() && text[pos] != '\n') ++pos;
        if (pos < text.size()) ++pos;
        return false;
      }
      field.clear();
      quoted = was_quoted = true;
      ++pos;
      continue;
    }
    if (was_quoted && c != ' ' && c != '\t' && c != '\r') {
      why = fmt::format("text after a closing quote (column {})", fields.size() + 1);
      while (pos < text.size() && text[pos] != '\n') ++pos;
      if (pos < text.size()) ++pos;
      return false;
    }
    if (!was_quoted) field.push_back(c);
    ++pos;
  }
  if (quoted) {
    why = fmt::format("a quoted field (column {}) is never closed", fields.size() + 1);
    return false;
  }
  fields.push_back(was_quoted ? field : trim(field));
  return true;
}

std::vector<std::string> split_semicolons(std::string_view line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= line.size(); ++i) {
    if (i == line.size() || line[i] == ';') {
      out.push_back(trim(line.substr(start, i - start)));
      start = i + 1;
    }
  }
  // imapsync files often end each line with ';'
  if (out.size() > 1 && out.back().empty()) out.pop_back();
  return out;
}

bool is_header(const std::vector<std::string>& fields) {
  if (fields.empty()) return false;
  if (fields[0] == "source_user" || fields[0] == "source") return true;
  // imapsync's own column names, only when the second column says so too
  return fields[0] == "user1" && fields.size() >= 2 && fields[1] == "password1";
}

bool valid_user(const std::string& user) {
  if (user.empty()) return false;
  for (unsigned char c : user)
    if (c < 0x21 || c == 0x7f) return false;
  return true;
}

}  // namespace

AccountsFile parse_accounts(std::string_view text) {
  AccountsFile out;
  size_t pos = 0, line = 1;
  bool first_record = true;
  while (pos < text.size()) {
    size_t this_line = line;
    size_t eol = text.find('\n', pos);
    std::string_view raw = text.substr(pos, eol == std::string_view::npos ? text.size() - pos : eol - pos);
    std::string stripped = trim(raw);
    if (stripped.empty() || stripped[0] == '#') {
      pos = eol == std::string_view::npos ? text.size() : eol + 1;
      ++line;
      continue;
    }
    std::vector<std::string> fields;
    size_t extra = 0;
    // The separator that comes first decides: "alice;pa,ss" is imapsync-style,
    // "alice,\"pa;ss\"" is CSV.
    size_t semicolon = raw.find(';');
    bool csv = semicolon == std::string_view::npos || raw.find_first_of(",\"") < semicolon;
    if (csv) {
      std::string why;
      if (!split_csv(text, pos, fields, extra, why)) {
        out.errors.push_back({this_line, why});
        line += 1 + extra;
        first_record = false;
        continue;
      }
    } else {
      fields = split_semicolons(raw);
      pos = eol == std::string_view::npos ? text.size() : eol + 1;
    }
    line += 1 + extra;
    if (first_record && is_header(fields)) {
      first_record = false;
      continue;
    }
    first_record = false;
    if (fields.size() > 4) {
      out.errors.push_back({this_line, fmt::format("{} columns, at most 4 expected "
                                                   "(source_user, source_password, target_user, target_password)",
                                                   fields.size())});
      continue;
    }
    fields.resize(4);
    if (!valid_user(fields[0])) {
      out.errors.push_back({this_line, fields[0].empty() ? "the source user is missing"
                                                         : "the source user contains spaces or control characters"});
      continue;
    }
    if (!fields[2].empty() && !valid_user(fields[2])) {
      out.errors.push_back({this_line, "the target user contains spaces or control characters"});
      continue;
    }
    AccountLine a;
    a.line = this_line;
    a.source_user = fields[0];
    a.source_password = fields[1];
    a.target_user = fields[2].empty() ? fields[0] : fields[2];
    a.target_password = fields[3];
    out.accounts.push_back(std::move(a));
  }
  return out;
}

AccountsFile read_accounts(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_io("cannot read the accounts file", path.string(), errno);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return parse_accounts(buffer.str());
}

}  // namespace imapstage::batch

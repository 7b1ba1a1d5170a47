// The accounts file of a batch (`--accounts FILE`).
//
// Two forms, told apart line by line:
//   CSV (RFC 4180):  source_user,source_password,target_user,target_password
//                    fields may be quoted ("a,b" and "" for a quote inside);
//                    a first line naming the columns (source_user,...) is skipped.
//   imapsync-style:  user1;password1;user2;password2
// Trailing columns may be missing: a missing password means "the profile
// supplies it" (admin, master-user or magic mode); a missing target user
// means "the same as the source user". Blank lines and lines starting with
// '#' are ignored.
//
// Passwords read here are secrets: no error message, event or record ever
// contains them. Errors name the file and the line number only.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace imapstage::batch {

struct AccountLine {
  size_t line = 0;               // 1-based line number in the file
  std::string source_user;
  std::string source_password;   // "" when not given
  std::string target_user;       // the source user when not given
  std::string target_password;   // "" when not given
};

struct LineError {
  size_t line = 0;
  std::string message;           // never contains a field's value other than a user name
};

struct AccountsFile {
  std::vector<AccountLine> accounts;
  std::vector<LineError> errors;  // malformed lines; the other lines are still usable
};

// Parses the text of an accounts file.
AccountsFile parse_accounts(std::string_view text);

// Reads and parses `path`. Throws Error(io) if it cannot be read.
AccountsFile read_accounts(const std::filesystem::path& path);

}  // namespace imapstage::batch

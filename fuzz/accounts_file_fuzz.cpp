// Accounts files of a batch (batch/accounts_file.h): any text gives accounts
// and line errors, never a crash or an exception; line numbers are real and
// each line is either an account or an error.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "batch/accounts_file.h"

using namespace imapstage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  batch::AccountsFile f = batch::parse_accounts(text);
  size_t lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1;
  size_t previous = 0;
  for (auto& a : f.accounts) {
    if (a.line == 0 || a.line > lines || a.line <= previous) std::abort();
    previous = a.line;
    if (a.source_user.empty() || a.target_user.empty()) std::abort();
  }
  for (auto& e : f.errors) {
    if (e.line == 0 || e.line > lines || e.message.empty()) std::abort();
    for (auto& a : f.accounts)
      if (a.line == e.line) std::abort();  // a line is either an account or an error
  }
  return 0;
}

#include "archive-format/lookup.h"

#include "common/error.h"

namespace imapstage::archive {

AccountRecord resolve_account(const Archive& a, const std::string& name) {
  auto accounts = a.accounts();
  if (!name.empty()) {
    if (auto found = a.find_account(name)) return *found;
  } else if (accounts.size() == 1) {
    return accounts.front();
  }
  std::string known;
  for (auto& acc : accounts) known += (known.empty() ? "" : ", ") + acc.name;
  if (known.empty()) known = "none";
  std::string what = !name.empty()       ? "no account " + name + " in the archive"
                     : accounts.empty() ? std::string("the archive holds no account yet")
                                        : "the archive holds several accounts; name one";
  throw Error(ErrorKind::not_found, what + " (accounts: " + known + ")", Retry::never,
              {.file = a.dir().string()});
}

FolderRecord resolve_folder(const Archive& a, const AccountRecord& account,
                                     const std::string& name) {
  if (auto f = a.find_folder(account.id, name)) return *f;
  for (auto& f : a.folders(account.id))
    if (f.name_utf8 == name || f.canonical_name() == name) return f;
  throw Error(ErrorKind::not_found, "no such folder in the archive", Retry::never,
              {.account = account.name, .folder = name});
}

std::string flags_text(const MessageRecord& record) {
  std::string out;
  for (auto& f : flags_to_imap(record.flags, record.keywords)) out += (out.empty() ? "" : " ") + f;
  return out;
}

}  // namespace imapstage::archive

// Finding an account or folder by the name a person typed (ls, cat, import, verify).
#pragma once

#include <string>

#include "archive-format/archive.h"

namespace imapstage::archive {

// The account called `name`; with `name` empty, the only account.
// Throws Error(not_found) listing the accounts there are.
AccountRecord resolve_account(const Archive& archive, const std::string& name);

// The folder whose UTF-8 or raw name is `name`. Throws Error(not_found).
FolderRecord resolve_folder(const Archive& archive, const AccountRecord& account,
                                     const std::string& name);

// "\\Seen \\Flagged $Label1" for a record's flags.
std::string flags_text(const MessageRecord& record);

}  // namespace imapstage::archive

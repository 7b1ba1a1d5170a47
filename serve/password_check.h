// Whether a user's password opens their mailbox on the old (source) server:
// the one check the login hook and the self-service page both make; and,
// when the target needs the user's own password, whether that one opens the
// mailbox on the target.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "serve/config.h"

namespace imapstage::serve {

enum class PasswordCheck {
  accepted,     // the source server let the user in
  refused,      // it answered that the credentials are wrong
  unavailable,  // anything else (server down, TLS, timeout, [UNAVAILABLE]): `why` says what
};

// Connects to the source profile's server, sends `id` (RFC 2971: the
// client's x-originating-ip/-port, so the server's per-IP penalties hit the
// user's address, not ours) when not empty, and logs in as `user` (LOGIN, or
// the profile's SASL mechanism; XOAUTH2 profiles check with LOGIN). The copy
// of the password made for the login is wiped; the session is dropped
// without LOGOUT (one round trip less per check).
PasswordCheck check_source_password(const ServeConfig& config, const std::string& user, const std::string& password,
                                    const std::vector<std::pair<std::string, std::string>>& id, std::string& why);

// The same check with the target profile's server (the mailbox's name there).
PasswordCheck check_target_password(const ServeConfig& config, const std::string& target_user,
                                    const std::string& password,
                                    const std::vector<std::pair<std::string, std::string>>& id, std::string& why);

}  // namespace imapstage::serve

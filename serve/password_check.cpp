#include "serve/password_check.h"

#include "common/aead.h"
#include "common/error.h"
#include "imap/session.h"

namespace imapstage::serve {

PasswordCheck check_source_password(const ServeConfig& config, const std::string& user, const std::string& password,
                                    const std::vector<std::pair<std::string, std::string>>& id, std::string& why) {
  try {
    const batch::Profile& source = config.source();
    auto session = imap::Session::connect(source.endpoint());
    if (!id.empty()) session->send_id(id);
    imap::Credentials credentials{user, password, source.mechanism, ""};
    if (credentials.mechanism == imap::AuthMechanism::xoauth2) credentials.mechanism = imap::AuthMechanism::login;
    try {
      session->login(credentials);
    } catch (...) {
      wipe(credentials.secret);
      throw;
    }
    wipe(credentials.secret);
    return PasswordCheck::accepted;
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::auth && e.retry() == Retry::never && e.message().rfind("authentication failed", 0) == 0)
      return PasswordCheck::refused;
    why = e.message();
    return PasswordCheck::unavailable;
  }
}

}  // namespace imapstage::serve

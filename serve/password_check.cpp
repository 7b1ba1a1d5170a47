#include "serve/password_check.h"

#include "common/aead.h"
#include "common/error.h"
#include "imap/session.h"

namespace imapstage::serve {

namespace {

PasswordCheck check_with(const batch::Profile& source, const std::string& user, const std::string& password,
                         const std::vector<std::pair<std::string, std::string>>& id, std::string& why) {
  try {
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

}  // namespace

PasswordCheck check_source_password(const ServeConfig& config, const std::string& user, const std::string& password,
                                    const std::vector<std::pair<std::string, std::string>>& id, std::string& why) {
  try {
    config.source();
  } catch (const Error& e) {
    why = e.message();
    return PasswordCheck::unavailable;
  }
  return check_with(config.source(), user, password, id, why);
}

PasswordCheck check_target_password(const ServeConfig& config, const std::string& target_user,
                                    const std::string& password,
                                    const std::vector<std::pair<std::string, std::string>>& id, std::string& why) {
  try {
    config.target();
  } catch (const Error& e) {
    why = e.message();
    return PasswordCheck::unavailable;
  }
  return check_with(config.target(), target_user, password, id, why);
}

}  // namespace imapstage::serve

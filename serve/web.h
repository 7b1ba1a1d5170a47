// The web pages of `imapstage serve` (cpp-httplib, in the daemon's process):
// the self-service page an invitation link (serve/invites.h) opens. It shows
// which mailbox moves where, asks for the old password, checks it with the
// source server (attempts limited per link and per client address), queues
// the job through the daemon (its vault seals the password) and sends the
// browser to a status page that refreshes itself until the job is done.
// When the target profile needs the user's own password (auth "user"
// without a password source), the page asks for that one too and checks it
// with the target before accepting. Behind a login, the console
// (serve/web_console.cpp) shows and acts on every job.
//
// HTTPS with [web] tls_cert/tls_key; plain HTTP only when `listen` is a
// loopback address, and then every page says so. Every answer carries a
// Content-Security-Policy without scripts, `Cache-Control: no-store`,
// `Referrer-Policy: no-referrer` (the links hold tokens) and nosniff; forms
// carry a CSRF token bound to the link. No password is in a URL, a cookie
// (there are none), an event or a state file; invitation tokens are not
// logged either.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/aead.h"
#include "common/events.h"
#include "serve/config.h"
#include "serve/control.h"
#include "serve/daemon.h"
#include "serve/invites.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace imapstage::serve {

class WebServer {
 public:
  // Refuses (Error(usage)) a non-loopback `listen` without a certificate,
  // and a certificate that does not load.
  WebServer(const ServeConfig& config, Daemon& daemon, EventSink& events);
  ~WebServer();  // stops serving and waits for the listener
  WebServer(const WebServer&) = delete;
  WebServer& operator=(const WebServer&) = delete;

  // Binds `listen` and serves on a thread. Throws Error(network) when the
  // address cannot be bound.
  void start();
  std::string base_url() const { return base_url_; }

  // The control request the daemon hands over (Daemon::set_extension):
  // {"op": "invite", "users": [{"user", "target_user"?}...], "ttl"?: seconds}
  // -> {"ok", "invites": [{"user", "target_user", "link", "expires"}]}.
  nlohmann::json handle_control(const nlohmann::json& request, const Peer& peer);

 private:
  enum class Check { accepted, refused, unavailable };
  void routes();
  void invite_page(const httplib::Request& req, httplib::Response& res, const std::string& error);
  void invite_post(const httplib::Request& req, httplib::Response& res);
  void status_page(const httplib::Request& req, httplib::Response& res);
  // The console (serve/web_console.cpp): /admin/login, /admin/logout, /admin (jobs, totals, plots,
  // ?state=), /admin/invite, /admin/job/N (POST retry|cancel|reverify), /admin/job/N.json|.csv,
  // /admin/job/N.manifest.json|.manifest.sig.
  void admin_routes();
  // The session of the request's cookie (its hash), empty when it has none that is valid.
  std::string admin_session(const httplib::Request& req);
  std::string admin_csrf(const std::string& session) const;
  // New links for `users` (user, target_user), valid `ttl`:
  // [{"user", "target_user", "link", "expires"}...]. Throws Error(usage) for a bad name.
  nlohmann::json create_invites(const nlohmann::json& users, std::chrono::seconds ttl);
  Check check_password(const std::string& user, const std::string& password, const std::string& client,
                       std::string& why);
  Check check_target_password(const std::string& target_user, const std::string& password,
                              const std::string& client, std::string& why);
  std::string csrf_for(const Invite& invite) const;
  // Counts one attempt; false when the link or the address is over its limit (an empty
  // `link_hash`: only the address's limit, as for console logins).
  bool allow_attempt(const std::string& link_hash, const std::string& client);
  // A whole page; `wide` for the console's tables.
  std::string page(const std::string& title, const std::string& body, int refresh = 0, bool wide = false) const;
  // A job's progress while it runs (step, folders, messages, bytes, rate, ETA) as a <dl>'s rows; "" when none.
  static std::string progress_rows(const nlohmann::json& job);

  const ServeConfig& config_;
  Daemon& daemon_;
  EventSink& events_;
  InviteStore invites_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  bool tls_ = false;
  std::string host_;
  int port_ = 0;
  std::string base_url_;
  std::string secret_;  // random per start: the CSRF tokens' key
  std::mutex accept_mutex_;  // one acceptance at a time: a link queues at most one job
  std::mutex limit_mutex_;
  std::map<std::string, std::deque<double>> link_attempts_, ip_attempts_;
  SecretString admin_token_;                 // empty: no console
  std::map<std::string, double> sessions_;   // SHA-256 of a session id -> expiry (under limit_mutex_)
  std::mutex manifest_mutex_;                // one manifest computed at a time
  std::map<uint64_t, std::string> manifests_;  // the latest manifest given per job: its signature signs it
};

}  // namespace imapstage::serve

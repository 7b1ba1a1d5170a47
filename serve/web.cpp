#include "serve/web.h"

#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <fstream>

#include <fmt/format.h>
#include <httplib.h>

#include "archive-format/hash.h"
#include "common/aead.h"
#include "common/error.h"
#include "imap/session.h"
#include "serve/jobs.h"
#include "serve/password_check.h"
#include "serve/web_html.h"

namespace imapstage::serve {

using html::esc;
using html::same;
using html::size_text;
using html::when;

namespace {

// The one stylesheet, compiled in (no CDN, no script).
const char* kStyle = R"(body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.4em}.box{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0}
.error{background:#fde8e8;border-color:#e0a0a0}.ok{background:#e8f6e8;border-color:#9c9}
.warn{background:#fff6d8;border-color:#e0c060;font-size:.9em}label{display:block;margin:.5em 0 .2em}
input[type=password]{width:100%;padding:.4em;font-size:1em}button{margin-top:1em;padding:.5em 1.5em;font-size:1em}
dl{display:grid;grid-template-columns:max-content auto;gap:.3em 1em}dt{font-weight:bold}
body.wide{max-width:76em}table{border-collapse:collapse;margin:1em 0;font-size:.92em}
td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
form.inline{display:inline-block;margin-right:.5em}textarea{width:100%;font-family:monospace}
.plots{display:flex;flex-wrap:wrap;gap:2em}.note{color:#666;font-size:.9em}
nav{display:flex;gap:1em;align-items:center}nav form{margin:0}nav button{margin:0;padding:.2em .8em})";

const char* kCsp =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'";

bool loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

}  // namespace

WebServer::WebServer(const ServeConfig& config, Daemon& daemon, EventSink& events)
    : config_(config), daemon_(daemon), events_(events), invites_(config.state_dir), secret_(random_bytes(32)) {
  const std::string& listen = config_.web.listen;
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw Error(ErrorKind::usage, "[web] listen must be HOST:PORT, not " + listen);
  host_ = listen.substr(0, colon);
  if (host_.size() > 2 && host_.front() == '[' && host_.back() == ']') host_ = host_.substr(1, host_.size() - 2);
  try {
    port_ = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    port_ = -1;
  }
  if (port_ < 0 || port_ > 65535) throw Error(ErrorKind::usage, "[web] listen: bad port in " + listen);
  tls_ = !config_.web.tls_cert.empty();
  if (!tls_ && !loopback(host_))
    throw Error(ErrorKind::usage, fmt::format("[web] listen {} is not a loopback address: give tls_cert and tls_key "
                                              "(plain HTTP is served only on loopback)",
                                              listen));
  if (tls_) {
    auto ssl = std::make_unique<httplib::SSLServer>(config_.web.tls_cert.c_str(), config_.web.tls_key.c_str());
    if (!ssl->is_valid())
      throw Error(ErrorKind::usage, "[web] the certificate or its key does not load", Retry::never,
                  {.file = config_.web.tls_cert.string()});
    server_ = std::move(ssl);
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  if (!config_.web.admin_token_file.empty()) {
    std::ifstream in(config_.web.admin_token_file);
    std::string line;
    if (!in || !std::getline(in, line))
      throw Error(ErrorKind::usage, "[web] cannot read admin_token_file", Retry::never,
                  {.file = config_.web.admin_token_file.string()});
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.size() < 16)
      throw Error(ErrorKind::usage, "[web] the admin token must be at least 16 characters", Retry::never,
                  {.file = config_.web.admin_token_file.string()});
    admin_token_ = SecretString(line);
    wipe(line);
  }
  routes();
  admin_routes();
}

WebServer::~WebServer() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void WebServer::start() {
  if (port_ == 0) {
    port_ = server_->bind_to_any_port(host_);
    if (port_ <= 0) throw Error(ErrorKind::network, "[web] cannot bind " + config_.web.listen, Retry::later);
  } else if (!server_->bind_to_port(host_, port_)) {
    throw Error(ErrorKind::network, "[web] cannot bind " + config_.web.listen + " (in use?)", Retry::later);
  }
  std::string shown = host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_;
  base_url_ = config_.web.base_url.empty() ? fmt::format("{}://{}:{}", tls_ ? "https" : "http", shown, port_)
                                           : config_.web.base_url;
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  events_.emit({{"event", "web_start"}, {"url", base_url_}, {"tls", tls_}, {"port", port_},
                {"text", fmt::format("web pages on {}:{} ({}), links as {}", shown, port_,
                                     tls_ ? "HTTPS" : "plain HTTP on loopback", base_url_)}});
}

std::string WebServer::csrf_for(const Invite& invite) const {
  return archive::to_hex(archive::sha256(secret_ + "csrf " + invite.hash));
}

bool WebServer::allow_attempt(const std::string& link_hash, const std::string& client) {
  std::lock_guard lock(limit_mutex_);
  double now = now_seconds(), since = now - double(config_.web.attempts_window.count());
  std::deque<double> none;
  auto& link = link_hash.empty() ? none : link_attempts_[link_hash];
  auto& ip = ip_attempts_[client];
  for (auto* q : {&link, &ip})
    while (!q->empty() && q->front() < since) q->pop_front();
  if (link.size() >= size_t(config_.web.attempts_per_link) || ip.size() >= size_t(config_.web.attempts_per_ip))
    return false;
  link.push_back(now);
  ip.push_back(now);
  return true;
}

std::string WebServer::page(const std::string& title, const std::string& body, int refresh, bool wide) const {
  std::string head = refresh > 0 ? fmt::format("<meta http-equiv=\"refresh\" content=\"{}\">", refresh) : "";
  std::string plain = tls_ ? ""
                           : "<p class=\"box warn\" id=\"plain-http\">This page is served over plain HTTP on the "
                             "loopback interface only; it is not reachable from other machines.</p>";
  return fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
      "content=\"width=device-width\">{}<title>{}</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head>"
      "<body{}><h1>{}</h1>{}{}</body></html>\n",
      head, esc(title), wide ? " class=\"wide\"" : "", esc(title), plain, body);
}

void WebServer::routes() {
  httplib::Headers headers = {{"Content-Security-Policy", kCsp},
                              {"X-Content-Type-Options", "nosniff"},
                              {"Referrer-Policy", "no-referrer"},
                              {"X-Frame-Options", "DENY"},
                              {"Cache-Control", "no-store"}};
  if (tls_) headers.insert({"Strict-Transport-Security", "max-age=31536000"});
  server_->set_default_headers(headers);
  server_->set_payload_max_length(64 * 1024);
  server_->set_read_timeout(10);
  server_->Get("/static/style.css", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kStyle, "text/css; charset=utf-8");
  });
  server_->Get("/", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(page("Mailbox migration", "<p>Open the link from your invitation to move your mailbox.</p>"),
                    "text/html; charset=utf-8");
  });
  server_->Get(R"(/i/([0-9a-f]{64}))",
               [this](const httplib::Request& q, httplib::Response& r) { invite_page(q, r, ""); });
  server_->Post(R"(/i/([0-9a-f]{64}))", [this](const httplib::Request& q, httplib::Response& r) { invite_post(q, r); });
  server_->Get(R"(/s/([0-9a-f]{64}))", [this](const httplib::Request& q, httplib::Response& r) { status_page(q, r); });
  // A handler's failure is a 500 page and an event, never the exception's text in a header.
  server_->set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    // Not the path: it may hold a link's token.
    events_.emit({{"event", "web_error"}, {"method", req.method}, {"error", what},
                  {"text", "web: a page failed: " + what}});
    res.status = 500;
    res.set_content(page("Something went wrong", "<p class=\"box error\" id=\"refusal\">This page failed; the "
                                                 "administrator can see why in the daemon's log.</p>"),
                    "text/html; charset=utf-8");
  });
  server_->set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404)
      res.set_content(page("Not found", "<p class=\"box error\">There is nothing at this address. Check that the "
                                        "link was copied completely.</p>"),
                      "text/html; charset=utf-8");
  });
}

// The page for a link that cannot be used; sets the status.
static void refused(httplib::Response& res, int status, const std::string& html) {
  res.status = status;
  res.set_content(html, "text/html; charset=utf-8");
}

void WebServer::invite_page(const httplib::Request& req, httplib::Response& res, const std::string& error) {
  std::string token = req.matches[1];
  auto invite = invites_.find(token);
  if (!invite)
    return refused(res, 404, page("Unknown invitation", "<p class=\"box error\" id=\"refusal\">This invitation link "
                                                         "is not valid. Check that it was copied completely, or ask "
                                                         "your administrator for a new one.</p>"));
  if (invite->used)
    return refused(res, 410, page("Invitation already used",
                                  fmt::format("<p class=\"box error\" id=\"refusal\">This invitation was already used "
                                              "on {}: the move of {} is under way. Use the status page you were "
                                              "sent to then, or ask your administrator.</p>",
                                              when(invite->used), esc(invite->user))));
  if (now_seconds() >= invite->expires)
    return refused(res, 410, page("Invitation expired",
                                  fmt::format("<p class=\"box error\" id=\"refusal\">This invitation expired on {}. "
                                              "Ask your administrator for a new one.</p>",
                                              when(invite->expires))));
  const auto& s = config_.source();
  const auto& t = config_.target();
  std::string target_field =
      config_.target_wants_user_password()
          ? fmt::format("<label for=\"new_password\">Your password on the new server ({}, as {})</label><input "
                        "type=\"password\" id=\"new_password\" name=\"new_password\" required>",
                        esc(t.endpoint().host), esc(invite->target_user))
          : "";
  std::string body = fmt::format(
      "<div class=\"box\"><dl><dt>Mailbox</dt><dd id=\"user\">{}</dd><dt>From</dt><dd>{}</dd><dt>To</dt><dd>{} on "
      "{}</dd><dt>Link valid until</dt><dd>{}</dd></dl></div>{}"
      "<form method=\"post\" action=\"/i/{}\" autocomplete=\"off\"><input type=\"hidden\" name=\"csrf\" "
      "value=\"{}\"><label for=\"password\">Your current password (on {})</label><input type=\"password\" "
      "id=\"password\" name=\"password\" required autofocus>{}<button type=\"submit\" id=\"submit\">Move my "
      "mailbox</button></form><p>Your password is checked with {} and kept encrypted only until your mail is "
      "moved.</p>",
      esc(invite->user), esc(s.endpoint().host), esc(invite->target_user), esc(t.endpoint().host),
      when(invite->expires), error.empty() ? "" : "<p class=\"box error\" id=\"error\">" + esc(error) + "</p>",
      token, csrf_for(*invite), esc(s.endpoint().host), target_field,
      esc(s.endpoint().host) + (target_field.empty() ? "" : " (the new one with " + esc(t.endpoint().host) + ")"));
  res.set_content(page("Move your mailbox", body), "text/html; charset=utf-8");
}

WebServer::Check WebServer::check_password(const std::string& user, const std::string& password,
                                           const std::string& client, std::string& why) {
  std::vector<std::pair<std::string, std::string>> id;
  if (!client.empty()) id.push_back({"x-originating-ip", client});
  switch (check_source_password(config_, user, password, id, why)) {
    case PasswordCheck::accepted: return Check::accepted;
    case PasswordCheck::refused: return Check::refused;
    case PasswordCheck::unavailable: break;
  }
  return Check::unavailable;
}

WebServer::Check WebServer::check_target_password(const std::string& target_user, const std::string& password,
                                                  const std::string& client, std::string& why) {
  std::vector<std::pair<std::string, std::string>> id;
  if (!client.empty()) id.push_back({"x-originating-ip", client});
  switch (serve::check_target_password(config_, target_user, password, id, why)) {
    case PasswordCheck::accepted: return Check::accepted;
    case PasswordCheck::refused: return Check::refused;
    case PasswordCheck::unavailable: break;
  }
  return Check::unavailable;
}

void WebServer::invite_post(const httplib::Request& req, httplib::Response& res) {
  std::string token = req.matches[1];
  std::string client = req.remote_addr;
  SecretString password(req.has_param("password") ? req.get_param_value("password") : "");
  SecretString new_password(req.has_param("new_password") ? req.get_param_value("new_password") : "");
  std::string csrf = req.has_param("csrf") ? req.get_param_value("csrf") : "";
  // httplib keeps the parsed form and the body: overwrite them once read.
  auto& mreq = const_cast<httplib::Request&>(req);
  wipe(mreq.body);
  for (auto& [k, v] : mreq.params) wipe(v);
  auto invite = invites_.find(token);
  if (!invite || invite->used || now_seconds() >= invite->expires) return invite_page(req, res, "");
  if (csrf.empty() || !same(csrf, csrf_for(*invite))) {
    events_.emit({{"event", "web_refused"}, {"user", invite->user}, {"reason", "csrf"}, {"client", client},
                  {"text", fmt::format("web: a form for {} without a valid CSRF token from {}, refused", invite->user,
                                       client)}});
    return refused(res, 403, page("Form refused", "<p class=\"box error\" id=\"refusal\">This form was not sent from "
                                                  "the invitation page. Open your invitation link again.</p>"));
  }
  if (!allow_attempt(invite->hash, client)) {
    events_.emit({{"event", "web_refused"}, {"user", invite->user}, {"reason", "rate"}, {"client", client},
                  {"text", fmt::format("web: too many attempts for {} or from {}", invite->user, client)}});
    res.set_header("Retry-After", std::to_string(config_.web.attempts_window.count()));
    return refused(res, 429, page("Too many attempts", fmt::format("<p class=\"box error\" id=\"refusal\">Too many "
                                                                   "password attempts. Try again in {} minutes.</p>",
                                                                   (config_.web.attempts_window.count() + 59) / 60)));
  }
  std::string why;
  Check check = password.get().empty() ? Check::refused : check_password(invite->user, password.get(), client, why);
  if (check != Check::accepted) {
    if (check == Check::refused) invites_.failed(token);
    events_.emit({{"event", "web_refused"}, {"user", invite->user},
                  {"reason", check == Check::refused ? "password" : "unavailable"}, {"client", client},
                  {"text", check == Check::refused
                               ? fmt::format("web: the old server refused the password of {} (from {})", invite->user,
                                             client)
                               : fmt::format("web: cannot check the password of {}: {}", invite->user, why)}});
    res.status = check == Check::refused ? 422 : 503;
    return invite_page(req, res,
                       check == Check::refused
                           ? "The old server refused this password. Check it and try again."
                           : "The old server cannot check passwords just now. Try again in a few minutes.");
  }
  if (config_.target_wants_user_password()) {
    check = new_password.get().empty() ? Check::refused
                                       : check_target_password(invite->target_user, new_password.get(), client, why);
    if (check != Check::accepted) {
      if (check == Check::refused) invites_.failed(token);
      events_.emit({{"event", "web_refused"}, {"user", invite->user},
                    {"reason", check == Check::refused ? "target_password" : "target_unavailable"},
                    {"client", client},
                    {"text", check == Check::refused
                                 ? fmt::format("web: the new server refused the password of {} (from {})",
                                               invite->target_user, client)
                                 : fmt::format("web: cannot check the new password of {}: {}", invite->target_user,
                                               why)}});
      res.status = check == Check::refused ? 422 : 503;
      return invite_page(req, res,
                         check == Check::refused
                             ? "The old password is right, but the new server refused the new password. Check "
                               "it and try again."
                             : "The new server cannot check passwords just now. Try again in a few minutes.");
    }
  }
  std::lock_guard lock(accept_mutex_);
  invite = invites_.find(token);
  if (!invite || invite->used || now_seconds() >= invite->expires) return invite_page(req, res, "");
  nlohmann::json reply;
  try {
    nlohmann::json request = {{"op", "web"}, {"user", invite->user}, {"target_user", invite->target_user},
                               {"password", password.get()}};
    if (config_.target_wants_user_password()) request["target_password"] = new_password.get();
    try {
      reply = daemon_.handle(request, Peer{::geteuid(), ::getegid(), ::getpid()});
    } catch (...) {
      for (const char* key : {"password", "target_password"})
        if (request.contains(key)) wipe(request[key].get_ref<std::string&>());
      throw;
    }
    for (const char* key : {"password", "target_password"})
      if (request.contains(key)) wipe(request[key].get_ref<std::string&>());
  } catch (const Error& e) {
    events_.emit({{"event", "web_refused"}, {"user", invite->user}, {"reason", "queue"}, {"error", e.message()},
                  {"text", fmt::format("web: cannot queue {}: {}", invite->user, e.message())}});
    return refused(res, 409, page("Cannot start", fmt::format("<p class=\"box error\" id=\"refusal\">The move of {} "
                                                              "cannot be started here: {}. Ask your "
                                                              "administrator.</p>",
                                                              esc(invite->user), esc(e.message()))));
  }
  uint64_t job = reply.value("job", uint64_t{0});
  auto status = invites_.accept(token, job);
  if (!status) return invite_page(req, res, "");
  events_.emit({{"event", "web_accepted"}, {"user", invite->user}, {"job", job}, {"client", client},
                {"text", fmt::format("web: {} accepted the invitation (from {}), job {}", invite->user, client, job)}});
  res.status = 303;
  res.set_header("Location", "/s/" + *status);
  res.set_content(page("Accepted", "<p>Your mailbox is queued.</p>"), "text/html; charset=utf-8");
}

void WebServer::status_page(const httplib::Request& req, httplib::Response& res) {
  std::string token = req.matches[1];
  auto invite = invites_.find_status(token);
  if (!invite)
    return refused(res, 404, page("Unknown status page", "<p class=\"box error\" id=\"refusal\">There is no "
                                                         "migration at this address.</p>"));
  nlohmann::json job;
  try {
    job = daemon_.handle({{"op", "show"}, {"id", invite->job}}, Peer{::geteuid(), ::getegid(), ::getpid()})["job"];
  } catch (const Error&) {
    return refused(res, 404, page("Unknown status page", "<p class=\"box error\" id=\"refusal\">The migration "
                                                         "was removed.</p>"));
  }
  std::string status = job.value("status", ""), phase = job.value("phase", ""), shown, cls = "box";
  bool final = false;
  if (status == "queued") shown = "Queued: waiting for a free slot";
  else if (status == "running" && phase == "verify") shown = "Verifying: comparing every message";
  else if (status == "running") shown = phase == "import" ? "Copying: writing to the new server"
                                                          : "Copying: reading from the old server";
  else if (status == "waiting" && job.value("waiting_for", "") == "delta")
    shown = "Done; new mail will be copied once more later", cls = "box ok";
  else if (status == "waiting") shown = "Waiting to try again after a problem";
  else if (status == "done") shown = "Done", cls = "box ok", final = true;
  else if (status == "cancelled") shown = "Cancelled by the administrator", cls = "box error", final = true;
  else shown = "Failed: your administrator has been told", cls = "box error", final = true;
  std::string body = fmt::format(
      "<div class=\"{}\"><p id=\"status\" data-status=\"{}\">{}</p></div><div class=\"box\"><dl><dt>Mailbox</dt>"
      "<dd>{} &rarr; {}</dd>",
      cls, esc(status), esc(shown), esc(job.value("user", "")), esc(job.value("target_user", "")));
  // While a pass runs its progress says what moved; the totals are the latest pass's, once it ended.
  if (status == "running")
    body += progress_rows(job);
  else
    body += fmt::format("<dt>Messages read + written</dt><dd id=\"messages\">{}</dd><dt>Copied</dt><dd "
                        "id=\"bytes\">{}</dd>",
                        job.value("messages", uint64_t{0}), size_text(job.value("bytes", uint64_t{0})));
  if (job.contains("verify") && job["verify"].is_object()) {
    auto& v = job["verify"];
    body += fmt::format("<dt>Verified</dt><dd id=\"verify\">{}: {} folders, {} messages, {} differences ({})</dd>",
                        v.value("equal", false) ? "equal" : "not equal", v.value("folders", 0),
                        v.value("messages", 0), v.value("differences", 0),
                        v.value("deep", false) ? "every message's SHA-256" : "counts");
  }
  body += "</dl></div>";
  if (!final)
    body += fmt::format("<p>This page refreshes itself every {} seconds; you may close it.</p>", config_.web.refresh);
  res.set_content(page("Your mailbox", body, final ? 0 : config_.web.refresh), "text/html; charset=utf-8");
}

std::string WebServer::progress_rows(const nlohmann::json& job) {
  if (!job.contains("progress") || !job["progress"].is_object()) return "";
  const auto& p = job["progress"];
  std::string phase = p.value("phase", "");
  bool verify_only = job.value("verify_only", false);
  std::string step = phase == "export"   ? "1 of 3: reading from the old server"
                     : phase == "import" ? "2 of 3: writing to the new server"
                     : verify_only       ? "verifying again: comparing the new server with the copy"
                                         : "3 of 3: comparing the new server with the copy";
  std::string rows = fmt::format("<dt>Step</dt><dd id=\"step\" data-phase=\"{}\">{}</dd>", esc(phase), esc(step));
  if (phase != "export" && phase != "import") return rows;
  auto n = [&](const char* key) { return p.value(key, uint64_t{0}); };
  rows += fmt::format(
      "<dt>Folders done</dt><dd id=\"folders\">{} of {}</dd><dt>Messages</dt><dd id=\"progress-messages\">{} of "
      "{}</dd><dt>Bytes</dt><dd id=\"progress-bytes\">{} of {}</dd><dt>Speed</dt><dd id=\"rate\">{}</dd><dt>Time "
      "left in this step</dt><dd id=\"eta\">{}</dd>",
      n("folders_done"), n("folders"), n("messages"), n("messages_total"), size_text(n("bytes")),
      size_text(n("bytes_total")), html::rate_text(p.value("rate", 0.0)),
      p.value("eta", -1.0) < 0 ? std::string("estimating") : "about " + html::duration_text(p.value("eta", -1.0)));
  return rows;
}

nlohmann::json WebServer::create_invites(const nlohmann::json& list, std::chrono::seconds ttl) {
  std::vector<std::pair<std::string, std::string>> users;
  for (auto& u : list) {
    std::string user = u.is_object() ? u.value("user", "") : "";
    if (user.empty() || user.size() > 255 || user.find_first_of(std::string("\r\n\t\0 ,", 6)) != std::string::npos)
      throw Error(ErrorKind::usage, "a user name must be 1-255 bytes without spaces, commas or control characters");
    std::string target = u.value("target_user", "");
    if (target.size() > 255 || target.find_first_of(std::string("\r\n\t\0 ,", 6)) != std::string::npos)
      throw Error(ErrorKind::usage, "a user name must be 1-255 bytes without spaces, commas or control characters");
    users.push_back({user, target});
  }
  if (users.empty()) throw Error(ErrorKind::usage, "no user to invite");
  auto created = invites_.create(users, ttl);
  nlohmann::json out = nlohmann::json::array();
  for (auto& n : created)
    out.push_back({{"user", n.user}, {"target_user", n.target_user}, {"link", base_url_ + "/i/" + n.token},
                   {"expires", n.expires}});
  events_.emit({{"event", "invites_created"}, {"count", created.size()}, {"time", now_seconds()},
                {"text", fmt::format("{} invitations made, valid {} h", created.size(), ttl.count() / 3600)}});
  return out;
}

nlohmann::json WebServer::handle_control(const nlohmann::json& request, const Peer&) {
  if (request.value("op", "") != "invite") throw Error(ErrorKind::usage, "unknown request " + request.value("op", ""));
  if (!request.contains("users") || !request["users"].is_array())
    throw Error(ErrorKind::usage, "\"users\" must be an array of {\"user\", \"target_user\"}");
  std::chrono::seconds ttl = config_.web.invite_ttl;
  if (request.contains("ttl") && request["ttl"].is_number_unsigned()) ttl = std::chrono::seconds(request["ttl"].get<uint64_t>());
  return {{"ok", true}, {"invites", create_invites(request["users"], ttl)}};
}

}  // namespace imapstage::serve

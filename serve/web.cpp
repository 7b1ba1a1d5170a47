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

namespace imapstage::serve {

namespace {

// The one stylesheet, compiled in (no CDN, no script).
const char* kStyle = R"(body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.4em}.box{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0}
.error{background:#fde8e8;border-color:#e0a0a0}.ok{background:#e8f6e8;border-color:#9c9}
.warn{background:#fff6d8;border-color:#e0c060;font-size:.9em}label{display:block;margin:.5em 0 .2em}
input[type=password]{width:100%;padding:.4em;font-size:1em}button{margin-top:1em;padding:.5em 1.5em;font-size:1em}
dl{display:grid;grid-template-columns:max-content auto;gap:.3em 1em}dt{font-weight:bold})";

const char* kCsp =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'";

std::string esc(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

bool loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

std::string when(double t) {
  std::time_t s = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string size_text(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} bytes", bytes);
  if (bytes < 1024 * 1024) return fmt::format("{:.1f} KiB", bytes / 1024.0);
  if (bytes < 1024ull * 1024 * 1024) return fmt::format("{:.1f} MiB", bytes / 1048576.0);
  return fmt::format("{:.2f} GiB", bytes / 1073741824.0);
}

bool same(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
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
  auto& link = link_attempts_[link_hash];
  auto& ip = ip_attempts_[client];
  for (auto* q : {&link, &ip})
    while (!q->empty() && q->front() < since) q->pop_front();
  if (link.size() >= size_t(config_.web.attempts_per_link) || ip.size() >= size_t(config_.web.attempts_per_ip))
    return false;
  link.push_back(now);
  ip.push_back(now);
  return true;
}

std::string WebServer::page(const std::string& title, const std::string& body, int refresh) const {
  std::string head = refresh > 0 ? fmt::format("<meta http-equiv=\"refresh\" content=\"{}\">", refresh) : "";
  std::string plain = tls_ ? ""
                           : "<p class=\"box warn\" id=\"plain-http\">This page is served over plain HTTP on the "
                             "loopback interface only; it is not reachable from other machines.</p>";
  return fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
      "content=\"width=device-width\">{}<title>{}</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head>"
      "<body><h1>{}</h1>{}{}</body></html>\n",
      head, esc(title), esc(title), plain, body);
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
  std::string body = fmt::format(
      "<div class=\"box\"><dl><dt>Mailbox</dt><dd id=\"user\">{}</dd><dt>From</dt><dd>{}</dd><dt>To</dt><dd>{} on "
      "{}</dd><dt>Link valid until</dt><dd>{}</dd></dl></div>{}"
      "<form method=\"post\" action=\"/i/{}\" autocomplete=\"off\"><input type=\"hidden\" name=\"csrf\" "
      "value=\"{}\"><label for=\"password\">Your current password (on {})</label><input type=\"password\" "
      "id=\"password\" name=\"password\" required autofocus><button type=\"submit\" id=\"submit\">Move my "
      "mailbox</button></form><p>Your password is checked with {} and kept encrypted only until your mail is "
      "moved.</p>",
      esc(invite->user), esc(s.endpoint().host), esc(invite->target_user), esc(t.endpoint().host),
      when(invite->expires), error.empty() ? "" : "<p class=\"box error\" id=\"error\">" + esc(error) + "</p>",
      token, csrf_for(*invite), esc(s.endpoint().host), esc(s.endpoint().host));
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

void WebServer::invite_post(const httplib::Request& req, httplib::Response& res) {
  std::string token = req.matches[1];
  std::string client = req.remote_addr;
  SecretString password(req.has_param("password") ? req.get_param_value("password") : "");
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
  std::lock_guard lock(accept_mutex_);
  invite = invites_.find(token);
  if (!invite || invite->used || now_seconds() >= invite->expires) return invite_page(req, res, "");
  nlohmann::json reply;
  try {
    reply = daemon_.handle({{"op", "web"}, {"user", invite->user}, {"target_user", invite->target_user},
                            {"password", password.get()}},
                           Peer{::geteuid(), ::getegid(), ::getpid()});
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
      "<dd>{} &rarr; {}</dd><dt>Messages read + written</dt><dd id=\"messages\">{}</dd><dt>Copied</dt><dd id=\"bytes\">{}</dd>",
      cls, esc(status), esc(shown), esc(job.value("user", "")), esc(job.value("target_user", "")),
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

std::string WebServer::admin_session(const httplib::Request& req) {
  std::string cookie = req.get_header_value("Cookie");
  auto at = cookie.find("imapstage_admin=");
  if (at == std::string::npos) return "";
  std::string id = cookie.substr(at + 16, 64);
  if (id.size() != 64) return "";
  std::string h = token_hash(id);
  std::lock_guard lock(limit_mutex_);
  auto it = sessions_.find(h);
  if (it == sessions_.end() || it->second < now_seconds()) return "";
  return h;
}

void WebServer::admin_routes() {
  auto html = [](httplib::Response& res, const std::string& text) { res.set_content(text, "text/html; charset=utf-8"); };
  auto login_form = [this](const std::string& error) {
    return page("Migration console: log in",
                fmt::format("{}<form method=\"post\" action=\"/admin/login\"><input type=\"hidden\" name=\"csrf\" "
                            "value=\"{}\"><label for=\"token\">Administrator token</label><input type=\"password\" "
                            "id=\"token\" name=\"token\" required autofocus><button type=\"submit\" "
                            "id=\"login\">Log in</button></form>",
                            error.empty() ? "" : "<p class=\"box error\" id=\"error\">" + esc(error) + "</p>",
                            archive::to_hex(archive::sha256(secret_ + "login"))));
  };
  auto no_console = [this, html](httplib::Response& res) {
    res.status = 404;
    html(res, page("No console", "<p class=\"box error\" id=\"refusal\">The console is off (no [web] "
                                 "admin_token_file).</p>"));
  };
  // Sends a request without a session to the login page; returns the session.
  auto session_or_login = [this](const httplib::Request& req, httplib::Response& res) -> std::string {
    std::string s = admin_session(req);
    if (s.empty()) {
      res.status = 303;
      res.set_header("Location", "/admin/login");
    }
    return s;
  };
  auto admin_csrf = [this](const std::string& session) {
    return archive::to_hex(archive::sha256(secret_ + "admin " + session));
  };
  server_->Get("/admin/login", [=, this](const httplib::Request&, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    html(res, login_form(""));
  });
  server_->Post("/admin/login", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    SecretString token(req.has_param("token") ? req.get_param_value("token") : "");
    std::string csrf = req.has_param("csrf") ? req.get_param_value("csrf") : "";
    auto& mreq = const_cast<httplib::Request&>(req);
    wipe(mreq.body);
    for (auto& [k, v] : mreq.params) wipe(v);
    if (!same(csrf, archive::to_hex(archive::sha256(secret_ + "login")))) {
      res.status = 403;
      return html(res, page("Form refused", "<p class=\"box error\" id=\"refusal\">This form was not sent from the "
                                            "login page.</p>"));
    }
    if (!allow_attempt("admin " + req.remote_addr, req.remote_addr)) {
      res.status = 429;
      res.set_header("Retry-After", std::to_string(config_.web.attempts_window.count()));
      return html(res, page("Too many attempts", "<p class=\"box error\" id=\"refusal\">Too many attempts.</p>"));
    }
    if (!same(token_hash(token.get()), token_hash(admin_token_.get()))) {
      events_.emit({{"event", "web_refused"}, {"reason", "admin_login"}, {"client", req.remote_addr},
                    {"text", fmt::format("web: a wrong administrator token from {}", req.remote_addr)}});
      res.status = 401;
      return html(res, login_form("Wrong token."));
    }
    std::string id = new_token();
    {
      std::lock_guard lock(limit_mutex_);
      sessions_[token_hash(id)] = now_seconds() + 12 * 3600;
    }
    events_.emit({{"event", "web_admin_login"}, {"client", req.remote_addr},
                  {"text", fmt::format("web: administrator logged in from {}", req.remote_addr)}});
    res.set_header("Set-Cookie", fmt::format("imapstage_admin={}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=43200{}",
                                             id, tls_ ? "; Secure" : ""));
    res.status = 303;
    res.set_header("Location", "/admin");
  });
  server_->Get("/admin", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    if (session_or_login(req, res).empty()) return;
    auto list = daemon_.handle({{"op", "list"}}, Peer{::geteuid(), ::getegid(), ::getpid()});
    std::string filter = req.has_param("state") ? req.get_param_value("state") : "";
    static const std::vector<std::string> states = {"queued", "running", "waiting", "done", "error", "cancelled"};
    std::map<std::string, int> counts;
    uint64_t messages = 0, bytes = 0;
    for (auto& j : list["jobs"]) {
      ++counts[j.value("status", "")];
      messages += j.value("messages", uint64_t{0});
      bytes += j.value("bytes", uint64_t{0});
    }
    int most = 1;
    for (auto& [k, n] : counts) most = std::max(most, n);
    std::string svg = fmt::format("<svg id=\"by-state\" xmlns=\"http://www.w3.org/2000/svg\" width=\"420\" height=\"{}\" "
                                  "role=\"img\" aria-label=\"accounts by state\">",
                                  states.size() * 24 + 4);
    static const std::map<std::string, std::string> colours = {{"queued", "#999"},  {"running", "#37c"},
                                                               {"waiting", "#c90"}, {"done", "#393"},
                                                               {"error", "#c33"},   {"cancelled", "#666"}};
    for (size_t i = 0; i < states.size(); ++i) {
      int n = counts[states[i]];
      svg += fmt::format("<text x=\"0\" y=\"{}\" font-size=\"14\">{}</text><rect x=\"90\" y=\"{}\" width=\"{}\" "
                         "height=\"18\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"14\">{}</text>",
                         i * 24 + 17, states[i], i * 24 + 3, 280 * n / most, colours.at(states[i]),
                         95 + 280 * n / most, i * 24 + 17, n);
    }
    svg += "</svg>";
    std::string filters = "<p>Show: <a href=\"/admin\">all</a>";
    for (auto& st : states) filters += fmt::format(" &middot; <a href=\"/admin?state={0}\">{0} ({1})</a>", st, counts[st]);
    filters += "</p>";
    std::string rows;
    for (auto& j : list["jobs"]) {
      if (!filter.empty() && j.value("status", "") != filter) continue;
      std::string verify = "-";
      if (j["verify"].is_object())
        verify = j["verify"].value("equal", false) ? "equal" : fmt::format("{} differences", j["verify"].value("differences", 0));
      rows += fmt::format("<tr class=\"job\" data-user=\"{1}\" data-status=\"{3}\"><td><a href=\"/admin/job/{0}\">{0}</a></td>"
                          "<td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td></tr>",
                          j.value("id", 0), esc(j.value("user", "")), esc(j.value("target_user", "")),
                          esc(j.value("status", "")), j.value("messages", 0), size_text(j.value("bytes", uint64_t{0})),
                          esc(verify), esc(j.value("error", "")));
    }
    html(res, page("Migration console",
                   fmt::format("<p id=\"totals\">{} jobs, {} messages, {} copied</p>{}{}<table><tr><th>job</th><th>user"
                               "</th><th>target</th><th>status</th><th>messages</th><th>copied</th><th>verify</th>"
                               "<th>error</th></tr>{}</table>",
                               list["jobs"].size(), messages, size_text(bytes), svg, filters, rows),
                   config_.web.refresh * 2));
  });
  server_->Get(R"(/admin/job/([0-9]+))", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    std::string session = session_or_login(req, res);
    if (session.empty()) return;
    uint64_t id = std::stoull(std::string(req.matches[1]));
    nlohmann::json job;
    try {
      job = daemon_.handle({{"op", "show"}, {"id", id}}, Peer{::geteuid(), ::getegid(), ::getpid()})["job"];
    } catch (const Error&) {
      res.status = 404;
      return html(res, page("No such job", "<p class=\"box error\" id=\"refusal\">No such job.</p>"));
    }
    std::string forms;
    for (const char* op : {"retry", "cancel"})
      forms += fmt::format("<form method=\"post\" action=\"/admin/job/{}/{}\"><input type=\"hidden\" name=\"csrf\" "
                           "value=\"{}\"><button type=\"submit\" id=\"{}\">{}</button></form>",
                           id, op, admin_csrf(session), op, op);
    html(res, page(fmt::format("Job {}: {}", id, job.value("user", "")),
                   fmt::format("<pre id=\"job\">{}</pre>{}<p><a id=\"report\" href=\"/admin/job/{}.json\">Download the "
                               "report (JSON)</a></p>",
                               esc(job.dump(2)), forms, id)));
  });
  server_->Get(R"(/admin/job/([0-9]+)\.json)", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    if (session_or_login(req, res).empty()) return;
    uint64_t id = std::stoull(std::string(req.matches[1]));
    try {
      auto job = daemon_.handle({{"op", "show"}, {"id", id}}, Peer{::geteuid(), ::getegid(), ::getpid()})["job"];
      res.set_header("Content-Disposition", fmt::format("attachment; filename=\"job-{}.json\"", id));
      res.set_content(job.dump(2) + "\n", "application/json");
    } catch (const Error&) {
      res.status = 404;
    }
  });
  server_->Post(R"(/admin/job/([0-9]+)/(retry|cancel))", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    std::string session = admin_session(req);
    if (session.empty()) {
      res.status = 401;
      return html(res, page("Not logged in", "<p class=\"box error\" id=\"refusal\">Log in first: "
                                             "<a href=\"/admin/login\">log in</a>.</p>"));
    }
    std::string csrf = req.has_param("csrf") ? req.get_param_value("csrf") : "";
    if (!same(csrf, admin_csrf(session))) {
      res.status = 403;
      return html(res, page("Form refused", "<p class=\"box error\" id=\"refusal\">This form was not sent from "
                                            "the console.</p>"));
    }
    uint64_t id = std::stoull(std::string(req.matches[1]));
    std::string op = req.matches[2];
    try {
      daemon_.handle({{"op", op}, {"id", id}}, Peer{::geteuid(), ::getegid(), ::getpid()});
    } catch (const Error& e) {
      res.status = 409;
      return html(res, page("Refused", "<p class=\"box error\" id=\"refusal\">" + esc(e.message()) + "</p>"));
    }
    res.status = 303;
    res.set_header("Location", fmt::format("/admin/job/{}", id));
  });
}

nlohmann::json WebServer::handle_control(const nlohmann::json& request, const Peer&) {
  if (request.value("op", "") != "invite") throw Error(ErrorKind::usage, "unknown request " + request.value("op", ""));
  if (!request.contains("users") || !request["users"].is_array())
    throw Error(ErrorKind::usage, "\"users\" must be an array of {\"user\", \"target_user\"}");
  std::vector<std::pair<std::string, std::string>> users;
  for (auto& u : request["users"]) {
    std::string user = u.is_object() ? u.value("user", "") : "";
    if (user.empty() || user.size() > 255 || user.find_first_of(std::string("\r\n\t\0 ,", 6)) != std::string::npos)
      throw Error(ErrorKind::usage, "a user name must be 1-255 bytes without spaces, commas or control characters");
    users.push_back({user, u.value("target_user", "")});
  }
  std::chrono::seconds ttl = config_.web.invite_ttl;
  if (request.contains("ttl") && request["ttl"].is_number_unsigned()) ttl = std::chrono::seconds(request["ttl"].get<uint64_t>());
  auto created = invites_.create(users, ttl);
  nlohmann::json out = nlohmann::json::array();
  for (auto& n : created)
    out.push_back({{"user", n.user}, {"target_user", n.target_user}, {"link", base_url_ + "/i/" + n.token},
                   {"expires", n.expires}});
  events_.emit({{"event", "invites_created"}, {"count", created.size()}, {"time", now_seconds()},
                {"text", fmt::format("{} invitations made, valid {} h", created.size(), ttl.count() / 3600)}});
  return {{"ok", true}, {"invites", out}};
}

}  // namespace imapstage::serve

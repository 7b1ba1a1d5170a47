// The console of `imapstage serve`'s web pages: behind a login with the
// administrator token, every job with totals, plots, the history of each
// account, its actions (retry, cancel, verify again), its reports (JSON, CSV)
// and its manifest (signed when [web] manifest_key is set), invitations and
// logout. Every action is a POST with a CSRF token bound to the session.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>

#include "archive-format/hash.h"
#include "common/aead.h"
#include "common/error.h"
#include "serve/svg.h"
#include "serve/web.h"
#include "serve/web_html.h"
#include "verify/signing.h"

namespace imapstage::serve {

using html::esc;
using html::same;
using html::size_text;
using html::when;

namespace {

const std::vector<std::string> kStates = {"queued", "running", "waiting", "done", "error", "cancelled"};
const std::map<std::string, std::string> kColours = {{"queued", "#999"}, {"running", "#37c"}, {"waiting", "#c90"},
                                                     {"done", "#393"},   {"error", "#c33"},   {"cancelled", "#666"}};

Peer self() { return Peer{::geteuid(), ::getegid(), ::getpid()}; }

void html_out(httplib::Response& res, const std::string& text) { res.set_content(text, "text/html; charset=utf-8"); }

std::string verify_text(const nlohmann::json& v) {
  if (!v.is_object()) return "-";
  if (v.value("equal", false))
    return fmt::format("equal: {} folders, {} messages ({})", v.value("folders", 0), v.value("messages", 0),
                       v.value("deep", false) ? "every message's SHA-256" : "counts");
  return fmt::format("NOT equal: {} differences", v.value("differences", 0));
}

std::string number(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].dump() : "";
}

// The job as CSV: a "job" row, one "run" row per attempt of its history
// and one "problem" row per problem an attempt reported (folder, UID).
std::string csv_report(const nlohmann::json& job) {
  using html::csv;
  std::string out =
      "record,job,user,target_user,attempt,pass,kind,started,finished,status,messages,bytes,verify_equal,"
      "verify_folders,verify_messages,verify_differences,folder,uid,error_kind,error\r\n";
  auto verify_cols = [](const nlohmann::json& v) {
    if (!v.is_object()) return std::string(",,,");
    return fmt::format("{},{},{},{}", v.value("equal", false) ? "true" : "false", number(v, "folders"),
                       number(v, "messages"), number(v, "differences"));
  };
  std::string id = number(job, "id"), user = csv(job.value("user", "")), target = csv(job.value("target_user", ""));
  out += fmt::format("job,{},{},{},{},{},,{},{},{},{},{},{},,,{},{}\r\n", id, user, target, number(job, "attempts"),
                     number(job, "passes"), number(job, "started"), number(job, "finished"),
                     csv(job.value("status", "")), number(job, "messages"), number(job, "bytes"),
                     verify_cols(job.value("verify", nlohmann::json())), csv(job.value("error_kind", "")),
                     csv(job.value("error", "")));
  if (job.contains("runs") && job["runs"].is_array()) {
    for (auto& r : job["runs"]) {
      out += fmt::format("run,{},{},{},{},{},{},{},{},{},{},{},{},,,{},{}\r\n", id, user, target, number(r, "attempt"),
                         number(r, "pass"), csv(r.value("kind", "")), number(r, "started"), number(r, "finished"),
                         csv(r.value("status", "")), number(r, "messages"), number(r, "bytes"),
                         verify_cols(r.value("verify", nlohmann::json())), csv(r.value("error_kind", "")),
                         csv(r.value("error", "")));
      if (r.contains("problems") && r["problems"].is_array())
        for (auto& p : r["problems"])
          out += fmt::format("problem,{},{},{},{},{},{},,,,,,,,,,{},{},{},{}\r\n", id, user, target,
                             number(r, "attempt"), number(r, "pass"), csv(p.value("phase", "")),
                             csv(p.value("folder", "")), number(p, "uid"), csv(p.value("event", "")),
                             csv(p.value("text", "")));
    }
  }
  return out;
}

// Cumulative (time, bytes) samples to (time, bytes/s) between them.
std::vector<std::pair<double, double>> rates_of(const nlohmann::json& samples) {
  std::vector<std::pair<double, double>> out;
  if (!samples.is_array()) return out;
  for (size_t i = 1; i < samples.size(); ++i) {
    double t0 = samples[i - 1][0].get<double>(), t1 = samples[i][0].get<double>();
    double b0 = samples[i - 1][1].get<double>(), b1 = samples[i][1].get<double>();
    if (t1 > t0) out.push_back({t1, std::max(0.0, (b1 - b0) / (t1 - t0))});
  }
  return out;
}

std::string progress_cell(const nlohmann::json& j) {
  if (!j.contains("progress") || !j["progress"].is_object()) return "";
  const auto& p = j["progress"];
  std::string phase = p.value("phase", "");
  if (phase != "export" && phase != "import") return esc(phase);
  uint64_t total = p.value("bytes_total", uint64_t{0}), done = p.value("bytes", uint64_t{0});
  double eta = p.value("eta", -1.0);
  return fmt::format("{} {}/{} folders, {}%, {}, {} left", esc(phase), p.value("folders_done", 0), p.value("folders", 0),
                     total ? std::min<uint64_t>(100, done * 100 / total) : 0, html::rate_text(p.value("rate", 0.0)),
                     eta < 0 ? std::string("time") : html::duration_text(eta));
}

}  // namespace

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

std::string WebServer::admin_csrf(const std::string& session) const {
  return archive::to_hex(archive::sha256(secret_ + "admin " + session));
}

void WebServer::admin_routes() {
  auto login_form = [this](const std::string& error) {
    return page("Migration console: log in",
                fmt::format("{}<form method=\"post\" action=\"/admin/login\"><input type=\"hidden\" name=\"csrf\" "
                            "value=\"{}\"><label for=\"token\">Administrator token</label><input type=\"password\" "
                            "id=\"token\" name=\"token\" required autofocus><button type=\"submit\" "
                            "id=\"login\">Log in</button></form>",
                            error.empty() ? "" : "<p class=\"box error\" id=\"error\">" + esc(error) + "</p>",
                            archive::to_hex(archive::sha256(secret_ + "login"))));
  };
  auto no_console = [this](httplib::Response& res) {
    res.status = 404;
    html_out(res, page("No console", "<p class=\"box error\" id=\"refusal\">The console is off (no [web] "
                                     "admin_token_file).</p>"));
  };
  // Sends a page request without a session to the login page; returns the session.
  auto session_or_login = [this](const httplib::Request& req, httplib::Response& res) -> std::string {
    std::string s = admin_session(req);
    if (s.empty()) {
      res.status = 303;
      res.set_header("Location", "/admin/login");
    }
    return s;
  };
  // The session of an action (a POST): 401 without one, 403 without the session's CSRF token.
  auto action_session = [this](const httplib::Request& req, httplib::Response& res) -> std::string {
    std::string session = admin_session(req);
    if (session.empty()) {
      res.status = 401;
      html_out(res, page("Not logged in", "<p class=\"box error\" id=\"refusal\">Log in first: "
                                          "<a href=\"/admin/login\">log in</a>.</p>"));
      return "";
    }
    std::string csrf = req.has_param("csrf") ? req.get_param_value("csrf") : "";
    if (!same(csrf, admin_csrf(session))) {
      res.status = 403;
      html_out(res, page("Form refused", "<p class=\"box error\" id=\"refusal\">This form was not sent from "
                                         "the console.</p>"));
      return "";
    }
    return session;
  };
  auto nav = [this](const std::string& session) {
    return fmt::format("<nav><a href=\"/admin\">All jobs</a><form method=\"post\" action=\"/admin/logout\"><input "
                       "type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" id=\"logout\">Log "
                       "out</button></form></nav>",
                       admin_csrf(session));
  };
  auto job_id = [](const httplib::Request& req) { return std::stoull(std::string(req.matches[1])); };
  auto show = [this](uint64_t id) -> std::optional<nlohmann::json> {
    try {
      return daemon_.handle({{"op", "show"}, {"id", id}}, self())["job"];
    } catch (const Error&) {
      return std::nullopt;
    }
  };

  server_->Get("/admin/login", [=, this](const httplib::Request&, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    html_out(res, login_form(""));
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
      return html_out(res, page("Form refused", "<p class=\"box error\" id=\"refusal\">This form was not sent from "
                                                "the login page.</p>"));
    }
    if (!allow_attempt("", req.remote_addr)) {
      res.status = 429;
      res.set_header("Retry-After", std::to_string(config_.web.attempts_window.count()));
      return html_out(res, page("Too many attempts", "<p class=\"box error\" id=\"refusal\">Too many attempts.</p>"));
    }
    if (!same(token_hash(token.get()), token_hash(admin_token_.get()))) {
      events_.emit({{"event", "web_refused"}, {"reason", "admin_login"}, {"client", req.remote_addr},
                    {"text", fmt::format("web: a wrong administrator token from {}", req.remote_addr)}});
      res.status = 401;
      return html_out(res, login_form("Wrong token."));
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
  server_->Post("/admin/logout", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    std::string session = action_session(req, res);
    if (session.empty()) return;
    {
      std::lock_guard lock(limit_mutex_);
      sessions_.erase(session);
    }
    events_.emit({{"event", "web_admin_logout"}, {"client", req.remote_addr},
                  {"text", fmt::format("web: administrator logged out from {}", req.remote_addr)}});
    res.set_header("Set-Cookie", fmt::format("imapstage_admin=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0{}",
                                             tls_ ? "; Secure" : ""));
    res.status = 303;
    res.set_header("Location", "/admin/login");
  });

  server_->Get("/admin", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    std::string session = session_or_login(req, res);
    if (session.empty()) return;
    auto list = daemon_.handle({{"op", "list"}}, self());
    std::string filter = req.has_param("state") ? req.get_param_value("state") : "";
    std::map<std::string, int> counts;
    struct Origin {
      int accounts = 0, done = 0, error = 0;
      uint64_t messages = 0, bytes = 0;
    };
    std::map<std::string, Origin> origins;
    uint64_t messages = 0, bytes = 0, remaining = 0;
    double rates = 0;
    for (auto& j : list["jobs"]) {
      std::string st = j.value("status", "");
      ++counts[st];
      messages += j.value("messages", uint64_t{0});
      bytes += j.value("bytes", uint64_t{0});
      auto& o = origins[j.value("origin", "")];
      ++o.accounts;
      o.done += st == "done";
      o.error += st == "error";
      o.messages += j.value("messages", uint64_t{0});
      o.bytes += j.value("bytes", uint64_t{0});
      if (j.contains("progress") && j["progress"].is_object()) {
        auto& p = j["progress"];
        uint64_t total = p.value("bytes_total", uint64_t{0}), done = p.value("bytes", uint64_t{0});
        if (total > done) remaining += total - done;
        rates += p.value("rate", 0.0);
      }
    }
    // Throughput: the daemon's samples of the last minute.
    std::vector<std::pair<double, double>> series;
    for (auto& s : list["daemon"].value("throughput", nlohmann::json::array()))
      series.push_back({s[0].get<double>(), s[1].get<double>()});
    double recent = 0;
    int recent_n = 0;
    double now = now_seconds();
    for (auto& [t, r] : series)
      if (t >= now - 60) recent += r, ++recent_n;
    recent = recent_n ? recent / recent_n : rates;
    double eta = remaining == 0 ? 0 : (recent > 0 ? double(remaining) / recent : -1);

    std::vector<Bar> bars;
    for (auto& st : kStates) bars.push_back({st, double(counts[st]), kColours.at(st)});
    std::string totals = fmt::format(
        "<dl id=\"totals\"><dt>Accounts</dt><dd id=\"accounts\">{} ({} queued, {} running, {} waiting, {} done, {} "
        "error, {} cancelled)</dd><dt>Messages</dt><dd>{}</dd><dt>Copied</dt><dd>{}</dd><dt>Throughput (last "
        "minute)</dt><dd id=\"throughput\">{}</dd><dt>Running jobs done in</dt><dd id=\"eta\">{}</dd></dl>",
        list["jobs"].size(), counts["queued"], counts["running"], counts["waiting"], counts["done"], counts["error"],
        counts["cancelled"], messages, size_text(bytes), html::rate_text(recent),
        remaining == 0 ? std::string("-") : "about " + html::duration_text(eta) +
                                                (counts["queued"] ? fmt::format(" (and {} queued)", counts["queued"]) : ""));
    std::string plots = "<div class=\"plots\"><div><h2>Accounts by state</h2>" +
                        svg_bars("by-state", "accounts by state", bars) + "</div><div><h2>Throughput</h2>" +
                        svg_line("throughput-plot", "bytes per second, every job", series, "bytes/s") +
                        "</div></div>";
    std::string by_origin = "<h2>By origin</h2><table id=\"origins\"><tr><th>origin</th><th>accounts</th><th>done</th>"
                            "<th>error</th><th>messages</th><th>copied</th></tr>";
    for (auto& [name, o] : origins)
      by_origin += fmt::format("<tr data-origin=\"{0}\"><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td>"
                               "<td>{5}</td></tr>",
                               esc(name), o.accounts, o.done, o.error, o.messages, size_text(o.bytes));
    by_origin += "</table>";
    std::string filters = "<p>Show: <a href=\"/admin\">all</a>";
    for (auto& st : kStates) filters += fmt::format(" &middot; <a href=\"/admin?state={0}\">{0} ({1})</a>", st, counts[st]);
    filters += "</p>";
    std::string rows;
    for (auto& j : list["jobs"]) {
      if (!filter.empty() && j.value("status", "") != filter) continue;
      std::string verify = "-";
      if (j["verify"].is_object())
        verify = j["verify"].value("equal", false) ? "equal"
                                                    : fmt::format("{} differences", j["verify"].value("differences", 0));
      rows += fmt::format("<tr class=\"job\" data-user=\"{1}\" data-status=\"{3}\"><td><a href=\"/admin/job/{0}\">{0}"
                          "</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{8}</td><td>{4}</td><td>{5}</td><td>{6}"
                          "</td><td>{7}</td></tr>",
                          j.value("id", 0), esc(j.value("user", "")), esc(j.value("target_user", "")),
                          esc(j.value("status", "")), j.value("messages", 0), size_text(j.value("bytes", uint64_t{0})),
                          esc(verify), esc(j.value("error", "")), progress_cell(j));
    }
    std::string invite_form = fmt::format(
        "<h2>Invitations</h2><form method=\"post\" action=\"/admin/invite\" id=\"invite-form\"><input type=\"hidden\" "
        "name=\"csrf\" value=\"{}\"><label for=\"users\">Mailboxes, one a line: <code>user</code> or "
        "<code>user,target_user</code></label><textarea id=\"users\" name=\"users\" rows=\"4\"></textarea><label "
        "for=\"ttl\">Valid for (days)</label><input type=\"number\" id=\"ttl\" name=\"ttl_days\" min=\"1\" "
        "max=\"365\" value=\"{}\"><button type=\"submit\" id=\"invite\">Make links</button></form>",
        admin_csrf(session), std::max<int64_t>(1, config_.web.invite_ttl.count() / 86400));
    html_out(res, page("Migration console",
                       nav(session) + totals + plots + by_origin + "<h2>Jobs</h2>" + filters +
                           "<table id=\"jobs\"><tr><th>job</th><th>user</th><th>target</th><th>status</th><th>progress"
                           "</th><th>messages</th><th>copied</th><th>verify</th><th>error</th></tr>" +
                           rows + "</table>" + invite_form,
                       config_.web.refresh * 2, true));
  });

  server_->Post("/admin/invite", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    std::string session = action_session(req, res);
    if (session.empty()) return;
    nlohmann::json users = nlohmann::json::array();
    std::istringstream in(req.has_param("users") ? req.get_param_value("users") : "");
    std::string line;
    while (std::getline(in, line)) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      while (!line.empty() && line.front() == ' ') line.erase(0, 1);
      if (line.empty() || line[0] == '#') continue;
      auto comma = line.find(',');
      users.push_back({{"user", line.substr(0, comma)},
                       {"target_user", comma == std::string::npos ? "" : line.substr(comma + 1)}});
    }
    int64_t days = 0;
    try {
      days = std::stoll(req.has_param("ttl_days") ? req.get_param_value("ttl_days") : "");
    } catch (...) {
    }
    nlohmann::json made;
    try {
      if (days < 1 || days > 365) throw Error(ErrorKind::usage, "the validity must be 1 to 365 days");
      made = create_invites(users, std::chrono::seconds(days * 86400));
    } catch (const Error& e) {
      res.status = 422;
      return html_out(res, page("Invitations", nav(session) + "<p class=\"box error\" id=\"refusal\">" +
                                                   esc(e.message()) + "</p>", 0, true));
    }
    std::string rows;
    for (auto& n : made)
      rows += fmt::format("<tr class=\"invite\" data-user=\"{0}\"><td>{0}</td><td>{1}</td><td><code>{2}</code></td>"
                          "<td>{3}</td></tr>",
                          esc(n.value("user", "")), esc(n.value("target_user", "")), esc(n.value("link", "")),
                          when(n.value("expires", 0.0)));
    html_out(res, page("Invitations made",
                       nav(session) +
                           "<p class=\"box warn\">These links are shown only now: the daemon keeps their hashes, not "
                           "the links. Copy them and send one to each user.</p><table id=\"invites\"><tr><th>user</th>"
                           "<th>target</th><th>link</th><th>expires</th></tr>" +
                           rows + "</table>",
                       0, true));
  });

  server_->Get(R"(/admin/job/([0-9]+))", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    std::string session = session_or_login(req, res);
    if (session.empty()) return;
    uint64_t id = job_id(req);
    auto found = show(id);
    if (!found) {
      res.status = 404;
      return html_out(res, page("No such job", "<p class=\"box error\" id=\"refusal\">No such job.</p>"));
    }
    auto& job = *found;
    std::string status = job.value("status", "");
    bool running = status == "running";
    std::string summary = fmt::format(
        "<div class=\"box\"><dl><dt>Mailbox</dt><dd>{} &rarr; {}</dd><dt>Status</dt><dd id=\"job-status\" "
        "data-status=\"{}\">{}{}</dd><dt>Origin</dt><dd>{}</dd><dt>Credentials</dt><dd>source: {}; target: {}</dd>"
        "<dt>Created</dt><dd>{}</dd><dt>Passes</dt><dd>{}</dd><dt>Messages (latest pass)</dt><dd>{}</dd>"
        "<dt>Copied</dt><dd>{}</dd><dt>Verify</dt><dd id=\"job-verify\">{}</dd>{}{}</dl></div>",
        esc(job.value("user", "")), esc(job.value("target_user", "")), esc(status), esc(status),
        job.value("phase", "").empty() ? "" : " (" + esc(job.value("phase", "")) + ")", esc(job.value("origin", "")),
        job.value("credentials", "") == "password" ? "the user's password" : "the profile's",
        job.value("target_credentials", "") == "password" ? "the user's own password" : "the profile's",
        when(job.value("created", 0.0)), job.value("passes", 0), job.value("messages", 0),
        size_text(job.value("bytes", uint64_t{0})), esc(verify_text(job.value("verify", nlohmann::json()))),
        job.value("error", "").empty()
            ? ""
            : "<dt>Error</dt><dd id=\"job-error\">" + esc(job.value("error", "")) + " (" +
                  esc(job.value("error_kind", "")) + ")</dd>",
        progress_rows(job));
    // The throughput of the running attempt, else of the latest one that moved bytes.
    nlohmann::json samples;
    if (running && job["progress"].is_object()) samples = job["progress"].value("samples", nlohmann::json());
    else if (job.contains("runs") && job["runs"].is_array())
      for (auto& r : job["runs"])
        if (r.contains("samples") && r["samples"].is_array()) samples = r["samples"];
    std::string plot = "<h2>Throughput</h2>" + svg_line("job-throughput", running ? "bytes per second, this attempt"
                                                                                  : "bytes per second, latest copy",
                                                        rates_of(samples), "bytes/s");
    std::string forms;
    for (auto [op, label] : {std::pair{"retry", "Retry"}, {"cancel", "Cancel"}, {"reverify", "Verify again"}})
      forms += fmt::format("<form class=\"inline\" method=\"post\" action=\"/admin/job/{}/{}\"><input type=\"hidden\" "
                           "name=\"csrf\" value=\"{}\"><button type=\"submit\" id=\"{}\">{}</button></form>",
                           id, op, admin_csrf(session), op, label);
    bool signing = !config_.web.manifest_key.empty();
    std::string downloads = fmt::format(
        "<h2>Reports</h2><ul><li><a id=\"report\" href=\"/admin/job/{0}.json\">Report (JSON)</a></li><li><a "
        "id=\"report-csv\" href=\"/admin/job/{0}.csv\">Report (CSV)</a></li><li><a id=\"manifest\" "
        "href=\"/admin/job/{0}.manifest.json\">{1}</a>{2}</li></ul>",
        id, signing ? "Signed manifest (JSON)" : "Manifest (JSON), unsigned: no [web] manifest_key is configured",
        signing ? fmt::format(" and its <a id=\"manifest-sig\" href=\"/admin/job/{}.manifest.sig\">Ed25519 signature"
                              "</a> (of the manifest downloaded last)",
                              id)
                : "");
    std::string history = "<h2>History</h2><table id=\"history\"><tr><th>attempt</th><th>kind</th><th>pass</th>"
                          "<th>started</th><th>took</th><th>outcome</th><th>messages</th><th>copied</th><th>verify</th>"
                          "<th>errors</th></tr>";
    if (job.contains("runs") && job["runs"].is_array()) {
      auto& runs = job["runs"];
      for (size_t i = runs.size(); i-- > 0;) {
        auto& r = runs[i];
        std::string problems;
        if (!r.value("error", "").empty())
          problems += "<div class=\"run-error\">" + esc(r.value("error", "")) + " (" + esc(r.value("error_kind", "")) +
                      ")</div>";
        if (r.contains("problems") && r["problems"].is_array() && !r["problems"].empty()) {
          problems += "<ul class=\"problems\">";
          for (auto& p : r["problems"])
            problems += fmt::format("<li>{}{}{}: {}</li>", esc(p.value("event", "")),
                                    p.value("folder", "").empty() ? "" : ", folder " + esc(p.value("folder", "")),
                                    p.contains("uid") && p["uid"].is_number() ? ", UID " + p["uid"].dump() : "",
                                    esc(p.value("text", "")));
          problems += "</ul>";
        }
        history += fmt::format("<tr class=\"run\" data-kind=\"{1}\" data-status=\"{5}\"><td>{0}</td><td>{1}</td>"
                               "<td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td><td>{8}</td>"
                               "<td>{9}</td></tr>",
                               r.value("attempt", 0), esc(r.value("kind", "")), r.value("pass", 0),
                               when(r.value("started", 0.0)),
                               html::duration_text(r.value("finished", 0.0) - r.value("started", 0.0)),
                               esc(r.value("status", "")), r.value("messages", 0),
                               size_text(r.value("bytes", uint64_t{0})),
                               esc(verify_text(r.value("verify", nlohmann::json()))), problems);
      }
    }
    history += "</table>";
    bool final = status == "done" || status == "error" || status == "cancelled";
    html_out(res, page(fmt::format("Job {}: {}", id, job.value("user", "")),
                       nav(session) + summary + forms + plot + downloads + history,
                       final ? 0 : config_.web.refresh * 2, true));
  });

  server_->Get(R"(/admin/job/([0-9]+)\.(json|csv))", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    if (session_or_login(req, res).empty()) return;
    uint64_t id = job_id(req);
    auto job = show(id);
    if (!job) {
      res.status = 404;
      return;
    }
    bool csv = req.matches[2] == "csv";
    res.set_header("Content-Disposition", fmt::format("attachment; filename=\"job-{}.{}\"", id, csv ? "csv" : "json"));
    if (csv) res.set_content(csv_report(*job), "text/csv; charset=utf-8");
    else res.set_content(job->dump(2) + "\n", "application/json");
  });

  server_->Get(R"(/admin/job/([0-9]+)\.manifest\.(json|sig))", [=, this](const httplib::Request& req,
                                                                       httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    if (session_or_login(req, res).empty()) return;
    uint64_t id = job_id(req);
    bool sig = req.matches[2] == "sig";
    std::lock_guard lock(manifest_mutex_);
    if (sig) {
      auto it = manifests_.find(id);
      if (config_.web.manifest_key.empty() || it == manifests_.end()) {
        res.status = 404;
        return html_out(res, page("No signature", config_.web.manifest_key.empty()
                                                      ? "<p class=\"box error\" id=\"refusal\">No [web] manifest_key "
                                                        "is configured: manifests are not signed.</p>"
                                                      : "<p class=\"box error\" id=\"refusal\">Download the manifest "
                                                        "first: the signature is of the manifest given last.</p>"));
      }
      try {
        std::string signature = verify::ed25519_sign(it->second, config_.web.manifest_key.string());
        res.set_header("Content-Disposition", fmt::format("attachment; filename=\"job-{}.manifest.json.sig\"", id));
        res.set_content(signature, "application/octet-stream");
      } catch (const Error& e) {
        res.status = 500;
        html_out(res, page("Cannot sign", "<p class=\"box error\" id=\"refusal\">" + esc(e.message()) + "</p>"));
      }
      return;
    }
    try {
      std::string text = daemon_.manifest(id).dump(2) + "\n";
      manifests_[id] = text;
      res.set_header("Content-Disposition", fmt::format("attachment; filename=\"job-{}.manifest.json\"", id));
      res.set_content(text, "application/json");
    } catch (const Error& e) {
      res.status = e.kind() == ErrorKind::not_found ? 404 : 500;
      html_out(res, page("No manifest", "<p class=\"box error\" id=\"refusal\">" + esc(e.message()) + "</p>"));
    }
  });

  server_->Post(R"(/admin/job/([0-9]+)/(retry|cancel|reverify))", [=, this](const httplib::Request& req,
                                                                           httplib::Response& res) {
    if (admin_token_.get().empty()) return no_console(res);
    if (action_session(req, res).empty()) return;
    uint64_t id = job_id(req);
    std::string op = req.matches[2];
    try {
      daemon_.handle({{"op", op}, {"id", id}}, self());
    } catch (const Error& e) {
      res.status = e.kind() == ErrorKind::not_found ? 404 : 409;
      return html_out(res, page("Refused", "<p class=\"box error\" id=\"refusal\">" + esc(e.message()) + "</p>"));
    }
    events_.emit({{"event", "web_admin_action"}, {"op", op}, {"job", id}, {"client", req.remote_addr},
                  {"text", fmt::format("web: the administrator asked {} of job {} (from {})", op, id, req.remote_addr)}});
    res.status = 303;
    res.set_header("Location", fmt::format("/admin/job/{}", id));
  });
}

}  // namespace imapstage::serve

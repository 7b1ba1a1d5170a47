// imapstage invite: single-use links to the self-service page (serve/web.h)
// for a list of mailboxes, made by the running daemon (only their hashes are
// kept there), written as CSV and optionally as one mail file per mailbox.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/display.h"
#include "cli/server_options.h"
#include "common/aead.h"
#include "common/error.h"
#include "serve/config.h"
#include "serve/control.h"

namespace imapstage::cli {

namespace {

struct InviteArgs {
  std::string config = "/etc/imapstage/serve.toml";
  std::string accounts;
  std::string ttl;
  std::string csv;
  std::string eml_dir;
  std::string eml_template;
};

const char* kDefaultTemplate =
    "To: {user}\r\nSubject: Your mailbox is moving to a new server\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\r\nyour mailbox {user} is moving to a new "
    "server. Open this link and enter your current password to start the move:\r\n\r\n  {link}\r\n\r\nThe link "
    "works once, until {expires}.\r\n";

std::string rfc3339(double t) {
  std::time_t s = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Writes `text` to a new owner-only file (the links are capabilities).
void write_private(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw_io("cannot create", path, errno);
  ::fchmod(fd, 0600);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw_io("cannot write", path, e);
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) throw_io("cannot write", path, errno);
}

std::string fill(std::string text, const nlohmann::json& invite) {
  for (auto [key, value] : {std::pair<std::string, std::string>{"{user}", invite["user"]},
                            {"{target_user}", invite["target_user"]},
                            {"{link}", invite["link"]},
                            {"{expires}", rfc3339(invite["expires"].get<double>())}}) {
    for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + value.size()))
      text.replace(at, key.size(), value);
  }
  return text;
}

}  // namespace

void add_invite_command(CLI::App& app, int& status) {
  auto args = std::make_shared<InviteArgs>();
  auto* cmd = app.add_subcommand("invite", "Make single-use links to the self-service page of a running "
                                           "`imapstage serve` (one per mailbox), as CSV and mail files");
  cmd->add_option("--config", args->config, "The daemon's configuration (default /etc/imapstage/serve.toml)");
  cmd->add_option("--accounts", args->accounts,
                  "Mailboxes, one a line: USER or USER,TARGET_USER ('#' starts a comment)")->required();
  cmd->add_option("--ttl", args->ttl, "How long the links work (\"14d\", \"48h\"; default [web] invite_ttl)");
  cmd->add_option("--csv", args->csv, "Write user,target_user,link,expires here (mode 0600) instead of stdout");
  cmd->add_option("--eml-dir", args->eml_dir, "Also write one ready-to-send mail file USER.eml per mailbox here");
  cmd->add_option("--template", args->eml_template,
                  "Mail template (headers, blank line, body) with {user}, {target_user}, {link}, {expires}");
  cmd->footer("A new link replaces the unused older one of the same mailbox. Only the links' SHA-256 is kept "
              "by the daemon: this output is the only copy.");
  cmd->callback([args, &status] {
    auto config = serve::load_serve_config(args->config);
    std::ifstream in(args->accounts);
    if (!in) throw_io("cannot read the accounts file", args->accounts, errno);
    nlohmann::json users = nlohmann::json::array();
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
      while (!line.empty() && isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
      while (!line.empty() && isspace(static_cast<unsigned char>(line.front()))) line.erase(0, 1);
      if (line.empty()) continue;
      auto comma = line.find(',');
      std::string user = line.substr(0, comma), target = comma == std::string::npos ? "" : line.substr(comma + 1);
      if (user.empty() || user.find_first_of(" \t,") != std::string::npos ||
          target.find_first_of(" \t,") != std::string::npos)
        throw Error(ErrorKind::usage, fmt::format("{}:{}: expected USER or USER,TARGET_USER", args->accounts, number),
                    Retry::never, {.file = args->accounts});
      nlohmann::json u = {{"user", user}};
      if (!target.empty()) u["target_user"] = target;
      users.push_back(u);
    }
    if (users.empty()) throw Error(ErrorKind::usage, args->accounts + ": no mailboxes", Retry::never, {.file = args->accounts});
    nlohmann::json request = {{"op", "invite"}, {"users", users}};
    if (!args->ttl.empty()) request["ttl"] = parse_duration(args->ttl).count();
    auto reply = serve::control_call(config.socket, request, std::chrono::seconds(30));
    if (!reply.value("ok", false)) {
      std::string error = reply.value("error", std::string("(no reason)"));
      if (error == "unknown request invite") error = "the daemon serves no web pages (set [web] listen)";
      throw Error(reply.value("kind", "") == "auth" ? ErrorKind::auth : ErrorKind::usage, "the daemon refused: " + error);
    }
    std::string csv = "user,target_user,link,expires\r\n";
    for (auto& i : reply["invites"])
      csv += fmt::format("{},{},{},{}\r\n", i["user"].get<std::string>(), i["target_user"].get<std::string>(),
                         i["link"].get<std::string>(), rfc3339(i["expires"].get<double>()));
    if (args->csv.empty()) say(stdout, "{}", csv);
    else write_private(args->csv, csv);
    if (!args->eml_dir.empty()) {
      std::string tmpl = kDefaultTemplate;
      if (!args->eml_template.empty()) {
        std::ifstream t(args->eml_template, std::ios::binary);
        if (!t) throw_io("cannot read the template", args->eml_template, errno);
        std::ostringstream s;
        s << t.rdbuf();
        tmpl = s.str();
      }
      std::filesystem::create_directories(args->eml_dir);
      for (auto& i : reply["invites"])
        write_private((std::filesystem::path(args->eml_dir) / (i["user"].get<std::string>() + ".eml")).string(),
                      fill(tmpl, i));
    }
    say(stderr, "{} invitations\n", reply["invites"].size());
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

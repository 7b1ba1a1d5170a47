// imapstage serve: the migration daemon (serve/daemon.h) in the foreground.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/display.h"
#include "serve/config.h"
#include "serve/control.h"
#include "serve/daemon.h"
#include "serve/web.h"

namespace imapstage::cli {

namespace {

std::atomic<bool> g_stop{false};

void on_stop_signal(int) { g_stop = true; }

// One line per event on stdout: UTC time and the event's text (journald
// or a log file keeps it); nothing but "text" and warnings/errors is shown.
class DaemonTextSink : public EventSink {
 public:
  void emit(const nlohmann::json& event) override {
    std::string text = event.value("text", "");
    if (text.empty()) return;
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    std::string line = fmt::format("{} {}\n", when, printable(text));
    std::lock_guard lock(mutex_);
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  }

 private:
  std::mutex mutex_;
};

struct ServeArgs {
  std::string config = "/etc/imapstage/serve.toml";
  bool allow_root = false;
  bool json = false;
  std::string log_file;
};

}  // namespace

void add_serve_command(CLI::App& app, int& status) {
  auto args = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "Run the migration daemon: a durable job queue, a control socket for "
                                          "`imapstage jobs` and the login hook, jobs run export -> import -> verify");
  cmd->add_option("--config", args->config, "Configuration file (default /etc/imapstage/serve.toml)");
  cmd->add_flag("--allow-root", args->allow_root, "Run even as root (the daemon belongs under its own user)");
  cmd->add_flag("--json", args->json, "Events as JSON lines on stdout instead of text lines");
  cmd->add_option("--log-file", args->log_file, "Also append every event as a JSON line to this file");
  cmd->footer("Stops on SIGTERM or SIGINT: running jobs stop at a safe point and resume at the next start. "
              "serve/README.md describes the configuration, the control requests and the state directory.");
  cmd->callback([args, &status] {
    if (::geteuid() == 0 && !args->allow_root)
      throw Error(ErrorKind::usage,
                  "refusing to run as root: run the daemon as its own user (serve/imapstage.service), or give "
                  "--allow-root");
    ::umask(077);
    auto config = serve::load_serve_config(args->config);
    std::unique_ptr<EventSink> sink;
    if (args->json) sink = std::make_unique<JsonLinesSink>(stdout, stderr);
    else sink = std::make_unique<DaemonTextSink>();
    if (!args->log_file.empty())
      sink = std::make_unique<TeeSink>(std::make_unique<LogFileSink>(args->log_file), std::move(sink));
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    serve::Daemon daemon(config, *sink);
    serve::ControlListener listener(config.socket);
    std::unique_ptr<serve::WebServer> web;
    if (!config.web.listen.empty()) {
      web = std::make_unique<serve::WebServer>(config, daemon, *sink);
      daemon.set_extension([&web](const nlohmann::json& r, const serve::Peer& p) { return web->handle_control(r, p); });
      web->start();
    }
    daemon.run(listener, [] { return g_stop.load(); });
    status = kExitOk;
  });
}

}  // namespace imapstage::cli

// tools/fault-proxy run from tests: a TCP proxy in front of a server that adds
// latency, caps bandwidth, cuts, stalls or resets connections.
//
// The proxy runs as a child process listening on a free loopback port; its
// events (one JSON object per line: open, close, cut, stall, resume, error,
// exit; see `tools/fault-proxy --help`) go to a log file that events()
// reads. Destroying the FaultProxy stops the process (SIGTERM, then SIGKILL
// after 5 s), reaps it and removes its files: no process is left behind. The
// proxy also exits by itself after `max_seconds` or when the test process is
// gone. Every failure throws std::runtime_error with the proxy's stderr.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace imapstage::testing {

struct FaultProxyOptions {
  std::string target_host = "127.0.0.1";
  uint16_t target_port = 0;                 // required
  std::string on;                           // --on: connections the faults below apply to ("" = all)
  std::optional<double> delay_ms;           // --delay: one-way latency, each way
  std::optional<double> rate;               // --rate: bytes per second, each way
  std::optional<uint64_t> cut_after;        // --cut-after
  std::optional<std::pair<uint64_t, uint64_t>> cut_random;  // --cut-random MIN:MAX
  std::string cut_direction;                // --cut-direction: "up", "down", "both" ("" = both)
  std::optional<unsigned> cuts;             // --cuts: at most this many cuts in all
  std::optional<uint64_t> stall_after;      // --stall-after
  std::optional<double> stall_seconds;      // --stall-seconds (unset: stall for good)
  std::string stall_direction;              // --stall-direction ("" = both)
  std::optional<unsigned> stalls;           // --stalls
  bool reset = false;                       // --reset: cut with RST instead of FIN
  std::string rules;                        // --rules: a JSON list of rules, inline
  std::optional<std::string> seed;          // --seed (unset: random, see seed())
  double max_seconds = 900;                 // --max-seconds: a safety net
  std::vector<std::string> extra_args;      // anything else, appended as given
};

class FaultProxy {
 public:
  // Starts the proxy and waits (up to 30 s) until it listens.
  explicit FaultProxy(FaultProxyOptions options);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  const std::string& host() const { return host_; }  // where clients connect
  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& seed() const { return seed_; }   // the seed in use (given or drawn)

  // The events logged so far, in order (complete lines only).
  std::vector<nlohmann::json> events() const;
  // How many events named `name` ("cut", "close", ...) were logged so far.
  size_t count(const std::string& name) const;
  // Waits until at least `n` events named `name` were logged; false on timeout.
  bool wait_for(const std::string& name, size_t n = 1,
                std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) const;

  // Whether the process is still running (false once it exited by itself or was stopped).
  bool running();
  // Stops the process (SIGTERM, SIGKILL after 5 s) and reaps it; idempotent.
  // Returns its exit status as waitpid reports it.
  int stop();

  // Path of tools/fault-proxy, and the command that runs it ($IMAPSTAGE_PYTHON or
  // /usr/bin/python3 when present, then the script).
  static std::string script();
  static std::vector<std::string> script_command();

 private:
  std::string stderr_text() const;

  std::string dir_;
  std::string log_file_;
  std::string err_file_;
  std::string host_;
  std::string seed_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

}  // namespace imapstage::testing

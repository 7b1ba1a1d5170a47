// The daemon's local control interface: a unix stream socket (default
// STATE_DIR/control.sock, mode 0666) where each connection carries one JSON
// request line and gets one JSON reply line. Who may ask what is decided from
// the peer's credentials as the kernel reports them (SO_PEERCRED), never from
// anything the client says; serve/README.md lists the requests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>

#include <nlohmann/json.hpp>

namespace imapstage::serve {

struct Peer {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

using ControlHandler = std::function<nlohmann::json(const nlohmann::json& request, const Peer& peer)>;

class ControlListener {
 public:
  // Binds `path`. A socket file where no one answers is replaced; one where a
  // daemon answers is Error(locked). Throws Error(io) otherwise.
  explicit ControlListener(std::filesystem::path path);
  ~ControlListener();  // closes and removes the socket file
  ControlListener(const ControlListener&) = delete;
  ControlListener& operator=(const ControlListener&) = delete;

  // Waits up to `timeout` for a connection and answers it: reads one line
  // (at most 64 KiB, within 2 s), calls `handler` with the parsed request and
  // the peer, writes the reply. A request that is not JSON gets
  // {"ok": false, "error": ...}. Returns whether a connection was served.
  bool serve_one(std::chrono::milliseconds timeout, const ControlHandler& handler);

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Sends `request` to the daemon at `path` and returns its reply. Throws
// Error(network, later) when no daemon listens there (no socket, refused),
// Error(network, later) on a timeout, Error(protocol) for a reply that is not JSON.
nlohmann::json control_call(const std::filesystem::path& path, const nlohmann::json& request,
                            std::chrono::milliseconds timeout);

}  // namespace imapstage::serve

// tools/fault-proxy through its test wrapper, against small TCP servers run
// in this process: pass-through, latency, bandwidth, cuts, resets, stalls,
// connection selection, and that no process outlives the wrapper.
#include "tests/support/fault_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace imapstage::testing {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void send_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void send_all(int fd, const std::string& data) { send_all(fd, data.data(), data.size()); }

struct ReadResult {
  std::string data;
  int error = 0;  // errno that ended the read, 0 for a clean EOF
};

// Reads until EOF or an error.
ReadResult read_all(int fd) {
  ReadResult r;
  char buf[65536];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      r.error = errno;
      return r;
    }
    if (n == 0) return r;
    r.data.append(buf, static_cast<size_t>(n));
  }
}

// Reads exactly `n` bytes; throws on EOF or error.
std::string read_exact(int fd, size_t n) {
  std::string out;
  char buf[65536];
  while (out.size() < n) {
    ssize_t r = recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw std::runtime_error("read_exact: connection ended after " + std::to_string(out.size()));
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

std::string random_bytes(size_t n, unsigned seed = 1) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

int connect_to(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    close(fd);
    throw std::runtime_error(std::string("connect: ") + std::strerror(e));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// A TCP server on 127.0.0.1:0 running `handler` on each accepted connection
// in its own thread; the destructor shuts every connection down and joins.
class TcpServer {
 public:
  explicit TcpServer(std::function<void(int fd)> handler) : handler_(std::move(handler)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        listen(listen_fd_, 64) != 0 || getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      throw std::runtime_error(std::string("TcpServer: ") + std::strerror(errno));
    port_ = ntohs(addr.sin_port);
    if (pipe2(wake_, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~TcpServer() {
    char c = 0;
    (void)!write(wake_[1], &c, 1);
    acceptor_.join();
    {
      std::lock_guard lock(mutex_);
      for (int fd : fds_) shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : workers_) t.join();
    for (int fd : fds_) close(fd);
    close(listen_fd_);
    close(wake_[0]);
    close(wake_[1]);
  }

  uint16_t port() const { return port_; }
  int accepted() const { return accepted_.load(); }

 private:
  void accept_loop() {
    while (true) {
      pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (p[1].revents) return;
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ++accepted_;
      std::lock_guard lock(mutex_);
      fds_.push_back(fd);
      workers_.emplace_back([this, fd] {
        try {
          handler_(fd);
        } catch (const std::exception&) {
        }
      });
    }
  }

  std::function<void(int)> handler_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<int> fds_;
  std::vector<std::thread> workers_;
  std::atomic<int> accepted_{0};
};

void echo(int fd) {
  char buf[65536];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    send_all(fd, buf, static_cast<size_t>(n));
  }
  shutdown(fd, SHUT_WR);
}

// Sends `data` in pieces of `piece` bytes with `pause` between them, then
// (with `finish`) ends its side; then waits for the peer to close.
std::function<void(int)> source(std::string data, size_t piece = 1 << 20, std::chrono::microseconds pause = 0us,
                                 bool finish = true) {
  return [data = std::move(data), piece, pause, finish](int fd) {
    try {
      for (size_t off = 0; off < data.size(); off += piece) {
        send_all(fd, data.data() + off, std::min(piece, data.size() - off));
        if (pause.count()) std::this_thread::sleep_for(pause);
      }
    } catch (const std::exception&) {
    }
    if (finish) shutdown(fd, SHUT_WR);
    read_all(fd);
  };
}

FaultProxyOptions to(const TcpServer& server) {
  FaultProxyOptions o;
  o.target_port = server.port();
  return o;
}

// Bytes received by one connection: client connects, reads until the end.
ReadResult fetch(const FaultProxy& proxy) {
  Socket s(connect_to(proxy.port()));
  return read_all(s.fd());
}

std::vector<nlohmann::json> events_named(const FaultProxy& proxy, const std::string& name) {
  std::vector<nlohmann::json> out;
  for (auto& e : proxy.events())
    if (e.value("event", "") == name) out.push_back(e);
  return out;
}

TEST(FaultProxy, PassesBytesThroughUnchanged) {
  TcpServer server(echo);
  FaultProxy proxy(to(server));
  const std::string data = random_bytes(4 << 20);
  Socket s(connect_to(proxy.port()));
  std::thread writer([&] {
    send_all(s.fd(), data);
    shutdown(s.fd(), SHUT_WR);
  });
  ReadResult got = read_all(s.fd());
  writer.join();
  EXPECT_EQ(got.error, 0);
  ASSERT_EQ(got.data.size(), data.size());
  EXPECT_TRUE(got.data == data) << "bytes changed on the way";

  ASSERT_TRUE(proxy.wait_for("close"));
  auto close = events_named(proxy, "close").at(0);
  EXPECT_EQ(close["reason"], "eof");
  EXPECT_EQ(close["up"], data.size());
  EXPECT_EQ(close["down"], data.size());
  EXPECT_EQ(events_named(proxy, "open").at(0)["conn"], 1);
}

TEST(FaultProxy, DelayAddsToRoundTripsButKeepsPipelinedThroughput) {
  TcpServer echo_server(echo);
  auto opts = to(echo_server);
  opts.delay_ms = 50;
  FaultProxy proxy(opts);
  {
    Socket s(connect_to(proxy.port()));
    for (int i = 0; i < 3; ++i) {
      auto t = Clock::now();
      send_all(s.fd(), "ping\r\n");
      EXPECT_EQ(read_exact(s.fd(), 6), "ping\r\n");
      double rt = seconds_since(t);
      EXPECT_GE(rt, 0.100) << "round trip " << i;
      EXPECT_LT(rt, 0.5) << "round trip " << i;
    }
  }

  // 5 MB sent in 100 separate pieces: were each chunk held 50 ms in turn, it would take >= 5 s.
  const std::string data = random_bytes(5 << 20, 2);
  TcpServer src(source(data, 50 << 10, 2ms));
  auto direct_start = Clock::now();
  {
    Socket s(connect_to(src.port()));
    ASSERT_EQ(read_all(s.fd()).data.size(), data.size());
  }
  double direct = seconds_since(direct_start);

  auto sopts = to(src);
  sopts.delay_ms = 50;
  FaultProxy slow(sopts);
  auto start = Clock::now();
  ReadResult got = fetch(slow);
  double proxied = seconds_since(start);
  EXPECT_TRUE(got.data == data);
  EXPECT_GE(proxied, 0.050);
  EXPECT_LT(proxied, direct + 0.6) << "direct " << direct << " s; per-chunk delays would add up to seconds";
}

TEST(FaultProxy, RateCapsBandwidth) {
  TcpServer src(source(random_bytes(500000, 3)));
  auto opts = to(src);
  opts.rate = 1000000;
  FaultProxy proxy(opts);
  auto start = Clock::now();
  EXPECT_EQ(fetch(proxy).data.size(), 500000u);
  double took = seconds_since(start);
  EXPECT_GE(took, 0.4);
  EXPECT_LT(took, 3.0);
}

TEST(FaultProxy, CutAfterDeliversExactlyNBytesDownstreamThenFin) {
  const std::string data = random_bytes(1 << 20, 4);
  TcpServer src(source(data));
  auto opts = to(src);
  opts.cut_after = 12345;
  opts.cut_direction = "down";
  FaultProxy proxy(opts);
  ReadResult got = fetch(proxy);
  EXPECT_EQ(got.error, 0) << "a FIN cut ends with EOF, not " << std::strerror(got.error);
  ASSERT_EQ(got.data.size(), 12345u);
  EXPECT_TRUE(got.data == data.substr(0, 12345));
  ASSERT_TRUE(proxy.wait_for("cut"));
  auto cut = events_named(proxy, "cut").at(0);
  EXPECT_EQ(cut["at"], 12345);
  EXPECT_EQ(cut["down"], 12345);
  EXPECT_EQ(cut["reset"], false);
}

TEST(FaultProxy, CutAfterUpstreamDeliversExactlyNBytesToTheServer) {
  std::promise<size_t> received;
  TcpServer sink([&](int fd) {
    received.set_value(read_all(fd).data.size());
  });
  auto opts = to(sink);
  opts.cut_after = 5000;
  opts.cut_direction = "up";
  FaultProxy proxy(opts);
  Socket s(connect_to(proxy.port()));
  try {
    send_all(s.fd(), random_bytes(200000, 5));
  } catch (const std::exception&) {
    // the proxy may stop reading (or reset) before everything was sent
  }
  auto f = received.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get(), 5000u);
}

TEST(FaultProxy, ResetCutsWithRst) {
  TcpServer src(source(random_bytes(1 << 20, 6)));
  auto opts = to(src);
  opts.cut_after = 1000;
  opts.cut_direction = "down";
  opts.reset = true;
  FaultProxy proxy(opts);
  ReadResult got = fetch(proxy);
  EXPECT_EQ(got.error, ECONNRESET);
  EXPECT_EQ(got.data.size(), 1000u);
  ASSERT_TRUE(proxy.wait_for("cut"));
  EXPECT_EQ(events_named(proxy, "cut").at(0)["reset"], true);
}

TEST(FaultProxy, CutRandomStaysInRangeIsSeededAndLimitedByCuts) {
  const std::string data = random_bytes(20000, 7);
  TcpServer src(source(data));
  auto opts = to(src);
  opts.cut_random = std::pair<uint64_t, uint64_t>{1000, 5000};
  opts.cut_direction = "down";
  opts.cuts = 3;
  opts.seed = "7";
  std::vector<size_t> first_run;
  for (int run = 0; run < 2; ++run) {
    FaultProxy proxy(opts);
    EXPECT_EQ(proxy.seed(), "7");
    std::vector<size_t> sizes;
    for (int i = 0; i < 5; ++i) sizes.push_back(fetch(proxy).data.size());
    for (int i = 0; i < 3; ++i) {
      EXPECT_GE(sizes[i], 1000u) << "connection " << i + 1;
      EXPECT_LE(sizes[i], 5000u) << "connection " << i + 1;
    }
    EXPECT_EQ(sizes[3], data.size()) << "--cuts 3 leaves the 4th connection alone";
    EXPECT_EQ(sizes[4], data.size());
    ASSERT_TRUE(proxy.wait_for("close", 5));
    auto cuts = events_named(proxy, "cut");
    ASSERT_EQ(cuts.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(cuts[i]["at"], sizes[i]);
      EXPECT_EQ(cuts[i]["conn"], i + 1);
    }
    if (run == 0)
      first_run = sizes;
    else
      EXPECT_EQ(sizes, first_run) << "the same seed cuts at the same offsets";
  }
  EXPECT_FALSE(first_run[0] == first_run[1] && first_run[1] == first_run[2]) << "offsets are drawn per connection";
}

TEST(FaultProxy, OnAndRulesSelectConnections) {
  const std::string data = random_bytes(10000, 8);
  TcpServer src(source(data));
  auto opts = to(src);
  opts.on = "2";
  opts.cut_after = 100;
  opts.cut_direction = "down";
  opts.rules = R"([{"on": "4-", "cut_after": 50, "cut_direction": "down"}])";
  FaultProxy proxy(opts);
  std::vector<size_t> sizes;
  for (int i = 0; i < 5; ++i) sizes.push_back(fetch(proxy).data.size());
  EXPECT_EQ(sizes, (std::vector<size_t>{10000, 100, 10000, 50, 50}));
}

TEST(FaultProxy, StallHoldsDataForTheGivenTimeThenResumes) {
  const std::string data = random_bytes(3000, 9);
  TcpServer src(source(data));
  auto opts = to(src);
  opts.stall_after = 1000;
  opts.stall_seconds = 1.0;
  opts.stall_direction = "down";
  FaultProxy proxy(opts);
  Socket s(connect_to(proxy.port()));
  auto start = Clock::now();
  std::string head = read_exact(s.fd(), 1000);
  EXPECT_LT(seconds_since(start), 0.5);
  std::string next = read_exact(s.fd(), 1);
  double stalled = seconds_since(start);
  EXPECT_GE(stalled, 0.9);
  EXPECT_LT(stalled, 2.5);
  ReadResult rest = read_all(s.fd());
  EXPECT_EQ(rest.error, 0);
  EXPECT_TRUE(head + next + rest.data == data);
  EXPECT_EQ(proxy.count("stall"), 1u);
  EXPECT_EQ(proxy.count("resume"), 1u);
}

TEST(FaultProxy, StallWithoutTimeKeepsTheConnectionOpenAndSilent) {
  TcpServer src(source(random_bytes(3000, 10), 1 << 20, 0us, /*finish=*/false));
  auto opts = to(src);
  opts.stall_after = 1000;
  opts.stall_direction = "down";
  FaultProxy proxy(opts);
  Socket s(connect_to(proxy.port()));
  read_exact(s.fd(), 1000);
  pollfd p = {s.fd(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 1000), 0) << "no data and no EOF while stalled";
  EXPECT_EQ(proxy.count("close"), 0u);
  shutdown(s.fd(), SHUT_WR);  // the client gives up: the proxy ends the connection
  ASSERT_TRUE(proxy.wait_for("close"));
  EXPECT_EQ(events_named(proxy, "close").at(0)["reason"], "closed while stalled");
}

TEST(FaultProxy, MaxSecondsEndsTheProcess) {
  TcpServer server(echo);
  auto opts = to(server);
  opts.max_seconds = 0.3;
  FaultProxy proxy(opts);
  auto deadline = Clock::now() + 5s;
  while (proxy.running() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(proxy.running());
  int status = proxy.stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_EQ(events_named(proxy, "exit").at(0)["reason"], "max-seconds");
}

TEST(FaultProxy, NoProcessOutlivesTheWrapper) {
  TcpServer server(echo);
  pid_t pid = -1;
  auto start = Clock::now();
  {
    auto opts = to(server);
    opts.stall_after = 0;  // connections stay open and stalled
    FaultProxy proxy(opts);
    pid = proxy.pid();
    ASSERT_GT(pid, 0);
    Socket a(connect_to(proxy.port()));
    Socket b(connect_to(proxy.port()));
    ASSERT_TRUE(proxy.wait_for("stall", 2));
    start = Clock::now();
  }
  EXPECT_LT(seconds_since(start), 2.0) << "SIGTERM stops the proxy at once";
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST(FaultProxy, BadOptionsThrowWithTheReason) {
  FaultProxyOptions opts;
  opts.target_port = 1;
  opts.cut_direction = "sideways";
  try {
    FaultProxy proxy(opts);
    FAIL() << "started with a bad option";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cut-direction"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace imapstage::testing

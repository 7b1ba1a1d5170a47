#include "tests/support/mount_helpers.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "archive-format/hash.h"

namespace imapstage::testing {

namespace fs = std::filesystem;

bool is_mounted(const fs::path& dir, std::string* options) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::string want = fs::absolute(dir).lexically_normal().string();
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point, opts;
    fields >> id >> parent >> dev >> root >> point >> opts;
    if (point == want) {
      if (options) *options = opts;
      return true;
    }
  }
  return false;
}

bool wait_mounted(const fs::path& dir, bool mounted, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (is_mounted(dir) != mounted) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

Mount::Mount(const fs::path& archive, const fs::path& mountpoint, const std::vector<std::string>& extra)
    : mountpoint_(mountpoint) {
  fs::create_directories(mountpoint);
  std::vector<std::string> args = {"mount", "--archive", archive.string(), mountpoint.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  result_ = run_imapstage(args, {}, std::chrono::seconds(120));
  mounted_ = result_.exit_code == 0 && is_mounted(mountpoint);
}

Mount::~Mount() { unmount(); }

int Mount::unmount() {
  if (!mounted_) return 0;
  mounted_ = false;
  auto r = run_process({"/usr/bin/fusermount3", "-u", mountpoint_.string()});
  if (r.exit_code != 0) run_process({"/usr/bin/fusermount3", "-u", "-z", mountpoint_.string()});
  wait_mounted(mountpoint_, false);
  return r.exit_code;
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& out_file, const std::string& err_file) {
  pid_t pid = fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    int out = out_file.empty() ? null : ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = err_file.empty() ? null : ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(out, 1);
    ::dup2(err, 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (true) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    if (std::chrono::steady_clock::now() > end) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1000;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string file_sha256(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  archive::Sha256 h;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) h.update({buf, static_cast<size_t>(in.gcount())});
  return archive::to_hex(h.finish());
}

}  // namespace imapstage::testing

// Mounting archives in tests: the real `imapstage mount` binary, unmounted
// with fusermount3 -u when the guard goes out of scope.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace imapstage::testing {

// Whether `dir` is a mount point now (from /proc/self/mountinfo), and its options ("ro,nosuid,...").
bool is_mounted(const std::filesystem::path& dir, std::string* options = nullptr);

// Waits until is_mounted(dir) == `mounted`, at most `seconds`; returns whether it happened.
bool wait_mounted(const std::filesystem::path& dir, bool mounted, double seconds = 20);

// `imapstage mount --archive ARCHIVE MOUNTPOINT extra...` (detached); unmounts on destruction.
class Mount {
 public:
  Mount(const std::filesystem::path& archive, const std::filesystem::path& mountpoint,
        const std::vector<std::string>& extra = {});
  ~Mount();
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;
  const ProcessResult& result() const { return result_; }
  bool ok() const { return result_.exit_code == 0; }
  // fusermount3 -u, and waits for the mount to go; returns fusermount3's exit code.
  int unmount();

 private:
  std::filesystem::path mountpoint_;
  ProcessResult result_;
  bool mounted_ = false;
};

// Starts `argv` without waiting (stdin, stdout and stderr /dev/null unless files are given); returns its pid.
pid_t spawn(const std::vector<std::string>& argv, const std::string& out_file = "", const std::string& err_file = "");
// waitpid for `pid` at most `seconds`; the exit code, -signal when killed, or -1000 on timeout (then it is killed).
int wait_exit(pid_t pid, double seconds);

// SHA-256 (hex) of a file's bytes.
std::string file_sha256(const std::filesystem::path& path);

}  // namespace imapstage::testing

// The mbox source (sources/file_sources.h) on arbitrary file contents: the
// listing and the reading never crash, hang or throw anything but Error;
// every listed message is either delivered or reported, and what is
// delivered has CRLF line ends only (no bare LF).
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "common/error.h"
#include "sources/file_sources.h"

using namespace imapstage;

namespace {

class Check : public sources::FetchSink {
 public:
  void deliver(const sources::SourceMessage&, sources::FetchedMessage&& f) override {
    for (size_t i = 0; i < f.bytes.size(); ++i)
      if (f.bytes[i] == '\n' && (i == 0 || f.bytes[i - 1] != '\r')) std::abort();
    ++seen;
  }
  void failed(const sources::SourceMessage&, const Error&) override { ++seen; }
  size_t seen = 0;
};

// One file per process, rewritten for every input.
const std::string& scratch() {
  static std::string path = [] {
    std::string p = (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + std::string("/mbox-fuzz.XXXXXX");
    int fd = mkstemp(p.data());
    if (fd < 0) std::abort();
    close(fd);
    return p;
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = scratch();
  int fd = open(path.c_str(), O_WRONLY | O_TRUNC);
  if (fd < 0) std::abort();
  if (size && write(fd, data, size) != static_cast<ssize_t>(size)) std::abort();
  close(fd);
  try {
    auto source = sources::open_mbox(path);
    auto folders = source->folders();
    if (folders.size() != 1) std::abort();
    auto listing = source->list(folders[0]);
    std::vector<const sources::SourceMessage*> wanted;
    for (auto& m : listing.messages) wanted.push_back(&m);
    Check sink;
    source->fetch(folders[0], wanted, 1 << 20, sink);
    if (sink.seen != wanted.size()) std::abort();
  } catch (const Error&) {
  }
  return 0;
}

#define FUSE_USE_VERSION 312
#include "filesystem/mount.h"

#include <fcntl.h>
#include <fuse.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <cstring>
#include <ctime>
#include <memory>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "archive-format/layout.h"
#include "cli/display.h"
#include "common/error.h"
#include "filesystem/object_cache.h"
#include "filesystem/tree.h"

namespace imapstage::filesystem {

namespace {

constexpr size_t kPrefetchAhead = 4;
constexpr unsigned kThreads = 4;  // serving requests

// What the filesystem callbacks share (fuse_get_context()->private_data).
struct Server {
  const MountOptions& options;
  Tree tree;
  std::unique_ptr<archive::Archive> archive;  // opened in the serving process
  std::unique_ptr<ObjectCache> cache;
  // Per node: its object was decompressed and checked by an open already, so
  // a later open (the kernel keeping the pages) need not do it again.
  std::unique_ptr<std::atomic<bool>[]> checked;
  uid_t uid = getuid();
  gid_t gid = getgid();
};

// One open message file (fuse_file_info::fh, owned from open to release).
struct OpenFile {
  const TreeNode* node = nullptr;
  archive::Fd spill;  // the decompressed bytes of a large object, else closed
};

Server& server() { return *static_cast<Server*>(fuse_get_context()->private_data); }

void report(const Error& e, const char* path) {
  cli::say(stderr, "imapstage mount: {}: {}\n", path, e.what());
}

void fill_stat(const Server& s, const TreeNode& n, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_uid = s.uid;
  st->st_gid = s.gid;
  st->st_mtim.tv_sec = st->st_atim.tv_sec = st->st_ctim.tv_sec = static_cast<time_t>(n.mtime);
  if (n.directory) {
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2;
  } else {
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(n.size);
    st->st_blocks = static_cast<blkcnt_t>((n.size + 511) / 512);
  }
}

void* fs_init(struct fuse_conn_info*, struct fuse_config* cfg) {
  // Nothing changes while mounted: the kernel may keep names, attributes and pages.
  cfg->kernel_cache = 1;
  cfg->entry_timeout = 3600;
  cfg->attr_timeout = 3600;
  cfg->negative_timeout = 3600;
  return fuse_get_context()->private_data;
}

int fs_getattr(const char* path, struct stat* st, struct fuse_file_info*) {
  auto& s = server();
  const TreeNode* n = s.tree.find(path);
  if (!n) return -ENOENT;
  fill_stat(s, *n, st);
  return 0;
}

int fs_readdir(const char* path, void* buf, fuse_fill_dir_t filler, off_t, struct fuse_file_info*,
               enum fuse_readdir_flags) {
  auto& s = server();
  const TreeNode* n = s.tree.find(path);
  if (!n) return -ENOENT;
  if (!n->directory) return -ENOTDIR;
  filler(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  filler(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  for (uint32_t c : n->children) {
    struct stat st;
    fill_stat(s, s.tree.node(c), &st);
    if (filler(buf, s.tree.node(c).name.c_str(), &st, 0, static_cast<fuse_fill_dir_flags>(0))) break;
  }
  return 0;
}

// An unlinked temporary file holding the object's checked bytes.
archive::Fd spill(const Server& s, const archive::Hash& hash) {
  const char* dir = std::getenv("TMPDIR");
  std::string tmp = dir && *dir ? dir : "/tmp";
  archive::Fd fd(::open(tmp.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd) {
    std::string name = tmp + "/imapstage-mount-XXXXXX";
    fd = archive::Fd(::mkostemp(name.data(), O_CLOEXEC));
    if (!fd) throw_io("cannot create a temporary file", tmp, errno, Retry::later);
    ::unlink(name.c_str());
  }
  uint64_t at = 0;
  s.archive->read_object_to(hash, [&](std::string_view piece) {
    while (!piece.empty()) {
      ssize_t n = ::pwrite(fd.get(), piece.data(), piece.size(), static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw_io("cannot write a temporary file", tmp, errno, Retry::later);
      piece.remove_prefix(static_cast<size_t>(n));
      at += static_cast<uint64_t>(n);
    }
  });
  return fd;
}

int fs_open(const char* path, struct fuse_file_info* fi) {
  auto& s = server();
  const TreeNode* n = s.tree.find(path);
  if (!n) return -ENOENT;
  if (n->directory) return -EISDIR;
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) return -EROFS;
  auto file = std::make_unique<OpenFile>();
  file->node = n;
  uint32_t index = s.tree.index_of(n);
  if (n->hash && (n->size > s.options.spill_bytes || !s.checked[index])) {
    try {
      if (n->size > s.options.spill_bytes) file->spill = spill(s, *n->hash);
      else s.cache->get(*n->hash);  // decompressed and checked now: a damaged object fails the open
      s.checked[index] = true;
      // Readers (cat, grep -r, mail clients) go through a folder in order: the next few are decompressed meanwhile.
      std::vector<archive::Hash> ahead;
      const auto& siblings = s.tree.node(n->parent).children;
      for (size_t k = n->position + 1; k < siblings.size() && ahead.size() < kPrefetchAhead; ++k) {
        const TreeNode& next = s.tree.node(siblings[k]);
        if (next.hash && next.size <= s.options.cache_bytes / 16) ahead.push_back(*next.hash);
      }
      if (!ahead.empty()) s.cache->prefetch(ahead);
    } catch (const Error& e) {
      report(e, path);
      return e.kind() == ErrorKind::io && e.retry() != Retry::never ? -ENOSPC : -EIO;
    }
  }
  fi->keep_cache = 1;
  fi->fh = reinterpret_cast<uint64_t>(file.release());
  return 0;
}

int fs_read(const char* path, char* buf, size_t size, off_t offset, struct fuse_file_info* fi) {
  auto& s = server();
  auto* file = reinterpret_cast<OpenFile*>(fi->fh);
  const TreeNode& n = *file->node;
  if (offset < 0) return -EINVAL;
  auto at = static_cast<uint64_t>(offset);
  if (at >= n.size) return 0;
  size = static_cast<size_t>(std::min<uint64_t>(size, n.size - at));
  if (!n.hash) {
    std::memcpy(buf, n.content.data() + at, size);
    return static_cast<int>(size);
  }
  if (file->spill) {
    ssize_t got = ::pread(file->spill.get(), buf, size, offset);
    return got < 0 ? -errno : static_cast<int>(got);
  }
  try {
    auto bytes = s.cache->get(*n.hash);
    if (bytes->size() != n.size) return -EIO;
    std::memcpy(buf, bytes->data() + at, size);
    return static_cast<int>(size);
  } catch (const Error& e) {
    report(e, path);
    return -EIO;
  }
}

int fs_release(const char*, struct fuse_file_info* fi) {
  std::unique_ptr<OpenFile> owned(reinterpret_cast<OpenFile*>(fi->fh));
  fi->fh = 0;
  return 0;
}

int fs_statfs(const char*, struct statvfs* st) {
  std::memset(st, 0, sizeof *st);
  st->f_bsize = st->f_frsize = 4096;
  st->f_files = server().tree.files();
  st->f_namemax = 255;
  st->f_flag = ST_RDONLY;
  return 0;
}

int refuse_path(const char*) { return -EROFS; }
int refuse_mode(const char*, mode_t) { return -EROFS; }

struct fuse_operations operations() {
  struct fuse_operations ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = fs_init;
  ops.getattr = fs_getattr;
  ops.readdir = fs_readdir;
  ops.open = fs_open;
  ops.read = fs_read;
  ops.release = fs_release;
  ops.statfs = fs_statfs;
  // Read-only: the mount is "ro" (the kernel refuses first); these answer whatever reaches us.
  ops.mkdir = refuse_mode;
  ops.unlink = refuse_path;
  ops.rmdir = refuse_path;
  ops.symlink = [](const char*, const char*) { return -EROFS; };
  ops.rename = [](const char*, const char*, unsigned) { return -EROFS; };
  ops.link = [](const char*, const char*) { return -EROFS; };
  ops.chmod = [](const char*, mode_t, struct fuse_file_info*) { return -EROFS; };
  ops.chown = [](const char*, uid_t, gid_t, struct fuse_file_info*) { return -EROFS; };
  ops.truncate = [](const char*, off_t, struct fuse_file_info*) { return -EROFS; };
  ops.write = [](const char*, const char*, size_t, off_t, struct fuse_file_info*) { return -EROFS; };
  ops.create = [](const char*, mode_t, struct fuse_file_info*) { return -EROFS; };
  ops.mknod = [](const char*, mode_t, dev_t) { return -EROFS; };
  ops.utimens = [](const char*, const struct timespec*, struct fuse_file_info*) { return -EROFS; };
  ops.setxattr = [](const char*, const char*, const char*, size_t, int) { return -EROFS; };
  ops.removexattr = [](const char*, const char*) { return -EROFS; };
  ops.fallocate = [](const char*, int, off_t, off_t, struct fuse_file_info*) { return -EROFS; };
  return ops;
}

// Owns a libfuse handle: unmounts (if mounted) and destroys it.
class FuseHandle {
 public:
  FuseHandle(struct fuse* f) : f_(f) {}
  ~FuseHandle() {
    if (mounted_) fuse_unmount(f_);
    fuse_destroy(f_);
  }
  FuseHandle(const FuseHandle&) = delete;
  FuseHandle& operator=(const FuseHandle&) = delete;
  struct fuse* get() const { return f_; }
  void mounted() { mounted_ = true; }

 private:
  struct fuse* f_;
  bool mounted_ = false;
};

// Owns fuse_args built from strings.
class FuseArgs {
 public:
  explicit FuseArgs(const std::vector<std::string>& words) : words_(words) {
    for (auto& w : words_) argv_.push_back(w.data());
    args_ = FUSE_ARGS_INIT(static_cast<int>(argv_.size()), argv_.data());
  }
  ~FuseArgs() { fuse_opt_free_args(&args_); }
  FuseArgs(const FuseArgs&) = delete;
  FuseArgs& operator=(const FuseArgs&) = delete;
  struct fuse_args* get() { return &args_; }

 private:
  std::vector<std::string> words_;
  std::vector<char*> argv_;
  struct fuse_args args_;
};

// Turns SIGINT, SIGTERM and SIGHUP into `fusermount3 -u -z MOUNTPOINT`, as if
// the user had typed it: the kernel delivers what is still pending (the
// releases of files and directories just closed), then ends the session, and
// the loop returns as after any unmount. Owns the thread that waits for the
// signals (blocked in every thread from construction on) and joins it on
// destruction.
class SignalUnmounter {
 public:
  explicit SignalUnmounter(std::string mountpoint) : mountpoint_(std::move(mountpoint)) {
    sigemptyset(&set_);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) sigaddset(&set_, sig);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
    thread_ = std::thread([this] { wait(); });
  }
  ~SignalUnmounter() {
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
    // Signals that came since are taken here, not delivered when the mask is
    // restored: the session is over already.
    struct timespec now = {0, 0};
    while (sigtimedwait(&set_, nullptr, &now) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SignalUnmounter(const SignalUnmounter&) = delete;
  SignalUnmounter& operator=(const SignalUnmounter&) = delete;

 private:
  void wait() {
    while (true) {
      int sig = 0;
      if (sigwait(&set_, &sig) != 0 || sig == SIGUSR1) return;
      std::vector<std::string> words = {"fusermount3", "-u", "-z", "--", mountpoint_};
      std::vector<char*> argv;
      for (auto& w : words) argv.push_back(w.data());
      argv.push_back(nullptr);
      posix_spawnattr_t attr;
      posix_spawnattr_init(&attr);
      sigset_t none;
      sigemptyset(&none);
      posix_spawnattr_setsigmask(&attr, &none);
      posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
      pid_t pid;
      if (posix_spawnp(&pid, "fusermount3", nullptr, &attr, argv.data(), environ) == 0)
        while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
      posix_spawnattr_destroy(&attr);
    }
  }
  std::string mountpoint_;
  sigset_t set_, old_;
  std::thread thread_;
};

// Escapes a value for a FUSE -o list (',' and '\' are special).
std::string fuse_option_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

void run_mount(const MountOptions& given) {
  MountOptions options = given;
  std::error_code ec;
  options.archive_dir = std::filesystem::absolute(options.archive_dir, ec);
  options.mountpoint = std::filesystem::absolute(options.mountpoint, ec);
  if (!std::filesystem::is_directory(options.mountpoint, ec))
    throw Error(ErrorKind::usage, "the mount point is not a directory", Retry::never,
                {.file = options.mountpoint.string()});

  // The view, from the index as committed now. The archive is closed again
  // before a detached server forks (LMDB environments do not survive fork).
  std::vector<CatalogFolder> catalog;
  {
    auto a = archive::Archive::open(options.archive_dir, archive::Archive::Mode::read);
    catalog = build_catalog(*a, options.catalog);
  }
  Server s{.options = options, .tree = Tree(catalog, static_cast<int64_t>(std::time(nullptr))), .archive = {}, .cache = {},
           .checked = {}};
  s.checked = std::make_unique<std::atomic<bool>[]>(s.tree.size());
  catalog.clear();
  catalog.shrink_to_fit();

  std::string mount_options = "ro,default_permissions,fsname=imapstage:" +
                              fuse_option_value(options.archive_dir.string()) + ",subtype=imapstage";
  if (options.allow_other) mount_options += ",allow_other";
  FuseArgs args({"imapstage", "-o", mount_options});
  auto ops = operations();
  struct fuse* raw = fuse_new(args.get(), &ops, sizeof ops, &s);
  if (!raw) throw Error(ErrorKind::usage, "FUSE refused the mount options", Retry::never);
  FuseHandle fuse(raw);
  if (fuse_mount(fuse.get(), options.mountpoint.c_str()) != 0)
    throw Error(ErrorKind::io, "cannot mount (is FUSE available, /dev/fuse readable, the mount point unused?)",
                Retry::later, {.file = options.mountpoint.string()});
  fuse.mounted();
  if (fuse_daemonize(options.foreground ? 1 : 0) != 0)
    throw Error(ErrorKind::io, "cannot detach the serving process", Retry::later);
  SignalUnmounter signals(options.mountpoint.string());
  s.archive = archive::Archive::open(options.archive_dir, archive::Archive::Mode::read);
  s.cache = std::make_unique<ObjectCache>(*s.archive, options.cache_bytes);
  // A few threads: a reader's next open need not wait for the release of the
  // file before, and readers side by side decompress side by side.
  std::unique_ptr<struct fuse_loop_config, void (*)(struct fuse_loop_config*)> loop(fuse_loop_cfg_create(),
                                                                                    fuse_loop_cfg_destroy);
  if (!loop) throw Error(ErrorKind::internal, "cannot configure the FUSE loop", Retry::never);
  fuse_loop_cfg_set_max_threads(loop.get(), kThreads);
  fuse_loop_cfg_set_idle_threads(loop.get(), kThreads);
  int rc = fuse_loop_mt(fuse.get(), loop.get());
  if (rc < 0)
    throw Error(ErrorKind::io, fmt::format("the FUSE session failed: {}", std::strerror(-rc)), Retry::later,
                {.file = options.mountpoint.string()});
}

}  // namespace imapstage::filesystem

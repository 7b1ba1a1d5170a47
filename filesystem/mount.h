// `imapstage mount`: the archive as a read-only FUSE 3 filesystem of Maildirs
// (the tree of filesystem/tree.h). The only code that touches libfuse.
#pragma once

#include <cstdint>
#include <filesystem>

#include "filesystem/catalog.h"

namespace imapstage::filesystem {

struct MountOptions {
  std::filesystem::path archive_dir;
  std::filesystem::path mountpoint;
  CatalogOptions catalog;          // accounts, layout, all_generations
  bool foreground = false;         // else: return once mounted, serving from a detached process
  bool allow_other = false;        // let other users (e.g. a mail server's user) read it (root, or user_allow_other)
  uint64_t cache_bytes = 8ull << 20;  // decompressed objects kept in memory
  // Objects larger than this are decompressed on open into an unlinked
  // temporary file of their own (TMPDIR) instead of the cache.
  uint64_t spill_bytes = 4ull << 20;
};

// Builds the view from the index's committed state, mounts it read-only at
// `mountpoint` and serves it until `fusermount3 -u`, SIGINT, SIGTERM or
// SIGHUP, then unmounts. Without `foreground` the call returns in the
// calling process as soon as the filesystem is mounted, while a detached
// child serves it. A file is decompressed and SHA-256-checked on its first
// open (EIO for an object that fails its checks, reported on stderr), and
// again whenever its bytes are read back into the cache; every write,
// create, rename, unlink, chmod or truncate gets EROFS. Throws
// Error(not_found/format/...) from opening the archive, Error(usage) for an
// unknown account, Error(io) when the mount fails.
void run_mount(const MountOptions& options);

}  // namespace imapstage::filesystem

// The EML-directory source and the KIND:PATH parser (sources/file_sources.h).
#include <algorithm>
#include <map>

#include <fmt/format.h>
#include <strings.h>

#include "archive-format/hash.h"
#include "common/error.h"
#include "sources/file_sources.h"
#include "sources/source_files.h"

namespace imapstage::sources {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxDepth = 64;
constexpr size_t kMaxPathInIdentity = 800;

bool is_eml(const std::string& name) {
  return name.size() > 4 && strcasecmp(name.c_str() + name.size() - 4, ".eml") == 0;
}

struct Entry {
  fs::path file;
  FileStamp stamp;
};

struct Folder {
  fs::path dir;
  std::vector<std::string> path;
  std::vector<Entry> entries;
};

class EmlSource : public Source {
 public:
  explicit EmlSource(fs::path root) : root_(std::move(root)) {}

  archive::SourceKind kind() const override { return archive::SourceKind::eml; }
  std::string location() const override { return root_.string(); }

  std::vector<SourceFolder> folders() override {
    std::error_code ec;
    if (!fs::is_directory(fs::status(root_, ec)))
      throw Error(ErrorKind::not_found, "no such directory", Retry::never, {.file = root_.string()});
    std::map<std::vector<std::string>, fs::path> found;  // folders holding .eml files
    std::map<std::vector<std::string>, fs::path> all;    // every directory level
    walk(root_, {}, 0, found, all);
    std::vector<SourceFolder> out;
    for (auto& [path, dir] : all) {
      if (path.empty()) continue;
      bool holds = found.count(path) > 0;
      bool parent = std::any_of(found.begin(), found.end(), [&](auto& kv) {
        return kv.first.size() > path.size() && std::equal(path.begin(), path.end(), kv.first.begin());
      });
      if (!holds && !parent) continue;
      out.push_back(make(path, dir, !holds));
    }
    if (found.count({})) {
      // The root's own files are INBOX (unless a directory named INBOX is there too: then they join it).
      auto inbox = std::find_if(out.begin(), out.end(), [](auto& f) { return f.path == std::vector<std::string>{"INBOX"}; });
      if (inbox == out.end()) out.insert(out.begin(), make({"INBOX"}, root_, false));
      else extra_root_ = inbox->handle, inbox->noselect = false;
    }
    std::stable_partition(out.begin(), out.end(), [](auto& f) { return f.path == std::vector<std::string>{"INBOX"}; });
    return out;
  }

  Listing list(const SourceFolder& sf) override {
    Folder& f = folders_.at(sf.handle);
    f.entries.clear();
    Listing listing;
    size_t others = 0;
    auto scan = [&](const fs::path& dir) {
      for (auto& e : list_directory(dir)) {
        if (e.name.empty() || e.name[0] == '.' || e.type == DirEntry::directory) continue;
        if (!is_eml(e.name)) {
          if (e.name != "index.csv") ++others;
          continue;
        }
        fs::path file = dir / e.name;
        if (e.type == DirEntry::link) {
          listing.problems.push_back({file.string(), "a symbolic link; not followed"});
          continue;
        }
        if (e.type != DirEntry::file) {
          listing.problems.push_back({file.string(), "not a regular file; not read"});
          continue;
        }
        std::string rel = file.lexically_relative(root_).string();
        if (rel.size() > kMaxPathInIdentity) rel = "sha256:" + archive::to_hex(archive::sha256(rel));
        SourceMessage m;
        m.id = fmt::format("{}|{}|{}", rel, e.stamp.size, e.stamp.mtime_ns);
        m.size = e.stamp.size;
        m.internaldate = e.stamp.mtime_ns / 1000000000;
        m.date_source = archive::DateSource::file_mtime;
        m.locator = f.entries.size();
        f.entries.push_back({file, e.stamp});
        listing.messages.push_back(std::move(m));
      }
    };
    scan(f.dir);
    if (sf.handle == extra_root_) scan(root_);
    // Files in name order give UIDs in that order.
    if (others) listing.note = fmt::format("{} files not ending in .eml left alone", others);
    return listing;
  }

  void fetch(const SourceFolder& sf, const std::vector<const SourceMessage*>& wanted, uint64_t max_size,
             FetchSink& sink) override {
    Folder& f = folders_.at(sf.handle);
    for (const SourceMessage* m : wanted) {
      if (sink.stop()) return;
      const Entry& e = f.entries.at(m->locator);
      FetchedMessage fetched;
      try {
        fetched.bytes = read_message_file(e.file, e.stamp, max_size);
      } catch (const Error& err) {
        sink.failed(*m, err);
        continue;
      }
      sink.deliver(*m, std::move(fetched));
    }
  }

 private:
  SourceFolder make(const std::vector<std::string>& path, const fs::path& dir, bool noselect) {
    SourceFolder f;
    f.path = path;
    f.location = dir.string();
    f.noselect = noselect;
    f.handle = folders_.size();
    folders_.push_back({dir, path, {}});
    return f;
  }

  void walk(const fs::path& dir, const std::vector<std::string>& path, int depth,
            std::map<std::vector<std::string>, fs::path>& found, std::map<std::vector<std::string>, fs::path>& all) {
    if (depth > kMaxDepth) return;
    std::vector<DirEntry> entries;
    try {
      entries = list_directory(dir);
    } catch (const Error&) {
      if (depth == 0) throw;
      return;  // an unreadable subdirectory holds no folder we can read
    }
    all[path] = dir;
    for (auto& e : entries) {
      if (e.name.empty() || e.name[0] == '.') continue;
      if (e.type == DirEntry::directory) {
        auto child = path;
        child.push_back(e.name);
        walk(dir / e.name, child, depth + 1, found, all);
      } else if (is_eml(e.name)) {
        found[path] = dir;
      }
    }
  }

  fs::path root_;
  std::vector<Folder> folders_;
  uint64_t extra_root_ = UINT64_MAX;  // the INBOX folder that also takes the root's own files
};

}  // namespace

std::unique_ptr<Source> open_eml_directory(const fs::path& root) { return std::make_unique<EmlSource>(root); }

std::unique_ptr<Source> open_file_source(std::string_view spec) {
  auto colon = spec.find(':');
  std::string kind(spec.substr(0, colon == std::string_view::npos ? 0 : colon));
  std::string path(colon == std::string_view::npos ? std::string_view() : spec.substr(colon + 1));
  if (path.empty() || (kind != "maildir" && kind != "mbox" && kind != "eml"))
    throw Error(ErrorKind::usage,
                fmt::format("--source '{}': give maildir:PATH, mbox:PATH or eml:PATH", std::string(spec)));
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw Error(ErrorKind::not_found, "no such file or directory", Retry::never, {.file = path});
  if (kind == "maildir") return open_maildir(path);
  if (kind == "mbox") return open_mbox(path);
  return open_eml_directory(path);
}

}  // namespace imapstage::sources

// The Maildir source (sources/file_sources.h).
#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include "common/error.h"
#include "imap/utf7.h"
#include "sources/file_sources.h"
#include "sources/source_files.h"

namespace imapstage::sources {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxDepth = 64;

bool has_dir(const std::vector<DirEntry>& entries, std::string_view name) {
  return std::any_of(entries.begin(), entries.end(),
                     [&](const DirEntry& e) { return e.name == name && e.type == DirEntry::directory; });
}

bool is_mail_dir(const fs::path& dir) {
  std::error_code ec;
  auto cur = fs::symlink_status(dir / "cur", ec);
  auto fresh = fs::symlink_status(dir / "new", ec);
  return fs::is_directory(cur) || fs::is_directory(fresh);
}

// A Maildir++ level in modified UTF-7 ("&AMk-l&AOk-ments"), kept as it is when it does not decode.
std::string decode_level(const std::string& raw) {
  if (auto utf8 = imap::utf7_decode_strict(raw)) return *utf8;
  return level_name(raw);
}

// The keywords of a folder's dovecot-keywords file ("0 $Label1" per line), by index.
std::map<int, std::string> read_keywords(const fs::path& dir) {
  std::map<int, std::string> out;
  std::string text;
  try {
    auto f = ReadOnlyFile::open(dir / "dovecot-keywords");
    if (f.stamp.size > (1 << 20)) return out;
    f.read_at(0, f.stamp.size, text);
  } catch (const Error&) {
    return out;  // none (or unreadable: the messages keep their system flags)
  }
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    size_t space = line.find(' ');
    if (space != std::string_view::npos && space > 0) {
      int index = 0;
      bool ok = space <= 2;
      for (size_t i = 0; i < space && ok; ++i) ok = line[i] >= '0' && line[i] <= '9';
      if (ok) {
        for (size_t i = 0; i < space; ++i) index = index * 10 + (line[i] - '0');
        std::string name(line.substr(space + 1));
        if (!name.empty() && name.back() == '\r') name.pop_back();
        if (index < 26 && !name.empty()) out[index] = name;
      }
    }
    pos = eol + 1;
  }
  return out;
}

// ",W=1234" in a Maildir base name: the message's size with CRLF line ends.
std::optional<uint64_t> w_size(std::string_view base) {
  auto pos = base.find(",W=");
  if (pos == std::string_view::npos) return std::nullopt;
  uint64_t v = 0;
  size_t i = pos + 3, digits = 0;
  for (; i < base.size() && base[i] >= '0' && base[i] <= '9' && digits < 18; ++i, ++digits) v = v * 10 + (base[i] - '0');
  if (!digits) return std::nullopt;
  return v;
}

struct Entry {
  fs::path file;
  FileStamp stamp;
  std::string base;
};

struct Folder {
  fs::path dir;
  std::vector<Entry> entries;  // of the last listing
};

class MaildirSource : public Source {
 public:
  explicit MaildirSource(fs::path root) : root_(std::move(root)) {}

  archive::SourceKind kind() const override { return archive::SourceKind::maildir; }
  std::string location() const override { return root_.string(); }

  std::vector<SourceFolder> folders() override {
    auto top = list_directory(root_);  // throws not_found for a missing root
    bool plus = false;
    for (auto& e : top)
      if (e.type == DirEntry::directory && e.name.size() > 1 && e.name[0] == '.' && is_mail_dir(root_ / e.name))
        plus = true;
    std::map<std::vector<std::string>, fs::path> found;  // path -> directory (sorted: parents first)
    if (is_mail_dir(root_)) found[{"INBOX"}] = root_;
    if (plus) {
      for (auto& e : top) {
        if (e.type != DirEntry::directory || e.name.size() < 2 || e.name[0] != '.' || !is_mail_dir(root_ / e.name))
          continue;
        std::vector<std::string> path;
        std::string name = e.name.substr(1);
        size_t start = 0;
        bool bad = false;
        while (start <= name.size()) {
          size_t dot = name.find('.', start);
          if (dot == std::string::npos) dot = name.size();
          if (dot == start) bad = true;
          path.push_back(decode_level(name.substr(start, dot - start)));
          start = dot + 1;
        }
        if (bad) continue;  // "..x" or "x." is no folder name
        if (path.size() == 1 && path[0] == "INBOX" && found.count({"INBOX"})) continue;
        found[path] = root_ / e.name;
      }
    } else {
      walk_nested(root_, {}, 0, found);
    }
    std::vector<SourceFolder> out;
    std::set<std::vector<std::string>> made;
    auto add = [&](const std::vector<std::string>& path, const fs::path* dir) {
      if (!made.insert(path).second) return;
      SourceFolder f;
      f.path = path;
      f.noselect = dir == nullptr;
      f.location = dir ? dir->string() : root_.string();
      if (dir) {
        f.handle = folders_.size();
        folders_.push_back({*dir, {}});
      }
      out.push_back(std::move(f));
    };
    for (auto& [path, dir] : found) {
      // Parents without a Maildir of their own hold no messages.
      for (size_t n = 1; n < path.size(); ++n) {
        std::vector<std::string> parent(path.begin(), path.begin() + n);
        if (!found.count(parent)) add(parent, nullptr);
      }
      add(path, &dir);
    }
    // INBOX first, then parents before children (the map's order).
    std::stable_partition(out.begin(), out.end(),
                          [](const SourceFolder& f) { return f.path == std::vector<std::string>{"INBOX"}; });
    return out;
  }

  Listing list(const SourceFolder& folder) override {
    Listing listing;
    Folder& f = folders_.at(folder.handle);
    f.entries.clear();
    auto keywords = read_keywords(f.dir);
    std::set<std::string> bases;
    struct Found {
      SourceMessage message;
      Entry entry;
    };
    std::vector<Found> found;
    for (const char* sub : {"cur", "new"}) {
      fs::path dir = f.dir / sub;
      std::vector<DirEntry> entries;
      try {
        entries = list_directory(dir);
      } catch (const Error& e) {
        // A folder without new/ is fine; one whose messages cannot be listed is not listed at
        // all (its archived messages must not look expunged).
        if (e.kind() == ErrorKind::not_found) continue;
        throw;
      }
      for (auto& e : entries) {
        if (e.name.empty() || e.name[0] == '.') continue;  // hidden files are no messages (as in Dovecot)
        fs::path file = dir / e.name;
        if (e.type == DirEntry::link) {
          listing.problems.push_back({file.string(), "a symbolic link; not followed"});
          continue;
        }
        if (e.type != DirEntry::file) {
          listing.problems.push_back({file.string(), "not a regular file; not read"});
          continue;
        }
        std::string base = e.name;
        std::string info;
        if (auto colon = e.name.find(":2,"); colon != std::string::npos) {
          base = e.name.substr(0, colon);
          info = e.name.substr(colon + 3);
        } else if (auto colon1 = e.name.find(':'); colon1 != std::string::npos) {
          base = e.name.substr(0, colon1);  // ":1," experimental info: no flags
        }
        if (!bases.insert(base).second) continue;  // seen in cur/ already (moved meanwhile)
        SourceMessage m;
        m.id = base;
        for (char c : info) {
          switch (c) {
            case 'D': m.flags |= archive::kDraft; break;
            case 'F': m.flags |= archive::kFlagged; break;
            case 'R': m.flags |= archive::kAnswered; break;
            case 'S': m.flags |= archive::kSeen; break;
            case 'T': m.flags |= archive::kDeleted; break;
            default:
              if (c >= 'a' && c <= 'z') {
                if (auto k = keywords.find(c - 'a'); k != keywords.end()) m.keywords.push_back(k->second);
              }
          }
        }
        std::sort(m.keywords.begin(), m.keywords.end());
        m.keywords.erase(std::unique(m.keywords.begin(), m.keywords.end()), m.keywords.end());
        m.size = w_size(base).value_or(e.stamp.size);
        m.internaldate = e.stamp.mtime_ns / 1000000000;
        m.internaldate_tz = 0;
        m.date_source = archive::DateSource::file_mtime;
        found.push_back({std::move(m), {file, e.stamp, base}});
      }
    }
    // Oldest first, as a server gives out UIDs; the name breaks ties.
    std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
      if (a.entry.stamp.mtime_ns != b.entry.stamp.mtime_ns) return a.entry.stamp.mtime_ns < b.entry.stamp.mtime_ns;
      return a.entry.base < b.entry.base;
    });
    for (auto& x : found) {
      x.message.locator = f.entries.size();
      f.entries.push_back(std::move(x.entry));
      listing.messages.push_back(std::move(x.message));
    }
    return listing;
  }

  void fetch(const SourceFolder& folder, const std::vector<const SourceMessage*>& wanted, uint64_t max_size,
             FetchSink& sink) override {
    Folder& f = folders_.at(folder.handle);
    for (const SourceMessage* m : wanted) {
      if (sink.stop()) return;
      const Entry& entry = f.entries.at(m->locator);
      FetchedMessage fetched;
      try {
        try {
          fetched.bytes = read_message_file(entry.file, entry.stamp, max_size);
        } catch (const Error& e) {
          // A client may have renamed the file (new flags, or new/ to cur/) since the listing.
          if (e.kind() != ErrorKind::not_found) throw;
          auto moved = find_moved(f.dir, entry.base);
          if (!moved) throw;
          fetched.bytes = read_message_file(moved->first, moved->second, max_size);
        }
      } catch (const Error& e) {
        sink.failed(*m, e);
        continue;
      }
      sink.deliver(*m, std::move(fetched));
    }
  }

 private:
  // Collects the folders of a nested Maildir below `dir` (at `path`).
  void walk_nested(const fs::path& dir, const std::vector<std::string>& path, int depth,
                   std::map<std::vector<std::string>, fs::path>& found) {
    if (depth > kMaxDepth) return;
    std::vector<DirEntry> entries;
    try {
      entries = list_directory(dir);
    } catch (const Error&) {
      if (depth == 0) throw;
      return;
    }
    if (!path.empty() && (has_dir(entries, "cur") || has_dir(entries, "new"))) found[path] = dir;
    for (auto& e : entries) {
      if (e.type != DirEntry::directory || e.name[0] == '.' || e.name == "cur" || e.name == "new" ||
          e.name == "tmp")
        continue;
      auto child = path;
      child.push_back(level_name(e.name));
      if (depth == 0 && e.name == "INBOX" && found.count({"INBOX"})) continue;  // the root is INBOX already
      walk_nested(dir / e.name, child, depth + 1, found);
    }
  }

  static std::optional<std::pair<fs::path, FileStamp>> find_moved(const fs::path& dir, const std::string& base) {
    for (const char* sub : {"cur", "new"}) {
      std::vector<DirEntry> entries;
      try {
        entries = list_directory(dir / sub);
      } catch (const Error&) {
        continue;
      }
      for (auto& e : entries)
        if (e.type == DirEntry::file && (e.name == base || e.name.rfind(base + ":", 0) == 0))
          return std::make_pair(dir / sub / e.name, e.stamp);
    }
    return std::nullopt;
  }

  fs::path root_;
  std::vector<Folder> folders_;
};

}  // namespace

std::unique_ptr<Source> open_maildir(const fs::path& root) { return std::make_unique<MaildirSource>(root); }

}  // namespace imapstage::sources

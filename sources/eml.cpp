// The EML-directory source and the KIND:PATH parser (sources/file_sources.h).
#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>

#include <fmt/format.h>
#include <strings.h>

#include "archive-format/hash.h"
#include "common/error.h"
#include "sources/file_sources.h"
#include "sources/message_text.h"
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

// One row of an index.csv as `imapstage extract --to eml` writes it.
struct IndexRow {
  int64_t internaldate = 0;
  int32_t tz = 0;
  uint32_t flags = 0;
  std::vector<std::string> keywords;
  uint64_t size = 0;
};

// RFC 4180 records of `text` (quoted fields, "" inside quotes, CRLF or LF).
std::vector<std::vector<std::string>> csv_records(std::string_view text) {
  std::vector<std::vector<std::string>> out;
  std::vector<std::string> record;
  std::string field;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
      else if (c == '"') quoted = false;
      else field += c;
    } else if (c == '"') {
      quoted = any = true;
    } else if (c == ',') {
      record.push_back(std::move(field));
      field.clear();
      any = true;
    } else if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (any || !field.empty()) {
        record.push_back(std::move(field));
        out.push_back(std::move(record));
      }
      record.clear();
      field.clear();
      any = false;
    } else {
      field += c;
      any = true;
    }
  }
  if (any || !field.empty()) {
    record.push_back(std::move(field));
    out.push_back(std::move(record));
  }
  return out;
}

// "2023-01-02T03:04:05+01:00" (extract's internaldate column).
bool parse_iso(const std::string& t, int64_t& unix_seconds, int32_t& tz) {
  int y, mo, d, h, mi, s, zh, zm;
  char sign;
  if (t.size() != 25 || std::sscanf(t.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c%2d:%2d", &y, &mo, &d, &h, &mi, &s, &sign,
                                    &zh, &zm) != 9 || (sign != '+' && sign != '-'))
    return false;
  auto date = parse_rfc5322_date(fmt::format("{} {} {} {:02}:{:02}:{:02} {}{:02}{:02}", d,
                                             std::string("JanFebMarAprMayJunJulAugSepOctNovDec")
                                                 .substr(static_cast<size_t>(std::clamp(mo, 1, 12) - 1) * 3, 3),
                                             y, h, mi, s, sign, zh, zm));
  if (!date || mo < 1 || mo > 12) return false;
  unix_seconds = date->unix_seconds;
  tz = date->tz_minutes;
  return true;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    size_t j = s.find(' ', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// The rows of DIR/index.csv by UID, when it is extract's; empty otherwise.
std::map<uint32_t, IndexRow> read_index(const fs::path& dir) {
  std::map<uint32_t, IndexRow> out;
  std::string text;
  try {
    auto f = ReadOnlyFile::open(dir / "index.csv");
    if (f.stamp.size > (64u << 20)) return out;
    f.read_at(0, static_cast<size_t>(f.stamp.size), text);
  } catch (const Error&) {
    return out;
  }
  auto records = csv_records(text);
  if (records.empty() || records[0].size() < 5 || records[0][0] != "uid" || records[0][1] != "internaldate" ||
      records[0][2] != "flags" || records[0][3] != "keywords" || records[0][4] != "size")
    return out;
  for (size_t r = 1; r < records.size(); ++r) {
    auto& rec = records[r];
    if (rec.size() < 5 || rec[0].empty() || rec[0].size() > 10 || rec[4].empty() || rec[4].size() > 18 ||
        rec[0].find_first_not_of("0123456789") != std::string::npos ||
        rec[4].find_first_not_of("0123456789") != std::string::npos)
      continue;
    IndexRow row;
    if (!parse_iso(rec[1], row.internaldate, row.tz)) continue;
    auto flags = words(rec[2]);
    for (auto& k : words(rec[3])) flags.push_back(k);
    archive::parse_flags(flags, row.flags, row.keywords);
    row.size = std::stoull(rec[4]);
    out[static_cast<uint32_t>(std::stoull(rec[0]))] = std::move(row);
  }
  return out;
}

// The UID in "<uidvalidity>-<uid>.eml", extract's file name.
std::optional<uint32_t> uid_of(const std::string& name) {
  auto dash = name.find('-');
  if (dash == std::string::npos || dash == 0 || name.size() < dash + 6) return std::nullopt;
  std::string uid = name.substr(dash + 1, name.size() - dash - 5);
  if (uid.empty() || uid.size() > 10 || uid.find_first_not_of("0123456789") != std::string::npos ||
      name.substr(0, dash).find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  uint64_t v = std::stoull(uid);
  if (v > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(v);
}

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
    for (auto& level : all) {
      const std::vector<std::string>& path = level.first;  // (a structured binding cannot be captured in C++20)
      const fs::path& dir = level.second;
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
    size_t others = 0, indexed = 0;
    auto scan = [&](const fs::path& dir) {
      auto index = read_index(dir);
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
        if (auto uid = uid_of(e.name); uid && index.count(*uid) && index[*uid].size == e.stamp.size) {
          // Written by extract: its index.csv keeps the flags, keywords and INTERNALDATE with its zone.
          auto& row = index[*uid];
          m.flags = row.flags;
          m.keywords = row.keywords;
          m.internaldate = row.internaldate;
          m.internaldate_tz = row.tz;
          m.date_source = archive::DateSource::server;
          ++indexed;
        }
        m.locator = f.entries.size();
        f.entries.push_back({file, e.stamp});
        listing.messages.push_back(std::move(m));
      }
    };
    scan(f.dir);
    if (sf.handle == extra_root_) scan(root_);
    // Files in name order give UIDs in that order.
    if (others) listing.note = fmt::format("{} files not ending in .eml left alone", others);
    if (indexed)
      listing.note += fmt::format("{}flags and dates of {} messages from index.csv", others ? "; " : "", indexed);
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
        child.push_back(level_name(e.name));
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
    throw Error(ErrorKind::usage, fmt::format("--source {}: no such file or directory", kind), Retry::never,
                {.file = path});
  if (kind == "maildir") return open_maildir(path);
  if (kind == "mbox") return open_mbox(path);
  return open_eml_directory(path);
}

}  // namespace imapstage::sources

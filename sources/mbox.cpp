// The mbox source (sources/file_sources.h).
//
// A file is read twice, in pieces of at most 1 MiB, never whole: list() scans
// it for message boundaries (and reads Status:, X-Status:, X-Keywords: and
// Content-Length: from each header section), fetch() reads each wanted
// message's byte range again, unescapes and converts it, and checks that its
// identity still matches, so a file rewritten meanwhile is reported rather
// than archived half-changed. Messages appended meanwhile are left for the
// next run.
//
// Boundaries: a line starting with "From " at the start of the file or after
// an empty line, whose date parses (the first line of the file needs no
// date). The empty line before a boundary separates messages and is no part
// of either. A message with a Content-Length: that ends exactly at the next
// boundary (or the end of the file) is cut there and taken verbatim (mboxcl2);
// the others are unescaped as mboxrd (one '>' off lines matching ^>+From ),
// which reads mboxo files the same way except for lines that were
// ">>From " in the original, which mboxo cannot represent.
#include <algorithm>
#include <cstring>
#include <map>

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

constexpr size_t kChunk = 1 << 20;
constexpr int kMaxDepth = 64;

bool is_blank(std::string_view line) { return line == "\n" || line == "\r\n"; }

// ">From ", ">>From ", ...: how many '>' precede "From ", or 0.
size_t escape_depth(std::string_view line) {
  size_t n = 0;
  while (n < line.size() && line[n] == '>') ++n;
  return n > 0 && line.substr(n, 5) == "From " ? n : 0;
}

bool field_is(std::string_view line, std::string_view name) {
  return line.size() > name.size() && line[name.size()] == ':' &&
         strncasecmp(line.data(), name.data(), name.size()) == 0;
}

std::string field_value(std::string_view line, size_t name_size) {
  std::string_view v = line.substr(name_size + 1);
  while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) v.remove_suffix(1);
  size_t b = v.find_first_not_of(" \t");
  return b == std::string_view::npos ? std::string() : std::string(v.substr(b));
}

// Reads [start, end) of a file as lines (each with its '\n'); a line longer
// than kChunk comes in pieces, the later ones with line_start false.
class LineReader {
 public:
  LineReader(const ReadOnlyFile& file, uint64_t start, uint64_t end) : file_(file), end_(end) { seek(start); }

  void seek(uint64_t offset) {
    buf_.clear();
    pos_ = 0;
    buf_offset_ = offset;
    line_start_ = true;
  }

  bool next(std::string_view& piece, uint64_t& offset, bool& line_start) {
    for (;;) {
      std::string_view avail(buf_.data() + pos_, buf_.size() - pos_);
      size_t nl = avail.find('\n');
      bool at_end = buf_offset_ + buf_.size() >= end_;
      if (nl != std::string_view::npos || avail.size() >= kChunk || (at_end && !avail.empty())) {
        size_t n = nl != std::string_view::npos ? nl + 1 : std::min(avail.size(), kChunk);
        piece = avail.substr(0, n);
        offset = buf_offset_ + pos_;
        line_start = line_start_;
        line_start_ = piece.back() == '\n';
        pos_ += n;
        return true;
      }
      if (at_end) return false;
      // Refill: keep the unread part, read up to a chunk more.
      buf_.erase(0, pos_);
      buf_offset_ += pos_;
      pos_ = 0;
      uint64_t from = buf_offset_ + buf_.size();
      size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, end_ - from));
      file_.read_at(from, want, chunk_);
      if (chunk_.empty()) {
        end_ = from;  // the file is shorter than it was
        continue;
      }
      buf_ += chunk_;
    }
  }

 private:
  const ReadOnlyFile& file_;
  uint64_t end_;
  std::string buf_, chunk_;
  size_t pos_ = 0;
  uint64_t buf_offset_ = 0;
  bool line_start_ = true;
};

// The identity of an mbox message: SHA-256 of its From line and header
// section without the fields a mail client rewrites, and the body's length.
class IdentityHasher {
 public:
  void from_line(std::string_view line) { sha_.update(line); }
  // One piece of the header section (in_headers() until the empty line).
  void header_piece(std::string_view piece, bool line_start) {
    if (line_start) {
      if (is_blank(piece)) {
        in_headers_ = false;
        return;
      }
      if (piece[0] != ' ' && piece[0] != '\t') {
        skipping_ = false;
        for (auto name : {"Status", "X-Status", "X-Keywords", "X-UID", "Content-Length", "Lines"})
          if (field_is(piece, name)) skipping_ = true;
      }
    }
    if (!skipping_) sha_.update(piece);
  }
  bool in_headers() const { return in_headers_; }
  std::string finish(uint64_t body_length) {
    return fmt::format("{}:{}", archive::to_hex(sha_.finish()).substr(0, 40), body_length);
  }

 private:
  archive::Sha256 sha_;
  bool in_headers_ = true;
  bool skipping_ = false;
};

// A fast 64-bit checksum of a message's bytes in the file, to notice a
// message rewritten in place between listing and reading (not a content
// address: the archive's SHA-256 is computed from what is read).
class FastSum {
 public:
  void update(std::string_view s) {
    len_ += s.size();
    size_t i = 0;
    if (tail_n_) {
      while (tail_n_ < 8 && i < s.size()) tail_[tail_n_++] = s[i++];
      if (tail_n_ < 8) return;
      h_ = mix(h_, word(tail_));
      tail_n_ = 0;
    }
    for (; i + 8 <= s.size(); i += 8) h_ = mix(h_, word(s.data() + i));
    while (i < s.size()) tail_[tail_n_++] = s[i++];
  }
  uint64_t finish() const {
    char last[8] = {};
    std::memcpy(last, tail_, tail_n_);
    return mix(mix(h_, word(last) ^ (uint64_t(tail_n_) << 56)), len_);
  }

 private:
  static uint64_t word(const char* p) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
  }
  static uint64_t mix(uint64_t h, uint64_t w) {
    h ^= w * 0xff51afd7ed558ccdull;
    return (h << 31 | h >> 33) * 0xc4ceb9fe1a85ec53ull;
  }
  uint64_t h_ = 0x9e3779b97f4a7c15ull;
  uint64_t len_ = 0;
  char tail_[8] = {};
  size_t tail_n_ = 0;
};

struct Entry {
  uint64_t from_offset = 0;  // the From line
  uint64_t start = 0;        // the message's first byte
  uint64_t end = 0;          // one past its last byte (before the separating empty line)
  bool verbatim = false;     // cut by Content-Length (mboxcl2): no unescaping
  std::string identity;      // without the occurrence suffix
  uint64_t sum = 0;          // FastSum of the bytes [start, end)
};

struct Folder {
  fs::path file;
  std::string problem;       // a link or special file: reported by list()
  FileStamp stamp;           // at the last listing
  std::vector<Entry> entries;
};

class MboxSource : public Source {
 public:
  explicit MboxSource(fs::path path) : path_(std::move(path)) {}

  archive::SourceKind kind() const override { return archive::SourceKind::mbox; }
  std::string location() const override { return path_.string(); }

  std::vector<SourceFolder> folders() override {
    std::error_code ec;
    auto st = fs::status(path_, ec);  // the path given may be a link (the user's choice)
    if (ec || !fs::exists(st))
      throw Error(ErrorKind::not_found, "no such file or directory", Retry::never, {.file = path_.string()});
    std::vector<SourceFolder> out;
    if (!fs::is_directory(st)) {
      add(out, {"INBOX"}, path_, "", false);
      return out;
    }
    std::map<std::vector<std::string>, std::pair<fs::path, std::string>> found;
    walk(path_, {}, 0, found);
    std::map<std::vector<std::string>, bool> made;
    for (auto& [p, what] : found) {
      for (size_t n = 1; n < p.size(); ++n) {
        std::vector<std::string> parent(p.begin(), p.begin() + n);
        if (!found.count(parent) && !made.count(parent)) {
          made[parent] = true;
          add(out, parent, path_, "", true);
        }
      }
      made[p] = true;
      add(out, p, what.first, what.second, false);
    }
    std::stable_partition(out.begin(), out.end(), [](auto& f) { return f.path == std::vector<std::string>{"INBOX"}; });
    return out;
  }

  Listing list(const SourceFolder& sf) override {
    Folder& f = folders_.at(sf.handle);
    Listing listing;
    f.entries.clear();
    if (!f.problem.empty()) {
      listing.problems.push_back({f.file.string(), f.problem});
      return listing;
    }
    ReadOnlyFile file = ReadOnlyFile::open(f.file);
    f.stamp = file.stamp;
    const uint64_t size = file.stamp.size;
    const std::string name = f.file.string();

    struct Current {
      bool open = false;
      Entry entry;
      IdentityHasher hasher;
      uint64_t header_end = 0;
      std::optional<uint64_t> content_length;
      SourceMessage message;
      FastSum sum;
      std::string held;  // an empty line not yet summed: it may be the separator before the next message
    } cur;
    std::map<std::string, uint32_t> occurrences;
    size_t verbatim = 0, rd_evidence = 0;
    bool prev_blank = true;       // the start of the file counts as after an empty line
    uint64_t blank_at = 0;        // offset of the last line when it was empty
    constexpr uint64_t kNone = UINT64_MAX;
    uint64_t junk_start = kNone;  // where bytes before the first From line begin

    auto close = [&](uint64_t end) {
      if (!cur.open) return;
      cur.open = false;
      Entry& e = cur.entry;
      e.end = end;
      uint64_t body = cur.header_end && end >= cur.header_end ? end - cur.header_end : 0;
      if (end <= e.start) {
        listing.problems.push_back({fmt::format("{} at byte {}", name, e.from_offset), "an empty message; skipped"});
        return;
      }
      e.identity = cur.hasher.finish(body);
      if (!(prev_blank && end == blank_at)) cur.sum.update(cur.held);  // the separator is no part of it
      e.sum = cur.sum.finish();
      SourceMessage& m = cur.message;
      m.id = fmt::format("{}#{}", e.identity, ++occurrences[e.identity]);
      m.size = end - e.start;
      m.locator = f.entries.size();
      f.entries.push_back(e);
      listing.messages.push_back(std::move(m));
    };
    auto open_message = [&](std::string_view from_line, uint64_t offset) {
      cur = Current{};
      cur.open = true;
      cur.entry.from_offset = offset;
      cur.entry.start = offset + from_line.size();
      cur.hasher.from_line(from_line);
      if (auto d = parse_from_line_date(from_line)) {
        cur.message.internaldate = d->unix_seconds;
        cur.message.internaldate_tz = d->tz_minutes;
        cur.message.date_source = archive::DateSource::from_line;
      }
    };

    LineReader reader(file, 0, size);
    std::string_view p;
    uint64_t off = 0;
    bool ls = false;
    while (reader.next(p, off, ls)) {
      bool boundary = ls && p.substr(0, 5) == "From " && prev_blank &&
                      (off == 0 || parse_from_line_date(p).has_value());
      if (boundary) {
        close(prev_blank && off > 0 ? blank_at : off);
        if (junk_start != kNone) {
          listing.problems.push_back({fmt::format("{} at byte {}", name, junk_start),
                                      fmt::format("{} bytes before the first From line are not a message (not an "
                                                  "mbox file?); skipped", off - junk_start)});
          junk_start = kNone;
        }
        open_message(p, off);
        prev_blank = false;
        continue;
      }
      if (!cur.open) {
        if (junk_start == kNone && f.entries.empty()) junk_start = off;
        prev_blank = ls && is_blank(p);
        if (prev_blank) blank_at = off;
        continue;
      }
      cur.sum.update(cur.held);
      cur.held.clear();
      if (ls && is_blank(p)) cur.held.assign(p);
      else cur.sum.update(p);
      if (cur.hasher.in_headers()) {
        cur.hasher.header_piece(p, ls);
        if (!cur.hasher.in_headers()) {
          cur.header_end = off + p.size();
          if (cur.content_length) {
            // mboxcl2: the body is exactly Content-Length bytes when the next boundary (or the end) is there.
            uint64_t ce = cur.header_end + *cur.content_length;
            std::optional<uint64_t> next_from;
            bool fits = false;
            if (ce == size) {
              fits = true;
            } else if (ce < size) {
              std::string look;
              file.read_at(ce, 1024, look);
              if (look == "\n" && ce + 1 == size) fits = true;
              size_t skip = look.rfind("\nFrom ", 0) == 0 ? 1 : look.rfind("\r\nFrom ", 0) == 0 ? 2 : 0;
              if (look.compare(skip, 5, "From ") == 0 && (skip > 0 || (ce > 0 && prev_blank_before(file, ce)))) {
                std::string_view line(look.data() + skip, look.size() - skip);
                if (auto nl = line.find('\n'); nl != std::string_view::npos) line = line.substr(0, nl + 1);
                if (parse_from_line_date(line)) {
                  fits = true;
                  next_from = ce + skip;
                }
              }
            }
            if (fits) {
              // The body is summed from the file directly, without looking for lines.
              cur.sum.update(cur.held);
              cur.held.clear();
              std::string piece;
              for (uint64_t at = cur.header_end; at < ce;) {
                file.read_at(at, static_cast<size_t>(std::min<uint64_t>(kChunk, ce - at)), piece);
                if (piece.empty()) break;
                cur.sum.update(piece);
                at += piece.size();
              }
              prev_blank = false;
              cur.entry.verbatim = true;
              ++verbatim;
              close(ce);
              if (!next_from) break;
              reader.seek(*next_from);
              prev_blank = true;
              continue;
            }
          }
        } else if (ls) {
          if (field_is(p, "Status")) {
            for (char c : field_value(p, 6))
              if (c == 'R') cur.message.flags |= archive::kSeen;
          } else if (field_is(p, "X-Status")) {
            for (char c : field_value(p, 8)) {
              if (c == 'A') cur.message.flags |= archive::kAnswered;
              if (c == 'F') cur.message.flags |= archive::kFlagged;
              if (c == 'T') cur.message.flags |= archive::kDraft;
              if (c == 'D') cur.message.flags |= archive::kDeleted;
            }
          } else if (field_is(p, "X-Keywords")) {
            std::string v = field_value(p, 10);
            size_t i = 0;
            while (i < v.size()) {
              while (i < v.size() && (v[i] == ' ' || v[i] == ',' || v[i] == '\t')) ++i;
              size_t j = i;
              while (j < v.size() && v[j] != ' ' && v[j] != ',' && v[j] != '\t') ++j;
              if (j > i) cur.message.keywords.emplace_back(v.substr(i, j - i));
              i = j;
            }
          } else if (field_is(p, "Content-Length")) {
            std::string v = field_value(p, 14);
            if (!v.empty() && v.size() <= 15 && v.find_first_not_of("0123456789") == std::string::npos)
              cur.content_length = std::stoull(v);
          }
        }
      } else if (ls && escape_depth(p) >= 2) {
        ++rd_evidence;
      }
      prev_blank = ls && is_blank(p);
      if (prev_blank) blank_at = off;
    }
    if (cur.open) {
      if (size > 0 && !last_byte_is_newline(file, size)) {
        listing.problems.push_back(
            {fmt::format("{} at byte {}", name, cur.entry.from_offset),
             "the last message ends without a line end (the file looks truncated); not archived"});
        cur.open = false;
      } else {
        close(prev_blank && blank_at >= cur.entry.start ? blank_at : size);
      }
    }
    if (junk_start != kNone)
      listing.problems.push_back({fmt::format("{} at byte {}", name, junk_start),
                                  size == 0 ? "an empty file" : "no From line: not an mbox file; skipped"});
    if (size == 0) listing.problems.clear();  // an empty mbox is an empty folder
    if (file.current() != f.stamp)
      listing.note = "the file changed while it was listed; messages added meanwhile are left for the next run";
    std::string variant = verbatim ? "mboxcl2" : rd_evidence ? "mboxrd" : "mboxo";
    std::string note = fmt::format("{} ({} messages{})", variant, listing.messages.size(),
                                   verbatim && verbatim != listing.messages.size()
                                       ? fmt::format(", {} cut by Content-Length", verbatim)
                                       : "");
    listing.note = listing.note.empty() ? note : note + "; " + listing.note;
    return listing;
  }

  void fetch(const SourceFolder& sf, const std::vector<const SourceMessage*>& wanted, uint64_t max_size,
             FetchSink& sink) override {
    Folder& f = folders_.at(sf.handle);
    std::optional<ReadOnlyFile> file;
    try {
      file = ReadOnlyFile::open(f.file);
    } catch (const Error& e) {
      for (auto* m : wanted) sink.failed(*m, e);
      return;
    }
    const std::string name = f.file.string();
    for (const SourceMessage* m : wanted) {
      if (sink.stop()) return;
      const Entry& e = f.entries.at(m->locator);
      auto at = [&](const std::string& what, ErrorKind kind = ErrorKind::corrupt, Retry retry = Retry::never) {
        return Error(kind, fmt::format("at byte {}: {}", e.from_offset, what), retry, {.file = name});
      };
      try {
        FileStamp now = file->current();
        if (now.device != f.stamp.device || now.inode != f.stamp.inode || now.size < e.end)
          throw at("the file changed since it was listed (replaced or shortened); not archived", ErrorKind::io,
                   Retry::later);
        if (e.end - e.start > max_size)
          throw at(fmt::format("{} bytes is over the maximum message size of {} bytes (--max-message-size); not read",
                               e.end - e.start, max_size),
                   ErrorKind::limit);
        FetchedMessage out;
        out.bytes.reserve(static_cast<size_t>(e.end - e.start + (e.end - e.start) / 32 + 64));
        IdentityHasher hasher;
        std::string from_line;
        file->read_at(e.from_offset, static_cast<size_t>(e.start - e.from_offset), from_line);
        hasher.from_line(from_line);
        uint64_t header_end = 0;
        bool prev_cr = false;
        LineReader reader(*file, e.start, e.end);
        std::string_view p;
        uint64_t off = 0;
        bool ls = false;
        uint64_t read = 0;
        FastSum sum;
        while (reader.next(p, off, ls)) {
          read += p.size();
          sum.update(p);
          if (hasher.in_headers()) {
            hasher.header_piece(p, ls);
            if (!hasher.in_headers()) header_end = off + p.size();
          } else if (!e.verbatim && ls && escape_depth(p) > 0) {
            p.remove_prefix(1);  // ">From " -> "From ", ">>From " -> ">From "
          }
          append_crlf(out.bytes, p, prev_cr);
        }
        uint64_t body = header_end ? e.end - header_end : 0;
        if (read != e.end - e.start || hasher.finish(body) != e.identity || sum.finish() != e.sum)
          throw at("the message changed since the file was listed; not archived", ErrorKind::io, Retry::later);
        if (!m->internaldate) {
          archive::DateSource source = archive::DateSource::server;
          if (auto d = date_from_headers(out.bytes, source)) {
            out.internaldate = d->unix_seconds;
            out.internaldate_tz = d->tz_minutes;
            out.date_source = source;
            out.anomalies.push_back(fmt::format("the From line has no date; INTERNALDATE taken from the {} field",
                                                source == archive::DateSource::received ? "Received:" : "Date:"));
          } else {
            out.anomalies.push_back("the From line has no date, nor has the header; INTERNALDATE is the time it "
                                    "was read");
          }
        }
        sink.deliver(*m, std::move(out));
      } catch (const Error& err) {
        sink.failed(*m, err);
      }
    }
  }

 private:
  void add(std::vector<SourceFolder>& out, const std::vector<std::string>& path, const fs::path& file,
           const std::string& problem, bool noselect) {
    SourceFolder f;
    f.path = path;
    f.location = file.string();
    f.noselect = noselect;
    if (!noselect) {
      f.handle = folders_.size();
      folders_.push_back({file, problem, {}, {}});
    }
    out.push_back(std::move(f));
  }

  void walk(const fs::path& dir, const std::vector<std::string>& path, int depth,
            std::map<std::vector<std::string>, std::pair<fs::path, std::string>>& found) {
    if (depth > kMaxDepth) return;
    for (auto& e : list_directory(dir)) {
      if (e.name.empty() || e.name[0] == '.') continue;
      std::string level = level_name(e.name);
      auto strip = [&](std::string_view suffix) {
        if (level.size() > suffix.size() && level.compare(level.size() - suffix.size(), suffix.size(), suffix) == 0) {
          level.resize(level.size() - suffix.size());
          return true;
        }
        return false;
      };
      auto child = path;
      if (e.type == DirEntry::directory) {
        strip(".sbd");  // Thunderbird keeps the subfolders of "X" in "X.sbd/"
        child.push_back(level);
        try {
          walk(dir / e.name, child, depth + 1, found);
        } catch (const Error& err) {
          found[child] = {dir / e.name, err.message()};
        }
        continue;
      }
      if (strip(".msf")) continue;  // Thunderbird's summary files
      strip(".mbox");
      child.push_back(level);
      if (e.type == DirEntry::link) found[child] = {dir / e.name, "a symbolic link; not followed"};
      else if (e.type != DirEntry::file) found[child] = {dir / e.name, "not a regular file; not read"};
      else found[child] = {dir / e.name, ""};
    }
  }

  static bool last_byte_is_newline(const ReadOnlyFile& file, uint64_t size) {
    std::string last;
    file.read_at(size - 1, 1, last);
    return last == "\n";
  }
  // Whether the byte before `offset` ends an empty line ("\n\n" or "\n\r\n" before it).
  static bool prev_blank_before(const ReadOnlyFile& file, uint64_t offset) {
    if (offset < 2) return offset == 0;
    std::string b;
    file.read_at(offset - std::min<uint64_t>(offset, 3), static_cast<size_t>(std::min<uint64_t>(offset, 3)), b);
    return b.size() >= 2 && b.back() == '\n' &&
           (b[b.size() - 2] == '\n' || (b.size() == 3 && b[0] == '\n' && b[1] == '\r'));
  }

  fs::path path_;
  std::vector<Folder> folders_;
};

}  // namespace

std::unique_ptr<Source> open_mbox(const fs::path& path) { return std::make_unique<MboxSource>(path); }

}  // namespace imapstage::sources

#include "filesystem/extract.h"

#include <dirent.h>
#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <atomic>
#include <exception>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "archive-format/layout.h"
#include "common/error.h"
#include "common/message_id.h"
#include "imap/session.h"

namespace imapstage::filesystem {

namespace {

namespace fs = std::filesystem;
using archive::Fd;
using Clock = std::chrono::steady_clock;

constexpr size_t kWriteBuffer = 256 << 10;
constexpr size_t kHeaderBytes = 64 << 10;  // what index.csv reads of a message
constexpr const char* kTmpSuffix = ".imapstage-tmp";

// A file that gets its final name only from commit(), complete. With an
// `unnamed_dirfd`, it is made without a name in that directory (O_TMPFILE)
// and linked into place by commit(), so an interrupted run leaves nothing at
// all; otherwise (or where the filesystem has no O_TMPFILE) it is written as
// `tmp_name` in `dirfd` and renamed. Destroyed uncommitted, the file is removed.
class StagedFile {
 public:
  StagedFile(int dirfd, std::string tmp_name, fs::path shown, int unnamed_dirfd = -1)
      : dirfd_(dirfd), tmp_(std::move(tmp_name)), shown_(std::move(shown)) {
    if (unnamed_dirfd >= 0) {
      fd_ = Fd(::openat(unnamed_dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, archive::kFileMode));
      unnamed_ = static_cast<bool>(fd_);
    }
    if (!unnamed_) {
      ::unlinkat(dirfd_, tmp_.c_str(), 0);  // left by an interrupted run
      fd_ = Fd(::openat(dirfd_, tmp_.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, archive::kFileMode));
    }
    if (!fd_) throw_io("cannot create a file", shown_.string(), errno, Retry::later);
    buffer_.reserve(kWriteBuffer);
  }
  ~StagedFile() {
    if (committed_) return;
    fd_.reset();
    if (!unnamed_) ::unlinkat(dirfd_, tmp_.c_str(), 0);
  }
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  void write(std::string_view bytes) {
    if (buffer_.size() + bytes.size() > kWriteBuffer) flush();
    if (bytes.size() >= kWriteBuffer) write_all(bytes);
    else buffer_.append(bytes);
  }
  // Appends the whole content of the open file `from` (copied by the kernel).
  void append_file(int from) {
    flush();
    while (true) {
      ssize_t n = ::copy_file_range(from, nullptr, fd_.get(), nullptr, 1 << 30, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) {
        char buf[1 << 16];
        ssize_t r;
        while ((r = ::read(from, buf, sizeof buf)) > 0) write_all({buf, static_cast<size_t>(r)});
        if (r < 0) throw_io("cannot read", shown_.string(), errno);
        return;
      }
      if (n < 0) throw_io("cannot copy", shown_.string(), errno, Retry::later);
      if (n == 0) return;
    }
  }
  void set_mtime(int64_t when) {
    flush();
    struct timespec times[2] = {{static_cast<time_t>(when), 0}, {static_cast<time_t>(when), 0}};
    ::futimens(fd_.get(), times);
  }
  // Moves the file to `final_name` in `final_dirfd`. Without `replace`,
  // returns false (removing the temporary file) when that name exists.
  bool commit(int final_dirfd, const std::string& final_name, bool replace) {
    flush();
    if (unnamed_ && !replace) {
      // linkat refuses an existing name: nothing is ever replaced.
      std::string self = fmt::format("/proc/self/fd/{}", fd_.get());
      int rc = ::linkat(AT_FDCWD, self.c_str(), final_dirfd, final_name.c_str(), AT_SYMLINK_FOLLOW);
      if (rc != 0 && errno == ENOENT)  // no /proc: needs CAP_DAC_READ_SEARCH
        rc = ::linkat(fd_.get(), "", final_dirfd, final_name.c_str(), AT_EMPTY_PATH);
      if (rc != 0 && errno == EEXIST) return false;
      if (rc != 0) throw_io("cannot link a file into place", (shown_.parent_path() / final_name).string(), errno);
      fd_.reset();
      committed_ = true;
      return true;
    }
    if (unnamed_) throw Error(ErrorKind::internal, "an unnamed file cannot replace another", Retry::never);
    fd_.reset();
    int rc = replace ? ::renameat(dirfd_, tmp_.c_str(), final_dirfd, final_name.c_str())
                     : ::renameat2(dirfd_, tmp_.c_str(), final_dirfd, final_name.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && !replace && errno == EINVAL) {
      // No RENAME_NOREPLACE on this filesystem: a hard link refuses an existing name too.
      rc = ::linkat(dirfd_, tmp_.c_str(), final_dirfd, final_name.c_str(), 0);
      if (rc == 0) ::unlinkat(dirfd_, tmp_.c_str(), 0);
    }
    if (rc != 0 && errno == EEXIST) return false;
    if (rc != 0) throw_io("cannot rename a file into place", (shown_.parent_path() / final_name).string(), errno);
    committed_ = true;
    return true;
  }

 private:
  void flush() {
    write_all(buffer_);
    buffer_.clear();
  }
  void write_all(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::write(fd_.get(), bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw_io("cannot write", shown_.string(), errno, Retry::later);
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }
  int dirfd_;
  std::string tmp_;
  fs::path shown_;
  Fd fd_;
  std::string buffer_;
  bool unnamed_ = false;
  bool committed_ = false;
};

// Adds one '>' to every line matching ^>*From , across pieces.
class MboxrdQuoter {
 public:
  void put(std::string_view data, std::string& out) {
    for (char c : data) {
      if (!at_line_start_) {
        out += c;
        if (c == '\n') at_line_start_ = true;
        continue;
      }
      pending_ += c;
      size_t quotes = pending_.find_first_not_of('>');
      std::string_view rest = quotes == std::string::npos ? std::string_view() : std::string_view(pending_).substr(quotes);
      static constexpr std::string_view kFrom = "From ";
      if (rest == kFrom) {
        out += '>';
        out += pending_;
        pending_.clear();
        at_line_start_ = false;
      } else if (!kFrom.starts_with(rest)) {
        out += pending_;
        pending_.clear();
        at_line_start_ = c == '\n';
      }
    }
  }
  // Whatever is held back at the end of a message; returns whether it ended with '\n'.
  bool finish(std::string& out) {
    out += pending_;
    bool ended = at_line_start_ && pending_.empty();
    pending_.clear();
    at_line_start_ = true;
    return ended;
  }

 private:
  bool at_line_start_ = true;
  std::string pending_;
};

std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\r\n") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string iso_date(int64_t unix_seconds, int32_t tz_minutes) {
  time_t t = static_cast<time_t>(unix_seconds + int64_t(tz_minutes) * 60);
  std::tm tm{};
  gmtime_r(&t, &tm);
  int off = tz_minutes < 0 ? -tz_minutes : tz_minutes;
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{:02}:{:02}", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tz_minutes < 0 ? '-' : '+', off / 60, off % 60);
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// Names in directory `dirfd` (not "." or "..").
std::vector<std::string> list_dir(int dirfd) {
  std::vector<std::string> out;
  int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return out;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return out;
  }
  while (auto* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") out.emplace_back(n);
  }
  ::closedir(d);
  return out;
}

// Reads up to `limit` bytes of `name` in `dirfd` (not following a link); nullopt if absent.
std::optional<std::string> read_head(int dirfd, const std::string& name, size_t limit) {
  Fd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string out(limit, '\0');
  size_t got = 0;
  while (got < limit) {
    ssize_t n = ::read(fd.get(), out.data() + got, limit - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

class Extractor {
 public:
  Extractor(const ExtractOptions& options, EventSink& events, const archive::Archive& archive)
      : options_(options), events_(events), archive_(archive) {}

  void run(const std::vector<CatalogFolder>& catalog, ExtractSummary& summary) {
    summary_ = &summary;
    // Totals per account, announced before its first folder.
    std::map<std::string, std::pair<uint64_t, uint64_t>> totals;
    std::map<std::string, uint64_t> folders;
    for (auto& f : catalog) {
      auto& t = totals[f.account];
      ++folders[f.account];
      for (auto& m : f.messages) t.first++, t.second += m.record.size;
    }
    std::string announced;
    size_t index = 0;
    for (auto& f : catalog) {
      if (f.account != announced) {
        announced = f.account;
        index = 0;
        events_.emit({{"event", "totals"}, {"command", "extract"}, {"account", f.account},
                      {"folders", folders[f.account]}, {"messages_total", totals[f.account].first},
                      {"bytes_total", totals[f.account].second}});
      }
      ++summary.folders;
      summary.messages += f.messages.size();
      folder_ = &f;
      folder_name_ = f.folder.canonical_name();
      folder_index_ = ++index;
      folder_total_ = folders[f.account];
      done_ = done_bytes_ = written_ = present_ = failed_ = 0;
      bytes_total_ = 0;
      for (auto& m : f.messages) bytes_total_ += m.record.size;
      last_progress_ = Clock::now();
      switch (options_.format) {
        case ExtractFormat::maildir: maildir(f); break;
        case ExtractFormat::mbox: mbox(f); break;
        case ExtractFormat::eml: eml(f); break;
      }
      {
        std::lock_guard lock(mutex_);
        progress(true);
      }
      std::string text = fmt::format("{}: {} written, {} already there", folder_name_, written_, present_);
      if (failed_) text += fmt::format(", {} failed", failed_);
      events_.emit({{"event", "folder_done"}, {"account", f.account}, {"folder", folder_name_},
                    {"written", written_}, {"present", present_}, {"failed", failed_}, {"text", text}});
    }
  }

 private:
  fs::path folder_path(const std::vector<std::string>& dirs) const {
    fs::path p = options_.out_dir;
    for (auto& d : dirs) p /= d;
    return p;
  }
  Fd make_dir(const fs::path& p) { return archive::make_dir_in_archive(options_.out_dir, p); }

  // Runs fn(0..n-1) on up to threads_ threads; stops at the first exception and rethrows it.
  void parallel(size_t n, const std::function<void(size_t)>& fn) {
    size_t threads = std::min<size_t>(threads_, n);
    if (threads <= 1) {
      for (size_t i = 0; i < n; ++i) fn(i);
      return;
    }
    std::atomic<size_t> next{0};
    std::atomic<bool> stop{false};
    std::exception_ptr first;
    std::mutex first_mutex;
    auto work = [&] {
      while (!stop) {
        size_t i = next++;
        if (i >= n) return;
        try {
          fn(i);
        } catch (...) {
          std::lock_guard lock(first_mutex);
          if (!first) first = std::current_exception();
          stop = true;
        }
      }
    };
    std::vector<std::thread> workers;
    for (size_t t = 1; t < threads; ++t) workers.emplace_back(work);
    work();
    for (auto& w : workers) w.join();
    if (first) std::rethrow_exception(first);
  }

  // REQUIRES: mutex_ held.
  void progress(bool final) {
    if (!final && Clock::now() - last_progress_ < std::chrono::milliseconds(250)) return;
    last_progress_ = Clock::now();
    events_.emit({{"event", "progress"}, {"account", folder_->account}, {"folder", folder_name_},
                  {"folder_index", folder_index_}, {"folders", folder_total_}, {"messages", done_},
                  {"messages_total", folder_->messages.size()}, {"bytes", done_bytes_},
                  {"bytes_total", bytes_total_}, {"final", final}});
  }
  void counted(const CatalogMessage& m, bool written) {
    std::lock_guard lock(mutex_);
    ++done_;
    done_bytes_ += m.record.size;
    if (written) {
      ++written_;
      ++summary_->written;
      summary_->bytes_written += m.record.size;
    } else {
      ++present_;
      ++summary_->already_present;
    }
    progress(false);
  }
  // A message whose object cannot be read: named, left out, the run goes on.
  void failed(const CatalogMessage& m, const Error& e) {
    if (e.kind() != ErrorKind::corrupt && e.kind() != ErrorKind::not_found) throw e;
    Error where = e.with({.account = folder_->account, .folder = folder_name_, .uid = m.record.key.uid});
    std::lock_guard lock(mutex_);
    ++done_;
    ++failed_;
    summary_->failed.push_back(where.what());
    events_.emit({{"event", "message_error"}, {"account", folder_->account}, {"folder", folder_name_},
                  {"uid", m.record.key.uid}, {"error", where.what()},
                  {"text", fmt::format("{} UID {}: {}", folder_name_, m.record.key.uid, e.message())}});
  }

  void maildir(const CatalogFolder& f) {
    fs::path dir = folder_path(f.dirs);
    Fd d = make_dir(dir);
    Fd cur = make_dir(dir / "cur"), fresh = make_dir(dir / "new"), tmp = make_dir(dir / "tmp");
    std::set<std::string> present;
    for (int fd : {cur.get(), fresh.get()})
      for (auto& name : list_dir(fd)) present.insert(name.substr(0, name.find(":2,")));

    // The keyword letters of files already there stay what they were.
    std::vector<std::string> table;
    if (auto text = read_head(d.get(), "dovecot-keywords", 1 << 20)) {
      size_t pos = 0;
      while (pos < text->size()) {
        size_t eol = text->find('\n', pos);
        if (eol == std::string::npos) eol = text->size();
        std::string line = text->substr(pos, eol - pos);
        size_t sp = line.find(' ');
        if (sp != std::string::npos) {
          size_t n = std::strtoul(line.c_str(), nullptr, 10);
          if (n < 26) {
            if (table.size() <= n) table.resize(n + 1);
            table[n] = line.substr(sp + 1);
          }
        }
        pos = eol + 1;
      }
    }
    size_t known = table.size();
    for (auto& k : f.keywords)
      if (std::find(table.begin(), table.end(), k) == table.end()) table.push_back(k);
    if (table.size() != known && known < 26) {
      StagedFile k(d.get(), std::string(".dovecot-keywords") + kTmpSuffix, dir / "dovecot-keywords");
      k.write(dovecot_keywords(table));
      k.commit(d.get(), "dovecot-keywords", true);
    }

    parallel(f.messages.size(), [&](size_t i) {
      auto& m = f.messages[i];
      if (present.count(m.base)) {
        counted(m, false);
        return;
      }
      try {
        StagedFile out(tmp.get(), m.base + kTmpSuffix, dir / "tmp" / m.base, cur.get());
        archive_.read_object_to(m.record.hash, [&](std::string_view piece) { out.write(piece); });
        out.set_mtime(m.record.internaldate);
        counted(m, out.commit(cur.get(), m.base + maildir_info(m.record, table), false));
      } catch (const Error& e) {
        failed(m, e);
      }
    });
  }

  void eml(const CatalogFolder& f) {
    fs::path dir = folder_path(f.dirs);
    Fd d = make_dir(dir);
    std::vector<std::string> rows(f.messages.size());
    parallel(f.messages.size(), [&](size_t i) {
      auto& m = f.messages[i];
      std::string name = fmt::format("{}-{}.eml", m.record.key.uidvalidity, m.record.key.uid);
      std::string head;
      bool have = false;
      if (auto existing = read_head(d.get(), name, kHeaderBytes)) {
        head = std::move(*existing);
        counted(m, false);
        have = true;
      } else {
        try {
          StagedFile out(d.get(), "." + name + kTmpSuffix, dir / name, d.get());
          archive_.read_object_to(m.record.hash, [&](std::string_view piece) {
            if (head.size() < kHeaderBytes) head.append(piece.substr(0, kHeaderBytes - head.size()));
            out.write(piece);
          });
          out.set_mtime(m.record.internaldate);
          counted(m, out.commit(d.get(), name, false));
          have = true;
        } catch (const Error& e) {
          failed(m, e);
        }
      }
      if (!have) return;
      std::vector<std::string> system;
      for (auto& flag : archive::flags_to_imap(m.record.flags, {})) system.push_back(flag);
      rows[i] = fmt::format("{},{},{},{},{},{},{},{},{}\r\n", m.record.key.uid,
                         iso_date(m.record.internaldate, m.record.internaldate_tz), csv_field(join(system, " ")),
                         csv_field(join(m.record.keywords, " ")), m.record.size, archive::to_hex(m.record.hash),
                         csv_field(extract_message_id(head)), csv_field(header_field(head, "From")),
                         csv_field(header_field(head, "Subject")));
    });
    std::string csv = "uid,internaldate,flags,keywords,size,sha256,message-id,from,subject\r\n";
    for (auto& row : rows) csv += row;
    StagedFile index(d.get(), std::string(".index.csv") + kTmpSuffix, dir / "index.csv");
    index.write(csv);
    index.commit(d.get(), "index.csv", true);
  }

  void mbox(const CatalogFolder& f) {
    std::vector<std::string> parents(f.dirs.begin(), f.dirs.end() - 1);
    fs::path dir = folder_path(parents);
    std::string name = f.dirs.back() + ".mbox";
    Fd d = make_dir(dir);
    // What the file holds already: the messages its From lines name.
    std::set<std::pair<uint32_t, uint32_t>> held;
    Fd existing(::openat(d.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!existing && errno != ENOENT) throw_io("cannot open", (dir / name).string(), errno);
    if (existing) {
      std::string carry;
      char buf[1 << 16];
      ssize_t n;
      auto line = [&](std::string_view l) {
        unsigned v, u;
        if (l.starts_with("From ") && std::sscanf(std::string(l.substr(5, 40)).c_str(), "%u.%u@imapstage.invalid ", &v, &u) == 2)
          held.insert({v, u});
      };
      while ((n = ::read(existing.get(), buf, sizeof buf)) > 0) {
        carry.append(buf, static_cast<size_t>(n));
        size_t start = 0, eol;
        while ((eol = carry.find('\n', start)) != std::string::npos) {
          line(std::string_view(carry).substr(start, eol - start));
          start = eol + 1;
        }
        carry.erase(0, start);
        if (carry.size() > 4096 && !carry.starts_with("From ")) carry.clear();
      }
      if (n < 0) throw_io("cannot read", (dir / name).string(), errno);
      ::lseek(existing.get(), 0, SEEK_SET);
    }
    std::vector<const CatalogMessage*> missing;
    for (auto& m : f.messages) {
      if (held.count({m.record.key.uidvalidity, m.record.key.uid})) counted(m, false);
      else missing.push_back(&m);
    }
    if (missing.empty()) return;
    StagedFile out(d.get(), "." + name + kTmpSuffix, dir / name);
    if (existing) out.append_file(existing.get());
    std::vector<const CatalogMessage*> written;
    std::string quoted;
    for (auto* m : missing) {
      // Checked before it is appended: a damaged object leaves no trace in the file.
      try {
        archive_.check_object(m->record.hash);
      } catch (const Error& e) {
        failed(*m, e);
        continue;
      }
      out.write(mbox_from_line(m->record));
      MboxrdQuoter quoter;
      archive_.read_object_to(m->record.hash, [&](std::string_view piece) {
        quoted.clear();
        quoter.put(piece, quoted);
        out.write(quoted);
      });
      quoted.clear();
      bool ended = quoter.finish(quoted);
      if (!ended) quoted += '\n';
      quoted += '\n';
      out.write(quoted);
      written.push_back(m);
    }
    if (written.empty()) return;
    out.commit(d.get(), name, true);
    for (auto* m : written) counted(*m, true);
  }

  const ExtractOptions& options_;
  EventSink& events_;
  size_t threads_ = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
  std::mutex mutex_;  // the counters below, while messages are written side by side
  const archive::Archive& archive_;
  ExtractSummary* summary_ = nullptr;
  const CatalogFolder* folder_ = nullptr;
  std::string folder_name_;
  size_t folder_index_ = 0, folder_total_ = 0;
  uint64_t done_ = 0, done_bytes_ = 0, bytes_total_ = 0, written_ = 0, present_ = 0, failed_ = 0;
  Clock::time_point last_progress_;
};

}  // namespace

std::string mbox_from_line(const archive::MessageRecord& m) {
  time_t t = static_cast<time_t>(m.internaldate);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char date[64];
  std::strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm);
  return fmt::format("From {}.{}@imapstage.invalid {}\n", m.key.uidvalidity, m.key.uid, date);
}

nlohmann::json ExtractSummary::to_json() const {
  return {{"event", "summary"}, {"command", "extract"}, {"folders", folders}, {"messages", messages},
          {"written", written}, {"already_present", already_present}, {"bytes_written", bytes_written},
          {"failed", failed}, {"seconds", seconds}, {"complete", complete()}};
}

ExtractSummary run_extract(const ExtractOptions& options, EventSink& events) {
  auto started = Clock::now();
  auto a = archive::Archive::open(options.archive_dir, archive::Archive::Mode::read);
  CatalogOptions catalog_options = options.catalog;
  catalog_options.all_generations = false;
  // mbox and EML files sit in plain nested directories.
  if (options.format != ExtractFormat::maildir) catalog_options.layout = Layout::nested;
  auto catalog = build_catalog(*a, catalog_options);
  ExtractSummary summary;
  Extractor(options, events, *a).run(catalog, summary);
  summary.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  events.emit(summary.to_json());
  return summary;
}

}  // namespace imapstage::filesystem

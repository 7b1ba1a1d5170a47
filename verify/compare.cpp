#include "verify/compare.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include <fmt/format.h>

#include "archive-format/archive.h"
#include "archive-format/lookup.h"
#include "common/error.h"
#include "common/message_filter.h"
#include "common/glob.h"
#include "common/message_id.h"
#include "common/server_rewrites.h"
#include "export/export_common.h"
#include "imap/mailbox_names.h"
#include "imap/utf7.h"

namespace imapstage::verify {

using archive::Archive;
using archive::MessageRecord;

namespace {

// What the server holds in one folder.
struct ServerMessage {
  uint64_t size = 0;
  std::vector<std::string> flags;
  bool have_flags = false;
  std::string hash;         // deep only
  int64_t internaldate = 0; // deep, or when the export's selection is by date
  std::string message_id;   // deep only
  bool fetched = false;
  // Deep only, for a message whose bytes differ from the archived ones it is
  // compared with: the known rewrite they are, if any.
  std::optional<std::string> rewrite;
  bool classified = false;
};

// What comparing one archived message with its copy on the server found.
struct MessageCheck {
  std::vector<std::string> what;       // differences, each in words
  bool bytes_differ = false;           // size or SHA-256 differ and are no known rewrite
  std::optional<std::string> rewrite;  // the bytes differ by this known rewrite
  std::string rewrite_detail;          // sizes and hashes of a rewritten message
};

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (auto& p : parts) out += (out.empty() ? "" : "; ") + p;
  return out;
}

// Messages found only on the server get their Message-ID read from the
// server (one message at a time); at most this many per folder when the
// comparison is not --deep, so a folder with thousands of new messages costs
// no more than this many fetches.
constexpr int kServerMessageIdLookups = 200;

std::string flags_string(std::vector<std::string> flags) {
  flags.erase(std::remove(flags.begin(), flags.end(), "\\Recent"), flags.end());
  uint32_t bits = 0;
  std::vector<std::string> keywords;
  archive::parse_flags(flags, bits, keywords);
  std::sort(keywords.begin(), keywords.end());
  std::string out;
  for (auto& f : archive::flags_to_imap(bits, keywords)) out += (out.empty() ? "" : " ") + f;
  return out;
}

std::string record_flags(const MessageRecord& m) {
  return flags_string(archive::flags_to_imap(m.flags, m.keywords));
}

class Comparer {
 public:
  Comparer(const CompareOptions& options, EventSink& events, Comparison& out)
      : options_(options), events_(events), out_(out) {}

  void run();

 private:
  // The selected folder's messages by UID. `expected`: the archived hash each
  // server UID is compared with; deep, a message whose bytes differ is
  // classified (ServerMessage::rewrite) while its bytes are at hand.
  std::map<uint32_t, ServerMessage> read_server_folder(const std::string& raw, uint32_t& uidvalidity,
                                                       uint64_t& exists,
                                                       const std::map<uint32_t, archive::Hash>& expected);
  // The known rewrite that turns the archived object `hash` into `server_bytes`, if any.
  std::optional<std::string> classify(const archive::Hash& hash, std::string_view server_bytes) const;
  // classify() of the message at `uid` of the selected folder, fetched whole
  // (a large message whose hash differs).
  std::optional<std::string> classify_held(const archive::Hash& hash, uint32_t uid);
  // Compares archived `m` with server message `uid`; `where` names the server
  // ("server", "target"). Without deep, a size difference costs one fetch of
  // the message while `fetch_budget` lasts.
  MessageCheck check_message(const MessageRecord& m, uint32_t uid, const ServerMessage& s, const char* where,
                             int& fetch_budget);
  // `selection`: what the last export that finished the folder selected;
  // server messages outside it that the archive lacks are notes.
  void compare_source_folder(const archive::FolderRecord& folder, const MessageFilter& selection,
                             FolderComparison& result);
  bool want_dates_ = false;  // read_server_folder also fetches INTERNALDATE
  void compare_target_folder(const std::string& target_raw, const std::vector<archive::AppendRecord>& records,
                             FolderComparison& result);
  std::string message_id_of(const MessageRecord& m) const;
  // Adds what `check` found about archived `m` and server message `uid` to
  // `result`: a difference, a note (rewritten; `expunged_on_source`), or nothing.
  void add_difference(FolderComparison& result, const MessageCheck& check, const MessageRecord& m, uint32_t uid,
                      const ServerMessage& s, bool expunged_on_source);
  // The Message-ID of a message only the selected server folder holds;
  // `budget` bounds the fetches (deep mode already has it).
  std::string server_message_id(uint32_t uid, const ServerMessage& s, int& budget);
  void with_session(const std::function<void()>& work);
  const std::string& mailbox() const {
    return options_.mailbox.empty() ? options_.credentials.user : options_.mailbox;
  }

  const CompareOptions& options_;
  EventSink& events_;
  Comparison& out_;
  std::unique_ptr<Archive> archive_;
  std::unique_ptr<imap::Session> session_;
  archive::AccountRecord account_;
};

// A message too large to hold, as it arrives: its SHA-256, and its first
// bytes for the Message-ID.
struct HashSink final : imap::BodySink {
  void write(std::string_view piece) override {
    sha.update(piece);
    if (head.size() < kHead) head.append(piece.substr(0, kHead - head.size()));
  }
  static constexpr size_t kHead = 256u << 10;
  archive::Sha256 sha;
  std::string head;
};

// Bodies of at least kStreamedObject bytes are hashed as they arrive.
imap::LargeBodies hashed_large_bodies() {
  return {archive::kStreamedObject, [](uint64_t) -> std::unique_ptr<imap::BodySink> {
            return std::make_unique<HashSink>();
          }};
}

// The SHA-256 of a fetched message, held or hashed as it arrived.
archive::Hash hash_of(imap::FetchedMessage& m) {
  return m.large_body ? static_cast<HashSink&>(*m.large_body).sha.finish() : archive::sha256(m.body);
}

// Its bytes, or for a streamed one its first HashSink::kHead bytes (for the Message-ID).
std::string_view head_of(const imap::FetchedMessage& m) {
  return m.large_body ? std::string_view(static_cast<const HashSink&>(*m.large_body).head) : std::string_view(m.body);
}

void Comparer::with_session(const std::function<void()>& work) {
  run_with_retries(
      options_.retry,
      [&] {
        if (!session_) {
          session_ = imap::Session::connect(options_.endpoint);
          session_->login(options_.credentials);
          session_->stream_large_bodies(hashed_large_bodies());
        }
        work();
      },
      [&] {
        if (session_) {
          try {
            session_->logout();
          } catch (...) {
          }
          session_.reset();
        }
      },
      [&](const Error& e, int attempt, std::chrono::milliseconds delay) {
        events_.emit({{"event", "reconnect"}, {"attempt", attempt}, {"error", e.what()},
                      {"text", fmt::format("{}; reconnecting in {:.1f} s", e.what(), delay.count() / 1000.0)}});
      },
      [] { return uint64_t{0}; });
}

std::string Comparer::message_id_of(const MessageRecord& m) const {
  try {
    return extract_message_id(archive_->read_object(m.hash));
  } catch (const Error&) {
    return {};
  }
}

void Comparer::add_difference(FolderComparison& result, const MessageCheck& check, const MessageRecord& m,
                              uint32_t uid, const ServerMessage& s, bool expunged_on_source) {
  MessageDifference d{"", m.key.uid, uid, "", "", check.rewrite.value_or("")};
  if (check.bytes_differ || (!expunged_on_source && !check.what.empty())) {
    d.kind = kDiffers;
    d.detail = (expunged_on_source ? "expunged on the source; " : "") + join(check.what);
    if (check.rewrite) d.detail += "; the bytes are a known server rewrite (" + *check.rewrite + ")";
  } else if (expunged_on_source) {
    d.kind = kExpungedOnSource;
    d.detail = "expunged on the source since the import, still on the target";
    if (check.rewrite) d.detail += "; stored by the target in a known rewritten form (" + *check.rewrite + ")";
    if (!check.what.empty()) d.detail += "; " + join(check.what);
  } else if (check.rewrite) {
    d.kind = kRewritten;
    d.detail = "stored by the server in a known rewritten form (" + *check.rewrite + "): " + check.rewrite_detail;
  } else {
    return;
  }
  if (check.rewrite && d.kind != kDiffers) result.rewritten_bytes += int64_t(s.size) - int64_t(m.size);
  d.message_id = message_id_of(m);
  result.differences.push_back(std::move(d));
}

std::string Comparer::server_message_id(uint32_t uid, const ServerMessage& s, int& budget) {
  if (s.fetched) return s.message_id;
  if (budget <= 0) return {};
  --budget;
  auto m = session_->fetch_one(uid);
  return m ? extract_message_id(head_of(*m)) : std::string();
}

std::optional<std::string> Comparer::classify(const archive::Hash& hash, std::string_view server_bytes) const {
  std::string archived;
  try {
    archived = archive_->read_object(hash);
  } catch (const Error&) {
    return std::nullopt;  // an unreadable object is offline verify's business; here the bytes just differ
  }
  return classify_rewrite(archived, server_bytes);
}

std::optional<std::string> Comparer::classify_held(const archive::Hash& hash, uint32_t uid) {
  // Both copies held at once: only for a large message that differs.
  struct Held {
    imap::Session& session;
    explicit Held(imap::Session& s) : session(s) { session.stream_large_bodies({}); }
    ~Held() { session.stream_large_bodies(hashed_large_bodies()); }
  } held(*session_);
  auto m = session_->fetch_one(uid);
  if (!m) return std::nullopt;
  return classify(hash, m->body);
}

MessageCheck Comparer::check_message(const MessageRecord& m, uint32_t uid, const ServerMessage& s, const char* where,
                                     int& fetch_budget) {
  MessageCheck c;
  bool size_differs = s.size != m.size;
  bool hash_differs = options_.deep && s.fetched && s.hash != archive::to_hex(m.hash);
  std::string server_hash = s.hash;
  bool checked = false;
  if (s.classified) {
    c.rewrite = s.rewrite;
    checked = true;
  } else if (size_differs && !s.fetched && fetch_budget > 0) {
    --fetch_budget;
    checked = true;
    if (auto fetched = session_->fetch_one(uid)) {
      auto h = hash_of(*fetched);
      server_hash = archive::to_hex(h);
      if (h != m.hash) c.rewrite = fetched->large_body ? classify_held(m.hash, uid) : classify(m.hash, fetched->body);
    }
  }
  if (c.rewrite) {
    c.rewrite_detail = fmt::format("size {} in the archive, {} on the {}; SHA-256 {} in the archive, {} on the {}",
                                   m.size, s.size, where, archive::to_hex(m.hash), server_hash, where);
  } else {
    if (size_differs)
      c.what.push_back(fmt::format("size {} in the archive, {} on the {}{}", m.size, s.size, where,
                                   checked || options_.deep ? "" : " (not fetched to check for a known server rewrite)"));
    if (hash_differs)
      c.what.push_back(fmt::format("SHA-256 {} in the archive, {} on the {}", archive::to_hex(m.hash), s.hash, where));
    c.bytes_differ = size_differs || hash_differs;
  }
  if (s.have_flags && flags_string(s.flags) != record_flags(m))
    c.what.push_back(fmt::format("flags \"{}\" in the archive, \"{}\" on the {}", record_flags(m), flags_string(s.flags),
                                 where));
  if (options_.deep && s.fetched && s.internaldate != m.internaldate)
    c.what.push_back(fmt::format("INTERNALDATE {} in the archive, {} on the {}", m.internaldate, s.internaldate, where));
  return c;
}

std::map<uint32_t, ServerMessage> Comparer::read_server_folder(const std::string& raw, uint32_t& uidvalidity,
                                                               uint64_t& exists,
                                                               const std::map<uint32_t, archive::Hash>& expected) {
  std::map<uint32_t, ServerMessage> server;
  auto info = session_->examine(raw);
  uidvalidity = info.uidvalidity;
  exists = info.exists;
  if (info.exists == 0) return server;
  std::vector<imap::UidRange> all{{1, 0}};
  if (want_dates_) {
    session_->fetch_sizes_and_dates(all, [&](uint32_t uid, uint64_t size, int64_t internaldate) {
      server[uid].size = size;
      server[uid].internaldate = internaldate;
    });
  } else {
    session_->fetch_sizes(all, [&](uint32_t uid, uint64_t size) { server[uid].size = size; });
  }
  session_->fetch_flags(all, std::nullopt, [&](imap::FlagUpdate&& u) {
    auto& s = server[u.uid];
    s.flags = std::move(u.flags);
    s.have_flags = true;
  });
  if (options_.deep) {
    std::vector<std::pair<uint32_t, archive::Hash>> large_differing;
    session_->fetch_messages(all, [&](imap::FetchedMessage&& m) {
      auto& s = server[m.uid];
      auto hash = hash_of(m);
      s.hash = archive::to_hex(hash);
      s.internaldate = m.internaldate;
      s.message_id = extract_message_id(head_of(m));
      s.fetched = true;
      auto e = expected.find(m.uid);
      if (e != expected.end() && e->second != hash) {
        if (m.large_body) {
          large_differing.emplace_back(m.uid, e->second);
          return;
        }
        s.rewrite = classify(e->second, m.body);
        s.classified = true;
      }
    });
    for (auto& [uid, archived] : large_differing) {
      server[uid].rewrite = classify_held(archived, uid);
      server[uid].classified = true;
    }
  }
  return server;
}

void Comparer::compare_source_folder(const archive::FolderRecord& folder, const MessageFilter& selection,
                                     FolderComparison& result) {
  result.differences.clear();
  result.selection = selection.empty() ? nlohmann::json::object() : selection.to_json();
  want_dates_ = selection.since || selection.before;
  result.folder = folder.canonical_name();
  result.server_folder = folder.name_utf8;
  std::map<uint32_t, MessageRecord> archived;
  archive_->for_each_message(account_.id, folder.id, folder.uidvalidity, [&](const MessageRecord& m) {
    if (m.state == archive::MessageState::present) archived[m.key.uid] = m;
    return true;
  });
  result.archive_messages = archived.size();
  result.archive_bytes = 0;
  for (auto& [uid, m] : archived) result.archive_bytes += m.size;

  uint32_t uidvalidity = 0;
  uint64_t exists = 0;
  std::map<uint32_t, archive::Hash> expected;
  for (auto& [uid, m] : archived) expected[uid] = m.hash;
  auto server = read_server_folder(folder.name_raw, uidvalidity, exists, expected);
  want_dates_ = false;
  result.server_messages = server.size();
  result.rewritten_bytes = 0;
  result.hashes_compared = 0;
  result.server_bytes = 0;
  for (auto& [uid, s] : server) result.server_bytes += s.size;
  if (uidvalidity != folder.uidvalidity) {
    result.differences.push_back({kDiffers, 0, 0, "",
                                  fmt::format("UIDVALIDITY is {} on the server, {} in the archive: the folder was "
                                              "recreated since the export", uidvalidity, folder.uidvalidity)});
    return;
  }
  int lookups = kServerMessageIdLookups;
  int fetches = kRewriteChecks;
  for (auto& [uid, s] : server) {
    auto it = archived.find(uid);
    if (it == archived.end() && !selection.empty() && !selection.matches(s.internaldate, s.size)) {
      // Left out by the export's selection: a note, and not counted as the server's.
      result.differences.push_back({kFilteredOut, 0, uid, "",
                                    fmt::format("on the server ({} bytes), outside the export's selection ({})",
                                                s.size, selection.describe())});
      --result.server_messages;
      result.server_bytes -= s.size;
      continue;
    }
    if (it == archived.end()) {
      result.differences.push_back({kMissing, 0, uid, server_message_id(uid, s, lookups),
                                    fmt::format("on the server ({} bytes), not in the archive", s.size)});
      continue;
    }
    const MessageRecord& m = it->second;
    if (options_.deep && s.fetched) ++result.hashes_compared;
    add_difference(result, check_message(m, uid, s, "server", fetches), m, uid, s, false);
  }
  for (auto& [uid, m] : archived)
    if (!server.count(uid))
      result.differences.push_back({kExtra, uid, 0, message_id_of(m), "in the archive, no longer on the server"});
}

void Comparer::compare_target_folder(const std::string& target_raw, const std::vector<archive::AppendRecord>& records,
                                     FolderComparison& result) {
  result.differences.clear();
  std::vector<std::pair<const archive::AppendRecord*, MessageRecord>> sources;
  std::map<uint32_t, archive::Hash> expected;
  for (auto& r : records) {
    auto source = archive_->message(r.key.source);
    if (!source) continue;
    if (r.target_uid) expected[r.target_uid] = source->hash;
    sources.emplace_back(&r, std::move(*source));
  }
  uint32_t uidvalidity = 0;
  uint64_t exists = 0;
  auto server = read_server_folder(target_raw, uidvalidity, exists, expected);
  result.server_messages = server.size();
  result.server_bytes = 0;
  for (auto& [uid, s] : server) result.server_bytes += s.size;
  result.archive_messages = 0;
  result.archive_bytes = 0;
  result.rewritten_bytes = 0;
  result.hashes_compared = 0;
  std::set<uint32_t> claimed;
  int fetches = kRewriteChecks;
  for (auto& [record, source] : sources) {
    const archive::AppendRecord& r = *record;
    bool on_target = r.target_uidvalidity == uidvalidity && r.target_uid && server.count(r.target_uid);
    bool expunged = source.state == archive::MessageState::expunged;
    if (!on_target) {
      // Expunged on the source and gone from the target too: nothing to compare.
      if (expunged) continue;
      ++result.archive_messages;
      result.archive_bytes += source.size;
      result.differences.push_back({kMissing, r.key.source.uid, r.target_uid, message_id_of(source),
                                    "imported, but no longer on the target"});
      continue;
    }
    ++result.archive_messages;
    result.archive_bytes += source.size;
    claimed.insert(r.target_uid);
    const ServerMessage& s = server.at(r.target_uid);
    if (options_.deep && s.fetched) ++result.hashes_compared;
    add_difference(result, check_message(source, r.target_uid, s, "target", fetches), source, r.target_uid, s,
                   expunged);
  }
  int lookups = kServerMessageIdLookups;
  for (auto& [uid, s] : server)
    if (!claimed.count(uid))
      result.differences.push_back({kExtra, 0, uid, server_message_id(uid, s, lookups),
                                    fmt::format("on the target ({} bytes), not imported from this archive", s.size)});
}

void Comparer::run() {
  auto started = std::chrono::steady_clock::now();
  with_session([] {});  // log in first: a refusal is reported before anything else
  archive_ = Archive::open(options_.archive_dir, Archive::Mode::read);
  account_ = archive::resolve_account(*archive_, options_.account);
  out_.account = account_.name;
  if (options_.against == Against::source && account_.source != archive::SourceKind::imap)
    throw Error(ErrorKind::usage,
                fmt::format("account {} was exported from {} ({}), not from an IMAP server: --against source "
                            "compares with IMAP only (verify offline, or export again to pick up changes)",
                            account_.name, archive::source_kind_name(account_.source), account_.host),
                Retry::never, {.account = account_.name});

  std::vector<archive::FolderRecord> folders;
  for (auto& f : archive_->folders(account_.id))
    if (!f.noselect && !f.gone && f.uidvalidity != 0 &&
        folder_selected(f.canonical_name(), options_.include, options_.exclude))
      folders.push_back(f);

  // Progress: the archive's side of every folder compared, against totals
  // announced once what will be compared is known.
  size_t folders_total = 0, folders_done = 0;
  auto announce = [&](size_t count, uint64_t messages, uint64_t bytes) {
    folders_total = count;
    events_.emit({{"event", "totals"}, {"command", "verify"}, {"account", out_.account}, {"folders", count},
                  {"messages_total", messages}, {"bytes_total", bytes}});
  };
  auto compare_one = [&](FolderComparison& row, const std::function<void()>& work) {
    auto started = std::chrono::steady_clock::now();
    try {
      with_session(work);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::auth || e.kind() == ErrorKind::tls) throw;
      row.error = e.what();
    }
    events_.emit({{"event", "progress"}, {"account", out_.account}, {"folder", row.folder},
                  {"folder_index", ++folders_done}, {"folders", std::max(folders_total, folders_done)},
                  {"messages", row.archive_messages}, {"messages_total", row.archive_messages},
                  {"bytes", row.archive_bytes}, {"bytes_total", row.archive_bytes},
                  {"elapsed", std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()},
                  {"final", true}});
    uint64_t notes = row.differences.size() - row.failures();
    events_.emit({{"event", "folder_done"}, {"folder", row.folder}, {"equal", row.equal()},
                  {"differences", row.failures()}, {"notes", notes},
                  {"text", fmt::format("{}{}: {} {}", row.folder,
                                       row.server_folder != row.folder ? " -> " + row.server_folder : "",
                                       row.equal() ? "equal" : "DIFFERS",
                                       row.error.empty() ? fmt::format("({} differences{})", row.failures(),
                                                                       notes ? fmt::format(", {} notes", notes) : "")
                                                         : row.error)}});
  };

  if (options_.against == Against::source) {
    out_.against = "source";
    out_.server = mailbox() + "@" + options_.endpoint.address();
    // Folders on the server that the archive does not have.
    // Only in the namespaces the archive holds: other users' and shared
    // folders are exported only when asked for (export --namespaces).
    std::vector<imap::ListEntry> listed;
    std::vector<imap::Namespace> namespaces;
    with_session([&] {
      listed = session_->list();
      namespaces = session_->namespaces();
    });
    std::set<std::string> known;
    std::set<int> kinds = {imap::Namespace::personal};
    for (auto& f : archive_->folders(account_.id)) {
      known.insert(f.name_raw);
      kinds.insert(static_cast<int>(f.ns_kind));
    }
    uint64_t messages = 0, bytes = 0;
    for (auto& f : folders)
      archive_->for_each_message(account_.id, f.id, f.uidvalidity, [&](const MessageRecord& m) {
        if (m.state == archive::MessageState::present) ++messages, bytes += m.size;
        return true;
      });
    announce(folders.size(), messages, bytes);
    // What the exports selected (--since, ...), per folder: the last run that finished it.
    exporting::ExportSelections selections(*archive_, account_.name);
    std::set<std::string> filters;
    for (auto& f : folders) {
      auto selection = selections.last_filter(f.name_raw);
      filters.insert(selection.to_json().dump());
      FolderComparison row;
      row.folder = f.canonical_name();
      row.server_folder = f.name_utf8;
      compare_one(row, [&] { compare_source_folder(f, selection, row); });
      out_.folders.push_back(std::move(row));
    }
    out_.selection = nlohmann::json::object();
    if (filters.size() == 1 && *filters.begin() != "{}")
      out_.selection["filter"] = nlohmann::json::parse(*filters.begin());
    else if (filters.size() > 1)
      out_.selection["per_folder"] = true;  // each folder's in its row
    for (auto& e : listed) {
      if (e.noselect || known.count(e.name_raw)) continue;
      auto placed = imap::place_mailbox(e.name_raw, e.delimiter, namespaces);
      archive::FolderRecord as_archived;
      as_archived.ns_kind = static_cast<archive::NamespaceKind>(placed.kind);
      as_archived.path = placed.path;
      if (placed.path.empty() || !kinds.count(placed.kind) ||
          !folder_selected(as_archived.canonical_name(), options_.include, options_.exclude))
        continue;
      FolderComparison row;
      row.folder = "";
      row.server_folder = e.name_utf8;
      compare_one(row, [&] {
        uint32_t v = 0;
        uint64_t n = 0;
        auto server = read_server_folder(e.name_raw, v, n, {});
        row.server_messages = server.size();
        for (auto& [uid, s] : server) row.server_bytes += s.size;
        row.differences.clear();
        row.differences.push_back({kMissing, 0, 0, "", "the folder is on the server, not in the archive"});
      });
      out_.folders.push_back(std::move(row));
    }
  } else {
    out_.against = "target";
    out_.server =
        options_.target_name.empty() ? mailbox() + "@" + options_.endpoint.address() : options_.target_name;
    auto target_id = archive_->find_target(out_.server);
    if (!target_id)
      throw Error(ErrorKind::not_found, "the archive has no record of an import into " + out_.server +
                                            " (name it with --target-name as import did)");
    // What the last import into this target selected, and what it skipped by policy.
    MessageFilter filter;
    std::set<std::pair<std::string, uint32_t>> skipped;  // (source folder, UID)
    for (auto& run : archive_->runs()) {
      if (run.kind != "import" || run.account != account_.name) continue;
      auto details = nlohmann::json::parse(run.details, nullptr, false);
      if (!details.is_object() || details.value("target", "") != out_.server) continue;
      filter = MessageFilter{};
      skipped.clear();
      out_.selection = nlohmann::json::object();
      auto policy = details.value("policy", nlohmann::json::object());
      if (!policy.is_object()) continue;
      try {
        filter = MessageFilter::from_json(policy.value("filter", nlohmann::json::object()));
      } catch (const std::exception&) {
        filter = MessageFilter{};  // an unreadable history entry selects nothing away
      }
      if (!filter.empty()) out_.selection["filter"] = filter.to_json();
      if (policy.value("too_big", "") == "skip") out_.selection["too_big"] = "skip";
      for (auto& folder : details.value("per_folder", nlohmann::json::array()))
        for (auto& m : folder.value("skipped", nlohmann::json::array()))
          skipped.insert({folder.value("folder", ""), m.value("uid", 0u)});
    }
    // Group what was imported by target folder; note what never was.
    std::map<std::string, std::vector<archive::AppendRecord>> by_target;
    std::map<std::string, std::set<std::string>> sources_of;
    std::vector<std::pair<archive::FolderRecord, std::vector<uint32_t>>> not_imported;
    uint64_t messages = 0, bytes = 0;
    // Gmail messages (X-GM-MSGID) imported from one of their folders.
    std::set<uint64_t> gmail_imported;
    for (auto& f : folders)
      archive_->for_each_message(account_.id, f.id, f.uidvalidity, [&](const MessageRecord& m) {
        if (!m.gm_msgid) return true;
        auto r = archive_->append({*target_id, m.key});
        if (r && r->state == archive::AppendState::done) gmail_imported.insert(m.gm_msgid);
        return true;
      });
    for (auto& f : folders) {
      std::vector<uint32_t> missing;
      archive_->for_each_message(account_.id, f.id, f.uidvalidity, [&](const MessageRecord& m) {
        auto r = archive_->append({*target_id, m.key});
        if ((r && r->state == archive::AppendState::done) || m.state == archive::MessageState::present)
          ++messages, bytes += m.size;
        if (r && r->state == archive::AppendState::done) {
          // Expunged on the source since: still compared, its copy on the target is a note.
          by_target[r->target_folder].push_back(*r);
          sources_of[r->target_folder].insert(f.canonical_name());
        } else if (m.state == archive::MessageState::present) {
          missing.push_back(m.key.uid);
        }
        return true;
      });
      if (!missing.empty()) not_imported.emplace_back(f, std::move(missing));
    }
    announce(by_target.size(), messages, bytes);
    for (auto& entry : by_target) {
      const std::string& target_raw = entry.first;
      const std::vector<archive::AppendRecord>& records = entry.second;
      FolderComparison row;
      for (auto& s : sources_of[target_raw]) row.folder += (row.folder.empty() ? "" : ", ") + s;
      row.server_folder = imap::utf7_decode(target_raw);
      compare_one(row, [&] { compare_target_folder(target_raw, records, row); });
      out_.folders.push_back(std::move(row));
    }
    for (auto& [f, uids] : not_imported) {
      FolderComparison row;
      row.folder = f.canonical_name();
      row.server_folder = "";
      uint64_t never = 0;
      for (uint32_t uid : uids) {
        auto m = archive_->message({account_.id, f.id, f.uidvalidity, uid});
        std::string id = m ? message_id_of(*m) : "";
        if (m && m->gm_msgid && gmail_imported.count(m->gm_msgid)) {
          row.differences.push_back({kGmailElsewhere, uid, 0, id,
                                     "the same Gmail message (X-GM-MSGID) was imported from another of its folders"});
        } else if (skipped.count({row.folder, uid})) {
          row.differences.push_back({kSkippedByPolicy, uid, 0, id, "refused by the target as too big; left out by --too-big skip"});
        } else if (m && !filter.matches(m->internaldate, m->size)) {
          row.differences.push_back({kFilteredOut, uid, 0, id,
                                     "outside the last import's selection (" + filter.describe() + ")"});
        } else {
          ++row.archive_messages;
          if (m) row.archive_bytes += m->size;
          row.differences.push_back({kNotImported, uid, 0, id, "in the archive, never imported"});
          ++never;
        }
      }
      events_.emit({{"event", "folder_done"}, {"folder", row.folder}, {"equal", never == 0},
                    {"text", never ? fmt::format("{}: {} messages never imported", row.folder, never)
                                   : fmt::format("{}: {} messages left out by the import's selection", row.folder,
                                                 uids.size())}});
      out_.folders.push_back(std::move(row));
    }
  }
  if (session_) {
    try {
      session_->logout();
    } catch (...) {
    }
  }
  out_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

}  // namespace

bool MessageDifference::note() const {
  return kind == kRewritten || kind == kExpungedOnSource || kind == kFilteredOut || kind == kSkippedByPolicy ||
         kind == kGmailElsewhere;
}

uint64_t FolderComparison::count(std::string_view kind) const {
  return std::count_if(differences.begin(), differences.end(), [&](auto& d) { return d.kind == kind; });
}

uint64_t FolderComparison::failures() const {
  return std::count_if(differences.begin(), differences.end(), [](auto& d) { return !d.note(); });
}

bool FolderComparison::equal() const {
  return error.empty() && failures() == 0 && archive_messages == server_messages &&
         int64_t(archive_bytes) + rewritten_bytes == int64_t(server_bytes);
}

bool Comparison::equal() const {
  return std::all_of(folders.begin(), folders.end(), [](auto& f) { return f.equal(); });
}

uint64_t Comparison::count(std::string_view kind) const {
  uint64_t n = 0;
  for (auto& f : folders) n += f.count(kind);
  return n;
}

uint64_t Comparison::failures() const {
  uint64_t n = 0;
  for (auto& f : folders) n += f.failures();
  return n;
}

uint64_t Comparison::notes() const {
  uint64_t n = 0;
  for (auto& f : folders) n += f.differences.size() - f.failures();
  return n;
}

nlohmann::json Comparison::to_json() const {
  nlohmann::json rows = nlohmann::json::array();
  for (auto& f : folders) {
    nlohmann::json diffs = nlohmann::json::array();
    for (auto& d : f.differences) {
      nlohmann::json entry = {{"kind", d.kind}, {"note", d.note()}, {"archive_uid", d.archive_uid},
                              {"server_uid", d.server_uid}, {"message_id", d.message_id}, {"detail", d.detail}};
      if (!d.rewrite.empty()) entry["rewrite"] = d.rewrite;
      diffs.push_back(std::move(entry));
    }
    nlohmann::json row = {{"folder", f.folder}, {"server_folder", f.server_folder},
                          {"archive_messages", f.archive_messages}, {"server_messages", f.server_messages},
                          {"archive_bytes", f.archive_bytes}, {"server_bytes", f.server_bytes},
                          {"hashes_compared", f.hashes_compared}, {"equal", f.equal()},
                          {"notes", f.differences.size() - f.failures()}, {"differences", diffs}};
    if (!f.error.empty()) row["error"] = f.error;
    if (!f.selection.empty()) row["selection"] = {{"filter", f.selection}};
    rows.push_back(std::move(row));
  }
  return {{"event", "summary"}, {"command", "verify"}, {"mode", "online"}, {"account", account},
          {"against", against}, {"server", server}, {"deep", deep}, {"equal", equal()},
          {"differences", failures()}, {"rewritten", count(kRewritten)},
          {"expunged_on_source", count(kExpungedOnSource)}, {"filtered_out", count(kFilteredOut)},
          {"skipped_by_policy", count(kSkippedByPolicy)}, {"gmail_elsewhere", count(kGmailElsewhere)},
          {"selection", selection},
          {"seconds", seconds}, {"folders", rows}};
}

Comparison compare_online(const CompareOptions& options, EventSink& events) {
  Comparison out;
  out.deep = options.deep;
  try {
    Comparer(options, events, out).run();
  } catch (const Error& e) {
    throw e.with({.account = out.account, .server = options.endpoint.address()});
  }
  return out;
}

}  // namespace imapstage::verify

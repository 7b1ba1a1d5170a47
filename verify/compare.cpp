#include "verify/compare.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include <fmt/format.h>

#include "archive-format/archive.h"
#include "archive-format/lookup.h"
#include "common/error.h"
#include "common/glob.h"
#include "common/message_id.h"
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
  int64_t internaldate = 0; // deep only
  std::string message_id;   // deep only
  bool fetched = false;
};

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
  std::map<uint32_t, ServerMessage> read_server_folder(const std::string& raw, uint32_t& uidvalidity,
                                                       uint64_t& exists);
  void compare_source_folder(const archive::FolderRecord& folder, FolderComparison& result);
  void compare_target_folder(const std::string& target_raw, const std::vector<archive::AppendRecord>& records,
                             FolderComparison& result);
  std::string message_id_of(const MessageRecord& m) const;
  // The Message-ID of a message only the selected server folder holds;
  // `budget` bounds the fetches (deep mode already has it).
  std::string server_message_id(uint32_t uid, const ServerMessage& s, int& budget);
  void with_session(const std::function<void()>& work);

  const CompareOptions& options_;
  EventSink& events_;
  Comparison& out_;
  std::unique_ptr<Archive> archive_;
  std::unique_ptr<imap::Session> session_;
  archive::AccountRecord account_;
};

void Comparer::with_session(const std::function<void()>& work) {
  run_with_retries(
      options_.retry,
      [&] {
        if (!session_) {
          session_ = imap::Session::connect(options_.endpoint);
          session_->login(options_.credentials);
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

std::string Comparer::server_message_id(uint32_t uid, const ServerMessage& s, int& budget) {
  if (s.fetched) return s.message_id;
  if (budget <= 0) return {};
  --budget;
  auto m = session_->fetch_one(uid);
  return m ? extract_message_id(m->body) : std::string();
}

std::map<uint32_t, ServerMessage> Comparer::read_server_folder(const std::string& raw, uint32_t& uidvalidity,
                                                               uint64_t& exists) {
  std::map<uint32_t, ServerMessage> server;
  auto info = session_->examine(raw);
  uidvalidity = info.uidvalidity;
  exists = info.exists;
  if (info.exists == 0) return server;
  std::vector<imap::UidRange> all{{1, 0}};
  session_->fetch_sizes(all, [&](uint32_t uid, uint64_t size) { server[uid].size = size; });
  session_->fetch_flags(all, std::nullopt, [&](imap::FlagUpdate&& u) {
    auto& s = server[u.uid];
    s.flags = std::move(u.flags);
    s.have_flags = true;
  });
  if (options_.deep) {
    session_->fetch_messages(all, [&](imap::FetchedMessage&& m) {
      auto& s = server[m.uid];
      s.hash = archive::to_hex(archive::sha256(m.body));
      s.internaldate = m.internaldate;
      s.message_id = extract_message_id(m.body);
      s.fetched = true;
    });
  }
  return server;
}

void Comparer::compare_source_folder(const archive::FolderRecord& folder, FolderComparison& result) {
  result.differences.clear();
  result.folder = result.server_folder = folder.name_utf8;
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
  auto server = read_server_folder(folder.name_raw, uidvalidity, exists);
  result.server_messages = server.size();
  result.server_bytes = 0;
  for (auto& [uid, s] : server) result.server_bytes += s.size;
  if (uidvalidity != folder.uidvalidity) {
    result.differences.push_back({"differs", 0, 0, "",
                                  fmt::format("UIDVALIDITY is {} on the server, {} in the archive: the folder was "
                                              "recreated since the export", uidvalidity, folder.uidvalidity)});
    return;
  }
  int lookups = kServerMessageIdLookups;
  for (auto& [uid, s] : server) {
    auto it = archived.find(uid);
    if (it == archived.end()) {
      result.differences.push_back({"missing", 0, uid, server_message_id(uid, s, lookups),
                                    fmt::format("on the server ({} bytes), not in the archive", s.size)});
      continue;
    }
    const MessageRecord& m = it->second;
    std::vector<std::string> what;
    if (s.size != m.size) what.push_back(fmt::format("size {} in the archive, {} on the server", m.size, s.size));
    if (s.have_flags && flags_string(s.flags) != record_flags(m))
      what.push_back(fmt::format("flags \"{}\" in the archive, \"{}\" on the server", record_flags(m), flags_string(s.flags)));
    if (options_.deep && s.fetched) {
      ++result.hashes_compared;
      if (s.hash != archive::to_hex(m.hash))
        what.push_back(fmt::format("SHA-256 {} in the archive, {} on the server", archive::to_hex(m.hash), s.hash));
      if (s.internaldate != m.internaldate)
        what.push_back(fmt::format("INTERNALDATE {} in the archive, {} on the server", m.internaldate, s.internaldate));
    }
    if (!what.empty()) {
      std::string detail;
      for (auto& w : what) detail += (detail.empty() ? "" : "; ") + w;
      result.differences.push_back({"differs", uid, uid, message_id_of(m), detail});
    }
  }
  for (auto& [uid, m] : archived)
    if (!server.count(uid))
      result.differences.push_back({"extra", uid, 0, message_id_of(m), "in the archive, no longer on the server"});
}

void Comparer::compare_target_folder(const std::string& target_raw, const std::vector<archive::AppendRecord>& records,
                                     FolderComparison& result) {
  result.differences.clear();
  uint32_t uidvalidity = 0;
  uint64_t exists = 0;
  auto server = read_server_folder(target_raw, uidvalidity, exists);
  result.server_messages = server.size();
  result.server_bytes = 0;
  for (auto& [uid, s] : server) result.server_bytes += s.size;
  result.archive_messages = 0;
  result.archive_bytes = 0;
  std::set<uint32_t> claimed;
  for (auto& r : records) {
    auto source = archive_->message(r.key.source);
    if (!source) continue;
    ++result.archive_messages;
    result.archive_bytes += source->size;
    if (r.target_uidvalidity != uidvalidity || !r.target_uid || !server.count(r.target_uid)) {
      result.differences.push_back({"missing", r.key.source.uid, r.target_uid, message_id_of(*source),
                                    "imported, but no longer on the target"});
      continue;
    }
    claimed.insert(r.target_uid);
    const ServerMessage& s = server.at(r.target_uid);
    std::vector<std::string> what;
    if (s.size != source->size) what.push_back(fmt::format("size {} in the archive, {} on the target", source->size, s.size));
    if (s.have_flags && flags_string(s.flags) != record_flags(*source))
      what.push_back(fmt::format("flags \"{}\" in the archive, \"{}\" on the target", record_flags(*source),
                                 flags_string(s.flags)));
    if (options_.deep && s.fetched) {
      ++result.hashes_compared;
      if (s.hash != archive::to_hex(source->hash))
        what.push_back(fmt::format("SHA-256 {} in the archive, {} on the target", archive::to_hex(source->hash), s.hash));
      if (s.internaldate != source->internaldate)
        what.push_back(fmt::format("INTERNALDATE {} in the archive, {} on the target", source->internaldate, s.internaldate));
    }
    if (!what.empty()) {
      std::string detail;
      for (auto& w : what) detail += (detail.empty() ? "" : "; ") + w;
      result.differences.push_back({"differs", r.key.source.uid, r.target_uid, message_id_of(*source), detail});
    }
  }
  int lookups = kServerMessageIdLookups;
  for (auto& [uid, s] : server)
    if (!claimed.count(uid))
      result.differences.push_back({"extra", 0, uid, server_message_id(uid, s, lookups),
                                    fmt::format("on the target ({} bytes), not imported from this archive", s.size)});
}

void Comparer::run() {
  auto started = std::chrono::steady_clock::now();
  with_session([] {});  // log in first: a refusal is reported before anything else
  archive_ = Archive::open(options_.archive_dir, Archive::Mode::read);
  account_ = archive::resolve_account(*archive_, options_.account);
  out_.account = account_.name;

  std::vector<archive::FolderRecord> folders;
  for (auto& f : archive_->folders(account_.id))
    if (!f.noselect && !f.gone && f.uidvalidity != 0 && folder_selected(f.name_utf8, options_.include, options_.exclude))
      folders.push_back(f);

  auto compare_one = [&](FolderComparison& row, const std::function<void()>& work) {
    try {
      with_session(work);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::auth || e.kind() == ErrorKind::tls) throw;
      row.error = e.what();
    }
    events_.emit({{"event", "folder_done"}, {"folder", row.folder}, {"equal", row.equal()},
                  {"text", fmt::format("{}{}: {} {}", row.folder,
                                       row.server_folder != row.folder ? " -> " + row.server_folder : "",
                                       row.equal() ? "equal" : "DIFFERS",
                                       row.error.empty() ? fmt::format("({} differences)", row.differences.size())
                                                         : row.error)}});
  };

  if (options_.against == Against::source) {
    out_.against = "source";
    out_.server = options_.credentials.user + "@" + options_.endpoint.address();
    // Folders on the server that the archive does not have.
    std::vector<imap::ListEntry> listed;
    with_session([&] { listed = session_->list(); });
    std::set<std::string> known;
    for (auto& f : archive_->folders(account_.id)) known.insert(f.name_raw);
    for (auto& f : folders) {
      FolderComparison row;
      row.folder = row.server_folder = f.name_utf8;
      compare_one(row, [&] { compare_source_folder(f, row); });
      out_.folders.push_back(std::move(row));
    }
    for (auto& e : listed) {
      if (e.noselect || known.count(e.name_raw) || !folder_selected(e.name_utf8, options_.include, options_.exclude))
        continue;
      FolderComparison row;
      row.folder = "";
      row.server_folder = e.name_utf8;
      compare_one(row, [&] {
        uint32_t v = 0;
        uint64_t n = 0;
        auto server = read_server_folder(e.name_raw, v, n);
        row.server_messages = server.size();
        for (auto& [uid, s] : server) row.server_bytes += s.size;
        row.differences.clear();
        row.differences.push_back({"missing", 0, 0, "", "the folder is on the server, not in the archive"});
      });
      out_.folders.push_back(std::move(row));
    }
  } else {
    out_.against = "target";
    out_.server = options_.target_name.empty() ? options_.credentials.user + "@" + options_.endpoint.address()
                                               : options_.target_name;
    auto target_id = archive_->find_target(out_.server);
    if (!target_id)
      throw Error(ErrorKind::not_found, "the archive has no record of an import into " + out_.server +
                                            " (name it with --target-name as import did)");
    // Group what was imported by target folder; note what never was.
    std::map<std::string, std::vector<archive::AppendRecord>> by_target;
    std::map<std::string, std::set<std::string>> sources_of;
    std::vector<std::pair<archive::FolderRecord, std::vector<uint32_t>>> not_imported;
    for (auto& f : folders) {
      std::vector<uint32_t> missing;
      archive_->for_each_message(account_.id, f.id, f.uidvalidity, [&](const MessageRecord& m) {
        if (m.state != archive::MessageState::present) return true;
        auto r = archive_->append({*target_id, m.key});
        if (r && r->state == archive::AppendState::done) {
          by_target[r->target_folder].push_back(*r);
          sources_of[r->target_folder].insert(f.name_utf8);
        } else {
          missing.push_back(m.key.uid);
        }
        return true;
      });
      if (!missing.empty()) not_imported.emplace_back(f, std::move(missing));
    }
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
      row.folder = f.name_utf8;
      row.server_folder = "";
      for (uint32_t uid : uids) {
        auto m = archive_->message({account_.id, f.id, f.uidvalidity, uid});
        ++row.archive_messages;
        if (m) row.archive_bytes += m->size;
        row.differences.push_back({"not imported", uid, 0, m ? message_id_of(*m) : "", "in the archive, never imported"});
      }
      events_.emit({{"event", "folder_done"}, {"folder", row.folder}, {"equal", false},
                    {"text", fmt::format("{}: {} messages never imported", row.folder, uids.size())}});
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

bool Comparison::equal() const {
  return std::all_of(folders.begin(), folders.end(), [](auto& f) { return f.equal(); });
}

nlohmann::json Comparison::to_json() const {
  nlohmann::json rows = nlohmann::json::array();
  uint64_t differences = 0;
  for (auto& f : folders) {
    nlohmann::json diffs = nlohmann::json::array();
    for (auto& d : f.differences) {
      diffs.push_back({{"kind", d.kind}, {"archive_uid", d.archive_uid}, {"server_uid", d.server_uid},
                       {"message_id", d.message_id}, {"detail", d.detail}});
      ++differences;
    }
    nlohmann::json row = {{"folder", f.folder}, {"server_folder", f.server_folder},
                          {"archive_messages", f.archive_messages}, {"server_messages", f.server_messages},
                          {"archive_bytes", f.archive_bytes}, {"server_bytes", f.server_bytes},
                          {"hashes_compared", f.hashes_compared}, {"equal", f.equal()}, {"differences", diffs}};
    if (!f.error.empty()) row["error"] = f.error;
    rows.push_back(std::move(row));
  }
  return {{"event", "summary"}, {"command", "verify"}, {"mode", "online"}, {"account", account},
          {"against", against}, {"server", server}, {"deep", deep}, {"equal", equal()},
          {"differences", differences}, {"seconds", seconds}, {"folders", rows}};
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

#include "bundle/merge.h"

#include <sys/stat.h>

#include <filesystem>
#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "archive-format/archive.h"
#include "archive-format/hash.h"
#include "archive-format/keys.h"
#include "archive-format/layout.h"
#include "batch/state.h"
#include "bundle/bundle.h"
#include "common/error.h"

namespace imapstage::bundle {

namespace fs = std::filesystem;
using archive::AccountRecord;
using archive::Archive;
using archive::FolderRecord;
using archive::MessageRecord;

namespace {

struct Input {
  std::string dir;
  std::unique_ptr<archive::WriterLock> lock;  // no shard writes while it is merged
  std::unique_ptr<Archive> archive;
};

// What differs between two records of one account, folder or message ("" when equal).
std::string account_difference(const AccountRecord& x, const AccountRecord& y) {
  if (x.host != y.host) return fmt::format("source server {} against {}", x.host, y.host);
  if (x.user != y.user) return fmt::format("login {} against {}", x.user, y.user);
  if (x.source != y.source)
    return fmt::format("source {} against {}", archive::source_kind_name(x.source), archive::source_kind_name(y.source));
  return "";
}

std::string folder_difference(const FolderRecord& x, const FolderRecord& y) {
  if (x.uidvalidity != y.uidvalidity) return fmt::format("UIDVALIDITY {} against {}", x.uidvalidity, y.uidvalidity);
  if (x.uidnext != y.uidnext) return fmt::format("UIDNEXT {} against {}", x.uidnext, y.uidnext);
  if (x.highestmodseq != y.highestmodseq)
    return fmt::format("HIGHESTMODSEQ {} against {}", x.highestmodseq, y.highestmodseq);
  if (x.last_export != y.last_export)
    return fmt::format("last export at {} against {} (exported by two runs)", x.last_export, y.last_export);
  if (x.name_utf8 != y.name_utf8 || x.delimiter != y.delimiter || x.ns_kind != y.ns_kind ||
      x.ns_prefix != y.ns_prefix || x.path != y.path)
    return "name, separator or namespace";
  if (x.attributes != y.attributes || x.subscribed != y.subscribed || x.noselect != y.noselect || x.gone != y.gone)
    return "attributes or state";
  return "";
}

std::string message_difference(const MessageRecord& x, const MessageRecord& y) {
  if (x.hash != y.hash) return fmt::format("content {} against {}", archive::to_hex(x.hash), archive::to_hex(y.hash));
  if (x.flags != y.flags || x.keywords != y.keywords) return "flags or keywords";
  if (x.internaldate != y.internaldate || x.internaldate_tz != y.internaldate_tz) return "INTERNALDATE";
  if (x.state != y.state)
    return fmt::format("{} against {}", x.state == archive::MessageState::present ? "present" : "expunged",
                       y.state == archive::MessageState::present ? "present" : "expunged");
  if (x.size != y.size || x.modseq != y.modseq) return "size or MODSEQ";
  if (x.source_id != y.source_id || x.date_source != y.date_source) return "source identity or date source";
  if (x.gm_msgid != y.gm_msgid || x.gm_thrid != y.gm_thrid || x.gm_labels != y.gm_labels)
    return "Gmail message id, thread id or labels";
  return "";
}

Error conflict(const std::string& account, const std::string& folder, std::optional<MessageRecord> m,
               const std::string& first, const std::string& second, const std::string& what) {
  std::string where = folder.empty() ? fmt::format("account {}", account)
                      : m ? fmt::format("message UIDVALIDITY {} UID {} of folder {} of account {}", m->key.uidvalidity,
                                        m->key.uid, folder, account)
                          : fmt::format("folder {} of account {}", folder, account);
  ErrorWhere at{.account = account, .file = second};
  if (!folder.empty()) at.folder = folder;
  if (m) at.uid = m->key.uid;
  return Error(ErrorKind::usage,
               fmt::format("conflicting rows: {} differs between {} and {} ({}); merge refuses to choose, so "
                           "nothing was written",
                           where, first, second, what),
               Retry::never, at);
}

using MessageName = std::tuple<std::string, uint32_t, uint32_t>;  // folder name_raw, uidvalidity, uid

// The rows of one account, gathered from every archive that holds it, so that
// rows two archives share can be compared before anything is written.
struct AccountRows {
  std::optional<std::pair<AccountRecord, std::string>> account;
  std::map<std::string, std::pair<FolderRecord, std::string>> folders;  // by name_raw, with the archive it came from
  std::map<MessageName, std::pair<MessageRecord, std::string>> messages;

  void add(const Archive& a, const AccountRecord& acc, const std::string& dir) {
    if (!account) account = {acc, dir};
    else if (auto d = account_difference(account->first, acc); !d.empty())
      throw conflict(acc.name, "", std::nullopt, account->second, dir, d);
    for (auto& f : a.folders(acc.id)) {
      auto [it, fresh] = folders.try_emplace(f.name_raw, f, dir);
      if (!fresh)
        if (auto d = folder_difference(it->second.first, f); !d.empty())
          throw conflict(acc.name, f.name_utf8, std::nullopt, it->second.second, dir, d);
      a.for_each_message(acc.id, f.id, std::nullopt, [&](const MessageRecord& m) {
        auto [mt, added] = messages.try_emplace(MessageName{f.name_raw, m.key.uidvalidity, m.key.uid}, m, dir);
        if (!added)
          if (auto d = message_difference(mt->second.first, m); !d.empty())
            throw conflict(acc.name, f.name_utf8, m, mt->second.second, dir, d);
        return true;
      });
    }
  }
};

// The export batch states of the inputs (DIR/batches/export.json), as one
// state of OUT, so `status --archive OUT` shows every account of the shards.
// An account in several (an earlier merge, OUT's own batch) keeps its latest
// finished state. Import states stay with the inputs, as the import records do.
void merge_export_states(const std::string& out_dir, const std::vector<Input>& in) {
  auto path = batch::state_path(out_dir, "export");
  auto before = batch::load_state(path);
  std::optional<batch::BatchState> merged = before;
  std::vector<std::string> ids;
  for (auto& input : in) {
    auto s = batch::load_state(batch::state_path(input.dir, "export"));
    if (!s) continue;
    ids.push_back(s->batch_id);
    if (!merged) {
      merged = *s;
      continue;
    }
    merged->created = std::min(merged->created, s->created);
    merged->invocations = std::max(merged->invocations, s->invocations);
    for (auto& a : s->accounts) {
      auto* have = merged->find(a.key);
      if (!have) merged->accounts.push_back(a);
      else if (a.finished > have->finished) *have = a;
    }
  }
  if (!merged || ids.empty()) return;
  if (!before) {
    std::string joined;
    for (auto& id : ids) joined += (joined.empty() ? "" : "+") + id;
    merged->batch_id = joined;
  }
  std::sort(merged->accounts.begin(), merged->accounts.end(),
            [](const batch::AccountState& x, const batch::AccountState& y) {
              return std::tie(x.line, x.key) < std::tie(y.line, y.key);
            });
  if (before && before->to_json() == merged->to_json()) return;
  batch::save_state(path, *merged);
}

}  // namespace

MergeResult merge(const std::string& out_dir, const std::vector<std::string>& inputs, EventSink& events) {
  MergeResult result;
  result.inputs = inputs.size();
  if (inputs.empty()) throw Error(ErrorKind::usage, "merge needs at least one input archive");
  struct stat st{};
  if (::lstat(out_dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    throw Error(ErrorKind::usage, "the output archive path is a symbolic link; merge does not write through links",
                Retry::never, {.file = out_dir});

  // Every input whole and quiet first (its writer lock held), then OUT.
  std::vector<Input> in;
  std::set<std::string> ids;
  for (auto& dir : inputs) {
    if (!fs::exists(fs::path(dir) / "FORMAT"))
      throw Error(ErrorKind::not_found, fmt::format("{} is not an archive (no FORMAT file)", dir), Retry::never,
                  {.file = dir});
    Input i;
    i.dir = dir;
    i.lock = archive::WriterLock::acquire(fs::path(dir) / "lock");
    i.archive = Archive::open(dir, Archive::Mode::read);
    if (!ids.insert(i.archive->archive_id()).second)
      throw Error(ErrorKind::usage, fmt::format("{} is given twice (archive {})", dir, i.archive->archive_id()),
                  Retry::never, {.file = dir});
    in.push_back(std::move(i));
  }
  // Mail of an encrypted input stays encrypted: a new output takes that
  // input's key file (same master key and passphrases); an existing output
  // must be encrypted too.
  const Input* sealed = nullptr;
  for (auto& i : in)
    if (i.archive->keys() && !sealed) sealed = &i;
  std::unique_ptr<Archive> out;
  if (sealed && !fs::exists(fs::path(out_dir) / "FORMAT"))
    out = Archive::create_with_key_file(out_dir, archive::read_key_file(sealed->dir), sealed->archive->keys()->master(),
                                        {});
  else out = Archive::open(out_dir, Archive::Mode::create);
  if (sealed && !out->keys())
    throw Error(ErrorKind::usage,
                fmt::format("{} is encrypted and the output archive is not: merging would store its mail in the clear",
                            sealed->dir),
                Retry::never, {.file = out_dir});
  if (ids.count(out->archive_id()))
    throw Error(ErrorKind::usage, "the output archive is also an input", Retry::never, {.file = out_dir});
  events.emit({{"event", "merge_start"}, {"out", out_dir}, {"inputs", inputs},
               {"text", fmt::format("merging {} archives into {}", inputs.size(), out_dir)}});

  // 1. Conflicts, before anything is written: the accounts held by more than
  //    one archive (OUT included) have their rows compared.
  std::map<std::string, std::vector<int>> holders;  // account name -> archives (-1: OUT)
  for (auto& acc : out->accounts()) holders[acc.name].push_back(-1);
  for (size_t i = 0; i < in.size(); ++i)
    for (auto& acc : in[i].archive->accounts()) holders[acc.name].push_back(int(i));
  for (auto& [name, where] : holders) {
    if (where.size() < 2) continue;
    AccountRows rows;
    for (int i : where) {
      const Archive& a = i < 0 ? *out : *in[size_t(i)].archive;
      rows.add(a, *a.find_account(name), i < 0 ? out_dir : in[size_t(i)].dir);
    }
  }

  // 2. Each input's accounts: objects first, then the accounts' rows in one
  //    batch. Small accounts share a commit (one fsync for many); an account's
  //    rows are never split over two.
  constexpr size_t kRowsPerCommit = 20000;
  uint64_t run = out->begin_run("merge", "", nlohmann::json({{"inputs", inputs}}).dump());
  try {
    for (auto& input : in) {
      const Archive& a = *input.archive;
      ObjectSink objects(*out);
      archive::Batch batch(*out);
      std::set<archive::Hash> staged;         // objects put since the last commit
      std::vector<nlohmann::json> committed;  // merge_account events, emitted once durable
      uint64_t objects_before = 0;
      auto flush = [&] {
        objects.commit();
        batch.commit();
        staged.clear();
        for (auto& e : committed) events.emit(e);
        committed.clear();
      };
      for (auto& acc : a.accounts()) {
        auto existing = out->find_account(acc.name);
        size_t changes_before = batch.pending_changes();
        AccountRecord record = existing ? *existing : acc;
        uint64_t messages = 0, folders = 0, bytes = 0;
        if (!existing) {
          record.id = 0;
          batch.put_account(record);
        }
        for (auto& f : a.folders(acc.id)) {
          auto out_folder = existing ? out->find_folder(record.id, f.name_raw) : std::nullopt;
          FolderRecord folder = out_folder ? *out_folder : f;
          if (!out_folder) {
            folder.account_id = record.id;
            folder.id = 0;
            batch.put_folder(folder);
            ++folders;
          }
          std::vector<MessageRecord> all;  // read first: one read transaction at a time
          a.for_each_message(acc.id, f.id, std::nullopt, [&](const MessageRecord& m) {
            all.push_back(m);
            return true;
          });
          for (auto& m : all) {
            MessageRecord copy = m;
            copy.key.account_id = record.id;
            copy.key.folder_id = folder.id;
            if (out_folder && out->message(copy.key)) continue;  // equal: checked above
            if (!staged.count(m.hash) && !out->object(m.hash)) {
              std::string raw = a.read_object(m.hash);
              if (objects.put(m.hash, raw)) bytes += raw.size();
              staged.insert(m.hash);
            }
            batch.put_message(copy);
            ++messages;
          }
        }
        bool wrote = batch.pending_changes() > changes_before;
        if (wrote) ++result.accounts_written;
        else ++result.accounts_unchanged;
        uint64_t new_objects = objects.written() - objects_before;
        objects_before = objects.written();
        result.messages_written += messages;
        result.folders_written += folders;
        result.objects_written += new_objects;
        result.bytes_written += bytes;
        committed.push_back({{"event", "merge_account"}, {"account", acc.name}, {"from", input.dir},
                             {"written", wrote}, {"messages", messages}, {"folders", folders},
                             {"objects", new_objects}, {"bytes", bytes},
                             {"text", wrote ? fmt::format("{} from {}: {} messages, {} new objects", acc.name,
                                                          input.dir, messages, new_objects)
                                            : fmt::format("{} from {}: already merged", acc.name, input.dir)}});
        if (batch.pending_changes() >= kRowsPerCommit) flush();
      }
      flush();
    }
  } catch (const Error& e) {
    out->end_run(run, "failed", nlohmann::json({{"inputs", inputs}, {"error", e.message()}}).dump());
    throw;
  }
  merge_export_states(out_dir, in);
  result.accounts = out->accounts().size();
  nlohmann::json summary = {{"inputs", inputs},
                            {"accounts", result.accounts},
                            {"accounts_written", result.accounts_written},
                            {"accounts_unchanged", result.accounts_unchanged},
                            {"messages_written", result.messages_written},
                            {"folders_written", result.folders_written},
                            {"objects_written", result.objects_written},
                            {"bytes_written", result.bytes_written}};
  out->end_run(run, "ok", summary.dump());
  summary["event"] = "merge_done";
  summary["out"] = out_dir;
  summary["text"] = fmt::format("{}: {} accounts; {} added or completed now ({} messages, {} new objects), {} already "
                                "merged",
                                out_dir, result.accounts, result.accounts_written, result.messages_written,
                                result.objects_written, result.accounts_unchanged);
  events.emit(summary);
  return result;
}

}  // namespace imapstage::bundle

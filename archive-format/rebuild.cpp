#include "archive-format/rebuild.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>
#include <random>
#include <tuple>

#include <fmt/format.h>

#include "archive-format/codec.h"
#include "archive-format/index.h"
#include "archive-format/keys.h"
#include "archive-format/layout.h"
#include "archive-format/pack.h"
#include "common/error.h"

namespace imapstage::archive {

namespace fs = std::filesystem;

namespace {

struct JournalAt {
  uint64_t sequence = 0;
  size_t order = 0;  // discovery order, breaks ties
  fs::path file;
  uint64_t offset = 0;
  Hash hash{};
};

struct OldIndex {
  bool readable = false;
  std::optional<std::string> archive_id;
  std::vector<std::pair<std::string, std::string>> runs;  // key, value as stored
  std::map<uint64_t, uint64_t> unsealed_committed;        // pack id -> committed size
};

OldIndex read_old_index(const fs::path& dir, uint64_t map_size, RebuildReport& report,
                        const std::shared_ptr<const ArchiveKeys>& keys) {
  OldIndex old;
  std::error_code ec;
  if (!fs::exists(dir / "data.mdb", ec)) return old;
  try {
    auto index = Index::open(dir, map_size, false);
    if (keys) index->set_keys(keys->index());
    auto txn = index->read();
    if (auto v = txn.get(Index::meta, "archive_id")) old.archive_id = std::string(*v);
    txn.scan(Index::runs, "", "", [&](std::string_view k, std::string_view v) {
      codec::decode_run(k, v);
      old.runs.emplace_back(k, v);
      return true;
    });
    txn.scan(Index::packs, "", "", [&](std::string_view k, std::string_view v) {
      auto p = codec::decode_pack(k, v);
      if (!p.sealed) old.unsealed_committed[p.id] = p.committed_size;
      return true;
    });
    old.readable = true;
  } catch (const Error& e) {
    report.problems.push_back(std::string("the old index cannot be read: ") + e.what());
    old = OldIndex{};
  }
  return old;
}

std::string utc_stamp() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::optional<uint64_t> pack_id_from_name(const fs::path& file) {
  std::string stem = file.stem().string();
  if (file.extension() != ".pack" || stem.size() != 16) return std::nullopt;
  if (!std::all_of(stem.begin(), stem.end(), [](char c) { return std::isdigit(c) || (c >= 'a' && c <= 'f'); }))
    return std::nullopt;
  return std::stoull(stem, nullptr, 16);
}

uint64_t count(const Index::Txn& txn, Index::Db db) {
  uint64_t n = 0;
  txn.scan(db, "", "", [&](std::string_view, std::string_view) { return ++n, true; });
  return n;
}

}  // namespace

nlohmann::json RebuildReport::to_json() const {
  return {{"event", "rebuild_done"},
          {"archive", archive},
          {"old_index", old_index},
          {"archive_id", archive_id},
          {"packs", packs},
          {"records", records},
          {"objects", objects},
          {"duplicate_objects", duplicate_objects},
          {"bad_objects", bad_objects},
          {"journals", journals},
          {"torn_tails", torn_tails},
          {"accounts", accounts},
          {"folders", folders},
          {"messages", messages},
          {"targets", targets},
          {"appends", appends},
          {"runs", runs},
          {"messages_without_object", messages_without_object},
          {"installed", installed},
          {"lost_messages", lost_messages},
          {"lost_objects", lost_objects},
          {"problems", problems},
          {"not_restored", not_restored},
          {"seconds", seconds}};
}

RebuildReport rebuild_index(const fs::path& dir, const Archive::Options& options, const RebuildOptions& rebuild) {
  auto started = std::chrono::steady_clock::now();
  RebuildReport report;
  report.archive = dir.string();
  uint32_t version = read_format_file(dir / "FORMAT");
  if (version == 0 || version > kFormatVersion)
    throw Error(ErrorKind::format,
                fmt::format("archive format version {} is not supported by this build (it reads up to {})", version,
                            kFormatVersion),
                Retry::never, {.file = dir.string()});
  // An encrypted archive is unlocked before anything is written.
  auto keys = unlock_archive(dir, options);
  const RecordKeys* rk = keys ? &keys->records() : nullptr;
  auto lock = WriterLock::acquire(dir / "lock");

  OldIndex old = read_old_index(dir / "index", options.map_size, report, keys);
  if (!old.readable) {
    report.not_restored.push_back("the run history (kept only in the index)");
    report.not_restored.push_back("the archive id (a new one was made)");
  }

  fs::path fresh = dir / "index.rebuild";
  std::error_code ec;
  fs::remove_all(fresh, ec);  // left by an interrupted rebuild
  if (ec) throw_io("cannot remove", fresh.string(), ec.value());

  std::vector<std::pair<uint64_t, fs::path>> pack_files;
  if (check_in_archive(dir, dir / "packs", true)) {
    for (auto it = fs::recursive_directory_iterator(dir / "packs", ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      auto type = it->symlink_status(ec).type();
      if (type == fs::file_type::directory) continue;
      if (type != fs::file_type::regular) {
        report.problems.push_back(fmt::format("{}: not a regular file (ignored)", it->path().string()));
        continue;
      }
      if (auto id = pack_id_from_name(it->path())) {
        if (it->path() != pack_file(dir, *id))
          report.problems.push_back(fmt::format("{}: pack file in the wrong directory (ignored)", it->path().string()));
        else pack_files.emplace_back(*id, it->path());
      }
    }
    if (ec) throw_io("cannot list the packs", (dir / "packs").string(), ec.value());
  }
  std::sort(pack_files.begin(), pack_files.end());

  uint64_t max_sequence = 0;
  {
    auto index = Index::open(fresh, options.map_size, true);
    if (keys) index->set_keys(keys->index());
    std::vector<JournalAt> journals;

    for (auto& [id, file] : pack_files) {
      if (is_unfinished_pack(file, id, dir)) continue;  // no record in it (a writer killed while creating it)
      ++report.packs;
      std::optional<PackReader> reader;
      try {
        reader.emplace(file, dir);
      } catch (const Error& e) {
        report.problems.push_back(std::string(e.what()) + " (pack skipped)");
        continue;
      }
      if (reader->pack_id() != id)
        report.problems.push_back(fmt::format("{}: its header names pack {:016x}", file.string(), reader->pack_id()));
      uint64_t limit = reader->file_size();
      if (auto it = old.unsealed_committed.find(id); it != old.unsealed_committed.end()) limit = it->second;
      uint64_t end = kPackHeaderSize, records = 0;
      auto txn = index->write();
      while (true) {
        std::optional<PackRecordInfo> info;
        try {
          info = reader->next();
        } catch (const Error& e) {
          ++report.torn_tails;
          report.problems.push_back(std::string(e.what()) + "; the rest of the pack is ignored");
          break;
        }
        if (!info) break;
        if (info->offset + info->record_size > limit) {
          report.problems.push_back(fmt::format(
              "{}: {} bytes from offset {} were written by a batch that never committed (ignored)", file.string(),
              reader->file_size() - info->offset, info->offset));
          break;
        }
        ++records;
        ++report.records;
        end = info->offset + info->record_size;
        std::string raw;
        std::vector<GroupMember> members;
        // The content address: the header's hash, or (sealed records) the SHA-256 of what decodes.
        Hash content = info->hash;
        try {
          if (info->kind == RecordKind::object) {
            Sha256 sha;
            decode_payload_to(
                *info, reader->read_payload(), file,
                [&](std::string_view piece) {
                  if (rk) sha.update(piece);
                },
                rk);
            if (rk) content = sha.finish();
          } else if (info->kind == RecordKind::group) {
            if (info->raw_size > kMaxGroupRaw)
              throw Error(ErrorKind::corrupt, fmt::format("{}: group record at offset {} of {} bytes (at most {})",
                                                          file.string(), info->offset, info->raw_size, kMaxGroupRaw));
            raw = decode_payload(*info, reader->read_payload(), file, rk);
            members = parse_group(raw, file, info->offset);
          } else {
            raw = decode_payload(*info, reader->read_payload(), file, rk);
          }
        } catch (const Error& e) {
          if (info->kind == RecordKind::object) ++report.bad_objects;
          if (info->kind == RecordKind::group) ++report.bad_objects;
          report.problems.push_back(e.what());
          continue;
        }
        if (info->kind == RecordKind::group) {
          for (auto& m : members) {
            std::string_view bytes(raw.data() + m.offset, static_cast<size_t>(m.size));
            if (sha256(bytes) != m.hash) {
              ++report.bad_objects;
              report.problems.push_back(fmt::format("{}: group record at offset {}: member {} does not hash to its name",
                                                    file.string(), info->offset, to_hex(m.hash)));
              continue;
            }
            std::string key(reinterpret_cast<const char*>(m.hash.data()), m.hash.size());
            if (txn.get(Index::objects, key)) {
              ++report.duplicate_objects;
              continue;
            }
            ObjectLocation loc{id, info->offset, info->record_size, m.size, true, m.offset};
            txn.put(Index::objects, key, codec::encode_object(loc));
            ++report.objects;
          }
        } else if (info->kind == RecordKind::object) {
          std::string key(reinterpret_cast<const char*>(content.data()), content.size());
          if (txn.get(Index::objects, key)) {
            ++report.duplicate_objects;
          } else {
            txn.put(Index::objects, key, codec::encode_object({id, info->offset, info->record_size, info->raw_size}));
            ++report.objects;
          }
        } else {
          try {
            auto j = codec::decode_journal(raw);
            journals.push_back({j.sequence, journals.size(), file, info->offset, info->hash});
          } catch (const Error& e) {
            report.problems.push_back(fmt::format("{}: journal record at offset {}: {}", file.string(), info->offset,
                                                  e.what()));
          }
        }
      }
      // Every pack is sealed: the next writer starts a new one and never appends after damage.
      txn.put(Index::packs, codec::u64_key(id), codec::encode_pack({id, end, records, true}));
      txn.commit();
    }

    std::sort(journals.begin(), journals.end(),
              [](auto& a, auto& b) { return std::tie(a.sequence, a.order) < std::tie(b.sequence, b.order); });
    uint64_t expected = 1;
    std::vector<std::string> gaps;
    for (size_t i = 0; i < journals.size();) {
      auto txn = index->write();
      CountChanges counts;
      for (size_t n = 0; n < 256 && i < journals.size(); ++n, ++i) {
        auto& at = journals[i];
        if (at.sequence > expected)
          gaps.push_back(at.sequence == expected + 1 ? std::to_string(expected)
                                                     : fmt::format("{}-{}", expected, at.sequence - 1));
        expected = std::max(expected, at.sequence + 1);
        try {
          auto j = codec::decode_journal(read_record(at.file, at.offset, RecordKind::journal, at.hash, dir, rk));
          for (auto& op : j.ops) apply_op(txn, op, counts);
          ++report.journals;
          max_sequence = std::max(max_sequence, j.sequence);
        } catch (const Error& e) {
          report.problems.push_back(std::string("journal replay: ") + e.what());
        }
      }
      counts.write(txn);
      txn.commit();
    }
    if (!gaps.empty()) {
      std::string list;
      for (auto& g : gaps) list += (list.empty() ? "" : ", ") + g;
      report.not_restored.push_back("index changes of committed batches whose journal records are missing or damaged "
                                    "(journal sequence " + list + ")");
    }

    auto txn = index->write();
    if (old.archive_id) {
      report.archive_id = *old.archive_id;
    } else {
      std::random_device rd;
      report.archive_id = fmt::format("{:08x}{:08x}{:08x}{:08x}", rd(), rd(), rd(), rd());
    }
    uint8_t version_le[4] = {static_cast<uint8_t>(kFormatVersion), 0, 0, 0};
    txn.put(Index::meta, "format_version", std::string_view(reinterpret_cast<const char*>(version_le), 4));
    txn.put(Index::meta, "archive_id", report.archive_id);
    std::string seq(8, '\0');
    for (int i = 0; i < 8; ++i) seq[i] = static_cast<char>(max_sequence >> (8 * i));
    txn.put(Index::meta, "journal_sequence", seq);
    if (keys) txn.put(Index::meta, "encryption", keys->key_id());
    for (auto& [k, v] : old.runs) txn.put(Index::runs, k, v);
    report.runs = old.runs.size();
    txn.commit();

    auto r = index->read();
    report.accounts = count(r, Index::accounts);
    report.folders = count(r, Index::folders);
    report.messages = count(r, Index::messages);
    report.targets = count(r, Index::targets);
    report.appends = count(r, Index::appends);
    r.scan(Index::messages, "", "", [&](std::string_view k, std::string_view v) {
      auto m = codec::decode_message(k, v);
      std::string key(reinterpret_cast<const char*>(m.hash.data()), m.hash.size());
      if (!r.get(Index::objects, key)) ++report.messages_without_object;
      return true;
    });
    if (report.messages_without_object)
      report.not_restored.push_back(fmt::format("the content of {} messages (their object records are missing or damaged)",
                                                report.messages_without_object));
  }  // the new environment is closed here

  // A readable index is never replaced by one that holds less.
  if (old.readable) {
    try {
      auto before = Index::open(dir / "index", options.map_size, false);
      auto after = Index::open(fresh, options.map_size, false);
      if (keys) {
        before->set_keys(keys->index());
        after->set_keys(keys->index());
      }
      auto b = before->read();
      auto a = after->read();
      b.scan(Index::messages, "", "", [&](std::string_view k, std::string_view v) {
        codec::decode_message(k, v);
        auto now = a.get(Index::messages, k);
        if (!now || *now != v) ++report.lost_messages;
        return true;
      });
      b.scan(Index::objects, "", "", [&](std::string_view k, std::string_view v) {
        codec::decode_object(v);
        if (!a.get(Index::objects, k)) ++report.lost_objects;
        return true;
      });
    } catch (const Error& e) {
      report.problems.push_back(std::string("the old index cannot be compared with the rebuilt one: ") + e.what());
      report.lost_messages = report.lost_objects = 0;
    }
    if (report.lost_messages || report.lost_objects) {
      report.not_restored.push_back(fmt::format(
          "{} message records and {} objects that the current index holds (their packs or journal records are "
          "missing or damaged)",
          report.lost_messages, report.lost_objects));
      if (!rebuild.force) {
        report.installed = false;
        report.problems.push_back(fmt::format(
            "the current index was kept: the rebuilt one, which holds less, was left in {} (--force installs it)",
            fresh.string()));
        report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        return report;
      }
    }
  }

  fs::path current = dir / "index";
  if (fs::exists(current, ec)) {
    fs::path aside = dir / ("index.old-" + utc_stamp());
    for (int n = 2; fs::exists(aside, ec); ++n) aside = dir / fmt::format("index.old-{}-{}", utc_stamp(), n);
    fs::rename(current, aside, ec);
    if (ec) throw_io("cannot move the old index aside", current.string(), ec.value());
    report.old_index = aside.string();
  }
  fs::rename(fresh, current, ec);
  if (ec) throw_io("cannot put the new index in place", fresh.string(), ec.value());
  sync_dir(dir);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

}  // namespace imapstage::archive

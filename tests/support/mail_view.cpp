#include "tests/support/mail_view.h"

#include <algorithm>

#include "archive-format/archive.h"
#include "common/events.h"

namespace imapstage::testing {

using archive::Archive;

std::string fingerprint(const std::string& sha256, int64_t internaldate, std::vector<std::string> flags) {
  flags.erase(std::remove(flags.begin(), flags.end(), "\\Recent"), flags.end());
  std::sort(flags.begin(), flags.end());
  std::string out = sha256 + " " + std::to_string(internaldate);
  for (auto& f : flags) out += " " + f;
  return out;
}

UidView server_view(const nlohmann::json& summary) {
  UidView out;
  for (auto& f : summary["folders"]) {
    if (!f.contains("messages") || !f["messages"].is_array() || f["messages"].empty()) continue;
    auto& folder = out[f["name"].get<std::string>()];
    for (auto& m : f["messages"])
      folder[m["uid"].get<uint32_t>()] = fingerprint(m["sha256"].get<std::string>(),
                                                     m["internaldate_unix"].get<int64_t>(),
                                                     m["flags"].get<std::vector<std::string>>());
  }
  return out;
}

UidView archive_view(const std::filesystem::path& dir, const std::string& account_name) {
  UidView out;
  auto a = Archive::open(dir, Archive::Mode::read);
  auto account = a->find_account(account_name);
  if (!account) return out;
  for (auto& f : a->folders(account->id)) {
    if (f.noselect || f.gone) continue;
    a->for_each_message(account->id, f.id, f.uidvalidity, [&](const archive::MessageRecord& m) {
      if (m.state == archive::MessageState::present)
        out[f.name_utf8][m.key.uid] =
            fingerprint(archive::to_hex(m.hash), m.internaldate, archive::flags_to_imap(m.flags, m.keywords));
      return true;
    });
  }
  return out;
}

MultisetView multiset(const UidView& v) {
  MultisetView out;
  for (auto& [name, messages] : v) {
    auto& list = out[name];
    for (auto& [uid, fp] : messages) list.push_back(fp);
    std::sort(list.begin(), list.end());
  }
  return out;
}

Difference compare(const MultisetView& source, const MultisetView& copy) {
  Difference d;
  std::map<std::string, bool> names;
  for (auto& [n, _] : source) names[n] = true;
  for (auto& [n, _] : copy) names[n] = true;
  static const std::vector<std::string> kEmpty;
  for (auto& [name, _] : names) {
    auto s = source.count(name) ? source.at(name) : kEmpty;
    auto c = copy.count(name) ? copy.at(name) : kEmpty;
    std::vector<std::string> missing, extra;
    std::set_difference(s.begin(), s.end(), c.begin(), c.end(), std::back_inserter(missing));
    std::set_difference(c.begin(), c.end(), s.begin(), s.end(), std::back_inserter(extra));
    d.lost += missing.size();
    d.duplicated += extra.size();
  }
  return d;
}

size_t count(const UidView& v) {
  size_t n = 0;
  for (auto& [_, m] : v) n += m.size();
  return n;
}

verify::OfflineReport verify_archive(const std::filesystem::path& dir) {
  verify::OfflineOptions o;
  o.archive_dir = dir;
  o.threads = 2;
  NullSink quiet;
  return verify::verify_offline(o, quiet);
}

}  // namespace imapstage::testing

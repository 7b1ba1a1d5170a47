// The POP3 source (pop3_source.h).
#include "pop3/pop3_source.h"

#include <map>
#include <unordered_map>

#include <fmt/format.h>

#include "common/error.h"
#include "sources/message_text.h"

namespace imapstage::pop3 {

namespace {

class Pop3Source final : public sources::Source {
 public:
  Pop3Source(Endpoint endpoint, Credentials credentials, size_t in_flight, Pacing pacing)
      : endpoint_(std::move(endpoint)), credentials_(std::move(credentials)), in_flight_(in_flight),
        pacing_(std::move(pacing)) {}

  archive::SourceKind kind() const override { return archive::SourceKind::pop3; }
  std::string location() const override { return endpoint_.address(); }

  std::vector<sources::SourceFolder> folders() override {
    session();  // logs in now: a refused login stops the export before the archive is touched
    sources::SourceFolder inbox;
    inbox.path = {"INBOX"};
    inbox.location = "INBOX on " + endpoint_.address();
    return {inbox};
  }

  sources::Listing list(const sources::SourceFolder&) override {
    Session& s = session();
    Maildrop drop = s.list();
    auto ids = identities(drop);
    sources::Listing listing;
    listing.messages.reserve(drop.entries.size());
    size_t duplicates = 0;
    for (size_t i = 0; i < drop.entries.size(); ++i) {
      sources::SourceMessage m;
      m.id = ids[i];
      if (m.id != drop.entries[i].uidl) ++duplicates;
      m.size = drop.entries[i].size;
      m.locator = drop.entries[i].number;
      listing.messages.push_back(std::move(m));
    }
    if (!drop.has_uidl)
      listing.note = fmt::format("{} has no UIDL: every message is fetched on each run and recognised by its SHA-256",
                                 endpoint_.address());
    else if (duplicates)
      listing.note = fmt::format("{} shows {} UIDLs more than once; those messages are kept apart as UIDL#2, UIDL#3...",
                                 endpoint_.address(), duplicates);
    listed_ = true;
    listed_uidl_ = drop.has_uidl;
    listed_sizes_.clear();
    for (auto& e : drop.entries) listed_sizes_.push_back(e.size);
    return listing;
  }

  void fetch(const sources::SourceFolder&, const std::vector<const sources::SourceMessage*>& wanted,
             uint64_t max_size, sources::FetchSink& sink) override {
    // Message numbers hold for the session that listed them only: after a
    // dropped connection the maildrop is listed again and each message found
    // by its identity (without UIDL: only when the listing is unchanged).
    std::unordered_map<uint64_t, uint32_t> renumbered;
    bool relisted = false;
    if (!session_ || !session_->alive() || !listed_) {
      Maildrop drop = session().list();
      relisted = true;
      if (!drop.has_uidl || !listed_uidl_) {
        std::vector<uint64_t> sizes;
        for (auto& e : drop.entries) sizes.push_back(e.size);
        if (sizes != listed_sizes_)
          throw Error(ErrorKind::protocol,
                      fmt::format("the maildrop at {} changed while the connection was down, and without UIDL its "
                                  "messages cannot be told apart; run the export again",
                                  endpoint_.address()),
                      Retry::never, {.folder = "INBOX", .server = endpoint_.address()});
        for (auto& e : drop.entries) renumbered[e.number] = e.number;
      } else {
        auto ids = identities(drop);
        std::unordered_map<std::string, uint32_t> by_id;
        for (size_t i = 0; i < ids.size(); ++i) by_id[ids[i]] = drop.entries[i].number;
        for (auto* m : wanted)
          if (auto it = by_id.find(m->id); it != by_id.end()) renumbered[m->locator] = it->second;
      }
      listed_ = true;
    }
    std::vector<const sources::SourceMessage*> asked;
    std::vector<uint32_t> numbers;
    for (auto* m : wanted) {
      if (m->size > max_size) {
        sink.failed(*m, refused(*m, fmt::format("its size ({} bytes) is over the maximum message size ({} bytes)",
                                                m->size, max_size),
                                ErrorKind::limit));
        continue;
      }
      uint32_t number = static_cast<uint32_t>(m->locator);
      if (relisted) {
        auto it = renumbered.find(m->locator);
        if (it == renumbered.end()) {
          sink.failed(*m, refused(*m, "it was deleted from the server while it was being exported",
                                  ErrorKind::not_found));
          continue;
        }
        number = it->second;
      }
      asked.push_back(m);
      numbers.push_back(number);
    }
    if (numbers.empty()) return;

    struct Adapter final : RetrieveSink {
      Pop3Source& self;
      const std::vector<const sources::SourceMessage*>& asked;
      sources::FetchSink& sink;
      Adapter(Pop3Source& s, const std::vector<const sources::SourceMessage*>& a, sources::FetchSink& k)
          : self(s), asked(a), sink(k) {}
      void message(size_t i, std::string&& bytes) override {
        sources::FetchedMessage f;
        archive::DateSource from = archive::DateSource::fetch_time;
        if (auto date = sources::date_from_headers(bytes, from)) {
          f.internaldate = date->unix_seconds;
          f.internaldate_tz = date->tz_minutes;
          f.date_source = from;
        } else {
          f.date_source = archive::DateSource::fetch_time;
        }
        f.bytes = std::move(bytes);
        sink.deliver(*asked[i], std::move(f));
      }
      void failed(size_t i, const std::string& text, bool too_large) override {
        sink.failed(*asked[i], self.refused(*asked[i], too_large ? text : "RETR answered -ERR: " + text,
                                            too_large ? ErrorKind::limit : ErrorKind::protocol));
      }
      bool stop() override { return sink.stop(); }
      // The group from message i on is paid for before its first RETR.
      void before_send(size_t i) override {
        if (!self.pacing_.acquire || paid > 0) {
          if (paid > 0) --paid;
          return;
        }
        uint64_t bytes = 0, count = 0;
        for (size_t j = i; j < asked.size() && count < self.pacing_.group_messages; ++j) {
          if (count > 0 && bytes + asked[j]->size > self.pacing_.group_bytes) break;
          bytes += asked[j]->size;
          ++count;
        }
        self.pacing_.acquire(bytes, count);
        paid = count - 1;
      }
      bool paced() const override { return static_cast<bool>(self.pacing_.acquire); }
      uint64_t paid = 0;  // RETRs after this one already paid for
    } adapter(*this, asked, sink);
    session_->retrieve(numbers, max_size, adapter, in_flight_);
  }

 private:
  // The logged-in session, connecting again when the last one died.
  Session& session() {
    if (!session_ || !session_->alive()) {
      listed_ = false;
      session_.reset();
      auto s = Session::connect(endpoint_);
      s->login(credentials_);
      session_ = std::move(s);
    }
    return *session_;
  }

  Error refused(const sources::SourceMessage& m, const std::string& why, ErrorKind kind) const {
    return Error(kind,
                 fmt::format("message {} ({}): {}", m.locator,
                             m.id.empty() ? std::string("no UIDL") : "UIDL " + m.id, why),
                 Retry::never, {.folder = "INBOX", .server = endpoint_.address()});
  }

  Endpoint endpoint_;
  Credentials credentials_;
  size_t in_flight_;
  Pacing pacing_;
  std::unique_ptr<Session> session_;
  bool listed_ = false;                // the current session listed the maildrop
  bool listed_uidl_ = false;           // the last listing had UIDLs
  std::vector<uint64_t> listed_sizes_;  // the last listing's sizes, in message number order
};

}  // namespace

std::unique_ptr<sources::Source> open_source(const Endpoint& endpoint, const Credentials& credentials,
                                             size_t in_flight, Pacing pacing) {
  return std::make_unique<Pop3Source>(endpoint, credentials, in_flight, std::move(pacing));
}

std::vector<std::string> identities(const Maildrop& drop) {
  std::vector<std::string> ids;
  ids.reserve(drop.entries.size());
  std::unordered_map<std::string, size_t> seen;
  for (auto& e : drop.entries) {
    if (!drop.has_uidl) {
      ids.emplace_back();
      continue;
    }
    size_t n = ++seen[e.uidl];
    ids.push_back(n == 1 ? e.uidl : fmt::format("{}#{}", e.uidl, n));
  }
  // A server UIDL may itself look like "X#2": make every identity unique all the same.
  std::unordered_map<std::string, size_t> taken;
  for (auto& id : ids)
    if (!id.empty()) ++taken[id];
  for (auto& id : ids) {
    if (id.empty() || taken[id] == 1) continue;
    --taken[id];
    size_t n = 2;
    std::string fresh;
    do fresh = fmt::format("{}#{}", id, n++);
    while (taken.count(fresh));
    taken[fresh] = 1;
    id = fresh;
  }
  return ids;
}

DeleteResult delete_archived(const Endpoint& endpoint, const Credentials& credentials, const archive::Archive& archive,
                             const std::string& account_name, EventSink& events) {
  DeleteResult result;
  auto account = archive.find_account(account_name);
  std::map<std::string, archive::Hash> archived;  // identity -> object of a present message
  if (account) {
    for (auto& folder : archive.folders(account->id)) {
      if (folder.path != std::vector<std::string>{"INBOX"} || folder.uidvalidity == 0) continue;
      archive.for_each_message(account->id, folder.id, folder.uidvalidity, [&](const archive::MessageRecord& m) {
        if (m.state == archive::MessageState::present && !m.source_id.empty() &&
            m.source_id.rfind("sha256:", 0) != 0)
          archived[m.source_id] = m.hash;
        return true;
      });
    }
  }
  auto session = Session::connect(endpoint);
  session->login(credentials);
  Maildrop drop = session->list();
  if (!drop.has_uidl) {
    result.no_uidl = true;
    events.emit({{"event", "warning"},
                 {"account", account_name},
                 {"text", fmt::format("--delete-after-verify: {} has no UIDL, so no message can be matched with the "
                                      "archive for sure; nothing was deleted",
                                      endpoint.address())}});
    session->quit();
    return result;
  }
  auto ids = identities(drop);
  for (size_t i = 0; i < drop.entries.size(); ++i) {
    auto it = archived.find(ids[i]);
    if (it == archived.end()) {
      ++result.not_archived;
      continue;
    }
    try {
      archive.check_object(it->second);
    } catch (const Error& e) {
      ++result.failed_check;
      events.emit({{"event", "warning"},
                   {"account", account_name},
                   {"text", fmt::format("--delete-after-verify: message {} (UIDL {}) kept on the server: its archived "
                                        "copy does not read back: {}",
                                        drop.entries[i].number, ids[i], e.what())}});
      continue;
    }
    session->dele(drop.entries[i].number);
    ++result.deleted;
  }
  session->quit();  // the DELEs take effect here
  return result;
}

}  // namespace imapstage::pop3

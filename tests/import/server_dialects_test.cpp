// Import against the scripted fake server playing servers that are not
// Dovecot: one that stores messages changed (Cyrus munges 8-bit header bytes,
// Courier adds a final CRLF) and one that refuses folder names (Cyrus: \ % * ").
// A changed copy is reported per message and never sent twice; a refused name
// is imported under an acceptable one, with the server's reason.
#include <csignal>
#include <algorithm>
#include <map>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "archive-format/hash.h"
#include "common/server_rewrites.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "tests/support/fake_imap_server.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::FakeExchange;
using testing::FakeImapServer;
using testing::TempDir;

// Messages 1..6; the odd ones carry raw 8-bit bytes in a header field.
std::string message(int n) {
  std::string subject = n % 2 ? "Gr\xc3\xbc\xc3\x9f" "e " : "hello ";
  std::string body = "Message-ID: <d" + std::to_string(n) + "@fake>\r\nSubject: " + subject + std::to_string(n) +
                     "\r\n\r\n";
  for (int i = 0; i < 5 + n; ++i) body += "dialect body line " + std::to_string(n) + "\r\n";
  return body;
}

// What Cyrus stores: every 8-bit byte of the header section replaced by 'X'.
std::string munged(const std::string& bytes) {
  std::string out = bytes;
  size_t end = out.find("\r\n\r\n");
  for (size_t i = 0; i < std::min(end, out.size()); ++i)
    if (static_cast<unsigned char>(out[i]) >= 0x80) out[i] = 'X';
  return out;
}

class ServerDialectsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 1; i <= 6; ++i) source_.add_message("INBOX", message(i));
    export_source();
  }

  // Exports the source's account into the archive (incremental after the first time).
  void export_source() {
    exporting::ExportOptions o;
    o.archive_dir = archive_dir();
    o.endpoint = source_.endpoint();
    o.credentials.user = "alice";
    o.credentials.secret = "pw";
    o.account_name = "alice";
    NullSink sink;
    ASSERT_TRUE(exporting::run_export(o, sink).complete());
  }

  std::string archive_dir() const { return dir_.path() + "/archive"; }

  importing::ImportSummary run(RecordingSink& events) {
    importing::ImportOptions o;
    o.archive_dir = archive_dir();
    o.endpoint = target_.endpoint();
    o.credentials.user = "bob";
    o.credentials.secret = "pw";
    o.account = "alice";
    o.retry.backoff = std::chrono::milliseconds(10);
    o.retry.max_backoff = std::chrono::milliseconds(20);
    o.retry.max_attempts = 3;
    return importing::run_import(o, events);
  }

  // Stores every APPENDed message munged, and answers with APPENDUID unless `drop` (then the connection closes).
  void store_munged(bool drop, int times) {
    target_.on("^APPEND", [drop](FakeExchange& x) {
      std::vector<uint32_t> uids;
      for (auto& l : x.command().literals) uids.push_back(x.server().add_message("INBOX", munged(l)));
      if (drop) {
        x.close();
        return;
      }
      std::string set = std::to_string(uids.front());
      if (uids.size() > 1) set += ":" + std::to_string(uids.back());
      x.tagged("OK [APPENDUID 1 " + set + "] APPEND completed");
    }, times);
  }

  // The target's INBOX, as Cyrus would hold the six messages: each exactly once.
  void expect_each_once_munged() {
    std::map<std::string, int> copies;
    for (auto& m : target_.folder("INBOX").messages) ++copies[m.body];
    for (int i = 1; i <= 6; ++i) EXPECT_EQ(copies[munged(message(i))], 1) << "message " << i;
    EXPECT_EQ(target_.folder("INBOX").messages.size(), 6u);
  }

  TempDir dir_;
  FakeImapServer source_;
  FakeImapServer target_;
};

TEST_F(ServerDialectsTest, RewrittenCopiesAreReportedPerMessageAndNotResent) {
  store_munged(false, 0);
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(s.total(&importing::ImportFolderResult::appended), 6u);
  EXPECT_EQ(s.total(&importing::ImportFolderResult::rewritten), 3u);  // the three with 8-bit headers
  EXPECT_EQ(s.total(&importing::ImportFolderResult::altered), 0u);
  size_t reported = 0;
  for (auto& e : events.events())
    if (e["event"] == "message_rewritten") {
      ++reported;
      EXPECT_EQ(e["rewrite"], std::string(kRewrite8bitHeader));
      EXPECT_EQ(e["uid"].get<uint32_t>() % 2, 1u);  // source UIDs 1, 3, 5
    }
  EXPECT_EQ(reported, 3u);
  expect_each_once_munged();

  RecordingSink again;
  auto rerun = run(again);
  EXPECT_EQ(rerun.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(rerun.total(&importing::ImportFolderResult::already_there), 6u);
  expect_each_once_munged();
}

TEST_F(ServerDialectsTest, ACopyChangedOtherwiseIsReportedAsAltered) {
  target_.on("^APPEND", [](FakeExchange& x) {
    std::vector<uint32_t> uids;
    for (auto& l : x.command().literals) {
      std::string stored = l;
      if (l.find("<d2@fake>") != std::string::npos) stored.insert(0, "X-Added-By-Server: yes\r\n");
      uids.push_back(x.server().add_message("INBOX", stored));
    }
    x.tagged("OK [APPENDUID 1 " + std::to_string(uids.front()) + ":" + std::to_string(uids.back()) +
             "] APPEND completed");
  });
  RecordingSink events;
  auto s = run(events);
  EXPECT_EQ(s.total(&importing::ImportFolderResult::altered), 1u);
  bool named = false;
  for (auto& e : events.events())
    if (e["event"] == "warning" && e.value("altered", false)) {
      named = e["uid"] == 2 && e["text"].get<std::string>().find("folder INBOX, UID 2") != std::string::npos;
    }
  EXPECT_TRUE(named);
}

TEST_F(ServerDialectsTest, AnInterruptedAppendOfRewrittenMessagesNeverDuplicates) {
  // The server stores the group (changed) and the connection drops before its reply:
  // the retry recognises the changed copies by fingerprint and INTERNALDATE.
  store_munged(true, 1);
  store_munged(false, 0);
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  EXPECT_GE(s.reconnects, 1);
  EXPECT_EQ(s.total(&importing::ImportFolderResult::reconciled), 6u);
  EXPECT_EQ(s.total(&importing::ImportFolderResult::appended), 0u);
  expect_each_once_munged();
}

TEST_F(ServerDialectsTest, AnInterruptedAppendWithoutUidnextOrMessageIdNeverDuplicates) {
  // Courier reports no UIDNEXT on SELECT, and drafts often carry no
  // Message-ID: the in-flight records still get a UID hint (the highest UID
  // + 1), and a record without one is found by date and bytes.
  source_.add_folder("Drafts");
  for (int i = 1; i <= 3; ++i)
    source_.add_message("Drafts", "Subject: draft " + std::to_string(i) + "\r\n\r\nunfinished " +
                                      std::to_string(i) + "\r\n", {"\\Draft"});
  export_source();
  target_.add_folder("Drafts");
  target_.add_message("Drafts", "Subject: already there\r\n\r\nolder\r\n");
  target_.set_reports_uidnext(false, false);
  // Every APPEND is stored, and the first of each folder loses its reply.
  std::map<std::string, int> appends;
  target_.on("^APPEND", [&appends](FakeExchange& x) {
    std::string folder = x.command().text.substr(7);
    folder = folder.substr(0, folder.find(' '));
    std::erase(folder, '"');
    std::vector<uint32_t> uids;
    for (auto& l : x.command().literals) uids.push_back(x.server().add_message(folder, l));
    if (appends[folder]++ == 0) {
      x.close();
      return;
    }
    x.tagged(fmt::format("OK [APPENDUID {} {}:{}] APPEND completed", x.server().folder(folder).uidvalidity,
                         uids.front(), uids.back()));
  });
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  EXPECT_GE(s.reconnects, 1);
  EXPECT_EQ(s.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(s.total(&importing::ImportFolderResult::reconciled), 9u);
  EXPECT_EQ(target_.folder("INBOX").messages.size(), 6u);
  ASSERT_EQ(target_.folder("Drafts").messages.size(), 4u);

  // A record left without a UID hint (as an older run wrote it) is found by
  // date and bytes, though the message has no Message-ID.
  {
    auto a = archive::Archive::open(archive_dir(), archive::Archive::Mode::write);
    archive::Batch batch(*a);
    size_t changed = 0;
    auto target = a->find_target("bob@" + target_.endpoint().host + ":" + std::to_string(target_.endpoint().port));
    ASSERT_TRUE(target);
    a->for_each_append(*target, [&](const archive::AppendRecord& r) {
      auto m = a->message(r.key.source);
      if (m && m->flags & archive::kDraft) {
        auto in_flight = r;
        in_flight.state = archive::AppendState::in_flight;
        in_flight.target_uid = in_flight.target_uidvalidity = 0;
        in_flight.when -= 3600;
        batch.put_append(in_flight);
        ++changed;
      }
      return true;
    });
    batch.commit();
    ASSERT_EQ(changed, 3u);
  }
  RecordingSink again;
  auto rerun = run(again);
  EXPECT_TRUE(rerun.complete());
  EXPECT_EQ(rerun.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(rerun.total(&importing::ImportFolderResult::reconciled), 3u);
  EXPECT_EQ(target_.folder("Drafts").messages.size(), 4u);
}

TEST_F(ServerDialectsTest, AFolderNameTheServerRefusesIsImportedUnderAnAcceptableOne) {
  source_.add_folder("100% done");
  source_.add_message("100% done", message(1));
  export_source();
  target_.on("^CREATE .*%", "$TAG NO Invalid mailbox name\r\n");
  RecordingSink events;
  auto s = run(events);
  EXPECT_TRUE(s.complete());
  ASSERT_TRUE(target_.has_folder("100_ done"));
  EXPECT_EQ(target_.folder("100_ done").messages.size(), 1u);
  EXPECT_FALSE(target_.has_folder("100% done"));
  bool warned = false;
  for (auto& e : events.events())
    if (e["event"] == "warning" && e.contains("refused"))
      warned = e["text"].get<std::string>().find("Invalid mailbox name") != std::string::npos;
  EXPECT_TRUE(warned);
  // A re-run picks the same name and appends nothing.
  RecordingSink again;
  auto rerun = run(again);
  EXPECT_EQ(rerun.total(&importing::ImportFolderResult::appended), 0u);
  EXPECT_EQ(target_.folder("100_ done").messages.size(), 1u);
}

TEST_F(ServerDialectsTest, AFolderThatCannotBeCreatedCarriesTheServersReason) {
  source_.add_folder("Plain");
  source_.add_message("Plain", message(2));
  export_source();
  target_.on("^CREATE", "$TAG NO [NOPERM] You may not create folders here\r\n");
  RecordingSink events;
  auto s = run(events);
  EXPECT_FALSE(s.complete());
  bool named = false;
  for (auto& f : s.folders)
    if (f.source == "Plain") named = f.error.find("You may not create folders here") != std::string::npos;
  EXPECT_TRUE(named);
}

}  // namespace
}  // namespace imapstage

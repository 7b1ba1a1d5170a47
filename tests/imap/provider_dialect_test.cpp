// Provider dialects against the scripted fake server: Gmail's X-GM-EXT-1
// detection, Microsoft 365's limit on command length ("BAD Command Argument
// Error. 11") and its loss of \Flagged on APPEND; and the provider profiles.
#include <algorithm>
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "batch/profiles.h"
#include "batch/providers.h"
#include "common/error.h"
#include "export/exporter.h"
#include "import/importer.h"
#include "tests/support/fake_imap_server.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

using testing::FakeExchange;
using testing::FakeImapServer;
using testing::TempDir;

std::string message(int n) {
  return "Message-ID: <p" + std::to_string(n) + "@fake>\r\nSubject: provider " + std::to_string(n) +
         "\r\n\r\nbody " + std::to_string(n) + "\r\n";
}

// Microsoft 365 refuses command lines beyond ~10,000 characters.
void refuse_long_lines(FakeImapServer& server) {
  server.on("^UID ", [](FakeExchange& x) {
    if (x.command().text.size() > 10000) x.tagged("BAD Command Argument Error. 11");
    else x.standard();
  });
}

std::unique_ptr<imap::Session> logged_in(FakeImapServer& server) {
  auto s = imap::Session::connect(server.endpoint());
  s->login({"alice", "pw"});
  return s;
}

TEST(SplitSequenceSet, PartsStayUnderTheLimitInOrder) {
  std::vector<imap::UidRange> ranges;
  for (uint32_t u = 1; u < 20000; u += 2) ranges.push_back({u, u});
  auto parts = imap::split_sequence_set(ranges, 1000);
  ASSERT_GT(parts.size(), 1u);
  std::vector<imap::UidRange> joined;
  for (auto& p : parts) {
    EXPECT_LE(imap::to_sequence_set(p).size(), 1000u);
    joined.insert(joined.end(), p.begin(), p.end());
  }
  ASSERT_EQ(joined.size(), ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) EXPECT_EQ(joined[i].first, ranges[i].first);
  EXPECT_TRUE(imap::split_sequence_set({}, 1000).empty());
}

TEST(ProviderDialect, LongUidSetsAreSplitUnderTheLimit) {
  FakeImapServer server;
  for (int i = 1; i <= 12; ++i) server.add_message("INBOX", message(i));
  refuse_long_lines(server);
  auto s = logged_in(server);
  s->examine("INBOX");
  // Every other UID up to 6000: about 17,000 characters as one set.
  std::vector<imap::UidRange> odd;
  for (uint32_t u = 1; u < 6000; u += 2) odd.push_back({u, u});
  ASSERT_GT(imap::to_sequence_set(odd).size(), 10000u);
  std::vector<uint32_t> sizes, flags, bodies;
  s->fetch_sizes(odd, [&](uint32_t uid, uint64_t) { sizes.push_back(uid); });
  s->fetch_flags(odd, std::nullopt, [&](imap::FlagUpdate&& f) { flags.push_back(f.uid); });
  s->fetch_batches({odd}, [&](size_t, imap::FetchedMessage&& m) { bodies.push_back(m.uid); }, {});
  std::vector<uint32_t> want = {1, 3, 5, 7, 9, 11};
  EXPECT_EQ(sizes, want);
  EXPECT_EQ(flags, want);
  EXPECT_EQ(bodies, want);
  size_t fetches = 0;
  for (auto& c : server.commands()) {
    EXPECT_LE(c.text.size(), 8000u) << c.text.substr(0, 40);
    if (c.text.rfind("UID FETCH", 0) == 0) ++fetches;
  }
  EXPECT_GE(fetches, 6u);  // two or more commands each
  // A smaller limit makes more commands.
  auto e = server.endpoint();
  e.max_command_length = 2000;
  auto small = imap::Session::connect(e);
  small->login({"alice", "pw"});
  small->examine("INBOX");
  size_t before = server.commands().size();
  sizes.clear();
  small->fetch_sizes(odd, [&](uint32_t uid, uint64_t) { sizes.push_back(uid); });
  EXPECT_EQ(sizes, want);
  EXPECT_GE(server.commands().size() - before, 8u);  // 14,000 characters in parts of 1,900
}

TEST(ProviderDialect, GmailIsDetectedByXGmExt1) {
  FakeImapServer server;
  server.add_message("INBOX", message(1));
  EXPECT_EQ(logged_in(server)->detected_provider(), "");
  server.set_capabilities("IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS NAMESPACE X-GM-EXT-1 APPENDLIMIT=35651584");
  auto s = logged_in(server);
  EXPECT_EQ(s->detected_provider(), "gmail");
  EXPECT_EQ(s->append_limit(), 35651584u);

  TempDir dir;
  exporting::ExportOptions o;
  o.archive_dir = dir.path() + "/archive";
  o.endpoint = server.endpoint();
  o.credentials = {"alice", "pw"};
  o.account_name = "alice";
  RecordingSink events;
  auto summary = exporting::run_export(o, events);
  EXPECT_TRUE(summary.complete());
  int said = 0;
  for (auto& e : events.events())
    if (e.value("event", "") == "provider") {
      ++said;
      EXPECT_EQ(e.value("provider", ""), "gmail");
      EXPECT_NE(e.value("text", "").find("X-GM-EXT-1"), std::string::npos);
    }
  EXPECT_EQ(said, 1);
}

class FlaggedQuirkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    source_.add_message("INBOX", message(1), {"\\Flagged", "\\Seen"});
    source_.add_message("INBOX", message(2), {"\\Seen"});
    source_.add_message("INBOX", message(3), {"\\Flagged", "$Work"});
    exporting::ExportOptions o;
    o.archive_dir = dir_.path() + "/archive";
    o.endpoint = source_.endpoint();
    o.credentials = {"alice", "pw"};
    o.account_name = "alice";
    NullSink sink;
    ASSERT_TRUE(exporting::run_export(o, sink).complete());
    // Microsoft 365: \Flagged given with APPEND is dropped.
    target_.on("^APPEND", [](FakeExchange& x) {
      x.standard();
      auto inbox = x.server().folder("INBOX");
      for (auto& m : inbox.messages) {
        auto flags = m.flags;
        std::erase(flags, "\\Flagged");
        x.server().set_flags("INBOX", m.uid, flags);
      }
    });
  }

  importing::ImportSummary import(bool restore) {
    importing::ImportOptions o;
    o.archive_dir = dir_.path() + "/archive";
    o.endpoint = target_.endpoint();
    o.credentials = {"bob", "pw"};
    o.account = "alice";
    o.policy.restore_flagged = restore;
    NullSink sink;
    return importing::run_import(o, sink);
  }

  std::map<std::string, std::vector<std::string>> target_flags() {
    std::map<std::string, std::vector<std::string>> out;
    for (auto& m : target_.folder("INBOX").messages) {
      auto f = m.flags;
      std::sort(f.begin(), f.end());
      out[m.body] = f;
    }
    return out;
  }

  TempDir dir_;
  FakeImapServer source_, target_;
};

TEST_F(FlaggedQuirkTest, WithoutTheQuirkTheFlagIsLost) {
  ASSERT_TRUE(import(false).complete());
  auto flags = target_flags();
  EXPECT_EQ(flags[message(1)], (std::vector<std::string>{"\\Seen"}));
}

TEST_F(FlaggedQuirkTest, FlaggedIsStoredAgainAfterAppend) {
  auto summary = import(true);
  ASSERT_TRUE(summary.complete());
  auto flags = target_flags();
  ASSERT_EQ(flags.size(), 3u);
  EXPECT_EQ(flags[message(1)], (std::vector<std::string>{"\\Flagged", "\\Seen"}));
  EXPECT_EQ(flags[message(2)], (std::vector<std::string>{"\\Seen"}));
  EXPECT_EQ(flags[message(3)], (std::vector<std::string>{"$Work", "\\Flagged"}));
  size_t stores = 0;
  for (auto& c : target_.commands())
    if (c.text.rfind("UID STORE", 0) == 0) {
      ++stores;
      EXPECT_NE(c.text.find("\\Flagged"), std::string::npos) << c.text;
    }
  EXPECT_EQ(stores, 2u);  // only the flagged messages
}

TEST(ProviderProfiles, DefaultsAndOverrides) {
  auto config = batch::parse_config(R"(
[profiles.g]
provider = "gmail"
token_cmd = "print-token"
domains = ["example.org"]

[profiles.m]
provider = "microsoft365"
host = "imap.tenant.example"
restore_flagged = false
max_command_length = 4000
daily_budget = "1GB"
server_max_bandwidth = "10MB"
server_max_messages_per_second = 20
)");
  const auto& g = config.profile("g");
  EXPECT_EQ(g.provider, "gmail");
  EXPECT_EQ(g.host, "imap.gmail.com");
  EXPECT_EQ(g.tls, "implicit");
  EXPECT_EQ(g.mechanism, imap::AuthMechanism::xoauth2);
  EXPECT_EQ(g.max_message_mib, 34u);  // 35 MB
  EXPECT_EQ(g.endpoint().effective_port(), 993);
  EXPECT_EQ(g.endpoint().max_command_length, 8000u);
  const auto& m = config.profile("m");
  EXPECT_EQ(m.host, "imap.tenant.example");
  EXPECT_FALSE(m.restore_flagged);
  EXPECT_EQ(m.endpoint().max_command_length, 4000u);
  EXPECT_EQ(m.daily_budget, 1ull << 30);
  EXPECT_EQ(m.server_max_bytes_per_second, double(10 << 20));
  EXPECT_EQ(m.server_max_messages_per_second, 20.0);
  auto m2 = batch::parse_config("[profiles.x]\nprovider = \"m365\"\n").profile("x");
  EXPECT_TRUE(m2.restore_flagged);
  EXPECT_EQ(m2.host, "outlook.office365.com");
  EXPECT_THROW(batch::parse_config("[profiles.y]\nprovider = \"yahoo\"\n"), Error);
  EXPECT_NE(batch::providers_table().find("microsoft365"), std::string::npos);
}

}  // namespace
}  // namespace imapstage

// What earlier exports selected, read back from a real archive's run
// history: which filter verify compares a folder with, and which folders an
// export may still skip as unchanged.
#include <gtest/gtest.h>

#include "archive-format/archive.h"
#include "common/message_filter.h"
#include "export/export_common.h"
#include "tests/support/test_server.h"

namespace imapstage::exporting {
namespace {

using archive::Archive;
using testing::TempDir;

class ExportHistoryTest : public ::testing::Test {
 protected:
  void SetUp() override { archive_ = Archive::open(dir_.path() + "/archive", Archive::Mode::create); }

  // One export run of "alice" that ends with `folders` (raw name, filtered_out; -1: not finished).
  uint64_t run(const MessageFilter& filter, std::vector<std::pair<std::string, int>> folders,
               bool unchanged = false, bool ended = true) {
    ExportSummary summary;
    summary.account = "alice";
    summary.policy.filter = filter;
    summary.run_id = begin_export_run(*archive_, summary, nlohmann::json::object());
    for (auto& [raw, left_out] : folders) {
      FolderResult f;
      f.name = f.name_raw = raw;
      f.finished = left_out >= 0;
      f.unchanged = unchanged;
      f.filtered_out = left_out < 0 ? 0 : uint64_t(left_out);
      summary.folders.push_back(f);
    }
    if (ended) end_export_run(*archive_, summary);
    return summary.run_id;
  }

  static MessageFilter since(const char* day) {
    MessageFilter f;
    f.since = parse_day(day);
    return f;
  }

  TempDir dir_;
  std::unique_ptr<Archive> archive_;
};

TEST_F(ExportHistoryTest, NoFilterEverLeavesNothingToLack) {
  run({}, {{"INBOX", 0}, {"Sent", 0}});
  ExportSelections s(*archive_, "alice");
  EXPECT_FALSE(s.may_lack("INBOX", {}));
  EXPECT_FALSE(s.may_lack("INBOX", since("2020-01-01")));
  EXPECT_TRUE(s.last_filter("INBOX").empty());
}

TEST_F(ExportHistoryTest, AFilteredRunLeavesGapsUntilAWholeRunFinishesTheFolder) {
  run({}, {{"INBOX", 0}, {"Sent", 0}});
  run(since("2024-01-01"), {{"INBOX", 3}, {"Sent", 0}});
  {
    ExportSelections s(*archive_, "alice");
    EXPECT_TRUE(s.may_lack("INBOX", {}));                    // a wider selection: search again
    EXPECT_TRUE(s.may_lack("INBOX", since("2023-01-01")));
    EXPECT_FALSE(s.may_lack("INBOX", since("2024-01-01")));  // the same selection: unchanged is unchanged
    EXPECT_FALSE(s.may_lack("Sent", {}));                    // examined, nothing left out
    EXPECT_EQ(s.last_filter("INBOX"), since("2024-01-01"));
  }
  // An unchanged folder in a filtered run says nothing about what it lacks.
  run(since("2024-01-01"), {{"INBOX", 0}}, /*unchanged=*/true);
  EXPECT_TRUE(ExportSelections(*archive_, "alice").may_lack("INBOX", {}));
  // A run that never ended (crashed) with another filter counts, whatever it finished.
  run(since("2025-01-01"), {{"INBOX", 0}}, false, /*ended=*/false);
  EXPECT_TRUE(ExportSelections(*archive_, "alice").may_lack("INBOX", since("2024-01-01")));
  // A whole run that finished the folder closes the gap; one that did not finish it does not.
  run({}, {{"INBOX", -1}});
  EXPECT_TRUE(ExportSelections(*archive_, "alice").may_lack("INBOX", {}));
  uint64_t whole = run({}, {{"INBOX", 0}});
  ExportSelections after(*archive_, "alice");
  EXPECT_FALSE(after.may_lack("INBOX", {}));
  EXPECT_TRUE(after.last_filter("INBOX").empty());
  // The current run is left out of its own history.
  EXPECT_TRUE(ExportSelections(*archive_, "alice", whole).may_lack("INBOX", {}));
  // Other accounts' runs are not this account's.
  EXPECT_FALSE(ExportSelections(*archive_, "bob").may_lack("INBOX", {}));
}

}  // namespace
}  // namespace imapstage::exporting

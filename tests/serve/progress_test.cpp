// The progress of a serve job from the engines' events, on a clock the test
// moves: counts per phase, at most one update a second, rate and time left,
// the bytes moved across phases, problems with folder and UID.
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "serve/progress.h"

namespace imapstage::testing {
namespace {

struct Recorder {
  std::vector<nlohmann::json> published;
  uint64_t moved = 0;
  double now = 1000;
  serve::ProgressTracker tracker{[this](nlohmann::json p, uint64_t since) {
                                   published.push_back(std::move(p));
                                   moved += since;
                                 },
                                 [this] { return now; }};
};

nlohmann::json progress(const char* folder, uint64_t messages, uint64_t bytes) {
  return {{"event", "progress"}, {"folder", folder}, {"messages", messages}, {"bytes", bytes}};
}

TEST(ProgressTracker, CountsThePhaseAtMostOnceASecond) {
  Recorder r;
  r.tracker.phase("export");
  ASSERT_EQ(r.published.size(), 1u) << "a new phase is published at once";
  r.tracker.observe({{"event", "totals"}, {"folders", 2}, {"messages_total", 100}, {"bytes_total", 10000}});
  r.tracker.observe({{"event", "folder_start"}, {"folder", "INBOX"}, {"folders", 2}});
  for (int i = 1; i <= 50; ++i) {
    r.now += 0.01;  // 50 events in half a second
    r.tracker.observe(progress("INBOX", i, i * 100));
  }
  EXPECT_EQ(r.published.size(), 1u) << "updates within a second of the last one are not published";
  r.now = 1002;
  r.tracker.observe({{"event", "folder_done"}, {"folder", "INBOX"}});
  ASSERT_EQ(r.published.size(), 2u);
  auto p = r.published.back();
  EXPECT_EQ(p["phase"], "export");
  EXPECT_EQ(p["folders"], 2);
  EXPECT_EQ(p["folders_done"], 1);
  EXPECT_EQ(p["messages"], 50);
  EXPECT_EQ(p["messages_total"], 100);
  EXPECT_EQ(p["bytes"], 5000);
  EXPECT_EQ(p["bytes_total"], 10000);
  EXPECT_EQ(p["rate"], 2500) << "5000 bytes in the 2 s since the phase's first sample";
  EXPECT_EQ(p["eta"], 2) << "5000 bytes left at 2500 bytes/s";
  EXPECT_EQ(r.moved, 5000u);

  // The second folder's own counts add to the first's.
  r.now = 1004;
  r.tracker.observe(progress("Sent", 50, 5000));
  EXPECT_EQ(r.published.back()["messages"], 100);
  EXPECT_EQ(r.published.back()["bytes"], 10000);
  EXPECT_EQ(r.published.back()["eta"], 0);
}

TEST(ProgressTracker, ANewPhaseStartsAtZeroAndKeepsWhatMoved) {
  Recorder r;
  r.tracker.phase("export");
  r.now += 2;
  r.tracker.observe(progress("INBOX", 3, 3000));
  r.tracker.phase("import");
  auto p = r.published.back();
  EXPECT_EQ(p["phase"], "import");
  EXPECT_EQ(p["bytes"], 0);
  EXPECT_EQ(p["messages"], 0);
  EXPECT_EQ(p["moved"], 3000);
  // Without a totals event the folders' own totals add up.
  r.tracker.observe({{"event", "folder_start"}, {"folder", "INBOX"}, {"folders", 1}, {"messages_total", 3},
                     {"bytes_total", 3000}});
  r.now += 2;
  r.tracker.observe(progress("INBOX", 1, 1000));
  p = r.published.back();
  EXPECT_EQ(p["bytes_total"], 3000);
  EXPECT_EQ(p["moved"], 4000);
  r.tracker.phase("verify");
  r.tracker.observe(progress("INBOX", 9, 9000));  // verify's events count nothing
  EXPECT_EQ(r.published.back()["moved"], 4000);
  EXPECT_EQ(r.moved, 4000u);
  auto samples = r.tracker.samples(60);
  ASSERT_GE(samples.size(), 4u);
  EXPECT_EQ(samples.back()[1], 4000);
  EXPECT_EQ(r.tracker.samples(2).size(), 2u) << "thinned to at most the number asked for, the last kept";
  EXPECT_EQ(r.tracker.samples(2).back()[1], 4000);
}

TEST(ProgressTracker, KeepsTheFirstProblemsWithFolderAndUid) {
  Recorder r;
  r.tracker.phase("import");
  for (int i = 0; i < 25; ++i)
    r.tracker.observe({{"event", "message_error"}, {"folder", "INBOX"}, {"uid", 40 + i}, {"error", "too large"}});
  auto problems = r.tracker.problems();
  ASSERT_EQ(problems.size(), 20u);
  EXPECT_EQ(problems[0]["event"], "message_error");
  EXPECT_EQ(problems[0]["phase"], "import");
  EXPECT_EQ(problems[0]["folder"], "INBOX");
  EXPECT_EQ(problems[0]["uid"], 40);
  EXPECT_EQ(problems[0]["text"], "too large");
}

}  // namespace
}  // namespace imapstage::testing

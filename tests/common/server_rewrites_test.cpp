#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "common/server_rewrites.h"

namespace imapstage {
namespace {

const std::string kHeader = "From: a@example.org\r\nSubject: caf\xc3\xa9\r\n\r\n";  // two 8-bit header bytes
const std::string kClean = "From: a@example.org\r\nSubject: cafe\r\n\r\n";

struct Case {
  const char* name;
  std::string archived;
  std::string server;
  std::optional<std::string> expected;  // classify_rewrite's answer
  bool same_fingerprint;
};

std::vector<Case> cases() {
  return {
      // Known rewrites.
      {"munge8bit", kHeader + "body\r\n", "From: a@example.org\r\nSubject: cafXX\r\n\r\nbody\r\n",
       "8-bit header bytes replaced", true},
      {"munge8bit_header_only_not_body", kHeader + "caf\xc3\xa9\r\n",
       "From: a@example.org\r\nSubject: cafXX\r\n\r\ncaf\xc3\xa9\r\n", "8-bit header bytes replaced", true},
      {"munge8bit_no_empty_line_all_header", "Subject: \xe9\r\nX: \xe9\r\n", "Subject: X\r\nX: X\r\n",
       "8-bit header bytes replaced", true},
      {"bare_cr_removed", kClean + "a\rb\r\n", kClean + "ab\r\n", "bare CR changed", true},
      {"bare_cr_to_crlf", kClean + "a\rb\r\n", kClean + "a\r\nb\r\n", "bare CR changed", true},
      {"bare_cr_to_space", kClean + "a\rb\r\n", kClean + "a b\r\n", "bare CR changed", true},
      {"bare_cr_in_header", "Subject: a\rb\r\n\r\nx\r\n", "Subject: ab\r\n\r\nx\r\n", "bare CR changed", true},
      {"two_bare_crs_removed", kClean + "a\rb\rc\r\n", kClean + "abc\r\n", "bare CR changed", true},
      {"bare_cr_before_crlf", kClean + "a\r\r\n", kClean + "a\r\n", "bare CR changed", true},
      {"bare_cr_at_end", kClean + "a\r", kClean + "a\r\n", "bare CR changed", true},
      {"final_crlf_added", kClean + "body", kClean + "body\r\n", "final CRLF added", true},
      {"final_crlf_added_after_lf", kClean + "body\n", kClean + "body\n\r\n", "final CRLF added", true},
      {"final_crlf_added_to_empty", "", "\r\n", "final CRLF added", true},
      {"munge_and_final", kHeader + "body", "From: a@example.org\r\nSubject: cafXX\r\n\r\nbody\r\n",
       "8-bit header bytes replaced, final CRLF added", true},
      {"all_three", kHeader + "a\rb", "From: a@example.org\r\nSubject: cafXX\r\n\r\na b\r\n",
       "8-bit header bytes replaced, bare CR changed, final CRLF added", true},
      {"cyrus_both", "Subject: \xe9\r\n\r\na\rb\r\n", "Subject: X\r\n\r\nab\r\n",
       "8-bit header bytes replaced, bare CR changed", true},

      // Not a known rewrite.
      {"identical", kHeader + "body\r\n", kHeader + "body\r\n", std::nullopt, true},
      {"body_byte_changed", kClean + "body\r\n", kClean + "bodY\r\n", std::nullopt, false},
      {"body_8bit_replaced", kHeader + "caf\xc3\xa9\r\n",
       "From: a@example.org\r\nSubject: cafXX\r\n\r\ncafXX\r\n", std::nullopt, false},
      {"body_8bit_only_replaced", kClean + "caf\xc3\xa9\r\n", kClean + "cafXX\r\n", std::nullopt, false},
      {"empty_header_section_is_body", "\r\nSubject: \xe9\r\n", "\r\nSubject: X\r\n", std::nullopt, false},
      {"one_x_for_two_bytes", kHeader + "body\r\n", "From: a@example.org\r\nSubject: cafX\r\n\r\nbody\r\n",
       std::nullopt, false},
      {"8bit_header_to_question_mark", kHeader + "body\r\n",
       "From: a@example.org\r\nSubject: caf??\r\n\r\nbody\r\n", std::nullopt, false},
      {"munge_partial", kHeader + "body\r\n", "From: a@example.org\r\nSubject: cafX\xa9\r\n\r\nbody\r\n",
       std::nullopt, true},
      {"crlf_to_lf_not_bare", kClean + "a\r\nb\r\n", kClean + "a\nb\r\n", std::nullopt, true},
      {"bare_cr_to_x", kClean + "a\rb\r\n", kClean + "aXb\r\n", std::nullopt, false},
      {"bare_crs_changed_differently", kClean + "a\rb\rc\r\n", kClean + "ab c\r\n", std::nullopt, true},
      {"crlf_added_to_message_ending_in_crlf", kClean + "body\r\n", kClean + "body\r\n\r\n", std::nullopt, true},
      {"final_lf_added", kClean + "body", kClean + "body\n", std::nullopt, true},
      {"truncated", kClean + "body\r\n", kClean + "bo", std::nullopt, false},
      {"space_added", kClean + "a b\r\n", kClean + "a  b\r\n", std::nullopt, true},
      {"tab_for_space", kClean + "a b\r\n", kClean + "a\tb\r\n", std::nullopt, false},
      {"rewrite_plus_body_change", kHeader + "body",
       "From: a@example.org\r\nSubject: cafXX\r\n\r\nBody\r\n", std::nullopt, false},
  };
}

TEST(ServerRewrites, ClassifiesKnownRewritesAndNothingElse) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(classify_rewrite(c.archived, c.server), c.expected);
  }
}

TEST(ServerRewrites, FingerprintIsInvariantUnderKnownRewritesOnly) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(rewrite_fingerprint(c.archived) == rewrite_fingerprint(c.server), c.same_fingerprint);
    // Every known rewrite keeps the fingerprint.
    if (c.expected) {
      EXPECT_TRUE(c.same_fingerprint);
    }
  }
}

TEST(ServerRewrites, FingerprintOfLargeMessages) {
  // Larger than the fingerprint's chunk, with a rewrite at both ends.
  std::string body;
  for (int i = 0; i < 20000; ++i) body += "line " + std::to_string(i) + "\r\n";
  std::string archived = kHeader + "\r" + body + "end";
  std::string server = "From: a@example.org\r\nSubject: cafXX\r\n\r\n" + body + "end\r\n";
  EXPECT_EQ(classify_rewrite(archived, server), "8-bit header bytes replaced, bare CR changed, final CRLF added");
  EXPECT_EQ(rewrite_fingerprint(archived), rewrite_fingerprint(server));
  std::string changed = server;
  changed[changed.size() / 2] ^= 1;
  EXPECT_EQ(classify_rewrite(archived, changed), std::nullopt);
  EXPECT_NE(rewrite_fingerprint(archived), rewrite_fingerprint(changed));
}

TEST(ServerRewrites, AtRisk) {
  struct RiskCase {
    const char* name;
    std::string bytes;
    bool risk;
  };
  const std::vector<RiskCase> risk_cases = {
      {"clean", kClean + "body\r\n", false},
      {"8bit_body_only", kClean + "caf\xc3\xa9\r\n", false},
      {"8bit_header", kHeader + "body\r\n", true},
      {"8bit_header_without_empty_line", "Subject: \xe9\r\n", true},
      {"bare_cr_in_body", kClean + "a\rb\r\n", true},
      {"bare_cr_in_header", "Subject: a\rb\r\n\r\nx\r\n", true},
      {"no_final_crlf", kClean + "body", true},
      {"final_lf_only", kClean + "body\n", true},
      {"empty", "", true},
      {"only_crlf", "\r\n", false},
      {"cr_before_the_final_crlf", kClean + "body\r\r\n", true},
      {"8bit_after_the_header", "A: b\r\n\r\n\xe9\r\n", false},
      {"8bit_right_after_a_blank_looking_lf", "A: b\n\xe9: c\r\n", true},
  };
  for (const RiskCase& c : risk_cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(at_risk(c.bytes), c.risk);
    // The same answer for the message in pieces, split at every place (a message too large to hold).
    for (size_t cut = 0; cut <= c.bytes.size(); ++cut)
      for (size_t cut2 = cut; cut2 <= c.bytes.size(); ++cut2) {
        AtRiskScan scan;
        scan.add(std::string_view(c.bytes).substr(0, cut));
        scan.add(std::string_view(c.bytes).substr(cut, cut2 - cut));
        scan.add(std::string_view(c.bytes).substr(cut2));
        EXPECT_EQ(scan.at_risk(), c.risk) << "cut at " << cut << " and " << cut2;
      }
  }
}

}  // namespace
}  // namespace imapstage

// The accounts file parser: CSV with RFC 4180 quoting, imapsync-style lines,
// optional columns, malformed lines by number, and no password in any error.
#include <gtest/gtest.h>

#include "batch/accounts_file.h"

namespace imapstage::batch {
namespace {

TEST(AccountsFile, CsvWithHeaderAndQuotedFields) {
  auto f = parse_accounts(
      "source_user,source_password,target_user,target_password\n"
      "alice@a.example,\"pa,ss\"\"word\",alice@b.example,\"x y\"\n"
      "bob@a.example,secret2,bob2@b.example,t2\r\n");
  ASSERT_TRUE(f.errors.empty());
  ASSERT_EQ(f.accounts.size(), 2u);
  EXPECT_EQ(f.accounts[0].line, 2u);
  EXPECT_EQ(f.accounts[0].source_user, "alice@a.example");
  EXPECT_EQ(f.accounts[0].source_password, "pa,ss\"word");
  EXPECT_EQ(f.accounts[0].target_user, "alice@b.example");
  EXPECT_EQ(f.accounts[0].target_password, "x y");
  EXPECT_EQ(f.accounts[1].line, 3u);
  EXPECT_EQ(f.accounts[1].target_password, "t2");
}

TEST(AccountsFile, QuotedFieldSpanningLinesKeepsLineNumbers) {
  auto f = parse_accounts("a,\"multi\nline\",b,c\nd,e\n");
  ASSERT_TRUE(f.errors.empty());
  ASSERT_EQ(f.accounts.size(), 2u);
  EXPECT_EQ(f.accounts[0].source_password, "multi\nline");
  EXPECT_EQ(f.accounts[1].line, 3u);
  EXPECT_EQ(f.accounts[1].source_user, "d");
}

TEST(AccountsFile, MissingColumnsMeanProfileSuppliesThem) {
  auto f = parse_accounts("alice\nbob,,carol\n");
  ASSERT_TRUE(f.errors.empty());
  ASSERT_EQ(f.accounts.size(), 2u);
  EXPECT_EQ(f.accounts[0].source_password, "");
  EXPECT_EQ(f.accounts[0].target_user, "alice");
  EXPECT_EQ(f.accounts[1].target_user, "carol");
  EXPECT_EQ(f.accounts[1].target_password, "");
}

TEST(AccountsFile, ImapsyncStyle) {
  auto f = parse_accounts("# comment\n\nuser1;pw;1;user2;pw2;\nu3;p3\n");
  ASSERT_EQ(f.errors.size(), 1u) << (f.errors.empty() ? "" : f.errors[0].message);
  EXPECT_EQ(f.errors[0].line, 3u);
  ASSERT_EQ(f.accounts.size(), 1u);
  EXPECT_EQ(f.accounts[0].line, 4u);
  EXPECT_EQ(f.accounts[0].source_user, "u3");
  EXPECT_EQ(f.accounts[0].source_password, "p3");
  EXPECT_EQ(f.accounts[0].target_user, "u3");

  auto g = parse_accounts("a@x;secret-a;b@y;secret-b;\n");
  ASSERT_TRUE(g.errors.empty());
  ASSERT_EQ(g.accounts.size(), 1u);
  EXPECT_EQ(g.accounts[0].target_user, "b@y");
  EXPECT_EQ(g.accounts[0].target_password, "secret-b");
}

TEST(AccountsFile, MalformedLinesAreNumberedAndOthersKept) {
  std::string text =
      "good1,pw1\n"
      "bad\"quote,SECRET-ONE\n"
      "\"unterminated,SECRET-TWO\n";
  auto f = parse_accounts(text + "");
  // The unterminated quote swallows the rest of the file: one error, on line 3.
  ASSERT_EQ(f.accounts.size(), 1u);
  EXPECT_EQ(f.accounts[0].source_user, "good1");
  ASSERT_EQ(f.errors.size(), 2u);
  EXPECT_EQ(f.errors[0].line, 2u);
  EXPECT_EQ(f.errors[1].line, 3u);

  auto g = parse_accounts("a,b,c,d,e-SECRET\n,SECRET-3\nwith space,SECRET-4\n\"x\"y,SECRET-5\nok,pw\n");
  ASSERT_EQ(g.errors.size(), 4u);
  EXPECT_EQ(g.errors[0].line, 1u);
  EXPECT_EQ(g.errors[1].line, 2u);
  EXPECT_EQ(g.errors[2].line, 3u);
  EXPECT_EQ(g.errors[3].line, 4u);
  ASSERT_EQ(g.accounts.size(), 1u);
  EXPECT_EQ(g.accounts[0].line, 5u);
  for (auto* errors : {&f.errors, &g.errors})
    for (auto& e : *errors) EXPECT_EQ(e.message.find("SECRET"), std::string::npos) << e.message;
}

TEST(AccountsFile, FirstSeparatorDecidesTheFormat) {
  auto f = parse_accounts("alice;pa,ss;bob;x\"y\ncarol,\"pa;ss\",dave,pw\n");
  ASSERT_TRUE(f.errors.empty()) << f.errors[0].message;
  ASSERT_EQ(f.accounts.size(), 2u);
  EXPECT_EQ(f.accounts[0].source_user, "alice");
  EXPECT_EQ(f.accounts[0].source_password, "pa,ss");
  EXPECT_EQ(f.accounts[0].target_user, "bob");
  EXPECT_EQ(f.accounts[0].target_password, "x\"y");
  EXPECT_EQ(f.accounts[1].source_user, "carol");
  EXPECT_EQ(f.accounts[1].source_password, "pa;ss");
  EXPECT_EQ(f.accounts[1].target_user, "dave");
}

}  // namespace
}  // namespace imapstage::batch

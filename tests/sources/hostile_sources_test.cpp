// The file sources on their own (no server): mbox dialects, flags and dates
// read from the files, re-runs that follow changes, and hostile inputs
// (truncated mbox, binary junk, a 50 MB message, symbolic-link loops, a FIFO,
// a file that changes while it is read), each named and survived.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <csignal>
#include <sstream>

#include <nlohmann/json.hpp>

#include "archive-format/archive.h"
#include "common/events.h"
#include "export/source_export.h"
#include "sources/file_sources.h"
#include "sources/message_text.h"
#include "tests/support/process.h"
#include "tests/support/test_server.h"

namespace imapstage {
namespace {

namespace fs = std::filesystem;
using archive::Archive;
using archive::MessageRecord;
using testing::TempDir;

void write(const fs::path& file, const std::string& bytes) {
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << bytes;
}

void set_mtime(const fs::path& file, int64_t t) {
  struct timespec times[2] = {{t, 0}, {t, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, file.c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
}

// Runs `imapstage export --source SPEC --account ACCOUNT --json`; the exit code and the summary event.
struct Run {
  int exit_code = -1;
  nlohmann::json summary;
  std::string out, err;
};
Run export_files(const std::string& archive, const std::string& spec, const std::string& account = "files") {
  auto r = testing::run_imapstage({"export", "--archive", archive, "--source", spec, "--account", account, "--json"});
  Run run{r.exit_code, {}, r.out, r.err};
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("event", "") == "summary") run.summary = j;
  }
  return run;
}

// Present messages of one folder of the archive, in UID order.
std::vector<MessageRecord> messages(const std::string& archive, const std::string& folder,
                                    const std::string& account = "files") {
  auto a = Archive::open(archive, Archive::Mode::read);
  auto acc = a->find_account(account);
  std::vector<MessageRecord> out;
  if (!acc) return out;
  for (auto& f : a->folders(acc->id))
    if (f.canonical_name() == folder)
      a->for_each_message(acc->id, f.id, f.uidvalidity, [&](const MessageRecord& m) {
        if (m.state == archive::MessageState::present) out.push_back(m);
        return true;
      });
  return out;
}

std::string bytes_of(const std::string& archive, const MessageRecord& m) {
  return Archive::open(archive, Archive::Mode::read)->read_object(m.hash);
}

// Every "where" of the failed items in a summary, joined.
std::string failures(const nlohmann::json& summary) {
  std::string out;
  for (auto& f : summary["per_folder"])
    if (f.contains("failed_items"))
      for (auto& i : f["failed_items"]) out += i["where"].get<std::string>() + ": " + i["error"].get<std::string>() + "\n";
  return out;
}

TEST(MessageText, LineEndsDatesAndLooks) {
  std::string out;
  bool cr = false;
  sources::append_crlf(out, "a\nb\r", cr);
  sources::append_crlf(out, "\nc\n\r\n", cr);
  EXPECT_EQ(out, "a\r\nb\r\nc\r\n\r\n");
  EXPECT_EQ(sources::crlf_size("a\nb\r\n"), 6u);

  auto d = sources::parse_rfc5322_date("Tue, 1 Jul 2003 10:52:37 +0200 (CEST)");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->unix_seconds, 1057049557);
  EXPECT_EQ(d->tz_minutes, 120);
  EXPECT_TRUE(sources::parse_rfc5322_date("1 Jul 03 10:52 GMT"));
  EXPECT_FALSE(sources::parse_rfc5322_date("31 Feb 2003 10:52:37 +0000"));
  EXPECT_FALSE(sources::parse_rfc5322_date("yesterday"));

  auto f = sources::parse_from_line_date("From MAILER-DAEMON Thu Jan  1 00:00:10 1970\n");
  EXPECT_FALSE(f);  // before 1970-01-02: no usable INTERNALDATE
  f = sources::parse_from_line_date("From a@b.c Sun Sep 13 12:26:40 2020\n");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->unix_seconds, 1600000000);
  f = sources::parse_from_line_date("From a@b.c Sun Sep 13 14:26:40 +0200 2020\n");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->unix_seconds, 1600000000);
  EXPECT_EQ(f->tz_minutes, 120);
  EXPECT_FALSE(sources::parse_from_line_date("From here on, late.\n"));

  archive::DateSource source;
  auto r = sources::date_from_headers(
      "Received: from x by y; Tue, 1 Jul 2003 10:52:37 +0200\r\nReceived: from z; Mon, 30 Jun 2003 "
      "10:00:00 +0000\r\nDate: Mon, 2 Jun 2003 10:00:00 +0000\r\n\r\nbody",
      source);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->unix_seconds, 1057049557);
  EXPECT_EQ(source, archive::DateSource::received);
  r = sources::date_from_headers("Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\n", source);
  ASSERT_TRUE(r);
  EXPECT_EQ(source, archive::DateSource::date_header);
  EXPECT_FALSE(sources::date_from_headers("Subject: none\r\n\r\n", source));

  EXPECT_TRUE(sources::looks_like_message("Return-Path: <a@b>\n"));
  EXPECT_TRUE(sources::looks_like_message("From a@b Sun Sep 13 12:26:40 2020\n"));
  EXPECT_FALSE(sources::looks_like_message(std::string("\x7f" "ELF\x02\x01", 6)));
  EXPECT_FALSE(sources::looks_like_message("just some text\n"));
}

TEST(MboxSource, DialectsFlagsAndDates) {
  TempDir tmp;
  std::string archive = tmp.path() + "/archive";
  // mboxrd: ">>From " in the file is ">From " in the message; "From " lines in bodies escaped once.
  write(tmp.path() + "/mail/rd.mbox",
        "From a@example.org Sun Sep 13 12:26:40 2020\n"
        "Subject: one\nStatus: RO\nX-Status: AF\nX-Keywords: $Label1 Project_X\n\n"
        ">From the start\n>>From quoted\nend\n\n"
        "From b@example.org Mon Sep 14 14:26:40 +0200 2020\n"
        "Subject: two\n\nplain\n\n");
  // mboxcl2: Content-Length bodies taken verbatim, unescaped "From " lines and all.
  std::string body = "From inside the body\n>From kept as is\n";
  write(tmp.path() + "/mail/cl2.mbox",
        "From c@example.org Tue Sep 15 12:26:40 2020\nSubject: three\nContent-Length: " +
            std::to_string(body.size()) + "\n\n" + body + "\n" +
            "From d@example.org Wed Sep 16 12:26:40 2020\nSubject: four\nContent-Length: 5\n\nfive\n\n");
  auto run = export_files(archive, "mbox:" + tmp.path() + "/mail");
  ASSERT_EQ(run.exit_code, 0) << run.err;

  auto rd = messages(archive, "rd");
  ASSERT_EQ(rd.size(), 2u);
  EXPECT_EQ(bytes_of(archive, rd[0]),
            "Subject: one\r\nStatus: RO\r\nX-Status: AF\r\nX-Keywords: $Label1 Project_X\r\n\r\n"
            "From the start\r\n>From quoted\r\nend\r\n");
  EXPECT_EQ(rd[0].flags, archive::kSeen | archive::kAnswered | archive::kFlagged);
  EXPECT_EQ(rd[0].keywords, (std::vector<std::string>{"$Label1", "Project_X"}));
  EXPECT_EQ(rd[0].internaldate, 1600000000);
  EXPECT_EQ(rd[0].date_source, archive::DateSource::from_line);
  EXPECT_EQ(rd[1].internaldate, 1600000000 + 86400);
  EXPECT_EQ(rd[1].internaldate_tz, 120);
  EXPECT_EQ(bytes_of(archive, rd[1]), "Subject: two\r\n\r\nplain\r\n");

  auto cl2 = messages(archive, "cl2");
  ASSERT_EQ(cl2.size(), 2u);
  EXPECT_EQ(bytes_of(archive, cl2[0]), "Subject: three\r\nContent-Length: " + std::to_string(body.size()) +
                                           "\r\n\r\nFrom inside the body\r\n>From kept as is\r\n");
  EXPECT_EQ(bytes_of(archive, cl2[1]), "Subject: four\r\nContent-Length: 5\r\n\r\nfive\r\n");
  std::string notes = run.out;
  EXPECT_NE(notes.find("mboxrd"), std::string::npos);
  EXPECT_NE(notes.find("mboxcl2"), std::string::npos);

  // A flag change (Status: rewritten by a mail client) updates the record; the bytes archived stay.
  std::string text;
  {
    std::ifstream in(tmp.path() + "/mail/rd.mbox", std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    text = s.str();
  }
  text.replace(text.find("Subject: two\n"), 13, "Subject: two\nStatus: RO\n");
  write(tmp.path() + "/mail/rd.mbox", text);
  auto again = export_files(archive, "mbox:" + tmp.path() + "/mail");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.summary["messages"], 0);
  EXPECT_EQ(again.summary["flags_updated"], 1);
  rd = messages(archive, "rd");
  EXPECT_EQ(rd[1].flags, archive::kSeen);
}

TEST(MaildirSource, FlagsKeywordsDatesAndChanges) {
  TempDir tmp;
  std::string archive = tmp.path() + "/archive";
  fs::path md = tmp.path() + "/Maildir";
  fs::create_directories(md / "tmp");
  write(md / "cur/1000.M1P1.host,S=20:2,FSa", "Subject: a\n\nbody a\n");
  write(md / "new/1001.M2P2.host", "Subject: b\n\nbody b\n");
  write(md / "tmp/1002.M3P3.host", "Subject: in delivery\n\n");  // tmp/ is never read
  write(md / "dovecot-keywords", "0 $Label1\n1 Other\n");
  write(md / ".Archive.2023/cur/2000.M1P1.host:2,", "Subject: c\n\nbody c\n");
  write(md / ".&AMk-l&AOk-ments/cur/3000.M1P1.host:2,R", "Subject: d\n\nbody d\n");
  set_mtime(md / "cur/1000.M1P1.host,S=20:2,FSa", 1500000000);
  set_mtime(md / "new/1001.M2P2.host", 1500000100);

  auto run = export_files(archive, "maildir:" + md.string());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto inbox = messages(archive, "INBOX");
  ASSERT_EQ(inbox.size(), 2u);
  EXPECT_EQ(bytes_of(archive, inbox[0]), "Subject: a\r\n\r\nbody a\r\n");
  EXPECT_EQ(inbox[0].flags, archive::kFlagged | archive::kSeen);
  EXPECT_EQ(inbox[0].keywords, std::vector<std::string>{"$Label1"});
  EXPECT_EQ(inbox[0].internaldate, 1500000000);
  EXPECT_EQ(inbox[0].date_source, archive::DateSource::file_mtime);
  EXPECT_EQ(inbox[0].source_id, "1000.M1P1.host,S=20");
  EXPECT_EQ(inbox[1].flags, 0u);
  EXPECT_EQ(messages(archive, "Archive/2023").size(), 1u);
  EXPECT_EQ(messages(archive, "Éléments").size(), 1u);

  // A client reads b (new/ -> cur/ with S), deletes a; c's folder is unchanged.
  fs::rename(md / "new/1001.M2P2.host", md / "cur/1001.M2P2.host:2,S");
  fs::remove(md / "cur/1000.M1P1.host,S=20:2,FSa");
  auto again = export_files(archive, "maildir:" + md.string());
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.summary["messages"], 0);
  EXPECT_EQ(again.summary["flags_updated"], 1);
  EXPECT_EQ(again.summary["expunged"], 1);
  inbox = messages(archive, "INBOX");
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].flags, archive::kSeen);
  // The source tree was only read.
  EXPECT_TRUE(fs::exists(md / "tmp/1002.M3P3.host"));
  EXPECT_TRUE(fs::exists(md / "cur/1001.M2P2.host:2,S"));
}

// --since/--before and --larger/--smaller on a file source: the date a
// message is archived with (a Maildir file's time) and its size decide; a
// later run without the filter takes the rest. Rate caps are refused.
TEST(FileSources, TheMessageFilterSelectsByArchivedDateAndSize) {
  TempDir tmp;
  fs::path md = tmp.path() + "/md";
  fs::create_directories(md / "tmp");
  fs::create_directories(md / "new");
  auto put = [&](const std::string& name, int year, size_t size) {
    std::string head = "Subject: " + name + "\r\n\r\n";
    write(md / "cur" / (name + ":2,S"), head + std::string(size - head.size(), 'x'));
    set_mtime(md / "cur" / (name + ":2,S"), 1561975200 + (year - 2019) * 31536000LL);  // 1 July of `year`
  };
  put("old-small", 2019, 500);
  put("old-large", 2019, 5000);
  put("new-small", 2021, 500);
  put("new-large", 2021, 5000);
  std::string archive = tmp.path() + "/archive";
  auto args = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"export", "--archive", archive, "--source", "maildir:" + md.string(),
                                  "--account", "files", "--json"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  auto recent_large = testing::run_imapstage(args({"--since", "2020-01-01", "--larger", "1000"}));
  ASSERT_EQ(recent_large.exit_code, 0) << recent_large.err;
  auto got = messages(archive, "INBOX");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(bytes_of(archive, got[0]).find("new-large"), std::string::npos);
  EXPECT_NE(recent_large.out.find("\"filtered_out\":3"), std::string::npos) << recent_large.out;

  auto rest = testing::run_imapstage(args({}));
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_EQ(messages(archive, "INBOX").size(), 4u);

  auto paced = testing::run_imapstage(args({"--max-messages-per-second", "5"}));
  EXPECT_EQ(paced.exit_code, 2) << paced.out << paced.err;
  EXPECT_NE(paced.err.find("--source reads local files"), std::string::npos) << paced.err;
}

TEST(FileSources, HostileInputsAreNamedAndTheRestGoesOn) {
  TempDir tmp;
  std::string archive = tmp.path() + "/archive";
  fs::path mail = tmp.path() + "/mail";
  // A truncated mbox: the last message is cut mid-line.
  std::string good = "From a@example.org Sun Sep 13 12:26:40 2020\nSubject: whole\n\nbody\n\n";
  write(mail / "truncated.mbox", good + "From b@example.org Sun Sep 13 12:26:41 2020\nSubject: cut\n\nhalf a li");
  // Binary junk where an mbox should be, and junk before the first From line of another.
  std::string junk(4096, '\0');
  std::mt19937 rng(7);
  for (auto& c : junk) c = static_cast<char>(rng());
  write(mail / "junk.mbox", junk);
  write(mail / "prefixed.mbox", "garbage line\nmore\n\n" + good);
  // A link loop and a FIFO among the folders.
  fs::create_directories(mail / "loop");
  fs::create_directory_symlink("..", mail / "loop/again");
  ASSERT_EQ(mkfifo((mail / "pipe.mbox").c_str(), 0600), 0);

  auto run = export_files(archive, "mbox:" + mail.string());
  EXPECT_EQ(run.exit_code, 1) << run.err;  // finished, with what was not archived named
  std::string failed = failures(run.summary);
  EXPECT_NE(failed.find((mail / "truncated.mbox").string() + " at byte " + std::to_string(good.size())),
            std::string::npos) << failed;
  EXPECT_NE(failed.find("truncated"), std::string::npos) << failed;
  EXPECT_NE(failed.find((mail / "junk.mbox").string() + " at byte 0"), std::string::npos) << failed;
  EXPECT_NE(failed.find((mail / "prefixed.mbox").string() + " at byte 0"), std::string::npos) << failed;
  EXPECT_NE(failed.find((mail / "loop/again").string() + ": a symbolic link"), std::string::npos) << failed;
  EXPECT_NE(failed.find((mail / "pipe.mbox").string() + ": not a regular file"), std::string::npos) << failed;
  EXPECT_EQ(messages(archive, "truncated").size(), 1u);
  EXPECT_EQ(messages(archive, "prefixed").size(), 1u);
  EXPECT_NE(run.err.find("truncated.mbox at byte"), std::string::npos) << run.err;

  // Maildir: junk in cur/, a symlinked message, a link loop and a FIFO.
  fs::path md = tmp.path() + "/Maildir";
  write(md / "cur/1.M1P1.host:2,S", "Subject: fine\n\nok\n");
  write(md / "cur/2.M1P1.host:2,S", junk);
  fs::create_directories(md / "new");
  fs::create_symlink(md / "cur/1.M1P1.host:2,S", md / "new/3.M1P1.host");
  fs::create_directories(md / ".Sub/cur");
  fs::create_directory_symlink(md, md / ".Sub/cur/loop");
  ASSERT_EQ(mkfifo((md / "cur/4.M1P1.host:2,").c_str(), 0600), 0);
  auto mdrun = export_files(archive, "maildir:" + md.string(), "md");
  EXPECT_EQ(mdrun.exit_code, 1) << mdrun.err;
  failed = failures(mdrun.summary);
  EXPECT_NE(failed.find((md / "cur/2.M1P1.host:2,S").string() + ": not a mail message"), std::string::npos) << failed;
  EXPECT_NE(failed.find((md / "new/3.M1P1.host").string() + ": a symbolic link"), std::string::npos) << failed;
  EXPECT_NE(failed.find((md / "cur/4.M1P1.host:2,").string() + ": not a regular file"), std::string::npos) << failed;
  EXPECT_EQ(messages(archive, "INBOX", "md").size(), 1u);
  // A re-run names the same problems and stores nothing twice.
  auto mdagain = export_files(archive, "maildir:" + md.string(), "md");
  EXPECT_EQ(mdagain.summary["messages"], 0);
  EXPECT_EQ(failures(mdagain.summary), failed);

  // EML: a link loop below the root, a non-mail .eml, and other files left alone.
  fs::path eml = tmp.path() + "/eml";
  write(eml / "INBOX/1.eml", "Subject: e\r\n\r\neml\r\n");
  write(eml / "INBOX/2.eml", junk);
  write(eml / "INBOX/notes.txt", "not mail");
  fs::create_directory_symlink(eml, eml / "INBOX/loop");
  auto emlrun = export_files(archive, "eml:" + eml.string(), "eml");
  EXPECT_EQ(emlrun.exit_code, 1) << emlrun.err;
  failed = failures(emlrun.summary);
  EXPECT_NE(failed.find((eml / "INBOX/2.eml").string() + ": not a mail message"), std::string::npos) << failed;
  auto inbox = messages(archive, "INBOX", "eml");
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(bytes_of(archive, inbox[0]), "Subject: e\r\n\r\neml\r\n");
  // A directory name that is not UTF-8 (Latin-1 "café") names a folder in UTF-8.
  write(eml / "caf\xe9" / "1.eml", "Subject: f\r\n\r\nlatin\r\n");
  auto latin = export_files(archive, "eml:" + eml.string(), "eml");
  EXPECT_EQ(latin.summary["messages"], 1) << latin.out;
  EXPECT_EQ(messages(archive, "caf\xc3\xa9", "eml").size(), 1u);
}

TEST(FileSources, AFiftyMegabyteMessage) {
  TempDir tmp;
  std::string archive = tmp.path() + "/archive";
  std::string body;
  body.reserve(50u << 20);
  std::mt19937 rng(11);
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  while (body.size() < (50u << 20)) {
    for (int i = 0; i < 76; ++i) body += b64[rng() % 64];
    body += '\n';
  }
  std::string message = "Subject: big\nContent-Type: application/octet-stream\n\n" + body;
  write(tmp.path() + "/mail/big.mbox", "From a@example.org Sun Sep 13 12:26:40 2020\n" + message + "\n" +
                                            "From a@example.org Sun Sep 13 12:26:41 2020\nSubject: small\n\nx\n");
  write(tmp.path() + "/md/cur/1.M1P1.host:2,S", message);
  auto run = export_files(archive, "mbox:" + tmp.path() + "/mail");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto big = messages(archive, "big");
  ASSERT_EQ(big.size(), 2u);
  std::string crlf;
  bool cr = false;
  sources::append_crlf(crlf, message, cr);
  EXPECT_EQ(big[0].hash, archive::sha256(crlf));
  EXPECT_EQ(big[0].size, crlf.size());
  auto md = export_files(archive, "maildir:" + tmp.path() + "/md", "md");
  ASSERT_EQ(md.exit_code, 0) << md.err;
  EXPECT_EQ(md.summary["bytes_deduplicated"], crlf.size());  // the same bytes, stored once
}

TEST(FileSources, AKilledExportResumesWithoutLossOrDuplicates) {
  TempDir tmp;
  std::string mbox;
  for (int i = 0; i < 3000; ++i)
    mbox += "From a@example.org Sun Sep 13 12:26:40 2020\nSubject: message " + std::to_string(i) +
            "\nMessage-ID: <" + std::to_string(i) + "@example.org>\n\n" + std::string(20000 + i % 500, 'x') + "\n\n";
  write(tmp.path() + "/big.mbox", mbox);
  std::string archive = tmp.path() + "/archive";
  std::vector<std::string> args = {"export", "--archive", archive, "--source", "mbox:" + tmp.path() + "/big.mbox",
                                   "--account", "files", "--json", "--commit-interval", "0.01"};
  // Killed once a progress event (every 250 ms) reports 100 messages or more: commits come every 10 ms.
  auto killed = testing::run_imapstage(args, {}, std::nullopt, [](const std::string& out) {
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.value("event", "") == "progress" && j.value("messages", 0) >= 100) return true;
    }
    return false;
  });
  EXPECT_EQ(killed.signal, SIGKILL);
  auto before = messages(archive, "INBOX").size();
  EXPECT_GT(before, 0u);
  EXPECT_LT(before, 3000u);
  auto rerun = testing::run_imapstage(args);
  ASSERT_EQ(rerun.exit_code, 0) << rerun.err;
  auto all = messages(archive, "INBOX");
  ASSERT_EQ(all.size(), 3000u);
  std::set<std::string> ids;
  std::set<uint32_t> uids;
  for (auto& m : all) {
    ids.insert(m.source_id);
    uids.insert(m.key.uid);
  }
  EXPECT_EQ(ids.size(), 3000u);
  EXPECT_EQ(uids.size(), 3000u);
  auto verify = testing::run_imapstage({"verify", "--archive", archive});
  EXPECT_EQ(verify.exit_code, 0) << verify.err << verify.out;
}

// Reads through the source interface directly: a file that changes between
// the listing and the read is reported, not archived half-changed.
class Collect : public sources::FetchSink {
 public:
  void deliver(const sources::SourceMessage& m, sources::FetchedMessage&& f) override {
    delivered.emplace_back(m.id, std::move(f.bytes));
  }
  void failed(const sources::SourceMessage& m, const Error& e) override { errors.emplace_back(m.id, e.what()); }
  std::vector<std::pair<std::string, std::string>> delivered, errors;
};

TEST(FileSources, AFileThatChangesWhileReadIsReported) {
  TempDir tmp;
  fs::path mbox = tmp.path() + "/box.mbox";
  write(mbox, "From a@example.org Sun Sep 13 12:26:40 2020\nSubject: one\n\nfirst\n\n"
              "From a@example.org Sun Sep 13 12:26:41 2020\nSubject: two\n\nsecond\n");
  auto source = sources::open_mbox(mbox);
  auto folders = source->folders();
  ASSERT_EQ(folders.size(), 1u);
  auto listing = source->list(folders[0]);
  ASSERT_EQ(listing.messages.size(), 2u);
  // Message two is rewritten in place (same length), one is untouched.
  std::fstream f(mbox, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(-7, std::ios::end);
  f << "SECOND";
  f.close();
  Collect sink;
  source->fetch(folders[0], {&listing.messages[0], &listing.messages[1]}, 1 << 20, sink);
  ASSERT_EQ(sink.delivered.size(), 1u);
  EXPECT_EQ(sink.delivered[0].second, "Subject: one\r\n\r\nfirst\r\n");
  ASSERT_EQ(sink.errors.size(), 1u);
  EXPECT_NE(sink.errors[0].second.find("changed"), std::string::npos) << sink.errors[0].second;
  EXPECT_NE(sink.errors[0].second.find(mbox.string()), std::string::npos) << sink.errors[0].second;

  // Maildir: a message file rewritten after the listing.
  fs::path md = tmp.path() + "/md";
  write(md / "cur/1.M1P1.host:2,", "Subject: a\n\nbody\n");
  auto maildir = sources::open_maildir(md);
  auto mf = maildir->folders();
  auto ml = maildir->list(mf[0]);
  ASSERT_EQ(ml.messages.size(), 1u);
  write(md / "cur/1.M1P1.host:2,", "Subject: a\n\nbody, longer now\n");
  Collect s2;
  maildir->fetch(mf[0], {&ml.messages[0]}, 1 << 20, s2);
  EXPECT_TRUE(s2.delivered.empty());
  ASSERT_EQ(s2.errors.size(), 1u);
  EXPECT_NE(s2.errors[0].second.find("changed while it was read"), std::string::npos) << s2.errors[0].second;
}

}  // namespace
}  // namespace imapstage

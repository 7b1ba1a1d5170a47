// imapstage verify: offline re-hash of the archive, or an online comparison
// with the source or a target; a readable table, a JSON report, a CSV.
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "archive-format/keys.h"
#include "cli/commands.h"
#include "cli/passphrase.h"
#include "cli/display.h"
#include "batch/batch_jobs.h"
#include "cli/server_options.h"
#include "common/error.h"
#include "common/files.h"
#include "verify/compare.h"
#include "verify/offline.h"

namespace imapstage::cli {

namespace {

struct VerifyArgs {
  std::string archive;
  std::string against;
  ServerOptions server;
  ProfileOptions profile;
  std::string account;
  std::string target_name;
  bool deep = false;
  double sample = 100;
  uint64_t seed = 0;
  std::string report;
  std::string csv;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  bool json = false;
  std::string log_file;  // --log-file: JSON events appended here too
  int verbosity = 0;
};

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

void write_text(const std::string& path, const std::string& text) { write_private_file(path, text); }

void print_offline(const verify::OfflineReport& r) {
  std::FILE* out = stdout;
  say(out, "{} {} {:>9} {:>10} {:>9} {:>5}\n", pad("account", 30), pad("folder", 30), "messages", "size", "checked",
      "bad");
  for (auto& f : r.folders)
    say(out, "{} {} {:>9} {:>10} {:>9} {:>5}\n", pad(printable(f.account), 30), pad(printable(f.folder), 30),
        f.messages, human_bytes(double(f.bytes)), f.checked, f.bad);
  say(out, "\n{} packs, {} records, {} objects in the index, {} re-hashed ({} raw, {} read){}, in {}\n", r.packs,
      r.records, r.objects, r.objects_checked, human_bytes(double(r.bytes_checked)),
      human_bytes(double(r.stored_bytes_read)),
      r.sample_percent < 100 ? fmt::format(" [sample {}%, seed {}]", r.sample_percent, r.seed) : std::string(),
      human_duration(r.seconds));
  for (auto& p : r.pack_problems) say(out, "PACK: {}\n", p);
  for (auto& p : r.index_problems) say(out, "INDEX: {}\n", p);
  for (auto& b : r.bad_objects) {
    say(out, "BAD OBJECT {} ({} at offset {}): {}\n", b.hash, b.file, b.offset, b.problem);
    for (auto& ref : b.referenced_by) say(out, "  referenced by {}\n", ref);
  }
  for (auto& o : r.orphans) say(out, "orphan {} ({} at offset {}): {}\n", o.hash, o.file, o.offset, o.problem);
  say(out, "{}\n", r.ok() ? "OK: every object checked is sound and the index matches the packs" : "FAILED: see above");
}

// The summary's verdict: EQUAL, EQUAL with what the notes are, or DIFFERENT.
std::string verdict(const verify::Comparison& c) {
  if (!c.equal()) return "DIFFERENT";
  std::vector<std::string> notes;
  if (auto n = c.count(verify::kRewritten))
    notes.push_back(fmt::format("{} stored by the server in a known rewritten form", n));
  if (auto n = c.count(verify::kExpungedOnSource))
    notes.push_back(fmt::format("{} expunged on the source, still on the target", n));
  if (auto n = c.count(verify::kFilteredOut))
    notes.push_back(fmt::format("{} outside the last {}'s selection ({})", n,
                                c.against == "source" ? "export" : "import",
                                c.selection.contains("filter") ? c.selection["filter"].dump() : "per folder"));
  if (auto n = c.count(verify::kSkippedByPolicy))
    notes.push_back(fmt::format("{} skipped by policy as too big for the target", n));
  if (auto n = c.count(verify::kGmailElsewhere))
    notes.push_back(fmt::format("{} Gmail copies imported once from another folder", n));
  std::string out = "EQUAL";
  for (size_t i = 0; i < notes.size(); ++i) out += (i ? "; " : " (notes: ") + notes[i];
  return notes.empty() ? out : out + ")";
}

void print_online(const verify::Comparison& c) {
  std::FILE* out = stdout;
  say(out, "{} {} {:>9} {:>9} {:>10} {:>10} {:>6} {:>6}  {}\n", pad("archive folder", 28),
      pad(c.against == "source" ? "source folder" : "target folder", 28), "archive", "server", "arch.size",
      "serv.size", "diffs", "notes", "status");
  for (auto& f : c.folders) {
    say(out, "{} {} {:>9} {:>9} {:>10} {:>10} {:>6} {:>6}  {}\n", pad(printable(f.folder), 28),
        pad(printable(f.server_folder), 28), f.archive_messages, f.server_messages,
        human_bytes(double(f.archive_bytes)), human_bytes(double(f.server_bytes)), f.failures(),
        f.differences.size() - f.failures(), f.equal() ? "equal" : (f.error.empty() ? "DIFFERS" : "ERROR"));
  }
  for (auto& f : c.folders) {
    if (!f.error.empty()) say(out, "folder {}: {}\n", f.folder, f.error);
    // Messages the import's filter left out are counted, not listed (the JSON report lists them).
    if (auto n = f.count(verify::kFilteredOut))
      say(out, "{}: {}: {} messages outside the last {}'s selection{}\n", verify::kFilteredOut,
          f.folder.empty() ? f.server_folder : f.folder, n, c.against == "source" ? "export" : "import",
          f.selection.empty() ? std::string() : " " + f.selection.dump());
    if (auto n = f.count(verify::kGmailElsewhere))
      say(out, "{}: {}: {} messages (their X-GM-MSGID was imported from another folder)\n", verify::kGmailElsewhere,
          f.folder, n);
    for (auto& d : f.differences)
      if (d.kind != verify::kFilteredOut && d.kind != verify::kGmailElsewhere)
        say(out, "{}: {}{}{}{}: {}\n", d.kind, f.folder.empty() ? f.server_folder : f.folder,
            d.archive_uid ? fmt::format(", archive UID {}", d.archive_uid) : std::string(),
            d.server_uid ? fmt::format(", server UID {}", d.server_uid) : std::string(),
            d.message_id.empty() ? std::string() : ", Message-ID " + d.message_id, d.detail);
  }
  if (!c.selection.empty())
    say(out, "selection compared: the last {}'s {}\n", c.against == "source" ? "export" : "import",
        c.selection.contains("filter") ? c.selection["filter"].dump() : c.selection.dump());
  say(out, "\n{}: archive ({}) vs {} {}: {}\n", c.account, c.deep ? "deep" : "counts, sizes, flags", c.against,
      c.server, verdict(c));
}

}  // namespace

void add_verify_command(CLI::App& app, int& status) {
  auto args = std::make_shared<VerifyArgs>();
  auto* cmd = app.add_subcommand("verify",
                                 "Check the archive offline (re-hash everything), or compare it with the source or "
                                 "a target server (--against)");
  cmd->add_option("--archive", args->archive, "Archive directory")->required();
  cmd->add_option("--against", args->against, "source or target: compare with a server instead of offline")
      ->check(CLI::IsMember({"source", "target"}));
  add_server_options(cmd, args->server, false);
  add_profile_options(cmd, args->profile, "--profile");
  cmd->add_option("--account", args->account, "Archived account (default: the only one)");
  cmd->add_option("--target-name", args->target_name,
                  "Target identity as import recorded it (default MAILBOX@HOST:PORT, MAILBOX being --user)");
  cmd->add_flag("--deep", args->deep, "Online: fetch every message and compare SHA-256 and INTERNALDATE too");
  cmd->add_option("--sample", args->sample, "Offline: re-hash only this percentage of the objects (random)")
      ->check(CLI::Range(0.001, 100.0));
  cmd->add_option("--seed", args->seed, "Offline: seed of the --sample choice (default: random, printed)");
  cmd->add_option("--folder", args->include, "Online: only folders matching this glob (repeatable)");
  cmd->add_option("--exclude", args->exclude, "Online: skip folders matching this glob (repeatable)");
  cmd->add_option("--report", args->report, "Write the full report as JSON to this file");
  cmd->add_option("--csv", args->csv, "Write one CSV row per folder to this file");
  cmd->add_flag("--json", args->json, "JSON-lines events on stdout instead of the terminal display");
  cmd->add_option("--log-file", args->log_file,
                  "Also append every event as a JSON line to this file (what --json writes), whatever is shown");
  cmd->add_flag("-q,--quiet", [args](int64_t) { args->verbosity = -1; }, "Only errors and the summary");
  cmd->footer(
      "Online, a message the server stored in a known rewritten form (Cyrus: 8-bit header bytes replaced by X, "
      "bare CRs changed; Courier: bare CRs changed, a final CRLF added) is reported as \"rewritten\", one expunged "
      "on the source after it was imported as \"expunged on source\", one the last import (against a target) or "
      "the last export of the folder (against the source) left out by its --since/--before/--larger/--smaller as "
      "\"filtered out\" and one it skipped as too big (--too-big skip) as "
      "\"skipped by policy\": all are notes, not differences.\n\n"
      "Exit status: 0 everything equal and sound (notes allowed, counted in the summary); 1 something differs or "
      "is missing (named in the report); 2 bad command line; 3 login refused; 4 server unreachable, TLS or "
      "protocol failure; 5 archive problem.");
  cmd->callback([args, cmd, &status] {
    CommandSink<TerminalSink> out(args->json, args->verbosity, args->log_file);
    auto& sink = out.sink;
    auto* terminal = out.terminal;
    nlohmann::json report;
    std::string csv;
    bool ok = false;
    if (args->against.empty() && archive::has_key_file(args->archive) && !passphrase_available()) {
      // Encrypted, no passphrase: what can be checked without the key.
      auto r = verify::verify_structure(args->archive);
      if (terminal) terminal->finish();
      if (args->json) {
        std::printf("%s\n", r.to_json().dump().c_str());
      } else {
        say(stdout, "{}: encrypted archive checked without its passphrase: structure only ({} packs, {} records, {} "
                    "key slots); AEAD tags and contents not checked (give --passphrase-file or --passphrase-env)\n",
            args->archive, r.packs, r.records, r.key_slots);
        for (auto& p : r.problems) say(stdout, "  {}\n", p);
        say(stdout, "{}\n", r.ok() ? "structure OK" : "structure DAMAGED");
      }
      status = r.ok() ? kExitOk : kExitIncomplete;
      return;
    }
    if (args->against.empty()) {
      verify::OfflineOptions o;
      o.archive_dir = args->archive;
      o.sample_percent = args->sample;
      o.seed = args->seed;
      auto r = verify::verify_offline(o, *sink);
      report = r.to_json();
      csv = "account,folder,messages,bytes,checked,bad\n";
      for (auto& f : r.folders)
        csv += fmt::format("{},{},{},{},{},{}\n", csv_field(f.account), csv_field(f.folder), f.messages, f.bytes,
                           f.checked, f.bad);
      if (terminal) {
        terminal->finish();
        print_offline(r);
      }
      ok = r.ok();
    } else {
      if (args->server.user.empty())
        throw Error(ErrorKind::usage, "--against needs --user, --host (or --profile) and a password source");
      std::vector<std::string> warnings;
      auto routing = make_routing(cmd, args->server, args->profile, warnings);
      const batch::Profile& profile = routing.fixed ? *routing.fixed : routing.route(args->server.user);
      auto login = make_account_login(profile, args->server.user);
      for (auto& w : warnings) sink->emit({{"event", "warning"}, {"text", w}});
      verify::CompareOptions o;
      o.archive_dir = args->archive;
      o.endpoint = profile.endpoint();
      o.credentials = login.credentials;
      o.mailbox = login.mailbox;
      o.against = args->against == "source" ? verify::Against::source : verify::Against::target;
      o.account = args->account;
      o.target_name = args->target_name;
      o.deep = args->deep;
      o.include = args->include;
      o.exclude = args->exclude;
      verify::Comparison c;
      try {
        c = verify::compare_online(o, *sink);
      } catch (const Error& e) {
        throw batch::describe_login_error(e, login.mailbox, login);
      }
      report = c.to_json();
      csv = "archive_folder,server_folder,archive_messages,server_messages,archive_bytes,server_bytes,differences,equal,"
            "rewritten,expunged_on_source\n";
      for (auto& f : c.folders)
        csv += fmt::format("{},{},{},{},{},{},{},{},{},{}\n", csv_field(f.folder), csv_field(f.server_folder),
                           f.archive_messages, f.server_messages, f.archive_bytes, f.server_bytes, f.failures(),
                           f.equal() ? "yes" : "no", f.count(verify::kRewritten), f.count(verify::kExpungedOnSource));
      if (terminal) {
        terminal->finish();
        print_online(c);
      }
      ok = c.equal();
    }
    if (args->json || !args->log_file.empty()) sink->emit(report);
    if (!args->report.empty()) write_text(args->report, report.dump(2) + "\n");
    if (!args->csv.empty()) write_text(args->csv, csv);
    status = ok ? kExitOk : kExitIncomplete;
  });
}

}  // namespace imapstage::cli

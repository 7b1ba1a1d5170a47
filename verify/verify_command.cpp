// imapstage verify: offline re-hash of the archive, or an online comparison
// with the source or a target; a readable table, a JSON report, a CSV.
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/display.h"
#include "cli/server_options.h"
#include "common/error.h"
#include "verify/compare.h"
#include "verify/offline.h"

namespace imapstage::cli {

namespace {

struct VerifyArgs {
  std::string archive;
  std::string against;
  ServerOptions server;
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
  int verbosity = 0;
};

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw_io("cannot write the report", path, errno);
}

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
  for (auto& b : r.bad_objects) {
    say(out, "BAD OBJECT {} ({} at offset {}): {}\n", b.hash, b.file, b.offset, b.problem);
    for (auto& ref : b.referenced_by) say(out, "  referenced by {}\n", ref);
  }
  for (auto& o : r.orphans) say(out, "orphan {} ({} at offset {}): {}\n", o.hash, o.file, o.offset, o.problem);
  say(out, "{}\n", r.ok() ? "OK: every object checked is sound and the index matches the packs" : "FAILED: see above");
}

void print_online(const verify::Comparison& c) {
  std::FILE* out = stdout;
  say(out, "{} {} {:>9} {:>9} {:>10} {:>10} {:>6}  {}\n", pad("archive folder", 28),
      pad(c.against == "source" ? "source folder" : "target folder", 28), "archive", "server", "arch.size",
      "serv.size", "diffs", "status");
  for (auto& f : c.folders) {
    say(out, "{} {} {:>9} {:>9} {:>10} {:>10} {:>6}  {}\n", pad(printable(f.folder), 28),
        pad(printable(f.server_folder), 28), f.archive_messages, f.server_messages,
        human_bytes(double(f.archive_bytes)), human_bytes(double(f.server_bytes)), f.differences.size(),
        f.equal() ? "equal" : (f.error.empty() ? "DIFFERS" : "ERROR"));
  }
  for (auto& f : c.folders) {
    if (!f.error.empty()) say(out, "folder {}: {}\n", f.folder, f.error);
    for (auto& d : f.differences)
      say(out, "{}: {}{}{}{}: {}\n", d.kind, f.folder.empty() ? f.server_folder : f.folder,
          d.archive_uid ? fmt::format(", archive UID {}", d.archive_uid) : std::string(),
          d.server_uid ? fmt::format(", server UID {}", d.server_uid) : std::string(),
          d.message_id.empty() ? std::string() : ", Message-ID " + d.message_id, d.detail);
  }
  say(out, "\n{}: archive ({}) vs {} {}: {}\n", c.account, c.deep ? "deep" : "counts, sizes, flags", c.against,
      c.server, c.equal() ? "EQUAL" : "DIFFERENT");
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
  cmd->add_option("--account", args->account, "Archived account (default: the only one)");
  cmd->add_option("--target-name", args->target_name, "Target identity as import recorded it (default USER@HOST:PORT)");
  cmd->add_flag("--deep", args->deep, "Online: fetch every message and compare SHA-256 and INTERNALDATE too");
  cmd->add_option("--sample", args->sample, "Offline: re-hash only this percentage of the objects (random)")
      ->check(CLI::Range(0.001, 100.0));
  cmd->add_option("--seed", args->seed, "Offline: seed of the --sample choice (default: random, printed)");
  cmd->add_option("--folder", args->include, "Online: only folders matching this glob (repeatable)");
  cmd->add_option("--exclude", args->exclude, "Online: skip folders matching this glob (repeatable)");
  cmd->add_option("--report", args->report, "Write the full report as JSON to this file");
  cmd->add_option("--csv", args->csv, "Write one CSV row per folder to this file");
  cmd->add_flag("--json", args->json, "JSON-lines events on stdout instead of the terminal display");
  cmd->add_flag("-q,--quiet", [args](int64_t) { args->verbosity = -1; }, "Only errors and the summary");
  cmd->callback([args, &status] {
    CommandSink<TerminalSink> out(args->json, args->verbosity);
    auto& sink = out.sink;
    auto* terminal = out.terminal;
    nlohmann::json report;
    std::string csv;
    bool ok = false;
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
      if (args->server.host.empty() || args->server.user.empty())
        throw Error(ErrorKind::usage, "--against needs --host and --user (and a password source)");
      verify::CompareOptions o;
      o.archive_dir = args->archive;
      o.endpoint = make_endpoint(args->server);
      std::vector<std::string> warnings;
      add_security_warnings(warnings, o.endpoint.host, o.endpoint.insecure, o.endpoint.tls == imap::TlsMode::none);
      for (auto& w : warnings) sink->emit({{"event", "warning"}, {"text", w}});
      o.credentials = make_credentials(args->server);
      o.against = args->against == "source" ? verify::Against::source : verify::Against::target;
      o.account = args->account;
      o.target_name = args->target_name;
      o.deep = args->deep;
      o.include = args->include;
      o.exclude = args->exclude;
      auto c = verify::compare_online(o, *sink);
      report = c.to_json();
      csv = "archive_folder,server_folder,archive_messages,server_messages,archive_bytes,server_bytes,differences,equal\n";
      for (auto& f : c.folders)
        csv += fmt::format("{},{},{},{},{},{},{},{}\n", csv_field(f.folder), csv_field(f.server_folder),
                           f.archive_messages, f.server_messages, f.archive_bytes, f.server_bytes,
                           f.differences.size(), f.equal() ? "yes" : "no");
      if (terminal) {
        terminal->finish();
        print_online(c);
      }
      ok = c.equal();
    }
    if (args->json) sink->emit(report);
    if (!args->report.empty()) write_text(args->report, report.dump(2) + "\n");
    if (!args->csv.empty()) write_text(args->csv, csv);
    status = ok ? kExitOk : kExitIncomplete;
  });
}

}  // namespace imapstage::cli

// imapstage verify: offline re-hash of the archive, or an online comparison
// with the source or a target; a readable table, a JSON report, a CSV.
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/display.h"
#include "batch/batch_jobs.h"
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

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw_io("cannot write the report", path, errno);
}

void print_offline(const verify::OfflineReport& r) {
  std::printf("%s %s %9s %10s %9s %5s\n", pad("account", 30).c_str(), pad("folder", 30).c_str(), "messages", "size", "checked", "bad");
  for (auto& f : r.folders)
    std::printf("%s %s %9llu %10s %9llu %5llu\n", pad(f.account, 30).c_str(), pad(f.folder, 30).c_str(),
                (unsigned long long)f.messages, human_bytes(double(f.bytes)).c_str(), (unsigned long long)f.checked,
                (unsigned long long)f.bad);
  std::printf("\n%llu packs, %llu records, %llu objects in the index, %llu re-hashed (%s raw, %s read)%s, in %s\n",
              (unsigned long long)r.packs, (unsigned long long)r.records, (unsigned long long)r.objects,
              (unsigned long long)r.objects_checked, human_bytes(double(r.bytes_checked)).c_str(),
              human_bytes(double(r.stored_bytes_read)).c_str(),
              r.sample_percent < 100 ? fmt::format(" [sample {}%, seed {}]", r.sample_percent, r.seed).c_str() : "",
              human_duration(r.seconds).c_str());
  for (auto& p : r.pack_problems) std::printf("PACK: %s\n", p.c_str());
  for (auto& b : r.bad_objects) {
    std::printf("BAD OBJECT %s (%s at offset %llu): %s\n", b.hash.c_str(), b.file.c_str(),
                (unsigned long long)b.offset, b.problem.c_str());
    for (auto& ref : b.referenced_by) std::printf("  referenced by %s\n", ref.c_str());
  }
  for (auto& o : r.orphans)
    std::printf("orphan %s (%s at offset %llu): %s\n", o.hash.c_str(), o.file.c_str(), (unsigned long long)o.offset,
                o.problem.c_str());
  std::printf("%s\n", r.ok() ? "OK: every object checked is sound and the index matches the packs"
                             : "FAILED: see above");
}

// The summary's verdict: EQUAL, EQUAL with what the notes are, or DIFFERENT.
std::string verdict(const verify::Comparison& c) {
  if (!c.equal()) return "DIFFERENT";
  std::vector<std::string> notes;
  if (auto n = c.count(verify::kRewritten))
    notes.push_back(fmt::format("{} stored by the server in a known rewritten form", n));
  if (auto n = c.count(verify::kExpungedOnSource))
    notes.push_back(fmt::format("{} expunged on the source, still on the target", n));
  std::string out = "EQUAL";
  for (size_t i = 0; i < notes.size(); ++i) out += (i ? "; " : " (notes: ") + notes[i];
  return notes.empty() ? out : out + ")";
}

void print_online(const verify::Comparison& c) {
  std::printf("%s %s %9s %9s %10s %10s %6s %6s  %s\n", pad("archive folder", 28).c_str(),
              pad(c.against == "source" ? "source folder" : "target folder", 28).c_str(), "archive", "server", "arch.size",
              "serv.size", "diffs", "notes", "status");
  for (auto& f : c.folders) {
    std::printf("%s %s %9llu %9llu %10s %10s %6llu %6llu  %s\n", pad(f.folder, 28).c_str(),
                pad(f.server_folder, 28).c_str(), (unsigned long long)f.archive_messages,
                (unsigned long long)f.server_messages, human_bytes(double(f.archive_bytes)).c_str(),
                human_bytes(double(f.server_bytes)).c_str(), (unsigned long long)f.failures(),
                (unsigned long long)(f.differences.size() - f.failures()),
                f.equal() ? "equal" : (f.error.empty() ? "DIFFERS" : "ERROR"));
  }
  for (auto& f : c.folders) {
    if (!f.error.empty()) std::printf("folder %s: %s\n", f.folder.c_str(), f.error.c_str());
    for (auto& d : f.differences)
      std::printf("%s: %s%s%s%s: %s\n", d.kind.c_str(), (f.folder.empty() ? f.server_folder : f.folder).c_str(),
                  d.archive_uid ? fmt::format(", archive UID {}", d.archive_uid).c_str() : "",
                  d.server_uid ? fmt::format(", server UID {}", d.server_uid).c_str() : "",
                  d.message_id.empty() ? "" : (", Message-ID " + d.message_id).c_str(), d.detail.c_str());
  }
  std::printf("\n%s: archive (%s) vs %s %s: %s\n", c.account.c_str(), c.deep ? "deep" : "counts, sizes, flags",
              c.against.c_str(), c.server.c_str(), verdict(c).c_str());
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
      "on the source after it was imported as \"expunged on source\": both are notes, not differences.\n\n"
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

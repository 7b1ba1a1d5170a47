#include "batch/providers.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "common/error.h"
#include "import/folder_map.h"

namespace imapstage::batch {

namespace {

constexpr uint64_t kMB = 1000ull * 1000;

std::vector<Provider> make_providers() {
  Provider gmail;
  gmail.name = "gmail";
  gmail.title = "Gmail / Google Workspace";
  gmail.host = "imap.gmail.com";
  gmail.max_message_bytes = 35 * kMB;  // APPENDLIMIT=35651584 announced
  gmail.daily_download_bytes = 2500 * kMB;
  gmail.daily_upload_bytes = 500 * kMB;
  gmail.per_server = 4;
  gmail.connections = 2;
  gmail.max_command_length = 8000;
  auto gmail_names = importing::provider_target_names("gmail");
  gmail.case_insensitive_names = gmail_names.case_insensitive;
  gmail.reserved = gmail_names.reserved;
  gmail.notes =
      "IMAP bandwidth limits (support.google.com/a/answer/1071518): ~2500 MB/day download, ~500 MB/day upload; "
      "15 connections per account; APPENDLIMIT 35 MB";

  Provider m365;
  m365.name = "microsoft365";
  m365.title = "Microsoft 365 / Exchange Online";
  m365.host = "outlook.office365.com";
  m365.max_message_bytes = 35 * kMB;  // default send/receive limit; tenants can raise it to 150 MB
  m365.per_server = 4;
  m365.connections = 2;
  m365.max_command_length = 8000;  // longer lines get "BAD Command Argument Error. 11"
  m365.restore_flagged = true;
  m365.case_insensitive_names = importing::provider_target_names("microsoft365").case_insensitive;
  m365.notes =
      "Exchange Online limits (learn.microsoft.com, Exchange Online limits): 35 MB message default, 150 MB maximum; "
      "20 connections per mailbox; throttling replies name a Suggested Backoff Time";
  return {gmail, m365};
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string mb(uint64_t bytes) { return bytes ? fmt::format("{} MB", bytes / kMB) : "none"; }

}  // namespace

const std::vector<Provider>& providers() {
  static const std::vector<Provider> all = make_providers();
  return all;
}

const Provider& find_provider(std::string_view name) {
  std::string n = lower(name);
  if (n == "google" || n == "googlemail" || n == "workspace") n = "gmail";
  if (n == "m365" || n == "office365" || n == "outlook" || n == "exchange-online" || n == "o365")
    n = "microsoft365";
  for (auto& p : providers())
    if (p.name == n) return p;
  std::string names;
  for (auto& p : providers()) names += (names.empty() ? "" : ", ") + p.name;
  throw Error(ErrorKind::usage, fmt::format("unknown provider {:?} (known: {})", std::string(name), names));
}

std::string providers_table() {
  std::string out;
  for (auto& p : providers()) {
    out += fmt::format("{} ({})\n", p.name, p.title);
    out += fmt::format("  host               {}:{} ({} TLS)\n", p.host, p.port, p.tls);
    out += fmt::format("  auth               {} (tokens from token_cmd / --oauth2-token-cmd)\n", p.mechanism);
    out += fmt::format("  max message        {}\n", mb(p.max_message_bytes));
    out += fmt::format("  daily budget       download {}, upload {}\n", mb(p.daily_download_bytes),
                       mb(p.daily_upload_bytes));
    out += fmt::format("  per server         suggested: --per-server {}, --connections {}\n", p.per_server,
                       p.connections);
    out += fmt::format("  command length     at most {} characters (longer UID sets are split)\n",
                       p.max_command_length);
    std::string quirks;
    if (p.restore_flagged) quirks += "re-STORE \\Flagged after APPEND; ";
    if (p.case_insensitive_names) quirks += "folder names case-insensitive; ";
    for (auto& r : p.reserved) quirks += "reserved " + r + "; ";
    if (!quirks.empty()) quirks.resize(quirks.size() - 2);
    out += fmt::format("  quirks             {}\n", quirks.empty() ? "none" : quirks);
    out += fmt::format("  source             {}\n\n", p.notes);
  }
  return out;
}

bool is_gmail(const std::vector<std::string>& capabilities) {
  return std::find(capabilities.begin(), capabilities.end(), "X-GM-EXT-1") != capabilities.end();
}

}  // namespace imapstage::batch

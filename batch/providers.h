// Provider profiles: what the big hosted services need, as defaults a
// profile (`provider = "gmail"`) or the command line (`--provider gmail`)
// starts from. Every value can be overridden by the profile's own keys or
// by flags. The values come from the providers' published documentation
// (README.md, "Provider limits"); they change over time, so they are
// defaults, not promises.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace imapstage::batch {

struct Provider {
  std::string name;                  // "gmail", "microsoft365"
  std::string title;                 // "Gmail / Google Workspace"
  std::string host;
  uint16_t port = 993;
  std::string tls = "implicit";
  std::string mechanism = "xoauth2"; // tokens from token_cmd
  uint64_t max_message_bytes = 0;    // the largest message the service accepts by APPEND
  uint64_t daily_download_bytes = 0; // export's daily budget (0: none)
  uint64_t daily_upload_bytes = 0;   // import's daily budget (0: none)
  int per_server = 0;                // suggested accounts at once against the service (shown, not applied)
  int connections = 0;               // suggested connections per account (shown, not applied)
  // Longest command line sent; longer UID sets are split over several commands.
  size_t max_command_length = 0;
  bool restore_flagged = false;      // re-STORE \Flagged after APPEND (the service drops it)
  bool case_insensitive_names = false;
  std::vector<std::string> reserved;  // folder names (or prefixes ending in '/') the service owns
  std::string notes;                  // one line on where the values come from
};

// Every known provider, in a fixed order.
const std::vector<Provider>& providers();
// The provider named `name` (case-insensitive; "m365", "office365",
// "outlook", "google" and "gmail" spelled as users do are accepted).
// Throws Error(usage) listing the names for anything else.
const Provider& find_provider(std::string_view name);

// The table as text (imapstage providers): one block per provider.
std::string providers_table();

// Whether `capabilities` (upper-case names) are Gmail's (X-GM-EXT-1).
bool is_gmail(const std::vector<std::string>& capabilities);

}  // namespace imapstage::batch

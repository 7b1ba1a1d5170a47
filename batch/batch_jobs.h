// Export and import batches: many accounts from an accounts file, run by the
// batch runner against one shared Archive opened for writing (so another
// writer process is refused by the archive's own lock before anything runs).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "batch/accounts_file.h"
#include "batch/budget.h"
#include "batch/profiles.h"
#include "batch/runner.h"
#include "batch/shard.h"
#include "common/events.h"
#include "common/retry.h"
#include "export/exporter.h"
#include "imap/session.h"
#include "import/importer.h"

namespace imapstage::batch {

struct ExportBatchOptions {
  std::filesystem::path archive_dir;
  std::filesystem::path accounts_file;
  ServerRouting routing;                 // where source accounts are
  std::vector<std::string> include;      // folder globs, as for one export
  std::vector<std::string> exclude;
  bool allow_unmatched = false;          // as for one export
  std::vector<imap::Namespace::Kind> namespaces = {imap::Namespace::personal};
  // POP3 accounts (profile protocol pop3): after each account's export, DELE
  // what the archive holds and re-hashes (pop3::delete_archived).
  bool delete_after_verify = false;
  // IMAP accounts: selection, --max-errors and rate caps, each account on its own.
  exporting::ExportPolicy policy;
  // Only the lines whose source user falls to this shard (batch/shard.h) run;
  // archive_dir is then already the shard's own archive.
  Shard shard;
  RunnerOptions runner;
  RetryPolicy retry;
  BatchLimits limits;                    // budgets and per-server caps (0: each profile's)
};

struct ImportBatchOptions {
  std::filesystem::path archive_dir;
  std::filesystem::path accounts_file;
  ServerRouting routing;                 // where target accounts are
  std::map<std::string, std::string> map;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  bool sync_expunges = false;            // as for one import
  importing::ImportPolicy policy;        // as for one import, each account on its own
  Shard shard;                           // as for export: only this shard's lines
  RunnerOptions runner;
  RetryPolicy retry;
  BatchLimits limits;                    // budgets and per-server caps (0: each profile's)
};

struct BatchReport {
  BatchResult result;
  std::vector<LineError> refused;        // malformed lines, unknown accounts or domains, duplicates
  bool complete() const {
    return refused.empty() && result.failed == 0 && result.not_started == 0 && result.parked == 0;
  }
  // Nothing failed: only parked accounts are left (a run after their resume time continues).
  bool only_parked() const {
    return refused.empty() && result.failed == 0 && result.not_started == 0 && result.parked > 0;
  }
};

// Keeps the lines of `file` that fall to `shard` (all of them without
// sharding); when sharded, emits a "shard" event (index, count, origin, lines
// taken, lines in the file, the shard's archive).
void take_shard(AccountsFile& file, const Shard& shard, const std::filesystem::path& archive, EventSink& events);

// Source accounts are archived as SOURCE_USER@HOST (the mailbox, never the
// master-user login). With a shard, only the lines of that shard are read (a
// "shard" event says how many). Throws Error for what stops the whole batch (archive
// locked, unreadable accounts file); everything per account is in the report
// and the state file DIR/batches/export.json.
BatchReport run_export_batch(const ExportBatchOptions& options, EventSink& events);

// The archived account of each line is the one named SOURCE_USER, or the only
// one named SOURCE_USER@HOST; targets are identified as TARGET_USER@HOST:PORT.
// State: DIR/batches/import.json.
BatchReport run_import_batch(const ImportBatchOptions& options, EventSink& events);

// "login refused for ALICE (master-user: login as alice*admin): <server's words>":
// an auth Error naming the account and the mechanism; other errors unchanged.
Error describe_login_error(const Error& e, const std::string& account, const AccountLogin& login);

}  // namespace imapstage::batch

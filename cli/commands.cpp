#include "cli/commands.h"

namespace imapstage::cli {

void register_commands(CLI::App& app, int& status) {
  add_export_command(app, status);
  add_import_command(app, status);
  add_verify_command(app, status);
  add_ls_command(app, status);
  add_manifest_command(app, status);
  add_cat_command(app, status);
  add_repair_command(app, status);
  add_status_command(app, status);
  add_mount_command(app, status);
  add_extract_command(app, status);
  add_serve_command(app, status);
  add_jobs_command(app, status);
  add_login_hook_command(app, status);
  add_bundle_command(app, status);
  add_invite_command(app, status);
  add_merge_command(app, status);
  add_oauth2_command(app, status);
  add_providers_command(app, status);
  add_init_command(app, status);
  add_key_command(app, status);
}

}  // namespace imapstage::cli

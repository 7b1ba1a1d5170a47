// imapstage-docs OUTDIR: writes the manual pages and shell completions
// generated from imapstage's command line (cli/manual.h) under OUTDIR. Run by
// the build; not installed.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/app.h"
#include "cli/manual.h"
#include "cli/version.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: imapstage-docs OUTDIR\n";
    return 2;
  }
  std::filesystem::path dir = argv[1];
  CLI::App app;
  int status = 0;
  imapstage::cli::build_app(app, status);
  for (const auto& file : imapstage::cli::generated_docs(app, imapstage::cli::program_version())) {
    auto path = dir / file.path;
    std::filesystem::create_directories(path.parent_path());
    auto tmp = path;
    tmp += ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << file.text;
      if (!out.flush()) {
        std::cerr << "imapstage-docs: cannot write " << tmp << "\n";
        return 1;
      }
    }
    std::filesystem::rename(tmp, path);
  }
  return 0;
}

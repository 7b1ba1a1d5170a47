// The local file sources: a Maildir tree, an mbox file (or a directory of
// them) and a directory of .eml files. Read-only: nothing under the path is
// written, renamed or locked; symbolic links below the path are never
// followed (each is reported), so link loops cannot trap a walk; FIFOs and
// devices are never opened. FORMAT.md ("Sources") says how identities,
// flags and dates are taken from the files.
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>

#include "sources/source.h"

namespace imapstage::sources {

// A Maildir tree at `root`: Maildir++ (INBOX at the root, ".A.B" folders with
// modified UTF-7 names, as Dovecot and Courier keep them) or nested
// (a directory per level; INBOX is the root's own cur/new, or a directory
// named INBOX), told apart by whether the root has "." folders. Messages are
// the files in cur/ and new/ (tmp/ holds deliveries in progress and is not
// read); flags come from the ":2," part of the name, keywords from the
// folder's dovecot-keywords, INTERNALDATE from the modification time.
std::unique_ptr<Source> open_maildir(const std::filesystem::path& root);

// An mbox file (one folder, INBOX) or a directory of mbox files (each file a
// folder named by its path, a ".mbox" suffix left off; subdirectories are
// levels). mboxrd, mboxo and mboxcl2 are told apart per file; a file is
// read in bounded pieces however large it is.
std::unique_ptr<Source> open_mbox(const std::filesystem::path& path);

// A directory of .eml files: the root's own files are INBOX, each
// subdirectory holding .eml files is a folder (subdirectories are levels).
// Files whose names do not end in ".eml" are left alone. INTERNALDATE is the
// modification time; an index.csv written by `imapstage extract --to eml`
// gives its files (same UID and size) their flags, keywords and INTERNALDATE.
std::unique_ptr<Source> open_eml_directory(const std::filesystem::path& root);

// "maildir:PATH", "mbox:PATH" or "eml:PATH". Throws Error(usage) for another
// kind or when PATH does not exist (exit status 2, a bad command line).
std::unique_ptr<Source> open_file_source(std::string_view spec);

}  // namespace imapstage::sources

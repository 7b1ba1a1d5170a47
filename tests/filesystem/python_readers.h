// Python's mailbox module as an independent reader of what mount and
// extract produce: scripts run with python3, answering JSON on stdout.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/process.h"

namespace imapstage::testing {

// argv[1]: a directory tree. Every Maildir in it (a directory with cur/, new/
// and tmp/) read with mailbox.Maildir: {"<maildir path>": [{"sha256", "flags"
// (get_flags), "date" (get_date), "subdir", "keywords" (via the folder's
// dovecot-keywords), "name"}]}. With argv[2] == "maildir++", argv[1] is one
// Maildir++ root read with list_folders()/get_folder(): keys "" (INBOX) and
// the folder names.
inline const char* kReadMaildirs = R"PY(
import hashlib, json, mailbox, os, sys
root = sys.argv[1]
def keywords(path):
    table = {}
    try:
        for line in open(os.path.join(path, "dovecot-keywords"), encoding="utf-8"):
            n, k = line.rstrip("\n").split(" ", 1)
            table[chr(ord("a") + int(n))] = k
    except FileNotFoundError:
        pass
    return table
def read(md, path):
    table = keywords(path)
    out = []
    for key in md.keys():
        msg = md.get_message(key)
        with md.get_file(key) as f:
            data = f.read()
        flags = msg.get_flags()
        out.append({"sha256": hashlib.sha256(data).hexdigest(), "flags": "".join(c for c in flags if c.isupper()),
                    "keywords": sorted(table[c] for c in flags if c.islower()), "date": int(msg.get_date()),
                    "subdir": msg.get_subdir(), "size": len(data)})
    return out
result = {}
if len(sys.argv) > 2 and sys.argv[2] == "maildir++":
    md = mailbox.Maildir(root, factory=None, create=False)
    result[""] = read(md, root)
    for name in md.list_folders():
        result[name] = read(md.get_folder(name), os.path.join(root, "." + name))
else:
    for d, dirs, files in os.walk(os.fsencode(root)):
        if all(s in dirs for s in (b"cur", b"new", b"tmp")):
            p = os.fsdecode(d)
            result[p] = read(mailbox.Maildir(p, factory=None, create=False), p)
json.dump(result, sys.stdout)
)PY";

// argv[1]: a directory tree. Every *.mbox file in it read with mailbox.mbox,
// mboxrd quoting undone: {"<file>": [{"sha256", "from" (get_from), "size"}]}.
inline const char* kReadMboxes = R"PY(
import hashlib, json, mailbox, os, re, sys
result = {}
for d, dirs, files in os.walk(os.fsencode(sys.argv[1])):
    for f in files:
        if not f.endswith(b".mbox"):
            continue
        p = os.fsdecode(os.path.join(d, f))
        box = mailbox.mbox(p, create=False)
        out = []
        for key in box.keys():
            data = re.sub(rb"(?m)^>(>*From )", rb"\1", box.get_bytes(key))
            out.append({"sha256": hashlib.sha256(data).hexdigest(), "from": box.get_message(key).get_from(),
                        "size": len(data), "nolf_sha256": hashlib.sha256(data[:-1]).hexdigest()})
        result[p] = out
json.dump(result, sys.stdout)
)PY";

// argv[1]: a directory tree. Every index.csv read with the csv module:
// {"<dir>": {"rows": [row dicts, each with "file": the .eml file of the
// directory whose SHA-256 is the row's sha256, or ""], "eml_files": N}}.
inline const char* kReadEml = R"PY(
import csv, hashlib, json, os, sys
result = {}
for d, dirs, files in os.walk(os.fsencode(sys.argv[1])):
    if b"index.csv" not in files:
        continue
    emls = {}
    for f in files:
        if f.endswith(b".eml"):
            emls[hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()] = os.fsdecode(f)
    with open(os.path.join(d, b"index.csv"), newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["file"] = emls.get(r["sha256"], "")
    result[os.fsdecode(d)] = {"rows": rows, "eml_files": len(emls)}
json.dump(result, sys.stdout)
)PY";

// Dovecot's imap binary as the reader (PREAUTH over a pipe, through Python's
// imaplib.IMAP4_stream), run as nobody: argv[1] its config, argv[2] a home,
// argv[3] the mail_location. Every selectable mailbox, EXAMINEd:
// {"<mailbox>": [{"sha256", "flags" (sorted, no \\Recent), "internaldate", "size"}]}.
inline const char* kReadWithDovecot = R"PY(
import hashlib, imaplib, json, os, shlex, sys, time
conf, home, location = sys.argv[1], sys.argv[2], sys.argv[3]
cmd = ("setpriv --reuid=65534 --regid=65534 --clear-groups env -i USER=reader HOME=" + shlex.quote(home) +
       " /usr/lib/dovecot/imap -c " + shlex.quote(conf) + " -o " + shlex.quote("mail_location=" + location))
m = imaplib.IMAP4_stream(cmd)
typ, boxes = m.list('""', '"*"')
result = {}
for line in boxes:
    line = line.decode()
    attrs = line[line.index("(") + 1:line.index(")")]
    if "\\Noselect" in attrs:
        continue
    name = line.rsplit(' "/" ', 1)[1]
    typ, data = m.select(name, readonly=True)
    assert typ == "OK", (name, data)
    out = []
    if int(data[0]) > 0:
        typ, data = m.fetch("1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK", data
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta, body = item
            flags = [f.decode() for f in imaplib.ParseFlags(meta) if f != b"\\Recent"]
            out.append({"sha256": hashlib.sha256(body).hexdigest(), "flags": sorted(flags),
                        "internaldate": int(time.mktime(imaplib.Internaldate2tuple(meta))),
                        "size": int(meta.split(b"RFC822.SIZE ")[1].split()[0].rstrip(b")"))})
    result[name] = out
m.logout()
json.dump(result, sys.stdout)
)PY";

// A private Dovecot configuration for kReadWithDovecot (mail as nobody; no
// auth service, no listeners).
inline std::string dovecot_reader_config(const std::string& dir) {
  return "base_dir = " + dir + "/run\nstate_dir = " + dir + "/state\nlog_path = /dev/stderr\nssl = no\n"
         "protocols =\nfirst_valid_uid = 1\nfirst_valid_gid = 1\n"
         "namespace inbox {\n  inbox = yes\n  separator = /\n  prefix =\n}\n";
}

// Runs one of the scripts above; throws on failure.
inline nlohmann::json run_python(const char* script, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/python3", "-c", script};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_process(argv);
  if (r.exit_code != 0) throw std::runtime_error("python3 failed: " + r.err);
  return nlohmann::json::parse(r.out);
}

}  // namespace imapstage::testing

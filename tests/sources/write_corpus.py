#!/usr/bin/env python3
"""Writes the test harness's sample mail (tools/testserver/seed.py) as local
files for the file-source tests, and what an archive of them must hold.

    write_corpus.py KIND OUT EXPECTED.json [USER]

KIND is "mbox" (one mbox file per folder, written by Python's `mailbox`
module: mboxo with "From " lines escaped, flags in Status:/X-Status:,
keywords in X-Keywords:, the From line's date the INTERNALDATE) or "eml"
(a directory per folder, one .eml file per message holding the sample's exact
bytes, its mtime the INTERNALDATE). EXPECTED.json maps each folder (levels
joined with "/") to its messages: sha256 of the bytes an IMAP server would
serve for them, INTERNALDATE (unix seconds) and flags (sorted).

The expected bytes are derived independently of imapstage: Python's own
reading of the mbox (mailbox.mbox.get_bytes), with the mboxo escape taken off
and bare LFs made CRLF.
"""

import hashlib
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))

import mailbox  # noqa: E402

from testserver import seed  # noqa: E402

_LETTERS = {"\\Seen": "R", "\\Answered": "A", "\\Flagged": "F", "\\Deleted": "D", "\\Draft": "T"}


def served(data):
    data = re.sub(rb"(?m)^>From ", b"From ", data)
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def write_mbox(folders, out):
    expected = {}
    for f in folders:
        path = os.path.join(out, *f.name.split("/")[:-1], f.name.split("/")[-1] + ".mbox")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        box = mailbox.mbox(path, create=True)
        keys = []
        for m in f.messages:
            data = m.data
            if m.keywords:
                header, sep, body = data.partition(b"\r\n\r\n")
                data = header + b"\r\nX-Keywords: " + " ".join(m.keywords).encode() + sep + body
            msg = mailbox.mboxMessage(data)
            msg.set_from("MAILER-DAEMON", time.gmtime(m.internaldate))
            status = "".join(_LETTERS[x] for x in m.flags if x in _LETTERS and _LETTERS[x] == "R")
            xstatus = "".join(_LETTERS[x] for x in m.flags if x in _LETTERS and _LETTERS[x] != "R")
            if status or xstatus:
                msg.set_flags(status + xstatus)
            keys.append((box.add(msg), m))
        box.flush()
        box.close()
        box = mailbox.mbox(path, create=False)
        expected[f.name] = [{"sha256": hashlib.sha256(served(box.get_bytes(k))).hexdigest(),
                             "internaldate": m.internaldate,
                             "flags": sorted(set(m.flags) | set(m.keywords))} for k, m in keys]
        box.close()
    return expected


def write_eml(folders, out):
    expected = {}
    for f in folders:
        d = os.path.join(out, *f.name.split("/"))
        os.makedirs(d, exist_ok=True)
        expected[f.name] = []
        for i, m in enumerate(f.messages):
            path = os.path.join(d, "%05d.eml" % (i + 1))
            with open(path, "wb") as fh:
                fh.write(m.data)
            os.utime(path, (m.internaldate, m.internaldate))
            expected[f.name].append({"sha256": hashlib.sha256(m.data).hexdigest(), "internaldate": m.internaldate,
                                     "flags": []})
    return expected


def main(argv):
    kind, out, expected_file = argv[1], argv[2], argv[3]
    user = argv[4] if len(argv) > 4 else "carol"
    folders = seed.plan_default(user)
    os.makedirs(out, exist_ok=True)
    expected = write_mbox(folders, out) if kind == "mbox" else write_eml(folders, out)
    with open(expected_file, "w") as fh:
        json.dump(expected, fh)


if __name__ == "__main__":
    main(sys.argv)

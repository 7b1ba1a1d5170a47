"""Inspecting and changing mailboxes over IMAP (the plain loopback port),
independently of imapstage's own code."""

import calendar
import hashlib
import re
import secrets
import sys
import time

from . import mutf7
from . import seed as seeding
from .imapclient import Client, IMAPError, Literal, NoResponse, fetch_items, quote_arg, uid_set
from .server import HarnessError, doveadm, load_info

__all__ = ["connect", "summary", "append", "store", "expunge", "create", "delete_folder", "subscribe",
           "bump_uidvalidity", "check_seed", "parse_internaldate", "raw_name", "canonical_name", "seed_over_imap",
           "expected_bytes", "format_internaldate"]

_MONTHS = {m: i + 1 for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                            "Nov", "Dec"])}
_DATE_RE = re.compile(r"^\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$")
_BODY_BATCH_BYTES = 24 << 20


def parse_internaldate(s):
    """IMAP date-time ("17-Jul-1996 02:44:25 -0700") to Unix time."""
    m = _DATE_RE.match(s)
    if not m or m.group(2).capitalize() not in _MONTHS:
        raise ValueError(f"bad IMAP date-time {s!r} (want \"DD-Mon-YYYY HH:MM:SS +ZZZZ\")")
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    t = calendar.timegm((int(year), _MONTHS[mon.capitalize()], int(day), int(hh), int(mm), int(ss)))
    off = (int(oh) * 60 + int(om)) * 60
    return t - off if sign == "+" else t + off


def _text(v):
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def format_internaldate(t):
    """Unix time to an IMAP date-time in UTC ("07-Feb-2007 10:00:00 +0000")."""
    tm = time.gmtime(t)
    return f"{tm.tm_mday:02d}-{_MONTH_NAMES[tm.tm_mon - 1]}-{tm.tm_year} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} +0000"


_MONTH_NAMES = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
DOVECOT_NAMESPACE = {"prefix": "", "separator": "/"}


def connect(d, user, info=None):
    """A logged-in connection to DIR's server as `user` (password and login
    name from server.json). The client carries the server's namespaces
    (`c.personal`, `c.namespaces`) for folder names."""
    info = info or load_info(d)
    if user not in info["users"]:
        raise HarnessError(f"no user {user!r} in {info['dir']} (known: {', '.join(sorted(info['users']))}); "
                           f"use add-user")
    return _connect_as(info, info.get("logins", {}).get(user, user), info["users"][user], user)


def connect_admin(d, info=None):
    """A connection as the server's administrator (Cyrus: `admins` in imapd.conf)."""
    info = info or load_info(d)
    if not info.get("admin_user"):
        raise HarnessError(f"the {info.get('kind', 'dovecot')} server has no administrator account")
    return _connect_as(info, info["admin_user"], info["admin_password"], info["admin_user"])


def _connect_as(info, login, password, label):
    try:
        c = Client(info["host"], info["imap_port"])
    except IMAPError as e:
        raise HarnessError(f"{e} (is the server in {info['dir']} running?)") from None
    try:
        c.login(login, password)
    except NoResponse as e:
        c.close()
        raise HarnessError(f"login as {label} ({login}) failed: {e}") from None
    c.personal = info.get("personal_namespace") or DOVECOT_NAMESPACE
    c.namespaces = info.get("namespaces") or {"personal": [DOVECOT_NAMESPACE], "other": [], "shared": []}
    return c


def raw_name(folder, personal=None):
    """The server's (modified UTF-7) name of a logical folder name: UTF-8 levels
    joined with "/", placed in the personal namespace (prefix and separator).
    "INBOX" in any case stays INBOX."""
    ns = personal or DOVECOT_NAMESPACE
    if folder.upper() == "INBOX":
        return "INBOX"
    sep = ns["separator"]
    levels = folder.split("/")
    if sep != "/":
        for level in levels:
            if sep in level:
                raise HarnessError(f"folder {folder!r}: the server's hierarchy separator {sep!r} can't appear "
                                   f"inside a level")
    return ns["prefix"] + sep.join(mutf7.encode(level) for level in levels)


def canonical_name(raw, namespaces):
    """(namespace kind, canonical name) of a raw name: "personal" names lose the
    personal prefix, "other" and "shared" ones keep theirs; levels are decoded
    from modified UTF-7 and joined with "/"."""
    try:
        name = mutf7.decode(raw)
    except ValueError:
        name = raw
    if name.upper() == "INBOX":
        return "personal", "INBOX"
    best = None
    for kind in ("personal", "other", "shared"):
        for ns in namespaces.get(kind) or []:
            prefix = ns["prefix"]
            if (name.startswith(prefix) or (prefix and name + ns["separator"] == prefix)) and \
                    (best is None or len(prefix) > len(best[1]["prefix"])):
                best = (kind, ns)
    if best is None:
        return "personal", name
    kind, ns = best
    sep = ns["separator"] or "/"
    rest = name[len(ns["prefix"]):] if kind == "personal" and name.startswith(ns["prefix"]) else name
    return kind, rest.replace(sep, "/") if sep != "/" else rest


def _raw(c, folder):
    return raw_name(folder, getattr(c, "personal", None))


def expected_bytes(rewrites, data):
    """What the server stores for APPENDed `data` according to its recorded
    rewrites, or None when it refuses the message."""
    r = rewrites or {}
    if r.get("bare_lf") == "refused" and re.search(rb"(?<!\r)\n", data):
        return None
    if r.get("nul") == "refused" and b"\0" in data:
        return None
    out = data
    if r.get("bare_cr") == "removed":
        out = re.sub(rb"\r(?!\n)", b"", out)
    if r.get("bare_lf") == "crlf":
        out = re.sub(rb"(?<!\r)\n", b"\r\n", out)
    if r.get("nul") == "0x80":
        out = out.replace(b"\0", b"\x80")
    if r.get("header_8bit") == "X":
        end = out.find(b"\r\n\r\n")
        head, body = (out, b"") if end < 0 else (out[:end + 4], out[end + 4:])
        out = bytes(b if b < 0x80 else 0x58 for b in head) + body
    if r.get("missing_final_crlf") == "added" and out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


# --- summary -------------------------------------------------------------------------

def _message_id(header_bytes):
    if not header_bytes:
        return None
    text = re.sub(rb"\r?\n[ \t]+", b" ", header_bytes)
    for line in text.split(b"\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"message-id":
            v = value.strip().decode("utf-8", "replace")
            return v or None
    return None


def _list(c):
    resp = c.command(b'LIST "" "*"')
    out = []
    for u in resp.of_kind("LIST"):
        attrs, delim, name = u.values[0], u.values[1], u.values[2]
        out.append(([str(a) for a in attrs], _text(delim), _text(name)))
    return out


def _subscribed(c):
    resp = c.command(b'LSUB "" "*"')
    return {_text(u.values[2]) for u in resp.of_kind("LSUB")}


def summary(c, hashes=True):
    """Read-only description of every folder and message of the logged-in account."""
    condstore = "CONDSTORE" in c.capabilities
    if condstore:
        c.command(b"ENABLE", b"CONDSTORE")
    subscribed = _subscribed(c)
    folders = []
    namespaces = getattr(c, "namespaces", {"personal": [DOVECOT_NAMESPACE]})
    for attrs, delim, raw in sorted(_list(c), key=lambda x: x[2]):
        try:
            name = mutf7.decode(raw)
        except ValueError:
            name = raw
        ns_kind, canonical = canonical_name(raw, namespaces)
        entry = {"name": name, "raw": raw, "canonical": canonical, "namespace": ns_kind, "delimiter": delim,
                 "attributes": attrs, "subscribed": raw in subscribed,
                 "uidvalidity": None, "uidnext": None, "highestmodseq": None, "exists": None, "messages": None}
        folders.append(entry)
        low = {a.lower() for a in attrs}
        if "\\noselect" in low or "\\nonexistent" in low:
            continue
        resp = c.command(b"EXAMINE", quote_arg(raw), check=False)
        if resp.status != "OK":
            # Dovecot's list index can keep listing a deleted parent without \Noselect.
            entry["error"] = f"EXAMINE: {resp.status} {('[' + resp.code + '] ') if resp.code else ''}{resp.text}"
            continue
        exists = 0
        for u in resp.untagged:
            if u.kind == "EXISTS":
                exists = u.number
        entry["uidvalidity"] = int(resp.code_value("UIDVALIDITY"))
        uidnext = resp.code_value("UIDNEXT")
        if uidnext is None:  # Courier sends no UIDNEXT code on EXAMINE
            uidnext = _status_item(c, raw, "UIDNEXT")
        entry["uidnext"] = int(uidnext) if uidnext is not None else None
        hms = resp.code_value("HIGHESTMODSEQ")
        entry["highestmodseq"] = int(hms) if hms is not None else None
        entry["exists"] = exists
        messages = {}
        if exists:
            r = c.command(b"UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE " + (b"MODSEQ " if condstore else b"")
                          + b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            for u in r.of_kind("FETCH"):
                it = fetch_items(u)
                if "UID" not in it:
                    continue
                uid = int(it["UID"])
                date = _text(it.get("INTERNALDATE"))
                modseq = it.get("MODSEQ")
                messages[uid] = {
                    "uid": uid,
                    "flags": sorted(str(f) for f in (it.get("FLAGS") or []) if str(f).lower() != "\\recent"),
                    "internaldate": date,
                    "internaldate_unix": parse_internaldate(date),
                    "size": int(it["RFC822.SIZE"]),
                    "modseq": int(modseq[0]) if isinstance(modseq, list) and modseq else None,
                    # Courier names the item BODY[HEADER.FIELDS ("MESSAGE-ID")].
                    "message_id": _message_id(next((v for k, v in it.items()
                                                    if k.startswith("BODY[HEADER.FIELDS")), None)),
                }
        if hashes and messages:
            _hash_bodies(c, raw, messages)
        entry["messages"] = [messages[u] for u in sorted(messages)]
        if len(entry["messages"]) != exists:
            print(f"test-server: warning: {raw}: EXISTS {exists} but {len(messages)} messages fetched", file=sys.stderr)
    return {"personal_namespace": getattr(c, "personal", DOVECOT_NAMESPACE), "folders": folders}


def _hash_bodies(c, raw, messages):
    uids = sorted(messages)
    i = 0
    while i < len(uids):
        batch = []
        total = 0
        while i < len(uids) and (not batch or total + messages[uids[i]]["size"] <= _BODY_BATCH_BYTES):
            batch.append(uids[i])
            total += messages[uids[i]]["size"]
            i += 1
        r = c.command(f"UID FETCH {uid_set(batch)} (UID BODY.PEEK[])".encode())
        for u in r.of_kind("FETCH"):
            it = fetch_items(u)
            if "UID" not in it or "BODY[]" not in it:
                continue
            uid = int(it["UID"])
            body = it["BODY[]"] or b""
            m = messages.get(uid)
            if m is None:
                continue
            m["sha256"] = hashlib.sha256(body).hexdigest()
            if len(body) != m["size"]:
                print(f"test-server: warning: {raw} UID {uid}: RFC822.SIZE {m['size']} but BODY[] has {len(body)} "
                      f"bytes", file=sys.stderr)
        for uid in batch:
            if "sha256" not in messages[uid]:
                raise HarnessError(f"{raw} UID {uid}: the server sent no body")


# --- changes ---------------------------------------------------------------------------

def _flag_list(flags):
    parts = flags.split() if flags else []
    for f in parts:
        if not re.match(r"^\\?[A-Za-z0-9$_.\-]+$", f) and f != "\\*":
            raise HarnessError(f"bad flag {f!r}")
    return "(" + " ".join(parts) + ")"


def append(c, folder, data, flags="", date=None):
    """APPENDs `data` (exact bytes) and returns its UID; creates the folder if needed."""
    raw = _raw(c, folder)
    args = [b"APPEND", quote_arg(raw)]
    if flags:
        args.append(_flag_list(flags).encode())
    if date:
        try:
            parse_internaldate(date)
        except ValueError as e:
            raise HarnessError(str(e)) from None
        args.append(b'"' + date.strip().encode() + b'"')
    args.append(Literal(data))
    r = c.command(*args, check=False)
    if r.status != "OK" and r.code and r.code.upper().startswith("TRYCREATE"):
        c.command(b"CREATE", quote_arg(raw))
        r = c.command(*args, check=False)
    if r.status != "OK":
        raise HarnessError(f"APPEND to {folder} failed: {r.status} {('[' + r.code + '] ') if r.code else ''}{r.text}")
    code = r.code_value("APPENDUID")
    if not code:
        raise HarnessError(f"APPEND to {folder}: no APPENDUID in the reply ({r.code} {r.text})")
    return int(code.split()[1])


def _select(c, folder):
    try:
        return c.command(b"SELECT", quote_arg(_raw(c, folder)))
    except NoResponse as e:
        raise HarnessError(f"cannot select {folder}: {e}") from None


def _existing_uids(c, uids):
    r = c.command(f"UID FETCH {uid_set(uids)} (UID)".encode())
    return {int(fetch_items(u)["UID"]) for u in r.of_kind("FETCH") if "UID" in fetch_items(u)}


def store(c, folder, uid, op, flags):
    """UID STORE; `op` is FLAGS, +FLAGS or -FLAGS (".SILENT" allowed). Returns the new flags."""
    norm = op.upper()
    if norm not in ("FLAGS", "+FLAGS", "-FLAGS", "FLAGS.SILENT", "+FLAGS.SILENT", "-FLAGS.SILENT"):
        raise HarnessError(f"bad store operation {op!r}: use +FLAGS, -FLAGS or FLAGS")
    _select(c, folder)
    if uid not in _existing_uids(c, [uid]):
        raise HarnessError(f"{folder} has no message with UID {uid}")
    c.command(f"UID STORE {uid} {norm.replace('.SILENT', '')} {_flag_list(flags)}".encode())
    r = c.command(f"UID FETCH {uid} (UID FLAGS)".encode())
    for u in r.of_kind("FETCH"):
        it = fetch_items(u)
        if "UID" in it and int(it["UID"]) == uid and "FLAGS" in it:
            return sorted(str(f) for f in it["FLAGS"] if str(f).lower() != "\\recent")
    return []


def expunge(c, folder, uids):
    """Marks the UIDs \\Deleted and expunges exactly them (UID EXPUNGE)."""
    uids = sorted(set(uids))
    if not uids:
        raise HarnessError("no UIDs given")
    _select(c, folder)
    missing = set(uids) - _existing_uids(c, uids)
    if missing:
        raise HarnessError(f"{folder} has no message with UID {', '.join(map(str, sorted(missing)))}")
    s = uid_set(uids)
    c.command(f"UID STORE {s} +FLAGS.SILENT (\\Deleted)".encode())
    c.command(f"UID EXPUNGE {s}".encode())
    return uids


def create(c, folder, subscribe=False):
    """CREATE (no error if it exists); returns True when it was created."""
    raw = _raw(c, folder)
    r = c.command(b"CREATE", quote_arg(raw), check=False)
    created = r.status == "OK"
    # Cyrus and Courier refuse an existing name without [ALREADYEXISTS].
    if not created and not (r.code and r.code.upper().startswith("ALREADYEXISTS")) and \
            not any(u.values[2] in (raw, raw.encode()) for u in c.command(b"LIST", b'""', quote_arg(raw)).of_kind("LIST")):
        raise HarnessError(f"CREATE {folder} failed: {r.status} {r.text}")
    if subscribe:
        c.command(b"SUBSCRIBE", quote_arg(_raw(c, folder)))
    return created


def delete_folder(c, folder):
    r = c.command(b"DELETE", quote_arg(_raw(c, folder)), check=False)
    if r.status != "OK":
        raise HarnessError(f"DELETE {folder} failed: {r.status} {('[' + r.code + '] ') if r.code else ''}{r.text}")


def subscribe(c, folder, on=True):
    c.command(b"SUBSCRIBE" if on else b"UNSUBSCRIBE", quote_arg(_raw(c, folder)))


def _status_item(c, raw, item):
    r = c.command(b"STATUS", quote_arg(raw), f"({item})".encode(), check=False)
    for u in r.of_kind("STATUS"):
        items = u.values[1] if len(u.values) > 1 else []
        for i in range(0, len(items) - 1, 2):
            if str(items[i]).upper() == item:
                return items[i + 1]
    return None


def _uidvalidity(c, folder):
    r = c.command(b"STATUS", quote_arg(_raw(c, folder)), b"(UIDVALIDITY)")
    for u in r.of_kind("STATUS"):
        items = u.values[1] if len(u.values) > 1 else []
        for i in range(0, len(items) - 1, 2):
            if str(items[i]).upper() == "UIDVALIDITY":
                return int(items[i + 1])
    raise HarnessError(f"STATUS {folder}: no UIDVALIDITY")


def bump_uidvalidity(d, user, folder):
    """Gives the folder a new, larger UIDVALIDITY; the messages, their UIDs,
    flags and INTERNALDATEs stay. Dovecot: doveadm mailbox update; Courier: the
    folder's courierimapuiddb; Cyrus (not INBOX): the folder is deleted and
    made again with the same messages at the same UIDs. Returns (old, new)."""
    with connect(d, user) as c:
        try:
            old = _uidvalidity(c, folder)
        except NoResponse as e:
            raise HarnessError(f"cannot read UIDVALIDITY of {folder}: {e}") from None
    new = old + 1 + secrets.randbelow(1000)
    if new > 0xFFFFFFFF:
        new = 1 + secrets.randbelow(1000)
    info = load_info(d)
    kind = info.get("kind", "dovecot")
    if kind == "courier":
        _courier_set_uidvalidity(info, user, folder, new)
    elif kind == "cyrus":
        new = _cyrus_recreate(d, user, folder, info)
        if new <= old:
            raise HarnessError(f"Cyrus gave the recreated {folder} UIDVALIDITY {new}, not above {old}")
    else:
        doveadm(d, "mailbox", "update", "-u", user, "--uid-validity", str(new), folder)
    with connect(d, user) as c:
        now = _uidvalidity(c, folder)
    if now != new:
        raise HarnessError(f"UIDVALIDITY of {folder} is {now} after the update, expected {new}")
    return old, new


# --- seeding over IMAP ------------------------------------------------------------------

def seed_over_imap(d, user, plan, special_use=None, info=None):
    """Creates the plan's folders (with CREATE-SPECIAL-USE for the names in
    `special_use`, {name: "\\Sent"}), subscribes the subscribed ones and
    APPENDs every message with its flags, keywords and INTERNALDATE, in plan
    order (so UIDs follow INTERNALDATE as with the Maildir seed). For servers
    whose storage the harness does not write itself (Cyrus, Courier)."""
    special_use = special_use or {}
    with connect(d, user, info) as c:
        for f in plan:
            raw = _raw(c, f.name)
            if raw != "INBOX":
                use = special_use.get(f.name)
                args = [b"CREATE", quote_arg(raw)]
                if use:
                    args.append(f"(USE ({use}))".encode())
                r = c.command(*args, check=False)
                if r.status != "OK" and not (r.code and r.code.upper().startswith("ALREADYEXISTS")):
                    raise HarnessError(f"CREATE {f.name} ({raw}) for {user} failed: {r.status} {r.text}")
            if f.subscribed:
                c.command(b"SUBSCRIBE", quote_arg(raw))
            # MULTIAPPEND where offered: one command (and one commit on the server) per batch.
            multi = "MULTIAPPEND" in c.capabilities
            batch, size = [], 0
            for i, m in enumerate(f.messages):
                flags = " ".join(m.flags + m.keywords)
                batch += [f"({flags})".encode(), b'"' + format_internaldate(m.internaldate).encode() + b'"',
                          Literal(m.data)]
                size += len(m.data)
                last = i == len(f.messages) - 1
                if multi and not last and size < (8 << 20) and len(batch) < 300:
                    continue
                r = c.command(b"APPEND", quote_arg(raw), *batch, check=False)
                if r.status != "OK":
                    raise HarnessError(f"APPEND to {f.name} for {user} failed: {r.status} {r.text}")
                batch, size = [], 0


def _cyrus_recreate(d, user, folder, info):
    """Deletes the folder and creates it again (same special use and
    subscription) holding the same bytes, flags and INTERNALDATEs at the same
    UIDs, with the same UIDNEXT: UIDs that were free are filled with
    placeholders that are expunged at once. Returns the new UIDVALIDITY."""
    with connect(d, user, info) as c:
        raw = _raw(c, folder)
        if raw == "INBOX":
            raise HarnessError("bump-uidvalidity can't renew INBOX on Cyrus (deleting it deletes the account)")
        resp = c.command(b"EXAMINE", quote_arg(raw))
        uidnext = int(resp.code_value("UIDNEXT"))
        messages = {}
        exists = sum(1 for u in resp.untagged if u.kind == "EXISTS" and u.number)
        if exists:
            r = c.command(b"UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])")
            for u in r.of_kind("FETCH"):
                it = fetch_items(u)
                if "UID" in it and "BODY[]" in it:
                    flags = [str(f) for f in it.get("FLAGS") or [] if str(f).lower() != "\\recent"]
                    messages[int(it["UID"])] = (flags, _text(it["INTERNALDATE"]).strip(), bytes(it["BODY[]"]))
        attrs = []
        for a, _, name in _list(c):
            if name == raw:
                attrs = [x for x in a if x.lower() in ("\\sent", "\\drafts", "\\trash", "\\junk", "\\archive",
                                                        "\\all", "\\flagged")]
        subscribed = raw in _subscribed(c)
        sep = c.personal["separator"]
        children = [name for _, _, name in _list(c) if name.startswith(raw + sep)]
        c.command(b"UNSELECT" if "UNSELECT" in c.capabilities else b"CLOSE")
        if attrs:  # Cyrus refuses to delete a special-use folder
            c.command(b"SETMETADATA", quote_arg(raw), b"(/private/specialuse NIL)")
        # A folder with children can't be deleted: move it with its subtree aside,
        # bring the children back (RENAME keeps their UIDVALIDITY), then delete it.
        aside = raw + "-imapstage-bump-" + secrets.token_hex(3) if children else raw
        if children:
            c.command(b"RENAME", quote_arg(raw), quote_arg(aside))
        else:
            c.command(b"DELETE", quote_arg(raw))
        args = [b"CREATE", quote_arg(raw)]
        if attrs:
            args.append(f"(USE ({' '.join(attrs)}))".encode())
        c.command(*args)
        if children:
            for _, _, name in _list(c):
                rest = name[len(aside) + len(sep):]
                if name.startswith(aside + sep) and sep not in rest:
                    c.command(b"RENAME", quote_arg(name), quote_arg(raw + sep + rest))
            c.command(b"DELETE", quote_arg(aside))
        placeholders = []
        for uid in range(1, uidnext):
            if uid in messages:
                flags, date, data = messages[uid]
                r = c.command(b"APPEND", quote_arg(raw), f"({' '.join(flags)})".encode(),
                              b'"' + date.encode() + b'"', Literal(data))
            else:
                r = c.command(b"APPEND", quote_arg(raw), b"(\\Deleted)",
                              Literal(b"Subject: placeholder\r\n\r\nx\r\n"))
                placeholders.append(uid)
            got = int(r.code_value("APPENDUID").split()[1])
            if got != uid:
                raise HarnessError(f"recreating {folder}: APPEND got UID {got}, expected {uid}")
        if placeholders:
            c.command(b"SELECT", quote_arg(raw))
            c.command(f"UID EXPUNGE {uid_set(placeholders)}".encode())
        if subscribed:
            c.command(b"SUBSCRIBE", quote_arg(raw))
        return _uidvalidity(c, folder)


def _courier_set_uidvalidity(info, user, folder, new):
    """Rewrites the UIDVALIDITY in the folder's courierimapuiddb ("1 UIDVALIDITY NEXTUID"
    on the first line); the UIDs of the messages stay. Sessions opened afterwards see it."""
    import os
    maildir = os.path.join(info["dir"], "mail", user, "Maildir")
    raw = raw_name(folder, info["personal_namespace"])
    prefix = info["personal_namespace"]["prefix"]
    path = maildir if raw == "INBOX" else os.path.join(maildir, "." + raw[len(prefix):])
    db = os.path.join(path, "courierimapuiddb")
    try:
        with open(db, encoding="ascii") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise HarnessError(f"{db} is missing: is {folder} a folder of {user}?") from None
    head = lines[0].split()
    if len(head) != 3 or head[0] != "1":
        raise HarnessError(f"{db}: unexpected first line {lines[0]!r}")
    lines[0] = f"1 {new} {head[2]}"
    st = os.stat(db)
    tmp = db + ".imapstage"
    with open(tmp, "w", encoding="ascii") as f:
        f.write("\n".join(lines))
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, db)


# --- checking the seed -----------------------------------------------------------------

def check_seed(d, user):
    """Compares what the server reports for `user` with the deterministic seed
    plan (folders, subscriptions, UID order, bytes, sizes, flags, keywords,
    INTERNALDATEs). Returns a list of differences (empty when all match)."""
    info = load_info(d)
    spec = info.get("seeded", {}).get(user, "none")
    plan = seeding.plan_for(user, spec)
    with connect(d, user) as c:
        s = summary(c, hashes=True)
    problems = []
    server = {f["canonical"]: f for f in s["folders"] if f.get("namespace", "personal") == "personal"}
    planned = {f.name: f for f in plan}
    if "INBOX" not in planned:
        planned["INBOX"] = seeding.Folder("INBOX", False)
    for name, f in planned.items():
        sf = server.get(name)
        if sf is None:
            problems.append(f"{name}: missing on the server")
            continue
        if sf["messages"] is None:
            problems.append(f"{name}: not selectable ({sf['attributes']})")
            continue
        if name != "INBOX" and sf["subscribed"] != f.subscribed:
            problems.append(f"{name}: subscribed is {sf['subscribed']}, planned {f.subscribed}")
        if len(sf["messages"]) != len(f.messages):
            problems.append(f"{name}: {len(sf['messages'])} messages, planned {len(f.messages)}")
        for pm, sm in zip(f.messages, sf["messages"]):
            where = f"{name} UID {sm['uid']}"
            if sm["sha256"] != hashlib.sha256(pm.data).hexdigest():
                problems.append(f"{where}: bytes differ")
            if sm["size"] != len(pm.data):
                problems.append(f"{where}: size {sm['size']}, planned {len(pm.data)}")
            if sm["flags"] != pm.all_flags():
                problems.append(f"{where}: flags {sm['flags']}, planned {pm.all_flags()}")
            if sm["internaldate_unix"] != pm.internaldate:
                problems.append(f"{where}: INTERNALDATE {sm['internaldate_unix']}, planned {pm.internaldate}")
            if sm["message_id"] != pm.message_id:
                problems.append(f"{where}: Message-ID {sm['message_id']}, planned {pm.message_id}")
    for name, sf in server.items():
        if name in planned:
            continue
        low = {a.lower() for a in sf["attributes"]}
        # A parent of planned folders: \Noselect on Dovecot and Courier, an empty folder on Cyrus.
        if "\\noselect" in low or "\\nonexistent" in low or sf["exists"] == 0:
            prefix = name + "/"
            if not any(p.startswith(prefix) for p in planned):
                problems.append(f"{name}: unexpected \\Noselect folder")
            continue
        problems.append(f"{name}: on the server but not planned")
    return problems

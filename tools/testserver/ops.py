"""Inspecting and changing mailboxes over IMAP (the plain loopback port),
independently of imapstage's own code."""

import calendar
import hashlib
import re
import secrets
import sys

from . import mutf7
from . import seed as seeding
from .imapclient import Client, IMAPError, Literal, NoResponse, fetch_items, quote_arg, uid_set
from .server import HarnessError, doveadm, load_info

__all__ = ["connect", "summary", "append", "store", "expunge", "create", "delete_folder", "subscribe",
           "bump_uidvalidity", "check_seed", "parse_internaldate"]

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


def connect(d, user):
    """A logged-in connection to DIR's server as `user` (password from server.json)."""
    info = load_info(d)
    if user not in info["users"]:
        raise HarnessError(f"no user {user!r} in {info['dir']} (known: {', '.join(sorted(info['users']))}); "
                           f"use add-user")
    try:
        c = Client(info["host"], info["imap_port"])
    except IMAPError as e:
        raise HarnessError(f"{e} (is the server in {info['dir']} running?)") from None
    try:
        c.login_plain(user, info["users"][user])
    except NoResponse as e:
        c.close()
        raise HarnessError(f"login as {user} failed: {e}") from None
    return c


def _raw(folder):
    """Modified UTF-7 name of a UTF-8 folder name ("INBOX" in any case stays INBOX)."""
    if folder.upper() == "INBOX":
        return "INBOX"
    return mutf7.encode(folder)


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
    c.command(b"ENABLE", b"CONDSTORE")
    subscribed = _subscribed(c)
    folders = []
    for attrs, delim, raw in sorted(_list(c), key=lambda x: x[2]):
        try:
            name = mutf7.decode(raw)
        except ValueError:
            name = raw
        entry = {"name": name, "raw": raw, "delimiter": delim, "attributes": attrs, "subscribed": raw in subscribed,
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
        entry["uidnext"] = int(resp.code_value("UIDNEXT"))
        hms = resp.code_value("HIGHESTMODSEQ")
        entry["highestmodseq"] = int(hms) if hms is not None else None
        entry["exists"] = exists
        messages = {}
        if exists:
            r = c.command(b"UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ "
                          b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
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
                    "message_id": _message_id(it.get("BODY[HEADER.FIELDS (MESSAGE-ID)]")),
                }
        if hashes and messages:
            _hash_bodies(c, raw, messages)
        entry["messages"] = [messages[u] for u in sorted(messages)]
        if len(entry["messages"]) != exists:
            print(f"test-server: warning: {raw}: EXISTS {exists} but {len(messages)} messages fetched", file=sys.stderr)
    return {"folders": folders}


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
    raw = _raw(folder)
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
        return c.command(b"SELECT", quote_arg(_raw(folder)))
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
    r = c.command(b"CREATE", quote_arg(_raw(folder)), check=False)
    created = r.status == "OK"
    if not created and not (r.code and r.code.upper().startswith("ALREADYEXISTS")):
        raise HarnessError(f"CREATE {folder} failed: {r.status} {r.text}")
    if subscribe:
        c.command(b"SUBSCRIBE", quote_arg(_raw(folder)))
    return created


def delete_folder(c, folder):
    r = c.command(b"DELETE", quote_arg(_raw(folder)), check=False)
    if r.status != "OK":
        raise HarnessError(f"DELETE {folder} failed: {r.status} {('[' + r.code + '] ') if r.code else ''}{r.text}")


def subscribe(c, folder, on=True):
    c.command(b"SUBSCRIBE" if on else b"UNSUBSCRIBE", quote_arg(_raw(folder)))


def _uidvalidity(c, folder):
    r = c.command(b"STATUS", quote_arg(_raw(folder)), b"(UIDVALIDITY)")
    for u in r.of_kind("STATUS"):
        items = u.values[1] if len(u.values) > 1 else []
        for i in range(0, len(items) - 1, 2):
            if str(items[i]).upper() == "UIDVALIDITY":
                return int(items[i + 1])
    raise HarnessError(f"STATUS {folder}: no UIDVALIDITY")


def bump_uidvalidity(d, user, folder):
    """Gives the folder a new, larger UIDVALIDITY (doveadm mailbox update); the
    messages, their UIDs and flags stay. Returns (old, new)."""
    with connect(d, user) as c:
        try:
            old = _uidvalidity(c, folder)
        except NoResponse as e:
            raise HarnessError(f"cannot read UIDVALIDITY of {folder}: {e}") from None
    new = old + 1 + secrets.randbelow(1000)
    if new > 0xFFFFFFFF:
        new = 1 + secrets.randbelow(1000)
    doveadm(d, "mailbox", "update", "-u", user, "--uid-validity", str(new), folder)
    with connect(d, user) as c:
        now = _uidvalidity(c, folder)
    if now != new:
        raise HarnessError(f"UIDVALIDITY of {folder} is {now} after the update, expected {new}")
    return old, new


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
    server = {f["name"]: f for f in s["folders"]}
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
        if "\\noselect" in low or "\\nonexistent" in low:
            prefix = name + (sf["delimiter"] or "/")
            if not any(p.startswith(prefix) for p in planned):
                problems.append(f"{name}: unexpected \\Noselect folder")
            continue
        problems.append(f"{name}: on the server but not planned")
    return problems

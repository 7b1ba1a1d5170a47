"""Deterministic sample mail for the test server, written straight into Maildir.

Every message is generated from a `random.Random` seeded with the user name
(or a fixed string for the messages shared between users), so the same user
name always gets byte-identical mail, folders, flags, keywords and dates.

On disk (Dovecot's Maildir++ layout, namespace separator "/"):
- INBOX is the Maildir root, a folder "A/B" is the directory ".A.B" with the
  name in modified UTF-7; parents that have no directory of their own are
  listed by Dovecot as \\Noselect.
- A message file lives in cur/ with LF line endings (as Dovecot stores an
  APPEND), is named "<n>.M<n>P<n>.imapstage,S=<file size>,W=<CRLF size>:2,<flags>",
  and its mtime is the INTERNALDATE. Dovecot assigns UIDs in file-name order,
  which is the order of INTERNALDATE inside each folder.
- Flag letters: D \\Draft, F \\Flagged, R \\Answered, S \\Seen, T \\Deleted;
  keywords are letters a.. indexing the folder's dovecot-keywords file.
- Subscriptions go to the "subscriptions" file (version 2: tab-separated
  hierarchy, modified UTF-7 names).
"""

import base64
import binascii
import calendar
import hashlib
import math
import os
import random
import threading
import time

from . import mutf7

__all__ = ["Message", "Folder", "plan_default", "plan_bench", "plan_small", "plan_for", "write_maildir", "maildir_path"]


class Message:
    __slots__ = ("data", "flags", "keywords", "internaldate", "message_id")

    def __init__(self, data, flags, keywords, internaldate, message_id):
        self.data = data                  # exact bytes the server serves (CRLF line endings)
        self.flags = list(flags)          # system flags, e.g. ["\\Seen"]
        self.keywords = list(keywords)    # e.g. ["$Forwarded"]
        self.internaldate = internaldate  # Unix time (whole seconds)
        self.message_id = message_id      # "<...>" or None

    def all_flags(self):
        return sorted(set(self.flags) | set(self.keywords))


class Folder:
    __slots__ = ("name", "subscribed", "messages")

    def __init__(self, name, subscribed, messages=None):
        self.name = name                  # UTF-8 name with "/" as the hierarchy separator
        self.subscribed = subscribed
        self.messages = messages if messages is not None else []


# --- text material --------------------------------------------------------------

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her all she there would their we him been has when who will more no if out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now such like "
    "our over man me even most made after also did many before must through back years where much your way well "
    "down should because each just those people how too little state good very make world still own see men work "
    "long here get both between life being under never day same another know while last might us great old year "
    "off come since against go came right used take three meeting report budget quarter review draft invoice "
    "schedule project release server migration archive mailbox folder attachment agenda minutes deadline customer "
    "contract proposal estimate shipment delivery ticket support backup network storage account password policy"
).split()

_WORDS_INTL = (
    "Grüße Übersicht Größe Straße Müller Bäckerei Äpfel schön Frühstück Käse München Zürich Köln Bücher "
    "café déjà naïve façade élève garçon Noël crème brûlée résumé piñata año señor mañana niño "
    "Ærø smørrebrød Øresund Åland Łódź Kraków Škoda Žižkov 東京 日本語 メール 会議 报告 邮件 Привет письмо "
    "Ελλάδα καλημέρα שלום مرحبا"
).split()

_FIRST = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
          "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Yves"]
_LAST = ["Smith", "Jones", "Taylor", "Brown", "Wilson", "Evans", "Thomas", "Roberts", "Walker", "Wright"]
_INTL_NAMES = ["Jörg Müller", "Zoë Dupré", "Søren Kierkegård", "Łukasz Żółć", "José Núñez", "François Lefèvre",
               "山田 太郎", "Ангелина Иванова", "Ærlig Ødegård", "Björk Guðmundsdóttir"]
_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.de", "corp.example.fr"]
_SUBJECTS = ["Quarterly report", "Meeting tomorrow", "Re: Budget review", "Invoice #{n}", "Project status update",
             "Fwd: Server migration plan", "Lunch?", "Your ticket {n} has been updated", "Minutes of the last meeting",
             "Backup completed", "Contract draft v{n}", "Release {n}.0 notes", "Schedule for next week",
             "Re: Re: Mailbox quota", "Welcome aboard", "Password policy reminder"]
_SUBJECTS_INTL = ["Grüße aus München", "Réunion : café à 10h", "日本語のテスト件名", "Привет из Москвы",
                  "Übersicht Q{n} – Größenordnung", "Año nuevo, señor", "Ελληνικά θέματα", "Smørrebrød på fredag",
                  "Anhang 📎 für dich", "Zürich → Köln: Fahrplan"]
_TZ = [0, 60, 120, -300, -480, 330, 540, -180, 600, -240, 345, 780]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]

_T_START = calendar.timegm((2005, 1, 1, 0, 0, 0))
_T_END = calendar.timegm((2026, 9, 30, 23, 59, 59))


class _TextPool:
    """Pre-wrapped lines of text to take slices from (cheap bulk text)."""

    def __init__(self, rng, words, lines=6000):
        out = []
        for _ in range(lines):
            line = " ".join(rng.choices(words, k=rng.randint(6, 12)))
            out.append(line[0].upper() + line[1:] + ".")
        self.lines = out

    def text(self, rng, size):
        """About `size` bytes of text lines (at least one line)."""
        n = len(self.lines)
        i = rng.randrange(n)
        out = []
        total = 0
        while total < size or not out:
            line = self.lines[i % n]
            out.append(line)
            total += len(line.encode("utf-8")) + 1
            i += 1
            if rng.random() < 0.12:
                out.append("")
                total += 1
        return "\n".join(out) + "\n"


_POOLS = {}
_POOLS_LOCK = threading.Lock()


def _pools():
    """The two text pools, made once (accounts are seeded from several threads)."""
    with _POOLS_LOCK:
        if not _POOLS:
            rng = random.Random("imapstage-text-pool-v1")
            ascii_pool = _TextPool(rng, _WORDS)
            intl_pool = _TextPool(rng, _WORDS + _WORDS_INTL * 3, lines=1500)
            _POOLS["ascii"], _POOLS["intl"] = ascii_pool, intl_pool
    return _POOLS["ascii"], _POOLS["intl"]


# --- header encoding ------------------------------------------------------------

def _encoded_words(text, rng, charset="UTF-8"):
    """RFC 2047 encoded words (each at most 75 characters), B or Q chosen by `rng`."""
    if rng.random() < 0.5:
        # B encoding: split on character boundaries so each word decodes alone.
        words = []
        chunk = ""
        for ch in text:
            if len(base64.b64encode((chunk + ch).encode(charset))) > 75 - len(charset) - 7:
                words.append(chunk)
                chunk = ch
            else:
                chunk += ch
        if chunk:
            words.append(chunk)
        return " ".join(f"=?{charset}?B?{base64.b64encode(w.encode(charset)).decode()}?=" for w in words)
    words = []
    cur = ""
    for ch in text:
        b = ch.encode(charset)
        if ch == " ":
            enc = "_"
        elif ch.isascii() and (ch.isalnum() or ch in "!*+-/"):
            enc = ch
        else:
            enc = "".join(f"={c:02X}" for c in b)
        if len(cur) + len(enc) > 75 - len(charset) - 7:
            words.append(cur)
            cur = ""
        cur += enc
    if cur:
        words.append(cur)
    return " ".join(f"=?{charset}?Q?{w}?=" for w in words)


def _address(rng, intl_ratio=0.25):
    if rng.random() < intl_ratio:
        name = rng.choice(_INTL_NAMES)
        local = "user%d" % rng.randrange(1000)
        charset = "ISO-8859-1"
        try:
            name.encode(charset)
        except UnicodeEncodeError:
            charset = "UTF-8"
        return f"{_encoded_words(name, rng, charset)} <{local}@{rng.choice(_DOMAINS)}>"
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    addr = f"{first.lower()}.{last.lower()}@{rng.choice(_DOMAINS)}"
    return f'"{first} {last}" <{addr}>' if rng.random() < 0.5 else f"{first} {last} <{addr}>"


def _subject(rng, intl_ratio=0.3):
    n = rng.randrange(1, 999)
    if rng.random() < intl_ratio:
        return _encoded_words(rng.choice(_SUBJECTS_INTL).format(n=n), rng)
    return rng.choice(_SUBJECTS).format(n=n)


def _rfc5322_date(t, tz_minutes):
    local = t + tz_minutes * 60
    tm = time.gmtime(local)
    sign = "+" if tz_minutes >= 0 else "-"
    off = abs(tz_minutes)
    return (f"{_DAYS[tm.tm_wday]}, {tm.tm_mday} {_MONTHS[tm.tm_mon - 1]} {tm.tm_year} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {sign}{off // 60:02d}{off % 60:02d}")


def _b64_lines(data):
    enc = base64.b64encode(data)
    return "\n".join(enc[i:i + 76].decode("ascii") for i in range(0, len(enc), 76)) + "\n"


def _qp(text):
    return binascii.b2a_qp(text.encode("utf-8")).decode("ascii")


def _boundary(rng):
    return "=_imapstage_%016x" % rng.getrandbits(64)


# --- message bodies --------------------------------------------------------------

_ATTACHMENTS = [("application/pdf", "report.pdf"), ("image/jpeg", "photo.jpg"), ("image/png", "diagram.png"),
                ("application/zip", "files.zip"), ("application/octet-stream", "data.bin"),
                ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "budget.xlsx")]
_INTL_FILENAMES = ["Übersicht.pdf", "café menu.pdf", "報告書.pdf", "Größe & Maße.xlsx"]


def _text_part(rng, size, intl):
    ascii_pool, intl_pool = _pools()
    if intl:
        text = intl_pool.text(rng, size)
        if rng.random() < 0.5:
            return "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" + _qp(text)
        return "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + text
    text = ascii_pool.text(rng, size)
    return "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n" + text


def _html_part(rng, size, intl):
    ascii_pool, intl_pool = _pools()
    pool = intl_pool if intl else ascii_pool
    paras = pool.text(rng, size).split("\n\n")
    html = "<html><head><meta charset=\"utf-8\"></head><body>\n" + "\n".join(
        "<p>" + p.replace("\n", "<br>\n") + "</p>" for p in paras if p.strip()) + "\n</body></html>\n"
    return "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" + _qp(html)


def _attachment_part(rng, raw_size):
    ctype, fname = rng.choice(_ATTACHMENTS)
    if rng.random() < 0.25:
        name = rng.choice(_INTL_FILENAMES)
        quoted = "".join(c if c.isascii() and (c.isalnum() or c in ".-_") else
                         "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in name)
        disp = f"attachment; filename*=UTF-8''{quoted}"
        ct = f"{ctype}; name=\"{_encoded_words(name, rng)}\""
    else:
        disp = f"attachment; filename=\"{fname}\""
        ct = f"{ctype}; name=\"{fname}\""
    return (f"Content-Type: {ct}\nContent-Disposition: {disp}\nContent-Transfer-Encoding: base64\n\n"
            + _b64_lines(rng.randbytes(raw_size)))


def _multipart(rng, subtype, parts):
    b = _boundary(rng)
    body = "".join(f"--{b}\n{p}\n" for p in parts) + f"--{b}--\n"
    return f"Content-Type: multipart/{subtype}; boundary=\"{b}\"\n", "This is a multi-part message in MIME format.\n\n" + body


class _Builder:
    """Builds messages for one random stream."""

    def __init__(self, rng, id_prefix, id_domain):
        self.rng = rng
        self.id_prefix = id_prefix
        self.id_domain = id_domain
        self.count = 0

    def message(self, kind, size, when, to_addr, message_id=True, intl=None, extra_headers=""):
        """A message of `kind` (plain, alternative, mixed, forward) about `size`
        bytes; returns (CRLF bytes, Message-ID or None)."""
        rng = self.rng
        self.count += 1
        if intl is None:
            intl = rng.random() < 0.3
        tz = rng.choice(_TZ)
        sent = when - rng.randint(5, 900)
        mid = f"<{self.id_prefix}.{self.count}.{rng.getrandbits(40):010x}@{self.id_domain}>" if message_id else None
        headers = [f"Return-Path: <bounce-{rng.randrange(10000)}@{rng.choice(_DOMAINS)}>",
                   f"Received: from mx{rng.randrange(1, 9)}.{rng.choice(_DOMAINS)} (mx.example [192.0.2.{rng.randrange(1, 255)}])\n"
                   f"\tby mail.example.test with ESMTPS id {rng.getrandbits(48):012x}\n"
                   f"\tfor {to_addr}; {_rfc5322_date(when, tz)}",
                   f"Date: {_rfc5322_date(sent, tz)}",
                   f"From: {_address(rng)}",
                   f"To: {to_addr}"]
        if rng.random() < 0.3:
            headers.append(f"Cc: {_address(rng)}, {_address(rng)}")
        headers.append(f"Subject: {_subject(rng, 0.45 if intl else 0.15)}")
        if mid:
            headers.append(f"Message-ID: {mid}")
        if rng.random() < 0.25:
            ref = f"<{rng.getrandbits(64):016x}@{rng.choice(_DOMAINS)}>"
            headers.append(f"In-Reply-To: {ref}\nReferences: {ref}")
        headers.append("MIME-Version: 1.0")
        if rng.random() < 0.5:
            headers.append(f"X-Mailer: {rng.choice(['Thunderbird 115.3', 'Apple Mail (2.3731)', 'Outlook 16.0', 'mutt 2.2'])}")
        if extra_headers:
            headers.append(extra_headers.rstrip("\n"))

        if kind == "plain":
            part = _text_part(rng, max(100, size - 900), intl)
            ct, _, body = part.partition("\n\n")
            text = "\n".join(headers) + "\n" + ct + "\n\n" + body
        elif kind == "alternative":
            n = max(200, size - 1200)
            ct, body = _multipart(rng, "alternative", [_text_part(rng, n * 2 // 5, intl), _html_part(rng, n * 2 // 5, intl)])
            text = "\n".join(headers) + "\n" + ct + "\n" + body
        elif kind == "mixed":
            text_size = min(max(200, size // 20), 6000)
            att = max(0, size - text_size - 1500)
            parts = [_text_part(rng, text_size, intl)]
            remaining = att * 3 // 4
            while remaining > 0:
                chunk = remaining if remaining < 400_000 or rng.random() < 0.6 else remaining // 2
                parts.append(_attachment_part(rng, chunk))
                remaining -= chunk
            ct, body = _multipart(rng, "mixed", parts)
            text = "\n".join(headers) + "\n" + ct + "\n" + body
        elif kind == "forward":
            inner, _ = self.message("plain", max(400, size // 2), sent - rng.randint(3600, 86400 * 30), to_addr, intl=intl)
            inner_text = inner.decode("utf-8").replace("\r\n", "\n")
            parts = [_text_part(rng, max(100, size // 4), intl),
                     "Content-Type: message/rfc822\nContent-Disposition: inline\n\n" + inner_text]
            ct, body = _multipart(rng, "mixed", parts)
            text = "\n".join(headers) + "\n" + ct + "\n" + body
        else:
            raise ValueError(kind)
        return text.replace("\n", "\r\n").encode("utf-8"), mid


def _kind(rng, size):
    if size > 60_000:
        return "mixed"
    r = rng.random()
    if r < 0.5:
        return "plain"
    if r < 0.8:
        return "alternative"
    if r < 0.9:
        return "forward"
    return "mixed"


def _random_time(rng):
    return rng.randint(_T_START, _T_END)


# --- the default seed -----------------------------------------------------------

# (name, subscribed, typical message count)
DEFAULT_FOLDERS = [
    ("INBOX", True, 60),
    ("Sent", True, 30),
    ("Drafts", True, 5),
    ("Trash", True, 12),
    ("Junk", False, 10),
    ("Archive", True, 20),
    ("Archive/2019", True, 15),
    ("Projects/2024/Q1", True, 12),
    ("Projects/2024/Q2", False, 8),
    ("Projekte/Übersicht", True, 8),
    ("日本語", True, 6),
    ("Café & Co", False, 6),
    ("Empty Folder", False, 0),
]


def _shared_messages():
    """Byte-identical messages every default-seeded user has (in INBOX and Archive)."""
    rng = random.Random("imapstage-shared-messages-v1")
    b = _Builder(rng, "shared", "lists.example.org")
    out = []
    for i, (kind, size) in enumerate([("plain", 1500), ("alternative", 6000), ("mixed", 120_000),
                                      ("plain", 800), ("forward", 4000)]):
        when = _random_time(rng)
        data, mid = b.message(kind, size, when, "team@lists.example.org")
        out.append((data, mid, when))
    return out


def _flags_for(rng, folder):
    flags, kws = [], []
    if folder in ("Sent", "Archive", "Archive/2019"):
        flags.append("\\Seen")
    elif folder == "Drafts":
        flags.append("\\Draft")
        if rng.random() < 0.5:
            flags.append("\\Seen")
    elif folder == "Trash":
        flags.append("\\Seen")
        if rng.random() < 0.4:
            flags.append("\\Deleted")
    elif folder == "Junk":
        kws.append("$Junk")
        if rng.random() < 0.5:
            flags.append("\\Seen")
    elif rng.random() < 0.75:
        flags.append("\\Seen")
    if folder not in ("Drafts", "Junk"):
        if rng.random() < 0.15:
            flags.append("\\Answered")
        if rng.random() < 0.1:
            flags.append("\\Flagged")
        if folder == "INBOX" and rng.random() < 0.03:
            flags.append("\\Deleted")
        if rng.random() < 0.06:
            kws.append("$Forwarded")
        if rng.random() < 0.06:
            kws.append("$Label1")
        if folder == "INBOX" and rng.random() < 0.05:
            kws.append("$NotJunk")
        if folder.startswith("Projects/") and rng.random() < 0.5:
            kws.append("Project_X")
    return sorted(set(flags)), sorted(set(kws))


def plan_default(user):
    """The default mail of `user`: list of Folder, deterministic for the name."""
    rng = random.Random(f"imapstage-default-v1:{user}")
    b = _Builder(rng, hashlib.sha256(user.encode()).hexdigest()[:8], "mail.example.test")
    to_addr = f"{user}@example.test"
    folders = []
    for name, subscribed, count in DEFAULT_FOLDERS:
        n = count if count == 0 else count + rng.randint(-count // 5, count // 5)
        f = Folder(name, subscribed)
        for _ in range(n):
            r = rng.random()
            if r < 0.55:
                size = rng.randint(500, 4000)
            elif r < 0.82:
                size = rng.randint(4000, 30_000)
            elif r < 0.96:
                size = rng.randint(30_000, 150_000)
            else:
                size = rng.randint(150_000, 700_000)
            when = _random_time(rng)
            kind = _kind(rng, size)
            data, mid = b.message(kind, size, when, to_addr, message_id=not (name == "Drafts" and not f.messages))
            flags, kws = _flags_for(rng, name)
            f.messages.append(Message(data, flags, kws, when, mid))
        folders.append(f)
    by_name = {f.name: f for f in folders}

    # Fixed features every user has.
    inbox = by_name["INBOX"]
    big_when = _random_time(rng)
    data, mid = b.message("mixed", 3_400_000 + rng.randrange(200_000), big_when, to_addr)
    inbox.messages.append(Message(data, ["\\Seen"], [], big_when, mid))
    for name, size in (("Sent", 1_600_000), ("Archive", 900_000)):
        when = _random_time(rng)
        data, mid = b.message("mixed", size + rng.randrange(100_000), when, to_addr)
        by_name[name].messages.append(Message(data, ["\\Seen"], [], when, mid))
    inbox.messages[0].flags = sorted(set(inbox.messages[0].flags) | {"\\Answered"})
    inbox.messages[0].keywords = sorted(set(inbox.messages[0].keywords) | {"$Forwarded"})
    inbox.messages[1].flags = sorted(set(inbox.messages[1].flags) | {"\\Flagged"})
    inbox.messages[1].keywords = sorted(set(inbox.messages[1].keywords) | {"$Label1"})
    inbox.messages[2].keywords = sorted(set(inbox.messages[2].keywords) | {"$NotJunk"})
    q1 = by_name["Projects/2024/Q1"]
    q1.messages[0].keywords = sorted(set(q1.messages[0].keywords) | {"Project_X"})

    # Identical bytes in several folders: shared with every user, and copies inside this account.
    for data, mid, when in _shared_messages():
        for name in ("INBOX", "Archive"):
            flags, kws = _flags_for(rng, name)
            by_name[name].messages.append(Message(data, flags, kws, when, mid))
    for src, dst in (("INBOX", "Projects/2024/Q1"), ("INBOX", "Projects/2024/Q1"), ("Trash", "Archive/2019")):
        m = rng.choice(by_name[src].messages[3:] if src == "INBOX" else by_name[src].messages)
        flags, kws = _flags_for(rng, dst)
        by_name[dst].messages.append(Message(m.data, flags, kws, m.internaldate, m.message_id))

    for f in folders:
        f.messages.sort(key=lambda m: m.internaldate)
    return folders


# --- the benchmark seed ---------------------------------------------------------

BENCH_FOLDERS = [("INBOX", True, 30), ("Sent", True, 12), ("Archive", True, 10), ("Archive/2020", True, 10),
                 ("Archive/2021", True, 10), ("Lists/dev", True, 10), ("Lists/announce", False, 5),
                 ("Projects", True, 6), ("Trash", True, 4), ("Drafts", True, 3)]


def plan_bench(user, n):
    """`n` messages of realistic sizes (log-normal around 20 KB, a few MB at most)
    over ten folders."""
    rng = random.Random(f"imapstage-bench-v1:{user}:{n}")
    b = _Builder(rng, "bench-" + hashlib.sha256(user.encode()).hexdigest()[:8], "bench.example.test")
    to_addr = f"{user}@example.test"
    names = [f[0] for f in BENCH_FOLDERS]
    weights = [f[2] for f in BENCH_FOLDERS]
    folders = {name: Folder(name, sub) for name, sub, _ in BENCH_FOLDERS}
    mu = math.log(20_000)
    for _ in range(n):
        name = rng.choices(names, weights)[0]
        size = int(min(6_000_000, max(400, rng.lognormvariate(mu, 1.2))))
        when = _random_time(rng)
        data, mid = b.message(_kind(rng, size), size, when, to_addr)
        flags, kws = _flags_for(rng, name if name in ("Sent", "Trash", "Drafts") else "INBOX")
        folders[name].messages.append(Message(data, flags, kws, when, mid))
    out = [folders[name] for name in names]
    for f in out:
        f.messages.sort(key=lambda m: m.internaldate)
    return out


SMALL_FOLDERS = ["INBOX", "Sent", "Drafts", "Trash", "Junk"] + ["Archive/%d" % y for y in range(2012, 2027)]


def plan_small(user, n):
    """`n` small messages (1-3 KB, the bulk of real mailboxes) over twenty folders,
    INBOX holding a quarter of them."""
    rng = random.Random(f"imapstage-small-v1:{user}:{n}")
    b = _Builder(rng, "small-" + hashlib.sha256(user.encode()).hexdigest()[:8], "small.example.test")
    to_addr = f"{user}@example.test"
    weights = [25] + [75 / (len(SMALL_FOLDERS) - 1)] * (len(SMALL_FOLDERS) - 1)
    folders = {name: Folder(name, True) for name in SMALL_FOLDERS}
    for _ in range(n):
        name = rng.choices(SMALL_FOLDERS, weights)[0]
        size = rng.randint(1000, 3000)
        when = _random_time(rng)
        data, mid = b.message("plain", size, when, to_addr)
        flags, kws = _flags_for(rng, name if name in ("Sent", "Trash", "Drafts") else "INBOX")
        folders[name].messages.append(Message(data, flags, kws, when, mid))
    out = [folders[name] for name in SMALL_FOLDERS]
    for f in out:
        f.messages.sort(key=lambda m: m.internaldate)
    return out


def plan_for(user, seed):
    """The plan for a seed spec ("default", "bench:N", "small:N", "none")."""
    if seed == "default":
        return plan_default(user)
    if seed.startswith("bench:"):
        return plan_bench(user, int(seed.split(":", 1)[1]))
    if seed.startswith("small:"):
        return plan_small(user, int(seed.split(":", 1)[1]))
    if seed in ("none", "empty"):
        return []
    raise ValueError(f"unknown seed {seed!r}")


# --- writing Maildir --------------------------------------------------------------

_FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}


def maildir_path(maildir, name):
    """Directory of folder `name` (UTF-8, "/"-separated) inside the Maildir root."""
    if name.upper() == "INBOX":
        return maildir
    raw = mutf7.encode(name)
    if "." in raw or raw.startswith("/") or raw.endswith("/") or "//" in raw:
        raise ValueError(f"folder name not usable in Maildir++: {name!r}")
    return os.path.join(maildir, "." + raw.replace("/", "."))


def _mkdir(path, owner):
    os.makedirs(path, mode=0o700, exist_ok=True)
    if owner:
        os.chown(path, *owner)


def _write_file(path, data, owner, mtime=None):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if owner:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def make_maildir(maildir, owner=None):
    """An empty Maildir root (cur/new/tmp)."""
    _mkdir(maildir, owner)
    for sub in ("cur", "new", "tmp"):
        _mkdir(os.path.join(maildir, sub), owner)


def write_maildir(maildir, folders, owner=None):
    """Writes the folders and messages of a plan into a fresh Maildir root.
    `owner` is (uid, gid) for the files, or None to keep the current user."""
    make_maildir(maildir, owner)
    seq = 0
    for f in folders:
        path = maildir_path(maildir, f.name)
        if path != maildir:
            make_maildir(path, owner)
            _write_file(os.path.join(path, "maildirfolder"), b"", owner)
        keywords = []
        for m in f.messages:
            for k in m.keywords:
                if k not in keywords:
                    keywords.append(k)
        if len(keywords) > 26:
            raise ValueError(f"more than 26 keywords in {f.name!r}")
        if keywords:
            _write_file(os.path.join(path, "dovecot-keywords"),
                        "".join(f"{i} {k}\n" for i, k in enumerate(keywords)).encode(), owner)
        cur = os.path.join(path, "cur")
        for i, m in enumerate(f.messages):
            seq += 1
            lf = m.data.replace(b"\r\n", b"\n")
            letters = "".join(sorted([_FLAG_LETTERS[x] for x in m.flags] +
                                     [chr(ord("a") + keywords.index(k)) for k in m.keywords]))
            fname = f"{1_000_000_000 + i}.M{seq}P1.imapstage,S={len(lf)},W={len(m.data)}:2,{letters}"
            _write_file(os.path.join(cur, fname), lf, owner, m.internaldate)
    subs = [f.name for f in folders if f.subscribed]
    if subs:
        body = "V\t2\n\n" + "".join(mutf7.encode(s).replace("/", "\t") + "\n" for s in subs)
        _write_file(os.path.join(maildir, "subscriptions"), body.encode("ascii"), owner)

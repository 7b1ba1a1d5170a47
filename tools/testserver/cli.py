"""Command line of tools/test-server."""

import argparse
import json
import os
import re
import sys
import time

from . import ops
from . import server
from .imapclient import IMAPError
from .server import HarnessError

DESCRIPTION = """\
A private IMAP server (Dovecot, Cyrus or Courier) on free loopback ports for
imapstage's tests. Everything (config, certificates, passwords, mail, logs)
lives in DIR; nothing under /etc/dovecot or /etc/cyrus is read (Courier's
accounts are the exception: see start --help). The helpers that inspect or change mail log in as
the user over the plain port with the harness's own IMAP client.

Folder names are given in UTF-8 with "/" as the hierarchy separator (the
harness encodes them to modified UTF-7). Exit status: 0 done, 1 failure (the
reason on stderr), 2 bad command line."""

EPILOG = """\
commands:
  start DIR [--kind dovecot|cyrus|courier] [--seed default|none|bench:N] [--users a,b] [--target-users x,y]
            [--alt-special-use [de|outlook]] [--append-limit BYTES] [--timeout S] [--timing]
            [--login-hook CMD] [--post-login CMD] [--trust-loopback] [--oauth2-introspection URL]
  stop DIR
  info DIR
  add-user DIR NAME [PASSWORD] [--seed default|none|bench:N] [--empty]
  summary DIR USER [--no-hash]
  append DIR USER FOLDER FILE [--flags "\\Seen $X"] [--date "DD-Mon-YYYY HH:MM:SS +ZZZZ"]
  store DIR USER FOLDER UID (+FLAGS|-FLAGS|FLAGS) "FLAGS..."
  expunge DIR USER FOLDER UID...
  create DIR USER FOLDER [--subscribe]
  delete-folder DIR USER FOLDER
  subscribe DIR USER FOLDER / unsubscribe DIR USER FOLDER
  bump-uidvalidity DIR USER FOLDER
  check-seed DIR [USER...]
  setacl DIR OWNER FOLDER GRANTEE RIGHTS                      (Cyrus)
  create-shared DIR FOLDER [--grant a,b] [--rights R] [--message FILE]  (Cyrus)
Run "test-server COMMAND --help" for details."""


def _users(text):
    return [u.strip() for u in text.split(",") if u.strip()]


def _out(text):
    """Writes UTF-8 to stdout whatever the locale."""
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8") + b"\n")
    sys.stdout.buffer.flush()


def _print_json(obj, pretty=None):
    if pretty is None:
        pretty = sys.stdout.isatty()
    if pretty:
        _out(json.dumps(obj, indent=2, ensure_ascii=False))
    else:
        _out(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


def cmd_start(a):
    info = server.start(a.dir, seed=a.seed, users=_users(a.users), target_users=_users(a.target_users),
                        timeout=a.timeout, alt_special_use=a.alt_special_use, append_limit=a.append_limit,
                        verbose=a.timing, kind=a.kind, altnamespace=a.altnamespace,
                        unixhierarchysep=a.unixhierarchysep, login_hook=a.login_hook,
                        trust_loopback=a.trust_loopback, post_login=a.post_login,
                        oauth2_introspection=a.oauth2_introspection)
    _print_json(info, pretty=True)


def cmd_stop(a):
    t0 = time.monotonic()
    n = server.stop(a.dir)
    if a.timing:
        print(f"stopped {n} processes in {time.monotonic() - t0:.3f}s", file=sys.stderr)


def cmd_info(a):
    _print_json(server.load_info(a.dir), pretty=True)


def cmd_add_user(a):
    print(server.add_user(a.dir, a.name, a.password, "none" if a.empty else a.seed))


def cmd_summary(a):
    with ops.connect(a.dir, a.user) as c:
        _print_json(ops.summary(c, hashes=not a.no_hash))


def cmd_append(a):
    if a.file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(a.file, "rb") as f:
                data = f.read()
        except OSError as e:
            raise HarnessError(f"cannot read {a.file}: {e.strerror}") from None
    with ops.connect(a.dir, a.user) as c:
        print(ops.append(c, a.folder, data, a.flags or "", a.date))


def cmd_store(a):
    with ops.connect(a.dir, a.user) as c:
        print(" ".join(ops.store(c, a.folder, a.uid, a.op, a.flags)))


def cmd_expunge(a):
    with ops.connect(a.dir, a.user) as c:
        print(" ".join(str(u) for u in ops.expunge(c, a.folder, a.uids)))


def cmd_create(a):
    with ops.connect(a.dir, a.user) as c:
        print("created" if ops.create(c, a.folder, a.subscribe) else "exists")


def cmd_delete_folder(a):
    with ops.connect(a.dir, a.user) as c:
        ops.delete_folder(c, a.folder)


def cmd_subscribe(a):
    with ops.connect(a.dir, a.user) as c:
        ops.subscribe(c, a.folder, True)


def cmd_unsubscribe(a):
    with ops.connect(a.dir, a.user) as c:
        ops.subscribe(c, a.folder, False)


def cmd_bump_uidvalidity(a):
    old, new = ops.bump_uidvalidity(a.dir, a.user, a.folder)
    print(f"{old} {new}")


def cmd_setacl(a):
    from . import others
    print(others.setacl(a.dir, a.owner, a.folder, a.grantee, a.rights))


def cmd_create_shared(a):
    from . import others
    data = None
    if a.message:
        try:
            with open(a.message, "rb") as f:
                data = f.read()
        except OSError as e:
            raise HarnessError(f"cannot read {a.message}: {e.strerror}") from None
    name, uid = others.create_shared(a.dir, a.folder, _users(a.grant), a.rights, data, a.flags or "", a.date)
    _print_json({"mailbox": name, "uid": uid})


def cmd_check_seed(a):
    info = server.load_info(a.dir)
    users = a.users or sorted(info["users"])
    failed = False
    for u in users:
        problems = ops.check_seed(a.dir, u)
        if problems:
            failed = True
            print(f"{u}: {len(problems)} differences", file=sys.stderr)
            for p in problems[:50]:
                print(f"  {p}", file=sys.stderr)
        else:
            print(f"{u}: matches its seed ({info.get('seeded', {}).get(u, 'none')})")
    if failed:
        raise HarnessError("the server does not hold the planned mail")


def _parser():
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="test-server", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("start", formatter_class=fmt, help="create DIR and start a seeded server",
                       description="""\
Creates DIR (it must not exist or be empty), a CA and a server certificate
(SAN DNS:localhost, IP:127.0.0.1), the configuration, accounts with random
passwords and their mail; starts the server (--kind: Dovecot, Cyrus IMAP 3.6
or Courier-IMAP 5.0) on two free loopback ports (plain with STARTTLS, and
implicit TLS), waits until both answer, and prints DIR/server.json:
  {"kind", "host", "imap_port", "imaps_port", "pop3_port", "pop3s_port", "ca_file",
   "users": {name: password}, "logins": {name: login name},
   "personal_namespace": {"prefix", "separator"},
   "namespaces": {"personal"|"other"|"shared": [{"prefix", "separator"}]},
   "special_use", "rewrites": {"header_8bit", "bare_cr", "bare_lf", "nul",
   "missing_final_crlf"}, "master_user", "master_password",
   "master_separator", "admin_user", "admin_password", "dir", "pid",
   "instance", "config", "log", "seed", "seeded", "target_users",
   "append_limit"}
Dovecot also serves POP3 (plain with STLS, and implicit TLS) on two more
ports when dovecot-pop3d is installed ("pop3_port"/"pop3s_port" null otherwise).
Folder names given to the other commands are logical (UTF-8, "/" between
levels) and are placed in the server's personal namespace: "Projects/2024" is
Projects/2024 on Dovecot and INBOX.Projects.2024 on Cyrus and Courier.

Dovecot: log in as another user with USER*admin and the master password, or
SASL PLAIN with authzid USER and authcid admin. Mail is written straight into
Maildir; prefix "" and separator "/".
Cyrus: runs from $IMAPSTAGE_SERVERS_ROOT (tools/setup unpacks it there);
"admin" is the administrator (admin_user/admin_password; setacl and
create-shared use it); personal folders under "INBOX." with ".", other users
under "user.", shared folders at the top (--altnamespace and
--unixhierarchysep change that). Intermediate folders are real, empty folders.
Courier: needs root: accounts go through courier-authdaemon (the global
/etc/courier userdb, one file per instance, removed by stop), so login names
carry the instance token ("alice.1a2b3c4d", see "logins"). No SPECIAL-USE, no
CONDSTORE; AUTH=PLAIN only after STARTTLS (LOGIN works everywhere); a failed
login costs 5 s.
Cyrus and Courier get their mail over IMAP (APPEND with flags, keywords and
INTERNALDATE, in the same UID order as Dovecot's), so every kind holds the
same logical folders and messages.

Seeds (deterministic for a given user name):
  default  every --users account gets ~200 messages (~15 MB): special-use,
           nested, non-ASCII and \\Noselect-parent folders, flags, keywords,
           dates 2005-2026, a message over 3 MB, identical messages in
           several folders and accounts
  bench:N  account "bench" gets N messages of log-normal sizes (median
           ~20 KB, up to 6 MB) over ten folders; --users get the default mail
  none     no mail
--target-users accounts are always empty (with --alt-special-use de they hold
empty Gesendet, Entwürfe, Papierkorb; with outlook: Sent Items, Deleted Items).""")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--seed", default="default", help="default, none or bench:N (default: default)")
    s.add_argument("--users", default="alice,bob", help="comma-separated seeded accounts (default: alice,bob)")
    s.add_argument("--target-users", default="", help="comma-separated empty accounts")
    s.add_argument("--alt-special-use", nargs="?", const="de", default=None, metavar="STYLE",
                   help="pre-create alternative special-use folders in the target accounts (de or outlook)")
    s.add_argument("--append-limit", type=int, default=server.DEFAULT_APPEND_LIMIT, metavar="BYTES",
                   help="largest message APPEND accepts, advertised as APPENDLIMIT (default 64 MiB; "
                        "0: no limit, not advertised)")
    s.add_argument("--kind", default="dovecot", choices=server.KINDS,
                   help="the server: dovecot (default), cyrus or courier")
    s.add_argument("--altnamespace", action="store_true",
                   help="Cyrus: personal folders beside INBOX, not under it (altnamespace: yes)")
    s.add_argument("--unixhierarchysep", action="store_true",
                   help='Cyrus: "/" as the hierarchy separator (unixhierarchysep: yes)')
    s.add_argument("--login-hook", default=None, metavar="CMD",
                   help="Dovecot: a checkpassword passdb running CMD (e.g. \"/usr/bin/imapstage login-hook --config "
                        "F\") after the accounts' own passdb")
    s.add_argument("--post-login", default=None, metavar="CMD",
                   help="Dovecot: run CMD after each IMAP login (script-login; e.g. \"/usr/bin/imapstage "
                        "login-trigger --config F\")")
    s.add_argument("--trust-loopback", action="store_true",
                   help="Dovecot: login_trusted_networks = 127.0.0.0/8 (a client may send x-originating-ip) and "
                        "imap_id_log = *")
    s.add_argument("--oauth2-introspection", default=None, metavar="URL",
                   help="Dovecot: an oauth2 passdb for XOAUTH2 and OAUTHBEARER logins that POSTs the token to this "
                        "introspection URL (RFC 7662: active = true and username = the login)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the ports (default 10)")
    s.add_argument("--timing", action="store_true", help="print how long each step took on stderr")
    s.set_defaults(func=cmd_start)

    s = sub.add_parser("stop", help="stop the server of DIR",
                       description="Stops the server of DIR: SIGTERM to the master and every process of its "
                                   "session, SIGKILL to what is left after 5 s; returns when none is left "
                                   "(zombies waiting for init don't count). Doing nothing is not an error. "
                                   "DIR is kept.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--timing", action="store_true", help="print how long it took on stderr")
    s.set_defaults(func=cmd_stop)

    s = sub.add_parser("info", help="print DIR/server.json", description="Prints DIR/server.json.")
    s.add_argument("dir", metavar="DIR")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("add-user", help="add an account",
                       description="Adds an account, empty unless --seed is given, and prints its password "
                                   "(random unless PASSWORD is given); Dovecot accepts it at once. For an "
                                   "existing account, prints its password, or sets PASSWORD if given (mail "
                                   "stays as it is).")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("name", metavar="NAME", help="lower-case letters, digits and . _ @ + -")
    s.add_argument("password", metavar="PASSWORD", nargs="?")
    s.add_argument("--seed", default="none", help="mail for a new account: none (default), default, bench:N or small:N (N messages of 1-3 KB over twenty folders)")
    s.add_argument("--empty", action="store_true", help="no mail (the default; same as --seed none)")
    s.set_defaults(func=cmd_add_user)

    s = sub.add_parser("summary", formatter_class=fmt, help="JSON description of an account",
                       description="""\
Prints every folder and message of USER as JSON, read-only (EXAMINE,
BODY.PEEK): {"personal_namespace": {"prefix", "separator"},
"folders": [{"name" (UTF-8), "raw" (modified UTF-7), "canonical" (the
logical name: personal prefix removed, levels joined with "/"; other users'
and shared folders keep their prefix), "namespace" (personal, other or
shared), "delimiter",
"attributes", "subscribed", "uidvalidity", "uidnext", "highestmodseq",
"exists", "messages": [{"uid", "flags" (sorted, without \\Recent),
"internaldate", "internaldate_unix", "size", "modseq", "sha256" (of the
BODY[] bytes as sent), "message_id"}]}]}. modseq and highestmodseq are null
without CONDSTORE (Courier). Folders are sorted by raw name,
messages by UID; \\Noselect folders have null counters and "messages": null,
and so does a listed folder that EXAMINE refuses (with "error": the reply).""")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("user", metavar="USER")
    s.add_argument("--no-hash", action="store_true", help="skip fetching bodies (no sha256)")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("append", help="APPEND a message file, print its UID",
                       description="APPENDs the exact bytes of FILE (- for stdin) to FOLDER, creating the folder "
                                   "if needed, and prints the new UID.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("user", metavar="USER")
    s.add_argument("folder", metavar="FOLDER")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--flags", default="", help='space-separated flags and keywords, e.g. "\\Seen $Label1"')
    s.add_argument("--date", default=None, help='INTERNALDATE, "DD-Mon-YYYY HH:MM:SS +ZZZZ"')
    s.set_defaults(func=cmd_append)

    s = sub.add_parser("store", help="change the flags of one message",
                       description="UID STORE on one message; OP is +FLAGS, -FLAGS or FLAGS (-FLAGS needs no "
                                   "\"--\" before it). Prints the message's flags afterwards.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("user", metavar="USER")
    s.add_argument("folder", metavar="FOLDER")
    s.add_argument("uid", metavar="UID", type=int)
    s.add_argument("op", metavar="OP")
    s.add_argument("flags", metavar="FLAGS")
    s.set_defaults(func=cmd_store)

    s = sub.add_parser("expunge", help="expunge messages by UID",
                       description="Sets \\Deleted on the given UIDs and UID EXPUNGEs exactly them; fails without "
                                   "changing anything if one of them does not exist. Prints the UIDs.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("user", metavar="USER")
    s.add_argument("folder", metavar="FOLDER")
    s.add_argument("uids", metavar="UID", type=int, nargs="+")
    s.set_defaults(func=cmd_expunge)

    s = sub.add_parser("create", help="create a folder",
                       description='Creates FOLDER; prints "created", or "exists" if it was there already.')
    s.add_argument("dir", metavar="DIR")
    s.add_argument("user", metavar="USER")
    s.add_argument("folder", metavar="FOLDER")
    s.add_argument("--subscribe", action="store_true", help="also subscribe to it")
    s.set_defaults(func=cmd_create)

    s = sub.add_parser("delete-folder", help="delete a folder", description="Deletes FOLDER (IMAP DELETE).")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("user", metavar="USER")
    s.add_argument("folder", metavar="FOLDER")
    s.set_defaults(func=cmd_delete_folder)

    for name, func, text in (("subscribe", cmd_subscribe, "SUBSCRIBE to"), ("unsubscribe", cmd_unsubscribe,
                                                                          "UNSUBSCRIBE from")):
        s = sub.add_parser(name, help=f"{text} a folder", description=f"{text} FOLDER.")
        s.add_argument("dir", metavar="DIR")
        s.add_argument("user", metavar="USER")
        s.add_argument("folder", metavar="FOLDER")
        s.set_defaults(func=func)

    s = sub.add_parser("bump-uidvalidity", help="give a folder a new UIDVALIDITY",
                       description="Sets a new, larger UIDVALIDITY on FOLDER: Dovecot with `doveadm mailbox update "
                                   "--uid-validity` (works for INBOX too, safe while clients are connected), "
                                   "Courier by rewriting the folder's courierimapuiddb (sessions opened later see "
                                   "it), Cyrus by deleting the folder and making it again with the same messages at "
                                   "the same UIDs and the same UIDNEXT (children, special use and subscription "
                                   "kept; not INBOX, and sessions must not have it selected). "
                                   "Messages, UIDs, flags and dates stay as they were, so a client must notice "
                                   "the change by UIDVALIDITY alone. Prints the old and the new value.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("user", metavar="USER")
    s.add_argument("folder", metavar="FOLDER")
    s.set_defaults(func=cmd_bump_uidvalidity)

    s = sub.add_parser("setacl", help="Cyrus: grant a user rights on another user's folder",
                       description="Cyrus only: as the administrator, SETACL on OWNER's FOLDER (logical name, "
                                   "INBOX for the account itself) for GRANTEE (a user of this server, or anyone) "
                                   "with RIGHTS (e.g. lrs). The folder then appears in GRANTEE's LIST under the "
                                   "other users' namespace. Prints the administrator's mailbox name.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("owner", metavar="OWNER")
    s.add_argument("folder", metavar="FOLDER")
    s.add_argument("grantee", metavar="GRANTEE")
    s.add_argument("rights", metavar="RIGHTS")
    s.set_defaults(func=cmd_setacl)

    s = sub.add_parser("create-shared", help="Cyrus: create a shared folder",
                       description="Cyrus only: as the administrator, creates FOLDER in the shared namespace "
                                   "(outside every user's personal folders), grants RIGHTS to the --grant users "
                                   "and APPENDs --message FILE if given. Prints {\"mailbox\", \"uid\"}.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("folder", metavar="FOLDER")
    s.add_argument("--grant", default="", help="comma-separated users (or anyone) given RIGHTS")
    s.add_argument("--rights", default="lrs", help="rights for the --grant users (default lrs)")
    s.add_argument("--message", default=None, metavar="FILE", help="a message to APPEND")
    s.add_argument("--flags", default="", help="flags of the message")
    s.add_argument("--date", default=None, help='INTERNALDATE of the message, "DD-Mon-YYYY HH:MM:SS +ZZZZ"')
    s.set_defaults(func=cmd_create_shared)

    s = sub.add_parser("check-seed", help="compare accounts with their seed",
                       description="Regenerates the planned mail of each USER (default: all accounts) and "
                                   "compares it with what the server reports: folders, subscriptions, UID order, "
                                   "bytes, sizes, flags, keywords, INTERNALDATEs, Message-IDs. Meant for a "
                                   "freshly started server.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("users", metavar="USER", nargs="*")
    s.set_defaults(func=cmd_check_seed)
    return p


_STORE_OP = re.compile(r"^-FLAGS(\.SILENT)?$", re.IGNORECASE)


def main(argv):
    # Arguments are UTF-8 whatever the locale says.
    argv = [os.fsencode(a).decode("utf-8", "surrogateescape") for a in argv]
    # "-FLAGS" is a positional of `store`; keep argparse from taking it for an option.
    if argv and argv[0] == "store" and "--" not in argv:
        for i, arg in enumerate(argv):
            if _STORE_OP.match(arg):
                argv.insert(i, "--")
                break
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except HarnessError as e:
        print(f"test-server {args.command}: {e}", file=sys.stderr)
        return 1
    except IMAPError as e:
        print(f"test-server {args.command}: IMAP: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"test-server {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

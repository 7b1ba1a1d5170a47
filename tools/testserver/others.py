"""Private Cyrus IMAP 3.6 and Courier-IMAP 5.0 instances, each in one directory.

Both run from the Debian packages unpacked by tools/setup into
$IMAPSTAGE_SERVERS_ROOT (default /opt/imapstage/servers), with
LD_LIBRARY_PATH pointing at its libraries, as root (mail is owned by
nobody:nogroup, as with Dovecot).

Layout of DIR (beside the CA, server certificate and server.json that every
kind has):
  kind                 "cyrus" or "courier"
  Cyrus:   imapd.conf cyrus.conf   generated configuration (nothing under /etc is read)
           cyrus/                  configdirectory, spool, proc, locks, sockets, sasldb2
           cyrus.log               what the master writes (the services log to syslog, absent here)
  Courier: courier/tls.pem         certificate and key for couriertls (owned by the courier user)
           courier.env             the imapd settings the listeners get in their environment
           courier.log             stderr of couriertcpd, imaplogin and imapd
           mail/USER/Maildir       the mailboxes

Courier authenticates through courier-authdaemon, whose configuration is global:
start adds "authuserdb" to authmodulelist in /etc/courier/authdaemonrc if it is
missing (kept afterwards: harmless, lookups that userdb does not answer go on to
the modules listed after it), writes the instance's accounts to
/etc/courier/userdb/imapstage-TOKEN under a lock shared by all instances,
rebuilds userdb.dat, and starts authdaemond when it is not running (it is left
running). Login names carry the instance token ("alice.1a2b3c4d"), so instances
running side by side never share an account; stop removes the file again, and
start removes the files of instances whose directory is gone.
"""

import base64
import fcntl
import grp
import hashlib
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time

from . import seed as seeding
from .server import (ALT_SPECIAL_USE, HOST, REWRITES, SPECIAL_USE, HarnessError, Lock,
                     _free_port, _identity, _wait_ready, check_user_name, load_info, make_certificates,
                     make_instance_dir, new_password, paths, save_info, write_private)

ROOT = os.environ.get("IMAPSTAGE_SERVERS_ROOT", "/opt/imapstage/servers")
LIBDIR = os.path.join(ROOT, "usr/lib/x86_64-linux-gnu")
CYRUS_BIN = os.path.join(ROOT, "usr/lib/cyrus/bin")
COURIER_TCPD = os.path.join(ROOT, "usr/sbin/couriertcpd")
COURIER_LOGIN = os.path.join(ROOT, "usr/lib/courier/courier/imaplogin")
COURIER_IMAPD = os.path.join(ROOT, "usr/bin/imapd")
COURIER_TLS = os.path.join(ROOT, "usr/bin/couriertls")
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
AUTHDAEMOND = "/usr/sbin/authdaemond"
MAKEUSERDB = "/usr/sbin/makeuserdb"
COURIER_ETC = os.environ.get("IMAPSTAGE_COURIER_ETC", "/etc/courier")
AUTHDAEMON_VAR = "/run/courier/authdaemon"
GLOBAL_LOCK = "/run/lock/imapstage-courier.lock"
ADMIN_USER = "admin"

SPECIAL_USE_OF = dict(SPECIAL_USE)


def _p(d):
    d = os.path.abspath(d)
    return {
        "dir": d,
        "kind": os.path.join(d, "kind"),
        "cyrus": os.path.join(d, "cyrus"),
        "imapd_conf": os.path.join(d, "imapd.conf"),
        "cyrus_conf": os.path.join(d, "cyrus.conf"),
        "sasldb": os.path.join(d, "cyrus", "sasldb2"),
        "cyrus_pid": os.path.join(d, "cyrus", "master.pid"),
        "cyrus_log": os.path.join(d, "cyrus.log"),
        "courier": os.path.join(d, "courier"),
        "courier_pem": os.path.join(d, "courier", "tls.pem"),
        "courier_env": os.path.join(d, "courier.env"),
        "courier_log": os.path.join(d, "courier.log"),
        "courier_pid_plain": os.path.join(d, "courier", "imap.pid"),
        "courier_pid_tls": os.path.join(d, "courier", "imaps.pid"),
        "mail": os.path.join(d, "mail"),
    }


# --- processes ------------------------------------------------------------------------

def _processes():
    """{pid: (ppid, state, command line)} of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        rest = data[data.rindex(b")") + 2:].split()
        out[int(entry)] = (int(rest[1]), rest[0].decode(), cmd)
    return out


def _marker(d):
    """A string every root process of the instance has on its command line."""
    p = _p(d)
    return p["imapd_conf"] if _kind(d) == "cyrus" else p["courier"] + "/"


def _kind(d):
    try:
        with open(_p(d)["kind"], encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def instance_processes(d):
    """Live (not zombie) processes of the instance: those whose command line
    names the instance's files, and all their descendants."""
    procs = _processes()
    marker = _marker(d)
    found = {pid for pid, (_, state, cmd) in procs.items() if marker in cmd and state != "Z"}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, state, _) in procs.items():
            if ppid in found and pid not in found and state != "Z":
                found.add(pid)
                grew = True
    return sorted(found)


def is_running(d):
    return bool(instance_processes(d))


def stop(d, grace=5.0):
    """Stops every process of the instance (SIGTERM, SIGKILL after `grace`
    seconds); for Courier also removes its accounts from the userdb. Returns
    the number of processes found. Idempotent."""
    d = os.path.abspath(d)
    procs = instance_processes(d)
    count = len(procs)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in procs:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while procs and time.monotonic() < end:
            time.sleep(0.01)
            procs = instance_processes(d)
        if not procs:
            break
    if procs:
        raise HarnessError(f"processes of {d} still alive after SIGKILL: {procs}")
    if _kind(d) == "courier":
        token = _courier_token(d)
        if token:
            with _GlobalLock():
                path = _userdb_file(token)
                if os.path.exists(path):
                    os.unlink(path)
                    _makeuserdb()
    return count


# --- common -----------------------------------------------------------------------------

def _require(paths_, what):
    for path in paths_:
        if not os.path.exists(path):
            raise HarnessError(f"{what} is not installed ({path} is missing); run tools/setup")


def _env():
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LD_LIBRARY_PATH": LIBDIR, "LANG": "C"}
    return env


def _tail(path, lines=40):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().splitlines()[-lines:]
    except FileNotFoundError:
        return ""
    return f"\n--- {path} ---\n" + "\n".join(text) if text else f"\n--- {path} is empty ---"


def _run(argv, input_bytes=None, env=None, what=None):
    try:
        r = subprocess.run(argv, input=input_bytes, env=env or _env(), capture_output=True,
                           stdin=None if input_bytes is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise HarnessError(f"{argv[0]} not found; run tools/setup") from None
    if r.returncode != 0:
        raise HarnessError(f"{what or os.path.basename(argv[0])} failed ({r.returncode}): "
                           f"{r.stderr.decode('utf-8', 'replace').strip()}")
    return r


def _mail_identity():
    ident = _identity()
    if not ident["root"]:
        return ident, None, None
    nobody = pwd.getpwnam("nobody")
    return ident, (nobody.pw_uid, grp.getgrnam("nogroup").gr_gid), "nobody"


def _chown_tree(path, owner):
    if not owner:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, *owner)
        for name in files:
            os.lchown(os.path.join(root, name), *owner)


def _namespaces(c):
    """NAMESPACE as {"personal": [{"prefix", "separator"}], "other": [...], "shared": [...]}."""
    r = c.command(b"NAMESPACE")
    for u in r.of_kind("NAMESPACE"):
        out = {}
        for key, value in zip(("personal", "other", "shared"), u.values):
            out[key] = [{"prefix": _s(ns[0]), "separator": _s(ns[1])} for ns in (value or [])]
        return out
    raise HarnessError("the server sent no NAMESPACE response")


def _s(v):
    if v is None:
        return None
    return bytes(v).decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)


def _seed_accounts(d, info, users, target_users, seeded, alt_special_use, special_use):
    """Seeds the accounts over IMAP, two at a time (the servers commit each APPEND)."""
    from concurrent.futures import ThreadPoolExecutor
    from . import ops

    def one(u):
        plan = seeding.plan_for(u, seeded.get(u, "none"))
        if alt_special_use and u in target_users:
            plan = [seeding.Folder(name, True) for name in ALT_SPECIAL_USE[alt_special_use]]
        if plan:
            ops.seed_over_imap(d, u, plan, SPECIAL_USE_OF if special_use else None, info)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for f in [pool.submit(one, u) for u in users + target_users]:
            f.result()


def _finish(d, info, users, target_users, seeded, alt_special_use, t0, t_up, verbose):
    from . import ops
    first = (users + target_users)[:1]
    if first:
        with ops.connect(d, first[0], info) as c:
            info["namespaces"] = _namespaces(c)
    personal = (info["namespaces"].get("personal") or [{"prefix": "", "separator": "/"}])[0]
    info["personal_namespace"] = personal
    save_info(d, info)
    _seed_accounts(d, info, users, target_users, seeded, alt_special_use, info["special_use"])
    t_seed = time.monotonic()
    if verbose:
        print(f"{info['kind']} up {t_up - t0:.3f}s, accounts and mail {t_seed - t_up:.3f}s, "
              f"total {t_seed - t0:.3f}s", file=sys.stderr)
    return info


def start(kind, d, users, target_users, seeded, seed, timeout, alt_special_use, append_limit, verbose,
          altnamespace, unixhierarchysep):
    t0 = time.monotonic()
    ident, owner, run_user = _mail_identity()
    if kind == "courier" and not ident["root"]:
        raise HarnessError("a Courier test server needs root: courier-authdaemon's userdb is under /etc/courier")
    if kind == "cyrus":
        _require([os.path.join(CYRUS_BIN, "master"), os.path.join(CYRUS_BIN, "imapd"), SASLPASSWD2], "Cyrus IMAP")
    else:
        _require([COURIER_TCPD, COURIER_LOGIN, COURIER_IMAPD, COURIER_TLS, AUTHDAEMOND, MAKEUSERDB], "Courier-IMAP")
    make_instance_dir(d, ident)
    p = _p(d)
    with open(p["kind"], "w", encoding="utf-8") as f:
        f.write(kind + "\n")
    make_certificates(d)
    all_users = users + [u for u in target_users if u not in users]
    passwords = {u: new_password() for u in all_users}
    try:
        if kind == "cyrus":
            info = _start_cyrus(d, passwords, owner, run_user or pwd.getpwuid(os.geteuid()).pw_name, timeout,
                                append_limit, altnamespace, unixhierarchysep)
        else:
            info = _start_courier(d, passwords, owner, timeout)
        info.update({"seed": seed, "seeded": seeded, "target_users": target_users, "dir": p["dir"],
                     "ca_file": paths(d)["ca"], "host": HOST, "users": passwords, "kind": kind,
                     "rewrites": REWRITES[kind]})
        t_up = time.monotonic()
        return _finish(d, info, users, target_users, seeded, alt_special_use, t0, t_up, verbose)
    except BaseException:
        try:
            stop(d)
        except HarnessError as e:
            print(f"test-server: {e}", file=sys.stderr)
        raise


def _user_proc_start(argv, log_path, env):
    """Runs a daemonizing server command with output to `log_path`; returns its exit status."""
    with open(log_path, "ab") as out:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, close_fds=True,
                           start_new_session=True)
    return r.returncode


# --- Cyrus ------------------------------------------------------------------------------

def _cyrus_conf(d, run_user, append_limit, altnamespace, unixhierarchysep):
    p = _p(d)
    c = p["cyrus"]
    lines = [
        "# Private Cyrus IMAP for imapstage tests; generated by tools/test-server.",
        f"configdirectory: {c}/conf",
        "defaultpartition: default",
        f"partition-default: {c}/spool",
        f"proc_path: {c}/proc",
        f"mboxname_lockpath: {c}/lock",
        f"lmtpsocket: {c}/socket/lmtp",
        f"idlesocket: {c}/socket/idle",
        f"notifysocket: {c}/socket/notify",
        f"sievedir: {c}/sieve",
        f"cyrus_user: {run_user}",
        f"admins: {ADMIN_USER}",
        f"proxyservers: {ADMIN_USER}",
        "allowplaintext: yes",
        "failedloginpause: 0",
        "sasl_pwcheck_method: auxprop",
        "sasl_auxprop_plugin: sasldb",
        f"sasl_sasldb_path: {p['sasldb']}",
        "sasl_mech_list: PLAIN LOGIN",
        f"tls_server_cert: {paths(d)['cert']}",
        f"tls_server_key: {paths(d)['key']}",
        "tls_versions: tls1_2 tls1_3",
        f"altnamespace: {'yes' if altnamespace else 'no'}",
        f"unixhierarchysep: {'yes' if unixhierarchysep else 'no'}",
        "hashimapspool: false",
        "specialusealways: yes",
        "virtdomains: off",
        "umask: 077",
        "syslog_prefix: imapstage-cyrus",
    ]
    if append_limit:
        lines.append(f"maxmessagesize: {append_limit}")
    return "\n".join(lines) + "\n"


def _cyrus_services(d, imap_port, imaps_port):
    conf = _p(d)["imapd_conf"]
    b = CYRUS_BIN
    return f"""# Private Cyrus IMAP for imapstage tests; generated by tools/test-server.
START {{
  recover cmd="{b}/ctl_cyrusdb -C {conf} -r"
}}
SERVICES {{
  imap cmd="{b}/imapd -C {conf}" listen="{HOST}:{imap_port}" prefork=0 maxchild=100
  imaps cmd="{b}/imapd -C {conf} -s" listen="{HOST}:{imaps_port}" prefork=0 maxchild=100
}}
EVENTS {{
}}
"""


def _start_cyrus(d, passwords, owner, run_user, timeout, append_limit, altnamespace, unixhierarchysep):
    p = _p(d)
    for sub in ("conf", "spool", "proc", "lock", "socket", "sieve"):
        os.makedirs(os.path.join(p["cyrus"], sub), mode=0o700, exist_ok=True)
    admin_password = new_password()
    for user, pw in list(passwords.items()) + [(ADMIN_USER, admin_password)]:
        _saslpasswd(d, user, pw)
    with open(p["imapd_conf"], "w", encoding="utf-8") as f:
        f.write(_cyrus_conf(d, run_user, append_limit, altnamespace, unixhierarchysep))
    _chown_tree(p["cyrus"], owner)
    if owner:
        os.chown(paths(d)["key"], *owner)
    env = _env()
    for attempt in range(1, 6):
        imap_port, imaps_port = _free_port(), _free_port()
        if imap_port == imaps_port:
            continue
        with open(p["cyrus_conf"], "w", encoding="utf-8") as f:
            f.write(_cyrus_services(d, imap_port, imaps_port))
        rc = _user_proc_start([os.path.join(CYRUS_BIN, "master"), "-C", p["imapd_conf"], "-M", p["cyrus_conf"],
                               "-p", p["cyrus_pid"], "-L", p["cyrus_log"], "-d"], p["cyrus_log"], env)
        if rc != 0:
            raise HarnessError(f"the Cyrus master failed to start (exit {rc})" + _tail(p["cyrus_log"]))
        try:
            _wait_ready(d, imap_port, imaps_port, time.monotonic() + timeout, "Cyrus",
                        lambda: _tail(p["cyrus_log"]) + "\n(the Cyrus master and services log to syslog, which "
                                "the harness does not capture; cyrus.log holds what they wrote to stderr)",
                        lambda: is_running(d))
            break
        except HarnessError:
            text = _tail(p["cyrus_log"])
            stop(d)
            if "already in use" in text and attempt < 5:
                continue
            raise
    info = {"imap_port": imap_port, "imaps_port": imaps_port, "logins": {u: u for u in passwords},
            "master_user": None, "master_password": None, "master_separator": None,
            "admin_user": ADMIN_USER, "admin_password": admin_password,
            "pid": _read_pid(p["cyrus_pid"]), "instance": "cyrus-" + secrets.token_hex(4),
            "config": p["imapd_conf"], "log": p["cyrus_log"], "append_limit": append_limit or None,
            "special_use": True, "cyrus": {"altnamespace": bool(altnamespace),
                                           "unixhierarchysep": bool(unixhierarchysep)}}
    info.update({"host": HOST, "dir": p["dir"], "users": passwords, "kind": "cyrus"})
    _create_cyrus_mailboxes(d, info, passwords)
    return info


def _saslpasswd(d, user, password):
    """Adds or changes an account in the instance's sasldb (password on stdin)."""
    p = _p(d)
    _run([SASLPASSWD2, "-f", p["sasldb"], "-p", "-c", user], input_bytes=password.encode() + b"\n",
         what=f"saslpasswd2 for {user}")


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def _admin_other_prefix(c):
    ns = _namespaces(c)
    other = ns.get("other") or []
    if not other:
        raise HarnessError("the Cyrus administrator sees no other users' namespace")
    return other[0]["prefix"], other[0]["separator"]


def _create_cyrus_mailboxes(d, info, users):
    from . import ops
    with ops.connect_admin(d, info) as c:
        prefix, _sep = _admin_other_prefix(c)
        for u in users:
            r = c.command(b"CREATE", ops.quote_arg(prefix + u), check=False)
            if r.status != "OK" and not (r.code and r.code.upper().startswith("ALREADYEXISTS")):
                raise HarnessError(f"CREATE {prefix + u} as the Cyrus administrator failed: {r.status} {r.text}")


def cyrus_mailbox(c, owner, folder):
    """The administrator's name of `owner`'s logical folder ("user.bob.Sent")."""
    from . import ops
    prefix, sep = _admin_other_prefix(c)
    base = prefix + owner
    if folder.upper() == "INBOX":
        return base
    return base + sep + ops.raw_name(folder, {"prefix": "", "separator": sep})


def setacl(d, owner, folder, grantee, rights):
    """SETACL on `owner`'s logical folder for `grantee` (a user of the
    instance, or "anyone"), as the administrator. Returns the mailbox name."""
    info = load_info(d)
    _cyrus_only(info, "setacl")
    from . import ops
    if owner not in info["users"]:
        raise HarnessError(f"no user {owner!r}")
    who = info["logins"].get(grantee, grantee)
    with ops.connect_admin(d, info) as c:
        name = cyrus_mailbox(c, owner, folder)
        r = c.command(b"SETACL", ops.quote_arg(name), ops.quote_arg(who), ops.quote_arg(rights), check=False)
        if r.status != "OK":
            raise HarnessError(f"SETACL {name} {who} {rights} failed: {r.status} {r.text}")
    return name


def create_shared(d, folder, grantees, rights="lrs", message=None, flags="", date=None):
    """Creates a shared folder (outside every user's personal namespace) as the
    administrator, grants `rights` to each grantee, and APPENDs `message` if
    given. Returns (mailbox name, UID or None)."""
    info = load_info(d)
    _cyrus_only(info, "create-shared")
    from . import ops
    with ops.connect_admin(d, info) as c:
        ns = _namespaces(c)
        shared = (ns.get("shared") or [{"prefix": "", "separator": "."}])[0]
        name = ops.raw_name(folder, shared)
        r = c.command(b"CREATE", ops.quote_arg(name), check=False)
        if r.status != "OK" and not (r.code and r.code.upper().startswith("ALREADYEXISTS")):
            raise HarnessError(f"CREATE {name} failed: {r.status} {r.text}")
        c.command(b"SETACL", ops.quote_arg(name), ops.quote_arg(ADMIN_USER), b'"lrswipkxtecda"')
        for g in grantees:
            who = info["logins"].get(g, g)
            c.command(b"SETACL", ops.quote_arg(name), ops.quote_arg(who), ops.quote_arg(rights))
        uid = None
        if message is not None:
            c.personal = {"prefix": shared["prefix"], "separator": shared["separator"]}
            uid = ops.append(c, folder, message, flags, date)
    return name, uid


def _cyrus_only(info, op):
    if info.get("kind") != "cyrus":
        raise HarnessError(f"{op} is a Cyrus operation; this server is {info.get('kind', 'dovecot')}")


# --- Courier ----------------------------------------------------------------------------

class _GlobalLock:
    """Serializes changes to Courier's global userdb and authdaemond across instances."""

    def __enter__(self):
        os.makedirs(os.path.dirname(GLOBAL_LOCK), exist_ok=True)
        self.fd = os.open(GLOBAL_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def _courier_token(d):
    try:
        with open(os.path.join(_p(d)["courier"], "token"), encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _userdb_file(token):
    return os.path.join(COURIER_ETC, "userdb", f"imapstage-{token}")


def _userdb_hash(password):
    return "{SHA256}" + base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest()).decode("ascii")


def _userdb_text(d, logins, passwords, owner):
    p = _p(d)
    lines = []
    for user, login in logins.items():
        home = os.path.join(p["mail"], user)
        pw = passwords[user]
        for ch in "|\n\t":
            if ch in home:
                raise HarnessError(f"directory not usable in a Courier userdb: {home!r}")
        lines.append(f"{login}\tuid={owner[0]}|gid={owner[1]}|home={home}|mail={home}/Maildir|"
                     f"systempw={_userdb_hash(pw)}\n")
    return "".join(lines)


def _makeuserdb():
    _run([MAKEUSERDB], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, what="makeuserdb")


def _write_userdb(d, token, logins, passwords, owner):
    """Replaces the instance's userdb file and rebuilds userdb.dat (under the global lock)."""
    base = os.path.join(COURIER_ETC, "userdb")
    if os.path.exists(base) and not os.path.isdir(base):
        raise HarnessError(f"{base} is a file; the harness needs it to be a directory (one file per instance)")
    os.makedirs(base, mode=0o700, exist_ok=True)
    # Files of instances whose directory is gone (a test killed before stop).
    for name in os.listdir(base):
        if not name.startswith("imapstage-") or name == f"imapstage-{token}":
            continue
        path = os.path.join(base, name)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        homes = [field[5:] for line in text.splitlines() for field in line.split("\t", 1)[-1].split("|")
                 if field.startswith("home=")]
        if homes and not any(os.path.isdir(os.path.dirname(os.path.dirname(h))) for h in homes):
            os.unlink(path)
    write_private(_userdb_file(token), _userdb_text(d, logins, passwords, owner))
    _makeuserdb()


def _ensure_authdaemon():
    """authuserdb in authmodulelist, and authdaemond running with that configuration."""
    rc = os.path.join(COURIER_ETC, "authdaemonrc")
    try:
        with open(rc, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise HarnessError(f"{rc} is missing; is courier-authdaemon installed? (tools/setup)") from None
    changed = False
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith("authmodulelist="):
            value = line.split("=", 1)[1].strip().strip('"')
            modules = value.split()
            if "authuserdb" not in modules:
                line = f'authmodulelist="{" ".join(["authuserdb"] + modules)}"\n'
                changed = True
        out.append(line)
    if changed:
        st = os.stat(rc)
        tmp = rc + ".imapstage-tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(out))
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, rc)
    running = _authdaemon_running()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if running and not changed:
        return
    if running:
        _run([AUTHDAEMOND, "stop"], env=env, what="authdaemond stop")
        end = time.monotonic() + 5
        while _authdaemon_running() and time.monotonic() < end:
            time.sleep(0.05)
    os.makedirs(AUTHDAEMON_VAR, exist_ok=True)
    subprocess.run([AUTHDAEMOND, "start"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, start_new_session=True)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if _authdaemon_running() and os.path.exists(os.path.join(AUTHDAEMON_VAR, "socket")):
            return
        time.sleep(0.05)
    raise HarnessError("authdaemond did not start (no socket in /run/courier/authdaemon)")


def _authdaemon_running():
    pid = _read_pid(os.path.join(AUTHDAEMON_VAR, "pid"))
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
        return b"authdaemond" in cmd or b"courierlogger" in cmd
    except FileNotFoundError:
        return False


def _courier_env(d, tls):
    p = _p(d)
    capability = "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE"
    env = _env()
    env.update({
        "IMAP_CAPABILITY": capability,
        "IMAP_CAPABILITY_TLS": capability + " AUTH=PLAIN",
        "IMAP_KEYWORDS": "1", "IMAP_ACL": "1", "IMAP_PROXY": "0", "IMAP_IDLE_TIMEOUT": "60",
        "IMAP_MAILBOX_SANITY_CHECK": "1", "IMAP_DISABLETHREADSORT": "0", "IMAP_CHECK_ALL_FOLDERS": "0",
        "IMAP_OBSOLETE_CLIENT": "0", "IMAP_UMASK": "022", "IMAP_USELOCKS": "1", "IMAP_ENHANCEDIDLE": "0",
        "IMAP_SHAREDINDEXFILE": os.path.join(p["courier"], "shared-index"),
        # Debian's default IMAP_EMPTYTRASH=Trash:7 would delete the seeded Trash (dated years ago) at login.
        "IMAP_TRASHFOLDERNAME": "Trash", "IMAP_EMPTYTRASH": "", "IMAP_MOVE_EXPUNGE_TO_TRASH": "0",
        "IMAP_STARTTLS": "YES", "IMAP_TLS_REQUIRED": "0", "COURIERTLS": COURIER_TLS,
        "TLS_CERTFILE": p["courier_pem"], "TLS_PROTOCOL": "TLS1_2+", "TLS_STARTTLS_PROTOCOL": "TLS1_2+",
        "TLS_VERIFYPEER": "NONE", "TLS_CACHEFILE": "", "MAILDIRPATH": "Maildir",
    })
    if tls:
        env["IMAP_TLS"] = "1"
    return env


def _start_courier(d, passwords, owner, timeout):
    p = _p(d)
    os.makedirs(p["courier"], mode=0o711, exist_ok=True)
    courier = pwd.getpwnam("courier")
    with open(paths(d)["cert"], "rb") as f:
        cert = f.read()
    with open(paths(d)["key"], "rb") as f:
        key = f.read()
    write_private(p["courier_pem"], cert + key, (courier.pw_uid, courier.pw_gid))
    with open(os.path.join(p["courier"], "shared-index"), "w"):
        pass
    token = secrets.token_hex(4)
    with open(os.path.join(p["courier"], "token"), "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.makedirs(p["mail"], mode=0o711, exist_ok=True)
    logins = {}
    for user in passwords:
        logins[user] = f"{user}.{token}"
        _courier_home(d, user, owner)
    with _GlobalLock():
        _ensure_authdaemon()
        _write_userdb(d, token, logins, passwords, owner)
    env_plain, env_tls = _courier_env(d, False), _courier_env(d, True)
    with open(p["courier_env"], "w", encoding="utf-8") as f:
        f.write("".join(f"{k}={v}\n" for k, v in sorted(env_tls.items())))
    for attempt in range(1, 6):
        imap_port, imaps_port = _free_port(), _free_port()
        if imap_port == imaps_port:
            continue
        common = [COURIER_TCPD, f"-address={HOST}", "-nodnslookup", "-noidentlookup", "-maxprocs=100",
                  "-maxperip=100"]
        rc1 = _user_proc_start(common + [f"-pid={p['courier_pid_plain']}", str(imap_port), COURIER_LOGIN,
                                         COURIER_IMAPD, "Maildir"], p["courier_log"], env_plain)
        rc2 = _user_proc_start(common + [f"-pid={p['courier_pid_tls']}", str(imaps_port), COURIER_TLS, "-server",
                                         "-tcpd", "-user=courier", COURIER_LOGIN, COURIER_IMAPD, "Maildir"],
                               p["courier_log"], env_tls)
        try:
            if rc1 or rc2:
                raise HarnessError(f"couriertcpd failed to start (exit {rc1 or rc2})" + _tail(p["courier_log"]))
            _wait_ready(d, imap_port, imaps_port, time.monotonic() + timeout, "Courier",
                        lambda: _tail(p["courier_log"]), lambda: is_running(d))
            break
        except HarnessError:
            text = _tail(p["courier_log"])
            for pid in instance_processes(d):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if "in use" in text and attempt < 5:
                continue
            raise
    return {"imap_port": imap_port, "imaps_port": imaps_port, "logins": logins,
            "master_user": None, "master_password": None, "master_separator": None,
            "admin_user": None, "admin_password": None,
            "pid": _read_pid(p["courier_pid_plain"]), "instance": "courier-" + token,
            "config": p["courier_env"], "log": p["courier_log"], "append_limit": None, "special_use": False,
            "courier": {"token": token, "userdb": _userdb_file(token)}}


def _courier_home(d, user, owner):
    home = os.path.join(_p(d)["mail"], user)
    os.makedirs(home, mode=0o700, exist_ok=True)
    seeding.make_maildir(os.path.join(home, "Maildir"), owner)
    if owner:
        os.chown(home, *owner)


# --- accounts ---------------------------------------------------------------------------

def add_user(d, name, password=None, seed="none"):
    """Adds an account (Cyrus: sasldb and user mailbox; Courier: userdb entry
    and Maildir), seeded with `seed`; an existing one keeps its password and
    mail unless a new password is given. Returns the password."""
    import re
    check_user_name(name)
    if seed != "none" and seed != "default" and not re.match(r"^(bench|small):\d+$", seed):
        raise HarnessError(f"bad seed {seed!r}: use default, none, bench:N or small:N")
    d = os.path.abspath(d)
    _, owner, _ = _mail_identity()
    with Lock(d):
        info = load_info(d)
        kind = info["kind"]
        users = info["users"]
        if name in users and (password is None or password == users[name]):
            return users[name]
        new = name not in users
        users[name] = password if password is not None else new_password()
        if kind == "cyrus":
            _saslpasswd(d, name, users[name])
            if owner:
                os.chown(_p(d)["sasldb"], *owner)
            info["logins"][name] = name
            if new:
                _create_cyrus_mailboxes(d, info, [name])
        else:
            token = info["courier"]["token"]
            info["logins"][name] = f"{name}.{token}"
            if new:
                _courier_home(d, name, owner)
            with _GlobalLock():
                _write_userdb(d, token, info["logins"], users, owner)
        if new and seed != "none":
            info.setdefault("seeded", {})[name] = seed
        save_info(d, info)
    if new and seed != "none":
        from . import ops
        ops.seed_over_imap(d, name, seeding.plan_for(name, seed), SPECIAL_USE_OF if info["special_use"] else None,
                           info)
    return users[name]

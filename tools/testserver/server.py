"""Starting and stopping a private Dovecot instance that lives entirely in one directory.

Layout of DIR:
  dovecot.conf      generated configuration (nothing under /etc/dovecot is read)
  ca.pem ca.key     the CA made at start (ca.pem is what clients trust)
  server.pem/.key   the server certificate (SAN DNS:localhost, IP:127.0.0.1)
  users/NAME        one passwd-file (scheme PLAIN) per account
  masters           passwd-file of the master user
  server.json       host, ports, CA, users and passwords, pid (mode 0600)
  run/              base_dir (master.pid, sockets)
  state/            state_dir
  dovecot.log       everything Dovecot logs
  mail/USER/Maildir the mailboxes
"""

import fcntl
import json
import os
import pwd
import grp
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time

from . import seed as seeding

DOVECOT = os.environ.get("IMAPSTAGE_DOVECOT", "/usr/sbin/dovecot")
DOVEADM = os.environ.get("IMAPSTAGE_DOVEADM", "/usr/bin/doveadm")
HOST = "127.0.0.1"
MASTER_USER = "admin"
MASTER_SEPARATOR = "*"
DEFAULT_APPEND_LIMIT = 64 << 20
USER_RE = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,63}$")  # Dovecot lower-cases login names

# (mailbox name, special-use). auto = no: a name is listed only if the account has it.
SPECIAL_USE = [
    ("Sent", "\\Sent"), ("Sent Items", "\\Sent"), ("Gesendet", "\\Sent"),
    ("Drafts", "\\Drafts"), ("Entwürfe", "\\Drafts"),
    ("Trash", "\\Trash"), ("Deleted Items", "\\Trash"), ("Papierkorb", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
]

# Special-use folders created empty in --target-users accounts with --alt-special-use STYLE.
ALT_SPECIAL_USE = {
    "de": ["Gesendet", "Entwürfe", "Papierkorb"],
    "outlook": ["Sent Items", "Deleted Items"],
}


class HarnessError(Exception):
    """A failure to report to the user (message only, no traceback)."""


# --- paths and state ------------------------------------------------------------

def paths(d):
    d = os.path.abspath(d)
    return {
        "dir": d,
        "conf": os.path.join(d, "dovecot.conf"),
        "json": os.path.join(d, "server.json"),
        "users": os.path.join(d, "users"),
        "masters": os.path.join(d, "masters"),
        "ca": os.path.join(d, "ca.pem"),
        "ca_key": os.path.join(d, "ca.key"),
        "cert": os.path.join(d, "server.pem"),
        "key": os.path.join(d, "server.key"),
        "run": os.path.join(d, "run"),
        "state": os.path.join(d, "state"),
        "log": os.path.join(d, "dovecot.log"),
        "start_log": os.path.join(d, "dovecot.start.log"),
        "mail": os.path.join(d, "mail"),
        "pid": os.path.join(d, "run", "master.pid"),
        "lock": os.path.join(d, ".lock"),
    }


class Lock:
    """An exclusive lock on DIR/.lock for changes to the instance's files."""

    def __init__(self, d):
        self.path = paths(d)["lock"]

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def load_info(d):
    p = paths(d)
    try:
        with open(p["json"], encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise HarnessError(f"{p['dir']} holds no test server (no server.json); run `start` first") from None


def write_private(path, data, owner=None):
    """Writes a file with mode 0600 atomically (temporary file + rename)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data.encode("utf-8") if isinstance(data, str) else data)
        if owner:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def save_info(d, info):
    write_private(paths(d)["json"], json.dumps(info, indent=2, ensure_ascii=False) + "\n")


# --- users and identities ---------------------------------------------------------

def _identity():
    """Users Dovecot runs as: when root, the packaged dovecot/dovenull users and
    nobody/nogroup for mail; otherwise everything as the invoking user."""
    if os.geteuid() == 0:
        try:
            internal = pwd.getpwnam("dovecot")
            pwd.getpwnam("dovenull")
            mail = pwd.getpwnam("nobody")
            mail_gid = grp.getgrnam("nogroup").gr_gid
        except KeyError as e:
            raise HarnessError(f"system user or group missing ({e}); is dovecot-imapd installed? (tools/setup)") from None
        return {"root": True, "internal_user": "dovecot", "internal_group": grp.getgrgid(internal.pw_gid).gr_name,
                "login_user": "dovenull", "mail_user": "nobody",
                "mail_group": grp.getgrgid(mail_gid).gr_name, "mail_owner": (mail.pw_uid, mail_gid),
                "auth_owner": (internal.pw_uid, internal.pw_gid)}
    me = pwd.getpwuid(os.geteuid())
    gname = grp.getgrgid(os.getegid()).gr_name
    return {"root": False, "internal_user": me.pw_name, "internal_group": gname, "login_user": me.pw_name,
            "mail_user": me.pw_name,
            "mail_group": gname, "mail_owner": None, "auth_owner": None}


def _temp_roots():
    roots = {"/tmp", "/var/tmp"}
    if os.environ.get("TMPDIR"):
        roots.add(os.path.realpath(os.environ["TMPDIR"]))
    return roots


def _check_reachable(d, identity):
    """As root, mail is accessed as `nobody` and passwd-files as `dovecot`: every
    parent of DIR must let others through. A parent inside a temporary directory (/tmp, /var/tmp, $TMPDIR) that
    belongs to the invoking user, such as one from `mktemp -d`, is given the
    search bit for others (not the read bit); any other is an error."""
    if not identity["root"]:
        return
    roots = _temp_roots()
    path = os.path.realpath(d)
    while path != "/":
        parent = os.path.dirname(path)
        path = parent
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            continue  # not made yet
        if not st.st_mode & 0o001:
            inside_temp = any(parent.startswith(r.rstrip("/") + "/") for r in roots)
            if inside_temp and st.st_uid == os.geteuid():
                os.chmod(parent, (st.st_mode & 0o7777) | 0o001)
            else:
                raise HarnessError(f"{parent} (mode {st.st_mode & 0o777:04o}) is not searchable by others, so "
                                   f"Dovecot's mail user {identity['mail_user']} can't reach {d}; use a directory "
                                   f"under /tmp")


def _passwd_line(user, password):
    if any(c in password for c in ":\n\r\0"):
        raise HarnessError("a password may not contain ':', NUL or line breaks")
    return f"{user}:{{PLAIN}}{password}::::::\n"


def write_passwd(d, user, password, identity):
    """One passwd-file per account: Dovecot stats a passwd-file at most once a
    second, so a single shared file would miss an account added within the
    second of an earlier login; a new file is read on its first lookup."""
    p = paths(d)
    if not os.path.isdir(p["users"]):
        os.makedirs(p["users"], mode=0o700, exist_ok=True)
        if identity["auth_owner"]:
            os.chown(p["users"], *identity["auth_owner"])
    write_private(os.path.join(p["users"], user), _passwd_line(user, password), identity["auth_owner"])


def new_password():
    return secrets.token_urlsafe(15)


def check_user_name(name):
    if not USER_RE.match(name) or name == MASTER_USER:
        raise HarnessError(f"bad user name {name!r}: use lower-case letters, digits and . _ @ + - "
                           f"(not {MASTER_USER!r})")


# --- configuration ----------------------------------------------------------------

def _q(value):
    """A Dovecot config string value in double quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Dovecot's POP3 server (Debian's dovecot-pop3d): served beside IMAP when installed.
POP3_LOGIN = os.environ.get("IMAPSTAGE_DOVECOT_POP3_LOGIN", "/usr/lib/dovecot/pop3-login")


def pop3_available():
    return os.access(POP3_LOGIN, os.X_OK)


def _pop3_config(pop3_ports, identity):
    """POP3 on two more ports: plain with STLS, and implicit TLS (POP3S)."""
    if not pop3_ports:
        return ""
    pop3_port, pop3s_port = pop3_ports
    chroot = "" if identity["root"] else "  chroot =\n"
    return f"""service pop3-login {{
  inet_listener pop3 {{
    address = {HOST}
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    address = {HOST}
    port = {pop3s_port}
    ssl = yes
  }}
{chroot}}}
protocol pop3 {{
  mail_max_userip_connections = 100
  pop3_uidl_format = %08Xu%08Xv
}}
"""


def render_config(d, imap_port, imaps_port, identity, instance, append_limit=DEFAULT_APPEND_LIMIT, login_hook=None,
                  trust_loopback=False, post_login=None, pop3_ports=None):
    p = paths(d)
    for key in ("dir",):
        if any(c in p[key] for c in '"\n\\<$%'):
            raise HarnessError(f"directory path not usable in a Dovecot config: {p[key]!r}")
    mailboxes = "".join(
        f"  mailbox {_q(name)} {{\n    auto = no\n    special_use = {use}\n  }}\n" for name, use in SPECIAL_USE)
    lines = f"""# Private Dovecot for imapstage tests; generated by tools/test-server.
instance_name = {instance}
base_dir = {p['run']}
state_dir = {p['state']}
log_path = {p['log']}
info_log_path = {p['log']}
debug_log_path = {p['log']}
protocols = imap{" pop3" if pop3_ports else ""}
listen = {HOST}
shutdown_clients = yes
default_internal_user = {identity['internal_user']}
default_internal_group = {identity['internal_group']}
default_login_user = {identity['login_user']}
mail_uid = {identity['mail_user']}
mail_gid = {identity['mail_group']}
first_valid_uid = 1
first_valid_gid = 1

ssl = yes
ssl_cert = <{p['cert']}
ssl_key = <{p['key']}
ssl_min_protocol = TLSv1.2

auth_mechanisms = plain login cram-md5
auth_failure_delay = 0
auth_master_user_separator = {MASTER_SEPARATOR}
auth_cache_size = 0
auth_verbose = yes

mail_location = maildir:~/Maildir
mail_fsync = optimized
mailbox_list_index = yes

passdb {{
  driver = passwd-file
  args = scheme=PLAIN {p['masters']}
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {p['users']}/%u
}}
{_hook_passdb(login_hook)}userdb {{
  driver = static
  args = home={p['mail']}/%u{_hook_userdb(login_hook, identity)}
}}

namespace inbox {{
  inbox = yes
  separator = /
  prefix =
{mailboxes}}}

service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {imaps_port}
    ssl = yes
  }}
  process_min_avail = 0
}}
service imap {{
  process_limit = 64
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
""" + _pop3_config(pop3_ports, identity)
    if post_login:
        # Runs CMD (imapstage login-trigger) after each login, as script-login does: it gets USER and must
        # exec the rest of its command line.
        if any(c in post_login for c in '"\n{}'):
            raise HarnessError(f"--post-login command not usable in a Dovecot config: {post_login!r}")
        lines += ("service imap {\n  executable = imap imap-postlogin\n}\nservice imap-postlogin {\n"
                  f"  executable = script-login {post_login}\n  user = $default_internal_user\n"
                  # As for the login hook: no 256 MiB address-space limit on the trigger.
                  "  vsz_limit = 0\n"
                  "  unix_listener imap-postlogin {\n  }\n}\n")
    if trust_loopback:
        # A migration's login hook on loopback speaks for its clients (ID x-originating-ip), logged here.
        lines += "login_trusted_networks = 127.0.0.0/8\nimap_id_log = *\n"
    if append_limit:
        # The quota plugin (unlimited storage) refuses larger APPENDs with [LIMIT];
        # Dovecot 2.3 does not advertise APPENDLIMIT by itself.
        lines += f"""mail_plugins = $mail_plugins quota
imap_capability = +APPENDLIMIT={append_limit}
plugin {{
  quota = count:User quota
  quota_rule = *:storage=0
  quota_vsizes = yes
  quota_max_mail_size = {append_limit}
}}
"""
    # No login penalty after failed logins (anvil-auth-penalty): tests fail logins on purpose.
    anvil_chroot = "" if identity["root"] else "  chroot =\n"
    lines += "service anvil {\n" + anvil_chroot + """  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
"""
    auth = []
    if not identity["root"]:
        lines += """service imap-login {
  chroot =
}
"""
        auth.append("  user = $default_internal_user\n")
    if login_hook:
        # The hook runs inside the auth process's address-space limit (256 MiB by
        # default); a sanitizer build of it reserves far more virtual memory.
        auth.append("  vsz_limit = 0\n")
    if auth:
        lines += "service auth {\n" + "".join(auth) + "}\n"
    return lines


def _hook_passdb(login_hook):
    """A checkpassword passdb after the accounts' own (imapstage login-hook): logins the
    account's password does not pass go to the hook."""
    if not login_hook:
        return ""
    if any(c in login_hook for c in '"\n{}'):
        raise HarnessError(f"--login-hook command not usable in a Dovecot config: {login_hook!r}")
    return f"passdb {{\n  driver = checkpassword\n  args = {login_hook}\n}}\n"


def _hook_userdb(login_hook, identity):
    """checkpassword-reply returns the hook's own uid and gid as userdb fields: the userdb names the mail user."""
    return f" uid={identity['mail_user']} gid={identity['mail_group']}" if login_hook else ""


# --- certificates -------------------------------------------------------------------

def make_certificates(d):
    p = paths(d)
    cnf = os.path.join(p["dir"], "openssl.cnf")
    with open(cnf, "w") as f:
        f.write("[req]\ndistinguished_name = dn\n[dn]\n")
    env = dict(os.environ, OPENSSL_CONF=cnf)
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run_checked(["openssl", "req", "-x509", *curve, "-keyout", p["ca_key"], "-out", p["ca"], "-days", "3650",
                  "-subj", "/O=imapstage tests/CN=imapstage test CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"], env)
    _run_checked(["openssl", "req", "-x509", "-CA", p["ca"], "-CAkey", p["ca_key"], *curve,
                  "-keyout", p["key"], "-out", p["cert"], "-days", "825",
                  "-subj", "/O=imapstage tests/CN=localhost",
                  "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                  "-addext", "basicConstraints=critical,CA:FALSE",
                  "-addext", "keyUsage=critical,digitalSignature",
                  "-addext", "extendedKeyUsage=serverAuth"], env)
    for k in ("ca_key", "key"):
        os.chmod(p[k], 0o600)
    os.chmod(p["ca"], 0o644)
    os.chmod(p["cert"], 0o644)


def _run_checked(argv, env=None):
    try:
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except FileNotFoundError:
        raise HarnessError(f"{argv[0]} not found; run tools/setup") from None
    if r.returncode != 0:
        raise HarnessError(f"{' '.join(argv[:3])} failed ({r.returncode}):\n{r.stderr.strip()}")
    return r


# --- processes ------------------------------------------------------------------------

def _proc_stat(pid):
    """(state, session id) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[3])


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def instance_processes(d, master_pid=None, instance=None):
    """Live (not zombie) processes of this instance: the master (its command line
    names DIR/dovecot.conf) and every process in the master's session, whose titles
    carry the instance name."""
    conf = paths(d)["conf"]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        st = _proc_stat(pid)
        if st is None or st[0] == "Z":
            continue
        cmd = _cmdline(pid)
        if conf in cmd:
            found.append(pid)
        elif master_pid and st[1] == master_pid and (not instance or instance in cmd):
            found.append(pid)
    return found


def _master_pid(d):
    try:
        with open(paths(d)["pid"]) as f:
            pid = int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if paths(d)["conf"] in _cmdline(pid) else None


def instance_kind(d):
    """The kind of server DIR holds ("dovecot" when DIR/kind is absent)."""
    try:
        with open(os.path.join(os.path.abspath(d), "kind"), encoding="utf-8") as f:
            return f.read().strip() or "dovecot"
    except FileNotFoundError:
        return "dovecot"


def is_running(d):
    if instance_kind(d) != "dovecot":
        from . import others
        return others.is_running(d)
    return _master_pid(d) is not None


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_ready(d, imap_port, imaps_port, deadline, name="Dovecot", log_tail=None, alive=None, greeting=b"* OK"):
    """Waits until the plain port greets and the TLS port completes a verified
    handshake; gives up at once when `alive()` says the server has exited."""
    p = paths(d)
    last = None
    while time.monotonic() < deadline:
        if alive and not alive():
            raise HarnessError(f"{name} exited during startup" + (log_tail() if log_tail else _log_tail(d)))
        try:
            with socket.create_connection((HOST, imap_port), timeout=2) as s:
                s.settimeout(max(0.5, deadline - time.monotonic()))
                line = s.makefile("rb").readline()
                if not line.startswith(greeting):
                    raise OSError(f"unexpected greeting {line[:80]!r}")
            ctx = ssl.create_default_context(cafile=p["ca"])
            with socket.create_connection((HOST, imaps_port), timeout=2) as raw:
                raw.settimeout(max(0.5, deadline - time.monotonic()))
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    line = s.makefile("rb").readline()
                    if not line.startswith(greeting):
                        raise OSError(f"unexpected TLS greeting {line[:80]!r}")
            return
        except (OSError, ssl.SSLError) as e:
            last = e
            time.sleep(0.02)
    raise HarnessError(f"{name} did not answer on ports {imap_port}/{imaps_port} within the timeout ({last})"
                       + (log_tail() if log_tail else _log_tail(d)))


def _log_tail(d, keys=("log",), lines=40):
    """The last lines of Dovecot's output files, for error messages."""
    out = ""
    for key in keys:
        try:
            with open(paths(d)[key], encoding="utf-8", errors="replace") as f:
                text = f.read().splitlines()[-lines:]
        except FileNotFoundError:
            continue
        if text:
            out += f"\n--- {paths(d)[key]} ---\n" + "\n".join(text)
            break
    return out


# --- start / stop -------------------------------------------------------------------

KINDS = ("dovecot", "cyrus", "courier")

# What each server does to the bytes of an APPENDed message (measured with the
# Debian 12 packages; tests/interop/servers_test.cpp checks them again):
#   header_8bit          bytes >= 0x80 in the top-level header: "kept" or "X" (each byte becomes "X")
#   bare_cr              a CR not followed by LF: "kept" or "removed"
#   bare_lf              an LF not preceded by CR: "crlf" (becomes CRLF) or "refused" (APPEND fails)
#   nul                  a NUL byte: "kept", "0x80" (becomes 0x80) or "refused"
#   missing_final_crlf   a message not ending in CRLF: "kept" or "added"
REWRITES = {
    "dovecot": {"header_8bit": "kept", "bare_cr": "kept", "bare_lf": "crlf", "nul": "0x80",
                "missing_final_crlf": "kept"},
    "cyrus": {"header_8bit": "X", "bare_cr": "kept", "bare_lf": "refused", "nul": "refused",
              "missing_final_crlf": "kept"},
    "courier": {"header_8bit": "kept", "bare_cr": "removed", "bare_lf": "crlf", "nul": "kept",
                "missing_final_crlf": "added"},
}


def _prepare_start(d, seed, users, target_users, append_limit, alt_special_use):
    """Checks the arguments of start; returns (DIR, users, target_users, seeded, bench_n)."""
    d = os.path.abspath(d)
    p = paths(d)
    if os.path.exists(p["json"]) or os.path.exists(p["conf"]) or os.path.exists(os.path.join(d, "kind")):
        if is_running(d):
            raise HarnessError(f"a test server is already running in {d}")
        raise HarnessError(f"{d} already holds a test server; stop it and remove the directory first")
    if os.path.exists(d) and os.listdir(d):
        raise HarnessError(f"{d} exists and is not empty")
    users = list(dict.fromkeys(users))
    target_users = [u for u in dict.fromkeys(target_users) if u not in users]
    bench_n = None
    if seed.startswith("bench:"):
        try:
            bench_n = int(seed.split(":", 1)[1])
        except ValueError:
            bench_n = -1
        if bench_n < 0:
            raise HarnessError(f"bad seed {seed!r}: use bench:N with N >= 0")
    elif seed not in ("default", "none"):
        raise HarnessError(f"bad seed {seed!r}: use default, none, bench:N or small:N")
    for u in users + target_users:
        check_user_name(u)
    if append_limit < 0:
        raise HarnessError("--append-limit must be >= 0")
    if alt_special_use and alt_special_use not in ALT_SPECIAL_USE:
        raise HarnessError(f"bad --alt-special-use {alt_special_use!r}: use {' or '.join(ALT_SPECIAL_USE)}")
    seeded = {}
    if seed != "none":
        for u in users:
            seeded[u] = "default"
    if bench_n is not None:
        if "bench" not in users:
            users.append("bench")
        seeded["bench"] = f"bench:{bench_n}"
    return d, users, target_users, seeded, bench_n


def make_instance_dir(d, identity):
    """Creates DIR (mode 0711, reachable by the servers' unprivileged users)."""
    _check_reachable(d, identity)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o711)
    _check_reachable(d, identity)  # parents just made under a restrictive umask


def start(d, seed="default", users=("alice", "bob"), target_users=(), timeout=10.0, alt_special_use=None,
          append_limit=DEFAULT_APPEND_LIMIT, verbose=False, kind="dovecot", altnamespace=False,
          unixhierarchysep=False, login_hook=None, trust_loopback=False, post_login=None):
    """Creates DIR, generates config, certificates and mail, starts the server
    (Dovecot, Cyrus or Courier) and returns the server info (also written to
    DIR/server.json)."""
    if kind not in KINDS:
        raise HarnessError(f"bad kind {kind!r}: use {', '.join(KINDS)}")
    if kind != "cyrus" and (altnamespace or unixhierarchysep):
        raise HarnessError("--altnamespace and --unixhierarchysep are Cyrus options")
    t0 = time.monotonic()
    d, users, target_users, seeded, bench_n = _prepare_start(d, seed, users, target_users, append_limit,
                                                              alt_special_use)
    if kind != "dovecot" and (login_hook or trust_loopback or post_login):
        raise HarnessError("--login-hook, --post-login and --trust-loopback are Dovecot options")
    if kind != "dovecot":
        from . import others
        return others.start(kind, d, users=users, target_users=target_users, seeded=seeded, seed=seed,
                            timeout=timeout, alt_special_use=alt_special_use, append_limit=append_limit,
                            verbose=verbose, altnamespace=altnamespace, unixhierarchysep=unixhierarchysep)
    p = paths(d)
    identity = _identity()
    make_instance_dir(d, identity)
    for sub in ("run", "state"):
        os.makedirs(p[sub], mode=0o755, exist_ok=True)
    os.makedirs(p["mail"], mode=0o700, exist_ok=True)
    if identity["mail_owner"]:
        os.chown(p["mail"], *identity["mail_owner"])

    make_certificates(d)
    t_certs = time.monotonic()

    # Accounts and their mail.
    all_users = users + [u for u in target_users if u not in users]
    passwords = {u: new_password() for u in all_users}
    master_password = new_password()
    for u, pw in passwords.items():
        write_passwd(d, u, pw, identity)
    write_private(p["masters"], _passwd_line(MASTER_USER, master_password), identity["auth_owner"])
    for u in all_users:
        maildir = os.path.join(p["mail"], u, "Maildir")
        plan = seeding.plan_for(u, seeded.get(u, "none"))
        if alt_special_use and u in target_users:
            plan = [seeding.Folder(name, True) for name in ALT_SPECIAL_USE[alt_special_use]]
        _prepare_home(d, u, identity)
        seeding.write_maildir(maildir, plan, identity["mail_owner"])
    t_seed = time.monotonic()

    instance = "ts-" + secrets.token_hex(4)
    attempt = 0
    while True:
        attempt += 1
        imap_port, imaps_port = _free_port(), _free_port()
        if imap_port == imaps_port:
            continue
        pop3_ports = (_free_port(), _free_port()) if pop3_available() else None
        if pop3_ports and len({imap_port, imaps_port, *pop3_ports}) != 4:
            continue
        with open(p["conf"], "w", encoding="utf-8") as f:
            f.write(render_config(d, imap_port, imaps_port, identity, instance, append_limit, login_hook,
                                  trust_loopback, post_login, pop3_ports=pop3_ports))
        os.chmod(p["conf"], 0o644)
        with open(p["start_log"], "wb") as out:
            r = subprocess.run([DOVECOT, "-c", p["conf"]], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                               close_fds=True)
        if r.returncode == 0:
            break
        text = _log_tail(d, ("start_log", "log"))
        if "Address already in use" in text and attempt < 6:
            continue
        raise HarnessError(f"dovecot failed to start (exit {r.returncode})" + text)
    try:
        _wait_ready(d, imap_port, imaps_port, time.monotonic() + timeout)
        if pop3_ports:
            _wait_ready(d, *pop3_ports, time.monotonic() + timeout, "Dovecot POP3", greeting=b"+OK")
    except BaseException:
        stop(d)
        raise
    pid = _master_pid(d)
    t_up = time.monotonic()

    info = {
        "kind": "dovecot",
        "host": HOST,
        "imap_port": imap_port,
        "imaps_port": imaps_port,
        "pop3_port": pop3_ports[0] if pop3_ports else None,
        "pop3s_port": pop3_ports[1] if pop3_ports else None,
        "ca_file": p["ca"],
        "users": passwords,
        "logins": {u: u for u in passwords},
        "master_user": MASTER_USER,
        "master_password": master_password,
        "master_separator": MASTER_SEPARATOR,
        "admin_user": None,
        "admin_password": None,
        "dir": d,
        "pid": pid,
        "instance": "dovecot-" + instance,
        "config": p["conf"],
        "log": p["log"],
        "seed": seed,
        "seeded": seeded,
        "target_users": target_users,
        "append_limit": append_limit or None,
        "personal_namespace": {"prefix": "", "separator": "/"},
        "namespaces": {"personal": [{"prefix": "", "separator": "/"}], "other": [], "shared": []},
        "special_use": True,
        "rewrites": REWRITES["dovecot"],
    }
    save_info(d, info)
    if verbose:
        print(f"certificates {t_certs - t0:.3f}s, accounts and mail {t_seed - t_certs:.3f}s, "
              f"dovecot up {t_up - t_seed:.3f}s, total {t_up - t0:.3f}s", file=sys.stderr)
    return info


def _prepare_home(d, user, identity):
    home = os.path.join(paths(d)["mail"], user)
    os.makedirs(home, mode=0o700, exist_ok=True)
    if identity["mail_owner"]:
        os.chown(home, *identity["mail_owner"])
    seeding.make_maildir(os.path.join(home, "Maildir"), identity["mail_owner"])


def stop(d, grace=5.0):
    """Stops the instance and waits until none of its processes is left
    (SIGTERM to the master and its session, SIGKILL after `grace` seconds).
    Returns the number of processes that were found. Idempotent."""
    d = os.path.abspath(d)
    if instance_kind(d) != "dovecot":
        from . import others
        return others.stop(d, grace)
    info = {}
    try:
        with open(paths(d)["json"], encoding="utf-8") as f:
            info = json.load(f)
    except (FileNotFoundError, ValueError):
        pass
    master = _master_pid(d) or info.get("pid")
    instance = info.get("instance")
    procs = instance_processes(d, master, instance)
    if not procs:
        return 0
    count = len(procs)
    # The master alone shuts its children down in about a second; signalling the whole
    # session at once makes every process exit right away.
    for pid in procs:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + grace
    while time.monotonic() < end:
        procs = instance_processes(d, master, instance)
        if not procs:
            return count
        time.sleep(0.01)
    for pid in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 5
    while time.monotonic() < end:
        if not instance_processes(d, master, instance):
            return count
        time.sleep(0.01)
    raise HarnessError(f"processes of {d} still alive after SIGKILL: {instance_processes(d, master, instance)}")


# --- accounts -------------------------------------------------------------------------

def add_user(d, name, password=None, seed="none"):
    """Adds an account, empty or with the mail of `seed` ("default", "bench:N");
    an existing one keeps its password and mail unless a new password is given.
    Returns the password."""
    check_user_name(name)
    if seed != "none" and seed != "default" and not re.match(r"^(bench|small):\d+$", seed):
        raise HarnessError(f"bad seed {seed!r}: use default, none, bench:N or small:N")
    d = os.path.abspath(d)
    if instance_kind(d) != "dovecot":
        from . import others
        return others.add_user(d, name, password, seed)
    with Lock(d):
        info = load_info(d)
        identity = _identity()
        users = info["users"]
        if name in users and (password is None or password == users[name]):
            return users[name]
        changed = name in users
        users[name] = password if password is not None else new_password()
        _passwd_line(name, users[name])
        if not changed:
            _prepare_home(d, name, identity)
            if seed != "none":
                maildir = os.path.join(paths(d)["mail"], name, "Maildir")
                seeding.write_maildir(maildir, seeding.plan_for(name, seed), identity["mail_owner"])
                info.setdefault("seeded", {})[name] = seed
        write_passwd(d, name, users[name], identity)
        save_info(d, info)
    if changed:
        _wait_for_login(info, name, users[name])
    return users[name]


def _wait_for_login(info, user, password, timeout=3.0):
    """Waits until Dovecot accepts a changed password (it re-reads a passwd-file
    at most once a second)."""
    from .imapclient import Client, IMAPError
    end = time.monotonic() + timeout
    while True:
        try:
            c = Client(info["host"], info["imap_port"], timeout=5)
            try:
                c.login_plain(user, password)
                c.logout()
                return
            finally:
                c.close()
        except IMAPError as e:
            if time.monotonic() > end:
                raise HarnessError(f"the server does not accept the new password of {user}: {e}") from None
        time.sleep(0.1)


def doveadm(d, *args):
    """Runs doveadm against this instance's config; returns stdout."""
    r = _run_checked([DOVEADM, "-c", paths(d)["conf"], *args])
    return r.stdout

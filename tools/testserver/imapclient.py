"""A small IMAP4rev1 client for the test harness (Python standard library only).

It sends commands with exact bytes (literals are never rewritten), uses
LITERAL+ when the server offers it, and parses responses into Python values:
atoms as `Atom` (a str), quoted strings and literals as bytes, NIL as None,
parenthesized lists as lists.
"""

import base64
import socket

__all__ = ["Atom", "Client", "IMAPError", "NoResponse", "Response", "Untagged", "quote_arg", "uid_set"]


class IMAPError(Exception):
    """Protocol or connection failure."""


class NoResponse(IMAPError):
    """The server answered a command with NO or BAD."""

    def __init__(self, command, status, code, text):
        super().__init__(f"{command}: {status} {('[' + code + '] ') if code else ''}{text}")
        self.status = status
        self.code = code
        self.text = text


class Atom(str):
    """An unquoted token from a response (flags, numbers, NIL excepted)."""


class Literal:
    """A command argument sent as an IMAP literal (exact bytes)."""

    def __init__(self, data):
        self.data = bytes(data)


class Untagged:
    """One untagged response: `kind` (upper case), `number` for "* N KIND",
    `values` (parsed tokens after the kind), or `code`/`text` for status responses."""

    def __init__(self, kind, number=None, values=None, code=None, text=None):
        self.kind = kind
        self.number = number
        self.values = values or []
        self.code = code
        self.text = text

    def __repr__(self):
        return f"Untagged({self.kind!r}, {self.number!r}, {self.values!r}, {self.code!r}, {self.text!r})"


class Response:
    """The result of a command: its untagged responses and the tagged status."""

    def __init__(self, status, code, text, untagged):
        self.status = status
        self.code = code
        self.text = text
        self.untagged = untagged

    def codes(self):
        """Response codes from the untagged OKs and the tagged reply, as (name, rest) pairs."""
        out = []
        for u in self.untagged:
            if u.code:
                out.append(_split_code(u.code))
        if self.code:
            out.append(_split_code(self.code))
        return out

    def code_value(self, name):
        for n, rest in self.codes():
            if n == name:
                return rest
        return None

    def of_kind(self, kind):
        return [u for u in self.untagged if u.kind == kind]


def _split_code(code):
    name, _, rest = code.partition(" ")
    return name.upper(), rest


def quote_arg(s):
    """A command argument for an astring: a quoted string when possible, else a literal."""
    if isinstance(s, str):
        b = s.encode("utf-8")
    else:
        b = bytes(s)
    if all(0x20 <= c <= 0x7E for c in b):
        return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return Literal(b)


def uid_set(uids):
    """A compact sequence set ("1:5,7,9:10") for sorted or unsorted UIDs."""
    uids = sorted(set(int(u) for u in uids))
    parts = []
    i = 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        parts.append(str(uids[i]) if i == j else f"{uids[i]}:{uids[j]}")
        i = j + 1
    return ",".join(parts)


_ATOM_END = b" ()\r\n"


class Client:
    """One IMAP connection (plain TCP; the harness uses the loopback plain port)."""

    def __init__(self, host, port, timeout=120):
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise IMAPError(f"cannot connect to {host}:{port}: {e}") from e
        self.rfile = self.sock.makefile("rb", buffering=1 << 16)
        self._tag = 0
        self._line = b""
        self._pos = 0
        self.capabilities = set()
        greeting = self._read_response()
        if not isinstance(greeting, Untagged) or greeting.kind not in ("OK", "PREAUTH"):
            raise IMAPError(f"unexpected greeting from {host}:{port}: {greeting!r}")
        if greeting.code and greeting.code.upper().startswith("CAPABILITY "):
            self.capabilities = set(greeting.code.upper().split()[1:])

    # --- connection ---------------------------------------------------------

    def close(self):
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def logout(self):
        try:
            self.command(b"LOGOUT")
        except IMAPError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.logout()
        else:
            self.close()

    # --- commands -----------------------------------------------------------

    def command(self, *args, check=True):
        """Sends one command (arguments: bytes or str sent as they are, `Literal`
        for literals) and returns its `Response`; raises NoResponse on NO/BAD
        when `check`."""
        self._tag += 1
        tag = f"T{self._tag}".encode()
        plus = "LITERAL+" in self.capabilities
        buf = tag
        for a in args:
            buf += b" "
            if isinstance(a, Literal):
                if plus:
                    buf += b"{%d+}\r\n" % len(a.data) + a.data
                else:
                    buf += b"{%d}\r\n" % len(a.data)
                    self.sock.sendall(buf)
                    buf = b""
                    refused = self._wait_continuation(tag)
                    if refused:
                        # The server answered instead of asking for the literal (Courier: NO [TRYCREATE]).
                        return self._finish(args, tag, refused, [], check)
                    buf = a.data
            elif isinstance(a, str):
                buf += a.encode("utf-8")
            else:
                buf += a
        buf += b"\r\n"
        self.sock.sendall(buf)
        untagged = []
        while True:
            r = self._read_response()
            if isinstance(r, Untagged):
                untagged.append(r)
                if r.kind == "CAPABILITY":
                    self.capabilities = set(str(v).upper() for v in r.values)
                if r.kind == "BYE":
                    pass
                continue
            if r is None:
                continue  # a stray continuation request
            return self._finish(args, tag, r, untagged, check)

    def _finish(self, args, tag, r, untagged, check):
        rtag, status, code, text = r
        if rtag != tag:
            raise IMAPError(f"response for unknown tag {rtag!r}")
        if code and code.upper().startswith("CAPABILITY "):
            self.capabilities = set(code.upper().split()[1:])
        resp = Response(status, code, text, untagged)
        if check and status != "OK":
            name = args[0] if isinstance(args[0], str) else bytes(args[0]).decode("ascii", "replace")
            if name.upper() == "UID" and len(args) > 1:
                name += " " + (args[1] if isinstance(args[1], str) else bytes(args[1]).decode("ascii", "replace"))
            raise NoResponse(name, status, code, text)
        return resp

    def _wait_continuation(self, tag):
        """None once the server asks for the literal, or the tagged reply it sent instead."""
        while True:
            r = self._read_response()
            if r is None:
                return None
            if isinstance(r, tuple):
                return r

    def login_plain(self, user, password, authzid=""):
        """AUTHENTICATE PLAIN with an initial response (works for any password bytes)."""
        token = f"{authzid}\0{user}\0{password}".encode("utf-8")
        resp = self.command(b"AUTHENTICATE", b"PLAIN", base64.b64encode(token), check=False)
        if resp.status != "OK":
            raise NoResponse(f"login as {user}", resp.status, resp.code, resp.text)
        if not resp.code or not resp.code.upper().startswith("CAPABILITY "):
            self.command(b"CAPABILITY")
        return resp

    def login(self, user, password):
        """AUTHENTICATE PLAIN when the server offers it, else LOGIN (Courier
        offers AUTH=PLAIN only after STARTTLS). Raises NoResponse if refused."""
        if not self.capabilities:
            self.command(b"CAPABILITY")
        if "AUTH=PLAIN" in self.capabilities:
            return self.login_plain(user, password)
        resp = self.command(b"LOGIN", quote_arg(user), quote_arg(password), check=False)
        if resp.status != "OK":
            raise NoResponse(f"login as {user}", resp.status, resp.code, resp.text)
        if not resp.code or not resp.code.upper().startswith("CAPABILITY "):
            self.command(b"CAPABILITY")
        return resp

    # --- response parsing ---------------------------------------------------

    def _next_line(self):
        line = self.rfile.readline(1 << 20)
        if not line:
            raise IMAPError("the server closed the connection")
        if not line.endswith(b"\n"):
            raise IMAPError("response line too long or truncated")
        if line.endswith(b"\r\n"):
            line = line[:-2]
        else:
            line = line[:-1]
        self._line = line
        self._pos = 0

    def _read_response(self):
        """One whole response: Untagged, None for a continuation request, or
        (tag, status, code, text) for a tagged one."""
        self._next_line()
        line = self._line
        if line.startswith(b"+"):
            return None
        sp = line.find(b" ")
        if sp < 0:
            raise IMAPError(f"malformed response: {line[:200]!r}")
        tag = line[:sp]
        self._pos = sp + 1
        if tag == b"*":
            word_end = self._atom_end(self._pos)
            first = line[self._pos:word_end].decode("ascii", "replace")
            if first.upper() in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
                self._pos = word_end
                code, text = self._status_rest()
                return Untagged(first.upper(), code=code, text=text)
            values = []
            while True:
                self._skip_spaces()
                if self._pos >= len(self._line):
                    break
                values.append(self._parse_value())
            if not values:
                raise IMAPError(f"empty untagged response: {line[:200]!r}")
            if isinstance(values[0], Atom) and values[0].isdigit() and len(values) >= 2:
                return Untagged(str(values[1]).upper(), int(values[0]), values[2:])
            return Untagged(str(values[0]).upper(), None, values[1:])
        word_end = self._atom_end(self._pos)
        status = line[self._pos:word_end].decode("ascii", "replace").upper()
        self._pos = word_end
        code, text = self._status_rest()
        return tag, status, code, text

    def _status_rest(self):
        self._skip_spaces()
        line = self._line
        code = None
        if self._pos < len(line) and line[self._pos:self._pos + 1] == b"[":
            end = line.find(b"]", self._pos)
            if end < 0:
                end = len(line)
            code = line[self._pos + 1:end].decode("utf-8", "replace")
            self._pos = end + 1
            self._skip_spaces()
        text = line[self._pos:].decode("utf-8", "replace")
        self._pos = len(line)
        return code, text

    def _skip_spaces(self):
        while self._pos < len(self._line) and self._line[self._pos] == 0x20:
            self._pos += 1

    def _atom_end(self, pos):
        line = self._line
        n = len(line)
        while pos < n:
            c = line[pos]
            if c == 0x5B:  # '[' : a section, may hold spaces and parentheses
                end = line.find(b"]", pos)
                pos = n if end < 0 else end + 1
                continue
            if c in _ATOM_END:
                break
            pos += 1
        return pos

    def _parse_value(self):
        line = self._line
        if self._pos >= len(line):
            raise IMAPError("unexpected end of response line")
        c = line[self._pos]
        if c == 0x28:  # '('
            self._pos += 1
            out = []
            while True:
                self._skip_spaces()
                if self._pos >= len(self._line):
                    raise IMAPError("unterminated list in response")
                if self._line[self._pos] == 0x29:  # ')'
                    self._pos += 1
                    return out
                out.append(self._parse_value())
        if c == 0x22:  # '"'
            i = self._pos + 1
            buf = bytearray()
            while i < len(line):
                ch = line[i]
                if ch == 0x5C and i + 1 < len(line):
                    buf.append(line[i + 1])
                    i += 2
                    continue
                if ch == 0x22:
                    self._pos = i + 1
                    return bytes(buf)
                buf.append(ch)
                i += 1
            raise IMAPError("unterminated quoted string in response")
        if c == 0x7B:  # '{'
            end = line.find(b"}", self._pos)
            if end < 0 or end != len(line) - 1:
                raise IMAPError(f"malformed literal in response: {line[self._pos:self._pos + 40]!r}")
            size = int(line[self._pos + 1:end].rstrip(b"+"))
            data = self.rfile.read(size)
            if len(data) != size:
                raise IMAPError("the server closed the connection inside a literal")
            self._next_line()
            return data
        end = self._atom_end(self._pos)
        if end == self._pos:
            raise IMAPError(f"unexpected character in response: {line[self._pos:self._pos + 40]!r}")
        word = line[self._pos:end].decode("utf-8", "replace")
        self._pos = end
        if word.upper() == "NIL":
            return None
        return Atom(word)


def fetch_items(u):
    """The items of an untagged FETCH as a dict keyed by upper-case item name."""
    if not u.values or not isinstance(u.values[0], list):
        return {}
    items = u.values[0]
    out = {}
    for i in range(0, len(items) - 1, 2):
        out[str(items[i]).upper()] = items[i + 1]
    return out

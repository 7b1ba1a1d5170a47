"""Modified UTF-7 mailbox names (RFC 3501 section 5.1.3).

Printable US-ASCII (0x20-0x7e) stands for itself except "&", which is written
"&-". Any other run of characters is written as "&" + modified BASE64 of its
UTF-16BE form ("," instead of "/", no "=" padding) + "-".
"""

import base64

__all__ = ["encode", "decode", "MUTF7Error"]


class MUTF7Error(ValueError):
    """A string that is not valid modified UTF-7."""


def _is_direct(ch):
    return 0x20 <= ord(ch) <= 0x7E


def _flush(run, out):
    if run:
        raw = "".join(run).encode("utf-16-be")
        out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
        run.clear()


def encode(name):
    """UTF-8 text (a Python str) to its modified UTF-7 form."""
    out = []
    run = []
    for ch in name:
        if _is_direct(ch):
            _flush(run, out)
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    _flush(run, out)
    return "".join(out)


def decode(raw):
    """Modified UTF-7 (str or bytes) to text. Raises MUTF7Error on malformed input."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError as e:
            raise MUTF7Error(f"not ASCII: {raw!r}") from e
    out = []
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        if not _is_direct(ch):
            raise MUTF7Error(f"character {ch!r} not allowed in modified UTF-7: {raw!r}")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = raw.find("-", i + 1)
        if end < 0:
            raise MUTF7Error(f"unterminated '&' shift in {raw!r}")
        chunk = raw[i + 1:end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        if any(not (c.isalnum() and c.isascii()) and c not in "+," for c in chunk):
            raise MUTF7Error(f"bad modified BASE64 {chunk!r} in {raw!r}")
        if len(chunk) % 4 == 1:
            raise MUTF7Error(f"bad modified BASE64 length in {raw!r}")
        data = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4))
        if len(data) % 2:
            raise MUTF7Error(f"odd UTF-16 length in {raw!r}")
        try:
            text = data.decode("utf-16-be")
        except UnicodeDecodeError as e:
            raise MUTF7Error(f"bad UTF-16 in {raw!r}") from e
        out.append(text)
    return "".join(out)

"""Command line of tools/fault-proxy."""

import argparse
import asyncio
import json
import math
import os
import sys

from . import proxy as engine
from . import rules as rulemod

DESCRIPTION = """\
A TCP proxy that injects network faults between a client and a server. It
only forwards bytes (TLS passes through untouched). Connections are numbered
1, 2, ... in the order they are accepted; the command-line faults apply to
the connections --on selects (default: all), and --rules adds per-connection
rules on top.

Once listening it prints one JSON line on stdout and nothing else there:
  {"host": H, "port": N, "target": "HOST:PORT", "pid": PID, "seed": S}
Events go to stderr (or --log FILE), one JSON object per line:
  {"t": seconds since start, "event": "listen"|"open"|"close"|"cut"|"stall"|
   "resume"|"error"|"exit", "conn": N, ...}
  open   client, and the faults given to it (delay_ms, rate, cut_at,
         cut_direction, stall_at, stall_direction, stall_seconds, reset)
  cut    at, direction, up, down (bytes forwarded each way), reset, cut_number
  stall  at, direction, seconds (null: for good), up, down, stall_number
  resume up, down
  close  reason (eof, cut, closed while stalled, error: ..., shutdown,
         connect to target failed: ...), up, down, seconds
  exit   reason (SIGTERM, SIGINT, max-seconds, parent exited), connections,
         cuts, stalls

Byte offsets count what the proxy forwarded: "up" client to target, "down"
target to client, "both" the two added together. A chunk crossing an offset
is split, so exactly that many bytes get through.

Faults:
  delay    every chunk is released DELAY ms after it arrived, in order, each
           way; pipelined data keeps its throughput (a round trip gains
           2 x DELAY)
  rate     at most RATE bytes/s each way
  cut      after the offset, forwarding stops; what was forwarded is
           delivered, then both sides get FIN (with --reset: RST, after the
           peers acknowledged the forwarded bytes); what the peers send
           afterwards is dropped. --cut-random draws a fresh offset per
           connection. --cuts K: after K cuts, connections are forwarded
           cleanly.
  stall    after the offset, nothing is forwarded either way for
           --stall-seconds (default: for good), sockets stay open; then
           forwarding resumes with what arrived meanwhile. During a stall
           for good, the connection ends (FIN both sides) as soon as either
           peer closes. --stalls K limits the number of stalls.

Random choices (--cut-random, "random:P" selectors) come from --seed and
the connection number: the same seed gives the same faults to the same
connection numbers. Without --seed a random seed is used and printed.

Rules (--rules FILE, or inline JSON starting with "["): a list of objects,
each with "on" (a selector, default "all") and any of delay, rate,
cut_after, cut_random ("MIN:MAX" or [MIN, MAX]), cut_direction, stall_after,
stall_seconds, stall_direction, reset. A connection gets the command-line
faults (if --on selects it), then every matching rule in order, later
fields overriding earlier ones. SIGHUP re-reads the rules file (for new
connections). Example: every connection delayed, the 3rd cut after 100 KB
and the 5th stalled for good after 1 KB downstream:
  --delay 10 --rules '[{"on": "3", "cut_after": 100000},
                       {"on": "5", "stall_after": 1000, "stall_direction": "down"}]'

Selectors: comma-separated "all", N, N-M, N- (from N on), and optionally
"random:P" (each admitted connection is picked with probability P).

SIGTERM or SIGINT: stops at once, closing every connection (exit 0).
Exit status: 0 stopped, 1 failure (reason on stderr), 2 bad command line."""


def _hostport(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "127.0.0.1", int(port)


def _range(text):
    try:
        return rulemod.parse_range(text)
    except rulemod.RuleError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _selector(text):
    try:
        return rulemod.Selector(text)
    except rulemod.RuleError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _nonneg(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if v < 0 or (isinstance(v, float) and not math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
        return v
    return parse


def _seconds_or_inf(text):
    if text.lower() in ("inf", "forever", "-1"):
        return math.inf
    return _nonneg(float)(text)


def _parser():
    p = argparse.ArgumentParser(prog="fault-proxy", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 0), metavar="HOST:PORT",
                   help="where to listen (default 127.0.0.1:0, a free port)")
    p.add_argument("--target", type=_hostport, required=True, metavar="HOST:PORT", help="where to connect")
    p.add_argument("--on", type=_selector, default=None, metavar="SELECTOR",
                   help="connections the command-line faults apply to (default: all)")
    p.add_argument("--delay", type=_nonneg(float), metavar="MS", help="one-way latency, each way")
    p.add_argument("--rate", type=_nonneg(float), metavar="BYTES_PER_SEC", help="bandwidth cap, each way")
    p.add_argument("--cut-after", type=_nonneg(int), metavar="N", help="cut the connection after N bytes")
    p.add_argument("--cut-random", type=_range, metavar="MIN:MAX",
                   help="cut after a random offset in MIN..MAX, drawn per connection")
    p.add_argument("--cut-direction", choices=rulemod.DIRECTIONS, metavar="up|down|both",
                   help="bytes the cut offset counts (default both)")
    p.add_argument("--cuts", type=_nonneg(int), metavar="K", help="cut at most K connections in all")
    p.add_argument("--stall-after", type=_nonneg(int), metavar="N", help="stall after N bytes")
    p.add_argument("--stall-seconds", type=_seconds_or_inf, metavar="T",
                   help="how long a stall lasts (default inf: until the connection ends)")
    p.add_argument("--stall-direction", choices=rulemod.DIRECTIONS, metavar="up|down|both",
                   help="bytes the stall offset counts (default both)")
    p.add_argument("--stalls", type=_nonneg(int), metavar="K", help="stall at most K connections in all")
    p.add_argument("--reset", action="store_true", default=None, help="cut with RST (SO_LINGER 0) instead of FIN")
    p.add_argument("--rules", metavar="FILE|JSON", help="per-connection rules (see above)")
    p.add_argument("--seed", help="seed of the random choices (default: random, printed)")
    p.add_argument("--max-seconds", type=_nonneg(float), metavar="S", help="exit after S seconds")
    p.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process is gone")
    p.add_argument("--buffer", type=_nonneg(int), default=16 << 20, metavar="BYTES",
                   help="bytes held per direction and connection before reading pauses (default 16 MiB)")
    p.add_argument("--connect-timeout", type=_nonneg(float), default=10.0, metavar="S",
                   help="time to connect to the target (default 10)")
    p.add_argument("--log", metavar="FILE", help="append events to FILE instead of stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="log no events")
    return p


def _load_rules(source):
    text = source
    if not source.lstrip().startswith(("[", "{")):
        with open(source, encoding="utf-8") as f:
            text = f.read()
    try:
        return rulemod.parse_rules(json.loads(text))
    except json.JSONDecodeError as e:
        raise rulemod.RuleError(f"rules are not JSON: {e}") from None


def main(argv):
    parser = _parser()
    a = parser.parse_args(argv)
    if a.cut_after is not None and a.cut_random is not None:
        parser.error("--cut-after and --cut-random exclude each other")
    cli_fields = {"delay": a.delay, "rate": a.rate, "cut_after": a.cut_after, "cut_random": a.cut_random,
                  "cut_direction": a.cut_direction, "stall_after": a.stall_after,
                  "stall_seconds": a.stall_seconds, "stall_direction": a.stall_direction, "reset": a.reset}
    try:
        cli_rule = rulemod.Rule(on=a.on or "all", **cli_fields)
        file_rules = _load_rules(a.rules) if a.rules else []
    except (rulemod.RuleError, OSError) as e:
        print(f"fault-proxy: {e}", file=sys.stderr)
        return 2 if isinstance(e, rulemod.RuleError) else 1

    seed = a.seed if a.seed is not None else os.urandom(8).hex()
    ruleset = rulemod.RuleSet([cli_rule] + file_rules, seed)

    try:
        log_stream = None if a.quiet else (open(a.log, "a", encoding="utf-8") if a.log else sys.stderr)
    except OSError as e:
        print(f"fault-proxy: cannot open log {a.log}: {e.strerror}", file=sys.stderr)
        return 1
    log = engine.Log(log_stream)

    def reload_rules():
        if not a.rules or a.rules.lstrip().startswith(("[", "{")):
            return
        try:
            ruleset.rules = [cli_rule] + _load_rules(a.rules)
            log.event("rules", rules=len(ruleset.rules) - 1)
        except (rulemod.RuleError, OSError) as e:
            log.event("error", error=f"rules not reloaded: {e}")

    try:
        sock = engine.listening_socket(*a.listen)
    except OSError as e:
        print(f"fault-proxy: cannot listen on {a.listen[0]}:{a.listen[1]}: {e}", file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    target = f"{a.target[0]}:{a.target[1]}"
    proxy = engine.Proxy(a.target, ruleset, log, cuts_limit=a.cuts, stalls_limit=a.stalls,
                         buffer_limit=max(1, a.buffer), connect_timeout=a.connect_timeout)

    def ready():
        engine.write_ready({"host": host, "port": port, "target": target, "pid": os.getpid(), "seed": seed})
        log.event("listen", host=host, port=port, target=target, seed=seed)

    try:
        asyncio.run(proxy.serve(sock, max_seconds=a.max_seconds, exit_with_parent=a.exit_with_parent,
                                reload_rules=reload_rules, ready=ready))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0

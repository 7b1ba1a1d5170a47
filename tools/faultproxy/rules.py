"""Which faults a connection gets: connection selectors and rules.

A rule is a set of fault settings plus a selector saying which connections it
applies to. Connections are numbered 1, 2, ... in the order they are accepted.
The settings of a connection are those of every matching rule merged in
order, a later rule overriding the fields it sets.

Selector grammar (the "on" of a rule, --on on the command line):
  selector := item ("," item)*
  item     := "all" | "*" | N | N "-" M | N "-" | "random:" P
The number ranges are alternatives; "random:P" additionally makes each
connection they admit match with probability P (0..1), drawn from the seed and
the connection number, so a given seed always picks the same connections.
"random:P" alone admits every connection before the draw.
"""

import math
import random

DIRECTIONS = ("up", "down", "both")

# Fields of a rule, with the type each is parsed to.
FIELDS = {
    "delay": float,           # one-way latency in ms, both directions
    "rate": float,            # bytes per second, each direction
    "cut_after": int,         # bytes after which the connection is cut
    "cut_random": tuple,      # (min, max): a fresh random cut offset per connection
    "cut_direction": str,     # what cut offsets count: up, down or both
    "stall_after": int,       # bytes after which forwarding stops
    "stall_seconds": float,   # how long it stops (inf: until the connection ends)
    "stall_direction": str,   # what stall offsets count: up, down or both
    "reset": bool,            # cut with RST instead of FIN
}


class RuleError(ValueError):
    """A malformed selector or rule."""


class Selector:
    def __init__(self, text="all"):
        self.text = text
        self.ranges = []          # (first, last or None)
        self.probability = None
        items = [i.strip() for i in str(text).split(",") if i.strip()]
        if not items:
            raise RuleError("empty connection selector")
        for item in items:
            low = item.lower()
            if low in ("all", "*"):
                self.ranges.append((1, None))
            elif low.startswith("random:"):
                try:
                    p = float(low[len("random:"):])
                except ValueError:
                    raise RuleError(f"bad probability in {item!r}") from None
                if not 0.0 <= p <= 1.0:
                    raise RuleError(f"probability out of 0..1 in {item!r}")
                self.probability = p
            elif "-" in low:
                first, _, last = low.partition("-")
                self.ranges.append((_number(first, item), _number(last, item) if last else None))
            else:
                n = _number(low, item)
                self.ranges.append((n, n))
        if not self.ranges:
            self.ranges.append((1, None))

    def matches(self, conn, rng):
        """Whether connection number `conn` is selected; `rng` is used only for random:P."""
        if not any(conn >= a and (b is None or conn <= b) for a, b in self.ranges):
            return False
        if self.probability is not None:
            return rng.random() < self.probability
        return True


def _number(text, item):
    try:
        n = int(text)
    except ValueError:
        raise RuleError(f"bad connection number in {item!r}") from None
    if n < 1:
        raise RuleError(f"connections are numbered from 1: {item!r}")
    return n


def parse_range(text):
    """"MIN:MAX" -> (min, max) with 0 <= min <= max."""
    if isinstance(text, (list, tuple)) and len(text) == 2:
        lo, hi = text
    else:
        lo, sep, hi = str(text).partition(":")
        if not sep:
            raise RuleError(f"expected MIN:MAX, got {text!r}")
    try:
        lo, hi = int(lo), int(hi)
    except (TypeError, ValueError):
        raise RuleError(f"expected MIN:MAX in bytes, got {text!r}") from None
    if lo < 0 or hi < lo:
        raise RuleError(f"expected 0 <= MIN <= MAX, got {text!r}")
    return (lo, hi)


def _check(name, value):
    kind = FIELDS[name]
    try:
        if kind is tuple:
            return parse_range(value)
        if kind is bool:
            if not isinstance(value, bool):
                raise RuleError(f"{name} must be true or false")
            return value
        if kind is str:
            if value not in DIRECTIONS:
                raise RuleError(f"{name} must be one of {', '.join(DIRECTIONS)}")
            return value
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise RuleError(f"{name} must be a whole number of bytes")
            v = int(value)
        else:
            v = float(value)
    except (TypeError, ValueError):
        raise RuleError(f"bad value for {name}: {value!r}") from None
    if name == "stall_seconds":
        if math.isnan(v):
            raise RuleError("stall_seconds must be a number of seconds or inf")
        return math.inf if v < 0 else v
    if v < 0 or (isinstance(v, float) and not math.isfinite(v)):
        raise RuleError(f"{name} must be a finite number >= 0")
    if name == "rate" and v == 0:
        raise RuleError("rate must be > 0")
    return v


class Rule:
    def __init__(self, on="all", **fields):
        self.selector = on if isinstance(on, Selector) else Selector(on)
        self.fields = {}
        for name, value in fields.items():
            if name not in FIELDS:
                raise RuleError(f"unknown rule field {name!r} (known: on, {', '.join(FIELDS)})")
            if value is not None:
                self.fields[name] = _check(name, value)

    @classmethod
    def from_json(cls, obj):
        if not isinstance(obj, dict):
            raise RuleError("a rule must be a JSON object")
        obj = {k.replace("-", "_"): v for k, v in obj.items()}
        return cls(**obj)


def parse_rules(data):
    """A JSON list of rule objects (or one object) -> [Rule]."""
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise RuleError("rules must be a JSON list of objects")
    return [Rule.from_json(r) for r in data]


class Faults:
    """The faults one connection gets."""

    def __init__(self, fields, rng_for):
        self.delay = fields.get("delay", 0.0) / 1000.0
        self.rate = fields.get("rate")
        self.reset = fields.get("reset", False)
        self.cut_direction = fields.get("cut_direction", "both")
        self.stall_direction = fields.get("stall_direction", "both")
        self.cut_at = fields.get("cut_after")
        if "cut_random" in fields:
            lo, hi = fields["cut_random"]
            self.cut_at = rng_for("cut").randint(lo, hi)
        self.stall_at = fields.get("stall_after")
        self.stall_seconds = fields.get("stall_seconds", math.inf)

    def describe(self):
        out = {}
        if self.delay:
            out["delay_ms"] = round(self.delay * 1000.0, 3)
        if self.rate:
            out["rate"] = self.rate
        if self.cut_at is not None:
            out["cut_at"] = self.cut_at
            out["cut_direction"] = self.cut_direction
        if self.stall_at is not None:
            out["stall_at"] = self.stall_at
            out["stall_direction"] = self.stall_direction
            out["stall_seconds"] = None if math.isinf(self.stall_seconds) else self.stall_seconds
        if self.reset:
            out["reset"] = True
        return out


class RuleSet:
    def __init__(self, rules, seed):
        self.rules = list(rules)
        self.seed = seed

    def faults_for(self, conn):
        """Merges the rules matching connection number `conn`."""
        def rng_for(purpose):
            return random.Random(f"{self.seed}/{conn}/{purpose}")
        fields = {}
        for i, rule in enumerate(self.rules):
            if rule.selector.matches(conn, rng_for(f"rule{i}")):
                fields.update(rule.fields)
        return Faults(fields, rng_for)

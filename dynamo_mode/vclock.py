"""Version vectors and dots: the clocks of the eventual mode.

Pure: no I/O, no clocks, no randomness. Every function returns a new plain
dict and never mutates its arguments.

A ``VClock`` maps node id -> counter >= 1; an absent node means 0, so clocks
that differ only by explicit zeros compare equal. A ``Dot`` (node, n) names the
single event n of ``node`` (Preguiça et al., "Dotted Version Vectors",
2010). A clock ``c`` *contains* a dot iff c[node] >= n: the clock summarises a set
of events closed downward per node, which is what the client context is
(Dynamo §4.4).

A *causal context* is a clock plus a set of extra dots it also contains
(``Dots``): what a client has seen after its own write is "the context it sent
plus the new dot", and a clock alone cannot say that without also claiming the
gap below the dot — a concurrent sibling minted by the same node, which the
client's next write would then silently supersede (found by ops/verify).
``compact`` keeps a context canonical: extra dots never covered by the clock.

The context handed to clients is opaque: URL-safe base64 (no padding) of the
canonical JSON of the clock (sorted keys, no spaces), or of ``[clock, dots]``
when there are extra dots. ``decode_context_full`` is the trust boundary for
client-supplied contexts and rejects anything malformed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Literal

Dot = tuple[str, int]
VClock = Mapping[str, int]
Dots = tuple[Dot, ...]  # sorted, none covered by the clock it goes with
Order = Literal["equal", "before", "after", "concurrent"]

MAX_CONTEXT_ENTRIES = 1000
MAX_CONTEXT_CHARS = 64 * 1024

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def merge(a: VClock, b: VClock) -> dict[str, int]:
    """Pointwise max: the least clock that descends both (a join)."""
    out = dict(a)
    for node, n in b.items():
        if n > out.get(node, 0):
            out[node] = n
    return out


def descends(a: VClock, b: VClock) -> bool:
    """a >= b pointwise: a has seen every event b has seen."""
    return all(a.get(node, 0) >= n for node, n in b.items())


def compare(a: VClock, b: VClock) -> Order:
    """ "before" means a < b (b descends a strictly); "after" means a > b."""
    a_ge, b_ge = descends(a, b), descends(b, a)
    if a_ge and b_ge:
        return "equal"
    if a_ge:
        return "after"
    if b_ge:
        return "before"
    return "concurrent"


def increment(c: VClock, node: str) -> dict[str, int]:
    out = dict(c)
    out[node] = out.get(node, 0) + 1
    return out


def contains(c: VClock, dot: Dot) -> bool:
    node, n = dot
    return c.get(node, 0) >= n


def add_dot(c: VClock, dot: Dot) -> dict[str, int]:
    """The least clock that descends ``c`` and contains ``dot``."""
    node, n = dot
    return merge(c, {node: n})


def covers(c: VClock, dots: Iterable[Dot], dot: Dot) -> bool:
    """The causal context (c, dots) contains ``dot``."""
    return contains(c, dot) or dot in set(dots)


def compact(c: VClock, dots: Iterable[Dot]) -> tuple[dict[str, int], Dots]:
    """The canonical form of a causal context: dots contiguous with the clock are folded
    into it, dots it already contains are dropped."""
    clock = dict(c)
    pending = sorted(set(dots))
    changed = True
    while changed:
        changed = False
        rest = []
        for node, n in pending:
            if clock.get(node, 0) >= n:
                changed = True
            elif clock.get(node, 0) == n - 1:
                clock[node] = n
                changed = True
            else:
                rest.append((node, n))
        pending = rest
    return clock, tuple(pending)


def encode_context_full(c: VClock, dots: Iterable[Dot] = ()) -> str:
    clock, extra = compact(c, dots)
    if not extra:
        return encode_context(clock)
    payload = [clock, [[node, n] for node, n in extra]]
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(canonical.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_context_full(s: str) -> tuple[dict[str, int], Dots]:
    """Parse a client context that may carry extra dots; ValueError on anything malformed."""
    if not isinstance(s, str):
        raise ValueError(f"context must be a string, got {type(s).__name__}")
    if len(s) > MAX_CONTEXT_CHARS:
        raise ValueError(f"context is {len(s)} characters, limit is {MAX_CONTEXT_CHARS}")
    if s == "":
        return {}, ()
    obj = _strict_json(_unbase64(s))
    if isinstance(obj, list):
        if len(obj) != 2 or not isinstance(obj[1], list):
            raise ValueError("context must be a clock or [clock, dots]")
        return compact(validated(obj[0]), validated_dots(obj[1]))
    return validated(obj), ()


def validated_dots(obj: object) -> Dots:
    if not isinstance(obj, list | tuple) or len(obj) > MAX_CONTEXT_ENTRIES:
        raise ValueError(f"context dots must be a list of at most {MAX_CONTEXT_ENTRIES}")
    out = []
    for d in obj:
        if (
            not isinstance(d, list | tuple)
            or len(d) != 2
            or not isinstance(d[0], str)
            or isinstance(d[1], bool)
            or not isinstance(d[1], int)
            or d[1] < 1
        ):
            raise ValueError(f"context dot must be [node, counter >= 1], got {d!r}")
        out.append((d[0], d[1]))
    return tuple(sorted(set(out)))


def encode_context(c: VClock) -> str:
    canonical = json.dumps(dict(c), sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(canonical.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_context(s: str) -> dict[str, int]:
    """Parse a client context; "" is the empty context. ValueError on anything malformed."""
    if not isinstance(s, str):
        raise ValueError(f"context must be a string, got {type(s).__name__}")
    if len(s) > MAX_CONTEXT_CHARS:
        raise ValueError(f"context is {len(s)} characters, limit is {MAX_CONTEXT_CHARS}")
    if s == "":
        return {}
    return validated(_strict_json(_unbase64(s)))


def validated(obj: object) -> dict[str, int]:
    """Check that ``obj`` is a clock (str -> int >= 1, at most 1000 entries); return a copy."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"context must be a JSON object, got {type(obj).__name__}")
    if len(obj) > MAX_CONTEXT_ENTRIES:
        raise ValueError(f"context has {len(obj)} entries, limit is {MAX_CONTEXT_ENTRIES}")
    for node, n in obj.items():
        if not isinstance(node, str):
            raise ValueError(f"context node ids must be strings, got {node!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"context counter for node {node!r} must be an int >= 1, got {n!r}")
    return dict(obj)


def _strict_json(raw: bytes) -> object:
    """UTF-8 JSON without duplicate keys or NaN/Infinity; deep nesting is an error too."""
    try:
        return json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constants,
        )
    except (ValueError, RecursionError) as e:
        raise ValueError(f"context is not valid JSON: {e}") from None


def _unbase64(s: str) -> bytes:
    if _BASE64URL.fullmatch(s) is None:
        raise ValueError("context is not URL-safe base64 (allowed: A-Z a-z 0-9 - _, no padding)")
    try:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"context is not valid base64: {e}") from None


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("context JSON has duplicate keys")
    return out


def _no_constants(name: str) -> object:
    raise ValueError(f"context JSON contains {name}")

"""JSON bytes for what a node stores and sends: its replicas' versions, its Raft state
machine's records, internode frames and API replies (orjson: the only importer).

Adopted by measurement (issue 10, docs/benchmarks.md "Event loop and JSON A/B"): with it an
eventual GET costs about a quarter less server CPU; json.dumps/loads of versions, frames and
replies were 8-9 % of a request's CPU.

Invariant its callers keep: every stored value passed `kv.routing.check_value`, which
refuses what `dumps` cannot write — an integer outside -2**63 .. 2**64-1 (orjson would also
read a larger one back as a float) or a lone UTF-16 surrogate, reason from `refusal` — and
a value nested more than `MAX_VALUE_DEPTH` containers deep (`dumps_value`), and the request
parser refuses NaN, Infinity and non-finite numbers. Every envelope a value travels in
(a stored version set, a Raft record, an internode frame, a reply) adds a few containers,
far fewer than the `ENCODER_DEPTH - MAX_VALUE_DEPTH` left, so each can be written. For
every such value `loads(dumps(x)) == x` (tests/property/test_json_codec_properties.py).
Output is compact UTF-8; dict keys that are not strings are written as strings, as the stdlib does.
"""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS
# orjson writes at most this many nested containers, refusing more with a TypeError
# "Recursion limit reached" (tests/property/test_json_codec_properties.py pins it).
ENCODER_DEPTH = 254
# The deepest value a client may store, in nested lists and objects, in either consistency
# mode (issue 11 item 6); raft_groups/commands.py checks Raft commands against it too.
MAX_VALUE_DEPTH = 100


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTIONS)


def canonical(value: Any) -> bytes:
    """`dumps` with every object's keys sorted, recursively: equal JSON values give equal
    bytes whatever their objects' key order."""
    return orjson.dumps(value, option=_OPTIONS | orjson.OPT_SORT_KEYS)


def dumps_value(value: Any, max_depth: int = MAX_VALUE_DEPTH) -> bytes:
    """`dumps(value)`, refusing (TypeError "Recursion limit reached") a value nested more than
    `max_depth` containers deep. The depth check is orjson's own, so there is no second walk
    over the value: a list or object is written inside `ENCODER_DEPTH - max_depth` lists,
    cut off again; a scalar, which has no depth, is written as it is."""
    if not isinstance(value, list | dict | tuple):
        return dumps(value)  # the padding would cost 75x the dump of a short string
    pad = ENCODER_DEPTH - max_depth
    wrapped = value
    for _ in range(pad):
        wrapped = [wrapped]
    return dumps(wrapped)[pad:-pad] if pad else dumps(wrapped)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; a ValueError on anything malformed, NaN and Infinity included."""
    return orjson.loads(data)


def refusal(exc: TypeError) -> str:
    """Why `dumps` raised `exc` on a value, in a client's words."""
    text = str(exc)
    if "surrogates" in text:
        return "it contains a lone UTF-16 surrogate (not valid Unicode)"
    if "Recursion" in text:
        return f"it is nested deeper than {MAX_VALUE_DEPTH} levels of lists and objects"
    if "Integer" in text:
        return "an integer is outside the range -2**63 .. 2**64-1"
    return text

"""JSON bytes for what a node stores and sends: its replicas' versions, its Raft state
machine's records, internode frames and API replies (orjson: the only importer).

Adopted by measurement (issue 10, docs/benchmarks.md "Event loop and JSON A/B"): with it an
eventual GET costs about a quarter less server CPU; json.dumps/loads of versions, frames and
replies were 8-9 % of a request's CPU.

Invariant its callers keep: every value given to `dumps` came through the API's request
parser (kv/http/app.py `read_json`), which refuses integers outside the signed 64-bit range
(`INT_MIN..INT_MAX`) and non-finite numbers — orjson cannot encode a larger integer, and
would read one back as a float. Within that range `loads(dumps(x)) == x` for any JSON value
(tests/property/test_json_codec_properties.py). Output is compact UTF-8; dict keys that are
not strings are written as strings, as the stdlib does.
"""

from __future__ import annotations

from typing import Any

import orjson

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
DecodeError = orjson.JSONDecodeError  # a ValueError

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTIONS)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; `DecodeError` (a ValueError) on anything malformed, NaN and Infinity
    included."""
    return orjson.loads(data)

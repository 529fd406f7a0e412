"""Fuzz the key and keyspace routes of one real node (DESIGN.md §5, §7).

Random path segments (random bytes percent-encoded, unicode, very long, '..' and friends),
random bodies (random bytes, huge bodies, valid JSON of the wrong types), random query
strings and methods. Whatever arrives, the node must answer with a status from the §5
table, every error body must have the §5 shape, every success body must be RFC 8259 JSON,
and the node must still be healthy afterwards.

The seed is printed (DESIGN.md §7); rerun a failure with `KV_FUZZ_SEED=<seed>`. Hypothesis
also prints the shrunk example and its reproduction blob.

Paths stay below aiohttp's 8190-byte request-line limit: past it aiohttp's HTTP parser
answers before kv/http runs (see test_http_errors.py
`test_request_line_over_the_parser_limit_uses_the_error_shape`).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from kv.http.app import MAX_BODY_BYTES
from kv.routing import MAX_VALUE_BYTES
from tests.integration.conftest import (
    Api,
    Reply,
    auth_node,
    error_of,
    key_path,
    linearizable_keyspace,
    strict_json,
)

SEED = int(os.environ.get("KV_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
MAX_EXAMPLES = int(os.environ.get("KV_FUZZ_EXAMPLES") or 1000)

# Every status §5 (and the router) may answer. 500 is never allowed.
ALLOWED = {200, 201, 202, 204, 400, 403, 404, 405, 409, 412, 413, 501, 503, 504}
# 202 only where a keyspace switch starts or is cancelled (docs/mode_switch.md)
SWITCH_ROUTE = re.compile(r"^/v1/keyspaces/[^/?]+(/switch)?(\?|$)")
# The only 5xx the contract allows, with the error codes that may carry them:
ALLOWED_5XX = {
    # a consistency mode missing from the build (kv/service.py `NotImplementedYet`); both
    # modes are wired today, so none is expected, but it is a typed refusal, not a failure
    501: {"not_implemented"},
    # retryable, certainly not applied, always with Retry-After (kv/errors.py `Retryable`):
    # e.g. not_ready while the Raft groups of a keyspace the fuzz just made linearizable start
    503: {"quorum_unavailable", "no_leader", "not_ready", "unavailable"},
    # unknown outcome ("may have been applied"): a metadata change or Raft write not
    # committed within a tiny `timeout_ms`
    504: {"timeout"},
}

# Key routes mostly address `fz` (eventual) and `lin` (linearizable), which no keyspace
# route targets, so they survive the run; keyspace routes may update, re-create or delete
# `fz1` (either consistency).
KEYSPACES = ("fz", "lin", "fz1")
EVENTUAL_1 = {"consistency": "eventual", "replication": 1}
KEYSPACE_FIELDS = ("consistency", "replication", "read_quorum", "write_quorum", "max_siblings")
KEY_FIELDS = ("value", "context", "if_version")
QUERY_NAMES = ("r", "w", "timeout_ms", "consistency", "context", "if_version")

# ------------------------------------------------------------------ strategies
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
small_ints = st.integers(-3, 1002)

short_segment = st.one_of(
    st.binary(min_size=1, max_size=48).map(lambda b: quote_from_bytes(b, safe="")),
    st.text(min_size=1, max_size=32).map(lambda s: quote(s, safe="")),
    st.sampled_from(["..", ".", "%2E%2E", "%2F", "a/b", "../..", "%", "%zz", "%FF", "%00", "~"]),
)
# 1000..2200 UTF-8 bytes, around the 1024-byte key limit; at most 6600 characters encoded.
long_segment = st.integers(1000, 2200).flatmap(
    lambda n: st.sampled_from(["k" * n, quote("é" * (n // 2), safe="")])
)
key_segment = st.sampled_from(["k", "a/b", "%C3%A9"]) | short_segment | long_segment
paths = st.one_of(
    st.just("/v1/keyspaces"),
    (st.just("fz1") | short_segment | long_segment).map(lambda ks: f"/v1/keyspaces/{ks}"),
    st.tuples(st.sampled_from(KEYSPACES), key_segment).map(
        lambda t: f"/v1/keyspaces/{t[0]}/keys/{t[1]}"
    ),
    st.tuples(short_segment, key_segment).map(lambda t: f"/v1/keyspaces/{t[0]}/keys/{t[1]}"),
    st.tuples(st.sampled_from(KEYSPACES), short_segment, short_segment).map(
        lambda t: f"/v1/keyspaces/{t[0]}/keys/{t[1]}/{t[2]}"
    ),
)
query_values = st.one_of(
    small_ints.map(str),
    st.sampled_from(["stale", "linearizable", "e30", "eyJuMSI6MX0", "", "1e3", "0x10"]),
    st.text(max_size=16),
)
queries = st.one_of(
    st.just(""),
    st.lists(
        st.tuples(st.sampled_from(QUERY_NAMES) | st.text(min_size=1, max_size=8), query_values),
        max_size=4,
    ).map(lambda kv: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kv)),
    st.sampled_from(["%", "%ZZ", "&&", "=", "r=1=2", "r", "r=1&r=x", "timeout_ms=%FF"]),
)
keyspace_bodies = st.one_of(
    st.sampled_from(
        [
            EVENTUAL_1,
            {**EVENTUAL_1, "max_siblings": 1},
            {"consistency": "linearizable", "replication": 1},
        ]
    ),
    st.dictionaries(
        st.sampled_from(KEYSPACE_FIELDS) | st.text(max_size=8),
        small_ints | json_values,
        max_size=6,
    ),
)
contexts = st.sampled_from(["e30", "eyJuMSI6MX0", "eyJuMSI6MH0", "!!", ""]) | json_values
key_bodies = st.one_of(
    st.fixed_dictionaries(
        {"value": json_values}, optional={"context": contexts, "if_version": json_values}
    ),
    st.dictionaries(st.sampled_from(KEY_FIELDS) | st.text(max_size=8), contexts, max_size=4),
)


def _huge(kind: str) -> bytes:
    if kind == "value-over-1MiB":
        return b'{"value": "' + b"v" * MAX_VALUE_BYTES + b'"}'
    return b"{" + b" " * MAX_BODY_BYTES + b"}"  # body over 8 MiB


bodies = st.one_of(
    st.none(),
    st.binary(max_size=256),
    (keyspace_bodies | key_bodies | json_values).map(lambda v: json.dumps(v).encode()),
    st.sampled_from(["value-over-1MiB", "body-over-8MiB"]).map(_huge),
)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes | None

    def __repr__(self) -> str:  # keep hypothesis' report readable for huge bodies
        body = self.body if self.body is None or len(self.body) < 300 else f"<{len(self.body)} B>"
        return f"Call({self.method} {self.path[:300]!r} body={body!r})"


chaos_calls = st.builds(
    lambda method, path, query, body: Call(method, f"{path}?{query}" if query else path, body),
    st.sampled_from(["GET", "PUT", "DELETE", "POST", "PATCH"]),
    paths,
    queries,
    bodies,
)


@st.composite
def key_calls(draw: st.DrawFn) -> Call:
    """Mostly well-formed key requests with odd keys and values: these reach the modes'
    code (siblings, CAS, storage) rather than stopping at validation."""
    method = draw(st.sampled_from(["GET", "PUT", "DELETE"]))
    path = f"/v1/keyspaces/{draw(st.sampled_from(KEYSPACES))}/keys/{draw(key_segment)}"
    query = draw(st.sampled_from(["", "", "r=1", "w=1", "timeout_ms=500", "consistency=stale"]))
    fields: dict[str, object] = {}
    if method == "PUT":
        fields["value"] = draw(json_values)
    if draw(st.booleans()):
        fields["if_version"] = draw(st.integers(0, 3))  # a 400 on eventual keyspaces
    body = json.dumps(fields).encode() if fields or method == "PUT" else None
    return Call(method, f"{path}?{query}" if query else path, body)


calls = chaos_calls | key_calls()


# ------------------------------------------------------------------ the oracle
def check_reply(call: Call, reply: Reply) -> str:
    """Assert the §5 contract for one reply; returns its `status code` for the tally."""
    assert reply.status in ALLOWED, f"{call!r} -> {reply}"
    if reply.status >= 400:
        err = error_of(reply)
        if reply.status in ALLOWED_5XX:
            assert err["code"] in ALLOWED_5XX[reply.status], f"{call!r} -> {reply}"
        if reply.status == 503:
            assert "retry-after" in reply.headers, f"{call!r} -> {reply}"
        if reply.status == 412:
            assert isinstance(err.get("current_version"), int), f"{call!r} -> {reply}"
        if reply.status == 413:
            assert err["code"] == "too_large", f"{call!r} -> {reply}"
        return f"{reply.status} {err['code']}"
    if reply.status == 202:
        assert call.method in ("PUT", "DELETE") and SWITCH_ROUTE.match(call.path), f"{call!r}"
        assert "switch" in json.loads(reply.body), f"{call!r} -> {reply}"
    if reply.status == 204:
        assert reply.body == b"", f"{call!r} -> {reply}"
    else:
        assert isinstance(strict_json(reply.body), dict), f"{call!r} -> {reply}"
    return str(reply.status)


# The node's Raft thread (pysyncobj election timeouts) draws from the global `random` while
# Hypothesis generates examples; the strategies here never do.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_fuzz_key_and_keyspace_routes(api: Api, lin_ks: str) -> None:
    fuzz(api, MAX_EXAMPLES)


class AdminApi(Api):
    """Sends the admin token with every request (a node with auth on)."""

    def __init__(self, api: Api, token: str) -> None:
        super().__init__(api.host, api.port, api.secret)
        self.token = token

    def request(self, method: str, path: str, body: bytes | None = None, **kw: Any) -> Reply:
        headers = {**(kw.pop("headers", None) or {}), "Authorization": f"Bearer {self.token}"}
        return super().request(method, path, body, headers=headers, **kw)


@pytest.fixture(scope="module")
def admin_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminApi]:
    """A single node with auth on, reached with its bootstrap admin token."""
    with auth_node(tmp_path_factory.mktemp("fuzz-auth")) as (api, token):
        assert api.get("/v1/keyspaces").status == 401  # the token check is on
        yield AdminApi(api, token)


@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_fuzz_with_auth_on(admin_api: AdminApi) -> None:
    """Issue 11 item 1: the same fuzz through the token check (a quarter of the examples:
    the routes and their handlers are the same)."""
    linearizable_keyspace(admin_api)
    fuzz(admin_api, max(MAX_EXAMPLES // 4, 1))


def fuzz(api: Api, examples: int) -> None:
    print(f"fuzz seed={SEED} (rerun with KV_FUZZ_SEED={SEED}), examples={examples}")
    for name in ("fz", "fz1"):
        assert api.put(f"/v1/keyspaces/{name}", EVENTUAL_1).status in (200, 201)

    @seed(SEED)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(call=calls)
    def one_request(call: Call) -> None:
        tally[check_reply(call, api.request(call.method, call.path, call.body))] += 1

    tally: Counter[str] = Counter()
    try:
        one_request()
    finally:
        print("replies:", dict(sorted(tally.items())), "healthy:", api.healthy())
    assert api.healthy(), "node unhealthy after the fuzz run"
    # Still serving, not just answering health: a full round trip works.
    assert api.put("/v1/keyspaces/fzok", EVENTUAL_1).status in (200, 201)
    assert api.put(key_path("fzok", "after"), {"value": SEED}).status == 200
    assert api.get(key_path("fzok", "after")).json()["value"] == SEED

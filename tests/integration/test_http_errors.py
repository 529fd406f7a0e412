"""The HTTP error table and happy paths against one real node (DESIGN.md §5, §7).

One test per row of the error table (kv/http/errors.py) that a client can trigger on a
single-node cluster. Every error reply must be `{"error": {"code", "message", ...}}` with a
message naming the problem (§5: "the message names the field"). Rows one node cannot
produce deterministically (503 quorum_unavailable / no_leader / not_ready) belong to the
cluster tier; 504 timeout may or may not occur under a 1 ms deadline, so its test checks
the contract whichever way each request ends; 501 not_implemented is unreachable while both
consistency modes are wired.

Tests whose docstring says "Regression" keep a contract that was once broken; each names the
fix in kv/http/app.py that keeps it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from kv.http.app import MAX_BODY_BYTES
from kv.routing import MAX_KEY_BYTES, MAX_VALUE_BYTES
from tests.integration.conftest import Api, Reply, error_of, key_path, strict_json

EVENTUAL_1 = {"consistency": "eventual", "replication": 1}
LONG_MS = 30_000  # a deadline no healthy single-node commit comes near
LINEARIZABLE_1 = {"consistency": "linearizable", "replication": 1}

KeyspaceFactory = Callable[..., str]


# ------------------------------------------------------------------ fixtures and helpers
@pytest.fixture
def make_keyspace(api: Api) -> Iterator[KeyspaceFactory]:
    """Create keyspaces (eventual, replication 1 unless told) with fresh names; delete
    whatever is left at teardown."""
    created: list[str] = []

    def make(**settings: Any) -> str:
        name = f"t{uuid.uuid4().hex[:12]}"
        reply = api.put(f"/v1/keyspaces/{name}", {**EVENTUAL_1, **settings})
        assert reply.status == 201, reply
        created.append(name)
        return name

    yield make
    for name in created:
        api.delete(f"/v1/keyspaces/{name}")


@pytest.fixture
def ks(make_keyspace: KeyspaceFactory) -> str:
    return make_keyspace()


@pytest.fixture(params=["eventual", "linearizable"])
def any_ks(request: pytest.FixtureRequest, make_keyspace: KeyspaceFactory) -> str:
    """A keyspace of each consistency, for the §5 rows that apply to both."""
    if request.param == "eventual":
        return make_keyspace()
    name: str = request.getfixturevalue("lin_ks")
    return name


def fresh_key() -> str:
    return f"k-{uuid.uuid4().hex[:8]}"


def assert_error(reply: Reply, status: int, code: str, *mentions: str) -> dict[str, Any]:
    """Status, code, shape, and that the message names each of `mentions` (§5)."""
    assert reply.status == status, reply
    err = error_of(reply)
    assert err["code"] == code, reply
    for word in mentions:
        assert word in err["message"], f"{word!r} not named in {err['message']!r}"
    return err


def invalid(reply: Reply, field: str) -> dict[str, Any]:
    """400 invalid_request naming `field` in the message and in `error.field`."""
    err = assert_error(reply, 400, "invalid_request", field)
    assert err.get("field") == field, reply
    return err


# ------------------------------------------------------------------ 400 malformed_json
@pytest.mark.parametrize(
    "body",
    [b'{"value": 1', b'{"consistency": "eventual",', b"\xff\xfe\xfa", b"{'a': 1}", b"NaN"],
    ids=["truncated-object", "truncated-member", "not-utf8", "single-quotes", "NaN"],
)
def test_malformed_json_is_400(api: Api, ks: str, body: bytes) -> None:
    for path in (key_path(ks, "k"), f"/v1/keyspaces/{ks}"):
        assert_error(api.request("PUT", path, body), 400, "malformed_json", "JSON")


def unparseable(reply: Reply) -> dict[str, Any]:
    """400 for JSON the server will not take: `malformed_json`, or `invalid_request` (its
    parent in kv/errors.py) when the text is valid JSON but not representable."""
    assert reply.status == 400, reply
    err = error_of(reply)
    assert err["code"] in ("malformed_json", "invalid_request"), reply
    return err


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_json_is_400(api: Api, ks: str, depth: int) -> None:
    # Past ~1000 levels json.loads raises RecursionError, not ValueError (was a 500).
    body = b'{"value": ' + b"[" * depth + b"]" * depth + b"}"
    unparseable(api.request("PUT", key_path(ks, "deep"), body))
    unparseable(api.request("PUT", f"/v1/keyspaces/{ks}", b"[" * depth))


@pytest.mark.parametrize(
    "body",
    [b'{"value": 1e400}', b'{"value": -1e999}', b'{"value": [1, {"x": 1e309}]}'],
    ids=["inf", "-inf", "nested-inf"],
)
def test_non_finite_numbers_are_400(api: Api, any_ks: str, body: bytes) -> None:
    """§5: JSON in and out. Regression: Python parses 1e400 to float('inf'), which an
    eventual keyspace once stored and then served as the non-JSON token `Infinity` on every
    GET. `read_json` parses floats with `_finite_float`, so both modes answer 400
    malformed_json and store nothing."""
    key = fresh_key()
    reply = api.request("PUT", key_path(any_ks, key), body)
    get = api.get(key_path(any_ks, key))
    strict_json(get.body)  # whatever happened, every reply must be RFC 8259 JSON
    unparseable(reply)
    assert get.status == 404, get


# ------------------------------------------------------------------ 400 keyspace config
@pytest.mark.parametrize(
    "name", ["-dash-first", "a" * 65, "has space", "ünï", ".dot-first", "semi;colon", "a/b"]
)
@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
def test_keyspace_name_must_match_pattern(api: Api, method: str, name: str) -> None:
    reply = api.request(method, f"/v1/keyspaces/{quote(name, safe='')}", json_body=EVENTUAL_1)
    invalid(reply, "keyspace")


def test_keyspace_name_of_64_chars_is_accepted(api: Api) -> None:
    name = "k" + "a" * 63
    assert api.put(f"/v1/keyspaces/{name}", EVENTUAL_1).status == 201
    assert api.delete(f"/v1/keyspaces/{name}").status == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**EVENTUAL_1, "replicas": 1}, "replicas"),
        ({**EVENTUAL_1, "zzz": None}, "zzz"),
        ({"consistency": "strong", "replication": 1}, "consistency"),
        ({"replication": 1}, "consistency"),
        ({"consistency": 1, "replication": 1}, "consistency"),
        ({"consistency": "EVENTUAL", "replication": 1}, "consistency"),
        ({"consistency": "eventual", "replication": 2}, "replication"),  # > cluster size (1)
        ({"consistency": "eventual", "replication": 0}, "replication"),
        ({"consistency": "eventual", "replication": -1}, "replication"),
        ({"consistency": "eventual"}, "replication"),  # default 3 > cluster size (1)
        ({"consistency": "linearizable", "replication": 2}, "replication"),
        ({**EVENTUAL_1, "read_quorum": 0}, "read_quorum"),
        ({**EVENTUAL_1, "read_quorum": 2}, "read_quorum"),
        ({**EVENTUAL_1, "write_quorum": 0}, "write_quorum"),
        ({**EVENTUAL_1, "write_quorum": 2}, "write_quorum"),
        ({**EVENTUAL_1, "max_siblings": 0}, "max_siblings"),
        ({**EVENTUAL_1, "max_siblings": 1001}, "max_siblings"),
        ({**LINEARIZABLE_1, "read_quorum": 1}, "read_quorum"),
        ({**LINEARIZABLE_1, "max_siblings": 5}, "max_siblings"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_keyspace_config_out_of_range_is_400(api: Api, body: dict[str, Any], field: str) -> None:
    invalid(api.put(f"/v1/keyspaces/k{uuid.uuid4().hex[:8]}", body), field)


@pytest.mark.parametrize("field", ["replication", "read_quorum", "write_quorum", "max_siblings"])
@pytest.mark.parametrize("value", [True, False, "1", 1.0, 1.5, None, [1], {"n": 1}])
def test_keyspace_int_fields_reject_other_types(api: Api, field: str, value: Any) -> None:
    # Booleans matter most: True == 1 in Python, so a lax check would accept it.
    body = {**EVENTUAL_1, field: value}
    invalid(api.put(f"/v1/keyspaces/k{uuid.uuid4().hex[:8]}", body), field)


@pytest.mark.parametrize("body", [None, [EVENTUAL_1], "eventual", 1, True])
def test_keyspace_body_must_be_an_object(api: Api, body: Any) -> None:
    path = f"/v1/keyspaces/k{uuid.uuid4().hex[:8]}"
    reply = api.request("PUT", path) if body is None else api.put(path, body)
    invalid(reply, "body")


# ------------------------------------------------------------------ 400 query params
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("r=0", "r"),
        ("r=2", "r"),  # > the keyspace's replication (1)
        ("r=-1", "r"),
        ("r=65", "r"),
        ("r=", "r"),
        ("w=abc", "w"),
        ("w=0", "w"),
        ("w=1.0", "w"),
        ("timeout_ms=0", "timeout_ms"),
        ("timeout_ms=-5", "timeout_ms"),
        ("timeout_ms=60001", "timeout_ms"),
        ("timeout_ms=1e3", "timeout_ms"),
        ("timeout_ms=99999999999999999999999", "timeout_ms"),
        ("consistency=bogus", "consistency"),
        ("consistency=", "consistency"),
    ],
)
def test_bad_query_params_are_400(api: Api, ks: str, query: str, field: str) -> None:
    path = f"{key_path(ks, 'k')}?{query}"
    reply = api.put(path, {"value": 1}) if field == "w" else api.get(path)
    invalid(reply, field)


@pytest.mark.parametrize("query", ["r=%EF%BC%91", "r=0_1", "r=%201%20", "timeout_ms=1_000"])
def test_integer_query_params_are_ascii_digits_only(api: Api, ks: str, query: str) -> None:
    """§5: integer query parameters are ASCII digits. Regression: Python's int() accepts
    '１' (fullwidth), '0_1' and surrounding spaces; `_int_param` matches `_INT_RE` before
    calling int(), so each of these is a 400 naming the parameter."""
    invalid(api.get(f"{key_path(ks, 'k')}?{query}"), query.split("=")[0])


# ------------------------------------------------------------------ 400 key bodies
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": 1, "version": 3}, "version"),
        ({"value": 1, "Value": 2}, "Value"),
        ({"context": "e30"}, "value"),  # missing value
        ({}, "value"),
        ({"value": 1, "context": "not base64!"}, "context"),
        ({"value": 1, "context": 17}, "context"),
        ({"value": 1, "context": {"n1": 1}}, "context"),
        ({"value": 1, "context": "eyJuMSI6MH0"}, "context"),  # {"n1":0}: counters are >= 1
        ({"value": 1, "context": "bm90IGpzb24"}, "context"),  # base64 of 'not json'
        ({"value": 1, "if_version": 1}, "if_version"),  # eventual keyspace: use context
        ({"value": 1, "if_version": 0}, "if_version"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_bad_eventual_put_body_is_400(api: Api, ks: str, body: dict[str, Any], field: str) -> None:
    invalid(api.put(key_path(ks, "k"), body), field)


def test_a_request_id_reused_for_another_write_is_409(api: Api, lin_ks: str) -> None:
    """Issue 11 item 5: the second write was once dropped and reported done (200 with the
    first write's version). Now the state machine keeps the command's fingerprint. The
    table is per Raft group: the other key is one of the same group (an id reused in
    another group is a new request there, applied, not dropped)."""
    key, rid = fresh_key(), uuid.uuid4().hex
    group = api.get(f"/v1/admin/replica/{lin_ks}/{key}").json()["group"]
    other = next(
        k
        for k in (fresh_key() for _ in range(1000))
        if api.get(f"/v1/admin/replica/{lin_ks}/{k}").json()["group"] == group
    )
    first = api.put(key_path(lin_ks, key), {"value": "a", "request_id": rid})
    assert first.json() == {"version": 1}
    retry = api.put(key_path(lin_ks, key), {"value": "a", "request_id": rid})
    assert retry.json() == {"version": 1}  # the true retry: deduplicated
    for path, body in (
        (key_path(lin_ks, key), {"value": "b", "request_id": rid}),
        (key_path(lin_ks, other), {"value": "a", "request_id": rid}),
    ):
        assert_error(api.put(path, body), 409, "request_id_conflict", "request_id", rid)
    assert api.get(key_path(lin_ks, key)).json()["value"] == "a"


def test_a_context_from_another_key_or_keyspace_is_400(
    api: Api, make_keyspace: KeyspaceFactory
) -> None:
    """Issue 11 item 5: a context is sealed to its keyspace and key
    (dynamo_mode/context_seal.py). Sent with a write to another key, to the same key of
    another keyspace, or altered, it is a 400 naming `context`; and the write is not made."""
    first, second = make_keyspace(), make_keyspace()
    context = api.put(key_path(first, "a"), {"value": 1}).json()["context"]
    assert api.put(key_path(first, "a"), {"value": 2, "context": context}).status == 200
    for path in (key_path(first, "b"), key_path(second, "a")):
        reply = api.put(path, {"value": 3, "context": context})
        assert "another key or keyspace" in invalid(reply, "context")["message"]
        assert api.get(path).status == 404
    altered = context[:-2] + ("AA" if not context.endswith("AA") else "BB")
    invalid(api.put(key_path(first, "a"), {"value": 4, "context": altered}), "context")
    invalid(api.delete(f"{key_path(first, 'b')}?context={quote(context)}"), "context")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": 1, "version": 3}, "version"),
        ({"if_version": 0}, "value"),  # missing value
        ({"value": 1, "context": "e30"}, "context"),  # linearizable keyspace: use if_version
        ({"value": 1, "if_version": -1}, "if_version"),
        ({"value": 1, "if_version": True}, "if_version"),
        ({"value": 1, "if_version": "1"}, "if_version"),
        ({"value": 1, "if_version": 1.5}, "if_version"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_bad_linearizable_put_body_is_400(
    api: Api, lin_ks: str, body: dict[str, Any], field: str
) -> None:
    invalid(api.put(key_path(lin_ks, fresh_key()), body), field)


@pytest.mark.parametrize("body", [None, [1], "v", 3, True])
def test_key_put_body_must_be_an_object(api: Api, any_ks: str, body: Any) -> None:
    path = key_path(any_ks, fresh_key())
    if body is None:
        invalid(api.request("PUT", path), "value")  # no body: the value is missing
    else:
        invalid(api.put(path, body), "body")


@pytest.mark.parametrize(
    ("body", "field"),
    [({"if_version": 1}, "if_version"), ({"context": "%%"}, "context"), ({"x": 1}, "x")],
)
def test_bad_eventual_delete_body_is_400(
    api: Api, ks: str, body: dict[str, Any], field: str
) -> None:
    invalid(api.request("DELETE", key_path(ks, "k"), json_body=body), field)


def test_delete_context_in_query_is_validated(api: Api, ks: str) -> None:
    invalid(api.delete(f"{key_path(ks, 'k')}?context=%25%25"), "context")


def test_eventual_delete_if_version_in_query_is_400(api: Api, ks: str) -> None:
    """§5: DELETE takes `if_version` in the query or the body. Regression: only `context`
    was lifted from the query, so `?if_version=` was dropped and the key deleted.
    `delete_key` lifts both (`_delete_query`); an eventual keyspace refuses `if_version`
    with a 400 naming it, and the key stays."""
    assert api.put(key_path(ks, "k"), {"value": 1}).status == 200
    invalid(api.delete(f"{key_path(ks, 'k')}?if_version=7"), "if_version")
    assert api.get(key_path(ks, "k")).status == 200  # still there


# ------------------------------------------------------------------ internode route
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_internode_http_rpc_route_is_gone(api: Api, method: str) -> None:
    """Internode calls travel only over the upgraded, authenticated stream (docs/internode.md);
    the per-call HTTP route and its cleartext secret header are no more, whatever is sent."""
    body = {"ref": {"partition": 0, "uid": 0, "key": "k"}}
    headers = {"X-Kv-Cluster-Secret": api.secret}
    for path in ("/v1/internal/rpc/fetch", "/v1/internal/ping"):
        reply = api.request(method, path, json_body=body, headers=headers)
        assert reply.status in (404, 405), reply


def test_the_internode_stream_route_speaks_only_the_upgrade(api: Api) -> None:
    reply = api.get("/v1/internal/stream")
    assert_error(reply, 400, "invalid_request", "Upgrade: kv-internode")
    reply = api.get("/v1/internal/stream", headers={"Upgrade": "websocket"})
    assert_error(reply, 400, "invalid_request", "upgrade")


# ------------------------------------------------------------------ 404
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_keyspace_is_404(api: Api, method: str) -> None:
    reply = api.request(method, "/v1/keyspaces/nosuchks")
    err = assert_error(reply, 404, "keyspace_not_found", "nosuchks")
    assert err["keyspace"] == "nosuchks"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_key_in_unknown_keyspace_is_404(api: Api, method: str) -> None:
    reply = api.request(method, key_path("nosuchks", "k"), json_body={"value": 1})
    assert_error(reply, 404, "keyspace_not_found", "nosuchks")


def test_absent_eventual_key_is_404_with_a_context(api: Api, ks: str) -> None:
    err = assert_error(api.get(key_path(ks, "absent")), 404, "not_found", "absent")
    assert err["key"] == "absent"
    assert isinstance(err["context"], str)
    # §4: the context of a miss is usable for the next write.
    put = api.put(key_path(ks, "absent"), {"value": 1, "context": err["context"]})
    assert put.status == 200, put


def test_absent_linearizable_key_is_404_with_version_0(api: Api, lin_ks: str) -> None:
    key = fresh_key()
    err = assert_error(api.get(key_path(lin_ks, key)), 404, "not_found", key)
    assert (err["key"], err["version"]) == (key, 0)  # §3: key absent = version 0


def test_unknown_route_and_method_use_the_error_shape(api: Api, ks: str) -> None:
    assert_error(api.get("/v1/nope"), 404, "no_route")
    assert_error(api.get(f"/v1/keyspaces/{ks}/keys/"), 404, "no_route")  # empty key
    assert_error(api.request("PATCH", key_path(ks, "k")), 405, "method_not_allowed")
    assert_error(api.request("POST", f"/v1/keyspaces/{ks}"), 405, "method_not_allowed")


# ------------------------------------------------------------------ 409
@pytest.mark.parametrize(
    ("first", "then", "to"),
    [(EVENTUAL_1, LINEARIZABLE_1, "linearizable"), (LINEARIZABLE_1, EVENTUAL_1, "eventual")],
    ids=["eventual-to-linearizable", "linearizable-to-eventual"],
)
def test_a_consistency_change_starts_a_switch(
    api: Api, make_keyspace: KeyspaceFactory, first: dict[str, Any], then: dict[str, Any], to: str
) -> None:
    """Issue 12 (docs/mode_switch.md): a keyspace's consistency changes by a live switch
    (202, with its progress); `siblings` belongs only to a switch to linearizable."""
    name = make_keyspace(**first)
    if to == "eventual":
        assert_error(api.put(f"/v1/keyspaces/{name}", {**then, "siblings": "lww"}), 400,
                     "invalid_request", "siblings")  # fmt: skip
    reply = api.put(f"/v1/keyspaces/{name}", then)
    assert reply.status == 202 and reply.json()["switch"]["to"] == to, reply


def test_sibling_limit_is_409(api: Api, make_keyspace: KeyspaceFactory) -> None:
    ks = make_keyspace(max_siblings=2)
    path = key_path(ks, "k")
    for value in ("a", "b"):  # blind writes (no context): concurrent siblings (§4)
        assert api.put(path, {"value": value}).status == 200
    err = assert_error(api.put(path, {"value": "c"}), 409, "sibling_limit", "siblings")
    assert (err["count"], err["limit"]) == (3, 2)
    got = api.get(path).json()
    assert sorted(got["siblings"]) == ["a", "b"]  # refused, never truncated
    # Resolving with the context is the documented way out.
    assert api.put(path, {"value": "ab", "context": got["context"]}).status == 200
    assert api.get(path).json()["value"] == "ab"


# ------------------------------------------------------------------ 412
def test_condition_failed_is_412_with_current_version(api: Api, lin_ks: str) -> None:
    key = fresh_key()
    path = key_path(lin_ks, key)
    assert api.put(path, {"value": "a", "if_version": 0}).json() == {"version": 1}  # create-only
    err = assert_error(api.put(path, {"value": "b", "if_version": 0}), 412, "condition_failed")
    assert err["current_version"] == 1
    err = assert_error(api.put(path, {"value": "b", "if_version": 7}), 412, "condition_failed")
    assert err["current_version"] == 1
    delete = api.request("DELETE", path, json_body={"if_version": 3})
    assert assert_error(delete, 412, "condition_failed")["current_version"] == 1
    assert api.get(path).json() == {"key": key, "value": "a", "version": 1}


def test_linearizable_delete_if_version_in_query_is_a_condition(api: Api, lin_ks: str) -> None:
    """§5: DELETE takes `if_version` in the query or the body. Regression: the query
    `if_version` was dropped, so a conditional delete ran unconditionally (a lost update
    for a CAS client). `delete_key` lifts it (`_delete_query`): 412 with the current
    version, and the key stays."""
    key = fresh_key()
    assert api.put(key_path(lin_ks, key), {"value": "a"}).status == 200
    reply = api.delete(f"{key_path(lin_ks, key)}?if_version=5")
    assert assert_error(reply, 412, "condition_failed")["current_version"] == 1
    assert api.get(key_path(lin_ks, key)).status == 200  # not deleted


# ------------------------------------------------------------------ 504
def test_short_deadlines_end_in_200_or_504_and_a_504_retry_applies_once(
    api: Api, lin_ks: str
) -> None:
    """§5: 504 `timeout` when the outcome is unknown, documented as "may have been applied";
    a 5xx never means "maybe" unless it is 504. A 1 ms deadline may or may not expire before
    the Raft commit (one driver tick), so each write may end either way, and which way is not
    asserted (the 504 row itself is tests/unit/test_error_table.py). Whichever way it ends:
    - 200 `{"version": 1}` (each key is fresh), and a read then returns the value;
    - 504 `timeout` saying it "may" have been applied, with the request_id to retry with;
      retrying with that request_id (and a generous deadline) applies the write exactly once
      (raft_groups/state_machine.py dedupe): 200 `{"version": 1}`, then the value at
      version 1 - never a second version and never a 500."""
    writes = [(fresh_key(), i) for i in range(20)]
    replies = [api.put(f"{key_path(lin_ks, k)}?timeout_ms=1", {"value": i}) for k, i in writes]
    assert all(r.status in (200, 504) for r in replies), [str(r) for r in replies]
    for (key, i), reply in zip(writes, replies, strict=True):
        path = key_path(lin_ks, key)
        if reply.status == 504:
            err = assert_error(reply, 504, "timeout", "may")
            assert isinstance(err.get("request_id"), str), reply
            retry = {"value": i, "request_id": err["request_id"]}
            reply = api.put(f"{path}?timeout_ms={LONG_MS}", retry)
        assert (reply.status, reply.json()) == (200, {"version": 1}), reply
        read = api.get(f"{path}?timeout_ms={LONG_MS}")
        assert read.json() == {"key": key, "value": i, "version": 1}, read
    print(f"{sum(r.status == 504 for r in replies)} of {len(replies)} writes timed out")


# ------------------------------------------------------------------ 413
@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("k" * MAX_KEY_BYTES, True),
        ("k" * (MAX_KEY_BYTES + 1), False),
        ("€" * 341, True),  # 1023 UTF-8 bytes
        ("€" * 400, False),  # 400 characters but 1200 UTF-8 bytes
        ("🎉" * 256, True),  # 1024 bytes
        ("🎉" * 256 + "x", False),
    ],
    ids=["1024-ascii", "1025-ascii", "341x3-bytes", "400x3-bytes", "256x4-bytes", "1025-mixed"],
)
def test_key_limit_counts_utf8_bytes(api: Api, any_ks: str, key: str, ok: bool) -> None:
    path = key_path(any_ks, key)
    size = len(key.encode())
    for reply in (api.put(path, {"value": 1}), api.get(path), api.delete(path)):
        if ok:
            assert reply.status in (200, 404), reply
        else:
            err = assert_error(reply, 413, "too_large", "key", str(size))
            assert (err["field"], err["size"], err["limit"]) == ("key", size, MAX_KEY_BYTES)


def test_value_limit_is_one_mib_encoded(api: Api, any_ks: str) -> None:
    path = key_path(any_ks, fresh_key())
    at_limit = "v" * (MAX_VALUE_BYTES - 2)  # the two quotes make exactly 1 MiB
    assert api.put(path, {"value": at_limit}).status == 200
    assert api.get(path).json()["value"] == at_limit
    err = assert_error(api.put(path, {"value": at_limit + "v"}), 413, "too_large", "value")
    assert (err["field"], err["size"]) == ("value", MAX_VALUE_BYTES + 1)


def test_body_over_8_mib_is_413(api: Api, ks: str) -> None:
    small = b'{"value": 1}'
    over = small + b" " * (MAX_BODY_BYTES + 1 - len(small))
    err = assert_error(api.request("PUT", key_path(ks, "k"), over), 413, "too_large", "body")
    assert (err["field"], err["limit"]) == ("body", MAX_BODY_BYTES)
    assert api.request("PUT", key_path(ks, "k"), over[:-1]).status == 200  # exactly 8 MiB
    big = b'{"value": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert_error(api.request("PUT", f"/v1/keyspaces/{ks}", big), 413, "too_large", "body")


def test_request_line_over_the_parser_limit_uses_the_error_shape(api: Api, ks: str) -> None:
    """§5: errors are always the JSON shape. Regression: a 3000-byte key percent-encodes
    to 9000 characters, over aiohttp's default 8190-byte request-line limit, and aiohttp's
    parser answered a text/plain 400 before kv/http ran. `make_app` raises `max_line_size`
    and `max_field_size` to 32 KiB, so the request reaches kv/http (here: 413, the key is
    over 1024 bytes)."""
    assert_error(api.get(key_path(ks, "é" * 1500)), 413, "too_large", "key")


# ------------------------------------------------------------------ 2xx happy paths
def test_keyspace_lifecycle(api: Api) -> None:
    name = f"t{uuid.uuid4().hex[:12]}"
    path = f"/v1/keyspaces/{name}"
    created = api.put(path, EVENTUAL_1)
    assert created.status == 201, created
    want = {
        **EVENTUAL_1,
        "name": name,
        "read_quorum": 1,
        "write_quorum": 1,
        "max_siblings": 32,
        "durability": "process",
    }
    assert created.json() == want
    unchanged = api.put(path, EVENTUAL_1)
    assert unchanged.status == 200 and unchanged.json() == want
    updated = api.put(path, {**EVENTUAL_1, "max_siblings": 5})
    assert updated.status == 200 and updated.json() == {**want, "max_siblings": 5}
    assert api.get(path).json() == {**want, "max_siblings": 5}
    assert {**want, "max_siblings": 5} in api.get("/v1/keyspaces").json()["keyspaces"]
    deleted = api.delete(path)
    assert deleted.status == 204 and deleted.body == b""
    assert_error(api.get(path), 404, "keyspace_not_found")
    assert_error(api.delete(path), 404, "keyspace_not_found")
    assert all(k["name"] != name for k in api.get("/v1/keyspaces").json()["keyspaces"])


@pytest.mark.parametrize("settings", [EVENTUAL_1, LINEARIZABLE_1], ids=["eventual", "lin"])
def test_recreated_keyspace_does_not_show_old_keys(
    api: Api, lin_ks: str, settings: dict[str, Any]
) -> None:
    # lin_ks: the replication-1 groups are already running, so the write below is served.
    name = f"t{uuid.uuid4().hex[:12]}"
    assert api.put(f"/v1/keyspaces/{name}", settings).status == 201
    assert api.put(key_path(name, "old"), {"value": "before"}).status == 200
    assert api.delete(f"/v1/keyspaces/{name}").status == 204
    assert_error(api.get(key_path(name, "old")), 404, "keyspace_not_found")
    assert api.put(f"/v1/keyspaces/{name}", settings).status == 201
    assert_error(api.get(key_path(name, "old")), 404, "not_found")
    api.delete(f"/v1/keyspaces/{name}")


def test_eventual_put_get_delete(api: Api, ks: str) -> None:
    path = key_path(ks, "k")
    value = {"nested": [1, "two", None, True, 1.5]}
    put = api.put(path, {"value": value})
    assert put.status == 200 and set(put.json()) == {"context"}
    got = api.get(path).json()
    assert got == {"key": "k", "value": value, "context": got["context"]}
    assert api.put(path, {"value": None, "context": got["context"]}).status == 200
    assert api.get(path).json()["value"] is None  # null is a value, not a delete
    deleted = api.delete(path)
    assert deleted.status == 200 and deleted.json()["deleted"] is True
    assert_error(api.get(path), 404, "not_found")
    again = api.delete(path)
    assert again.status == 200 and again.json()["deleted"] is False


def test_linearizable_versions(api: Api, lin_ks: str) -> None:
    """§3: version 1 on creation, +1 on each write, absent = version 0."""
    key = fresh_key()
    path = key_path(lin_ks, key)
    assert api.put(path, {"value": {"a": [1]}}).json() == {"version": 1}
    assert api.get(path).json() == {"key": key, "value": {"a": [1]}, "version": 1}
    assert api.put(path, {"value": None, "if_version": 1}).json() == {"version": 2}
    assert api.get(path).json() == {"key": key, "value": None, "version": 2}
    deleted = api.request("DELETE", path, json_body={"if_version": 2})
    assert deleted.status == 200, deleted
    assert_error(api.get(path), 404, "not_found")
    assert api.put(path, {"value": "again", "if_version": 0}).status == 200  # create-only


@pytest.mark.parametrize(
    "key",
    [
        "a/b",
        "a/b/",
        "/lead",
        "with space",
        "ünïcødé ✓ 🎉",
        "..",
        ".",
        "?#&=",
        "%",
        "%2F",
        "a+b",
        "\x00",
        "日本語/キー",
    ],
)
def test_percent_encoded_keys_round_trip(api: Api, any_ks: str, key: str) -> None:
    path = key_path(any_ks, key)
    assert api.put(path, {"value": key}).status == 200
    got = api.get(path)
    assert got.status == 200, got
    assert (got.json()["key"], got.json()["value"]) == (key, key)
    assert api.delete(path).status == 200
    assert_error(api.get(path), 404, "not_found")


def test_unencoded_and_encoded_slash_name_the_same_key(api: Api, ks: str) -> None:
    assert api.put(f"/v1/keyspaces/{ks}/keys/a/b/c", {"value": 1}).status == 200
    assert api.get(f"/v1/keyspaces/{ks}/keys/a%2Fb%2Fc").json()["value"] == 1


def test_a_key_route_finds_the_key_by_position(api: Api) -> None:
    """Regression (found by tests/integration/test_openapi_fuzz.py): `key_of` looked for the
    first "/keys/" in the raw path, so in a keyspace named `keys` the path
    /v1/keyspaces/keys/keys/x named the key "keys/x", and on /v1/admin/replica it looked
    for the decoded keyspace name in the raw path, a 500 when the path percent-encodes it.
    The key is the raw path after its fifth '/'."""
    assert api.put("/v1/keyspaces/keys", EVENTUAL_1).status in (200, 201)
    try:
        assert api.put("/v1/keyspaces/keys/keys/x", {"value": 1}).status == 200
        assert api.get(key_path("keys", "x")).json() == {
            "key": "x",
            "value": 1,
            "context": api.get(key_path("keys", "x")).json()["context"],
        }
        replica = api.get("/v1/admin/replica/%6B%65ys/x")  # "keys", percent-encoded
        assert replica.status == 200 and replica.json()["key"] == "x", replica
        assert api.get("/v1/admin/replica/keys/keys/x").json()["key"] == "keys/x"
    finally:
        api.delete("/v1/keyspaces/keys")


@pytest.mark.parametrize("raw", ["%FF", "%C3", "%ED%A0%80", "%C0%AF"])
def test_key_that_is_not_utf8_is_400(api: Api, ks: str, raw: str) -> None:
    """§5: keys are UTF-8, percent-encoded. Regression: yarl leaves escapes that do not
    decode as UTF-8 as literal text, so `/keys/%FF` and `/keys/%25FF` named the same key
    '%FF'. `key_of` decodes the raw path segment strictly as UTF-8: 400 invalid_request
    naming the key."""
    assert api.put(key_path(ks, "%FF"), {"value": "literal"}).status == 200
    invalid(api.get(f"/v1/keyspaces/{ks}/keys/{raw}"), "key")

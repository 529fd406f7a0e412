"""Version vectors, dots and the opaque client context (Dynamo §4.4; DVV paper)."""

from __future__ import annotations

import base64
import json

import pytest

from dynamo_mode import vclock
from dynamo_mode.vclock import (
    add_dot,
    compare,
    contains,
    decode_context,
    descends,
    encode_context,
    increment,
    merge,
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _ctx(obj: object) -> str:
    return _b64(json.dumps(obj).encode())


def test_merge_is_pointwise_max_and_does_not_mutate() -> None:
    a = {"n1": 3, "n2": 1}
    b = {"n2": 4, "n3": 2}
    assert merge(a, b) == {"n1": 3, "n2": 4, "n3": 2}
    assert a == {"n1": 3, "n2": 1} and b == {"n2": 4, "n3": 2}


def test_absent_node_counts_as_zero() -> None:
    assert descends({"n1": 1}, {})
    assert not descends({}, {"n1": 1})
    assert compare({"n1": 0}, {}) == "equal"


def test_compare_dynamo_4_4_example() -> None:
    # Dynamo §4.4 Figure 3: D2 = [(Sx,2)] is overwritten by D3 = [(Sx,2),(Sy,1)];
    # D3 and D4 = [(Sx,2),(Sz,1)] are concurrent; D5 = [(Sx,3),(Sy,1),(Sz,1)] reconciles.
    d2, d3, d4 = {"Sx": 2}, {"Sx": 2, "Sy": 1}, {"Sx": 2, "Sz": 1}
    d5 = {"Sx": 3, "Sy": 1, "Sz": 1}
    assert compare(d2, d3) == "before"
    assert compare(d3, d2) == "after"
    assert compare(d3, d4) == "concurrent"
    assert compare(d5, merge(d3, d4)) == "after"
    assert compare(d5, dict(d5)) == "equal"


def test_increment_and_dots() -> None:
    c = {"a": 2}
    assert increment(c, "a") == {"a": 3}
    assert increment(c, "b") == {"a": 2, "b": 1}
    assert c == {"a": 2}
    assert contains(c, ("a", 2)) and contains(c, ("a", 1))
    assert not contains(c, ("a", 3)) and not contains(c, ("b", 1))


def test_add_dot_takes_the_ceiling() -> None:
    # DVV paper: a dot folded into a clock covers all earlier events of its node.
    assert add_dot({"a": 1}, ("a", 4)) == {"a": 4}
    assert add_dot({"a": 5}, ("a", 4)) == {"a": 5}
    assert add_dot({}, ("b", 1)) == {"b": 1}


def test_context_round_trip_is_canonical_and_url_safe() -> None:
    c = {"node-b": 7, "node-a": 300}
    s = encode_context(c)
    assert "=" not in s and "+" not in s and "/" not in s
    assert s == encode_context({"node-a": 300, "node-b": 7})
    assert decode_context(s) == c
    assert decode_context(encode_context({})) == {}


def test_empty_string_is_the_empty_context() -> None:
    assert decode_context("") == {}


@pytest.mark.parametrize(
    ("context", "message"),
    [
        pytest.param("ab$c", "base64", id="bad-alphabet"),
        pytest.param("YWJj=", "base64", id="padding"),
        pytest.param("a", "base64", id="bad-length"),
        pytest.param(_b64(b"not json"), "JSON", id="not-json"),
        pytest.param(_b64(b"\xff\xfe"), "JSON", id="not-utf8"),
        pytest.param(_ctx([1, 2]), "object", id="list"),
        pytest.param(_ctx(3), "object", id="number"),
        pytest.param(_ctx(None), "object", id="null"),
        pytest.param(_ctx({"a": 0}), "int >= 1", id="zero"),
        pytest.param(_ctx({"a": -1}), "int >= 1", id="negative"),
        pytest.param(_ctx({"a": 1.5}), "int >= 1", id="float"),
        pytest.param(_ctx({"a": 1.0}), "int >= 1", id="integral-float"),
        pytest.param(_ctx({"a": "1"}), "int >= 1", id="string-counter"),
        pytest.param(_ctx({"a": True}), "int >= 1", id="bool-counter"),
        pytest.param(_ctx({"a": None}), "int >= 1", id="null-counter"),
        pytest.param(_b64(b'{"a":NaN}'), "JSON", id="nan"),
        pytest.param(_b64(b'{"a":1,"a":2}'), "duplicate", id="duplicate-key"),
        pytest.param(_b64(b"[" * 5000 + b"]" * 5000), "JSON", id="deep-nesting"),
        pytest.param(_ctx({f"n{i}": 1 for i in range(1001)}), "1001 entries", id="too-many"),
        pytest.param("A" * (64 * 1024 + 1), "limit is 65536", id="too-long"),
    ],
)
def test_decode_context_rejects_malformed(context: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_context(context)


def test_decode_context_rejects_non_string() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        decode_context(b"e30")  # type: ignore[arg-type]


def test_decode_context_accepts_the_limits() -> None:
    wide = {f"n{i}": 1 for i in range(vclock.MAX_CONTEXT_ENTRIES)}
    assert decode_context(encode_context(wide)) == wide


def test_validated_rejects_non_string_node() -> None:
    with pytest.raises(ValueError, match="node ids must be strings"):
        vclock.validated({1: 1})

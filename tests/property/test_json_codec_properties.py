"""kv.json_codec (orjson) reads back exactly what it wrote, and what the stdlib reads, for
every JSON value the API accepts: integers within -2**63 .. 2**64-1, finite floats, strings
without lone surrogates (kv.routing.check_value refuses the rest)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kv import json_codec
from raft_groups.commands import Command

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_loads_of_dumps_is_the_value_and_what_the_stdlib_reads(value: Any) -> None:
    raw = json_codec.dumps(value)
    assert json_codec.loads(raw) == value
    assert json.loads(raw) == value
    assert json_codec.loads(json.dumps(value)) == value


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_the_encoder_depth_is_orjsons_own_limit() -> None:
    """`dumps_value` relies on orjson refusing exactly past ENCODER_DEPTH containers."""
    json_codec.dumps(_nested(json_codec.ENCODER_DEPTH, 0))
    with pytest.raises(TypeError, match="Recursion"):
        json_codec.dumps(_nested(json_codec.ENCODER_DEPTH + 1, 0))


@settings(max_examples=200, deadline=None)
@given(values, st.integers(0, json_codec.MAX_VALUE_DEPTH + 3))
def test_dumps_value_is_dumps_within_the_depth_and_refuses_past_it(value: Any, pad: int) -> None:
    deep = _nested(pad, value)
    depth = _depth(deep)
    if depth <= json_codec.MAX_VALUE_DEPTH:
        assert json_codec.dumps_value(deep) == json_codec.dumps(deep)
    else:
        with pytest.raises(TypeError) as info:
            json_codec.dumps_value(deep)
        assert "nested deeper than" in json_codec.refusal(info.value)


def test_a_raft_command_takes_exactly_the_depth_the_api_takes() -> None:
    limit = json_codec.MAX_VALUE_DEPTH
    Command("put", 1, "k", _nested(limit, 0))
    json_codec.dumps_value(_nested(limit, 0))
    with pytest.raises(ValueError, match="deeper"):
        Command("put", 1, "k", _nested(limit + 1, 0))


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0

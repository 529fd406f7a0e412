"""Limits on what a key may hold, through the HTTP API of one real node (issue 11 item 6).

- Nesting depth: one check (`kv.routing.check_value`) for both consistency modes, so a value
  one level too deep is the same 400 in both, and the deepest accepted value is stored,
  read back and fits every envelope it travels in (storage records, internode frames).
- The sibling set's bytes (`dynamo_mode.siblings.MAX_SIBLING_BYTES`): a write that would
  leave a key's sibling set over it is a 409 `sibling_set_too_large`, and nothing is
  truncated.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dynamo_mode.siblings import MAX_SIBLING_BYTES
from kv.routing import MAX_VALUE_DEPTH
from tests.integration.conftest import Api, error_of, key_path

EVENTUAL_1 = {"consistency": "eventual", "replication": 1}


def nested(depth: int) -> Any:
    """A value of exactly `depth` nested containers (lists and objects alternating)."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.fixture
def eventual_ks(api: Api) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:12]}"
    assert api.put(f"/v1/keyspaces/{name}", EVENTUAL_1).status == 201
    yield name
    api.delete(f"/v1/keyspaces/{name}")


@pytest.fixture(params=["eventual", "linearizable"])
def mode_ks(request: pytest.FixtureRequest, eventual_ks: str) -> str:
    if request.param == "eventual":
        return eventual_ks
    name: str = request.getfixturevalue("lin_ks")
    return name


def test_the_deepest_accepted_value_is_stored_and_read_back(api: Api, mode_ks: str) -> None:
    path = key_path(mode_ks, f"deep-{uuid.uuid4().hex[:8]}")
    value = nested(MAX_VALUE_DEPTH)
    assert api.put(path, {"value": value}).status == 200
    got = api.get(path)
    assert got.status == 200, got
    assert got.json()["value"] == value


@pytest.mark.parametrize("depth", [MAX_VALUE_DEPTH + 1, 253, 254, 300, 900])
def test_a_value_nested_too_deeply_is_the_same_400_in_both_modes(
    api: Api, mode_ks: str, depth: int
) -> None:
    path = key_path(mode_ks, f"deep-{uuid.uuid4().hex[:8]}")
    reply = api.put(path, {"value": nested(depth)})
    assert reply.status == 400, reply
    err = error_of(reply)
    assert (err["code"], err.get("field")) == ("invalid_request", "value"), reply
    assert f"deeper than {MAX_VALUE_DEPTH}" in err["message"], reply
    assert api.get(path).status == 404  # nothing was stored


def test_a_write_past_the_sibling_bytes_limit_is_409_and_nothing_is_truncated(
    api: Api, eventual_ks: str
) -> None:
    path = key_path(eventual_ks, "big")
    big = "x" * (800 << 10)
    fits = MAX_SIBLING_BYTES // len(big)  # blind writes: each one a sibling of the others
    for i in range(fits):
        assert api.put(path, {"value": f"{i}{big}"}).status == 200
    reply = api.put(path, {"value": f"{fits}{big}"})
    assert reply.status == 409, reply
    err = error_of(reply)
    assert (err["code"], err["limit"]) == ("sibling_set_too_large", MAX_SIBLING_BYTES), reply
    assert err["size"] > MAX_SIBLING_BYTES
    got = api.get(path).json()
    assert sorted(v[0] for v in got["siblings"]) == [str(i) for i in range(fits)]
    # Resolving with the context is the way out: it shrinks the set.
    reply = api.put(path, {"value": "resolved", "context": got["context"]})
    assert reply.status == 200, reply
    assert api.get(path).json()["value"] == "resolved"

"""`GET /v1/keyspaces/{ks}/keys` (kv/listing.py, docs/listing.md) through the HTTP API.

One node with a keyspace of each mode, then three in-process nodes: a linearizable
keyspace of replication 1 (most groups elsewhere: their slices come through `lin_list`)
and an eventual one of replication 3 written with w=1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.integration.conftest import (
    Api,
    NodeThread,
    api_of,
    create_keyspace,
    error_of,
    founder_configs,
    key_path,
    running,
    wait_groups_led,
)

KEYS = [f"user/{i:03d}" for i in range(40)] + [f"order/{i}" for i in range(15)]
KEYS += ["é", "日本", "a b", "zz%2F", "user"]
DELETED = ["user/005", "user/017", "order/3"]


def listing(api: Api, ks: str, **query: Any) -> tuple[int, dict[str, Any]]:
    reply = api.get(f"/v1/keyspaces/{ks}/keys?{urlencode(query)}")
    return reply.status, reply.json()


def list_all(api: Api, ks: str, limit: int, prefix: str = "") -> list[str]:
    """Every page, checking each: at most `limit` keys, in order, after the cursor."""
    keys: list[str] = []
    after: str | None = None
    for _ in range(1000):
        query: dict[str, Any] = {"limit": limit, "prefix": prefix}
        if after is not None:
            query["after"] = after
        status, page = listing(api, ks, **query)
        assert status == 200, page
        assert len(page["keys"]) <= limit
        assert all(after is None or k > after for k in page["keys"])
        keys.extend(page["keys"])
        if page["next"] is None:
            return keys
        after = page["next"]
    raise AssertionError("pagination did not end")


def expected(prefix: str = "") -> list[str]:
    live = set(KEYS) - set(DELETED)
    return sorted((k for k in live if k.startswith(prefix)), key=lambda k: k.encode())


def fill(api: Api, ks: str, query: str = "") -> None:
    for key in KEYS:
        reply = api.put(key_path(ks, key) + query, {"value": key})
        assert reply.status == 200, reply
    for key in DELETED:
        assert api.delete(key_path(ks, key) + query).status == 200


@pytest.fixture(scope="module")
def keyspaces(api: Api, lin_ks: str) -> list[str]:
    create_keyspace(api, "ev", {"consistency": "eventual", "replication": 1})
    for ks in (lin_ks, "ev"):
        fill(api, ks)
    return [lin_ks, "ev"]


@pytest.mark.parametrize("mode", [0, 1], ids=["linearizable", "eventual"])
def test_pages_cover_every_live_key_once_in_order(
    api: Api, keyspaces: list[str], mode: int
) -> None:
    ks = keyspaces[mode]
    assert list_all(api, ks, 7) == expected()
    assert list_all(api, ks, 1000) == expected()
    status, page = listing(api, ks)  # default limit 100 > the 57 live keys
    assert status == 200 and page == {"keys": expected(), "next": None}


@pytest.mark.parametrize("mode", [0, 1], ids=["linearizable", "eventual"])
def test_prefix_and_after(api: Api, keyspaces: list[str], mode: int) -> None:
    ks = keyspaces[mode]
    assert list_all(api, ks, 4, prefix="user/") == expected("user/")
    assert list_all(api, ks, 100, prefix="order/") == expected("order/")
    assert list_all(api, ks, 3, prefix="nothing") == []
    status, page = listing(api, ks, prefix="user/", after="user/030", limit=3)
    assert status == 200 and page == {
        "keys": ["user/031", "user/032", "user/033"],
        "next": "user/033",
    }
    status, page = listing(api, ks, after="日本")
    assert status == 200 and page == {"keys": [], "next": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"prefix": "x" * 1025}, "prefix"),
        ({"after": "é" * 513}, "after"),
        ({"timeout_ms": 0}, "timeout_ms"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(
    api: Api, keyspaces: list[str], query: dict[str, Any], field: str
) -> None:
    status, body = listing(api, keyspaces[0], **query)
    assert status == 400, body
    assert body["error"]["field"] == field


def test_an_unknown_keyspace_is_404(api: Api) -> None:
    reply = api.get("/v1/keyspaces/nope/keys")
    assert reply.status == 404 and error_of(reply)["code"] == "keyspace_not_found"


# ------------------------------------------------------------------ three nodes
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    with running(founder_configs(tmp_path_factory.mktemp("c"), 3)) as nodes:
        api = api_of(nodes["n1"])
        create_keyspace(api, "lin1", {"consistency": "linearizable", "replication": 1})
        config = {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 1}
        create_keyspace(api, "ev3", config)
        for node in nodes.values():
            wait_groups_led(api_of(node))
        yield nodes


def test_every_node_lists_the_same_keys(cluster: dict[str, NodeThread]) -> None:
    writer = api_of(cluster["n2"])
    fill(writer, "lin1")
    fill(writer, "ev3", "?w=1")
    for node in cluster.values():
        api = api_of(node)
        assert list_all(api, "lin1", 9) == expected()  # groups elsewhere: lin_list
        assert list_all(api, "ev3", 9) == expected()
        assert list_all(api, "ev3", 50, prefix="user/0") == expected("user/0")

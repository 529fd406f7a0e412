"""`kv.client.SyncClient`, the blocking client for scripts (and kvctl), against a real node
(issue 13, item 2: "the synchronous Python client gets its own tests and the request_id
parameter"). One in-process node with a linearizable keyspace `lin` (the `lin_ks` fixture
waits, with a deadline, for its groups to be led) and an eventual one, both of
replication 1; every client is closed and the node stopped even when a test fails.

What is checked: put / get / delete in both modes with their typed errors, the key
listing a page at a time, `request_id` (a write sent again with the same id answers what
the first did and is applied once; the same id for another command is
`RequestIdConflict`, HTTP 409), and a node nobody listens on (Retryable, never sent).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kv.client import SyncClient
from kv.errors import (
    ConditionFailed,
    InvalidRequest,
    KeyNotFound,
    KeyspaceNotFound,
    RequestIdConflict,
    Retryable,
)
from tests.integration.conftest import Api, NodeThread, create_keyspace, free_port

EV = "sync_ev"


@pytest.fixture(scope="module")
def ev(api: Api) -> str:
    create_keyspace(api, EV, {"consistency": "eventual", "replication": 1})
    return EV


@pytest.fixture
def client(node: NodeThread) -> Iterator[SyncClient]:
    with SyncClient([node.config.advertise], timeout=10.0) as c:
        yield c


def test_eventual_put_get_delete(client: SyncClient, ev: str) -> None:
    written = client.put(ev, "k", {"n": [1, "é"]})
    assert set(written) == {"context"}
    got = client.get(ev, "k")
    assert got["key"] == "k" and got["value"] == {"n": [1, "é"]}
    client.put(ev, "k", "other")  # blind: a sibling of the first
    both = client.get(ev, "k")
    assert len(both["siblings"]) == 2 and {"n": [1, "é"]} in both["siblings"]
    client.put(ev, "k", "merged", context=both["context"])
    assert client.get(ev, "k")["value"] == "merged"
    assert client.delete(ev, "k")["deleted"] is True
    with pytest.raises(KeyNotFound):
        client.get(ev, "k")
    assert client.delete(ev, "k")["deleted"] is False
    with pytest.raises(InvalidRequest, match="request_id: unknown field"):
        client.put(ev, "k", 1, request_id="r")


def test_linearizable_put_get_delete_and_conditions(client: SyncClient, lin_ks: str) -> None:
    assert client.put(lin_ks, "acct", 100, if_version=0) == {"version": 1}
    with pytest.raises(ConditionFailed) as failed:
        client.put(lin_ks, "acct", 100, if_version=0)
    assert failed.value.details["current_version"] == 1
    assert client.put(lin_ks, "acct", 90) == {"version": 2}
    assert client.get(lin_ks, "acct") == {"key": "acct", "value": 90, "version": 2}
    with pytest.raises(ConditionFailed):
        client.delete(lin_ks, "acct", if_version=1)
    assert client.delete(lin_ks, "acct", if_version=2)["deleted"] is True
    with pytest.raises(KeyNotFound):
        client.get(lin_ks, "acct")


def test_a_retried_request_id_answers_the_same_and_applies_once(
    client: SyncClient, lin_ks: str
) -> None:
    first = client.put(lin_ks, "once", "v1", request_id="sync-put-1")
    assert client.put(lin_ks, "once", "v1", request_id="sync-put-1") == first
    assert client.get(lin_ks, "once")["version"] == first["version"]  # not written twice
    with pytest.raises(RequestIdConflict):
        client.put(lin_ks, "once", "v2", request_id="sync-put-1")  # another command
    assert client.get(lin_ks, "once")["value"] == "v1"

    gone = client.delete(lin_ks, "once", request_id="sync-del-1")
    assert client.delete(lin_ks, "once", request_id="sync-del-1") == gone
    assert gone["deleted"] is True
    with pytest.raises(RequestIdConflict):
        client.delete(lin_ks, "once", if_version=7, request_id="sync-del-1")


@pytest.mark.parametrize("mode", ["eventual", "linearizable"])
def test_list_keys_a_page_at_a_time(
    client: SyncClient, mode: str, request: pytest.FixtureRequest
) -> None:
    ks = request.getfixturevalue("ev" if mode == "eventual" else "lin_ks")
    wanted = [f"list/{i:02d}" for i in range(12)]
    for key in [*wanted, "list", "lisu"]:
        client.put(ks, key, key)
    seen: list[str] = []
    after = None
    for _ in range(100):
        page = client.list_keys(ks, prefix="list/", after=after, limit=5)
        assert len(page["keys"]) <= 5
        seen += page["keys"]
        after = page["next"]
        if after is None:
            break
    assert seen == wanted
    assert client.list_keys(ks, prefix="none/") == {"keys": [], "next": None}
    with pytest.raises(InvalidRequest, match="limit"):
        client.list_keys(ks, limit=0)


def test_an_unknown_keyspace_and_the_health_of_every_node(
    client: SyncClient, node: NodeThread
) -> None:
    with pytest.raises(KeyspaceNotFound):
        client.get("no_such_keyspace", "k")
    with pytest.raises(KeyspaceNotFound):
        client.list_keys("no_such_keyspace")
    me, nobody = node.config.advertise, f"127.0.0.1:{free_port()}"
    answers = client.healths([me, nobody])
    assert answers[me]["status"] == "ok"
    assert isinstance(answers[nobody], Retryable)


def test_a_node_nobody_listens_on_is_retryable_and_nothing_was_sent(ev: str) -> None:
    with SyncClient([f"127.0.0.1:{free_port()}"], retries=1, backoff=0.01) as nobody:
        with pytest.raises(Retryable, match="cannot connect"):
            nobody.put(ev, "k", 1, request_id="r")

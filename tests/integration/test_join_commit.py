"""A joining node becomes a member through a committed plan, everything sent through its own
API (issue 9: "it reports itself as joining until a committed plan makes it a member").

Three founders (the meta group's voters), an eventual keyspace with data, and n4 started
with seeds. The plan and the commit go to n4, which does not vote: the commit reaches a
voter as `meta_change`, and n4 takes the voter's metadata with the outcome, so it is a
member as soon as the commit returns. It then pulls the partitions it gains (its
`move_done` reports go to a voter the same way) until the plan is done, and serves them.
Every wait is a poll with a deadline; every node is stopped even when the test fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.conftest import (
    POLL_INTERVAL_S,
    START_DEADLINE_S,
    NodeThread,
    api_of,
    key_path,
    wait_healthy,
)
from tests.integration.test_joining import EVENTUAL, configs

KEYS = [f"k{i}" for i in range(24)]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    founders, joiner = configs(tmp_path_factory.mktemp("commit"))
    running: dict[str, NodeThread] = {}
    try:
        for cfg in (*founders, joiner):
            running[cfg.node_id] = NodeThread(cfg)
            running[cfg.node_id].start()
        for node in running.values():
            wait_healthy(api_of(node), START_DEADLINE_S)
        yield running
    finally:
        errors = []
        for node in running.values():
            try:
                node.stop()
            except Exception as exc:  # stop every node even if one fails to
                errors.append(exc)
        assert not errors, errors


def poll(probe: Callable[[], Any], what: str) -> Any:
    end = time.monotonic() + START_DEADLINE_S
    while True:
        last = probe()
        if last:
            return last
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(POLL_INTERVAL_S)


def ok(reply: Any, status: int = 200) -> dict[str, Any]:
    assert reply.status == status, reply
    data: dict[str, Any] = reply.json()
    return data


def test_a_plan_committed_through_the_joiner_makes_it_a_member(
    nodes: dict[str, NodeThread],
) -> None:
    founder, joiner = api_of(nodes["n1"]), api_of(nodes["n4"])
    assert founder.put("/v1/keyspaces/ev", EVENTUAL).status == 201
    for key in KEYS:
        assert founder.put(key_path("ev", key), {"value": key}).status == 200
    poll(lambda: joiner.get("/v1/keyspaces/ev").status == 200, "the keyspace on n4")
    assert ok(joiner.get("/v1/health"))["status"] == "joining"

    cfg = nodes["n4"].config
    me = {"id": "n4", "http": cfg.advertise, "raft": cfg.raft_advertise}
    add = {"changes": [{"kind": "add", "node": "n4", "member": me}]}
    plan = ok(joiner.request("POST", "/v1/membership/plan", json_body=add))
    assert plan["moves"] and all(m["to"] == "n4" for m in plan["moves"])
    commit = {"plan_id": plan["plan_id"], **add}
    assert ok(joiner.request("POST", "/v1/membership/commit", json_body=commit), 202)

    health = ok(joiner.get("/v1/health"))  # the voter's metadata came back with the outcome
    assert health["status"] == "ok" and health["member"] is True
    info = ok(joiner.get("/v1/cluster"))
    assert info["member"] is True and info["joining"] == []
    assert info["meta_group"]["voter"] is False  # a member, still not a voter

    poll(lambda: ok(founder.get("/v1/membership"))["status"] == "idle", "the plan to finish")
    poll(lambda: ok(joiner.get("/v1/membership"))["status"] == "idle", "n4 to see it done")
    held = 0
    for key in KEYS:
        state = ok(joiner.get(f"/v1/admin/replica/ev/{key}"))
        if "n4" in state["replicas"]:
            assert [v["value"] for v in state["versions"]] == [key]
            held += 1
        assert ok(joiner.get(key_path("ev", key)))["value"] == key
    assert held > 0

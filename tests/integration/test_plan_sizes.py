"""A membership plan's expected bytes come from the data the partitions' owners hold, and a
transfer counts the bytes it copies (kv/sizes.py, kv/tally.py, kv/sizer.py,
dynamo_mode/transfer.py; docs/membership.md "Plan sizes").

Four in-process founders (real LevelDB, real Raft groups, real HTTP), 16 partitions, an
eventual keyspace and a linearizable one, both of replication 3, and an empty eventual one
of replication 2; anti-entropy off (only the transfer moves data). Known data is written,
then a plan removing n4 is asked for:

- every moving partition is sized (`bytes_unknown` 0); the empty keyspace's moves are a
  known 0, not null; an eventual move's keys are exactly the keys written to its
  partition, and its bytes are at least the key + value bytes written there and at most
  `EVENTUAL_FACTOR` times them (a stored record adds the storage key's 7-byte prefix and
  the version: dot, causal context, JSON framing — measured 1.23× for the
  `VALUE_BYTES`-long values here, about 74 bytes a key);
- a linearizable move counts its group's data keys, and its bytes cover the whole group
  range — data, plus the applied index and the request-id table a snapshot carries — at
  least the data written and at most `RAFT_FACTOR` times it (measured 1.55×, about 165
  bytes a write).

The plan is then committed with transfers throttled; each incoming owner's transfer
reports the bytes it copied, which equal the plan's expected bytes for the partition (no
write happens meanwhile, and both count the records as the source stores them), and the
current owners show the pending moves' sizes in `/v1/cluster` ("sizes"). The transfers are
polled until the plan is done; the last pull of all may flip the plan, and clear the
progress, between two polls.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import (
    POLL_INTERVAL_S,
    NodeThread,
    api_of,
    create_keyspace,
    founder_configs,
    key_path,
    running,
    wait_groups_led,
)

EV, LIN, EMPTY = "sized_ev", "sized_lin", "sized_empty"
VALUE_BYTES = 300
EVENTUAL_FACTOR = 1.5
RAFT_FACTOR = 2.0
PLAN_DEADLINE_S = 180.0
REMOVE_N4 = {"changes": [{"kind": "remove", "node": "n4"}]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    settings = {
        "anti_entropy_interval_s": 3600.0,
        "disowned_grace_s": 1.0,
        "partitions": 16,
        "transfer_batch": 4,
        "transfer_keys_per_s": 40.0,  # a few seconds per pull: the test sees them copying
    }
    with running(founder_configs(tmp_path_factory.mktemp("s"), 4, **settings)) as nodes:
        n1 = api_of(nodes["n1"])
        ev = {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 2}
        create_keyspace(n1, EV, ev)
        lin = {"consistency": "linearizable", "replication": 3}
        create_keyspace(n1, LIN, lin)
        empty = {"consistency": "eventual", "replication": 2, "read_quorum": 1, "write_quorum": 1}
        create_keyspace(n1, EMPTY, empty)
        for node in nodes.values():
            wait_groups_led(api_of(node))
        yield nodes


def value(i: int) -> str:
    return f"{i:06}" + "v" * (VALUE_BYTES - 6)


def write(nodes: dict[str, NodeThread], ks: str, count: int) -> dict[int, list[int]]:
    """`count` keys with `VALUE_BYTES`-long values; partition → [keys, key + value bytes]
    written (for a linearizable keyspace, the partition of the key's group)."""
    n1 = api_of(nodes["n1"])
    written: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for i in range(count):
        key, body = f"{ks}-{i:04}", {"value": value(i)}
        reply = n1.put(key_path(ks, key), body)
        assert reply.status == 200, reply
        where = n1.get(f"/v1/admin/replica/{ks}/{key}").json()
        p = where["partition"] if "partition" in where else int(where["group"][1:].split("r")[0])
        written[p][0] += 1
        written[p][1] += len(key.encode()) + len(json.dumps(value(i)))
    return written


def test_the_plan_sizes_each_moving_partition_and_the_transfers_count_their_bytes(
    cluster: dict[str, NodeThread],
) -> None:
    ev_written, lin_written = write(cluster, EV, 160), write(cluster, LIN, 64)
    n1 = api_of(cluster["n1"])
    reply = n1.request("POST", "/v1/membership/plan", json_body=REMOVE_N4)
    assert reply.status == 200, reply
    plan = reply.json()
    moves = plan["moves"]
    assert plan["summary"]["bytes_unknown"] == 0 and plan["summary"]["bytes"] > 0
    assert plan["summary"]["bytes"] == sum(m["bytes"] for m in moves)
    empty = [m for m in moves if m["replication"] == 2]
    assert empty and all((m["keys"], m["bytes"]) == (0, 0) for m in empty)
    for m in (m for m in moves if m["replication"] == 3):
        written = (ev_written if m["mode"] == "eventual" else lin_written).get(m["partition"])
        keys, nbytes = written or (0, 0)
        factor = EVENTUAL_FACTOR if m["mode"] == "eventual" else RAFT_FACTOR
        assert m["keys"] == keys, m
        if m["mode"] == "eventual":
            assert nbytes <= m["bytes"] <= factor * nbytes, (m, nbytes)
        else:  # even an empty group has its applied index, once anything was applied
            assert nbytes <= m["bytes"] <= factor * nbytes + 64, (m, nbytes)
    print(
        f"plan: {len(moves)} moves, {plan['summary']['bytes']} bytes expected; written "
        f"{sum(b for _, b in ev_written.values())} eventual, "
        f"{sum(b for _, b in lin_written.values())} linearizable bytes"
    )

    commit = {"plan_id": plan["plan_id"], **REMOVE_N4}
    assert n1.request("POST", "/v1/membership/commit", json_body=commit).status == 202
    copied, sizes = follow(cluster)
    expected = {
        (m["replication"], m["partition"]): m["bytes"] for m in moves if m["mode"] == "eventual"
    }
    for (n, p, node), nbytes in copied.items():
        assert nbytes == expected[(n, p)], (n, p, node, nbytes)
    assert any(b > 0 for (n, _, _), b in copied.items() if n == 3), copied
    assert any(s["bytes"] > 0 for s in sizes), sizes


def follow(nodes: dict[str, NodeThread]) -> tuple[dict[tuple[int, int, str], int], list[Any]]:
    """Poll every remaining node until the plan is done: the bytes_copied of each eventual
    pull (replication, partition, incoming node) once reported, and every pending move
    size shown."""
    apis = {n: api_of(nodes[n]) for n in ("n1", "n2", "n3")}
    copied: dict[tuple[int, int, str], int] = {}
    sizes: list[Any] = []
    end = time.monotonic() + PLAN_DEADLINE_S
    while apis["n1"].get("/v1/membership").json()["status"] != "idle":
        assert time.monotonic() < end, "plan not finished"
        for name, api in apis.items():
            view = api.get("/v1/cluster").json()
            sizes += view["sizes"]
            for t in view["transfers"]:
                if t["state"] == "reported":
                    copied[(t["replication"], t["partition"], name)] = t["bytes_copied"]
        time.sleep(POLL_INTERVAL_S * 4)
    return copied, sizes

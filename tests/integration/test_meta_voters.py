"""The meta group's voters follow the members (issue 9, item 1: "the meta Raft group keeps at
most 5 voters ... When a voter is removed, another member takes its place first, so the
meta group never loses its majority"; docs/membership.md "Meta group voters").

Three founders (the first voters) and two nodes started with seeds, all in-process (real
LevelDB, pysyncobj on loopback, real HTTP), an eventual keyspace with data. Plans add n4
and n5 (five members: both become voters), then remove two founders one at a time (each
is replaced, or dropped to keep an odd count, before or while it leaves). A background
writer keeps making metadata changes through the nodes that stay, and every one of them
commits; at the end the voters are the three remaining members, every remaining node
agrees on the epoch and the voters, and the removed founders read without voting. Every
wait is a poll with a deadline; every node is stopped even when the test fails.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kv.config import NodeConfig
from kv.meta import Member
from raft_groups.meta_group import GID
from tests.integration.conftest import (
    POLL_INTERVAL_S,
    START_DEADLINE_S,
    Api,
    NodeThread,
    api_of,
    free_port,
    key_path,
    wait_healthy,
)

EVENTUAL = {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 2}
KEYS = [f"k{i}" for i in range(16)]
DEADLINE_S = 90.0


def configs(root: Path) -> list[NodeConfig]:
    secret = secrets.token_hex(16)
    ids = [f"n{i}" for i in range(1, 6)]
    addrs = {n: (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}") for n in ids}
    founders = tuple(Member(n, *addrs[n]) for n in ids[:3])
    common: dict[str, Any] = {
        "cluster_secret": secret,
        "meta_poll_interval_s": 0.1,
        "anti_entropy_interval_s": 3600.0,  # only transfers move data here
        "disowned_grace_s": 1.0,
    }
    made = []
    for n in ids:
        h, r = addrs[n]
        role: dict[str, Any] = (
            {"initial_cluster": founders}
            if n in ("n1", "n2", "n3")
            else {"seeds": (founders[0].http,)}
        )
        made.append(NodeConfig(n, str(root / n), h, h, r, r, **role, **common))
    return made


RUNNING: dict[str, NodeThread] = {}  # for the failure message of `poll`


def poll(probe: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        last = probe()
        if last:
            return last
        assert time.monotonic() < end, f"timed out waiting for {what}:\n{views()}"
        time.sleep(POLL_INTERVAL_S)


def views() -> str:
    """Every running node's meta_group view, one line each."""
    lines = []
    for name, node in sorted(RUNNING.items()):
        try:
            info = api_of(node).get("/v1/cluster", timeout=5.0).json()
            group = {k: v for k, v in info["meta_group"].items() if k != "driver"}
            lines.append(
                f"{name} epoch {info['epoch']}: {group} driver {info['meta_group']['driver']}"
            )
        except Exception as exc:  # noqa: BLE001 - a diagnostic
            lines.append(f"{name}: {exc!r}")
    return "\n".join(lines)


def ok(reply: Any, *statuses: int) -> dict[str, Any]:
    assert reply.status in (statuses or (200,)), reply
    data: dict[str, Any] = reply.json()
    return data


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    running = RUNNING
    running.clear()
    try:
        for cfg in configs(tmp_path_factory.mktemp("voters")):
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


class MetaWriter:
    """Puts a keyspace (a metadata change) every 0.2 s through the nodes in `via`, in turn;
    a retryable refusal is retried with the same change. Records how long each took."""

    def __init__(self, via: list[Api]) -> None:
        self.via = via
        self.durations: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            start = time.monotonic()
            self._commit(f"m{i % 4}", {**EVENTUAL, "read_quorum": 1 + i % 2}, i)
            self.durations.append(time.monotonic() - start)
            i += 1
            self._stop.wait(0.2)

    def _commit(self, name: str, body: dict[str, Any], i: int) -> None:
        end = time.monotonic() + 20.0
        while time.monotonic() < end:
            api = self.via[i % len(self.via)]
            try:
                status = api.put(f"/v1/keyspaces/{name}", body, timeout=10.0).status
            except OSError as exc:
                status = -1
                self.failures.append(f"{api.base_url}: {exc}")
            if status in (200, 201):
                return
            i += 1
            time.sleep(0.1)
        self.failures.append(f"{name} not committed within 20 s")

    def __enter__(self) -> MetaWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30.0)


def meta_group(node: NodeThread) -> dict[str, Any]:
    info: dict[str, Any] = ok(api_of(node).get("/v1/cluster"))["meta_group"]
    return info


def plan(via: NodeThread, changes: list[dict[str, Any]]) -> None:
    """Plan and commit `changes` through `via`, planning again while metadata changes made
    meanwhile refuse the commit (409 plan_changed: a compare-and-set) or the meta group
    answers a retryable 503/504, then wait for it."""
    api, body = api_of(via), {"changes": changes}

    def committed() -> bool:
        planned = api.request("POST", "/v1/membership/plan", json_body=body)
        if planned.status == 503:  # retryable (a meta election on a loaded machine)
            return False
        commit = {"plan_id": ok(planned)["plan_id"], **body}
        reply = api.request("POST", "/v1/membership/commit", json_body=commit)
        if reply.status in (503, 504):  # retried; a commit applied twice is refused (409)
            return False
        return reply.status == 202 or ok(reply, 409)["error"]["reason"] != "plan_changed"

    poll(committed, "a plan that commits")
    poll(lambda: ok(api.get("/v1/membership"))["status"] == "idle", "the plan to finish")


def add(via: NodeThread, node: NodeThread) -> None:
    cfg = node.config
    member = {"id": cfg.node_id, "http": cfg.advertise, "raft": cfg.raft_advertise}
    plan(via, [{"kind": "add", "node": cfg.node_id, "member": member}])


def converged(nodes: list[NodeThread], want: set[str]) -> bool:
    """Every node in `nodes` sees the same epoch and exactly `want` as the voters, each of
    them voting and the others not."""
    views = {n.config.node_id: ok(api_of(n).get("/v1/cluster")) for n in nodes}
    epochs = {v["epoch"] for v in views.values()}
    voters = {tuple(sorted(v["meta_group"]["voters"])) for v in views.values()}
    roles = {n: v["meta_group"]["role"] for n, v in views.items()}
    sizes = {len(v["meta_group"]["members"]) for v in views.values() if v["meta_group"]["voter"]}
    return (
        len(epochs) == 1
        and voters == {tuple(sorted(want))}
        and sizes == {len(want)}  # no voter left that the metadata no longer lists
        and all((roles[n] == "voter") == (n in want) for n in roles)
    )


def test_voters_follow_the_members_and_the_group_keeps_its_majority(
    nodes: dict[str, NodeThread],
) -> None:
    n1, n2, n3, n4, n5 = (nodes[f"n{i}"] for i in range(1, 6))
    ok(api_of(n1).put("/v1/keyspaces/ev", EVENTUAL), 201)
    for key in KEYS:
        ok(api_of(n1).put(key_path("ev", key), {"value": key}))
    everyone = list(nodes.values())
    poll(lambda: converged(everyone, {"n1", "n2", "n3"}), "the founders to be the voters")

    add(n1, n4)  # four members: still three voters (an odd count)
    assert converged(everyone, {"n1", "n2", "n3"}) or poll(
        lambda: converged(everyone, {"n1", "n2", "n3"}), "n4 to see the plan"
    )
    add(n1, n5)  # five members: all five vote
    poll(lambda: converged(everyone, {"n1", "n2", "n3", "n4", "n5"}), "five voters")

    with MetaWriter([api_of(n) for n in (n3, n4, n5)]) as writer:
        plan(n3, [{"kind": "remove", "node": "n1"}])
        staying = [n2, n3, n4, n5]
        poll(lambda: _three_voters_among(staying), "three voters among the four members")
        plan(n3, [{"kind": "remove", "node": "n2"}])
        poll(lambda: converged([n3, n4, n5], {"n3", "n4", "n5"}), "n3, n4, n5 to be the voters")
    assert not writer.failures, writer.failures
    assert len(writer.durations) >= 5, writer.durations

    for gone in (n1, n2):  # removed from the voters: reading, their meta journal deleted
        poll(lambda g=gone: meta_group(g)["role"] == "reader", f"{gone.config.node_id} to read")
        # the role says "reader" before the old group is closed and its journal deleted
        # (kv/meta_role.py `_leave`): a poll, not an immediate look
        poll(lambda g=gone: _meta_deleted(g), f"{gone.config.node_id}'s meta journal deleted")
    for key in KEYS:
        assert ok(api_of(n4).get(key_path("ev", key)))["value"] == key
    leader = meta_group(n3)["leader"]
    assert leader in ("n3", "n4", "n5")
    assert all(meta_group(n)["driver"]["state"] == "idle" for n in (n3, n4, n5))


def _three_voters_among(staying: list[NodeThread]) -> bool:
    views = [meta_group(n) for n in staying]
    voters = {tuple(sorted(v["voters"])) for v in views}
    sizes = {len(v["members"]) for v in views if v["voter"]}
    if len(voters) != 1 or sizes != {3}:
        return False
    (agreed,) = voters
    return len(agreed) == 3 and "n1" not in agreed


def restart(nodes: dict[str, NodeThread], node_id: str) -> NodeThread:
    old = nodes[node_id]
    old.stop()
    nodes[node_id] = NodeThread(old.config)
    nodes[node_id].start()
    wait_healthy(api_of(nodes[node_id]), START_DEADLINE_S)
    return nodes[node_id]


def test_restarted_nodes_keep_their_roles(nodes: dict[str, NodeThread]) -> None:
    """After the test above: the three voters restart one at a time, the meta group's
    leader first (two of them joined with seeds: they rebuild the group from their journal
    and saved peers, not from a founding configuration), and a removed founder restarts:
    it reads without founding again. The group still commits."""
    leader = meta_group(nodes["n3"])["leader"]
    assert leader in ("n3", "n4", "n5"), views()
    for voter in [leader, *sorted({"n3", "n4", "n5"} - {leader})]:
        restart(nodes, voter)
        staying = [nodes[n] for n in ("n3", "n4", "n5")]
        poll(lambda s=staying: converged(s, {"n3", "n4", "n5"}), f"the voters after {voter}")
    restart(nodes, "n1")
    assert meta_group(nodes["n1"])["role"] == "reader"
    assert ok(api_of(nodes["n1"]).get("/v1/health"))["member"] is False  # removed, reading
    put = lambda: api_of(nodes[leader]).put("/v1/keyspaces/after", EVENTUAL)  # noqa: E731
    poll(lambda: put().status in (200, 201), "a metadata change through the restarted voter")
    poll(
        lambda: api_of(nodes["n1"]).get("/v1/keyspaces/after").status == 200,
        "the removed founder to read the change",
    )


def _meta_deleted(node: NodeThread) -> bool:
    """The meta group's part of the node's log is dropped and its directory is gone."""
    log = node.node.driver.log
    assert log is not None
    return GID not in log.states and not Path(node.config.meta_dir).exists()

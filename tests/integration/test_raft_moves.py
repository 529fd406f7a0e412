"""Linearizable partitions move by Raft reconfiguration when a membership plan runs
(raft_groups/mover.py, docs/raft.md "Linearizable moves").

Four in-process founders (real LevelDB, real Raft groups on loopback, real HTTP), a
linearizable keyspace with replication 3 and an eventual one. A plan removes n4 while
writers keep writing through every node: unconditional writes of their own keys and
compare-and-set (`if_version`) on keys they share, fresh eventual keys, and a recorded
history of reads, writes, cas and deletes (verification/recorder.py) that
verification/checker.py must find linearizable. The plan must finish; every acknowledged
write is then read back through every remaining node with the version it was acknowledged
with or a later one; no key's version ever goes backwards; every group's configuration is
its owners; and n4's groups, journals and data are gone.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kv.client import KvClient
from kv.errors import NotReady
from raft_groups import state_machine
from raft_groups.placement import GroupSpec
from tests.integration.conftest import (
    POLL_INTERVAL_S,
    START_DEADLINE_S,
    Api,
    NodeThread,
    api_of,
    create_keyspace,
    founder_configs,
    key_path,
    running,
    wait_groups_led,
)
from verification.checker import check
from verification.recorder import RecorderConfig, record

LIN, EV = "lin", "ev"
PLAN_DEADLINE_S = 180.0
HISTORY_S = 20.0  # the recorded history covers the start of the plan, where moves happen
SHARED = 8  # compare-and-set keys shared by all writers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeThread]]:
    settings = {"anti_entropy_interval_s": 3600.0, "disowned_grace_s": 1.0}
    root = tmp_path_factory.mktemp("m")
    with running(founder_configs(root, 4, **settings)) as nodes:
        n1 = api_of(nodes["n1"])
        lin = {"consistency": "linearizable", "replication": 3}
        ev = {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 2}
        create_keyspace(n1, LIN, lin)
        create_keyspace(n1, EV, ev)
        for node in nodes.values():
            wait_groups_led(api_of(node))
        yield nodes


class Writers:
    """One thread per node. Linearizable: unconditional writes of the thread's own keys,
    and read-then-compare-and-set of keys all threads share; eventual: fresh keys.

    Every acknowledged linearizable write is kept with its version (`acked`: key → version
    → value); two acknowledged writes with one version would be a write applied twice. Every
    version seen (acknowledged or read) must be at least the highest one that an operation
    completed before this one started (`backwards` otherwise: real-time order)."""

    def __init__(self, apis: list[Api], fresh: str = "e") -> None:
        self.apis = apis
        self.fresh = fresh  # prefix of the eventual keys, new in every test
        self.lock = threading.Lock()
        self.acked: dict[str, dict[int, Any]] = collections.defaultdict(dict)
        self.completed: dict[str, int] = {}
        self.violations: list[str] = []
        self.eventual: dict[str, Any] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(len(apis))]

    def run(self, i: int) -> None:
        api, n = self.apis[i], 0
        while not self.stop.is_set():
            n += 1
            value = {"writer": i, "n": n}
            try:
                if n % 3 == 0:
                    self.put_eventual(api, f"{self.fresh}{i}-{n}", value)
                elif n % 3 == 1:
                    self.put(api, f"u{i}-{n % 20}", value)
                else:
                    self.cas(api, f"c{n % SHARED}", value)
            except OSError as exc:
                self.counts[f"error {exc.__class__.__name__}"] += 1

    def put(self, api: Api, key: str, value: Any, if_version: int | None = None) -> None:
        floor = self._floor(key)
        body = (
            {"value": value} if if_version is None else {"value": value, "if_version": if_version}
        )
        reply = api.put(key_path(LIN, key), body, timeout=15)
        self.counts[f"put {reply.status}"] += 1
        if reply.status != 200:
            return
        version = int(reply.json()["version"])
        with self.lock:
            if if_version is not None and version != if_version + 1:
                self.violations.append(f"{key}: cas on {if_version} acknowledged as {version}")
            if self.acked[key].get(version, value) != value:
                self.violations.append(f"{key}: two acknowledged writes with version {version}")
            self.acked[key][version] = value
        self._saw(key, version, floor)

    def cas(self, api: Api, key: str, value: Any) -> None:
        floor = self._floor(key)
        reply = api.get(key_path(LIN, key), timeout=15)
        self.counts[f"get {reply.status}"] += 1
        if reply.status not in (200, 404):
            return
        body = reply.json()
        version = int(body["version"]) if reply.status == 200 else 0
        with self.lock:
            if self.acked[key].get(version, body.get("value")) != body.get("value"):
                self.violations.append(f"{key}: read {body} but version {version} was acked")
        self._saw(key, version, floor)
        self.put(api, key, value, if_version=version)

    def put_eventual(self, api: Api, key: str, value: Any) -> None:
        reply = api.put(key_path(EV, key), {"value": value}, timeout=15)
        if reply.status == 200:
            self.eventual[key] = value

    def _floor(self, key: str) -> int:
        with self.lock:
            return self.completed.get(key, 0)

    def _saw(self, key: str, version: int, floor: int) -> None:
        with self.lock:
            if version < floor:
                self.violations.append(f"{key}: version {version} after {floor} was seen")
            self.completed[key] = max(self.completed.get(key, 0), version)

    def wait_acked(self, count: int) -> None:
        end = time.monotonic() + START_DEADLINE_S
        while sum(len(v) for v in self.acked.values()) < count:
            assert time.monotonic() < end, f"writers acknowledged too little: {self.counts}"
            time.sleep(POLL_INTERVAL_S)

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


class History(threading.Thread):
    """verification/recorder.py on its own loop: clients spread over every node's API."""

    def __init__(self, endpoints: list[str], seed: int, prefix: str) -> None:
        super().__init__()
        keys = [f"{prefix}{i}" for i in range(12)]  # new keys: the checker starts from absent
        self.cfg = RecorderConfig(LIN, keys, clients=4, duration_s=HISTORY_S, seed=seed)
        self.endpoints = endpoints
        self.ops: list[Any] = []

    def run(self) -> None:
        async def go() -> None:
            async with KvClient(self.endpoints, timeout=10.0) as client:
                self.ops = await record(client, self.cfg)

        asyncio.run(go())


def wait_idle(api: Api, deadline_s: float, cluster: dict[str, NodeThread]) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while True:
        status: dict[str, Any] = api.get("/v1/membership").json()
        if status["status"] == "idle":
            return status
        assert time.monotonic() < end, f"plan not finished: {status} {stuck(cluster, status)}"
        time.sleep(POLL_INTERVAL_S * 4)


def stuck(cluster: dict[str, NodeThread], status: dict[str, Any]) -> dict[str, Any]:
    """What the mover of each node says about the pending groups (for the failure)."""
    gids = {f"p{m['partition']}r{m['replication']}" for m in status.get("pending", [])}
    out = {}
    for name, node in cluster.items():
        try:
            moves = api_of(node).get("/v1/cluster").json()["raft_moves"]
        except OSError:
            continue  # a stopped node
        groups = {g: p for g, p in moves["groups"].items() if g in gids}
        raft = {
            h.spec.gid: (h.group.status().leader, h.group.members())
            for h in node.node.groups.running()
            if h.spec.gid in gids
        }
        out[name] = {"moves": groups, "raft": raft, "totals": moves["totals"]}
    return out


def test_removing_a_node_moves_its_raft_groups_and_loses_no_acknowledged_write(
    cluster: dict[str, NodeThread],
) -> None:
    n1 = api_of(cluster["n1"])
    seed = int(time.time())
    print(f"recorder seed {seed}")
    changes = {"changes": [{"kind": "remove", "node": "n4"}]}
    history = History([c.node.config.advertise for c in cluster.values()], seed, "h")
    with Writers([api_of(node) for node in cluster.values()]) as writers:
        writers.wait_acked(50)  # some writes before the plan
        history.start()
        plan = n1.request("POST", "/v1/membership/plan", json_body=changes).json()
        lin_moves = plan["summary"]["by_mode"].get("linearizable", 0)
        assert lin_moves > 0, plan["summary"]
        start = time.monotonic()
        commit(n1, {"plan_id": plan["plan_id"], **changes})  # a 504 may have committed it
        status = wait_idle(n1, PLAN_DEADLINE_S, cluster)
        took = time.monotonic() - start
        history.join(timeout=HISTORY_S + 60)
    assert status["members"] == ["n1", "n2", "n3"]
    moves = {n: api_of(cluster[n]).get("/v1/cluster").json()["raft_moves"] for n in cluster}
    print(
        f"{lin_moves} linearizable moves of {plan['summary']['replicas_moving']} in {took:.1f}s; "
        f"writes {dict(writers.counts)}; mover totals "
        f"{ {n: m['totals'] for n, m in moves.items()} }"
    )
    assert not writers.violations, writers.violations[:10]
    assert sum(len(v) for v in writers.acked.values()) > 0
    remaining = {n: api_of(cluster[n]) for n in ("n1", "n2", "n3")}
    check_read_back(remaining, writers)
    check_configurations(cluster)
    wait_gone(cluster["n4"])
    result = check(history.ops, time_limit_s=60.0)
    print(f"history: {len(history.ops)} ops, verdict {result.verdict} {result.stats}")
    assert result.verdict == "ok", result.message


def check_read_back(apis: dict[str, Api], writers: Writers) -> None:
    """Every acknowledged write, through every remaining node: its version or a later one
    (and its value, at its version)."""
    for name, api in apis.items():
        for key, versions in writers.acked.items():
            top = max(versions)
            body = api.get(key_path(LIN, key), timeout=15).json()
            assert body["version"] >= top, f"{name} {key}: {body} < acknowledged {top}"
            if body["version"] == top:
                assert body["value"] == versions[top], f"{name} {key}: {body}"
        missing = [
            k
            for k, v in writers.eventual.items()
            if api.get(f"{key_path(EV, k)}?r=3").json().get("value") != v
        ]
        assert not missing, (
            f"{name}: {len(missing)} eventual writes not read: {missing[:5]} "
            f"{api.get(f'{key_path(EV, missing[0])}?r=3')}"
        )


def check_configurations(cluster: dict[str, NodeThread]) -> None:
    """Each group's leader has its owners (by Raft address) as its configuration."""
    md = cluster["n1"].node._metadata()
    raft = {m.id: m.raft for m in md.members}
    leaders = {}
    for name in ("n1", "n2", "n3"):
        for hosted in cluster[name].node.groups.running():
            if hosted.group.status().is_leader:
                leaders[hosted.spec.gid] = hosted
    assert len(leaders) == md.partitions, sorted(leaders)
    for hosted in leaders.values():
        owners = md.owners("linearizable", 3, hosted.spec.partition)[0]
        assert hosted.group.members() == tuple(sorted(raft[o] for o in owners)), hosted.spec


def wait_gone(node: NodeThread) -> None:
    """The removed node runs no group and holds no journal and no group data (a poll)."""
    raft_dir = node.config.raft_dir
    numbers = [GroupSpec(p, 3, ()).number for p in range(node.config.partitions)]
    end = time.monotonic() + START_DEADLINE_S
    while True:
        journals = [d for d in os.listdir(raft_dir) if d.startswith("p")]
        data = [n for n in numbers if any(True for _ in node.node.engine.iterate(*_range(n)))]
        running = node.node.groups.running()
        if not journals and not data and not running:
            return
        assert time.monotonic() < end, f"n4 keeps {journals=} {data=} {len(running)} groups"
        time.sleep(POLL_INTERVAL_S * 4)


def _range(number: int) -> tuple[bytes, bytes]:
    return state_machine.group_range(number)


def test_an_abort_mid_move_brings_every_group_back_to_its_owners(
    cluster: dict[str, NodeThread],
) -> None:
    """Add n4 back, with n1's mover unable to report: the groups n1 leads reach their
    target configuration but stay pending, the others flip. Then abort: the flipped groups
    move back (a reverting transition), the pending ones are dropped by the abort and
    their configuration is brought back to the owners (n4 removed, the old member added
    back). Nothing acknowledged is lost; n4 ends hosting nothing."""
    n1, mover = api_of(cluster["n1"]), cluster["n1"].node.raft_moves
    n4 = cluster["n4"].config
    member = {"id": "n4", "http": n4.advertise, "raft": n4.raft_advertise}
    changes = {"changes": [{"kind": "add", "node": "n4", "member": member}]}
    report, mover.propose = mover.propose, _refuse
    seed = int(time.time())
    print(f"recorder seed {seed}")
    history = History([c.node.config.advertise for c in cluster.values()], seed, "g")
    try:
        with Writers([api_of(node) for node in cluster.values()], "a") as writers:
            writers.wait_acked(50)
            history.start()
            plan = n1.request("POST", "/v1/membership/plan", json_body=changes).json()
            assert "plan_id" in plan, plan
            body = {"plan_id": plan["plan_id"], **changes}
            assert n1.request("POST", "/v1/membership/commit", json_body=body).status == 202
            held = wait_held(cluster)
            abort = {"plan_id": plan["plan_id"]}
            reply = n1.request("POST", "/v1/membership/abort", json_body=abort)
            assert reply.status == 202, reply
            mover.propose = report
            status = wait_idle(n1, PLAN_DEADLINE_S, cluster)
            history.join(timeout=HISTORY_S + 60)
    finally:
        mover.propose = report
    print(f"aborted with {held}; writes {dict(writers.counts)}")
    assert status["members"] == ["n1", "n2", "n3"]
    assert not writers.violations, writers.violations[:10]
    check_read_back({n: api_of(cluster[n]) for n in ("n1", "n2", "n3")}, writers)
    check_configurations(cluster)
    assert not cluster["n4"].node.groups.running()
    result = check(history.ops, time_limit_s=60.0)
    print(f"history: {len(history.ops)} ops, verdict {result.verdict} {result.stats}")
    assert result.verdict == "ok", result.message


async def _refuse(change: dict[str, Any]) -> dict[str, Any]:
    raise NotReady("move reports held back by the test")


def wait_held(cluster: dict[str, NodeThread]) -> dict[str, int]:
    """Until no eventual move is pending and every pending Raft group is at its target
    configuration, held there by n1's mover (it cannot report); at least one of each kind
    (flipped, held)."""
    end = time.monotonic() + PLAN_DEADLINE_S
    while True:
        md = cluster["n1"].node._metadata()
        t = md.transition
        assert t is not None, "the plan finished: n1's reports were not held back"
        held = [k for k in t.pending if k[0] == "linearizable"]
        flipped = [k for k in t.done if k[0] == "linearizable"]
        at_target = all(_at_target(cluster, md, p) for _, _, p in held)
        if held and flipped and at_target and all(k[0] != "eventual" for k in t.pending):
            return {"held": len(held), "flipped": len(flipped)}
        assert time.monotonic() < end, f"not held: {len(held)=} {len(flipped)=} {at_target=}"
        time.sleep(POLL_INTERVAL_S * 4)


def _at_target(cluster: dict[str, NodeThread], md: Any, partition: int) -> bool:
    raft = {m.id: m.raft for m in md.members}
    target = tuple(sorted(raft[n] for n in md.transition.chains[partition][:3]))
    for node in cluster.values():
        for hosted in node.node.groups.running():
            if hosted.spec.partition == partition and hosted.group.status().is_leader:
                return hosted.group.members() == target
    return False


def test_removing_a_dead_node_removes_it_from_each_group_before_adding(
    cluster: dict[str, NodeThread],
) -> None:
    """n4 joins again, then dies (its node stops) and is removed: in each of its groups the
    dead member goes first — 3 → 4 members with one dead would need the other three live
    and a majority of four — then the incoming one is added (docs/raft.md)."""
    n1 = api_of(cluster["n1"])
    n4 = cluster["n4"].config
    member = {"id": "n4", "http": n4.advertise, "raft": n4.raft_advertise}
    run_plan(n1, cluster, [{"kind": "add", "node": "n4", "member": member}])
    cluster["n4"].stop()
    before = mover_totals(cluster)
    with Writers([api_of(cluster[n]) for n in ("n1", "n2", "n3")], "d") as writers:
        writers.wait_acked(50)
        plan, took = run_plan(n1, cluster, [{"kind": "remove", "node": "n4"}])
    steps = mover_totals(cluster)
    steps.subtract(before)
    print(f"dead n4 removed: {plan['summary']['by_mode']} moves in {took:.1f}s; {dict(steps)}")
    lin = plan["summary"]["by_mode"]["linearizable"]
    assert steps["removes"] >= lin and steps["adds"] >= lin and steps["transfers"] == 0
    assert not writers.violations, writers.violations[:10]
    check_read_back({n: api_of(cluster[n]) for n in ("n1", "n2", "n3")}, writers)
    check_configurations(cluster)


def run_plan(
    api: Api, cluster: dict[str, NodeThread], changes: list[dict[str, Any]]
) -> tuple[dict[str, Any], float]:
    plan = api.request("POST", "/v1/membership/plan", json_body={"changes": changes}).json()
    start = time.monotonic()
    body = {"plan_id": plan["plan_id"], "changes": changes}
    commit(api, body)
    wait_idle(api, PLAN_DEADLINE_S, cluster)
    return plan, time.monotonic() - start


def mover_totals(cluster: dict[str, NodeThread]) -> collections.Counter[str]:
    """The movers' step counts, summed over the running nodes."""
    out: collections.Counter[str] = collections.Counter()
    for name in ("n1", "n2", "n3"):
        out.update(api_of(cluster[name]).get("/v1/cluster").json()["raft_moves"]["totals"])
    return out


def commit(api: Api, body: dict[str, Any]) -> None:
    """Commit a plan; a 504 (the meta leader just died) may have committed it: look."""
    end = time.monotonic() + START_DEADLINE_S
    while True:
        reply = api.request("POST", "/v1/membership/commit", json_body=body)
        if reply.status == 202:
            return
        assert reply.status in (503, 504) and time.monotonic() < end, reply
        if api.get("/v1/membership").json().get("plan_id") == body["plan_id"]:
            return
        time.sleep(POLL_INTERVAL_S * 4)

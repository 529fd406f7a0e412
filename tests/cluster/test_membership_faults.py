"""Membership changes under faults, on real node processes (issue 9 acceptance; the plan API of
docs/membership.md driven over HTTP, nodes started through ops/cluster).

1. Replace a dead node: the meta group's leader (a founder) is SIGKILLed and its data
   directory deleted; a fresh joining node takes its places with a `replace` plan committed
   through a survivor. The eventual partitions are rebuilt from the surviving replicas, the
   Raft groups get the new member from their live majority, the meta group's voters become
   the new members. Afterwards every replica of every key is a live member holding it,
   every key reads back with R=3, the linearizable keys read back through every member.
2. Abort mid-transfer: a plan adding a node is aborted while moves of both modes are pending
   and others already flipped; the cluster goes back to its old members, and every
   acknowledged write — those made during the move and the revert included — is held by
   every replica of the restored placement and reads back with R=3.
3. Kill mid-transfer: while a plan adding a node moves data, the incoming node (it pulls the
   eventual partitions, dynamo_mode/transfer.py) is SIGKILLed and started again; then the
   node it pulls from is SIGKILLed and started again. The plan finishes and no acknowledged
   write is lost.

Writers write through the old members the whole time (eventual: unique values, W=2;
linearizable: a create and a compare-and-set per key); a write through a node that is down
fails and is not counted. "Mid-transfer" is asserted, not hoped for: the plan's status is
`moving` with moves pending when the fault lands (and an abort is accepted only while a plan
is in flight). The nodes copy slowly (`transfer_keys_per_s`, small batches) so that a few
hundred keys take seconds to move, and anti-entropy is off, so only transfers, writes, hints
and read repair can put a copy on a replica: every replica check is a check of the move.

Two cluster set-ups: the replace test has its own; the abort and kill tests share one (the
abort leaves the members it found and drops its keyspaces; the kill test grows them by one).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.cluster.harness import Cluster, sigterm_raises, wait_until
from tests.cluster.test_membership_cluster import call

EVENTUAL = {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 2}
LINEARIZABLE = {"consistency": "linearizable", "replication": 3}
SETTINGS = {
    # only transfers, writes and hints may put a copy on a new owner
    "anti_entropy_interval_s": 3600.0,
    # an incoming owner copies ~30 keys a second, 4 at a time: a plan moving a few hundred
    # keys lasts seconds, so a kill or an abort lands while moves are pending
    "transfer_batch": 4,
    "transfer_keys_per_s": 30.0,
    # ... and linearizable groups move two at a time per node, so that moves of both modes
    # are pending together (with the node's Raft log, 8 at once could all finish before the
    # first eventual move did: an abort test once never saw both modes half moved)
    "raft_moves_at_once": 2,
}
MODES = ("eventual", "linearizable")
PLAN_DEADLINE_S = 90.0
WRITER_PAUSE_S = 0.2  # between two writes of one writer: bounded data, steady load


@contextmanager
def running(settings: dict[str, Any]) -> Iterator[Cluster]:
    """A 3-node loopback cluster; every node it ever started is gone afterwards."""
    c = Cluster(n=3, settings=settings)
    with sigterm_raises():
        try:
            yield c.up()
        finally:
            left = c.down()
            assert not left, f"still running after down(): {left}"


@pytest.fixture
def fresh() -> Iterator[Cluster]:
    with running(SETTINGS) as c:
        yield c


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    with running(SETTINGS) as c:
        yield c


# ---------------------------------------------------------------------- helpers
def url(cluster: Cluster, node: str) -> str:
    return f"http://{cluster.http(node)}"


def membership(cluster: Cluster, node: str) -> dict[str, Any]:
    status, info = call("GET", f"{url(cluster, node)}/v1/membership", timeout=5.0)
    assert status == 200, (node, status, info)
    return dict(info)


def meta_view(cluster: Cluster, node: str) -> dict[str, Any]:
    status, info = call("GET", f"{url(cluster, node)}/v1/cluster", timeout=5.0)
    assert status == 200, (node, status, info)
    return dict(info["meta_group"])


def member_of(cluster: Cluster, node: str) -> dict[str, str]:
    nd = cluster.nodes[node]
    return {"id": node, "http": str(nd["http"]), "raft": str(nd["raft"])}


def commit(cluster: Cluster, via: str, change: dict[str, Any]) -> dict[str, Any]:
    """Plan one change through `via`, commit exactly that plan; the plan."""
    base = url(cluster, via)
    status, plan = call("POST", f"{base}/v1/membership/plan", {"changes": [change]})
    assert status == 200, (status, plan)
    assert plan["summary"]["replicas_moving"] > 0, plan["summary"]
    body = {"plan_id": plan["plan_id"], "changes": [change]}
    status, reply = call("POST", f"{base}/v1/membership/commit?timeout_ms=10000", body, 15.0)
    assert status == 202, (status, reply)
    return dict(plan)


def wait_idle(cluster: Cluster, nodes: list[str], members: list[str]) -> None:
    """Every one of `nodes` says the plan is over and `members` are the members."""

    def idle() -> bool:
        for node in nodes:
            info = membership(cluster, node)
            if info["status"] != "idle" or sorted(info["members"]) != sorted(members):
                return False
        return True

    try:
        wait_until(idle, PLAN_DEADLINE_S, f"the plan to finish with members {members}", 0.2)
    except AssertionError as exc:
        views = {n: call("GET", f"{url(cluster, n)}/v1/cluster")[1] or {} for n in nodes}
        stuck = {n: {k: v.get(k) for k in ("transfers", "raft_moves")} for n, v in views.items()}
        raise AssertionError(
            f"{exc}\n{json.dumps(membership(cluster, nodes[0]))[:2000]}\n"
            f"{json.dumps(stuck)[:6000]}\n{cluster.logs(15)}"
        ) from None


def wait_half_moved(cluster: Cluster, via: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Until the plan is moving with moves of each mode both flipped and still pending, so
    that an abort drops some moves and moves others back (eventual and linearizable)."""
    total = {mode: sum(1 for m in plan["moves"] if m["mode"] == mode and m["to"]) for mode in MODES}

    def half() -> dict[str, Any] | None:
        info = membership(cluster, via)
        if info["status"] != "moving":
            return None
        pending = [m["mode"] for m in info["pending"]]
        ok = all(0 < pending.count(mode) < total[mode] for mode in MODES)
        return info if ok else None

    found: dict[str, Any] = wait_until(half, 30, "moves of each mode flipped and pending", 0.05)
    return found


def pulling(cluster: Cluster, node: str) -> str | None:
    """The node `node` is copying an eventual partition from, once it has copied keys."""
    status, info = call("GET", f"{url(cluster, node)}/v1/cluster", timeout=5.0)
    if status != 200:
        return None
    for t in info["transfers"]:
        if t["state"] == "copying" and t["keys_copied"] > 0:
            return str(t["source"])
    return None


def wait_more_writes(data: Data, when: str) -> None:
    written = data.written()
    wait_until(lambda: data.written() >= written + 10, 30, f"writes acknowledged {when}", 0.05)


def put_retried(address: str, ks: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """A write retried until acknowledged (a fresh keyspace's Raft groups elect first)."""
    path = f"http://{address}/v1/keyspaces/{ks}/keys/{quote(key)}"

    def put() -> dict[str, Any] | None:
        status, reply = call("PUT", path, body)
        return dict(reply) if status == 200 else None

    done: dict[str, Any] = wait_until(put, 30, f"{ks}/{key} written", 0.2)
    return done


def create(cluster: Cluster, via: str, name: str, settings: dict[str, Any]) -> None:
    path = f"{url(cluster, via)}/v1/keyspaces/{name}?timeout_ms=10000"
    status, reply = call("PUT", path, settings, timeout=30)
    assert status in (200, 201), (name, status, reply)


class Data:
    """An eventual and a linearizable keyspace, seeded, plus writers that keep writing fresh
    keys through `addresses` (one thread per mode each address; unique values, W=2) and
    remember every acknowledged write."""

    def __init__(self, cluster: Cluster, via: str, prefix: str, keys: int, lin_keys: int):
        self.ev, self.lin = f"{prefix}_ev", f"{prefix}_lin"
        create(cluster, via, self.ev, EVENTUAL)
        create(cluster, via, self.lin, LINEARIZABLE)
        address = cluster.http(via)
        self.acked: dict[str, Any] = {}  # eventual key -> value
        self.spans: dict[str, tuple[float, float]] = {}  # writer's key -> (sent, acknowledged)
        self.versions: dict[str, int] = {}  # linearizable key -> last acknowledged version
        for i in range(keys):
            put_retried(address, self.ev, f"s{i}", {"value": i})
            self.acked[f"s{i}"] = i
        for i in range(lin_keys):  # every linearizable value is [key, its version - 1]
            key = f"l{i}"
            self.versions[key] = put_retried(address, self.lin, key, {"value": [key, 0]})["version"]
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    @contextmanager
    def writing(self, addresses: list[str]) -> Iterator[Data]:
        self.stop.clear()
        self.threads = [
            *(threading.Thread(target=self._write, args=(a, i)) for i, a in enumerate(addresses)),
            *(threading.Thread(target=self._cas, args=(a, i)) for i, a in enumerate(addresses)),
        ]
        for t in self.threads:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in self.threads:
                t.join(timeout=60)

    def written(self) -> int:
        return len(self.acked) + len(self.versions)

    def _write(self, address: str, i: int) -> None:
        n = 0
        while not self.stop.wait(WRITER_PAUSE_S):
            key, value = f"w{i}-{time.monotonic_ns()}-{n}", {"writer": i, "n": n}
            path = f"http://{address}/v1/keyspaces/{self.ev}/keys/{quote(key)}"
            start = time.monotonic()
            if call("PUT", path, {"value": value})[0] == 200:
                self.acked[key] = value
                self.spans[key] = (start, time.monotonic())
            n += 1

    def _cas(self, address: str, i: int) -> None:
        """Create a key (if_version 0), then bump it once with a compare-and-set."""
        n = 0
        while not self.stop.wait(WRITER_PAUSE_S):
            key = f"c{i}-{time.monotonic_ns()}-{n}"
            path = f"http://{address}/v1/keyspaces/{self.lin}/keys/{quote(key)}"
            for version in (0, 1):
                status, reply = call("PUT", path, {"value": [key, version], "if_version": version})
                if status != 200:
                    break
                self.versions[key] = reply["version"]
            n += 1

    def drop(self, cluster: Cluster, via: str) -> None:
        for name in (self.ev, self.lin):
            path = f"{url(cluster, via)}/v1/keyspaces/{name}?timeout_ms=10000"
            status, reply = call("DELETE", path, timeout=30)
            assert status in (200, 204), (name, status, reply)

    # ------------------------------------------------------------------ checks
    def check(self, cluster: Cluster, members: list[str], outage: Outage | None = None) -> None:
        """Every replica of every acknowledged write is a member and holds it (asked before
        any read could repair it); it reads back with R=3; the linearizable keys read back
        through every member, at their last acknowledged version or later.

        The one exception is an `outage`: a replica that was down when a write was made
        misses it if its partition had no fallback to hold a hint (here, a partition still
        moving has none: its ring walk is the three old members, owners all, and the fourth
        node is incoming) — only anti-entropy, off here, or read repair mends that. Such
        holes must be confined to that node and those writes, and the R=3 reads fill them."""
        assert len(self.acked) > 0 and len(self.versions) > 0
        urls = {n: url(cluster, n) for n in members}
        holes, strangers, excused = [], [], []
        for i, (key, value) in enumerate(self.acked.items()):
            path = f"/v1/admin/replica/{self.ev}/{quote(key)}"
            status, where = call("GET", urls[members[i % len(members)]] + path)
            assert status == 200, (key, status, where)
            if len(where["replicas"]) != 3 or not set(where["replicas"]) <= set(members):
                strangers.append((key, where["replicas"]))
                continue
            for replica in where["replicas"]:
                if holds(urls[replica] + path, value):
                    continue
                if outage is not None and outage.missed(replica, self.spans.get(key)):
                    excused.append((key, replica))
                else:
                    holes.append((key, replica))
        assert not strangers, f"{len(strangers)} keys placed off the members: {strangers[:5]}"
        assert not holes, f"{len(holes)} replicas without their copy: {holes[:5]}"
        lost = []
        for i, (key, value) in enumerate(self.acked.items()):
            path = f"{urls[members[i % len(members)]]}/v1/keyspaces/{self.ev}/keys/{quote(key)}"
            status, got = call("GET", f"{path}?r=3")
            if status != 200 or got.get("value") != value:
                lost.append((key, status, got))
        assert not lost, f"{len(lost)} acknowledged writes not read with R=3: {lost[:5]}"
        for key, replica in excused:  # read repair (it may land just after the reply)
            path = f"{urls[replica]}/v1/admin/replica/{self.ev}/{quote(key)}"
            wait_until(partial(holds, path, self.acked[key]), 30, f"{replica} to hold {key}")
        self.check_linearizable(cluster, members)
        if outage is not None:
            print(f"{len(excused)} copies missed by {outage.node} while down, read-repaired")

    def check_linearizable(self, cluster: Cluster, members: list[str]) -> None:
        unavailable = []  # (node, key): still 503 after read_lin's 30 s
        for name in members:
            behind = []
            for key, version in self.versions.items():
                path = f"{url(cluster, name)}/v1/keyspaces/{self.lin}/keys/{quote(key)}"
                status, got = read_lin(path)
                if status == 503:
                    unavailable.append((name, key))
                elif (
                    status != 200
                    or got["version"] < version
                    or got["value"] != [key, got["version"] - 1]
                ):
                    behind.append((key, version, status, got))
            assert not behind, f"{name}: {len(behind)} linearizable keys behind: {behind[:3]}"
        # a group without a leader 30 s after the plan was a bug (a member restarted from
        # its journal kept its constructor's peers: shim.adopt_logged_configuration)
        assert not unavailable, f"groups without a leader after the plan: {unavailable[:3]}"
        # every member of each key's group holds it (a follower applies a moment later)
        for key, version in self.versions.items():
            path = f"/v1/admin/replica/{self.lin}/{quote(key)}"
            where = call("GET", url(cluster, members[0]) + path)[1]
            assert len(where["replicas"]) == 3 and set(where["replicas"]) <= set(members), where
            for replica in where["replicas"]:
                wait_until(
                    partial(self._holds, url(cluster, replica) + path, version),
                    30,
                    f"{replica} to hold {self.lin}/{key} at version {version}",
                )

    @staticmethod
    def _holds(replica_url: str, version: int) -> bool:
        status, state = call("GET", replica_url)
        return status == 200 and int(state["version"]) >= version


def read_lin(path: str) -> tuple[int, Any]:
    """A linearizable read, retried while the answer is a retryable 503 (a group electing
    a leader just after its last move); the last answer."""
    answer: tuple[int, Any] = (0, None)

    def read() -> bool:
        nonlocal answer
        answer = call("GET", path)
        return answer[0] != 503

    try:
        wait_until(read, 30, f"a leader to answer {path}", 0.2)
    except AssertionError:
        pass  # the caller reports the last answer
    return answer


def holds(replica_url: str, value: Any) -> bool:
    """The replica at `replica_url` (/v1/admin/replica/...) holds `value` among its versions."""
    status, state = call("GET", replica_url)
    return status == 200 and value in [v["value"] for v in state["versions"] if not v["deleted"]]


@dataclass(frozen=True)
class Outage:
    """`node` was down — for the writers' coordinators — from `start` to `end`."""

    node: str
    start: float
    end: float

    def missed(self, replica: str, span: tuple[float, float] | None) -> bool:
        """Whether `replica` may have missed a write made over `span` (sent, acknowledged):
        it is this node and the write overlapped the outage."""
        return (
            replica == self.node
            and span is not None
            and span[0] <= self.end
            and span[1] >= self.start
        )


def seen_alive(cluster: Cluster, observers: list[str], node: str) -> bool:
    """Every observer's failure detector counts `node` alive again (coordinators send it
    copies again)."""
    for observer in observers:
        status, info = call("GET", f"{url(cluster, observer)}/v1/cluster", timeout=5.0)
        if status != 200:
            return False
        if any(m["id"] == node and m["status"] == "down" for m in info["members"]):
            return False
    return True


def hints_drained(cluster: Cluster, nodes: list[str]) -> bool:
    for node in nodes:
        status, info = call("GET", f"{url(cluster, node)}/v1/cluster", timeout=5.0)
        if status != 200 or sum(info["hinted_handoff"]["pending"].values()):
            return False
    return True


# ---------------------------------------------------------------------- tests
def test_replace_a_sigkilled_founder_rebuilds_its_replicas_from_the_survivors(
    fresh: Cluster,
) -> None:
    """The founder killed is the meta group's leader: the survivors elect another, commit
    the plan, and the dead voter's place in the meta group goes to the new node too."""
    cluster = fresh
    dead = wait_until(lambda: meta_view(cluster, "n1")["leader"], 30, "a meta leader")
    survivors = [n for n in ("n1", "n2", "n3") if n != dead]
    data = Data(cluster, survivors[0], "rep", keys=200, lin_keys=30)
    cluster.kill(dead)
    shutil.rmtree(Path(cluster.dir) / dead / "data")
    new = cluster.add(commit=False)
    change = {"kind": "replace", "node": dead, "member": member_of(cluster, new)}
    wait_until(
        lambda: meta_view(cluster, survivors[0])["leader"] in survivors, 30, "a new meta leader"
    )
    plan = commit(cluster, survivors[0], change)
    # the new node takes exactly the dead node's places, nothing else moves
    assert {(m["from"], m["to"]) for m in plan["moves"]} == {(dead, new)}, plan["moves"][:5]
    final = sorted([*survivors, new])
    wait_idle(cluster, final, final)
    data.check(cluster, final)
    wait_until(
        lambda: all(sorted(meta_view(cluster, n)["voters"]) == final for n in final),
        60,
        f"the meta group's voters to be {final}",
        0.5,
    )
    print(f"{plan['summary']} rebuilt from {survivors} onto {new}")


def test_abort_mid_transfer_restores_the_old_members_losing_nothing(shared: Cluster) -> None:
    cluster = shared
    old = sorted(membership(cluster, "n1")["members"])
    data = Data(cluster, old[0], "abort", keys=200, lin_keys=20)
    new = cluster.add(commit=False)
    with data.writing([cluster.http(n) for n in old]):
        plan = commit(
            cluster, old[0], {"kind": "add", "node": new, "member": member_of(cluster, new)}
        )
        seen = wait_half_moved(cluster, old[0], plan)
        status, reply = call(
            "POST", f"{url(cluster, old[0])}/v1/membership/abort?timeout_ms=10000",
            {"plan_id": plan["plan_id"]}, 15.0,
        )  # fmt: skip
        # accepted only while the plan is in flight, i.e. with moves pending; the moves that
        # had flipped move back (both modes), the others are dropped
        assert status == 202, (status, reply, seen)
        assert reply["status"] == "reverting", reply
        assert {m["mode"] for m in reply["pending"]} == set(MODES), reply["pending"]
        wait_idle(cluster, old, old)
        wait_more_writes(data, "after the abort")
    assert new not in membership(cluster, old[1])["members"]
    cluster.kill(new)  # it joins nothing now; the kill test adds another node
    wait_until(lambda: hints_drained(cluster, old), 30, "hints delivered")
    data.check(cluster, old)
    data.drop(cluster, old[0])  # the kill test moves only its own data
    print(
        f"aborted with {seen['moves_pending']}+ moves pending; {reply['moves_pending']} moved "
        f"back; {data.written()} writes acknowledged"
    )


def test_killed_mid_transfer_and_restarted_the_plan_finishes_losing_nothing(
    shared: Cluster,
) -> None:
    """The incoming node is SIGKILLed while it copies a partition, and started again; then,
    while it copies again, the node it pulls from is SIGKILLed and started again."""
    cluster = shared
    old = sorted(membership(cluster, "n1")["members"])
    data = Data(cluster, old[0], "kill", keys=200, lin_keys=20)
    new = cluster.add(commit=False)
    final = [*old, new]
    with data.writing([cluster.http(n) for n in old]):
        commit(cluster, old[0], {"kind": "add", "node": new, "member": member_of(cluster, new)})
        wait_until(lambda: pulling(cluster, new), 30, f"{new} copying a partition", 0.05)
        cluster.kill(new)
        # its eventual moves cannot finish while it is down: the kill landed mid-transfer
        first = membership(cluster, old[0])
        assert first["status"] == "moving" and first["moves_pending"] > 0, first
        wait_more_writes(data, f"while {new} is down")
        cluster.start(new)

        source = wait_until(lambda: pulling(cluster, new), 30, f"{new} copying again", 0.05)
        survivor = next(n for n in old if n != source)
        down = time.monotonic()
        cluster.kill(source)
        second = membership(cluster, survivor)
        assert second["status"] == "moving" and second["moves_pending"] > 0, second
        wait_more_writes(data, f"while {source} is down")
        cluster.start(source)
        others = [n for n in final if n != source]
        wait_until(lambda: seen_alive(cluster, others, source), 30, f"{source} seen alive")
        outage = Outage(source, down, time.monotonic())

        wait_idle(cluster, final, final)
        wait_more_writes(data, "after the plan")
    wait_until(lambda: hints_drained(cluster, final), 30, "hints delivered")
    data.check(cluster, final, outage)
    print(
        f"killed {new} ({first['moves_pending']} moves pending), then its source {source} "
        f"({second['moves_pending']} pending); {data.written()} writes acknowledged"
    )

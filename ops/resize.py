"""Grow a private local cluster one node at a time, then shrink it back (docs/membership.md).

    ops/resize [--start 3] [--peak 8] [--keys 200] [--keep]

A measured run of issue 9's "3 → 8 → 3" acceptance point, too long for the test suite. It
starts `--start` nodes (ops/localcluster.py), creates an eventual keyspace (N=3, R=W=2)
and a linearizable one (N=3) and writes `--keys` keys to each, then:

- grows to `--peak` with `ops/cluster add --wait` (a plan adding one node, committed and
  followed to the end), and shrinks back with `ops/cluster remove ID --wait`, removing the
  founders first (the meta group's first voters) and then the earliest added nodes;
- the whole time, a sampler asks every member for `/v1/cluster` every 0.2 s: a sample
  fails the majority check when fewer than a majority of the meta group's voters (as the
  members with the newest epoch list them) are running processes, and the run reports how
  long no member named a meta leader (an election after the leader hands over takes a
  moment); writers keep writing fresh keys to both keyspaces through every member;
- after each step every member's `/v1/cluster` must agree on the epoch, the members and the
  meta group's voters (polled with a deadline), and the meta group keeps 1, 3 or 5
  voters (kv/voters.py: at most 5, odd).

At the end every key written (seeded and by the writers, acknowledged) reads back with
R=N through each remaining member. It prints one line per step (members, voters, seconds,
replicas moved) and a verdict. Exit status: 0 pass; 1 a check failed; 3 the run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kv import voters as voters_rule
from kv.client import KvClient
from kv.errors import KvError
from ops.localcluster import ClusterError, LocalCluster, alive

EVENTUAL = {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 2}
LINEARIZABLE = {"consistency": "linearizable", "replication": 3}
AGREE_DEADLINE_S = 60.0


class Failed(Exception):
    """A check of the run failed (exit 1)."""


@dataclass
class Gaps:
    """Samples where a condition failed, and the longest run of them (seconds)."""

    samples: int = 0
    failed: int = 0
    longest_s: float = 0.0
    first: str = ""
    _since: float | None = None

    def record(self, now: float, ok: bool, why: str) -> None:
        self.samples += 1
        if ok:
            self._since = None
            return
        self.failed += 1
        self.first = self.first or why
        if self._since is None:
            self._since = now
        self.longest_s = max(self.longest_s, now - self._since)


def majority(views: dict[str, dict[str, Any]], running: set[str]) -> tuple[bool, str]:
    """Whether a majority of the meta group's voters — as the members with the newest epoch
    list them — are running processes. Pure: `views` is node -> its /v1/cluster."""
    if not views:
        return False, "no member answered"
    newest = max(info["epoch"] for info in views.values())
    for info in views.values():
        voters = set(info["meta_group"]["voters"])
        if info["epoch"] == newest and 2 * len(voters & running) <= len(voters):
            return False, f"voters {sorted(voters)}, running {sorted(running)}"
    return True, ""


def leader_known(views: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """Whether some member names a meta leader among the voters it lists. Pure."""
    for info in views.values():
        meta = info["meta_group"]
        if meta.get("leader") in meta["voters"]:
            return True, ""
    return False, f"no member names a meta leader: {summary(views)}"


def disagreement(views: dict[str, dict[str, Any]], members: set[str]) -> str | None:
    """Why the members' views differ from each other or from `members`, or None. Pure."""
    if set(views) != members:
        return f"answers from {sorted(views)}, members {sorted(members)}"
    seen = {
        (
            info["epoch"],
            tuple(sorted(m["id"] for m in info["members"])),
            tuple(sorted(info["meta_group"]["voters"])),
        )
        for info in views.values()
    }
    if len(seen) != 1:
        return f"views differ: {summary(views)}"
    ((_, ids, voters),) = seen
    if set(ids) != members:
        return f"metadata members {ids}, expected {sorted(members)}"
    if len(voters) != voters_rule.target_size(len(members)) or not set(voters) <= members:
        return f"voters {voters} for members {sorted(members)}"
    return None


def summary(views: dict[str, dict[str, Any]]) -> str:
    return json.dumps(
        {
            n: {
                "epoch": v["epoch"],
                "leader": v["meta_group"].get("leader"),
                "voters": v["meta_group"]["voters"],
            }
            for n, v in views.items()
        }
    )


class Run:
    def __init__(self, cluster: LocalCluster, keys: int) -> None:
        self.cluster = cluster
        self.keys = keys
        self.members: set[str] = set()
        self.majority = Gaps()  # a majority of voters running (must never fail)
        self.leader = Gaps()  # a meta leader known (reported: elections take a moment)
        self.acked: dict[tuple[str, str], Any] = {}
        self.write_failures = 0
        self.stop = asyncio.Event()
        self.client = KvClient(cluster.addresses(), timeout=5.0, retries=8)
        self.probe = KvClient(cluster.addresses(), timeout=2.0, retries=0)  # one try per sample

    def address(self, node: str) -> str:
        return self.cluster.http(node)

    async def views(self, nodes: Sequence[str]) -> dict[str, dict[str, Any]]:
        async def one(node: str) -> tuple[str, dict[str, Any] | None]:
            try:
                return node, await self.probe.cluster(node=self.address(node))
            except KvError:
                return node, None

        answers = await asyncio.gather(*(one(n) for n in nodes))
        return {n: v for n, v in answers if v is not None}

    async def sample(self) -> None:
        while not self.stop.is_set():
            views, now = await self.views(sorted(self.members)), time.monotonic()
            self.majority.record(now, *majority(views, self.running()))
            self.leader.record(now, *leader_known(views))
            await asyncio.sleep(0.2)

    def running(self) -> set[str]:
        return {n for n, nd in dict(self.cluster.nodes).items() if nd["pid"] and alive(nd["pid"])}

    async def write(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            members = sorted(self.members & self.running())
            node = members[(i + n) % len(members)]
            ks = ("ev", "lin")[n % 2]
            key, value = f"w{i}-{n}", {"writer": i, "n": n}
            try:
                await self.client.put(ks, key, value, node=self.address(node))
                self.acked[(ks, key)] = value
            except KvError:
                self.write_failures += 1  # not acknowledged: not counted
            n += 1
            await asyncio.sleep(0.05)

    async def agree(self) -> None:
        deadline = time.monotonic() + AGREE_DEADLINE_S
        why: str | None = "not asked yet"
        while time.monotonic() < deadline:
            why = disagreement(await self.views(sorted(self.members)), self.members)
            if why is None:
                return
            await asyncio.sleep(0.2)
        raise Failed(f"/v1/cluster did not agree within {AGREE_DEADLINE_S:.0f}s: {why}")

    async def step(self, label: str, action: Any) -> None:
        start = time.monotonic()
        output = await asyncio.to_thread(action)
        await self.agree()
        views = await self.views(sorted(self.members))
        info = next(iter(views.values()))
        voters = info["meta_group"]["voters"]
        print(
            f"{label:<12} members={len(self.members)} voters={len(voters)} "
            f"epoch={info['epoch']} {time.monotonic() - start:6.1f}s {output}",
            flush=True,
        )

    async def main(self, start: int, peak: int) -> None:
        self.members = set(self.cluster.nodes)
        try:
            await self.client.create_keyspace("ev", **EVENTUAL)
            await self.client.create_keyspace("lin", **LINEARIZABLE)
            for i in range(self.keys):
                for ks in ("ev", "lin"):
                    await self.client.put(ks, f"s{i}", i)
                    self.acked[(ks, f"s{i}")] = i
            await self._run(start, peak)
        finally:
            await self.client.close()
            await self.probe.close()

    async def _run(self, start: int, peak: int) -> None:
        tasks = [asyncio.create_task(self.sample())]
        tasks += [asyncio.create_task(self.write(i)) for i in range(2)]
        try:
            await self.agree()
            founders = sorted(self.members)
            for _ in range(peak - start):
                await self.step("add", self.add)
            order = founders + sorted(set(self.cluster.nodes) - set(founders), key=_rank)
            for node in order[: peak - start]:
                await self.step(f"remove {node}", lambda node=node: self.remove(node))
        finally:
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.read_back()

    def add(self) -> str:
        node = self.cluster.add(commit=True, wait=True)
        self.members.add(node)
        return f"+{node}"

    def remove(self, node: str) -> str:
        self.members.discard(node)  # the sampler and writers stop asking it
        self.cluster.remove(node, wait=True)
        return f"-{node}"

    async def read_back(self) -> None:
        lost = []
        for node in sorted(self.members):
            for (ks, key), value in self.acked.items():
                query = {"r": 3} if ks == "ev" else {}
                try:
                    got = await self.client.get(ks, key, node=self.address(node), **query)
                except KvError as exc:
                    lost.append((node, ks, key, str(exc)))
                    continue
                if got.get("value") != value:
                    lost.append((node, ks, key, repr(got.get("value"))))
        print(
            f"read back {len(self.acked)} acknowledged keys through {len(self.members)} members "
            f"(R=3 eventual): {len(lost)} missing; {self.write_failures} writes refused"
        )
        if lost:
            raise Failed(f"acknowledged writes not read back: {lost[:5]}")


def _rank(node: str) -> tuple[int, str]:
    digits = "".join(c for c in node if c.isdigit())
    return (int(digits) if digits else 0, node)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ops/resize", description=__doc__.split("\n\n")[0])
    p.add_argument("--start", type=int, default=3, help="founding nodes")
    p.add_argument("--peak", type=int, default=8, help="nodes at the largest")
    p.add_argument("--keys", type=int, default=200, help="keys seeded per keyspace")
    p.add_argument("--keep", action="store_true", help="keep the cluster's directory")
    args = p.parse_args(argv)
    if not 3 <= args.start <= args.peak:
        p.error("need 3 <= --start <= --peak")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cluster = LocalCluster(n=args.start)
    began = time.monotonic()
    try:
        cluster.up()
        run = Run(cluster, args.keys)
        asyncio.run(run.main(args.start, args.peak))
    except Failed as exc:
        print(f"FAIL: {exc}")
        return 1
    except (ClusterError, KvError) as exc:
        print(f"run failed: {exc}")
        return 3
    finally:
        cluster.down(keep=args.keep)
    for what, g in (
        ("a majority of meta voters running", run.majority),
        ("a meta leader known", run.leader),
    ):
        print(
            f"{what}: failed in {g.failed} of {g.samples} samples (longest {g.longest_s:.1f}s)"
            f"{': ' + g.first if g.first else ''}"
        )
    print(f"total {time.monotonic() - began:.0f}s")
    if run.majority.failed:
        print("FAIL: the meta group lost its majority")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Raft snapshots with a real 3-member pysyncobj group on loopback, in one process
(DESIGN.md §3 "Snapshots": streamed from a background thread, never backwards).

Each member has its own RaftMux (port from the OS), RaftDriver thread and LevelDB.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kv.leveldb import LevelDBEngine
from kv.storage import WriteBatch
from raft_groups import commands, state_machine
from raft_groups.manager import LinearizableMachine
from raft_groups.placement import GroupSpec
from raft_groups.syncobj_adapter import (
    GroupSettings,
    NodeLog,
    RaftDriver,
    RaftGroup,
    RaftMux,
    RaftNodeSettings,
)
from tests.ports import free_port

SECRET = "s" * 32
SPEC = GroupSpec(partition=0, replication=3, members=("a", "b", "c"))
GROUP = SPEC.number


@dataclass
class Member:
    name: str
    address: str
    peers: tuple[str, ...]
    data: Path
    compaction: int
    max_bytes: int = 1 << 30
    engine: LevelDBEngine | None = None
    driver: RaftDriver | None = None
    group: RaftGroup | None = None

    def start(self) -> None:
        if self.engine is None:
            self.engine = LevelDBEngine(self.data / "db")
        mux = RaftMux(RaftNodeSettings(self.address, self.address, SECRET, self.peers))
        self.driver = RaftDriver(mux, NodeLog(str(self.data / "raft_log")))
        settings = GroupSettings(
            gid=SPEC.gid,
            self_address=self.address,
            peers=self.peers,
            data_dir=str(self.data / "raft"),
            log_compaction_min_entries=self.compaction,
            log_compaction_max_bytes=self.max_bytes,
        )
        self.group = RaftGroup(self.driver, settings, LinearizableMachine(self.engine, GROUP))
        self.driver.start()

    def stop(self, close_engine: bool = False) -> None:
        if self.driver is not None:
            self.driver.stop()
            self.driver = self.group = None
        if close_engine and self.engine is not None:
            self.engine.close()
            self.engine = None

    def read(self, key: str) -> tuple[Any, int] | None:
        assert self.engine is not None
        return state_machine.read(self.engine, GROUP, 1, key)


@pytest.fixture
def members(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[Member]]:
    """Three members; an indirect parameter (entries, max_bytes) sets their compaction."""
    entries, max_bytes = getattr(request, "param", (50, 1 << 30))
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    out = []
    for name, address in zip("abc", addresses, strict=True):
        peers = tuple(a for a in addresses if a != address)
        os.makedirs(tmp_path / name, exist_ok=True)
        out.append(Member(name, address, peers, tmp_path / name, entries, max_bytes))
    try:
        for m in out:
            m.start()
        yield out
    finally:
        for m in out:
            m.stop(close_engine=True)


def _wait(pred: Any, deadline_s: float, what: str) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _leader(members: list[Member]) -> Member:
    def find() -> Member | None:
        for m in members:
            if m.group is not None and m.group.status().is_leader:
                return m
        return None

    leader: Member = _wait(find, 20, "a leader")
    return leader


def _write(leader: Member, keys: list[str], value: Any) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        assert leader.group is not None
        for key in keys:
            cmd = commands.Command(
                op="put", uid=1, key=key, value=value, request_id=f"{key}/{str(value)[:32]}"
            )
            result = await asyncio.wait_for(leader.group.propose(commands.encode(cmd), loop), 10)
            assert result["ok"], result

    asyncio.run(run())


def test_follower_down_during_compaction_catches_up_through_a_snapshot(
    members: list[Member],
) -> None:
    leader = _leader(members)
    lagging = next(m for m in members if m is not leader)
    lagging.stop()
    keys = [f"k{i}" for i in range(300)]
    _write(leader, keys, "v1")
    assert leader.group is not None
    _wait(lambda: leader.group.log_size() < 100, 20, "log compaction on the leader")
    assert os.path.exists(leader.data / "raft" / "raft.snapshot")
    lagging.start()  # its log ends before the leader's first entry: only a snapshot helps
    _write(leader, keys[:10], "v2")  # entries after the snapshot: restore, then log replay
    _wait(lambda: lagging.read(keys[0]) == ("v2", 2), 30, "the lagging follower to catch up")
    for key in keys[10:]:
        assert lagging.read(key) == ("v1", 1)
    assert (lagging.data / "raft" / "raft.snapshot").exists(), "caught up without a snapshot?"


def test_restart_replays_journal_over_own_snapshot_without_going_backwards(
    members: list[Member],
) -> None:
    leader = _leader(members)
    keys = [f"r{i}" for i in range(120)]
    _write(leader, keys, "v1")
    _wait(lambda: leader.group is not None and leader.group.log_size() < 100, 20, "compaction")
    _write(leader, keys[:5], "v2")
    leader.stop()
    leader.start()  # loads its snapshot (not newer than LevelDB: skipped), replays the rest
    new_leader = _leader(members)
    _write(new_leader, ["after-restart"], "x")
    _wait(lambda: leader.read("after-restart") == ("x", 1), 20, "restarted member to apply")
    assert leader.read(keys[0]) == ("v2", 2)
    assert leader.read(keys[-1]) == ("v1", 1)


def test_snapshot_of_a_million_keys_causes_no_election(members: list[Member]) -> None:
    leader = _leader(members)
    assert leader.engine is not None and leader.group is not None
    start, _ = state_machine.group_range(GROUP)
    for base in range(0, 1_000_000, 100_000):  # bulk state, as if applied long ago
        batch = WriteBatch()
        for i in range(base, base + 100_000):
            batch.put(start + (1).to_bytes(4, "big") + b"m%07d" % i, b'{"value":1,"version":1}')
        leader.engine.write(batch)
    terms = {m.name: m.group.status().term for m in members if m.group is not None}
    leader.group.force_compaction()
    snapshot = leader.data / "raft" / "raft.snapshot"
    _wait(lambda: snapshot.exists() and snapshot.stat().st_size > 20_000_000, 60, "the snapshot")
    _write(leader, ["during"], 1)  # the driver kept serving while the snapshot streamed
    after = {m.name: m.group.status().term for m in members if m.group is not None}
    assert after == terms, f"an election happened: {terms} -> {after}"
    assert leader.group.status().is_leader


@pytest.mark.parametrize("members", [(200_000, 1 << 16)], indirect=True)
def test_a_journal_past_its_byte_limit_is_compacted_whatever_its_entry_count(
    members: list[Member],
) -> None:
    """Issue 11 item 4: pysyncobj's journal offsets are 32-bit, so compaction must also
    follow bytes: 120 writes of 2 KiB (far below 200,000 entries) pass the 64 KiB limit."""
    leader = _leader(members)
    _write(leader, [f"k{i}" for i in range(120)], ["x" * 2048])
    for m in members:
        group = m.group
        assert group is not None
        _wait(lambda g=group: g.journal.size < 1 << 16, 30, f"{m.name} compacted")
        assert os.path.exists(m.data / "raft" / "raft.snapshot")
    assert members[0].read("k119") is not None

"""Group commit with a real 3-member group on loopback, in one process (docs/raft.md
"Durability"): no message leaves a member before what it vouches for is durable.

Each member has its own RaftMux, RaftDriver thread and node log (node_log.py). Recording
wrappers (installed before the groups start) number every `os.write` and `os.pwrite`,
every `os.fdatasync` / `os.fsync` (by the path of the descriptor; a member's log counts
as one file) and every entry appended to a journal in one sequence; a wrapper around each
member's link checks, as each frame is handed to the socket:

- except for a leader's `append_entries`, which vouches for nothing on the sender's disk
  (Raft thesis §10.2.1: a leader sends its entries while writing them), the member's log
  was not written after its last fdatasync — so an append ack is on disk — and the
  group's directory was fsynced;
- a vote request or a vote carries a term no newer than the term in the member's log as
  read from its files, which were not written since their last fdatasync; the log names
  the candidate the vote went to (or the member itself, for its own vote request).

and, as a leader applies an entry (it was committed, the leader counting itself toward
the majority), that the leader's log was synced after the entry was appended to it.

Elections happen at the start and again after the first leader is stopped.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kv.memory import MemoryEngine
from raft_groups import commands
from raft_groups.manager import LinearizableMachine
from raft_groups.syncobj_adapter import (
    GroupSettings,
    NodeLog,
    RaftDriver,
    RaftGroup,
    RaftMux,
    RaftNodeSettings,
    link_codec,
)
from raft_groups.syncobj_adapter import log_records as rec
from raft_groups.syncobj_adapter.log_records import LogState
from raft_groups.syncobj_adapter.node_log import GroupJournal
from tests.ports import free_port

SECRET = "d" * 32


@dataclass
class Ledger:
    """Log writes and syncs by path (a member's log by its directory), numbered in one
    sequence."""

    order: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)
    written: dict[str, int] = field(default_factory=dict)
    synced: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    appended: dict[str, int] = field(default_factory=dict)  # "journal#index" → when
    leader_applies: int = 0

    def check_apply(self, member: Member, index: int) -> None:
        """`member` applies entry `index`: if it leads, the entry is on its disk."""
        if member.group is None or not member.group.status().is_leader:
            return
        journal = member.log_path
        with self.lock:
            self.leader_applies += 1
            appended = self.appended.get(f"{journal}#{index}", 0)
            if self.synced.get(journal, 0) < appended:
                self.violations.append(f"{member.name} applied {index} before its sync")

    def note(self, table: dict[str, int], path: str) -> None:
        path = os.path.realpath(path)
        if path.endswith(".log"):  # a segment of a node log: the log is one file
            path = os.path.dirname(path)
        with self.lock:
            table[path] = next(self.order)

    def check_frame(self, member: Member, to: str, frame: Any) -> None:
        for _gid, message in frame if isinstance(frame, list) else ():
            kind = message.get("type") if isinstance(message, dict) else None
            self.sent[str(kind)] += 1
            journal = member.log_path
            if kind == "append_entries":
                self.sent["append_entries ahead of the sync"] += self.written.get(
                    journal, 0
                ) > self.synced.get(journal, 0)
                continue
            if self.written.get(journal, 0) > self.synced.get(journal, 0):
                self.violations.append(f"{member.name} sent {kind} before its journal sync")
            if not self.synced.get(os.path.realpath(member.raft)):
                self.violations.append(f"{member.name} sent {kind} before its directory sync")
            if kind in ("request_vote", "response_vote"):
                self._check_vote(member, to, message)

    def _check_vote(self, member: Member, to: str, message: dict[str, Any]) -> None:
        vote = logged_state(member)
        if vote.term < message["term"]:
            self.violations.append(f"{member.name}: {message} before its term is durable")
        voted = to if message["type"] == "response_vote" else member.address
        if not message.get("notice") and vote.voted_for != voted:
            self.violations.append(f"{member.name}: {message} but its log says {vote}")


def logged_state(member: Member) -> LogState:
    """Group "g"'s state as the member's log files hold it (read-only)."""
    states: dict[str, LogState] = {}
    for name in sorted(os.listdir(member.log_path)):
        records, _end = rec.decode((Path(member.log_path) / name).read_bytes())
        for record, _size in records:
            rec.replay(states, record)
    return states.get("g", LogState())


@dataclass
class Member:
    name: str
    address: str
    peers: tuple[str, ...]
    raft: Path
    driver: RaftDriver | None = None

    @property
    def log_path(self) -> str:
        return os.path.realpath(self.raft.parent / "log")

    group: RaftGroup | None = None

    def start(self, ledger: Ledger) -> None:
        mux = RaftMux(RaftNodeSettings(self.address, self.address, SECRET, self.peers))
        send = mux.link.send

        def checked_send(batches: dict[str, list[bytes]]) -> None:
            for to, frames in batches.items():
                for data in frames:
                    ledger.check_frame(self, to, link_codec.loads(data))
            send(batches)

        mux.link.send = checked_send  # type: ignore[method-assign]
        self.driver = RaftDriver(mux, NodeLog(self.log_path))
        settings = GroupSettings(
            gid="g", self_address=self.address, peers=self.peers, data_dir=str(self.raft)
        )
        machine = LinearizableMachine(MemoryEngine(), 1)
        apply = machine.apply

        def checked_apply(index: int, command: bytes) -> Any:
            ledger.check_apply(self, index)
            return apply(index, command)

        machine.apply = checked_apply  # type: ignore[method-assign]
        self.group = RaftGroup(self.driver, settings, machine)
        self.driver.start()

    def stop(self) -> None:
        if self.driver is not None:
            self.driver.stop()
            self.driver = self.group = None


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> Ledger:
    ledger = Ledger()
    write, pwrite, fdatasync, fsync = os.write, os.pwrite, os.fdatasync, os.fsync
    add, append = GroupJournal.add, NodeLog.append

    def on_append(self: NodeLog, record: bytes) -> None:
        """A record in the log's buffer: the log holds something unsynced (a commit index
        alone vouches for nothing and is not counted)."""
        append(self, record)
        if record[rec.HEADER.size] != rec.COMMIT:
            ledger.note(ledger.written, self.directory)

    def on_add(self: GroupJournal, command: bytes, idx: int, term: int) -> None:
        add(self, command, idx, term)
        ledger.note(ledger.appended, f"{os.path.realpath(self._log.directory)}#{idx}")

    def on_write(fd: int, data: bytes) -> int:
        written = write(fd, data)
        ledger.note(ledger.written, os.readlink(f"/proc/self/fd/{fd}"))
        return written

    def on_sync(sync: Any) -> Any:
        def synced(fd: int) -> None:
            sync(fd)
            ledger.note(ledger.synced, os.readlink(f"/proc/self/fd/{fd}"))

        return synced

    def on_pwrite(fd: int, data: bytes, offset: int) -> int:
        written = pwrite(fd, data, offset)
        ledger.note(ledger.written, os.readlink(f"/proc/self/fd/{fd}"))
        return written

    monkeypatch.setattr(GroupJournal, "add", on_add)
    monkeypatch.setattr(NodeLog, "append", on_append)
    monkeypatch.setattr(os, "write", on_write)
    monkeypatch.setattr(os, "pwrite", on_pwrite)
    monkeypatch.setattr(os, "fdatasync", on_sync(fdatasync))
    monkeypatch.setattr(os, "fsync", on_sync(fsync))
    return ledger


@pytest.fixture
def members(tmp_path: Path, ledger: Ledger) -> Iterator[list[Member]]:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    out = [
        Member(name, a, tuple(p for p in addresses if p != a), tmp_path / name / "raft")
        for name, a in zip("abc", addresses, strict=True)
    ]
    try:
        for m in out:
            m.start(ledger)
        yield out
    finally:
        for m in out:
            m.stop()


def _leader(members: list[Member], deadline_s: float = 20) -> Member:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for m in members:
            if m.group is not None and m.group.status().is_leader:
                return m
        time.sleep(0.05)
    raise AssertionError("no leader")


def _write(member: Member, keys: range) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        assert member.group is not None
        for k in keys:
            cmd = commands.Command(op="put", uid=1, key=f"k{k}", value=k)
            await asyncio.wait_for(member.group.propose(commands.encode(cmd), loop), 10)

    asyncio.run(run())


def test_nothing_leaves_a_member_before_what_it_vouches_for_is_durable(
    members: list[Member], ledger: Ledger
) -> None:
    leader = _leader(members)
    follower = next(m for m in members if m is not leader)
    _write(leader, range(0, 20))
    _write(follower, range(20, 40))  # forwarded to the leader by pysyncobj
    leader.stop()  # the others elect a leader in a higher term
    rest = [m for m in members if m is not leader]
    _write(_leader(rest), range(40, 60))
    assert ledger.sent["request_vote"] and ledger.sent["response_vote"], ledger.sent
    assert ledger.sent["next_node_idx"] >= 40, ledger.sent
    assert ledger.sent["append_entries ahead of the sync"] >= 40, ledger.sent
    assert ledger.leader_applies >= 60, ledger.leader_applies
    assert not ledger.violations, "\n".join(ledger.violations[:20])
    for m in rest:
        assert m.group is not None
        assert logged_state(m).term == m.group.status().term

"""The only importer of pysyncobj (DESIGN.md §3, STYLE.md rule 12).

pysyncobj's camelCase API, its FAIL_REASON codes and its threads stop here. What crosses
out of this module:

- `RaftSettings`: our own frozen, validated config, turned into a `SyncObjConf` here
  (pysyncobj silently ignores misspelled keys and validates with bare asserts);
- `RaftGroup.propose(command: bytes) -> Awaitable`: one replicated method taking bytes;
  results and typed errors are handed to asyncio with `call_soon_threadsafe`;
- `RaftDriver`: one thread ticking every group of the node (`autoTick=False` + `doTick`).

Safety settings that are not optional here: a cluster secret (`password`) and an explicit
bind address. Without `password` pysyncobj unpickles whatever reaches its port and obeys
its admin commands; without `bindAddress` it listens on 0.0.0.0.

State machines plug in through `StateMachine`: `apply(index, command)` runs on the driver
thread in log order, with `index` = the entry's Raft log index (`raftLastApplied + 1`
during apply; pysyncobj does not pass it). Snapshots go through `dump()/load()`, written by
our serializer hooks as JSON framing + the state's own bytes, never a pickle of our objects.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated  # type: ignore[import-untyped]

from kv.errors import KvError, NoLeader, Retryable, UnknownOutcome

log = logging.getLogger(__name__)


class StateMachine(Protocol):
    def apply(self, index: int, command: bytes) -> Any: ...

    def dump(self) -> bytes: ...

    def load(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class RaftSettings:
    self_address: str  # advertised "host:port"; it IS the Raft node id — must match peers' lists
    peers: tuple[str, ...]  # the other voters' advertised addresses
    bind_address: str  # "host:port" to listen on
    secret: str
    data_dir: str  # journal and snapshot files live here
    # Batch mode sends only every appendEntriesPeriod (DESIGN.md §3: ~12 ms per request at
    # 10 ms); immediate mode costs ~4x CPU and regresses nextIndex under pipelining.
    append_entries_period: float = 0.01
    election_timeout_min: float = 0.4
    election_timeout_max: float = 1.4
    # Default 5000 dumps the whole state every 5000 writes (DESIGN.md §3).
    log_compaction_min_entries: int = 100_000
    log_compaction_min_time: float = 600.0

    def __post_init__(self) -> None:
        _require(bool(self.secret), "secret", "must be set: without it the Raft port runs pickles")
        addresses = [("self_address", self.self_address), ("bind_address", self.bind_address)]
        addresses += [(f"peers[{i}]", peer) for i, peer in enumerate(self.peers)]
        for name, value in addresses:
            host, _, port = value.rpartition(":")
            _require(bool(host) and port.isdigit(), name, f"must be host:port, got {value!r}")
        _require(self.self_address not in self.peers, "peers", "must not contain self_address")
        _require(self.append_entries_period > 0, "append_entries_period", "must be > 0")
        _require(
            self.election_timeout_min > 3 * self.append_entries_period,
            "election_timeout_min",
            "must exceed 3 × append_entries_period",
        )
        _require(
            self.election_timeout_max > self.election_timeout_min,
            "election_timeout_max",
            "must exceed election_timeout_min",
        )
        _require(self.log_compaction_min_entries >= 2, "log_compaction_min_entries", "must be ≥ 2")


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"raft.{field}: {message}")


def _conf(settings: RaftSettings, machine: StateMachine) -> Any:
    dump_file = os.path.join(settings.data_dir, "raft.snapshot")
    return SyncObjConf(
        password=settings.secret,
        bindAddress=settings.bind_address,
        autoTick=False,
        appendEntriesUseBatch=True,
        appendEntriesPeriod=settings.append_entries_period,
        raftMinTimeout=settings.election_timeout_min,
        raftMaxTimeout=settings.election_timeout_max,
        connectionTimeout=max(3.5, settings.election_timeout_max),
        connectionRetryTime=1.0,
        # Fail fast with MISSING_LEADER instead of queueing silently while there is none:
        # the client gets a retryable 503 rather than a request of unknown fate.
        commandsWaitLeader=False,
        journalFile=os.path.join(settings.data_dir, "raft.journal"),
        fullDumpFile=dump_file,
        serializer=lambda path, data: _write_snapshot(path, data, machine),
        deserializer=lambda path: _read_snapshot(path, machine),
        logCompactionMinEntries=settings.log_compaction_min_entries,
        logCompactionMinTime=settings.log_compaction_min_time,
        dynamicMembershipChange=False,
    )


def _entry_to_json(entry: Any) -> list[Any]:
    command, index, term = entry
    return [base64.b64encode(command).decode(), index, term]


def _entry_from_json(raw: list[Any]) -> tuple[bytes, int, int]:
    return base64.b64decode(raw[0]), int(raw[1]), int(raw[2])


def _write_snapshot(path: str, data: Any, machine: StateMachine) -> None:
    last, prev, cluster = data
    header = {
        "last": _entry_to_json(last),
        "prev": _entry_to_json(prev),
        "cluster": sorted(node.id for node in cluster),
    }
    with open(path, "wb") as f:
        f.write(json.dumps(header).encode() + b"\n")
        f.write(machine.dump())
        f.flush()
        os.fsync(f.fileno())


def _read_snapshot(path: str, machine: StateMachine) -> tuple[Any, ...]:
    with open(path, "rb") as f:
        header = json.loads(f.readline())
        machine.load(f.read())
    return _entry_from_json(header["last"]), _entry_from_json(header["prev"]), header["cluster"]


class _SyncObj(SyncObj):  # type: ignore[misc]
    def __init__(self, settings: RaftSettings, machine: StateMachine) -> None:
        self._machine = machine
        super().__init__(settings.self_address, list(settings.peers), _conf(settings, machine))

    @replicated  # type: ignore[misc]
    def _apply_command(self, command: bytes) -> Any:
        return self._machine.apply(self.raftLastApplied + 1, command)


def _error_for(reason: int) -> KvError:
    """FAIL_REASON → typed error, by whether the command can have been applied."""
    if reason in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME):
        # measured: 59 of 178 LEADER_CHANGED commands were applied (DESIGN.md §3)
        return UnknownOutcome(
            "the leader changed before the command committed; it may have been applied"
        )
    if reason in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER):
        return NoLeader(
            "no Raft leader is available; the command was not proposed", retry_after=0.5
        )
    if reason == FAIL_REASON.DISCARDED:
        return NoLeader("a new leader discarded the command; it was not applied", retry_after=0.2)
    return Retryable(
        f"Raft refused the command (reason {reason}); it was not applied", retry_after=0.5
    )


@dataclass(frozen=True)
class RaftStatus:
    leader: str | None
    is_leader: bool
    term: int
    commit_index: int
    last_applied: int
    ready: bool


class RaftGroup:
    def __init__(self, settings: RaftSettings, machine: StateMachine) -> None:
        os.makedirs(settings.data_dir, exist_ok=True)
        self.settings = settings
        self._obj = _SyncObj(settings, machine)

    def propose(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """Replicate `command`; the future resolves after it is applied on this node."""
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: Any, reason: int) -> None:  # runs on the driver thread
            loop.call_soon_threadsafe(_settle, fut, result, reason)

        self._obj._apply_command(command, callback=done)
        return fut

    def status(self) -> RaftStatus:
        leader = self._obj._getLeader()
        return RaftStatus(
            leader=leader.id if leader is not None else None,
            is_leader=bool(self._obj._isLeader()),
            term=int(self._obj.raftCurrentTerm),
            commit_index=int(self._obj.raftCommitIndex),
            last_applied=int(self._obj.raftLastApplied),
            ready=bool(self._obj.isReady()),
        )

    def tick(self, wait: float) -> None:
        self._obj.doTick(wait)

    def close(self) -> None:
        self._obj.destroy()
        # with autoTick=False, destroy() only marks; one more tick performs it
        try:
            self._obj._doDestroy()
        except Exception:  # noqa: BLE001 - best effort on shutdown
            log.debug("raft group destroy", exc_info=True)


def _settle(fut: asyncio.Future[Any], result: Any, reason: int) -> None:
    if fut.done():
        return
    if reason == FAIL_REASON.SUCCESS:
        fut.set_result(result)
    else:
        fut.set_exception(_error_for(reason))


class RaftDriver:
    """One thread ticking every Raft group of this node (DESIGN.md §2: not a thread each)."""

    def __init__(self, period: float = 0.005) -> None:
        self._groups: list[RaftGroup] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._period = period
        self._thread = threading.Thread(target=self._run, name="raft-driver", daemon=True)

    def add(self, group: RaftGroup) -> None:
        with self._lock:
            self._groups.append(group)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                groups = list(self._groups)
            if not groups:
                time.sleep(self._period)
                continue
            wait = self._period / len(groups)
            for group in groups:
                try:
                    group.tick(wait)
                except Exception:  # pysyncobj's own loop logs and carries on the same way
                    log.exception("raft tick failed")
                    time.sleep(self._period)

    def stop(self, on_stopped: Callable[[], None] | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            for group in self._groups:
                group.close()
            self._groups.clear()
        if on_stopped is not None:
            on_stopped()

"""One Raft replica group: a pysyncobj `SyncObj` behind a bytes-in, typed-errors-out API.

- `RaftGroup.propose(command: bytes)` is the one replicated method; its result or typed
  error (`FAIL_REASON` → `kv.errors`, by whether the command can have been applied) is
  handed to asyncio with `call_soon_threadsafe`.
- `StateMachine.apply(index, command)` runs on the driver thread in log order, with `index`
  = the entry's Raft log index (`raftLastApplied + 1` during apply; pysyncobj does not
  pass it). Snapshots go through `snapshot()` / `restore()` (snapshot.py), never a pickle.
- The SyncObj runs with `autoTick=False` in batch mode: the one `RaftDriver` thread ticks
  it (`tick`) and syncs its journal (`sync_journal`); its transport is a view of the
  node's `RaftMux`.

Threads: the driver thread calls `tick`, `has_queued_commands` and `sync_journal` in its
cycle, under the driver lock; `__init__` and `close` take the lock themselves, and
`destroy` is called with it held (by `close`, `RaftDriver.stop`). `propose` does not take
it: it puts the command on pysyncobj's thread-safe command queue and wakes the driver.
Nor do `status`, `log_size` and `force_compaction`: they read (or set) single attributes,
each access atomic under the GIL, so a status may mix two driver cycles.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from kv.errors import KvError, NoLeader, Retryable, UnknownOutcome
from raft_groups.syncobj_adapter import shim
from raft_groups.syncobj_adapter.driver import Schedule
from raft_groups.syncobj_adapter.mux import GroupTransport
from raft_groups.syncobj_adapter.settings import GroupSettings
from raft_groups.syncobj_adapter.snapshot import BackgroundSnapshot, Snapshots

if TYPE_CHECKING:
    from raft_groups.syncobj_adapter.driver import RaftDriver


class StateMachine(Snapshots, Protocol):
    def apply(self, index: int, command: bytes) -> Any: ...


@dataclass(frozen=True)
class RaftStatus:
    leader: str | None
    is_leader: bool
    term: int
    commit_index: int
    last_applied: int
    ready: bool


class RaftGroup:
    """One Raft replica group on this node (thread use: see the module docstring)."""

    def __init__(self, driver: RaftDriver, settings: GroupSettings, machine: StateMachine) -> None:
        os.makedirs(settings.data_dir, exist_ok=True)
        self.settings = settings
        self.gid = settings.gid
        self._driver = driver
        self.schedule = Schedule()
        self._synced_offset = -1
        self._commit_sent = -1
        with driver.lock:
            self.transport = GroupTransport(driver.mux, settings.gid, settings.peers)
            self._obj = _SyncObj(settings, machine, self.transport)
            self.transport.owner = self._obj
            driver.mux.register(self.transport)
        driver.add(self)

    def propose(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """Replicate `command`; the future resolves after it is applied on this node."""
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: Any, reason: int) -> None:  # runs on the driver thread
            loop.call_soon_threadsafe(_settle, fut, result, reason)

        self._obj._apply_command(command, callback=done)  # thread-safe queue put
        self._driver.wake(self)
        return fut

    def status(self) -> RaftStatus:
        obj = self._obj
        return RaftStatus(
            leader=shim.leader_address(obj),
            is_leader=shim.is_leader(obj),
            term=int(obj.raftCurrentTerm),
            commit_index=int(obj.raftCommitIndex),
            last_applied=int(obj.raftLastApplied),
            ready=bool(obj.isReady()),
        )

    def tick(self) -> None:
        """One pysyncobj tick, then send what it left unsent.

        In batch mode pysyncobj sends append entries only once `append_entries_period` has
        passed, and BEFORE it takes the queued commands (`_onTick`: `__sendAppendEntries`,
        then `_checkCommandsToApply`): a new command waited for a later tick, and a new
        commit index reached the followers (which apply, and answer forwarded commands, on
        it) one more period later. Sending right after the tick replicates per driver
        cycle instead: every command queued before this tick leaves in one message per
        follower, with the latest commit index. (Sending = queueing in the mux; the driver
        flushes after syncing the journal.)"""
        obj = self._obj
        deadline = shim.next_append_entries_time(obj)
        obj.doTick(0.0)
        if not shim.is_leader(obj):
            return
        if shim.next_append_entries_time(obj) != deadline:
            self._commit_sent = obj.raftCommitIndex  # the tick sent, with this commit index
        self._send_unsent()

    def _send_unsent(self) -> None:
        commit = self._obj.raftCommitIndex
        if self._has_unsent_entries() or commit != self._commit_sent:
            shim.send_append_entries(self._obj)
            self._commit_sent = commit

    def _has_unsent_entries(self) -> bool:
        """Whether some connected follower's nextIndex is at or below the last log index."""
        obj = self._obj
        last = shim.last_log_index(obj)
        indexes = (shim.next_index(obj, node) for node in shim.connected_nodes(obj))
        return any(index is not None and index <= last for index in indexes)

    def has_queued_commands(self) -> bool:
        """Commands proposed here (or forwarded to this leader) not yet taken by a tick."""
        return shim.queued_commands(self._obj) > 0

    def force_compaction(self) -> None:
        """Snapshot and truncate the log at the next tick (ops and tests)."""
        self._obj.forceLogCompaction()
        self._driver.wake(self)

    def log_size(self) -> int:
        return shim.log_size(self._obj)

    def sync_journal(self) -> bool:
        """msync the journal if it changed since the last sync; True if it did."""
        if not self.settings.sync_journal:
            return False
        offset = shim.journal_offset(self._obj)
        if offset == self._synced_offset:
            return False
        shim.sync_journal(self._obj)
        self._synced_offset = offset
        return True

    def destroy(self) -> None:
        """Destroy the SyncObj at once (its transport, its journal); caller holds the lock."""
        self._obj.destroy()  # autoTick=False: nothing waits for a tick thread

    def close(self) -> None:
        self._driver.remove(self)
        with self._driver.lock:
            self.destroy()


class _SyncObj(SyncObj):  # type: ignore[misc]
    def __init__(self, settings: GroupSettings, machine: StateMachine, transport: Any) -> None:
        self._machine = machine
        self._snapshots = BackgroundSnapshot(machine)
        conf = _conf(settings, self._snapshots)
        super().__init__(settings.self_address, list(settings.peers), conf, transport=transport)

    @replicated  # type: ignore[untyped-decorator]
    def _apply_command(self, command: bytes) -> Any:
        return self._machine.apply(self.raftLastApplied + 1, command)


def _conf(settings: GroupSettings, snapshots: BackgroundSnapshot) -> Any:
    return SyncObjConf(
        autoTick=False,
        appendEntriesUseBatch=True,
        appendEntriesPeriod=settings.append_entries_period,
        raftMinTimeout=settings.election_timeout_min,
        raftMaxTimeout=settings.election_timeout_max,
        connectionTimeout=max(5.0, settings.election_timeout_max),
        # Fail fast with MISSING_LEADER instead of queueing silently while there is none:
        # the client gets a retryable 503 rather than a request of unknown fate.
        commandsWaitLeader=False,
        journalFile=os.path.join(settings.data_dir, "raft.journal"),
        fullDumpFile=os.path.join(settings.data_dir, "raft.snapshot"),
        serializer=snapshots.write,
        serializeChecker=snapshots.check,
        deserializer=snapshots.read,
        logCompactionMinEntries=settings.log_compaction_min_entries,
        logCompactionMinTime=settings.log_compaction_min_time,
        dynamicMembershipChange=False,
        pollerType="poll",
    )


def _settle(fut: asyncio.Future[Any], result: Any, reason: int) -> None:
    if fut.done():
        return
    if reason == FAIL_REASON.SUCCESS:
        fut.set_result(result)
    else:
        fut.set_exception(_error_for(reason))


def _error_for(reason: int) -> KvError:
    """FAIL_REASON → typed error, by whether the command can have been applied."""
    if reason in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME):
        # measured: 59 of 178 LEADER_CHANGED commands were applied (DESIGN.md §3)
        return UnknownOutcome(
            "the Raft leader changed before the command committed; it may have been applied"
        )
    if reason in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER):
        return NoLeader(
            "no Raft leader is available; the command was not proposed", retry_after=0.5
        )
    if reason == FAIL_REASON.DISCARDED:
        return NoLeader(
            "a new Raft leader discarded the command; it was not applied", retry_after=0.2
        )
    return Retryable(
        f"Raft refused the command (reason {reason}); it was not applied", retry_after=0.5
    )

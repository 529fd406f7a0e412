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
- Membership (docs/raft.md "Membership changes"): `add_member`, `remove_member`,
  `wait_caught_up` and `transfer_leadership` are awaited on the leader and end in a typed
  outcome (`membership.Done` / `Refused` / `Unknown`, `Moved` / `NotMoved`); the flows are
  in `reconfig.py`, pysyncobj's side in `changes.py`. A removed member learns nothing
  (the leader stops talking to it when the entry is appended): its caller closes it,
  `close(delete_data=True)` also deleting its journal and snapshot.

Threads: the driver thread calls `tick`, `has_queued_commands` and `sync_journal` in its
cycle, under the driver lock; `__init__` and `close` take the lock themselves, and
`destroy` is called with it held (by `close`, `RaftDriver.stop`). `propose` does not take
it: it puts the command on pysyncobj's thread-safe command queue and wakes the driver.
Nor do `status`, `stats`, `log_size` and `force_compaction`: they read (or set) single attributes,
each access atomic under the GIL, so a status may mix two driver cycles.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import time
from typing import TYPE_CHECKING, Any, Protocol

from pysyncobj import SyncObj, SyncObjConf, replicated

from kv.errors import KvError, NotReady, UnknownOutcome
from raft_groups.syncobj_adapter import outcomes, shim
from raft_groups.syncobj_adapter.changes import SyncObjChanges, members_of
from raft_groups.syncobj_adapter.driver import Schedule
from raft_groups.syncobj_adapter.durable import import_legacy, sync_new_dir
from raft_groups.syncobj_adapter.membership import ChangeOutcome, TransferOutcome
from raft_groups.syncobj_adapter.mux import GroupTransport
from raft_groups.syncobj_adapter.node_log import GroupJournal
from raft_groups.syncobj_adapter.read_index import ReadIndex, View
from raft_groups.syncobj_adapter.reconfig import ChangePolicy, Reconfigurator
from raft_groups.syncobj_adapter.settings import GroupSettings
from raft_groups.syncobj_adapter.snapshot import (
    SNAPSHOT_FILE,
    BackgroundSnapshot,
    Snapshots,
    drop_marker,
)
from raft_groups.syncobj_adapter.stats import GroupStats, LeaderChanges, RaftStatus

if TYPE_CHECKING:
    from raft_groups.syncobj_adapter.driver import RaftDriver


class StateMachine(Snapshots, Protocol):
    def apply(self, index: int, command: bytes) -> Any: ...


class RaftGroup:
    """One Raft replica group on this node (thread use: see the module docstring)."""

    def __init__(self, driver: RaftDriver, settings: GroupSettings, machine: StateMachine) -> None:
        os.makedirs(settings.data_dir, exist_ok=True)
        self.settings = settings
        self.gid = settings.gid
        self._driver = driver
        self.schedule = Schedule()
        self._commit_sent = -1
        self._joining = settings.joining
        self._hold_until = 0.0  # transfer hold: no tick before this time.monotonic(); 0 = none
        self.fenced: str | None = None  # set once, by `fence`
        # proposals whose callback has not run: failed by `fence` (any thread adds, the
        # driver thread removes; single dict operations are atomic)
        self._waiting: dict[int, tuple[asyncio.Future[Any], asyncio.AbstractEventLoop]] = {}
        self._proposals = itertools.count()
        self._max_bytes = settings.log_compaction_max_bytes
        self._compact_after = 0.0  # no byte-triggered compaction before (time.monotonic())
        self._leaders = LeaderChanges()
        with driver.lock:
            self.transport = GroupTransport(
                driver.mux, settings.gid, settings.peers, lease=settings.election_timeout_min
            )
            if driver.log is None:
                raise ValueError("a RaftGroup needs a driver with the node's log (RaftDriver.log)")
            self._log = driver.log
            import_legacy(self._log, settings.gid, settings.data_dir)
            self.journal = self._log.journal(self.gid, self._needs_sync)
            self._new_dir = True  # its entries are synced at the first sync (`sync_journal`)
            self._needs_sync()
            try:
                drop_marker(os.path.join(settings.data_dir, SNAPSHOT_FILE))
                self._obj = _SyncObj(settings, machine, self.transport, self.journal)
            except BaseException:
                self.journal._destroy()  # no SyncObj holds it: the group may be created again
                raise
            self.transport.owner = self._obj
            self.reads = ReadIndex(
                self.transport.send_to, time.monotonic, settings.election_timeout_min / 2
            )
            self.transport.read_hook = self._on_read_message
            driver.mux.register(self.transport)
            # a restarted member speaks for the configuration its log names (shim.py)
            self.adopted_changes = shim.adopt_logged_configuration(self._obj)
        driver.add(self)
        # the raw primitives (no serializer, no checks): use the methods below
        self.changes = SyncObjChanges(self._obj, driver, lambda: driver.wake(self), self._hold)
        self.reconfig = Reconfigurator(self.changes, ChangePolicy())

    def propose(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """Replicate `command`; the future resolves after it is applied on this node."""
        fut: asyncio.Future[Any] = loop.create_future()
        if self.fenced is not None:
            fut.set_exception(self._fenced_error())
            return fut
        token = next(self._proposals)
        self._waiting[token] = (fut, loop)

        def done(result: Any, reason: int) -> None:  # runs on the driver thread
            self._waiting.pop(token, None)
            loop.call_soon_threadsafe(outcomes.settle, fut, result, reason)

        self._obj._apply_command(command, callback=done)  # thread-safe queue put
        self._driver.wake(self)
        return fut

    def read_index(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A linearizable read point (read_index.py, Raft thesis §6.4): the future resolves
        once this member has applied every entry committed before the call."""
        fut: asyncio.Future[None] = loop.create_future()
        if self.fenced is not None:
            fut.set_exception(self._fenced_error())
            return fut

        def done(error: KvError | None) -> None:  # runs on the driver thread
            loop.call_soon_threadsafe(outcomes.settle_read, fut, error)

        def read() -> None:
            if self.fenced is not None:
                done(self._fenced_error())
            else:
                self.reads.read(done, self._view())

        self._driver.submit(read)
        return fut

    def fence(self, reason: str) -> None:
        """Stop this member after a failure of its own (driver thread, lock held; the
        driver no longer ticks or syncs it, RaftDriver._fence). It receives and sends
        nothing more, so the other members go on without it (a leader's followers elect
        another); waiting reads fail retryably; proposals in flight end as unknown
        outcomes — an entry this member appended may have reached the others and commit
        there; new requests get 503."""
        if self.fenced is not None:
            return
        self.fenced = reason
        self.transport.destroy()  # out of the mux: nothing delivered, nothing queued
        self.reads.close()
        lost = UnknownOutcome(
            f"raft group {self.gid} stopped on this node ({reason}) with the command in "
            "flight; it may have been applied"
        )
        waiting, self._waiting = list(self._waiting.values()), {}
        for fut, loop in waiting:
            loop.call_soon_threadsafe(outcomes.fail, fut, lost)

    def _fenced_error(self) -> NotReady:
        return NotReady(
            f"raft group {self.gid} is stopped on this node after a failure ({self.fenced}); "
            "see /v1/health",
            retry_after=1.0,
        )

    def _on_read_message(self, sender: str, message: dict[str, Any]) -> None:
        self.reads.on_message(sender, message, self._view())

    def _view(self) -> View:
        """The group as a read round sees it (driver thread)."""
        obj = self._obj
        return View(
            is_leader=shim.is_leader(obj),
            leader=shim.leader_address(obj),
            term=int(obj.raftCurrentTerm),
            commit_index=int(obj.raftCommitIndex),
            last_applied=int(obj.raftLastApplied),
            last_index=shim.last_log_index(obj),
            others=tuple(node.id for node in obj.otherNodes),
        )

    def status(self) -> RaftStatus:
        obj = self._obj
        return RaftStatus(
            leader=shim.leader_address(obj),
            is_leader=shim.is_leader(obj),
            term=int(obj.raftCurrentTerm),
            commit_index=int(obj.raftCommitIndex),
            last_applied=int(obj.raftLastApplied),
            ready=bool(obj.isReady()) and self.fenced is None,
            fenced=self.fenced,
        )

    def stats(self) -> GroupStats:
        snapshots = self._obj.snapshots
        counts = (self._leaders.count, len(self._waiting), self.journal.size)
        return GroupStats(*counts, snapshots.taken, snapshots.seconds)

    # ------------------------------------------------------------------ membership
    def members(self) -> tuple[str, ...]:
        """This member's configuration (in effect from append, not commit), sorted."""
        return members_of(self._obj)  # `otherNodes` is a copy: safe off the driver thread

    async def add_member(self, address: str, timeout: float = 10.0) -> ChangeOutcome:
        """On the leader: add `address` (started beforehand with `joining=True` and the
        current members as its peers). Done once committed; then `wait_caught_up`."""
        return await self.reconfig.add_member(address, timeout)

    async def remove_member(self, address: str, timeout: float = 10.0) -> ChangeOutcome:
        """On the leader: remove `address` (not the leader itself: move leadership off it
        with `transfer_leadership` first, then call this on the new leader)."""
        return await self.reconfig.remove_member(address, timeout)

    async def wait_caught_up(self, address: str, timeout: float = 30.0) -> bool:
        return await self.reconfig.wait_caught_up(address, timeout)

    async def transfer_leadership(
        self, target: str | None = None, timeout: float = 5.0
    ) -> TransferOutcome:
        """On the leader: hand leadership to `target` (default: the most caught-up
        connected follower); `Moved` once another leader is heard of."""
        return await self.reconfig.transfer_leadership(timeout, target)

    def tick(self) -> None:
        """One pysyncobj tick (`_tick`), then the read rounds' (read_index.py) when a read
        waits; then a compaction if the journal has grown past `log_compaction_max_bytes`."""
        self._tick()
        self._leaders.see(shim.leader_address(self._obj))
        if not self.reads.idle:  # most ticks: no read waits, and a view costs a few µs
            self.reads.on_tick(self._view())
        now = time.monotonic()
        if now >= self._compact_after and self.journal.size > self._max_bytes:
            self._obj.forceLogCompaction()  # at most every 10 s: a snapshot takes a while
            self._compact_after = now + 10.0

    def _tick(self) -> None:
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
        if self._held():
            return
        if self._joining:
            self._joining = self._still_joining()
        deadline, sent = shim.next_append_entries_time(obj), self.transport.log_sends
        obj.doTick(0.0)
        if not shim.is_leader(obj):
            return
        if shim.next_append_entries_time(obj) != deadline:
            self._commit_sent = obj.raftCommitIndex  # the tick sent, with this commit index
        self._send_unsent()
        if self.transport.log_sends != sent and self._has_unsent_entries():
            self.schedule.woken = True  # a follower catching up: send more next cycle

    def _hold(self) -> None:
        """Leadership transfer (thesis §3.10): the leader appends nothing more — its group
        is not ticked, so queued commands wait — until it steps down or half an election
        timeout passes (its silence stays shorter than any follower's election timeout).
        Messages are still received: acks move match indexes, a vote request deposes it.
        Driver thread; a hold in progress is not extended."""
        if not self._hold_until:
            self._hold_until = time.monotonic() + self.settings.election_timeout_min / 2

    def _held(self) -> bool:
        if self._hold_until and shim.is_leader(self._obj):
            if time.monotonic() < self._hold_until:
                return True
        self._hold_until = 0.0
        return False

    def _still_joining(self) -> bool:
        """A joining member campaigns only once it has heard from a leader: until then its
        election deadline keeps moving (its term must not outrun the group's, or its first
        vote request after the add would depose the leader)."""
        if shim.leader_address(self._obj) is not None:
            return False
        shim.postpone_election(self._obj, self.settings.election_timeout_max)
        return True

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
        """Commands proposed here (or forwarded to this leader) not yet taken by a tick;
        False during a transfer's hold, when no tick would take them."""
        return shim.queued_commands(self._obj) > 0 and not self._hold_until

    def force_compaction(self) -> None:
        """Snapshot and truncate the log at the next tick (ops and tests)."""
        self._obj.forceLogCompaction()
        self._driver.wake(self)

    def log_size(self) -> int:
        return shim.log_size(self._obj)

    def _needs_sync(self) -> None:
        self._driver.needs_sync(self)

    def sync_journal(self) -> bool:
        """Make what this group wrote durable: the node's log (one write and fdatasync for
        every group that wrote since the last sync step: `NodeLog.sync`; True if this call
        made it) and, the first time, the group's directory entry. The driver calls it only
        after `needs_sync`."""
        if self._new_dir and self._log.sync_enabled:
            sync_new_dir(self.settings.data_dir)
        self._new_dir = False
        return self._log.sync()

    def destroy(self) -> None:
        """Destroy the SyncObj at once (its transport, its journal); caller holds the lock.
        Reads waiting on it fail (NotReady)."""
        self.reads.close()
        self._obj.destroy()  # autoTick=False: nothing waits for a tick thread

    def close(self, delete_data: bool = False) -> None:
        """Stop this member; `delete_data` also deletes its journal and snapshot (a removed
        member: its state machine's data is the machine's to drop)."""
        self._driver.remove(self)
        with self._driver.lock:
            self.destroy()
            if delete_data:
                self._log.drop(self.gid)  # durable before the snapshot goes
        if delete_data:
            self._obj.snapshots.join()
            shutil.rmtree(self.settings.data_dir, ignore_errors=True)


class _SyncObj(shim.MembershipGuard, SyncObj):  # type: ignore[misc]
    def __init__(
        self,
        settings: GroupSettings,
        machine: StateMachine,
        transport: Any,
        journal: GroupJournal,
    ) -> None:
        self._machine = machine
        self.snapshots = BackgroundSnapshot(machine)
        conf = _conf(settings, self.snapshots, journal)
        super().__init__(settings.self_address, list(settings.peers), conf, transport=transport)
        shim.drop_poller(self)  # batch mode on the mux: nothing to poll

    @replicated  # type: ignore[untyped-decorator]
    def _apply_command(self, command: bytes) -> Any:
        return self._machine.apply(self.raftLastApplied + 1, command)


def _conf(settings: GroupSettings, snapshots: BackgroundSnapshot, journal: GroupJournal) -> Any:
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
        journalFile=journal,  # part of the node's log (node_log.py, shim._create_journal)
        fullDumpFile=os.path.join(settings.data_dir, SNAPSHOT_FILE),
        serializer=snapshots.write,
        serializeChecker=snapshots.check,
        deserializer=snapshots.read,
        logCompactionMinEntries=settings.log_compaction_min_entries,
        logCompactionMinTime=settings.log_compaction_min_time,
        dynamicMembershipChange=True,  # followers apply membership entries on append
        pollerType="poll",
    )

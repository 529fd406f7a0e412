"""One thread drives every Raft group of this node over one `RaftMux` (DESIGN.md §2: one
tick driver for all groups rather than a thread each).

Every SyncObj runs with `autoTick=False`; `RaftDriver.cycle` is the driver's whole
behaviour, one documented sequence (tick → leaders' entries out → sync journals → flush →
poll → leaders' entries out → sync → flush).
Which groups a cycle ticks (`_tick_due`): idle groups together in one round every
`idle_tick` (their heartbeats), a group with work (a queued command, a message that left
work) at once, and never a group without work. Between idle rounds, and in a sync step,
only the groups that have work are looked at (`_due`, `needs_sync`). Every group's journal
is part of the node's log (`log`, node_log.py), so a sync step is one write and one
fdatasync whatever the number of groups that wrote (the first group's `sync_journal`
makes it; the others find nothing left).

The driver uses only `poll`, `deliver`, `flush`, `flush_ahead`, `discard_group`,
`take_failures`, `wake`, `close` and `dirty` of the mux and the `DrivenGroup` methods of
a group, so it runs against fakes in unit tests.
No pysyncobj here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from raft_groups.syncobj_adapter.mux import RaftMux
    from raft_groups.syncobj_adapter.node_log import NodeLog

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(eq=False)
class Schedule:
    woken: bool = False  # set by propose() on another thread; read and cleared by the driver


class DrivenGroup(Protocol):
    """What the driver needs of a group (`RaftGroup`)."""

    gid: str
    schedule: Schedule

    def tick(self) -> None: ...

    def has_queued_commands(self) -> bool: ...

    def sync_journal(self) -> bool: ...

    def destroy(self) -> None: ...

    def fence(self, reason: str) -> None: ...


@dataclass
class RaftDriver:
    """One thread ticking every Raft group of this node, over one `RaftMux`."""

    mux: RaftMux
    log: NodeLog | None = None  # the node's Raft log, shared by its groups (`RaftGroup`)
    idle_tick: float = 0.1  # heartbeat cadence of idle groups; ≪ election_timeout_min (0.6 s)
    lock: threading.RLock = field(default_factory=threading.RLock)
    journal_syncs: int = 0  # journal syncs so far (ops and tests)
    fenced: dict[str, str] = field(default_factory=dict)  # gid → why (`_fence`)
    _groups: dict[str, DrivenGroup] = field(default_factory=dict)
    _unsynced: dict[str, DrivenGroup] = field(default_factory=dict)  # `needs_sync`
    # groups `wake` was called for (any thread: deque appends are atomic), and groups that
    # asked for another tick at once (driver thread): with `mux.dirty`, the only groups a
    # cycle between idle rounds looks at
    _woken: collections.deque[DrivenGroup] = field(default_factory=collections.deque)
    _again: dict[str, DrivenGroup] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _calls: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = field(
        default_factory=collections.deque
    )
    _next_round: float = 0.0

    def add(self, group: DrivenGroup) -> None:
        with self.lock:
            self._groups[group.gid] = group

    def remove(self, group: DrivenGroup) -> None:
        with self.lock:
            self._groups.pop(group.gid, None)
            self._unsynced.pop(group.gid, None)
            self._again.pop(group.gid, None)

    def wake(self, group: DrivenGroup) -> None:
        """Tick `group` in the next cycle, which starts now (thread-safe)."""
        group.schedule.woken = True
        self._woken.append(group)
        self.mux.wake()

    def needs_sync(self, group: DrivenGroup) -> None:
        """`group` wrote its journal or its term/vote: sync it before the next flush
        (called with the driver lock held, by the group's watches: durable.py)."""
        self._unsynced[group.gid] = group

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="raft-driver", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the driver thread between two cycles and return its result.

        Group creation and destruction go through here: they run on the driver thread
        between two cycles (the `wake` ends a poll at once), never beside a tick."""
        return self.submit(fn).result()

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """`call` without waiting: the future is done once `fn` ran on the driver thread
        (at once, inline, on the driver thread itself or when no driver thread runs)."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        thread = self._thread
        if thread is None or thread is threading.current_thread() or not thread.is_alive():
            with self.lock:
                _run_call(fn, done)
            return done
        self._calls.append((fn, done))
        self.mux.wake()
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.cycle(time.monotonic())
            except Exception:  # pysyncobj's own tick loop logs and carries on the same way
                log.exception("raft driver cycle failed")
                time.sleep(self.idle_tick)

    def cycle(self, now: float) -> None:
        """One driver cycle, under the driver lock, in this order:

        1. run the calls other threads queued (`call`: group creation and destruction);
        2. tick the groups that are due (`_tick_due`): pysyncobj appends entries to their
           journals and queues messages in the mux (`RaftMux.send` only queues);
        3. send the leaders' entries (`mux.flush_ahead`), sync the node's log (every group's
           journal, term and vote written since the last sync: node_log.py), then flush the
           mux — the other messages leave the node;
        4. poll the port until a message arrives, `wake` is called, or the next idle round
           is due — without the lock: the link reads and checks what arrives — then, with
           the lock again, hand it to the groups (`mux.deliver`: a follower appends the
           entries it receives to its journal and queues its ack; a vote is granted);
        5. the same again: leaders' entries, sync, flush.

        Invariants (group commit, docs/raft.md "Durability"): no message that vouches for
        the sender's disk (an ack, a vote, a vote request) leaves before the log records
        it covers (entries, term and vote) are synced — it leaves only in `mux.flush`, and
        `_sync_then_flush` is its only caller, after the sync. A leader's `append_entries`
        vouches for nothing and leaves before its own sync (Raft thesis §10.2.1: the
        leader writes its disk while the followers write theirs); the leader counts
        itself toward a majority only in a tick, and a tick comes only in a later cycle,
        after this cycle's sync steps: so its own vote toward a commit also means "on disk".
        """
        with self.lock:
            self._run_calls()
            timeout = self._tick_due(now)
            self._sync_then_flush()
        self.mux.poll(timeout)  # socket I/O (raft link), outside the lock every group needs
        with self.lock:
            self.mux.deliver()
            for gid, exc in self.mux.take_failures().items():
                if (group := self._groups.get(gid)) is not None:
                    self._fence(group, exc)
            self._sync_then_flush()

    def _run_calls(self) -> None:
        while self._calls:
            _run_call(*self._calls.popleft())

    def _tick_due(self, now: float) -> float:
        """Tick the groups that are due; return how long the poll may wait.

        Idle groups are ticked together in one round every `idle_tick`, so one round's
        heartbeats to a peer leave as one frame rather than one per group.
        Otherwise a group is ticked only when it has work: a queued command (`wake`), or a
        message that left work (`mux.dirty`). No group is ticked on a timer while busy:
        `RaftGroup.tick` sends new entries and commit indexes at once, so nothing waits for
        a period. Between rounds only those groups are looked at, not every group.
        """
        dirty, self.mux.dirty = self.mux.dirty, set()
        idle_round = self._idle_round_due(now)
        for group in self._due(idle_round, dirty):
            try:
                again = _tick_if_due(group, idle_round or group.gid in dirty)
            except Exception as exc:  # noqa: BLE001 - this group's failure, not the node's
                self._fence(group, exc)
                continue
            if again:
                self._again[group.gid] = group
        return 0.0 if self._again else max(self._next_round - now, 0.0)

    def _due(self, idle_round: bool, dirty: set[str]) -> list[DrivenGroup]:
        """The groups that may have work: every group in an idle round; otherwise the woken
        ones, those with received work and those that asked to be ticked again."""
        woken = [self._woken.popleft() for _ in range(len(self._woken))]
        if idle_round:
            self._again.clear()
            return list(self._groups.values())
        due, self._again = self._again, {}
        due.update((group.gid, group) for group in woken)
        due.update((gid, group) for gid in dirty if (group := self._groups.get(gid)) is not None)
        return [group for gid, group in due.items() if self._groups.get(gid) is group]

    def _idle_round_due(self, now: float) -> bool:
        if now < self._next_round:
            return False
        self._next_round = now + self.idle_tick
        return True

    def _sync_then_flush(self) -> None:
        """Group commit: journals on disk first, then the messages that vouch for them
        (leaders' entries go out before the sync: `RaftMux.flush_ahead`).

        Only the groups that wrote since the last sync are visited (`needs_sync`). A group
        whose sync fails is fenced and its queued messages are dropped before the flush
        (they would vouch for what may not be on disk); the others' leave."""
        unsynced, self._unsynced = self._unsynced, {}
        if unsynced:  # entries leave for the followers while the leader's disk writes
            self.mux.flush_ahead()
        synced, failed = self._sync_all(list(unsynced.values()))
        self.journal_syncs += synced
        for group, exc in failed:
            self._fence(group, exc)
        self.mux.flush()

    def _fence(self, group: DrivenGroup, exc: Exception) -> None:
        """Fault isolation (issue 11 item 4): a group whose tick, delivery or sync raised
        (a failing disk, a full journal, a bug) stops on this node — it is neither ticked
        nor synced again, nothing it queued leaves, it receives nothing more, and its
        requests fail (group.fence) — while every other group keeps running. Its files
        stay as they are; a restart of the node starts it afresh from them."""
        reason = f"{type(exc).__name__}: {exc}"
        log.error("raft group %s fenced on this node: %s", group.gid, reason, exc_info=exc)
        self.remove(group)
        self.mux.discard_group(group.gid)
        self.fenced[group.gid] = reason
        group.fence(reason)

    def _sync_all(
        self, groups: list[DrivenGroup]
    ) -> tuple[int, list[tuple[DrivenGroup, Exception]]]:
        """Sync `groups` in turn; how many journal syncs that took, and the groups whose
        sync raised. With the node's log the first sync writes and fdatasyncs what every
        group appended, and the others find nothing left (a failed log fails them all)."""
        synced, failed = 0, []
        for group in groups:
            try:
                synced += group.sync_journal()
            except Exception as exc:  # noqa: BLE001 - this group's failure, fenced
                failed.append((group, exc))
        return synced, failed

    def stop(self) -> None:
        self._stop.set()
        self._run_calls()
        self.mux.wake()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)
        with self.lock:
            for group in list(self._groups.values()):
                group.destroy()
            self._groups.clear()
            self.mux.close()
            if self.log is not None:
                self.log.close()


def _run_call(fn: Callable[[], T], done: concurrent.futures.Future[T]) -> None:
    """Run `fn` unless its caller gave up first (an awaiting task cancelled: `wrap_future`
    cancels the future); setting a cancelled future's result would raise in the driver
    (or in `stop`, which runs the calls left)."""
    if not done.set_running_or_notify_cancel():
        return
    try:
        done.set_result(fn())
    except BaseException as exc:  # noqa: BLE001 - handed to the caller
        done.set_exception(exc)


def _tick_if_due(group: DrivenGroup, due: bool) -> bool:
    """Tick `group` if it is due or has work; return whether it wants another cycle now."""
    woken, group.schedule.woken = group.schedule.woken, False
    if woken or due or group.has_queued_commands():
        group.tick()
        # `_checkCommandsToApply` stops after one period's worth of commands
        if group.has_queued_commands():
            group.schedule.woken = True
    return group.schedule.woken

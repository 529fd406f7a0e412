"""The Raft driver's cycle with fakes (raft_groups/syncobj_adapter/driver.py; docs/raft.md
"Durability": group commit).

Fake groups keep a fake journal (a count of appended entries and of synced ones) that,
like the real one's watch (durable.py), tells the driver it needs a sync when written,
and send through a fake mux that, like `RaftMux`, only queues until `flush`. Each message records
how many entries its group's journal held when it was sent; the fake `flush` refuses to
send a message whose entries are not synced yet. No sockets, no threads, no clock: each
test calls `RaftDriver.cycle(now)` with the time it wants.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import pytest

from raft_groups.syncobj_adapter.driver import RaftDriver, Schedule


class FakeJournal:
    def __init__(self) -> None:
        self.entries = 0
        self.synced = 0
        self.written: Callable[[], None] = lambda: None  # the driver's `needs_sync`

    def append(self) -> None:
        self.entries += 1
        self.written()


class FakeMux:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.dirty: set[str] = set()
        self.outbox: list[tuple[FakeGroup, int, str]] = []
        self.sent: list[str] = []
        self.arriving: list[Callable[[], None]] = []  # delivered by the next poll
        self.poll_timeouts: list[float] = []
        self.failures: dict[str, Exception] = {}  # a delivery raised (set by a test)

    def send(self, group: FakeGroup, message: str) -> None:
        self.outbox.append((group, group.journal.entries, message))

    def flush(self) -> None:
        self.events.append("flush")
        for group, entries, message in self.outbox:
            assert group.journal.synced >= entries, f"{message!r} left before its journal sync"
            self.sent.append(message)
            self.events.append(f"sent {message}")
        self.outbox = []

    def flush_ahead(self) -> None:
        """Like `RaftMux.flush_ahead`: a group's messages leave at once when every one of
        them is a leader's append_entries (which vouches for nothing on disk)."""
        self.events.append("flush ahead")
        held = {g.gid for g, _, m in self.outbox if not m.startswith("append_entries")}
        for group, _, message in self.outbox:
            if group.gid not in held:
                self.sent.append(message)
                self.events.append(f"sent {message}")
        self.outbox = [m for m in self.outbox if m[0].gid in held]

    def poll(self, timeout: float) -> None:
        self.events.append("poll")
        self.poll_timeouts.append(timeout)

    def deliver(self) -> None:
        arriving, self.arriving = self.arriving, []
        for deliver in arriving:
            deliver()

    def wake(self) -> None:
        pass

    def discard_group(self, gid: str) -> None:
        self.outbox = [m for m in self.outbox if m[0].gid != gid]

    def take_failures(self) -> dict[str, Exception]:
        failures, self.failures = self.failures, {}
        return failures

    def close(self) -> None:
        self.events.append("close")


class FakeGroup:
    """A leader with `queued` commands: each tick appends one entry and sends it."""

    def __init__(self, gid: str, mux: FakeMux, queued: int = 0) -> None:
        self.gid = gid
        self.schedule = Schedule()
        self.journal = FakeJournal()
        self.mux = mux
        self.queued = queued

    def tick(self) -> None:
        # pysyncobj's leader counts its own log toward a commit in its tick: every entry
        # it appended must be on its disk by then (Raft thesis §10.2.1)
        assert self.journal.synced == self.journal.entries, f"{self.gid} ticked before its sync"
        self.mux.events.append(f"tick {self.gid}")
        if self.queued:
            self.queued -= 1
            self.journal.append()
            self.mux.send(self, f"append_entries {self.gid}#{self.journal.entries}")

    def receive_entry(self) -> None:
        """A follower handling append_entries during the poll: append, then ack."""
        self.journal.append()
        self.mux.send(self, f"ack {self.gid}#{self.journal.entries}")

    def has_queued_commands(self) -> bool:
        return self.queued > 0

    def sync_journal(self) -> bool:
        if self.journal.synced == self.journal.entries:
            return False
        self.mux.events.append(f"sync {self.gid}")
        self.journal.synced = self.journal.entries
        return True

    def destroy(self) -> None:
        self.mux.events.append(f"destroy {self.gid}")

    def fence(self, reason: str) -> None:
        self.mux.events.append(f"fence {self.gid}: {reason}")


def _driver(*groups: tuple[str, int]) -> tuple[RaftDriver, FakeMux, dict[str, FakeGroup]]:
    mux = FakeMux([])
    driver = RaftDriver(mux)  # type: ignore[arg-type]
    made = {gid: FakeGroup(gid, mux, queued) for gid, queued in groups}
    for group in made.values():
        driver.add(group)
        group.journal.written = _needs_sync(driver, group)
    return driver, mux, made


def _quiet(driver: RaftDriver, mux: FakeMux, now: float) -> None:
    """Run the first cycle (an idle round), then forget its events."""
    driver.cycle(now)
    mux.events.clear()
    mux.poll_timeouts.clear()


def test_cycle_is_tick_then_sync_then_flush_then_poll_then_sync_then_flush() -> None:
    driver, mux, groups = _driver(("a", 1))
    mux.arriving.append(groups["a"].receive_entry)
    driver.cycle(1.0)
    assert mux.events == [
        "tick a",
        "flush ahead",
        "sent append_entries a#1",  # before the leader's own sync (Raft thesis §10.2.1)
        "sync a",
        "flush",
        "poll",
        "flush ahead",
        "sync a",
        "flush",
        "sent ack a#2",  # after the follower's sync
    ]
    assert driver.journal_syncs == 2


def test_a_leaders_entries_leave_while_its_journal_syncs_and_count_only_after() -> None:
    driver, mux, groups = _driver(("a", 0), ("b", 0))
    _quiet(driver, mux, 1.0)
    groups["b"].queued = 2
    driver.wake(groups["b"])  # as propose() does
    driver.cycle(1.01)
    events = mux.events
    assert events.index("tick b") < events.index("sent append_entries b#1")
    assert events.index("sent append_entries b#1") < events.index("sync b")
    assert "sync a" not in events, "only journals that changed are synced"
    driver.cycle(1.02)  # the next tick (where the leader counts itself) finds b#1 synced
    assert mux.sent == ["append_entries b#1", "append_entries b#2"]


def test_a_group_with_an_ack_queued_keeps_its_entries_until_the_sync() -> None:
    driver, mux, groups = _driver(("a", 0), ("b", 0))
    _quiet(driver, mux, 1.0)

    def ack_then_entries() -> None:  # one delivery makes a group answer, then send entries
        groups["a"].receive_entry()
        mux.send(groups["a"], "append_entries a#1")
        mux.send(groups["b"], "append_entries b#0")  # another group's: nothing held

    mux.arriving.append(ack_then_entries)
    driver.cycle(1.01)
    events = mux.events
    assert events.index("sent append_entries b#0") < events.index("sync a")
    assert events.index("sync a") < events.index("sent ack a#1")
    assert events.index("sent ack a#1") < events.index("sent append_entries a#1")


def test_an_ack_sent_while_polling_waits_for_its_journal_sync() -> None:
    driver, mux, groups = _driver(("a", 0))
    _quiet(driver, mux, 1.0)
    mux.arriving.append(groups["a"].receive_entry)
    driver.cycle(1.01)
    assert mux.events == ["flush", "poll", "flush ahead", "sync a", "flush", "sent ack a#1"]


def test_the_fake_mux_would_catch_a_flush_before_the_sync() -> None:
    _, mux, groups = _driver(("a", 1))
    groups["a"].tick()
    with pytest.raises(AssertionError, match="left before its journal sync"):
        mux.flush()


def test_an_idle_round_ticks_every_group_then_none_until_the_next_round() -> None:
    driver, mux, _ = _driver(("a", 0), ("b", 0))
    driver.cycle(1.0)
    assert [e for e in mux.events if e.startswith("tick")] == ["tick a", "tick b"]
    _quiet(driver, mux, 1.0)
    driver.cycle(1.04)
    assert not [e for e in mux.events if e.startswith("tick")]
    assert mux.poll_timeouts == [pytest.approx(0.06)]  # until the next round (idle_tick 0.1)
    driver.cycle(1.1)
    assert [e for e in mux.events if e.startswith("tick")] == ["tick a", "tick b"]


def test_only_groups_with_work_are_ticked_between_rounds() -> None:
    driver, mux, groups = _driver(("a", 0), ("b", 0), ("c", 0))
    _quiet(driver, mux, 1.0)
    driver.wake(groups["a"])  # a queued command
    mux.dirty.add("c")  # a received message left work
    driver.cycle(1.01)
    assert [e for e in mux.events if e.startswith("tick")] == ["tick a", "tick c"]


def test_a_group_with_commands_left_after_its_tick_is_ticked_again_without_waiting() -> None:
    driver, mux, groups = _driver(("a", 0))
    _quiet(driver, mux, 1.0)
    groups["a"].queued = 2
    driver.wake(groups["a"])
    driver.cycle(1.01)
    assert mux.poll_timeouts == [0.0]
    assert groups["a"].schedule.woken
    driver.cycle(1.01)
    assert mux.sent == ["append_entries a#1", "append_entries a#2"]
    assert mux.poll_timeouts[-1] > 0


def test_call_without_a_thread_runs_inline_under_the_lock() -> None:
    driver, _, _ = _driver()
    result: Any = driver.call(lambda: driver.lock._is_owned())  # type: ignore[attr-defined]
    assert result is True


def test_stop_destroys_every_group_and_closes_the_mux() -> None:
    driver, mux, _ = _driver(("a", 0), ("b", 0))
    driver.stop()
    assert mux.events == ["destroy a", "destroy b", "close"]


def test_a_call_its_caller_cancelled_is_not_run_and_does_not_break_the_others() -> None:
    """A task awaiting `submit` through `asyncio.wrap_future` and cancelled (a timeout, a
    node stopping) cancels the future; the driver skips it and runs the next call."""
    driver, _, _ = _driver()
    ran: list[str] = []
    cancelled: concurrent.futures.Future[None] = concurrent.futures.Future()
    cancelled.cancel()
    kept: concurrent.futures.Future[None] = concurrent.futures.Future()
    driver._calls.extend(
        [(lambda: ran.append("skipped"), cancelled), (lambda: ran.append("kept"), kept)]
    )
    driver.stop()  # runs the calls left, as a stopping node does
    assert ran == ["kept"] and kept.done() and cancelled.cancelled()


# ---------------------------------------------------------------------- visiting only work
class CountingGroup(FakeGroup):
    """Counts how often the driver looks at it."""

    def __init__(self, gid: str, mux: FakeMux, queued: int = 0) -> None:
        super().__init__(gid, mux, queued)
        self.syncs = self.looks = 0

    def has_queued_commands(self) -> bool:
        self.looks += 1
        return super().has_queued_commands()

    def sync_journal(self) -> bool:
        self.syncs += 1
        return super().sync_journal()


def test_a_sync_step_visits_only_the_groups_whose_journal_was_written() -> None:
    mux = FakeMux([])
    driver = RaftDriver(mux)  # type: ignore[arg-type]
    groups = [CountingGroup(f"g{i}", mux) for i in range(64)]
    for group in groups:
        driver.add(group)
        group.journal.written = _needs_sync(driver, group)
    _quiet(driver, mux, 1.0)  # an idle round: every group is looked at and ticked
    for group in groups:
        group.looks = group.syncs = 0
    groups[5].queued = 1
    driver.wake(groups[5])
    driver.cycle(1.01)
    assert [g.gid for g in groups if g.syncs] == ["g5"]
    assert [g.looks for g in groups if g.looks] == [1]  # g5, after its tick; no other group


def test_a_failed_sync_fences_its_group_and_only_its_messages_stay_behind() -> None:
    """Issue 11 item 4: one group's failing disk write stops that group, not the node."""
    driver, mux, groups = _driver(("a", 0), ("b", 1))
    _quiet(driver, mux, 1.0)  # b's first entry leaves
    groups["a"].sync_journal = _fail_once(groups["a"].sync_journal)  # type: ignore[method-assign]
    mux.arriving += [groups["a"].receive_entry, groups["b"].receive_entry]
    mux.sent.clear()
    driver.cycle(1.01)  # both followers append and ack; a's sync raises
    assert mux.sent == ["ack b#2"]  # a's ack would vouch for what may not be on disk: dropped
    assert "fence a: OSError: [Errno 5] EIO" in mux.events
    assert list(driver.fenced) == ["a"]
    mux.events.clear()
    groups["b"].queued = 1
    driver.cycle(1.2)  # the next idle round: a is neither ticked nor synced again
    assert "tick a" not in mux.events and "tick b" in mux.events
    assert mux.sent == ["ack b#2", "append_entries b#3"]


def test_a_tick_that_raises_fences_its_group_and_the_others_keep_running() -> None:
    driver, mux, groups = _driver(("a", 1), ("b", 1))

    def broken() -> None:
        raise RuntimeError("storage failed")

    groups["a"].tick = broken  # type: ignore[method-assign]
    driver.cycle(1.0)
    assert driver.fenced == {"a": "RuntimeError: storage failed"}
    assert mux.sent == ["append_entries b#1"]
    driver.cycle(1.2)
    assert "fence a: RuntimeError: storage failed" in mux.events


def test_a_delivery_that_raised_fences_the_group_before_its_sync() -> None:
    driver, mux, groups = _driver(("a", 0), ("b", 0))
    _quiet(driver, mux, 1.0)

    def deliver_and_fail() -> None:
        groups["a"].receive_entry()  # appended and queued an ack, then raised in the mux
        mux.failures["a"] = OSError(28, "ENOSPC")

    mux.arriving.append(deliver_and_fail)
    mux.arriving.append(groups["b"].receive_entry)
    driver.cycle(1.01)
    assert mux.sent == ["ack b#1"] and list(driver.fenced) == ["a"]
    assert "sync a" not in mux.events


def _needs_sync(driver: RaftDriver, group: FakeGroup) -> Callable[[], None]:
    return lambda: driver.needs_sync(group)


def _fail_once(sync: Callable[[], bool]) -> Callable[[], bool]:
    calls: list[int] = []

    def failing() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, "EIO")
        return sync()

    return failing

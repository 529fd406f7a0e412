"""Group commit (kv/group_commit.py): a caller returns only after a sync that started after
its call; callers that arrive during a sync share the next one; a failed sync fails them."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kv.group_commit import GroupCommit

DEADLINE_S = 30.0


class HeldSync:
    """A sync that records when it starts and finishes only when the test lets it."""

    def __init__(self) -> None:
        self.started = 0
        self.release = threading.Semaphore(0)
        self.fail = False

    def __call__(self) -> None:
        self.started += 1
        assert self.release.acquire(timeout=DEADLINE_S)
        if self.fail:
            raise OSError("disk gone")


async def _until(condition: object) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        assert loop.time() < end
        await asyncio.sleep(0.01)


def test_callers_during_a_sync_share_the_next_one() -> None:
    async def scenario() -> None:
        sync = HeldSync()
        commit = GroupCommit(sync)
        first = asyncio.ensure_future(commit.durable())
        await _until(lambda: sync.started == 1)
        later = [asyncio.ensure_future(commit.durable()) for _ in range(10)]
        await asyncio.sleep(0)
        sync.release.release()  # the first sync ends: it may predate the later writes
        await first
        assert not any(t.done() for t in later)
        await _until(lambda: sync.started == 2)  # one more sync, for all ten
        sync.release.release()
        await asyncio.gather(*later)
        assert (sync.started, commit.syncs, commit.waits) == (2, 2, 11)

    asyncio.run(scenario())


def test_a_failed_sync_fails_its_callers_and_the_next_one_runs() -> None:
    async def scenario() -> None:
        sync = HeldSync()
        commit = GroupCommit(sync)
        sync.fail = True
        waiting = asyncio.ensure_future(commit.durable())
        await _until(lambda: sync.started == 1)
        sync.release.release()
        with pytest.raises(OSError):
            await waiting
        sync.fail = False
        sync.release.release()
        await commit.durable()

    asyncio.run(scenario())

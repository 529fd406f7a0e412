"""Stopping background tasks: `Periodic` and `cancel_and_wait` end a task even when one
cancellation is lost (Python 3.11's `asyncio.wait_for` drops a cancel that arrives in the
loop turn its inner future completes in — the cause of a node stop that hung in CI)."""

from __future__ import annotations

import asyncio
import gc

from kv.periodic import Periodic, cancel_and_wait

DEADLINE_S = 5.0


def test_a_task_that_swallows_one_cancellation_is_still_stopped() -> None:
    async def main() -> None:
        swallowed = 0

        async def stubborn() -> None:
            nonlocal swallowed
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    if swallowed == 0:
                        swallowed += 1
                        continue  # lost, as wait_for loses it
                    raise

        task = asyncio.ensure_future(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(task), DEADLINE_S)
        assert task.cancelled() and swallowed == 1

    asyncio.run(main())


def test_a_periodic_whose_round_loses_the_cancel_in_wait_for_stops() -> None:
    async def main() -> None:
        ready: asyncio.Future[None] | None = None
        rounds = 0

        async def round_() -> None:
            nonlocal ready, rounds
            rounds += 1
            ready = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(ready, 3600)

        loop = Periodic("test", 0.0, round_, sleep_first=False)
        loop.start()
        while ready is None:
            await asyncio.sleep(0)
        # the inner future completes in the same loop turn as the stop's cancel
        ready.set_result(None)
        await asyncio.wait_for(loop.stop(), DEADLINE_S)
        assert rounds >= 1

    asyncio.run(main())


def test_finished_and_failed_tasks_are_collected_without_error() -> None:
    reported: list[dict[str, object]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))

        async def fail() -> None:
            raise ValueError("boom")

        done = asyncio.ensure_future(asyncio.sleep(0, result="kept"))
        failed = asyncio.ensure_future(fail())
        await asyncio.sleep(0.01)
        await asyncio.wait_for(cancel_and_wait(done, failed), DEADLINE_S)
        await asyncio.wait_for(cancel_and_wait(), DEADLINE_S)
        assert done.result() == "kept"  # a finished task is not cancelled after the fact
        assert failed.done() and not failed.cancelled()
        del done, failed  # failed's exception is not retrieved here: cancel_and_wait did
        gc.collect()  # an unretrieved exception is reported when its task is freed

    asyncio.run(main())
    assert reported == []

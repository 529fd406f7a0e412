"""raft_groups/mover.py: while the leader waits for a member to catch up, the move's
progress shows how many log entries that member trails the commit index by (the leader's
match index for it) — what `kvctl status` shows for a Raft move; pysyncobj exposes no
bytes sent of a snapshot, so this is all a Raft move reports."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from kv.meta import Metadata
from raft_groups.mover import GroupProgress, RaftMoves
from raft_groups.syncobj_adapter.membership import GroupView


class CatchingUp:
    """A leader's group whose member "d" moves from match 100 to 1000 (the commit index),
    one step per look at the view."""

    def __init__(self) -> None:
        self.matches = iter([100, 400, 700])
        self.seen: list[int] = []
        self.caught_up = asyncio.Event()

    async def view(self) -> GroupView:
        match = next(self.matches, 1000)
        self.seen.append(match)
        if match == 1000:
            self.caught_up.set()
        return GroupView("a", True, "a", ("a", "b", "d"), 1000, 1000, {"d": match}, frozenset())

    async def wait_caught_up(self, member: str, timeout: float) -> bool:
        await asyncio.wait_for(self.caught_up.wait(), timeout)
        return True


def test_the_member_catching_up_shows_the_entries_it_trails() -> None:
    group = CatchingUp()
    leader = SimpleNamespace(changes=group, wait_caught_up=group.wait_caught_up)
    hosted: Any = SimpleNamespace(group=leader)
    moves = RaftMoves(None, "n1", Metadata, _no_propose, lag_interval=0.001)  # type: ignore[arg-type]
    prog = GroupProgress(3, 3)
    shown: list[tuple[str, int | None]] = []

    async def run() -> bool:
        watch = asyncio.ensure_future(_record(prog, shown))
        done = await moves._caught_up(hosted, ("d",), prog)
        watch.cancel()
        return done

    assert asyncio.run(run())
    behind = [b for member, b in shown if member == "d"]
    assert behind and behind[0] == 900 and behind == sorted(behind, reverse=True)
    assert (prog.catching_up, prog.behind) == ("", None)  # cleared once it caught up


async def _record(prog: GroupProgress, shown: list[tuple[str, int | None]]) -> None:
    while True:
        if prog.catching_up:
            shown.append((prog.catching_up, prog.behind))
        await asyncio.sleep(0)


async def _no_propose(change: dict[str, Any]) -> dict[str, Any]:
    raise AssertionError("nothing is proposed here")

"""The leader's side of key expiry (docs/ttl.md): every `interval`, for each Raft group
this node leads whose earliest stored expiry has passed on this node's clock, propose
`expire` with that clock (`now`). The state machine moves the group's expiry horizon up to
`now` and deletes up to `expiry.EXPIRE_BATCH` expired records (raft_groups/expiry.py);
what is left is proposed for again next round.

The clock here decides only *when* an expiry is proposed; whether a key has expired is
decided by the log (the horizon the commands carry). A deposed leader's `expire` is
either committed — then it is in the log like any command — or not at all. Nothing is
proposed for a group with no key due, so an idle cluster writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from kv.errors import KvError
from kv.periodic import Periodic
from raft_groups import expiry
from raft_groups.commands import Command
from raft_groups.manager import Hosted, RaftGroups

log = logging.getLogger(__name__)


def due(leading: Iterable[tuple[Hosted, int | None]], now: int) -> list[Hosted]:
    """The groups to propose an `expire` for: led here, with a stored expiry ≤ `now`."""
    return [hosted for hosted, first in leading if first is not None and first <= now]


class Expirer(Periodic):
    def __init__(
        self,
        groups: RaftGroups,
        clock: Callable[[], float],
        interval: float = 0.5,
        timeout: float = 2.0,
    ) -> None:
        super().__init__("raft expiry", interval, self.round_once)
        self._groups = groups
        self._clock = clock
        self._timeout = timeout
        self.proposed = 0  # `expire` commands committed, since start

    async def round_once(self) -> int:
        """Propose what is due; returns how many `expire` commands were committed."""
        now = int(self._clock() * 1000)
        engine = self._groups.engine
        leading = (
            (hosted, expiry.next_expiry(engine, hosted.spec.number))
            for hosted in self._groups.running()
            if hosted.group.status().is_leader
        )
        done = 0
        for hosted in due(leading, now):
            try:
                await self._groups.propose(
                    hosted.spec, Command("expire", 0, "", now=now), self._timeout
                )
            except KvError as exc:  # lost the lead, no quorum: the next round, or the next leader
                log.debug("expire in %s not committed: %s", hosted.spec.gid, exc)
                continue
            done += 1
        self.proposed += done
        return done

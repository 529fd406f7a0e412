"""The meta Raft group: cluster metadata replicated on the voters (DESIGN.md §2).

The state machine is `kv.meta_machine.apply` over JSON-encoded changes; this module only frames
commands, keeps the current `Metadata` value and tells asyncio when it changes. The state
is small (members, keyspaces), so a snapshot is the whole metadata as JSON.

The voters are the founding members (`initial_cluster`, at most 5) and stay so for now:
replacing a voter that leaves comes with the membership commit (issue 9). Every other
member — any number of them — reads the metadata without voting through
kv/meta_reader.py `MetaReader`, which has this class's face (`metadata`, `subscribe`,
`change`), so nothing outside kv/node.py knows which of the two a node runs. Nothing may
assume that the members are the voters.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from kv import meta_machine
from kv.errors import KvError, NotReady, UnknownOutcome
from kv.meta import Metadata
from raft_groups.syncobj_adapter import GroupSettings, RaftDriver, RaftGroup, RaftStatus

log = logging.getLogger(__name__)

COMMAND_VERSION = 1


class MetaStateMachine:
    """Runs on the Raft driver thread; publishes each new Metadata through `on_change`."""

    def __init__(self, on_change: Callable[[Metadata], None]) -> None:
        self.metadata = Metadata()
        self.applied_index = 0
        self._on_change = on_change

    def apply(self, index: int, command: bytes) -> dict[str, Any]:
        if index <= self.applied_index:  # journal replay below the snapshot: already in state
            return {"status": "unchanged"}
        envelope = json.loads(command)
        if envelope.get("v") != COMMAND_VERSION:
            return {
                "status": "refused",
                "code": "invalid_request",
                "message": "unknown command version",
            }
        self.metadata, outcome = meta_machine.apply(self.metadata, envelope["change"])
        self.applied_index = index
        self._on_change(self.metadata)
        return outcome

    def snapshot(self) -> Iterator[bytes]:
        state = {"applied_index": self.applied_index, "metadata": self.metadata.to_dict()}
        return iter([json.dumps(state).encode()])

    def restore(self, chunks: Iterator[bytes]) -> None:
        state = json.loads(b"".join(chunks))
        if int(state["applied_index"]) <= self.applied_index:
            return  # never move the metadata backwards
        self.metadata = Metadata.from_dict(state["metadata"])
        self.applied_index = int(state["applied_index"])
        self._on_change(self.metadata)


class MetaGroup:
    def __init__(
        self,
        settings: GroupSettings,
        driver: RaftDriver,
        loop: asyncio.AbstractEventLoop,
        voters: tuple[str, ...] = (),
    ) -> None:
        self.voters = voters  # node ids of the group's voters (settings hold their Raft ids)
        self._loop = loop
        self._listeners: list[Callable[[Metadata], None]] = []
        self.machine = MetaStateMachine(self._from_driver_thread)
        self.group = RaftGroup(driver, settings, self.machine)

    @property
    def metadata(self) -> Metadata:
        return self.machine.metadata

    def status(self) -> RaftStatus:
        return self.group.status()

    def summary(self) -> dict[str, Any]:
        """This voter's view of the group, for `GET /v1/cluster`."""
        raft = self.status()
        return {
            "voter": True,
            "voters": list(self.voters),
            "leader": raft.leader,
            "term": raft.term,
            "commit_index": raft.commit_index,
        }

    def subscribe(self, listener: Callable[[Metadata], None]) -> None:
        self._listeners.append(listener)

    def _from_driver_thread(self, md: Metadata) -> None:
        self._loop.call_soon_threadsafe(self._publish, md)

    def _publish(self, md: Metadata) -> None:
        for listener in self._listeners:
            listener(md)

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Propose one change; returns the outcome once it is applied on this node."""
        command = json.dumps({"v": COMMAND_VERSION, "change": change}).encode()
        fut = self.group.propose(command, self._loop)
        try:
            outcome: dict[str, Any] = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise UnknownOutcome(
                f"metadata change not applied within {timeout:.1f}s; it may still be applied"
            ) from None
        return outcome

    async def bootstrap(self, change: dict[str, Any], deadline_s: float) -> None:
        """Propose the founding metadata until some bootstrap has been committed."""
        end = self._loop.time() + deadline_s
        while not self.metadata.bootstrapped:
            if self._loop.time() > end:
                raise NotReady("cluster metadata not bootstrapped: no meta-group quorum yet")
            try:
                await self.change(change, timeout=2.0)
            except KvError as exc:
                log.info("bootstrap not committed yet: %s", exc.message)
                await asyncio.sleep(0.2)

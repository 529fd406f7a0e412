"""The meta Raft group: cluster metadata replicated on the voters (DESIGN.md §2).

The state machine is `kv.meta_machine.apply` over JSON-encoded changes; this module only frames
commands, keeps the current `Metadata` value and tells asyncio when it changes. The state
is small (members, keyspaces), so a snapshot is the whole metadata as JSON.

The voters are at most 5 members chosen by kv/voters.py and moved one at a time by
raft_groups/meta_voters.py on the leader; the group's own configuration is the voter set
of record (`raft_view`). A node runs this group only while it votes or joins (kv/meta_role.py
opens and closes it through `MetaGroups`); every other node reads the metadata through
kv/meta_reader.py `MetaReader`, which has this class's face (`metadata`, `subscribe`,
`change`), so nothing outside kv/node.py and kv/meta_role.py knows which a node runs.
Nothing may assume that the members are the voters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from typing import Any

from kv import meta_machine
from kv.barriers import ReadBarriers
from kv.errors import KvError, NotReady, UnknownOutcome
from kv.meta import Metadata
from raft_groups.syncobj_adapter import GroupSettings, RaftDriver, RaftGroup, RaftStatus
from raft_groups.syncobj_adapter.membership import live_members

log = logging.getLogger(__name__)

COMMAND_VERSION = 1
GID = "meta"
COMPACTED_LOG = 4  # a log this short holds no earlier membership change to replay


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
        self, settings: GroupSettings, driver: RaftDriver, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._loop = loop
        self._listeners: list[Callable[[Metadata], None]] = []
        self.machine = MetaStateMachine(self._from_driver_thread)
        self.group = RaftGroup(driver, settings, machine=self.machine)
        sync = _command(meta_machine.SYNC)
        self._barriers = ReadBarriers(lambda: self.group.propose(sync, loop), loop)

    @property
    def metadata(self) -> Metadata:
        return self.machine.metadata

    def status(self) -> RaftStatus:
        return self.group.status()

    def raft_view(self) -> tuple[str | None, tuple[str, ...]]:
        """(the leader this member knows, the configuration it has), as Raft addresses."""
        return self.status().leader, self.group.members()

    def summary(self) -> dict[str, Any]:
        """This member's view of the group, for `GET /v1/cluster`."""
        raft = self.status()
        return {"leader": raft.leader, "term": raft.term, "commit_index": raft.commit_index}

    async def in_contact(self) -> bool:
        """Whether this member hears from a leader: it leads, or the leader it names is
        connected. pysyncobj resets the leader only when it campaigns, and a member that
        is connected to nobody (removed: its peers dropped their connections) never does."""
        view = await self.group.changes.view()
        return view.is_leader or (view.leader is not None and view.leader in view.connected)

    async def live(self, max_lag: int = 1000) -> frozenset[str]:
        """On the leader: itself and the connected members within `max_lag` entries of its
        commit index (the same test the membership checks use)."""
        return live_members(await self.group.changes.view(), max_lag)

    async def compact(self, timeout: float) -> bool:
        """Snapshot and truncate the log (a member added next is sent the snapshot, whose
        configuration is the current one, instead of replaying every earlier membership
        change from its first peers: docs/membership.md, "Meta group voters")."""
        before = self.group.log_size()
        if before <= COMPACTED_LOG:
            return True
        self.group.force_compaction()
        end = self._loop.time() + timeout
        while self.group.log_size() >= before:  # entries appended meanwhile stay
            if self._loop.time() > end:
                return False
            await asyncio.sleep(0.02)
        return True

    def subscribe(self, listener: Callable[[Metadata], None]) -> None:
        self._listeners.append(listener)

    def _from_driver_thread(self, md: Metadata) -> None:
        self._loop.call_soon_threadsafe(self._publish, md)

    def _publish(self, md: Metadata) -> None:
        for listener in self._listeners:
            listener(md)

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Propose one change; returns the outcome once it is applied on this node."""
        fut = self.group.propose(_command(change), self._loop)
        try:
            outcome: dict[str, Any] = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise UnknownOutcome(
                f"metadata change not applied within {timeout:.1f}s; it may still be applied"
            ) from None
        return outcome

    async def sync(self, timeout: float) -> None:
        """Return once this member's metadata holds every change committed before the call
        (a coalesced `sync` barrier, kv/barriers.py); NotReady if none commits in time."""
        await self._barriers.passed(timeout, "cluster metadata (no meta-group quorum?)")

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


def _command(change: dict[str, Any]) -> bytes:
    return json.dumps({"v": COMMAND_VERSION, "change": change}).encode()


class MetaGroups:
    """Opens and closes this node's meta group on its Raft driver (kv/meta_role.py `Groups`):
    creation and destruction run on the driver thread, as raft_groups/manager.py does."""

    def __init__(
        self,
        driver: RaftDriver,
        loop: asyncio.AbstractEventLoop,
        self_address: str,
        data_dir: str,
    ) -> None:
        self._driver = driver
        self._loop = loop
        self._self_address = self_address
        self._data_dir = data_dir

    async def open(self, peers: tuple[str, ...], joining: bool) -> MetaGroup:
        settings = GroupSettings(
            gid=GID,
            self_address=self._self_address,
            peers=peers,
            data_dir=self._data_dir,
            joining=joining,
        )
        make = lambda: MetaGroup(settings, self._driver, self._loop)  # noqa: E731
        return await asyncio.to_thread(self._driver.call, make)

    async def close(self, group: MetaGroup, delete_data: bool) -> None:
        await asyncio.to_thread(self._driver.call, lambda: group.group.close(delete_data))

    def wipe(self) -> None:
        """The meta group's part of the node's log (durably dropped), then its directory."""
        log = self._driver.log
        if log is not None:
            self._driver.call(lambda: log.drop(GID))
        shutil.rmtree(self._data_dir, ignore_errors=True)

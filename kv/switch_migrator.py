"""Drives switches (docs/mode_switch.md) on this node. To linearizable: for each partition
of a switching keyspace whose target Raft group this node leads the preference list of,
read every member's versions (they answer only once they hold the switch, and take no
eventual write of it from then on: the fence), resolve each key by the policy, propose
the `migrate` commands, report the partition; when every partition is done, finish. To
eventual, and a cancelled switch to linearizable on its way back: the group's state goes
to the eventual replicas (`Copy`, `Unwind`), partition by partition.

The mode-specific steps are injected (kv/node_switch.py wires them), so this module holds
only the order of things. Every step is idempotent — a partition migrated twice changes
nothing the second time (the state machine's mark), reports are deduplicated by the meta
group — so a node that restarts mid-switch simply runs the round again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kv import routing
from kv import switch as switches
from kv.batching import chunks
from kv.errors import KvError
from kv.meta import Metadata
from kv.periodic import Periodic
from kv.switch import Switch

log = logging.getLogger(__name__)

# (member, partition, uid, since, after, limit) -> ([(key, versions)], done)
Scan = Callable[[str, int, int, int, str | None, int], Awaitable[tuple[list[Any], bool]]]
# (key's versions from every member, policy) -> (present, value, expires_at: ms or None, a
# key's time to live kept across the switch, docs/ttl.md); ValueError: a conflict
Resolve = Callable[[Sequence[Any], str], tuple[bool, Any, int | None]]
# a migrated key: (key, value), or (key, value, expires_at) when it expires
Item = tuple[str, Any] | tuple[str, Any, int]
# (metadata, switch, partition, items, mark) -> None: one `migrate` command, committed
Migrate = Callable[[Metadata, Switch, int, list[Item], bool], Awaitable[None]]
Change = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# (metadata, switch, partition) -> keys copied: a switch to eventual's partition — freeze
# the source group, copy its final state to the eventual replicas, purge it
Copy = Callable[[Metadata, Switch, int], Awaitable[int]]
# (metadata, switch, partition) -> keys written back: a cancelled switch to linearizable's
# partition — freeze its Raft group, write its state back over the eventual copies, purge
Unwind = Callable[[Metadata, Switch, int], Awaitable[int]]

SCAN_LIMIT = 1000
ITEMS_PER_COMMAND = 200  # values up to 1 MiB each: a few of them fill an entry already
BYTES_PER_COMMAND = 4 << 20


async def scan_members(
    scan: Scan, md: Metadata, switch: Switch, partition: int
) -> dict[str, list[Any]]:
    """Every member's versions of the switching keyspace in `partition` (replicas and
    hints: more than R = N), merged per key — what a migration reads, and what a
    cancelled switch's write-back reads again."""
    versions: dict[str, list[Any]] = {}
    for member in md.members:
        after: str | None = None
        while True:
            batch, done = await scan(
                member.id, partition, switch.uid, switch.since, after, SCAN_LIMIT
            )
            for key, vs in batch:
                versions.setdefault(key, []).extend(vs)
            if done or not batch:
                break
            after = batch[-1][0]
    return versions


@dataclass
class Progress:
    keys: int = 0  # keys migrated so far by this node
    conflicts: list[str] = field(default_factory=list)  # keys the policy could not resolve
    error: str = ""


class SwitchMigrator(Periodic):
    def __init__(
        self,
        node_id: str,
        metadata: Callable[[], Metadata],
        scan: Scan,
        resolve: Resolve,
        migrate: Migrate,
        change: Change,
        copy: Copy | None = None,
        unwind: Unwind | None = None,
        interval: float = 0.5,
        per_round: int = 0,
    ) -> None:
        super().__init__("switch migrator", interval, self.round_once)
        self.node_id = node_id
        self.metadata = metadata
        self._scan, self._resolve, self._migrate, self._change = scan, resolve, migrate, change
        self._copy, self._unwind = copy, unwind
        self._per_round = per_round  # partitions per round and switch (0: all)
        self.progress: dict[str, Progress] = {}  # by keyspace

    async def round_once(self) -> int:
        """Migrate what this node should of every switch to linearizable; finish those
        complete. Returns how many partitions it migrated."""
        md, migrated = self.metadata(), 0
        for switch in md.switches:
            to_eventual = switch.target.consistency == "eventual"
            mine = self._mine(md, switch)
            for partition in mine[: self._per_round or len(mine)]:
                if switches.unwinds(switch):
                    migrated += await self._copied(md, switch, partition, self._unwind)
                elif to_eventual:
                    migrated += await self._copied(md, switch, partition, self._copy)
                else:
                    migrated += await self._partition(md, switch, partition)
            if len(switch.done) == md.partitions:
                await self._change(_naming(switch, "finish_switch"))
        return migrated

    def _mine(self, md: Metadata, switch: Switch) -> list[int]:
        """The partitions this node drives: those whose Raft group (the target's, or to
        eventual the source's) lists it first — or at all, on a cancel's way back."""
        source = md.keyspace(switch.keyspace)
        to_eventual = switch.target.consistency == "eventual"
        n = source.replication if to_eventual and source else switch.target.replication
        # the way back of a cancel is driven by every member of the group (each step is
        # idempotent), so a member down — the reason to cancel, often — does not stall it
        drivers = n if switches.unwinds(switch) else 1
        return [
            p
            for p in range(md.partitions)
            if p not in switch.done
            and self.node_id in routing.replicas(md, "linearizable", p, n)[:drivers]
        ]

    async def _partition(self, md: Metadata, switch: Switch, partition: int) -> int:
        prog = self.progress.setdefault(switch.keyspace, Progress())
        try:
            items, conflicts = await self._read(md, switch, partition)
            if conflicts:
                prog.conflicts = sorted({*prog.conflicts, *conflicts})[:100]
                prog.error = f"{len(conflicts)} keys of partition {partition} in conflict"
                log.error("switch of %s: %s", switch.keyspace, prog.error)
                return 0
            for chunk in _chunks(items):
                await self._migrate(md, switch, partition, chunk, False)
            await self._migrate(md, switch, partition, [], True)
            await self._report(switch, partition, len(items))
        except KvError as exc:  # a member not caught up, no leader yet: the next round
            prog.error = f"partition {partition}: {exc.message}"
            log.info("switch of %s: %s", switch.keyspace, prog.error)
            return 0
        prog.keys += len(items)
        return 1

    async def _copied(self, md: Metadata, switch: Switch, partition: int, copy: Copy | None) -> int:
        """A partition whose Raft group's state goes to the eventual replicas: a switch to
        eventual's, or a cancelled switch to linearizable's way back."""
        if copy is None:
            return 0
        prog = self.progress.setdefault(switch.keyspace, Progress())
        try:
            keys = await copy(md, switch, partition)
            prog.keys += keys
            await self._report(switch, partition, keys)
        except KvError as exc:
            prog.error = f"partition {partition}: {exc.message}"
            log.info("switch of %s: %s", switch.keyspace, prog.error)
            return 0
        return 1

    async def _report(self, switch: Switch, partition: int, keys: int) -> None:
        """The partition is done (its keys counted in the switch's progress); the
        direction is named, so a forward report arriving after a cancel is ignored."""
        change = {**_naming(switch, "switch_partition_done"), "partition": partition}
        await self._change({**change, "cancelling": switch.cancelling, "keys": keys})

    async def _read(
        self, md: Metadata, switch: Switch, partition: int
    ) -> tuple[list[Item], list[str]]:
        """Every member's versions (replicas and hints: more than R = N), merged per key
        and resolved; the keys the policy cannot resolve."""
        versions = await scan_members(self._scan, md, switch, partition)
        items: list[Item] = []
        conflicts: list[str] = []
        for key in sorted(versions):
            try:
                present, value, expires = self._resolve(versions[key], switch.policy)
            except ValueError:
                conflicts.append(key)
                continue
            if present:
                items.append((key, value) if expires is None else (key, value, expires))
        return items, conflicts


def _naming(switch: Switch, kind: str) -> dict[str, Any]:
    return {"type": kind, "keyspace": switch.keyspace, "uid": switch.uid}


def _chunks(items: list[Item]) -> list[list[Item]]:
    """Items in commands of at most ITEMS_PER_COMMAND items and about BYTES_PER_COMMAND."""
    return chunks(items, ITEMS_PER_COMMAND, BYTES_PER_COMMAND, _weight)


def _weight(item: Item) -> int:
    return len(item[0]) + len(repr(item[1]))

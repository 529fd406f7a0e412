"""The composition of a consistency switch (docs/mode_switch.md): the eventual side's fence
and scan and the Raft side's `migrate`, wired into kv/switch_migrator.py. Part of the
composition root (with kv/node.py): the one place besides it that sees both modes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from dynamo_mode import siblings, switch_policy
from dynamo_mode.frontend import placement
from dynamo_mode.messages import STORE, StoreRequest
from dynamo_mode.scan_messages import PART_SCAN, SWITCH_SCAN, ScanRequest, SwitchScanRequest
from kv import routing
from kv import switch as switches
from kv.errors import KvError, Retryable
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.service import Conflicts
from kv.switch import Switch
from kv.switch_migrator import Item, SwitchMigrator, scan_members
from raft_groups import state_machine
from raft_groups.commands import Command
from raft_groups.placement import GroupSpec

if TYPE_CHECKING:
    from kv.node import Node


def frozen(metadata: Callable[[], Metadata]) -> Callable[[int, int], bool]:
    """Whether this node's metadata fences the eventual copies of keyspace `uid`'s
    `partition`: it switches to linearizable, and — cancelling — is not back yet."""

    def check(uid: int, partition: int) -> bool:
        return any(
            s.uid == uid
            and s.target.consistency == "linearizable"
            and switches.serves_target(s, partition)
            for s in metadata().switches
        )

    return check


def migrator(node: Node, metadata: Callable[[], Metadata]) -> SwitchMigrator:
    cfg = node.config
    timeout = 5 * cfg.request_timeout_s

    async def scan(
        member: str, partition: int, uid: int, since: int, after: str | None, limit: int
    ) -> tuple[list[Any], bool]:
        request = SwitchScanRequest(ScanRequest(partition, uid, after, limit), since)
        batch = await node.transport.call(member, SWITCH_SCAN, request, timeout)
        return list(batch.items), batch.done

    def resolve(versions: Sequence[Any], policy: str) -> tuple[bool, Any, int | None]:
        # versions expired on this node's clock are left out; the rest keep their expiry
        return switch_policy.resolve_expiring(versions, policy, int(time.time() * 1000))

    async def migrate(
        md: Metadata, switch: Switch, partition: int, items: list[Item], mark: bool
    ) -> None:
        spec = GroupSpec.at(md, partition, switch.target.replication)
        command = Command(
            "migrate", switch.uid, "", items=tuple(items), mark=mark, since=switch.since
        )
        result = await node.groups.propose(spec, command, timeout)
        if not result.get("ok"):
            raise Retryable(f"migrate of partition {partition} refused: {result}")

    async def copy(md: Metadata, switch: Switch, partition: int) -> int:
        return await copy_to_eventual(node, md, switch, partition, timeout)

    async def read(md: Metadata, switch: Switch, partition: int) -> dict[str, list[Any]]:
        return await scan_members(scan, md, switch, partition)

    async def unwind(md: Metadata, switch: Switch, partition: int) -> int:
        return await write_back(node, md, switch, partition, read, timeout)

    return SwitchMigrator(cfg.node_id, metadata, scan, resolve, migrate, node.propose, copy, unwind)


async def copy_to_eventual(
    node: Node, md: Metadata, switch: Switch, partition: int, timeout: float
) -> int:
    """A switch to eventual's partition (docs/mode_switch.md): freeze the source group (its
    state is final once the freeze is applied here, which `propose` waits for), write each
    of its records to the eventual replicas where they hold nothing of the key — not even
    a tombstone: anything there is newer — then purge the group's copy. Returns the keys
    written. A record keeps its expiry (docs/ttl.md); an expired one is not copied."""
    source = md.keyspace(switch.keyspace)
    if source is None:
        return 0
    spec = GroupSpec.at(md, partition, source.replication)
    await _committed(node, spec, Command("freeze", switch.uid, "", since=switch.since), timeout)
    number, target, written = spec.number, switch.target, 0
    dot = (switch_actor(switch.since), 1)
    for key, record in state_machine.entries(node.groups.engine, number, switch.uid):
        where = placement(routing.KeyRequest(target, key, routing.place(md, target, key), timeout))
        seen = await node.coordinator.get(where, target.replication, timeout)
        if not seen.versions:
            copy = siblings.make_version(dot, {}, record.value, expires_at=record.expires_at)
            await _store_everywhere(node, where, copy, timeout)
            written += 1
    while not (await _committed(node, spec, Command("purge", switch.uid, ""), timeout))["done"]:
        pass
    return written


async def write_back(
    node: Node,
    md: Metadata,
    switch: Switch,
    partition: int,
    read: Callable[[Metadata, Switch, int], Awaitable[dict[str, list[Any]]]],
    timeout: float,
) -> int:
    """A cancelled switch to linearizable's way back for one partition (docs/mode_switch.md
    "Cancel"): freeze the target group at the switch's epoch — from then on no migrate of
    this switch and no client write applies there, so its state is final — and, if the
    partition had been migrated, write that state over the eventual copies: per key one
    version whose context holds every version any member had (`read` after the fence:
    nothing eventual was acknowledged since), so it supersedes them all wherever they are,
    replicas or hints. Its dot is fixed (`cancel_actor`), so writing it twice or from two
    nodes gives the same version. A partition never migrated needs no read (its eventual
    copies are what it serves), so a member down does not stop its way back. Then purge
    the group's copy. Returns the keys written."""
    spec = GroupSpec.at(md, partition, switch.target.replication)
    freeze = Command("freeze", switch.uid, "", since=switch.since)
    source = md.keyspace(switch.keyspace)
    written = 0
    if (await _committed(node, spec, freeze, timeout))["migrated"] and source is not None:
        versions = await read(md, switch, partition)
        state = dict(state_machine.entries(node.groups.engine, spec.number, switch.uid))
        dot = (cancel_actor(switch.since), 1)
        for key in sorted(state.keys() | versions.keys()):
            seen, found = versions.get(key, []), state.get(key)
            value, expires = (found.value, found.expires_at) if found else (None, None)
            version = switch_policy.written_back(seen, found is not None, value, dot, expires)
            if version is not None:
                where = placement(
                    routing.KeyRequest(source, key, routing.place(md, source, key), timeout)
                )
                await _store_everywhere(node, where, version, timeout, switch_copy=True)
                written += 1
    while not (await _committed(node, spec, Command("purge", switch.uid, ""), timeout))["done"]:
        pass
    return written


def cancel_actor(since: int) -> str:
    """The actor of the versions a cancelled switch (committed at `since`) writes back."""
    return f"cancel@{since}"


def switch_actor(since: int) -> str:
    """The actor of every version a switch to eventual copies (docs/mode_switch.md): each
    copied key gets the version (actor, 1) — the same wherever and however often it is
    copied, so copies merge into one, and a client that read the key through the frozen
    state got a context holding that dot, so its write supersedes the copy whenever the
    copy lands."""
    return f"switch@{since}"


async def _store_everywhere(
    node: Node, where: Any, version: Any, timeout: float, switch_copy: bool = False
) -> None:
    request = StoreRequest(where.ref, (version,), switch_copy=switch_copy)
    acks = 0
    for replica in where.replicas:
        try:
            await node.transport.call(replica, STORE, request, timeout)
            acks += 1
        except KvError:
            continue
    if acks < len(where.replicas):  # R = N readers of the copy must all find it
        raise Retryable(f"copy of {where.ref.key!r} reached {acks} of its replicas")


async def _committed(node: Node, spec: GroupSpec, command: Command, timeout: float) -> Any:
    result = await node.groups.propose(spec, command, timeout)
    if not result.get("ok"):
        raise Retryable(f"{command.op} in {spec.gid} refused: {result}")
    return result


def conflicts(node: Node) -> Conflicts:
    """The keys of an eventual keyspace that hold siblings once every replica's versions
    are merged (up to `limit` of them) and how many: what the `refuse` policy refuses a
    switch for before it starts (issue 12). Reads every partition from each replica."""

    async def scan(md: Metadata, ks: KeyspaceConfig, limit: int, timeout: float) -> Any:
        found: list[str] = []
        count = 0
        for partition in range(md.partitions):
            versions: dict[str, list[Any]] = {}
            for owner in routing.replicas(md, "eventual", partition, ks.replication):
                after: str | None = None
                while True:
                    request = ScanRequest(partition, ks.uid, after, 1000)
                    batch = await node.transport.call(owner, PART_SCAN, request, timeout)
                    for key, vs in batch.items:
                        versions.setdefault(key, []).extend(vs)
                    if batch.done or not batch.items:
                        break
                    after = batch.items[-1][0]
            for key in sorted(versions):
                if _conflict(versions[key]):
                    count += 1
                    found += [key] if len(found) < limit else []
        return found, count

    return scan


def _conflict(versions: Sequence[Any]) -> bool:
    """Whether the migrator would find the key in conflict under `refuse` (siblings left
    once versions expired on this node's clock are left out, docs/ttl.md)."""
    try:
        switch_policy.resolve_expiring(versions, "refuse", int(time.time() * 1000))
    except switch_policy.Conflict:
        return True
    return False


def migrated_context(node: Node) -> Callable[[Any, int], str]:
    """The context a read through the frozen state of a switch to eventual answers with:
    it holds the dot the key's copy gets (`switch_actor`), so a write with it supersedes
    the copy."""

    def context(req: Any, since: int) -> str:
        return node.eventual_keys.context_of(req, {switch_actor(since): 1})

    return context

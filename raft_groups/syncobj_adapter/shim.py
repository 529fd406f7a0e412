"""Every use of pysyncobj's internals, checked against the pinned version at import.

pysyncobj 0.3.17 keeps private what the adapter needs: the leader's nextIndex, its
append-entries deadline, its command queue, its journal. Each access to a private or
internal name (a name-mangled `_SyncObj__x`, a `_x` method, a module function outside
pysyncobj's public API, an attribute `TCPTransport` reads from its owner) is one named
function below; no other module of the package touches one.

`NEEDS` lists every such name, and importing this module checks them (`check`): the
installed version must be `PINNED_VERSION` (pyproject.toml pins pysyncobj==0.3.17), and
each name must still exist, or the import fails with `PysyncobjMismatch` (an ImportError)
naming the version found and every missing name. Probes:

- `members` are looked up on the class or module (`hasattr`);
- `instance_attributes` are created in `__init__`, so a class does not have them; the probe
  is that the class's own code reads or writes the name (the `co_names` of its functions,
  nested ones included), which is where a rename or a removal shows.
Upgrading pysyncobj means re-reading every function here against the new source.
"""

from __future__ import annotations

import importlib.metadata
import os
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pysyncobj import SyncObj
from pysyncobj import syncobj as pso_syncobj
from pysyncobj.fast_queue import FastQueue
from pysyncobj.journal import FileJournal
from pysyncobj.node import Node
from pysyncobj.transport import Transport

PINNED_VERSION = "0.3.17"
Meta = dict[str, Any]  # pysyncobj's journal meta: term, vote, commit index


class PysyncobjMismatch(ImportError):
    """The installed pysyncobj is not the one whose internals this shim was written for."""


@dataclass(frozen=True)
class Needs:
    """The internal names of one pysyncobj class or module that the shim relies on."""

    owner: Any  # a class or a module
    members: tuple[str, ...] = ()  # looked up on the owner itself
    instance_attributes: tuple[str, ...] = ()  # set in __init__: the owner's code must use them


NEEDS = (
    Needs(
        SyncObj,
        members=(
            "_SyncObj__sendAppendEntries",
            "_SyncObj__getCurrentLogIndex",
            "_isLeader",
            "_getLeader",
            "_getRaftLogSize",
            "_applyCommand",
            # membership changes (`MembershipGuard`, `propose_noop`, `postpone_election`)
            "_SyncObj__changeCluster",
            "_SyncObj__loadDumpFile",  # `adopt_logged_configuration`
            "_SyncObj__parseChangeClusterRequest",
            "_SyncObj__doChangeCluster",
            "addNodeToCluster",
            "removeNodeFromCluster",
            "transferLeadership",  # new in the 0.3.1x line: TimeoutNow
            "otherNodes",
        ),
        instance_attributes=(
            "_SyncObj__newAppendEntriesTime",
            "_SyncObj__raftNextIndex",
            "_SyncObj__raftMatchIndex",
            "_SyncObj__connectedNodes",
            "_SyncObj__commandsQueue",
            "_SyncObj__raftLog",
            "_SyncObj__changeClusterIDx",
            "_SyncObj__raftElectionDeadline",
            "_SyncObj__raftLastApplied",
            "_SyncObj__needLoadDumpFile",
            "_SyncObj__conf",
            "_poller",  # `drop_poller`
        ),
    ),
    Needs(pso_syncobj, members=("_COMMAND_TYPE", "monotonicTime")),
    Needs(getattr(pso_syncobj, "_COMMAND_TYPE", object), members=("NO_OP",)),
    # `SyncObj.__init__` calls the module's `createJournal` (replaced: `_create_journal`)
    Needs(pso_syncobj, members=("createJournal",)),
    # reading a journal of the format before the node's log (`read_file_journal`)
    Needs(FileJournal, instance_attributes=("_FileJournal__journal", "_FileJournal__meta")),
    Needs(FastQueue, instance_attributes=("_FastQueue__queue",)),
    Needs(Transport, members=("_onMessageReceived", "_onNodeConnected", "_onNodeDisconnected")),
)


def check(version: str, needs: Iterable[Needs]) -> None:
    """Raise `PysyncobjMismatch` unless `version` is the pinned one and nothing is missing."""
    if version != PINNED_VERSION:
        raise PysyncobjMismatch(
            f"pysyncobj {version} is installed; the adapter's shim is written for "
            f"pysyncobj=={PINNED_VERSION} (pinned in pyproject.toml)"
        )
    missing = [name for need in needs for name in _missing(need)]
    if missing:
        raise PysyncobjMismatch(
            f"pysyncobj {version} lacks internals the adapter's shim relies on: "
            + ", ".join(missing)
        )


def _missing(need: Needs) -> Iterator[str]:
    owner = getattr(need.owner, "__qualname__", None) or need.owner.__name__
    used = _code_names(need.owner) if need.instance_attributes else set()
    for name in need.members:
        if not hasattr(need.owner, name):
            yield f"{owner}.{name}"
    for name in need.instance_attributes:
        if name not in used:
            yield f"{owner}.{name} (instance attribute)"


def _code_names(cls: type) -> set[str]:
    """Every attribute and global name that the functions of `cls` (and its bases) use."""
    names: set[str] = set()
    for klass in cls.__mro__:
        for value in vars(klass).values():
            function = getattr(value, "fget", value)  # properties
            code = getattr(getattr(function, "__func__", function), "__code__", None)
            if isinstance(code, types.CodeType):
                names.update(_names_in(code))
    return names


def _names_in(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names_in(const)


check(importlib.metadata.version("pysyncobj"), NEEDS)


# ---------------------------------------------------------------------- a SyncObj's state
def is_leader(obj: Any) -> bool:
    return bool(obj._isLeader())


def leader_address(obj: Any) -> str | None:
    """The last leader this member heard of (may be stale), as its `host:port` id."""
    leader = obj._getLeader()
    return str(leader.id) if leader is not None else None


def log_size(obj: Any) -> int:
    return int(obj._getRaftLogSize())


def last_log_index(obj: Any) -> int:
    return int(obj._SyncObj__getCurrentLogIndex())


def next_append_entries_time(obj: Any) -> float:
    """When batch mode next sends append entries; each send moves it forward."""
    return float(obj._SyncObj__newAppendEntriesTime)


def send_append_entries(obj: Any) -> None:
    """Send the leader's append entries (new entries, commit index) to every follower now."""
    obj._SyncObj__sendAppendEntries()


def connected_nodes(obj: Any) -> set[Any]:
    """The live set of peers this member is connected to (iterate on the driver thread)."""
    nodes: set[Any] = obj._SyncObj__connectedNodes
    return nodes


def next_index(obj: Any, node: Any) -> int | None:
    """The leader's nextIndex for `node` (Raft fig. 2), None if it keeps none."""
    index: int | None = obj._SyncObj__raftNextIndex.get(node)
    return index


def set_next_index(obj: Any, node: Any, index: int) -> None:
    obj._SyncObj__raftNextIndex[node] = index


def queued_commands(obj: Any) -> int:
    """Commands proposed here (or forwarded to this leader) that no tick has taken yet."""
    return len(obj._SyncObj__commandsQueue._FastQueue__queue)


class _NoPoller:
    """A poller with no descriptors, that never waits (`drop_poller`)."""

    def subscribe(self, descr: Any, callback: Any, event_mask: int) -> None:
        raise RuntimeError("no pysyncobj transport may subscribe: the mux owns the Raft port")

    def unsubscribe(self, descr: Any) -> None:
        pass

    def poll(self, timeout: float) -> None:
        pass


def drop_poller(obj: Any) -> None:
    """pysyncobj's poller serves its own TCP transport (and the pipe notifier of its
    non-batch mode); a group runs on the mux (mux.py) in batch mode, so nothing subscribes
    to it, and the `poll(0)` that ends every tick (`_onTick`) is a system call watching no
    descriptor. Replaced by one that does nothing (and refuses a subscription loudly)."""
    obj._poller = _NoPoller()


def _create_journal(journal_file: Any) -> Any:
    """pysyncobj's `createJournal` (its only caller is `SyncObj.__init__`), taking a
    journal object of ours as it is: every group's journal is part of the node's log
    (node_log.py) rather than a file pysyncobj writes by itself."""
    if isinstance(journal_file, (str, type(None))):
        return _pysyncobj_create_journal(journal_file)
    return journal_file


_pysyncobj_create_journal = pso_syncobj.createJournal
pso_syncobj.createJournal = _create_journal


def read_file_journal(path: str) -> tuple[list[tuple[bytes, int, int]], Meta]:
    """The entries and the meta (term, vote, commit index) of a journal file pysyncobj
    wrote itself (the format before the node's log: imported once, durable.py)."""
    journal = FileJournal(path)
    try:
        entries = [(bytes(c), int(i), int(t)) for c, i, t in journal._FileJournal__journal]
        return entries, dict(journal._FileJournal__meta)
    finally:
        journal._destroy()


# ---------------------------------------------------------------------- membership
def match_index(obj: Any, address: str) -> int | None:
    """The leader's matchIndex for the member at `address` (Raft fig. 2), None if it keeps
    none (not the leader, or not a member in its configuration)."""
    index: int | None = obj._SyncObj__raftMatchIndex.get(Node(address))
    return index


def propose_noop(obj: Any, callback: Callable[[Any, int], None]) -> None:
    """Queue a pysyncobj no-op entry (what a new leader appends); `callback(None, reason)`
    runs on the driver thread when it is applied here or fails. Thread-safe (a queue put).
    The state machine never sees it; its index is a gap in the machine's applied indexes."""
    obj._applyCommand(b"", callback, pso_syncobj._COMMAND_TYPE.NO_OP)


def postpone_election(obj: Any, seconds: float) -> None:
    """Move this member's election deadline `seconds` from now (driver thread). pysyncobj's
    clock is CLOCK_MONOTONIC_RAW, not `time.monotonic` (measured 0.25 s apart here)."""
    obj._SyncObj__raftElectionDeadline = pso_syncobj.monotonicTime() + seconds


def adopt_logged_configuration(obj: Any) -> int:
    """Make a member that just loaded its journal use its log's latest configuration,
    committed or not (Raft thesis §4.1; docs/raft.md "Membership changes"): load the
    snapshot now (as the first tick would), replay the membership entries after the last
    applied one (as on append); how many changed the peers. Once, before any delivery."""
    conf, log = obj._SyncObj__conf, obj._SyncObj__raftLog
    if obj._SyncObj__needLoadDumpFile:
        if conf.fullDumpFile is not None and os.path.isfile(conf.fullDumpFile):
            obj._SyncObj__loadDumpFile(clearJournal=False)
        obj._SyncObj__needLoadDumpFile = False
    applied = int(obj._SyncObj__raftLastApplied)
    requests = [obj._SyncObj__parseChangeClusterRequest(e[0]) for e in log if e[1] > applied]
    return sum(bool(obj._SyncObj__doChangeCluster(r)) for r in requests if r is not None)


class MembershipGuard:
    """Makes pysyncobj's "one membership change at a time" guard work (DESIGN.md §3).

    On the leader, `_checkCommandsToApply` asks `__changeCluster(request)` before it appends
    a membership entry; that refuses (REQUEST_DENIED) until the leader's own no-op is
    applied, and while `__changeClusterIDx` (an uncommitted change's index) is set — but
    nothing ever sets it. This override sets it to the index the accepted entry is about
    to get (`_checkCommandsToApply` appends at last index + 1 right after), so a second
    change, proposed on any member, is denied until the first is applied on the leader.
    Mixed into the SyncObj subclass; `__changeCluster` is name-mangled, hence the name."""

    def _SyncObj__changeCluster(self, request: Any) -> bool:  # noqa: N802 - pysyncobj's name
        accepted = bool(SyncObj._SyncObj__changeCluster(self, request))
        if accepted:
            self._SyncObj__changeClusterIDx = last_log_index(self) + 1
        return accepted


# ---------------------------------------------------------------------- transports
def deliver(transport: Any, node: Any, message: Any) -> None:
    """Hand a received message to the SyncObj that owns `transport` (a Transport subclass)."""
    Transport._onMessageReceived(transport, node, message)


def node_connected(transport: Any, node: Any) -> None:
    Transport._onNodeConnected(transport, node)


def node_disconnected(transport: Any, node: Any) -> None:
    Transport._onNodeDisconnected(transport, node)

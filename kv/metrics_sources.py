"""What a node's metrics collector reads (kv/metrics.py `NodeCollector`): narrow read-only
views of the subsystems that kv/node.py wires, so that kv core names no mode package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from kv.meta import Metadata


class RaftState(Protocol):
    @property
    def is_leader(self) -> bool: ...
    @property
    def term(self) -> int: ...
    @property
    def commit_index(self) -> int: ...
    @property
    def last_applied(self) -> int: ...


class RaftCounters(Protocol):
    @property
    def leader_changes(self) -> int: ...
    @property
    def proposals_pending(self) -> int: ...
    @property
    def journal_bytes(self) -> int: ...
    @property
    def snapshots(self) -> int: ...
    @property
    def snapshot_seconds(self) -> float: ...


class RaftGroupsSource(Protocol):
    def stats(self) -> Mapping[str, tuple[RaftState, RaftCounters]]: ...


class RaftGroupSource(Protocol):
    def status(self) -> RaftState: ...
    def stats(self) -> RaftCounters: ...


class MetaGroupSource(Protocol):
    @property
    def group(self) -> RaftGroupSource: ...


class MetaSource(Protocol):
    @property
    def group(self) -> MetaGroupSource | None: ...
    @property
    def metadata(self) -> Metadata: ...


class CoordinatorSource(Protocol):
    @property
    def read_repairs(self) -> int: ...
    @property
    def siblings_seen(self) -> Mapping[int, int]: ...


class HandoffSource(Protocol):
    def pending(self) -> Mapping[str, int]: ...
    @property
    def delivered_to(self) -> Mapping[str, int]: ...


class AntiEntropyTotals(Protocol):
    @property
    def exchanges(self) -> int: ...
    @property
    def hashes(self) -> int: ...
    @property
    def keys_differing(self) -> int: ...
    @property
    def keys_repaired(self) -> int: ...


class AntiEntropySource(Protocol):
    @property
    def totals(self) -> AntiEntropyTotals: ...


class ReaperSource(Protocol):
    @property
    def purged(self) -> int: ...


class TransferProgress(Protocol):
    @property
    def state(self) -> str: ...


class TransfersSource(Protocol):
    @property
    def progress(self) -> Mapping[Any, TransferProgress]: ...
    @property
    def bytes_moved(self) -> int: ...


class RaftMovesSource(Protocol):
    def status(self) -> Mapping[str, Any]: ...


class StoredSize(Protocol):
    @property
    def keys(self) -> int: ...
    @property
    def bytes(self) -> int: ...


class SizesSource(Protocol):
    def by_uid(self, partitions: int) -> Mapping[int, StoredSize]: ...


class NodeSources(Protocol):
    """What `NodeCollector` reads of a node (kv/node.py `Node`, once started)."""

    @property
    def groups(self) -> RaftGroupsSource: ...
    @property
    def meta(self) -> MetaSource: ...
    @property
    def coordinator(self) -> CoordinatorSource: ...
    @property
    def handoff(self) -> HandoffSource: ...
    @property
    def anti_entropy(self) -> AntiEntropySource: ...
    @property
    def reaper(self) -> ReaperSource: ...
    @property
    def transfers(self) -> TransfersSource: ...
    @property
    def raft_moves(self) -> RaftMovesSource: ...
    @property
    def sizes(self) -> SizesSource: ...

"""What a group reports about itself: its Raft state (`RaftStatus`, `/v1/cluster`) and its
counters (`GroupStats`, `/metrics`, docs/metrics.md). Both are read off the driver thread,
one attribute at a time (each read atomic under the GIL), so a report may mix two cycles.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RaftStatus:
    leader: str | None
    is_leader: bool
    term: int
    commit_index: int
    last_applied: int
    ready: bool
    fenced: str | None = None  # why this member stopped (RaftDriver._fence), if it did


@dataclass(frozen=True)
class GroupStats:
    leader_changes: int  # leaders seen taking over (etcd's leader_changes_seen_total)
    proposals_pending: int  # proposed here, not yet answered
    journal_bytes: int  # written part of the journal file (truncated by a snapshot)
    snapshots: int  # snapshots written whole since start
    snapshot_seconds: float  # their total write time


class LeaderChanges:
    """Counts the leaders a member sees take over, looked at once per tick (the idle round
    ticks every group every 100 ms, docs/raft.md). The first leader seen counts."""

    def __init__(self) -> None:
        self.count = 0
        self._last: str | None = None

    def see(self, leader: str | None) -> None:
        if leader is not None and leader != self._last:
            self.count, self._last = self.count + 1, leader

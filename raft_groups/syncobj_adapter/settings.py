"""Our own frozen, validated Raft configuration (STYLE.md rule 6).

pysyncobj ignores misspelled `SyncObjConf` keys and validates with bare asserts, so the
rest of the code configures Raft only through these two classes; `mux.py` and `group.py`
turn them into `SyncObjConf`. No pysyncobj import here.
"""

from __future__ import annotations

from dataclasses import dataclass

from kv.tls import TlsFiles


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"raft.{field}: {message}")


def _check_address(field: str, value: str) -> None:
    host, _, port = value.rpartition(":")
    _require(bool(host) and port.isdigit(), field, f"must be host:port, got {value!r}")


def _check_peers(peers: tuple[str, ...]) -> None:
    for i, peer in enumerate(peers):
        _check_address(f"peers[{i}]", peer)


@dataclass(frozen=True)
class RaftNodeSettings:
    """The node's one Raft port (`RaftMux`), shared by every group of the node."""

    self_address: str  # advertised "host:port": this node's Raft id in every group
    bind_address: str
    secret: str
    peers: tuple[str, ...] = ()  # other nodes' advertised Raft addresses
    tls: TlsFiles | None = None  # mutual TLS between Raft ports (kv/tls.py)

    def __post_init__(self) -> None:
        _require(len(self.secret) >= 16, "secret", "must be set: it keys the Raft port's handshake")
        _check_address("self_address", self.self_address)
        _check_address("bind_address", self.bind_address)
        _check_peers(self.peers)


@dataclass(frozen=True)
class GroupSettings:
    """One Raft group on this node (`RaftGroup`)."""

    gid: str  # unique per node; the same on every member of the group
    self_address: str
    peers: tuple[str, ...]  # the other members' Raft addresses (exactly as they advertise)
    data_dir: str  # the snapshot file (the journal is in the node's log: node_log.py)
    # Batch mode sends on the first tick after this period (DESIGN.md §3: immediate mode
    # costs ~4x CPU and regresses nextIndex under pipelining, so we stay in batch mode and
    # tick groups with traffic often instead).
    append_entries_period: float = 0.002
    election_timeout_min: float = 0.6
    election_timeout_max: float = 1.5
    # pysyncobj's default 5000 dumps the whole state every 5000 writes (DESIGN.md §3).
    log_compaction_min_entries: int = 200_000
    log_compaction_min_time: float = 3600.0
    # ... or once the retained entries take this many bytes: they are held in memory, and
    # the node's log keeps a segment while a group needs an entry in it.
    log_compaction_max_bytes: int = 1 << 30
    # A member being added (docs/raft.md "Membership changes"): started with the current
    # members as `peers`, it does not campaign until a leader has contacted it, so its term
    # cannot run ahead of the group's while it waits for the add to be appended.
    joining: bool = False

    def __post_init__(self) -> None:
        _require(bool(self.gid) and "/" not in self.gid, "gid", f"invalid group id {self.gid!r}")
        _check_address("self_address", self.self_address)
        _check_peers(self.peers)
        _require(self.self_address not in self.peers, "peers", "must not contain self_address")
        self._check_timing()

    def _check_timing(self) -> None:
        _require(self.append_entries_period > 0, "append_entries_period", "must be > 0")
        _require(
            self.election_timeout_min > 3 * self.append_entries_period,
            "election_timeout_min",
            "must exceed 3 × append_entries_period",
        )
        _require(
            self.election_timeout_max > self.election_timeout_min,
            "election_timeout_max",
            "must exceed election_timeout_min",
        )
        _require(self.log_compaction_min_entries >= 2, "log_compaction_min_entries", "must be ≥ 2")
        _require(
            1 << 16 <= self.log_compaction_max_bytes <= 3 << 30,
            "log_compaction_max_bytes",
            "must be between 64 KiB and 3 GiB",
        )

"""Node configuration: a frozen dataclass built from a TOML file and/or flags, validated once.

Unknown keys are errors; every message names the field and the value (STYLE.md rule 6).
Binding and advertising are separate settings so nodes can live on different hosts: peers
reach a node at its *advertised* addresses, which must never be 0.0.0.0.

Example `node.toml`:

    node_id = "n1"
    data_dir = "/var/lib/kv/n1"
    listen = "0.0.0.0:7001"          # HTTP bind (client API and the internode upgrade)
    advertise = "10.0.0.1:7001"      # what other nodes and clients dial
    raft_listen = "0.0.0.0:7101"     # meta Raft group bind
    raft_advertise = "10.0.0.1:7101" # the meta group's node id: must match peers' lists exactly
    cluster_secret_file = "/etc/kv/secret"
    partitions = 64                   # Q, fixed at cluster creation (power of two)
    vnodes = 64

    [[initial_cluster]]
    id = "n1"
    http = "10.0.0.1:7001"
    raft = "10.0.0.1:7101"

A node either founds the cluster (`initial_cluster`: the founding members, at most 5; they
are the meta group's voters) or joins a running one (`seeds`: HTTP addresses of live
members, e.g. `seeds = ["10.0.0.1:7001", "10.0.0.2:7001"]` or `--seeds a:7001,b:7001`).
Exactly one of the two is set. A joiner reads the cluster metadata from its seeds and stays
`joining` until a committed membership plan lists it (docs/membership.md); `partitions`
and `vnodes` are the founders' settings, so a joiner's are ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from kv.meta import Member
from kv.server_limits import ServerLimits
from kv.tls import TlsFiles

ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_META_VOTERS = 5
MAX_SEEDS = 16


class ConfigError(ValueError):
    pass


def fail(field: str, message: str) -> None:
    raise ConfigError(f"{field}: {message}")


def _check_address(field: str, value: str, *, advertised: bool) -> None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(field, f"must be host:port, got {value!r}")
    if advertised and host in WILDCARDS:
        fail(field, f"{value!r} is a wildcard; advertise an address peers can dial")


WILDCARDS = ("0.0.0.0", "::", "[::]")


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _same_socket(a: str, b: str) -> bool:
    """Whether two bind addresses would take the same port (a wildcard takes every host)."""
    (ha, _, pa), (hb, _, pb) = a.rpartition(":"), b.rpartition(":")
    return pa == pb and (ha == hb or ha in WILDCARDS or hb in WILDCARDS)


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    data_dir: str
    listen: str
    advertise: str
    raft_listen: str
    raft_advertise: str
    cluster_secret: str
    initial_cluster: tuple[Member, ...] = ()  # a founder: the founding members (meta voters)
    seeds: tuple[str, ...] = ()  # a joiner: HTTP addresses of live members
    partitions: int = 64
    vnodes: int = 64
    request_timeout_s: float = 2.0  # default per-request deadline (query `timeout_ms` overrides)
    internode_timeout_s: float = 1.5
    log_level: str = "INFO"
    # fdatasync the node's Raft log before any message vouches for it (an acknowledged
    # write is durable on a majority); false = survive a process crash only (docs/raft.md)
    raft_sync_journal: bool = True
    # client tokens (kv/auth.py): with auth, every API request but /v1/health needs one;
    # a founder with admin_token_file puts that token in the bootstrap metadata as admin
    auth: bool = False
    admin_token_file: str = ""
    # TLS (kv/tls.py, docs/security.md): this node's certificate and key and the cluster
    # CA that signed every node's — all three or none. With them the API port (and the
    # internode protocol on it) speaks TLS and the Raft port mutual TLS.
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    # a node that listens on an address other hosts can reach needs TLS and auth, unless
    # this says so in so many words
    insecure: bool = False
    # one Merkle exchange per interval, round robin over this node's partitions (Dynamo §4.7):
    # an in-sync exchange is one root-hash call, so a 64-partition sweep every 16 s is cheap
    anti_entropy_interval_s: float = 0.25
    # while this node coordinates more client writes a second than this, its exchanges are
    # at least anti_entropy_busy_interval_s apart (dynamo_mode/anti_entropy.py `Throttle`)
    anti_entropy_busy_writes_per_s: float = 100.0
    anti_entropy_busy_interval_s: float = 4.0
    # a tombstone is purged once it is this old AND every replica confirms it (DESIGN.md §4);
    # the grace lets in-flight hints and repairs land first (Cassandra: gc_grace_seconds)
    tombstone_grace_s: float = 3600.0
    tombstone_gc_interval_s: float = 10.0
    # after a membership plan moved a partition away, this node deletes its old copy once it
    # has seen itself outside the owners for this long (nodes on older metadata catch up)
    disowned_grace_s: float = 60.0
    # while a plan moves a partition here, this node pulls its keys in batches of
    # transfer_batch, at most transfer_keys_per_s keys a second (0: no limit) — a throttle
    # that keeps a handoff from crowding out client requests (Riak's handoff throttle)
    transfer_batch: int = 256
    transfer_keys_per_s: float = 0.0
    # at most this many linearizable groups this node leads are moved at once during a plan
    # (raft_groups/mover.py): a throttle like transfer_keys_per_s
    raft_moves_at_once: int = 8
    # a consistency switch (docs/mode_switch.md): at most this many partitions migrated (or
    # copied, or written back) by this node per round of its switch migrator, every 0.5 s
    # (0: no limit) — a throttle, like transfer_keys_per_s
    switch_partitions_per_round: int = 0
    # a node that is not a meta voter polls a member for newer metadata this often (an
    # unchanged epoch costs one small round trip); failures back off up to the maximum
    meta_poll_interval_s: float = 0.5
    meta_poll_max_backoff_s: float = 5.0
    # HTTP server limits (kv/http/limits.py, docs/security.md "Server limits"): a connection
    # over max_connections, or over max_connections_per_source from one address (0: no
    # limit), is closed when accepted; a request's head must arrive within header_timeout_s
    # of its first byte (of the accept, for a connection's first request), its body within
    # body_timeout_s of the head (else 408); an idle keep-alive connection is closed after
    # keepalive_timeout_s. Internode links (the upgrade) are exempt once upgraded.
    max_connections: int = 1024
    max_connections_per_source: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not ID_RE.fullmatch(self.node_id):
            fail("node_id", f"must match {ID_RE.pattern}, got {self.node_id!r}")
        if not self.data_dir:
            fail("data_dir", "is required")
        _check_address("listen", self.listen, advertised=False)
        _check_address("advertise", self.advertise, advertised=True)
        _check_address("raft_listen", self.raft_listen, advertised=False)
        _check_address("raft_advertise", self.raft_advertise, advertised=True)
        if _same_socket(self.listen, self.raft_listen):
            fail(
                "raft_listen",
                f"{self.raft_listen!r} takes the port of listen {self.listen!r}; the HTTP API "
                "and the Raft port need a port each",
            )
        if self.advertise == self.raft_advertise:
            fail("raft_advertise", f"{self.raft_advertise!r} is also the HTTP advertise address")
        if len(self.cluster_secret) < 16:
            fail("cluster_secret", "must be at least 16 characters (it guards the Raft port)")
        self._check_exposure()
        self._check_cluster()
        if (
            self.partitions < 1
            or self.partitions & (self.partitions - 1)
            or self.partitions > 65536
        ):
            fail("partitions", f"must be a power of two ≤ 65536, got {self.partitions}")
        if not 1 <= self.vnodes <= 4096:
            fail("vnodes", f"must be between 1 and 4096, got {self.vnodes}")
        for name in (
            "request_timeout_s",
            "internode_timeout_s",
            "meta_poll_interval_s",
            "anti_entropy_busy_interval_s",
            "header_timeout_s",
            "body_timeout_s",
            "keepalive_timeout_s",
        ):
            if getattr(self, name) <= 0:
                fail(name, f"must be positive, got {getattr(self, name)}")
        if self.max_connections < 1 or self.max_connections_per_source < 0:
            fail(
                "max_connections",
                "must be at least 1, and max_connections_per_source 0 "
                f"(no limit) or more; got {self.max_connections}, "
                f"{self.max_connections_per_source}",
            )
        if self.anti_entropy_busy_writes_per_s < 0:
            fail(
                "anti_entropy_busy_writes_per_s",
                f"must not be negative, got {self.anti_entropy_busy_writes_per_s}",
            )
        if self.transfer_batch < 1:
            fail("transfer_batch", f"must be at least 1, got {self.transfer_batch}")
        if self.switch_partitions_per_round < 0:
            fail(
                "switch_partitions_per_round",
                f"must be 0 (no limit) or more, got {self.switch_partitions_per_round}",
            )
        if self.raft_moves_at_once < 1:
            fail("raft_moves_at_once", f"must be at least 1, got {self.raft_moves_at_once}")
        if self.transfer_keys_per_s < 0:
            fail(
                "transfer_keys_per_s",
                f"must be 0 (no limit) or more, got {self.transfer_keys_per_s}",
            )
        if self.meta_poll_max_backoff_s < self.meta_poll_interval_s:
            fail(
                "meta_poll_max_backoff_s",
                f"must be at least meta_poll_interval_s ({self.meta_poll_interval_s}), "
                f"got {self.meta_poll_max_backoff_s}",
            )

    @property
    def tls(self) -> TlsFiles | None:
        if not self.tls_cert:
            return None
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_ca)

    def _check_exposure(self) -> None:
        """TLS files come as a set; a node other hosts can reach needs TLS and auth."""
        names = ("tls_cert", "tls_key", "tls_ca")
        missing = [name for name in names if not getattr(self, name)]
        if 0 < len(missing) < len(names):
            fail(missing[0], "tls_cert, tls_key and tls_ca are set together or not at all")
        if self.insecure or (self.tls is not None and self.auth):
            return
        for name in ("listen", "raft_listen"):
            address = getattr(self, name)
            if not _loopback(address):
                fail(
                    name,
                    f"{address!r} can be reached from other hosts: set tls_cert, tls_key, "
                    "tls_ca and auth = true (or insecure = true to run without them)",
                )

    def _check_cluster(self) -> None:
        """Exactly one of initial_cluster (found a cluster) and seeds (join one)."""
        if self.initial_cluster and self.seeds:
            fail(
                "seeds",
                "set either initial_cluster (founding a cluster) or seeds (joining one), not both",
            )
        if self.seeds:
            self._check_seeds()
            return
        if not self.initial_cluster:
            fail(
                "initial_cluster",
                "must list the founding members (including this node); "
                "a node joining a running cluster sets seeds instead",
            )
        self._check_founders()

    def _check_seeds(self) -> None:
        if len(self.seeds) > MAX_SEEDS:
            fail("seeds", f"at most {MAX_SEEDS} addresses, got {len(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds):
            fail("seeds", f"duplicate address in {list(self.seeds)}")
        for i, seed in enumerate(self.seeds):
            _check_address(f"seeds[{i}]", seed, advertised=True)
            if seed == self.advertise:
                fail(f"seeds[{i}]", f"{seed!r} is this node; seeds are live members to join")

    def _check_founders(self) -> None:
        ids = [m.id for m in self.initial_cluster]
        if len(set(ids)) != len(ids):
            fail("initial_cluster", f"duplicate member id in {ids}")
        if len(ids) > MAX_META_VOTERS:
            fail(
                "initial_cluster", f"at most {MAX_META_VOTERS} founding members (meta-group voters)"
            )
        me = next((m for m in self.initial_cluster if m.id == self.node_id), None)
        if me is None:
            fail("initial_cluster", f"does not list this node {self.node_id!r}")
        elif (me.http, me.raft) != (self.advertise, self.raft_advertise):
            fail(
                "initial_cluster",
                f"lists {self.node_id} at http={me.http} raft={me.raft}, but this node advertises "
                f"http={self.advertise} raft={self.raft_advertise} (Raft ids must match exactly)",
            )
        owners: dict[str, str] = {}  # address -> the first "member.kind" that named it
        for m in self.initial_cluster:
            if not ID_RE.fullmatch(m.id):
                fail("initial_cluster", f"member id {m.id!r} must match {ID_RE.pattern}")
            for kind, address in (("http", m.http), ("raft", m.raft)):
                _check_address(f"initial_cluster.{m.id}.{kind}", address, advertised=True)
                first = owners.setdefault(address, f"{m.id}.{kind}")
                if first != f"{m.id}.{kind}":
                    fail("initial_cluster", f"{address} is given to both {first} and {m.id}.{kind}")

    @property
    def founder(self) -> bool:
        """Whether this node founds the cluster (its founders are the meta group's first
        voters; kv/voters.py moves them with the membership afterwards)."""
        return bool(self.initial_cluster)

    @property
    def server_limits(self) -> ServerLimits:
        return ServerLimits(
            self.max_connections,
            self.max_connections_per_source,
            self.header_timeout_s,
            self.body_timeout_s,
            self.keepalive_timeout_s,
        )

    @property
    def meta_dir(self) -> str:
        return os.path.join(self.data_dir, "meta")

    @property
    def raft_dir(self) -> str:
        return os.path.join(self.data_dir, "raft")

    @property
    def raft_log_dir(self) -> str:
        return os.path.join(self.data_dir, "raft_log")  # node_log.py: every group's journal

    @property
    def db_dir(self) -> str:
        return os.path.join(self.data_dir, "db")

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

import os
import re
import tomllib
from dataclasses import dataclass, fields
from typing import Any

from kv.meta import Member
from kv.server_limits import ServerLimits

ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_META_VOTERS = 5
MAX_SEEDS = 16


class ConfigError(ValueError):
    pass


def _fail(field: str, message: str) -> None:
    raise ConfigError(f"{field}: {message}")


def _check_address(field: str, value: str, *, advertised: bool) -> None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        _fail(field, f"must be host:port, got {value!r}")
    if advertised and host in WILDCARDS:
        _fail(field, f"{value!r} is a wildcard; advertise an address peers can dial")


WILDCARDS = ("0.0.0.0", "::", "[::]")


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
    # msync Raft journals before acknowledging (durable on a majority); false = survive a
    # process crash only (DESIGN.md §3, docs/raft.md)
    raft_sync_journal: bool = True
    # client tokens (kv/auth.py): with auth, every API request but /v1/health needs one;
    # a founder with admin_token_file puts that token in the bootstrap metadata as admin
    auth: bool = False
    admin_token_file: str = ""
    # one Merkle exchange per interval, round robin over this node's partitions (Dynamo §4.7):
    # an in-sync exchange is one root-hash call, so a 64-partition sweep every 16 s is cheap
    anti_entropy_interval_s: float = 0.25
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
            _fail("node_id", f"must match {ID_RE.pattern}, got {self.node_id!r}")
        if not self.data_dir:
            _fail("data_dir", "is required")
        _check_address("listen", self.listen, advertised=False)
        _check_address("advertise", self.advertise, advertised=True)
        _check_address("raft_listen", self.raft_listen, advertised=False)
        _check_address("raft_advertise", self.raft_advertise, advertised=True)
        if _same_socket(self.listen, self.raft_listen):
            _fail(
                "raft_listen",
                f"{self.raft_listen!r} takes the port of listen {self.listen!r}; the HTTP API "
                "and the Raft port need a port each",
            )
        if self.advertise == self.raft_advertise:
            _fail("raft_advertise", f"{self.raft_advertise!r} is also the HTTP advertise address")
        if len(self.cluster_secret) < 16:
            _fail("cluster_secret", "must be at least 16 characters (it guards the Raft port)")
        self._check_cluster()
        if (
            self.partitions < 1
            or self.partitions & (self.partitions - 1)
            or self.partitions > 65536
        ):
            _fail("partitions", f"must be a power of two ≤ 65536, got {self.partitions}")
        if not 1 <= self.vnodes <= 4096:
            _fail("vnodes", f"must be between 1 and 4096, got {self.vnodes}")
        for name in (
            "request_timeout_s",
            "internode_timeout_s",
            "meta_poll_interval_s",
            "header_timeout_s",
            "body_timeout_s",
            "keepalive_timeout_s",
        ):
            if getattr(self, name) <= 0:
                _fail(name, f"must be positive, got {getattr(self, name)}")
        if self.max_connections < 1 or self.max_connections_per_source < 0:
            _fail(
                "max_connections",
                "must be at least 1, and max_connections_per_source 0 "
                f"(no limit) or more; got {self.max_connections}, "
                f"{self.max_connections_per_source}",
            )
        if self.transfer_batch < 1:
            _fail("transfer_batch", f"must be at least 1, got {self.transfer_batch}")
        if self.transfer_keys_per_s < 0:
            _fail(
                "transfer_keys_per_s",
                f"must be 0 (no limit) or more, got {self.transfer_keys_per_s}",
            )
        if self.meta_poll_max_backoff_s < self.meta_poll_interval_s:
            _fail(
                "meta_poll_max_backoff_s",
                f"must be at least meta_poll_interval_s ({self.meta_poll_interval_s}), "
                f"got {self.meta_poll_max_backoff_s}",
            )

    def _check_cluster(self) -> None:
        """Exactly one of initial_cluster (found a cluster) and seeds (join one)."""
        if self.initial_cluster and self.seeds:
            _fail(
                "seeds",
                "set either initial_cluster (founding a cluster) or seeds (joining one), not both",
            )
        if self.seeds:
            self._check_seeds()
            return
        if not self.initial_cluster:
            _fail(
                "initial_cluster",
                "must list the founding members (including this node); "
                "a node joining a running cluster sets seeds instead",
            )
        self._check_founders()

    def _check_seeds(self) -> None:
        if len(self.seeds) > MAX_SEEDS:
            _fail("seeds", f"at most {MAX_SEEDS} addresses, got {len(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds):
            _fail("seeds", f"duplicate address in {list(self.seeds)}")
        for i, seed in enumerate(self.seeds):
            _check_address(f"seeds[{i}]", seed, advertised=True)
            if seed == self.advertise:
                _fail(f"seeds[{i}]", f"{seed!r} is this node; seeds are live members to join")

    def _check_founders(self) -> None:
        ids = [m.id for m in self.initial_cluster]
        if len(set(ids)) != len(ids):
            _fail("initial_cluster", f"duplicate member id in {ids}")
        if len(ids) > MAX_META_VOTERS:
            _fail(
                "initial_cluster", f"at most {MAX_META_VOTERS} founding members (meta-group voters)"
            )
        me = next((m for m in self.initial_cluster if m.id == self.node_id), None)
        if me is None:
            _fail("initial_cluster", f"does not list this node {self.node_id!r}")
        elif (me.http, me.raft) != (self.advertise, self.raft_advertise):
            _fail(
                "initial_cluster",
                f"lists {self.node_id} at http={me.http} raft={me.raft}, but this node advertises "
                f"http={self.advertise} raft={self.raft_advertise} (Raft ids must match exactly)",
            )
        owners: dict[str, str] = {}  # address -> the first "member.kind" that named it
        for m in self.initial_cluster:
            if not ID_RE.fullmatch(m.id):
                _fail("initial_cluster", f"member id {m.id!r} must match {ID_RE.pattern}")
            for kind, address in (("http", m.http), ("raft", m.raft)):
                _check_address(f"initial_cluster.{m.id}.{kind}", address, advertised=True)
                first = owners.setdefault(address, f"{m.id}.{kind}")
                if first != f"{m.id}.{kind}":
                    _fail(
                        "initial_cluster", f"{address} is given to both {first} and {m.id}.{kind}"
                    )

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
    def db_dir(self) -> str:
        return os.path.join(self.data_dir, "db")


_KNOWN = {f.name for f in fields(NodeConfig)} | {"cluster_secret_file"}


def parse_initial_cluster(spec: str) -> tuple[Member, ...]:
    """`n1=HOST:HTTP_PORT/HOST:RAFT_PORT,n2=...` → members."""
    members = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        node_id, sep, addrs = item.partition("=")
        http, slash, raft = addrs.partition("/")
        if not sep or not slash:
            _fail("initial_cluster", f"entry {item!r} must be ID=HOST:PORT/HOST:RAFT_PORT")
        members.append(Member(id=node_id, http=http, raft=raft))
    return tuple(members)


def parse_seeds(spec: str) -> tuple[str, ...]:
    """`HOST:PORT,HOST:PORT` → addresses (checked by NodeConfig)."""
    return tuple(filter(None, (s.strip() for s in spec.split(","))))


def load(path: str | None, overrides: dict[str, Any]) -> NodeConfig:
    """Merge a TOML file (if any) with flag overrides (non-None values win)."""
    raw: dict[str, Any] = {}
    if path:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        _fail(unknown[0], f"unknown setting (known: {', '.join(sorted(_KNOWN))})")
    return _build(raw)


def read_secret_file(path: str, field: str = "cluster_secret_file") -> str:
    """The secret in `path`, which no one but its owner may read (issue 11 item 8: the
    secret derives every key of the cluster; an admin token opens every keyspace)."""
    with open(path) as f:
        mode = os.fstat(f.fileno()).st_mode & 0o777
        if mode & 0o077:
            _fail(field, f"{path} can be read by group or others (mode {mode:o}); chmod 600 {path}")
        return f.read().strip()


def _build(raw: dict[str, Any]) -> NodeConfig:
    raw = dict(raw)
    secret_file = raw.pop("cluster_secret_file", None)
    if "cluster_secret" not in raw:
        if secret_file:
            raw["cluster_secret"] = read_secret_file(secret_file)
        elif os.environ.get("KV_CLUSTER_SECRET"):
            raw["cluster_secret"] = os.environ["KV_CLUSTER_SECRET"]
        else:
            _fail(
                "cluster_secret",
                "set cluster_secret_file, --cluster-secret-file or KV_CLUSTER_SECRET",
            )
    cluster = raw.get("initial_cluster")
    if isinstance(cluster, str):
        raw["initial_cluster"] = parse_initial_cluster(cluster)
    elif isinstance(cluster, list):
        raw["initial_cluster"] = tuple(_member_table(i, m) for i, m in enumerate(cluster))
    raw["seeds"] = _seeds(raw.get("seeds", ()))
    raw.setdefault("advertise", raw.get("listen"))
    raw.setdefault("raft_advertise", raw.get("raft_listen"))
    for required in ("node_id", "data_dir", "listen", "raft_listen"):
        if required not in raw or raw[required] is None:
            _fail(required, "is required")
    _check_types(raw)
    try:
        return NodeConfig(**raw)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


_MEMBER_KEYS = {"id", "http", "raft"}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "str": str,
    "bool": bool,
}


def _seeds(raw: Any) -> tuple[str, ...]:
    """Seeds from a flag (`a:1,b:2`) or a TOML list of strings."""
    if isinstance(raw, str):
        return parse_seeds(raw)
    if not isinstance(raw, list | tuple):
        _fail("seeds", f"must be a list of host:port strings, got {raw!r}")
    for i, seed in enumerate(raw):
        if not isinstance(seed, str):
            _fail(f"seeds[{i}]", f"must be a host:port string, got {seed!r}")
    return tuple(raw)


def _member_table(i: int, table: Any) -> Member:
    field = f"initial_cluster[{i}]"
    if not isinstance(table, dict):
        _fail(field, "must be a table with id, http and raft")
    if set(table) != _MEMBER_KEYS:
        _fail(field, f"must have exactly the keys id, http, raft; got {sorted(table)}")
    for key in sorted(_MEMBER_KEYS):
        if not isinstance(table[key], str):
            _fail(f"{field}.{key}", f"must be a string, got {table[key]!r}")
    return Member(id=table["id"], http=table["http"], raft=table["raft"])


def _check_types(raw: dict[str, Any]) -> None:
    """Type errors name the field, instead of surfacing as AttributeError deep inside."""
    for f in fields(NodeConfig):
        if f.name not in raw or f.name in ("initial_cluster", "seeds"):
            continue
        value = raw[f.name]
        want: type | tuple[type, ...] | None = _TYPES.get(str(f.type))
        if want is None:
            continue
        if (isinstance(value, bool) and want is not bool) or not isinstance(value, want):
            _fail(f.name, f"must be of type {f.type}, got {value!r}")

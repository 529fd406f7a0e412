"""Reading a node's configuration: the TOML file, flags and environment merged into one
validated `NodeConfig` (kv/config.py, which documents every key), and the secret files."""

from __future__ import annotations

import os
import tomllib
from dataclasses import fields
from typing import Any

from kv.config import ConfigError, NodeConfig, fail
from kv.meta import Member

_KNOWN = {f.name for f in fields(NodeConfig)} | {"cluster_secret_file"}


def parse_initial_cluster(spec: str) -> tuple[Member, ...]:
    """`n1=HOST:HTTP_PORT/HOST:RAFT_PORT,n2=...` → members."""
    members = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        node_id, sep, addrs = item.partition("=")
        http, slash, raft = addrs.partition("/")
        if not sep or not slash:
            fail("initial_cluster", f"entry {item!r} must be ID=HOST:PORT/HOST:RAFT_PORT")
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
        fail(unknown[0], f"unknown setting (known: {', '.join(sorted(_KNOWN))})")
    return _build(raw)


def read_secret_file(path: str, field: str = "cluster_secret_file") -> str:
    """The secret in `path`, which no one but its owner may read (issue 11 item 8: the
    secret derives every key of the cluster; an admin token opens every keyspace)."""
    with open(path) as f:
        mode = os.fstat(f.fileno()).st_mode & 0o777
        if mode & 0o077:
            fail(field, f"{path} can be read by group or others (mode {mode:o}); chmod 600 {path}")
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
            fail(
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
            fail(required, "is required")
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
        fail("seeds", f"must be a list of host:port strings, got {raw!r}")
    for i, seed in enumerate(raw):
        if not isinstance(seed, str):
            fail(f"seeds[{i}]", f"must be a host:port string, got {seed!r}")
    return tuple(raw)


def _member_table(i: int, table: Any) -> Member:
    field = f"initial_cluster[{i}]"
    if not isinstance(table, dict):
        fail(field, "must be a table with id, http and raft")
    if set(table) != _MEMBER_KEYS:
        fail(field, f"must have exactly the keys id, http, raft; got {sorted(table)}")
    for key in sorted(_MEMBER_KEYS):
        if not isinstance(table[key], str):
            fail(f"{field}.{key}", f"must be a string, got {table[key]!r}")
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
            fail(f.name, f"must be of type {f.type}, got {value!r}")

"""Keyspace configuration: parsed and validated here, once, with messages naming the field.

A keyspace is a key prefix inside every partition (DESIGN.md §2); `uid` (the metadata epoch
at which it was created) is that prefix, so a keyspace deleted and created again under the
same name never sees the old incarnation's data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from kv.errors import InvalidRequest

Consistency = Literal["linearizable", "eventual"]

# An eventual keyspace's durability: a replica acknowledges a write once it is in LevelDB
# ("process": survives a crash of the process, not a power loss) or once it is on disk
# ("fsync": group commit, dynamo_mode/replica_server.py; an acknowledged write survives a
# power loss of W replicas).
PROCESS, FSYNC = "process", "fsync"
DURABILITIES = (PROCESS, FSYNC)

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MAX_REPLICATION = 7
# Riak's siblings_maximum default is 100; we refuse earlier because every GET returns all of
# them. A write that would exceed the cap is refused (409 sibling_limit), never truncated.
DEFAULT_MAX_SIBLINGS = 32

_FIELDS = {
    "consistency",
    "replication",
    "read_quorum",
    "write_quorum",
    "max_siblings",
    "durability",
}
# Changing these would require moving or re-encoding stored data: a 409, not an update.
_FIXED = ("consistency", "replication")


@dataclass(frozen=True)
class KeyspaceConfig:
    name: str
    consistency: Consistency
    replication: int
    read_quorum: int = 0  # eventual only
    write_quorum: int = 0  # eventual only
    max_siblings: int = DEFAULT_MAX_SIBLINGS  # eventual only
    durability: str = PROCESS  # eventual only: PROCESS or FSYNC
    uid: int = 0  # assigned by the metadata group when created

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "consistency": self.consistency,
            "replication": self.replication,
        }
        if self.consistency == "eventual":
            out.update(
                read_quorum=self.read_quorum,
                write_quorum=self.write_quorum,
                max_siblings=self.max_siblings,
                durability=self.durability,
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.to_wire(), "uid": self.uid}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> KeyspaceConfig:
        return KeyspaceConfig(
            name=d["name"],
            consistency=d["consistency"],
            replication=d["replication"],
            read_quorum=d.get("read_quorum", 0),
            write_quorum=d.get("write_quorum", 0),
            max_siblings=d.get("max_siblings", DEFAULT_MAX_SIBLINGS),
            durability=d.get("durability", PROCESS),
            uid=d.get("uid", 0),
        )

    def fixed_fields_differ(self, other: KeyspaceConfig) -> list[str]:
        return [f for f in _FIXED if getattr(self, f) != getattr(other, f)]

    def same_settings(self, other: KeyspaceConfig) -> bool:
        return replace(self, uid=0) == replace(other, uid=0)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidRequest(
            "keyspace", f"{name!r} must match {NAME_RE.pattern} (letters, digits, _ . -; ≤ 64)"
        )
    return name


def _int_field(body: dict[str, Any], field: str, default: int | None) -> int:
    value = body.get(field, default)
    if value is None:
        raise InvalidRequest(field, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, f"must be an integer, got {value!r}")
    return value


def parse_keyspace(name: str, body: Any, cluster_size: int) -> KeyspaceConfig:
    """Validate a `PUT /v1/keyspaces/{name}` body against a cluster of `cluster_size` nodes."""
    validate_name(name)
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field (allowed: {', '.join(sorted(_FIELDS))})")
    consistency = body.get("consistency")
    if consistency not in ("linearizable", "eventual"):
        raise InvalidRequest(
            "consistency", f"must be 'linearizable' or 'eventual', got {consistency!r}"
        )
    replication = _int_field(body, "replication", 3)
    limit = min(cluster_size, MAX_REPLICATION)
    if not 1 <= replication <= limit:
        raise InvalidRequest(
            "replication",
            f"must be between 1 and {limit} (cluster has {cluster_size} nodes), got {replication}",
        )
    if consistency == "linearizable":
        return _linearizable(name, body, replication)
    return _eventual(name, body, replication)


def _linearizable(name: str, body: dict[str, Any], replication: int) -> KeyspaceConfig:
    for field in ("read_quorum", "write_quorum", "max_siblings", "durability"):
        if field in body:
            raise InvalidRequest(field, "applies only to eventual keyspaces")
    return KeyspaceConfig(name=name, consistency="linearizable", replication=replication)


def _eventual(name: str, body: dict[str, Any], replication: int) -> KeyspaceConfig:
    majority = replication // 2 + 1
    r = _int_field(body, "read_quorum", majority)
    w = _int_field(body, "write_quorum", majority)
    for field, value in (("read_quorum", r), ("write_quorum", w)):
        if not 1 <= value <= replication:
            raise InvalidRequest(
                field, f"must be between 1 and replication ({replication}), got {value}"
            )
    cap = _int_field(body, "max_siblings", DEFAULT_MAX_SIBLINGS)
    if not 1 <= cap <= 1000:
        raise InvalidRequest("max_siblings", f"must be between 1 and 1000, got {cap}")
    durability = body.get("durability", PROCESS)
    if durability not in DURABILITIES:
        raise InvalidRequest(
            "durability", f"must be {' or '.join(map(repr, DURABILITIES))}, got {durability!r}"
        )
    return KeyspaceConfig(
        name=name,
        consistency="eventual",
        replication=replication,
        read_quorum=r,
        write_quorum=w,
        max_siblings=cap,
        durability=durability,
    )

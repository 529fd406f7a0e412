"""Commands of a linearizable partition's Raft log, and their wire encoding (DESIGN.md §3).

The log carries bytes, never pickles: `encode` writes one format-version byte, then compact
JSON (ASCII, so any string a JSON parser can return is encodable). `decode` accepts a JSON
object describing a valid `Command` and raises `ValueError` naming the fault otherwise; the
state machine applies an undecodable entry as a no-op (`raft_groups/state_machine.py`).
`Command` validates itself when built, so an invalid command never reaches the log.

Format version 1: `b"\\x01"` + a JSON object with `op` and, when set, `uid`, `key`,
`value` (present iff op is put, may be null), `if_version`, `request_id`, `guard` (true:
refused until the keyspace's data is migrated here, docs/mode_switch.md), `ttl_ms` and
`now` (a put with a time to live; `now` alone: an expire, docs/ttl.md), and for op
`migrate` its `items` ([key, value] or [key, value, expires_at] lists) and `mark`.
Unknown fields are errors. A new format gets a new version byte; old entries stay
decodable while any journal or snapshot may still hold them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from kv import json_codec
from kv.routing import MAX_TTL_S

FORMAT_VERSION = 1
OPS = ("put", "delete", "barrier", "migrate", "freeze", "purge", "expire")
KEYSPACE_OPS = ("freeze", "purge")  # act on a keyspace's data in the group: uid only
MAX_MIGRATE_ITEMS = 1000  # keys per migrate command (the caller also bounds their bytes)
MAX_UID = 2**32 - 1  # the uid is 4 bytes of the storage key (state_machine.py)
MAX_REQUEST_ID_CHARS = 128
# Deep enough for any document; far below the recursion limit, so encoding a decoded value
# succeeds identically on every replica. The API's limit for both modes (kv/routing.py
# check_value refuses deeper values first, as a 400 naming `value`).
MAX_VALUE_DEPTH = json_codec.MAX_VALUE_DEPTH

MAX_TTL_MS = MAX_TTL_S * 1000
# ms since the epoch, up to the year 2255: far past any clock, far inside the 8 bytes the
# expiry index keys it by (raft_groups/expiry.py)
MAX_TIME_MS = 1 << 43

Op = Literal["put", "delete", "barrier", "migrate", "freeze", "purge", "expire"]
# (key, value) or (key, value, expires_at): a migrated key and, if it expires, when (ms)
Item = tuple[str, Any] | tuple[str, Any, int]

_FIELDS = frozenset(
    {
        *("op", "uid", "key", "value", "if_version", "request_id", "guard"),
        *("items", "mark", "since", "ttl_ms", "now"),
    }
)


@dataclass(frozen=True)
class Command:
    """One replicated operation on one key of one keyspace incarnation (`uid`).

    barrier: uid 0, key "", nothing else; the replicated no-op reads waited for before
    ReadIndex (still applied from older journals; nothing proposes it now).
    if_version: the write applies only if the key's current version equals it (absent = 0,
    so 0 means create-only). request_id: unique per logical request; a retry with the same
    id returns the first result instead of applying again (Raft §8).
    guard (put, delete): the keyspace is switching to linearizable; the state machine
    refuses the command (`not_migrated`) until this partition's data of `uid` is migrated.
    migrate: `items` (key, value) are created where the key has no record, then `mark`
    records the partition's data of `uid` as migrated (docs/mode_switch.md); key "".
    freeze: no put or delete of `uid` applies here any more (a switch to eventual, or a
    cancelled switch to linearizable), nor a migrate of a switch committed at or before
    the freezing switch's `since` (the metadata epoch that committed it).
    purge: delete a batch of `uid`'s records here (with the last batch its migrated mark;
    the freeze stays, so a node routing by metadata from before the switch is refused).
    since (migrate, freeze): the epoch of the switch the command belongs to.
    ttl_ms, now (put): the key expires at `now + ttl_ms` (ms since the epoch), `now` being
    the proposing leader's clock (docs/ttl.md); apply reads no clock.
    expire: uid 0, key "", `now` (the leader's clock): the group's expiry horizon moves up
    to `now` — every record whose expiry is at or below it is absent from then on — and a
    batch of those records is deleted (raft_groups/expiry.py).
    """

    op: Op
    uid: int
    key: str
    value: Any = None
    if_version: int | None = None
    request_id: str = ""
    guard: bool = False
    items: tuple[Item, ...] = ()
    mark: bool = False
    since: int = 0
    ttl_ms: int | None = None
    now: int = 0

    def expires_at(self) -> int | None:
        """When the key a put writes expires (ms since the epoch); None: never."""
        return None if self.ttl_ms is None else self.now + self.ttl_ms

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {self.op!r}")
        _check_int("uid", self.uid)
        _check_str("key", self.key)
        _check_request_id(self.request_id)
        _check_if_version(self.if_version)
        _check_expiry(self)
        if self.op == "barrier":
            _check_barrier(self)
        elif self.op == "expire":
            _check_expire(self)
        elif self.op == "migrate":
            _check_migrate(self)
        elif self.op in KEYSPACE_OPS:
            _check_keyspace_op(self)
        else:
            _check_key_op(self)
        if (self.items or self.mark) and self.op != "migrate":
            raise ValueError("items and mark belong to migrate")
        _check_int("since", self.since)
        if self.since < 0:
            raise ValueError(f"since must be >= 0, got {self.since}")
        if self.since and self.op not in ("migrate", "freeze"):
            raise ValueError("since belongs to migrate and freeze")


def encode(cmd: Command) -> bytes:
    fields: dict[str, Any] = {"op": cmd.op}
    if cmd.op not in ("barrier", "expire"):
        fields["uid"] = cmd.uid
        fields["key"] = cmd.key
    if cmd.op == "put":
        fields["value"] = cmd.value
    if cmd.op == "migrate":
        fields["items"] = [list(item) for item in cmd.items]
        fields["mark"] = cmd.mark
    if cmd.guard:
        fields["guard"] = True
    if cmd.since:
        fields["since"] = cmd.since
    if cmd.if_version is not None:
        fields["if_version"] = cmd.if_version
    if cmd.request_id:
        fields["request_id"] = cmd.request_id
    if cmd.ttl_ms is not None:
        fields["ttl_ms"] = cmd.ttl_ms
    if cmd.now:
        fields["now"] = cmd.now
    text = json.dumps(fields, separators=(",", ":"), allow_nan=False)
    return bytes([FORMAT_VERSION]) + text.encode("ascii")


def fingerprint(cmd: Command) -> str:
    """What a request id stands for (issue 11 item 5): a digest of the command without its
    id — operation, keyspace uid, key, value, condition and time to live — in a canonical
    form, so a retry that sends the same value with its object keys in another order
    matches. Not `now`: a retry is stamped again by the leader it reaches, and gets the
    first write's result (and expiry) back. A put without a TTL digests as it did before
    TTLs existed, so dedupe entries written then still match."""
    fields = {"op": cmd.op, "uid": cmd.uid, "key": cmd.key, "if_version": cmd.if_version}
    if cmd.op == "put":
        fields["value"] = cmd.value
    if cmd.ttl_ms is not None:
        fields["ttl_ms"] = cmd.ttl_ms
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def decode(raw: bytes) -> Command:
    """The command `raw` encodes; ValueError naming the fault for anything else."""
    if type(raw) is not bytes:
        raise ValueError(f"command must be bytes, got {type(raw).__name__}")
    if not raw:
        raise ValueError("empty command")
    if raw[0] != FORMAT_VERSION:
        raise ValueError(f"unknown command format version {raw[0]}")
    fields = _parse_object(raw[1:])
    unknown = fields.keys() - _FIELDS
    if unknown:
        raise ValueError(f"unknown command fields {sorted(unknown)}")
    if "op" not in fields:
        raise ValueError("command has no op")
    if ("value" in fields) != (fields["op"] == "put"):
        raise ValueError("value must be present for put and only for put")
    if fields["op"] in ("barrier", "expire"):
        fields = {"uid": 0, "key": "", **fields}
    if "items" in fields:
        fields["items"] = _items(fields["items"])
    try:
        return Command(**fields)
    except TypeError as exc:  # a required field (uid, key) is missing
        raise ValueError(f"incomplete command: {exc}") from None


def _items(raw: Any) -> tuple[Item, ...]:
    if not isinstance(raw, list) or not all(isinstance(i, list) and len(i) in (2, 3) for i in raw):
        raise ValueError("items must be a list of [key, value] or [key, value, expires_at]")
    return tuple((i[0], i[1]) if len(i) == 2 else (i[0], i[1], i[2]) for i in raw)


def item_expiry(item: Item) -> int | None:
    """When a migrated item expires (ms since the epoch); None: never."""
    return item[2] if len(item) == 3 else None


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("command JSON is nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ValueError(f"command is not UTF-8 JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"command must be a JSON object, got {type(fields).__name__}")
    return fields


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_barrier(cmd: Command) -> None:
    if cmd.uid != 0 or cmd.key != "":
        raise ValueError("barrier takes no uid or key")
    if cmd.value is not None or cmd.if_version is not None:
        raise ValueError("barrier takes no value or if_version")
    if cmd.request_id or cmd.guard:
        # A barrier changes nothing, so a retry is always safe and needs no dedupe entry.
        raise ValueError("barrier takes no request_id or guard")


def _check_expiry(cmd: Command) -> None:
    """`ttl_ms` belongs to put and comes with `now`; `now` alone is an expire's."""
    if cmd.ttl_ms is not None:
        if cmd.op != "put":
            raise ValueError("ttl_ms belongs to put")
        _check_int("ttl_ms", cmd.ttl_ms)
        if not 1 <= cmd.ttl_ms <= MAX_TTL_MS:
            raise ValueError(f"ttl_ms must be in 1..{MAX_TTL_MS}, got {cmd.ttl_ms}")
    _check_int("now", cmd.now)
    stamped = cmd.op == "expire" or cmd.ttl_ms is not None
    if stamped and not 1 <= cmd.now <= MAX_TIME_MS:
        raise ValueError(f"now must be in 1..{MAX_TIME_MS} (ms since the epoch), got {cmd.now}")
    if not stamped and cmd.now:
        raise ValueError("now belongs to expire and to a put with ttl_ms")


def _check_expire(cmd: Command) -> None:
    if cmd.uid != 0 or cmd.key != "":
        raise ValueError("expire takes no uid or key")
    if cmd.value is not None or cmd.if_version is not None or cmd.request_id or cmd.guard:
        # like a barrier, retrying an expire is always safe: it needs no dedupe entry
        raise ValueError("expire takes now only")


def _check_migrate(cmd: Command) -> None:
    if not 1 <= cmd.uid <= MAX_UID:
        raise ValueError(f"uid must be in 1..{MAX_UID}, got {cmd.uid}")
    if cmd.key or cmd.value is not None or cmd.if_version is not None or cmd.request_id:
        raise ValueError("migrate takes uid, items and mark only")
    if cmd.guard or type(cmd.mark) is not bool:
        raise ValueError("migrate is never guarded; mark is a boolean")
    if len(cmd.items) > MAX_MIGRATE_ITEMS:
        raise ValueError(f"migrate takes at most {MAX_MIGRATE_ITEMS} items")
    for item in cmd.items:
        key, value, expires = item[0], item[1], item_expiry(item)
        _check_str("items key", key)
        if not key:
            raise ValueError("items need non-empty keys")
        _check_json_value(value)
        if expires is not None:
            _check_int("items expires_at", expires)
            if not 1 <= expires <= MAX_TIME_MS + MAX_TTL_MS:
                raise ValueError(f"items expires_at out of range: {expires}")


def _check_keyspace_op(cmd: Command) -> None:
    if not 1 <= cmd.uid <= MAX_UID:
        raise ValueError(f"uid must be in 1..{MAX_UID}, got {cmd.uid}")
    if cmd.key or cmd.value is not None or cmd.if_version is not None or cmd.request_id:
        raise ValueError(f"{cmd.op} takes a uid only")
    if cmd.guard:
        raise ValueError(f"{cmd.op} is never guarded")


def _check_key_op(cmd: Command) -> None:
    if not 1 <= cmd.uid <= MAX_UID:
        raise ValueError(f"uid must be in 1..{MAX_UID}, got {cmd.uid}")
    if not cmd.key:
        raise ValueError(f"{cmd.op} needs a non-empty key")
    if cmd.op == "delete" and cmd.value is not None:
        raise ValueError("delete takes no value")
    if cmd.op == "put":
        _check_json_value(cmd.value)


def _check_request_id(request_id: str) -> None:
    _check_str("request_id", request_id)
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise ValueError(f"request_id has {len(request_id)} chars, max is {MAX_REQUEST_ID_CHARS}")


def _check_if_version(if_version: int | None) -> None:
    if if_version is None:
        return
    _check_int("if_version", if_version)
    if if_version < 0:
        raise ValueError(f"if_version must be >= 0, got {if_version}")


def _check_int(name: str, value: object) -> None:
    if type(value) is not int:
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")  # keys and request ids become storage key bytes
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid Unicode (lone surrogate)") from None


def _check_json_value(value: Any) -> None:
    """Raise ValueError unless `value` is a JSON document that survives encode/decode unchanged.

    Iterative, so a deep value fails with ValueError rather than RecursionError.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | int | str):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"value holds {item}, which JSON cannot represent")
            continue
        if depth >= MAX_VALUE_DEPTH:
            raise ValueError(f"value nests deeper than {MAX_VALUE_DEPTH}")
        if isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                raise ValueError("value holds an object with a non-string key")
            stack.extend((child, depth + 1) for child in item.values())
        else:
            raise ValueError(f"value holds a {type(item).__name__}, which is not JSON")


# Every barrier is the same command (built here, after the validators it needs).
BARRIER = Command("barrier", 0, "")

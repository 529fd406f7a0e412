"""The internode wire protocol v1 (docs/internode.md): frames, handshake messages and proofs,
payload codecs. Pure: bytes in, values out; nonces, keys and node ids are parameters.

A connection starts as an HTTP/1.1 request `GET /v1/internal/stream` with
`Connection: Upgrade`, `Upgrade: kv-internode` on the node's API port; after the `101` both
directions carry frames:

    offset size  field
    0      1     version      protocol version of the frame (1)
    1      1     kind         Kind below
    2      1     name length  REQUEST: length of the operation's name; otherwise 0
    3      1     reserved     0
    4      4     request id   u32, big-endian: pairs a REPLY/ERROR with its REQUEST
    8      4     length       u32, big-endian: payload bytes after the name
    12     n     name         ASCII operation name (kv/internode.py `Operation.name`)
    12+n   len   payload      the negotiated codec's encoding (JSON in v1); handshake: JSON

Handshake (mutual challenge-response; the cluster secret never crosses the network —
only HMACs keyed by `kv/keys.py internode_key(secret)`):

    server → HELLO   {versions, codecs, nonce, node}        (random 32-byte nonce)
    client → AUTH    {version, codec, nonce, node, proof}   proof = MAC("client", …)
    server → WELCOME {proof}                                proof = MAC("server", …)
             or CLOSE {reason}, then closes

Both proofs cover both nonces, both node ids, the chosen version and codec, so neither can
be replayed on another connection or reflected back in the other role. Handshake frames are
always written in this (v1) layout, so a later release can still read a v1 peer's HELLO and
choose version 1 for that connection (rolling upgrades); every later frame carries the
chosen version and a frame of any other version ends the connection.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

from kv import json_codec
from kv.internode import integer, obj, text

VERSIONS = (1,)  # every protocol version this release speaks
PATH = "/v1/internal/stream"
UPGRADE = "kv-internode"

HEADER = struct.Struct("!BBBxII")
MAX_NAME = 64
# The largest legitimate message carries one key's sibling set. A mint that would leave a
# set over 4 MiB encoded, clocks included, is refused (dynamo_mode/siblings.py
# MAX_SIBLING_BYTES), which bounds a merged set by 4 MiB per actor with unresolved versions:
# 7 primaries (kv/keyspace.py MAX_REPLICATION) × 4 MiB = 28 MiB, and 64 MiB holds 16 actors'
# worth plus the envelope (a ref, a name, a mint's new version ≤ 1 MiB). Partition scans cap
# their batches by bytes (dynamo_mode/replica_server.py SCAN_BATCH_BYTES).
MAX_PAYLOAD = 64 << 20
HANDSHAKE_MAX_PAYLOAD = 4096  # what an unauthenticated peer may make us buffer
NONCE_BYTES = 32


class Kind(IntEnum):
    HELLO = 1
    AUTH = 2
    WELCOME = 3
    REQUEST = 4
    REPLY = 5
    ERROR = 6  # the reply is a KvError: payload {"error": {code, message, ...}}
    CLOSE = 7  # the sender closes the connection: payload {"reason": "..."}


_KINDS = frozenset(int(k) for k in Kind)


class Frame(NamedTuple):
    kind: int
    request_id: int
    name: str
    payload: bytes


class FrameError(ValueError):
    """The peer broke the framing (size, version, kind): the connection must end."""


def encode_frame(
    kind: Kind, request_id: int, payload: bytes, name: str = "", version: int = 1
) -> bytes:
    raw_name = name.encode("ascii")
    head = HEADER.pack(version, kind, len(raw_name), request_id, len(payload))
    return b"".join((head, raw_name, payload))


class FrameDecoder:
    """Incremental: `feed(data)` returns the frames completed so far. The size cap is
    checked on the header, before any of the payload is buffered."""

    def __init__(self, version: int = 1, max_payload: int = HANDSHAKE_MAX_PAYLOAD) -> None:
        self.version = version
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        while len(buf) - pos >= HEADER.size:
            version, kind, name_len, request_id, length = HEADER.unpack_from(buf, pos)
            self._check(version, kind, name_len, length)
            start = pos + HEADER.size + name_len
            if len(buf) < start + length:
                break
            name = buf[pos + HEADER.size : start].decode("ascii", "replace")
            frames.append(Frame(kind, request_id, name, bytes(buf[start : start + length])))
            pos = start + length
        if pos:
            del buf[:pos]
        return frames

    def _check(self, version: int, kind: int, name_len: int, length: int) -> None:
        if version != self.version:
            raise FrameError(
                f"frame of protocol version {version}; this connection speaks {self.version}"
            )
        if kind not in _KINDS:
            raise FrameError(f"unknown frame kind {kind}")
        if name_len > MAX_NAME:
            raise FrameError(f"operation name of {name_len} bytes; the limit is {MAX_NAME}")
        if length > self.max_payload:
            raise FrameError(f"frame payload of {length} bytes; the limit is {self.max_payload}")


# ---------------------------------------------------------------------- codecs
class Codec(Protocol):
    """How REQUEST/REPLY/ERROR payloads are encoded, negotiated per connection."""

    name: str

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class JsonCodec:
    name = "json"

    def encode(self, value: Any) -> bytes:
        return json_codec.dumps(value)

    def decode(self, data: bytes) -> Any:
        return json_codec.loads(data)  # NaN and Infinity are refused too


CODECS: dict[str, Codec] = {"json": JsonCodec()}  # in order of preference


# ---------------------------------------------------------------------- handshake
def _hex(raw: Any, name: str, size: int) -> bytes:
    try:
        value = bytes.fromhex(text(raw, name))
    except ValueError:
        raise ValueError(f"{name} must be hex") from None
    if len(value) != size:
        raise ValueError(f"{name} must be {size} bytes")
    return value


def _short(raw: Any, name: str) -> str:
    value = text(raw, name)
    if not 0 < len(value) <= 128:
        raise ValueError(f"{name} must be 1 to 128 characters")
    return value


@dataclass(frozen=True)
class Hello:
    versions: tuple[int, ...]
    codecs: tuple[str, ...]
    nonce: bytes
    node: str

    def to_wire(self) -> dict[str, Any]:
        wire = {"versions": list(self.versions), "codecs": list(self.codecs)}
        return {**wire, "nonce": self.nonce.hex(), "node": self.node}

    @staticmethod
    def from_wire(raw: Any) -> Hello:
        d = obj(raw)
        versions, codecs = d.get("versions"), d.get("codecs")
        if not isinstance(versions, list) or not isinstance(codecs, list) or len(versions) > 16:
            raise ValueError("versions and codecs must be lists")
        return Hello(
            tuple(integer(v, "versions", 1, 256) for v in versions),
            tuple(_short(c, "codecs") for c in codecs[:16]),
            _hex(d.get("nonce"), "nonce", NONCE_BYTES),
            _short(d.get("node"), "node"),
        )


@dataclass(frozen=True)
class Auth:
    version: int
    codec: str
    nonce: bytes
    node: str
    proof: bytes

    def to_wire(self) -> dict[str, Any]:
        wire = {"version": self.version, "codec": self.codec, "nonce": self.nonce.hex()}
        return {**wire, "node": self.node, "proof": self.proof.hex()}

    @staticmethod
    def from_wire(raw: Any) -> Auth:
        d = obj(raw)
        return Auth(
            integer(d.get("version"), "version", 1, 256),
            _short(d.get("codec"), "codec"),
            _hex(d.get("nonce"), "nonce", NONCE_BYTES),
            _short(d.get("node"), "node"),
            _hex(d.get("proof"), "proof", hashlib.sha256().digest_size),
        )


def choose_version(ours: tuple[int, ...], theirs: tuple[int, ...]) -> int:
    """The highest protocol version both sides speak."""
    common = set(ours) & set(theirs)
    if not common:
        raise ValueError(
            f"no common internode protocol version: the peer speaks {list(theirs)}, "
            f"this node {list(ours)}"
        )
    return max(common)


def choose_codec(ours: tuple[str, ...], theirs: tuple[str, ...]) -> str:
    """Our most preferred codec that the peer also speaks."""
    for name in ours:
        if name in theirs:
            return name
    raise ValueError(
        f"no common payload codec: the peer speaks {list(theirs)}, this node {list(ours)}"
    )


def proof(key: bytes, role: str, hello: Hello, auth: Auth) -> bytes:
    """HMAC-SHA256 over both nonces, both node ids, the chosen version and codec; `role` is
    "client" (AUTH) or "server" (WELCOME), so one cannot stand in for the other."""
    fields = (
        b"kv internode v1",
        role.encode(),
        hello.nonce,
        auth.nonce,
        hello.node.encode(),
        auth.node.encode(),
        str(auth.version).encode(),
        auth.codec.encode(),
    )
    message = b"".join(len(f).to_bytes(2, "big") + f for f in fields)
    return hmac.new(key, message, hashlib.sha256).digest()


def verify(key: bytes, role: str, hello: Hello, auth: Auth, given: bytes) -> bool:
    return hmac.compare_digest(proof(key, role, hello, auth), given)


def json_payload(value: Any) -> bytes:
    """Handshake and CLOSE payloads: JSON whatever the codec."""
    return CODECS["json"].encode(value)


def json_value(payload: bytes) -> Any:
    return CODECS["json"].decode(payload)


def reason(frame: Frame) -> str:
    """The reason a CLOSE frame gives."""
    try:
        return str(json_value(frame.payload).get("reason"))
    except (ValueError, AttributeError):
        return "(unreadable reason)"


class FirstTimes:
    """Whether a key (a peer address) is seen for the first time, for logging a repeated
    failure once per peer; forgets everything past `limit` keys so a stream of new
    addresses cannot grow it without bound."""

    def __init__(self, limit: int = 1024) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def first(self, key: str) -> bool:
        if key in self._seen:
            return False
        if len(self._seen) >= self._limit:
            self._seen.clear()
        self._seen.add(key)
        return True

    def forget(self, key: str) -> None:
        self._seen.discard(key)

"""The Raft port's protocol, the pure part (docs/raft.md "The Raft port"): what the link
(`link.py`) writes and accepts. Bytes in, values out; keys and nonces are parameters.

A connection carries one direction of one node pair: the dialing node sends, the accepting
node receives (each node dials every peer it sends to). It opens with the handshake of the
internode protocol (kv/wire.py HELLO / AUTH / WELCOME, the same frames and proofs) keyed by
`kv/keys.py raft_key` — a key of its own, so the Raft port and the internode protocol never
accept each other's proofs. After WELCOME every frame is a `Kind.REQUEST` whose payload is

    MAC (32 bytes) ‖ data        MAC = HMAC-SHA256(session, seq ‖ data)

where `session` is derived from the handshake's two nonces and `seq` counts the frames of
the connection (8 bytes, from 0): a frame altered, injected, dropped or replayed on the
stream fails its MAC and ends the connection. `data` is a pickle of a list of
(group id, message) pairs — what pysyncobj's messages are made of — read by `loads`, an
unpickler that refuses every global: only None, bools, numbers, strings, bytes, lists,
tuples, sets and dicts can come out of it, so no byte, authenticated or not, can make it
construct an object or call a function. Confidentiality is TLS's (node setting `tls`).

Limits, each checked before the bytes they cover are buffered (kv/wire.py FrameDecoder):
a frame before the handshake completes is at most `wire.HANDSHAKE_MAX_PAYLOAD` (4 KiB);
after it, `MAX_FRAME`.
"""

from __future__ import annotations

import collections
import hmac
import io
import pickle
from typing import Any

from kv import wire

VERSIONS = (1,)  # the Raft port's own protocol versions (the frame layout is kv/wire.py's)
CODECS = ("pickle-plain",)  # pickle without globals (`loads`)
MAC_BYTES = 32
# A flush's messages for one peer leave in frames of at most SPLIT bytes where they can be
# split (one message is never split); the largest message is an entry of a maximal write
# (a 1 MiB value, kv/routing.py MAX_VALUE_BYTES) or one snapshot chunk, far below MAX_FRAME.
SPLIT = 8 << 20
MAX_FRAME = 64 << 20
Message = tuple[str, Any]  # (group id, pysyncobj message)


class Refused(ValueError):
    """A frame the link must not act on: bad MAC, a pickle with a global, not a list."""


def session_key(key: bytes, hello: wire.Hello, auth: wire.Auth) -> bytes:
    """The MAC key of one connection: fresh nonces make it unique to the connection."""
    return hmac.digest(key, b"kv raft session v1" + hello.nonce + auth.nonce, "sha256")


def seal(session: bytes, seq: int, data: bytes) -> bytes:
    return hmac.digest(session, seq.to_bytes(8, "big") + data, "sha256") + data


def unseal(session: bytes, seq: int, payload: bytes) -> bytes:
    mac, data = payload[:MAC_BYTES], payload[MAC_BYTES:]
    want = hmac.digest(session, seq.to_bytes(8, "big") + data, "sha256")
    if not hmac.compare_digest(mac, want):
        raise Refused(f"frame {seq} fails its MAC")
    return data


def dumps(messages: list[Message]) -> bytes:
    return pickle.dumps(messages, protocol=5)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a Raft frame may not name a global ({module}.{name})")


def loads(data: bytes) -> list[Message]:
    """The (group id, message) pairs of a frame; `Refused` for anything else."""
    try:
        value = _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - any malformed pickle is a refused frame
        raise Refused(f"unreadable Raft frame: {exc}") from None
    if not isinstance(value, list):
        raise Refused(f"a Raft frame holds a list, not {type(value).__name__}")
    if not all(isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str) for m in value):
        raise Refused("a Raft frame holds (group id, message) pairs")
    return value


def frames(messages: list[Message], split: int = SPLIT) -> tuple[list[bytes], list[str]]:
    """`messages` pickled in order, in frames of at most `split` bytes where a frame holds
    more than one message, and the group ids of messages left out: a single message over
    `MAX_FRAME` (none of the project's writes makes one; Raft resends what is lost)."""
    out: list[bytes] = []
    dropped: list[str] = []
    todo = collections.deque([messages])
    while todo:
        part = todo.popleft()
        data = dumps(part)
        if len(data) <= split:
            out.append(data)
        elif len(part) > 1:
            half = len(part) // 2
            todo.extendleft((part[half:], part[:half]))  # extendleft reverses: order kept
        elif len(data) <= MAX_FRAME:
            out.append(data)
        else:
            dropped.append(part[0][0])
    return out, dropped


class AcceptLimits:
    """How many connections may wait for their handshake: at most `per_source` from one
    address and `total` in all. A connection over either is closed at accept; one that
    authenticates, fails or closes gives its place back. Established connections are not
    counted, so a flood from one address delays only new connections."""

    def __init__(self, per_source: int = 16, total: int = 128) -> None:
        self.per_source = per_source
        self.total = total
        self._waiting: collections.Counter[str] = collections.Counter()

    def admit(self, source: str) -> bool:
        if self._waiting[source] >= self.per_source or sum(self._waiting.values()) >= self.total:
            return False
        self._waiting[source] += 1
        return True

    def release(self, source: str) -> None:
        self._waiting[source] -= 1
        if self._waiting[source] <= 0:
            del self._waiting[source]

    @property
    def waiting(self) -> int:
        return sum(self._waiting.values())

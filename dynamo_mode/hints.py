"""Sloppy quorum and hinted handoff: the pure decisions (Dynamo §4.6; Riak riak_kv_put_fsm).

Pure: no I/O, no clocks. The coordinator (`dynamo_mode.coordinator`) and the handoff loop
(`dynamo_mode.handoff`) perform what these functions return. See docs/hinted_handoff.md.

Vocabulary: the *primaries* of a key are the first N nodes of its ring walk (the preference
list); the *fallbacks* are the rest of the walk, in the order they are tried
(`kv.ring.Ring.fallbacks`). A *hint* is a copy of a primary's versions stored on a
fallback, under the hint key space below, for that primary (its *owner*).

Invariants:
- a write sends to each primary at most one copy at a time: the primary itself, or one
  fallback holding a hint for it;
- a fallback is never a primary of the key, never known down when chosen, and takes the
  hint of at most one owner per write (distinct fallbacks, Dynamo §4.6);
- the dot is minted by a primary (the coordinator's `_mint`), so a hint is never the only
  copy of an acknowledged write: dropping one can delay a replica, never lose a write;
- `pw` counts only acknowledgements of primaries themselves; `w` counts hints as well.

Hint key space (in the fallback's StorageEngine, apart from its replica data `b"e"`):

    b"h" | owner id (UTF-8, no NUL) | b"\\0" | replica storage key  →  JSON [wire versions]

so one owner's hints are one contiguous range, and the Merkle trees, which scan `b"e"`,
never see them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from dynamo_mode.siblings import Version, reconcile, same
from kv.errors import Retryable, UnknownOutcome

HINT_PREFIX = b"h"
_SEP = b"\0"

Status = Literal["pending", "ok", "failed"]


# -- hint keys -------------------------------------------------------------------------


def owner_prefix(owner: str) -> bytes:
    """The range holding every hint for `owner` (NUL-terminated: no owner's range nests)."""
    if not owner or "\0" in owner:
        raise ValueError(f"hint owner must be a non-empty node id without NUL: {owner!r}")
    return HINT_PREFIX + owner.encode() + _SEP


def hint_key(owner: str, storage_key: bytes) -> bytes:
    return owner_prefix(owner) + storage_key


def parse_hint_key(raw: bytes) -> tuple[str, bytes]:
    """(owner, replica storage key) of a hint key; the inverse of `hint_key`."""
    end = raw.find(_SEP, len(HINT_PREFIX))
    if not raw.startswith(HINT_PREFIX) or end <= len(HINT_PREFIX):
        raise ValueError(f"not a hint key: {raw[:24]!r}")
    return raw[len(HINT_PREFIX) : end].decode(), raw[end + 1 :]


# -- background delivery: whose fault is a failure? ----------------------------------


def entry_refused(exc: BaseException) -> bool:
    """A failed background delivery (a hint's handoff, a tombstone's purge) that belongs to
    the entry, not to the peer: the peer answered and refused this one (too large, invalid)
    or this node could not send it. The loop skips and reports it and goes on with the next
    entry. A failure of the peer itself — unreachable, unavailable or slow (`Retryable`,
    `UnknownOutcome`) — would fail every other entry too: it ends that peer's round."""
    return not isinstance(exc, Retryable | UnknownOutcome)


# -- before a write or read: can the request be served at all? -----------------------


def write_refusal(
    primaries: Sequence[str],
    fallbacks: Sequence[str],
    down: Collection[str],
    w: int,
    pw: int,
) -> str | None:
    """Why a PUT must be refused before anything is written (a 503), or None.

    Riak's put_fsm refuses `pw_val_unsatisfied` up front in the same way: refusing after
    the mint would leave a write that may be visible (a 504).
    """
    alive = [p for p in primaries if p not in down]
    spare = [f for f in fallbacks if f not in down]
    if not alive:
        return f"no primary of {list(primaries)} is alive to coordinate the write"
    if len(alive) < pw:
        return f"pw={pw} but only {len(alive)} primaries are alive ({_down(primaries, down)})"
    reachable = len(alive) + min(len(primaries) - len(alive), len(spare))
    if reachable < w:
        return (
            f"w={w} but only {reachable} primaries and fallbacks are alive "
            f"({_down([*primaries, *fallbacks], down)})"
        )
    return None


def read_refusal(primaries: Sequence[str], down: Collection[str], pr: int) -> str | None:
    """Why a GET with `pr` must be refused before asking anyone (a 503), or None."""
    alive = [p for p in primaries if p not in down]
    if len(alive) < pr:
        return f"pr={pr} but only {len(alive)} primaries are alive ({_down(primaries, down)})"
    return None


def _down(nodes: Sequence[str], down: Collection[str]) -> str:
    return "down: " + (", ".join(n for n in nodes if n in down) or "none")


# -- during a write: sloppy-quorum accounting ------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Effect: send the write's versions to `node` on behalf of primary `owner`."""

    node: str
    owner: str

    @property
    def is_hint(self) -> bool:
        return self.node != self.owner


class SloppyWrite:
    """One PUT after the mint (Dynamo §4.6): one slot per primary, filled by the primary's
    own ack or by a fallback's ack of a hint for it.

    status() is "ok" once `w` slots are filled and `pw` of them by their primary; "failed"
    once that can no longer happen even if every send in flight acknowledges; else
    "pending". Each send's first answer is final; answers to superseded sends are ignored.
    """

    def __init__(
        self,
        primaries: Sequence[str],
        fallbacks: Sequence[str],
        w: int,
        pw: int = 0,
        down: Collection[str] = (),
    ) -> None:
        _check_nodes(primaries, fallbacks)
        if not 1 <= w <= len(primaries):
            raise ValueError(f"w={w} must be between 1 and len(primaries)={len(primaries)}")
        if not 0 <= pw <= len(primaries):
            raise ValueError(f"pw={pw} must be between 0 and len(primaries)={len(primaries)}")
        self._primaries = tuple(primaries)
        self._fallbacks = tuple(fallbacks)
        self._w, self._pw = w, pw
        self._unusable = set(down)  # down, failed or already holding a hint
        self._inflight: dict[str, Send] = {}  # owner → its current send
        self._filled: dict[str, str] = {}  # owner → node that acknowledged
        self._errors: dict[str, str] = {}  # owner → last reason, for failed slots

    def start(self, minted_by: str) -> list[Send]:
        """The minting primary has stored the write; the sends for every other slot."""
        if minted_by not in self._primaries:
            raise ValueError(f"minted_by {minted_by!r} is not a primary")
        self._filled[minted_by] = minted_by
        sends: list[Send] = []
        for owner in self._primaries:
            if owner == minted_by:
                continue
            if owner in self._unusable:
                sends += self._reroute(owner, "down")
            else:
                sends.append(self._send(Send(owner, owner)))
        return sends

    def on_ack(self, send: Send) -> None:
        if self._inflight.get(send.owner) == send:
            del self._inflight[send.owner]
            self._filled[send.owner] = send.node

    def on_error(self, send: Send, reason: str, reroute: bool) -> list[Send]:
        """A send failed. With `reroute` (the node certainly did not get it: unreachable),
        the slot moves to the next usable fallback; returns the new sends."""
        if self._inflight.get(send.owner) != send:
            return []
        del self._inflight[send.owner]
        self._unusable.add(send.node)
        if reroute:
            return self._reroute(send.owner, f"{send.node}: {reason}")
        self._errors[send.owner] = f"{send.node}: {reason}"
        return []

    def status(self) -> Status:
        filled = len(self._filled)
        by_primary = sum(1 for owner, node in self._filled.items() if owner == node)
        if filled >= self._w and by_primary >= self._pw:
            return "ok"
        may_fill = filled + len(self._inflight)
        may_primary = by_primary + sum(1 for s in self._inflight.values() if not s.is_hint)
        if may_fill < self._w or may_primary < self._pw:
            return "failed"
        return "pending"

    @property
    def filled(self) -> Mapping[str, str]:
        """owner → the node whose ack filled its slot (the owner, or a fallback's hint)."""
        return dict(self._filled)

    @property
    def inflight(self) -> tuple[Send, ...]:
        return tuple(self._inflight.values())

    @property
    def errors(self) -> Mapping[str, str]:
        return dict(self._errors)

    def _send(self, send: Send) -> Send:
        self._inflight[send.owner] = send
        return send

    def _reroute(self, owner: str, reason: str) -> list[Send]:
        fallback = next((f for f in self._fallbacks if f not in self._unusable), None)
        if fallback is None:
            self._errors[owner] = f"{reason}; no fallback left"
            return []
        self._unusable.add(fallback)
        return [self._send(Send(fallback, owner))]


def _check_nodes(primaries: Sequence[str], fallbacks: Sequence[str]) -> None:
    walk = [*primaries, *fallbacks]
    if len(set(walk)) != len(walk):
        raise ValueError(f"primaries and fallbacks must be distinct nodes, got {walk!r}")


# -- handoff: what to deliver, what to drop ----------------------------------------------------


def owners_to_visit(pending: Mapping[str, int], down: Collection[str]) -> list[str]:
    """Owners with hints that are not known down, in a stable order."""
    return sorted(o for o, count in pending.items() if count > 0 and o not in down)


def may_drop(current: Sequence[Version], delivered: Sequence[Version]) -> bool:
    """Whether a hint may be deleted once its owner acknowledged `delivered`.

    True iff the owner, having merged `delivered`, knows every version the hint now holds
    (each is delivered or obsoleted by a delivered one). A hint that grew while the
    delivery was in flight is kept and delivered again next round (a CRDT merge, so
    redelivery is harmless).
    """
    return same(reconcile((*current, *delivered)), reconcile(delivered))

"""Quorum accumulators for one GET or PUT (Dynamo §4.5; Riak riak_kv_get_core).

Pure: they send nothing. The I/O shell feeds them each replica's answer and
performs what they return (the reply to the client, read repairs).

Rules shared by both:
- each replica's first answer (reply/ack or error) is final; later answers
  from the same replica are ignored, so duplicates count once;
- answers from nodes outside ``replicas`` are ignored and counted in ``strays``;
- status is "ok" once ``need`` replicas replied, "failed" once more than
  ``len(replicas) - need`` errored (``need`` can no longer be reached), else
  "pending". Both cannot hold at once, since replies + errors <= len(replicas).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from dynamo_mode.siblings import Version, reconcile, same

Status = Literal["pending", "ok", "failed"]


class _Tally:
    """Per-replica answer bookkeeping shared by ReadQuorum and WriteQuorum."""

    def __init__(self, replicas: Sequence[str], need: int, name: str) -> None:
        if len(set(replicas)) != len(replicas):
            raise ValueError(f"replicas must be distinct, got {list(replicas)!r}")
        if not 1 <= need <= len(replicas):
            raise ValueError(f"{name}={need} must be between 1 and len(replicas)={len(replicas)}")
        self._replicas = tuple(replicas)
        self._need = need
        self._answered: set[str] = set()
        self._errors: dict[str, str] = {}
        self._strays = 0

    @property
    def errors(self) -> Mapping[str, str]:
        return dict(self._errors)

    @property
    def strays(self) -> int:
        """Answers ignored because their node is not one of ``replicas``."""
        return self._strays

    @property
    def waiting(self) -> frozenset[str]:
        """Replicas that have not answered yet."""
        return frozenset(self._replicas) - self._answered

    def add_error(self, node: str, reason: str) -> None:
        if self._first_answer(node):
            self._errors[node] = reason

    def status(self) -> Status:
        if len(self._answered) - len(self._errors) >= self._need:
            return "ok"
        if len(self._errors) > len(self._replicas) - self._need:
            return "failed"
        return "pending"

    def _first_answer(self, node: str) -> bool:
        """Record that ``node`` answered; False if the answer must be ignored."""
        if node not in self._replicas:
            self._strays += 1
            return False
        if node in self._answered:
            return False
        self._answered.add(node)
        return True


class ReadQuorum(_Tally):
    """A GET: ok after R replies; result() reconciles every reply so far."""

    def __init__(self, replicas: Sequence[str], r: int) -> None:
        super().__init__(replicas, r, "r")
        self._replies: dict[str, tuple[Version, ...]] = {}

    @property
    def replied(self) -> Mapping[str, tuple[Version, ...]]:
        return dict(self._replies)

    def add_reply(self, node: str, versions: Sequence[Version]) -> None:
        if self._first_answer(node):
            self._replies[node] = tuple(versions)

    def result(self) -> tuple[Version, ...]:
        return reconcile(v for versions in self._replies.values() for v in versions)

    def repairs(self) -> dict[str, tuple[Version, ...]]:
        """Read repair (Dynamo §4.5, §5): every replier whose versions differ from result()
        gets the whole result, which it reconciles with its own (never single versions,
        so contexts stay causally closed; see dynamo_mode.siblings)."""
        merged = self.result()
        return {node: merged for node, vs in self._replies.items() if not same(vs, merged)}


class WriteQuorum(_Tally):
    """A PUT: ok after W acks."""

    def __init__(self, replicas: Sequence[str], w: int) -> None:
        super().__init__(replicas, w, "w")
        self._acks: set[str] = set()

    @property
    def acked(self) -> frozenset[str]:
        return frozenset(self._acks)

    def add_ack(self, node: str) -> None:
        if self._first_answer(node):
            self._acks.add(node)

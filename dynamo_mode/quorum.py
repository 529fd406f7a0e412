"""The quorum accumulator of one GET (Dynamo §4.5; Riak riak_kv_get_core).

Pure: it sends nothing. The coordinator (the I/O shell) feeds it each replica's answer and
performs what it returns (the reply to the client, read repairs). Writes are counted by
``hints.SloppyWrite``, which also places hints.

Rules:
- each replica's first answer (reply or error) is final; later answers from the same
  replica are ignored, so duplicates count once;
- answers from nodes outside ``replicas`` are ignored and counted in ``strays``;
- status is "ok" once ``r`` replicas replied, "failed" once more than ``len(replicas) - r``
  errored (``r`` can no longer be reached), else "pending". Both cannot hold at once,
  since replies + errors <= len(replicas).

Whom to ask (``more_reads``): a GET asks R replicas first — this node first when it is one
(no network hop), then those alive — and the others (the spares) only when needed, as
Cassandra's coordinator does rather than Riak's ask-all-N: after an error, as many as
could still complete R; once the asked ones are slow (past the hedge delay), all of them;
and after a miss (every reply so far empty: the key may have been written to replicas not
yet asked), all of them, so that a not-found is the answer of every replica that could
answer. Read repair then covers the replicas asked; anti-entropy covers the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from dynamo_mode.siblings import Version, reconcile, same

Status = Literal["pending", "ok", "failed"]


class ReadQuorum:
    """A GET: ok after R replies; result() reconciles every reply so far."""

    def __init__(self, replicas: Sequence[str], r: int) -> None:
        if len(set(replicas)) != len(replicas):
            raise ValueError(f"replicas must be distinct, got {list(replicas)!r}")
        if not 1 <= r <= len(replicas):
            raise ValueError(f"r={r} must be between 1 and len(replicas)={len(replicas)}")
        self._replicas = tuple(replicas)
        self._need = r
        self._answered: set[str] = set()
        self._errors: dict[str, str] = {}
        self._replies: dict[str, tuple[Version, ...]] = {}
        self._strays = 0

    @property
    def errors(self) -> Mapping[str, str]:
        return dict(self._errors)

    @property
    def replied(self) -> Mapping[str, tuple[Version, ...]]:
        return dict(self._replies)

    @property
    def strays(self) -> int:
        """Answers ignored because their node is not one of ``replicas``."""
        return self._strays

    @property
    def waiting(self) -> frozenset[str]:
        """Replicas that have not answered yet."""
        return frozenset(self._replicas) - self._answered

    def add_reply(self, node: str, versions: Sequence[Version]) -> None:
        if self._first_answer(node):
            self._replies[node] = tuple(versions)

    def add_error(self, node: str, reason: str) -> None:
        if self._first_answer(node):
            self._errors[node] = reason

    def status(self) -> Status:
        if len(self._replies) >= self._need:
            return "ok"
        if len(self._errors) > len(self._replicas) - self._need:
            return "failed"
        return "pending"

    def result(self) -> tuple[Version, ...]:
        return reconcile(v for versions in self._replies.values() for v in versions)

    def repairs(self) -> dict[str, tuple[Version, ...]]:
        """Read repair (Dynamo §4.5, §5): every replier whose versions differ from result()
        gets the whole result, which it reconciles with its own (never single versions,
        so contexts stay causally closed; see dynamo_mode.siblings)."""
        merged = self.result()
        return {node: merged for node, vs in self._replies.items() if not same(vs, merged)}

    def repair_due(self, asked: Iterable[str]) -> bool:
        """Whether read repair has anything to do once the GET is answered: one of the
        replicas `asked` has not answered yet (its reply may differ), or a replier needs
        the result (`repairs`). False: every asked replica answered alike."""
        return bool(self.waiting.intersection(asked)) or bool(self.repairs())

    def _first_answer(self, node: str) -> bool:
        """Record that ``node`` answered; False if the answer must be ignored."""
        if node not in self._replicas:
            self._strays += 1
            return False
        if node in self._answered:
            return False
        self._answered.add(node)
        return True


def more_reads(
    need: int, replies: int, outstanding: int, spares: int, slow: bool, missed: bool
) -> int:
    """How many spares to ask now (pure). `replies`: replies so far; `outstanding`: calls
    still out; `slow`: the hedge delay passed; `missed`: decided, but every reply empty."""
    if spares == 0:
        return 0
    if slow or missed:
        return spares
    return max(0, min(spares, need - replies - outstanding))

"""Every member's API request totals, for the status page (docs/status_page.md): the
`request_stats` internode operation and the gathering behind `GET /v1/cluster/metrics`.

A node answers `request_stats` with its `RequestTotals`: the API requests it answered
since it started, over every route, mode and outcome, with their cumulative latency
histogram — its `/metrics` series `kv_http_request_duration_seconds`, summed over the
labels (kv/metrics.py `RequestMetrics.totals`) — and `at`, its own monotonic clock when it
read them. The node serving `GET /v1/cluster/metrics` asks every member at once over the
authenticated internode link (so the browser reaches one node only: no token for other
nodes, no CORS, no address of theirs it must be able to dial); a member that fails or
does not answer within `TIMEOUT_S` is listed with its error. Rates and the p99 are the
page's: differences between two replies of one node, over that node's clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kv.errors import KvError
from kv.internode import Operation, OpTable, integer, number, obj
from kv.meta import Metadata
from kv.transport import Transport

TIMEOUT_S = 1.0  # the page polls every second: a paused member must not hold up the others
MAX_BUCKETS = 64
MAX_COUNT = 1 << 62

Buckets = tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class StatsRequest:
    def to_wire(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def from_wire(raw: Any) -> StatsRequest:
        obj(raw)
        return StatsRequest()


@dataclass(frozen=True)
class RequestTotals:
    """`count` requests answered; `buckets`: (upper bound in seconds, requests at or under
    it), bounds ascending and finite (the +Inf bucket is `count`); `at`: seconds on the
    node's monotonic clock."""

    count: int
    buckets: Buckets
    at: float

    def to_wire(self) -> dict[str, Any]:
        return {"count": self.count, "buckets": [list(b) for b in self.buckets], "at": self.at}

    @staticmethod
    def from_wire(raw: Any) -> RequestTotals:
        d = obj(raw)
        count = integer(d.get("count"), "count", 0, MAX_COUNT)
        raw_buckets = d.get("buckets")
        if not isinstance(raw_buckets, list) or len(raw_buckets) > MAX_BUCKETS:
            raise ValueError(f"buckets must be a list of at most {MAX_BUCKETS} pairs")
        buckets = tuple(_bucket(b, count) for b in raw_buckets)
        if [b for b, _ in buckets] != sorted({b for b, _ in buckets}):
            raise ValueError("buckets must have distinct bounds in ascending order")
        return RequestTotals(count, buckets, number(d.get("at"), "at"))


def _bucket(raw: Any, count: int) -> tuple[float, int]:
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValueError("a bucket is [upper bound, requests]")
    return number(raw[0], "bucket bound"), integer(raw[1], "bucket requests", 0, count + 1)


class Totals(Protocol):
    def totals(self) -> tuple[int, Buckets]: ...  # kv/metrics.py RequestMetrics


REQUEST_STATS = Operation("request_stats", StatsRequest.from_wire, RequestTotals.from_wire)


class ClusterRequestStats:
    """Serves this node's totals (`request_stats`) and gathers every member's."""

    def __init__(
        self,
        transport: Transport,
        metadata: Callable[[], Metadata],  # raises NotReady before the bootstrap
        requests: Totals,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self._transport = transport
        self._metadata = metadata
        self._requests = requests
        self._clock = clock
        self._timeout = timeout

    def register(self, table: OpTable) -> None:
        table.register(REQUEST_STATS, self.serve)

    async def serve(self, _req: StatsRequest) -> RequestTotals:
        count, buckets = self._requests.totals()
        return RequestTotals(count, buckets, self._clock())

    async def gather(self) -> dict[str, Any]:
        """`GET /v1/cluster/metrics`: `{"nodes": [...]}`, one entry per member in member
        order — `{"node", "count", "buckets", "at"}`, or `{"node", "error"}`."""
        members = [m.id for m in self._metadata().members]
        replies = await asyncio.gather(*(self._ask(node) for node in members))
        return {"nodes": [{"node": n, **r} for n, r in zip(members, replies, strict=True)]}

    async def _ask(self, node: str) -> dict[str, Any]:
        try:
            reply = await self._transport.call(node, REQUEST_STATS, StatsRequest(), self._timeout)
        except KvError as exc:
            return exc.to_wire()
        return reply.to_wire()

"""kv/request_stats.py and RequestMetrics.totals: what `GET /v1/cluster/metrics` gathers for
the status page — each member's request totals as its scrape shows them, the
`request_stats` wire form, and a member that does not answer listed with its error."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kv.errors import PeerUnreachable
from kv.internode import Operation, OpTable
from kv.metrics import LATENCY_BUCKETS, NodeMetrics
from kv.request_stats import ClusterRequestStats, RequestTotals, StatsRequest
from tests.unit.test_meta_membership import metadata


def observed(*seconds: tuple[str, str, float]) -> NodeMetrics:
    metrics = NodeMetrics()
    for route, outcome, s in seconds:
        metrics.requests.observe(route, "none", outcome, s)
    return metrics


def test_totals_are_the_scraped_histogram_summed_over_its_labels() -> None:
    metrics = observed(("key.get", "ok", 0.0004), ("key.get", "not_found", 0.002), ("x", "ok", 30))
    count, buckets = metrics.requests.totals()
    assert count == 3 and [b for b, _ in buckets] == list(LATENCY_BUCKETS)
    (family,) = (
        f
        for f in text_string_to_metric_families(metrics.exposition().decode())
        if f.name == "kv_http_request_duration_seconds"
    )
    scraped: dict[float, float] = {}
    for s in family.samples:
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf":
            scraped[float(s.labels["le"])] = scraped.get(float(s.labels["le"]), 0) + s.value
    assert dict(buckets) == scraped
    assert dict(buckets)[0.0005] == 1 and dict(buckets)[0.0025] == 2 and dict(buckets)[10] == 2


def test_a_node_without_requests_has_empty_buckets() -> None:
    count, buckets = NodeMetrics().requests.totals()
    assert count == 0 and all(n == 0 for _, n in buckets)


def table_of(metrics: NodeMetrics, at: float = 12.5) -> OpTable:
    stats = ClusterRequestStats(FakeTransport({}), metadata, metrics.requests, lambda: at)
    table = OpTable()
    stats.register(table)
    return table


def test_request_stats_crosses_the_wire_and_back() -> None:
    metrics = observed(("key.get", "ok", 0.003))
    wire = asyncio.run(table_of(metrics).dispatch("request_stats", {}))
    reply = RequestTotals.from_wire(json.loads(json.dumps(wire)))
    assert reply == RequestTotals(*metrics.requests.totals(), at=12.5)
    assert StatsRequest.from_wire(StatsRequest().to_wire()) == StatsRequest()


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"count": -1, "buckets": [], "at": 1}, "count"),
        ({"count": 1, "buckets": [[0.1, 2]], "at": 1}, "bucket requests"),
        ({"count": 2, "buckets": [[0.2, 1], [0.1, 2]], "at": 1}, "ascending"),
        ({"count": 2, "buckets": [[0.1, 1], [0.1, 2]], "at": 1}, "distinct"),
        ({"count": 2, "buckets": [[0.1]], "at": 1}, "a bucket is"),
        ({"count": 2, "buckets": [[0.1, 1]] * 65, "at": 1}, "at most 64"),
        ({"count": 2, "buckets": [], "at": "now"}, "at must be a number"),
    ],
)
def test_a_bad_reply_is_refused_naming_why(payload: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        RequestTotals.from_wire(payload)


class FakeTransport:
    """Each member's reply, or the error its call raises."""

    def __init__(self, replies: dict[str, RequestTotals | Exception]) -> None:
        self.replies = replies
        self.asked: list[tuple[str, str, float]] = []

    async def call(self, node: str, op: Operation[Any, Any], request: Any, timeout: float) -> Any:
        self.asked.append((node, op.name, timeout))
        reply = self.replies[node]
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_gather_lists_every_member_in_order_and_an_unreachable_one_with_its_error() -> None:
    one = RequestTotals(3, ((0.001, 1), (0.01, 3)), 5.0)
    transport = FakeTransport(
        {"n1": one, "n2": PeerUnreachable("connection refused"), "n3": RequestTotals(0, (), 9.0)}
    )
    stats = ClusterRequestStats(transport, metadata, NodeMetrics().requests, timeout=0.5)
    found = asyncio.run(stats.gather())
    assert [e["node"] for e in found["nodes"]] == ["n1", "n2", "n3"]
    assert found["nodes"][0] == {
        "node": "n1",
        "count": 3,
        "buckets": [[0.001, 1], [0.01, 3]],
        "at": 5.0,
    }
    assert found["nodes"][1]["error"]["code"] == "unavailable"
    assert {(n, op, t) for n, op, t in transport.asked} == {
        (n, "request_stats", 0.5) for n in ("n1", "n2", "n3")
    }

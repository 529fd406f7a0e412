"""A node's Prometheus metrics (docs/metrics.md) — the only importer of prometheus_client.

Two kinds, so that a request pays for as little as possible:

- per request, `RequestMetrics.observe` (called by the HTTP middleware, kv/http/metrics.py):
  one counter and one histogram child, looked up once per label tuple and cached;
- everything else is read when `/metrics` is scraped, by `NodeCollector`, from the counters
  and state the subsystems keep anyway (most are in `GET /v1/cluster` too): nothing is
  added on a request's path but a dict increment for the sibling count of eventual reads.

Each node has a registry of its own (`NodeMetrics`): tests run several nodes in one
process. Labels are bounded — route names, modes, error codes, Raft group ids, member ids,
keyspace names — never a key. `METRICS` is the one list of what is exposed: the table of
docs/metrics.md mirrors it (tests/unit/test_metrics.py holds the two equal) and
tests/integration/test_metrics.py scrapes a node and finds each.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from kv.metrics_sources import NodeSources, RaftCounters, RaftState

# no `*_created` series beside every counter and histogram (process-wide setting)
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# the text format every Prometheus reads (our names need none of 1.0.0's escaping)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
REQUEST_LABELS = ("route", "mode", "outcome")
# seconds: a loopback eventual GET takes ~1 ms, a linearizable write ~10 ms, a timeout 5 s
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SIBLING_BUCKETS = (1, 2, 3, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Metric:
    name: str  # as scraped: a counter's ends in `_total`
    kind: str  # counter | gauge | histogram | summary
    labels: tuple[str, ...]
    help: str

    @property
    def family(self) -> str:
        """The name a parser gives the family (a counter's without `_total`)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def _m(name: str, kind: str, labels: str, help: str) -> Metric:
    return Metric(name, kind, tuple(labels.split()), help)


METRICS: tuple[Metric, ...] = (
    _m("kv_http_requests_total", "counter", "route mode outcome", "API requests answered"),
    _m(
        "kv_http_request_duration_seconds",
        "histogram",
        "route mode outcome",
        "API request latency, from routing to the response",
    ),
    _m("kv_raft_leader", "gauge", "group", "1 if this node leads the Raft group, else 0"),
    _m("kv_raft_term", "gauge", "group", "Current Raft term"),
    _m("kv_raft_commit_index", "gauge", "group", "Commit index known here"),
    _m("kv_raft_applied_index", "gauge", "group", "Last index applied here"),
    _m("kv_raft_leader_changes_total", "counter", "group", "Leaders seen taking over"),
    _m("kv_raft_proposals_pending", "gauge", "group", "Proposed here, not yet answered"),
    _m("kv_raft_journal_bytes", "gauge", "group", "Bytes of the group's retained Raft log entries"),
    _m(
        "kv_raft_snapshot_duration_seconds",
        "summary",
        "group",
        "Snapshots written here (count) and their write time (sum)",
    ),
    _m("kv_read_repairs_total", "counter", "", "Replicas sent the merged result after a read"),
    _m("kv_read_siblings", "histogram", "", "Live versions (siblings) of found keys per read"),
    _m("kv_hints_pending", "gauge", "target", "Keys held here with a hint for the target"),
    _m("kv_hints_delivered_total", "counter", "target", "Hints acknowledged by the target"),
    _m("kv_anti_entropy_exchanges_total", "counter", "", "Merkle exchanges with replicas"),
    _m(
        "kv_anti_entropy_hashes_compared_total",
        "counter",
        "",
        "Merkle node hashes and bucket entries received and compared",
    ),
    _m("kv_anti_entropy_keys_differing_total", "counter", "", "Keys the exchanges found differ"),
    _m("kv_anti_entropy_keys_repaired_total", "counter", "", "Keys repaired by the exchanges"),
    _m("kv_tombstones_purged_total", "counter", "", "Tombstones purged on every replica"),
    _m("kv_transfers_in_flight", "gauge", "mode", "Partition moves under way on this node"),
    _m("kv_transfer_bytes_total", "counter", "", "Bytes copied in by eventual transfers"),
    _m("kv_storage_keys", "gauge", "keyspace mode", "Records stored here (counted partitions)"),
    _m("kv_storage_bytes", "gauge", "keyspace mode", "Key and value bytes stored here"),
    _m("process_cpu_seconds_total", "counter", "", "User and system CPU time of the process"),
    _m("process_resident_memory_bytes", "gauge", "", "Resident set size of the process"),
    _m("process_open_fds", "gauge", "", "Open file descriptors of the process"),
)
_BY_NAME = {m.name: m for m in METRICS}
_FAMILIES: dict[str, Any] = {
    "counter": CounterMetricFamily,
    "gauge": GaugeMetricFamily,
    "histogram": HistogramMetricFamily,
    "summary": SummaryMetricFamily,
}


def family(name: str) -> Any:
    """An empty family of the metric `name` (of `METRICS`), with its help and labels."""
    m = _BY_NAME[name]
    return _FAMILIES[m.kind](m.family, m.help, labels=m.labels)


class RequestMetrics:
    """The per-request counter and latency histogram (the event loop's thread only)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        counter, seconds = (
            _BY_NAME["kv_http_requests_total"],
            _BY_NAME["kv_http_request_duration_seconds"],
        )
        self._count = Counter(counter.family, counter.help, REQUEST_LABELS, registry=registry)
        self._seconds = Histogram(
            seconds.name, seconds.help, REQUEST_LABELS, buckets=LATENCY_BUCKETS, registry=registry
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe(self, route: str, mode: str, outcome: str, seconds: float) -> None:
        key = (route, mode, outcome)
        children = self._children.get(key)
        if children is None:
            children = (self._count.labels(*key), self._seconds.labels(*key))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def totals(self) -> tuple[int, tuple[tuple[float, int], ...]]:
        """(requests, cumulative latency buckets) summed over every label set: each finite
        bound of LATENCY_BUCKETS with the requests at or under it, as the scrape shows them
        (the status page's rates and p99, kv/request_stats.py)."""
        under = dict.fromkeys(LATENCY_BUCKETS, 0.0)
        count = 0.0
        samples = (s for found in self._seconds.collect() for s in found.samples)
        for sample in samples:
            if sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
                under[float(sample.labels["le"])] += sample.value
        return int(count), tuple((float(b), int(n)) for b, n in under.items())


# ---------------------------------------------------------------------- read at scrape time
class NodeCollector(Collector):
    """Every metric but the requests' and the process's, read from `node` per scrape."""

    def __init__(self, node: NodeSources) -> None:
        self._node = node

    def collect(self) -> Iterator[Any]:
        yield from self._raft()
        yield from self._eventual()
        yield from self._membership()
        yield from self._storage()

    def _raft_groups(self) -> Iterator[tuple[str, RaftState, RaftCounters]]:
        meta = self._node.meta.group
        if meta is not None:
            yield "meta", meta.group.status(), meta.group.stats()
        for gid, (state, counters) in self._node.groups.stats().items():
            yield gid, state, counters

    def _raft(self) -> Iterator[Any]:
        names = ("leader", "term", "commit_index", "applied_index", "leader_changes_total")
        leader, term, commit, applied, changes = (family(f"kv_raft_{n}") for n in names)
        pending, journal = family("kv_raft_proposals_pending"), family("kv_raft_journal_bytes")
        snapshots = family("kv_raft_snapshot_duration_seconds")
        for gid, state, counters in self._raft_groups():
            leader.add_metric([gid], 1 if state.is_leader else 0)
            term.add_metric([gid], state.term)
            commit.add_metric([gid], state.commit_index)
            applied.add_metric([gid], state.last_applied)
            changes.add_metric([gid], counters.leader_changes)
            pending.add_metric([gid], counters.proposals_pending)
            journal.add_metric([gid], counters.journal_bytes)
            snapshots.add_metric(
                [gid], count_value=counters.snapshots, sum_value=counters.snapshot_seconds
            )
        yield from (leader, term, commit, applied, changes, pending, journal, snapshots)

    def _eventual(self) -> Iterator[Any]:
        node = self._node
        yield _one("kv_read_repairs_total", node.coordinator.read_repairs)
        yield sibling_histogram(node.coordinator.siblings_seen)
        yield _by_label("kv_hints_pending", node.handoff.pending())
        yield _by_label("kv_hints_delivered_total", node.handoff.delivered_to)
        totals = node.anti_entropy.totals
        yield _one("kv_anti_entropy_exchanges_total", totals.exchanges)
        yield _one("kv_anti_entropy_hashes_compared_total", totals.hashes)
        yield _one("kv_anti_entropy_keys_differing_total", totals.keys_differing)
        yield _one("kv_anti_entropy_keys_repaired_total", totals.keys_repaired)
        yield _one("kv_tombstones_purged_total", node.reaper.purged)

    def _membership(self) -> Iterator[Any]:
        transfers = self._node.transfers
        moving = sum(p.state in ("copying", "verifying") for p in transfers.progress.values())
        running = int(self._node.raft_moves.status().get("running", 0))
        yield _by_label("kv_transfers_in_flight", {"eventual": moving, "linearizable": running})
        yield _one("kv_transfer_bytes_total", transfers.bytes_moved)

    def _storage(self) -> Iterator[Any]:
        """Sizes per keyspace, of the partitions and Raft groups counted so far: the first
        scrape has every one counted (kv/tally.py; from then on each write through a
        counted range costs one more `get`, docs/metrics.md)."""
        md = self._node.meta.metadata
        keys, stored = family("kv_storage_keys"), family("kv_storage_bytes")
        found = self._node.sizes.by_uid(md.partitions) if md.bootstrapped else {}
        for ks in md.keyspaces:
            size = found.get(ks.uid)
            keys.add_metric([ks.name, ks.consistency], size.keys if size else 0)
            stored.add_metric([ks.name, ks.consistency], size.bytes if size else 0)
        yield from (keys, stored)


def _one(name: str, value: float) -> Any:
    found = family(name)
    found.add_metric([], value)
    return found


def _by_label(name: str, values: Mapping[str, float]) -> Any:
    found = family(name)
    for label, value in sorted(values.items()):
        found.add_metric([label], value)
    return found


def sibling_histogram(seen: Mapping[int, int]) -> Any:
    """`seen` (sibling count → reads) as a histogram over `SIBLING_BUCKETS`."""
    found = family("kv_read_siblings")
    bounds: Iterable[float] = (*SIBLING_BUCKETS, float("inf"))
    buckets = [(_bound(b), sum(n for c, n in seen.items() if c <= b)) for b in bounds]
    total = sum(c * n for c, n in seen.items())
    found.add_metric([], buckets, sum_value=total)
    return found


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else str(bound)


# ---------------------------------------------------------------------- a node's registry
class NodeMetrics:
    """One node's registry: the request metrics, and with a node the scrape-time collector
    and prometheus_client's process collector (CPU, RSS, open files, from /proc)."""

    def __init__(self, node: NodeSources | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestMetrics(self.registry)
        if node is not None:
            self.registry.register(NodeCollector(node))
            ProcessCollector(registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

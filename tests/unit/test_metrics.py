"""kv/metrics.py: the table of docs/metrics.md is `METRICS`; the scrape-time collector
turns a node's counters into bounded label sets; the request metrics count per label tuple.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kv.keyspace import KeyspaceConfig
from kv.meta import Member, Metadata
from kv.metrics import METRICS, NodeMetrics, sibling_histogram
from kv.sizes import Size

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `([a-z_]+)` \| (\w+) \| ([^|]+) \| ([^|]+) \|$")


def documented() -> list[tuple[str, str, tuple[str, ...], str]]:
    rows = [ROW.match(line) for line in DOC.read_text().splitlines()]
    return [(m[1], m[2], tuple(re.findall(r"`(\w+)`", m[3])), m[4].strip()) for m in rows if m]


def test_the_docs_table_is_the_list_of_metrics() -> None:
    assert documented() == [(m.name, m.kind, m.labels, m.help) for m in METRICS]


def test_counters_end_in_total_and_names_are_unique() -> None:
    names = [m.name for m in METRICS]
    assert len(set(names)) == len(names)
    assert all(m.name.endswith("_total") == (m.kind == "counter") for m in METRICS)


def parse(metrics: NodeMetrics) -> dict[str, Any]:
    text = metrics.exposition().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_requests_are_counted_per_label_tuple() -> None:
    metrics = NodeMetrics()
    for seconds in (0.0004, 0.002, 0.002):
        metrics.requests.observe("key.get", "eventual", "ok", seconds)
    metrics.requests.observe("key.get", "eventual", "not_found", 0.001)
    found = parse(metrics)
    counts = {
        s.labels["outcome"]: s.value
        for s in found["kv_http_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts == {"ok": 3, "not_found": 1}
    le = {
        s.labels["le"]: s.value
        for s in found["kv_http_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["outcome"] == "ok"
    }
    assert (le["0.0005"], le["0.001"], le["0.0025"], le["+Inf"]) == (1, 1, 3, 3)


def test_sibling_counts_become_a_cumulative_histogram() -> None:
    family = sibling_histogram({1: 10, 2: 3, 5: 1, 100: 1})
    value = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert value[("kv_read_siblings_bucket", "1")] == 10
    assert value[("kv_read_siblings_bucket", "4")] == 13
    assert value[("kv_read_siblings_bucket", "8")] == 14
    assert value[("kv_read_siblings_bucket", "64")] == 14
    assert value[("kv_read_siblings_bucket", "+Inf")] == 15
    assert value[("kv_read_siblings_count", None)] == 15
    assert value[("kv_read_siblings_sum", None)] == 10 + 6 + 5 + 100


# ---------------------------------------------------------------------- a fake node
@dataclass(frozen=True)
class Status:
    is_leader: bool = True
    term: int = 3
    commit_index: int = 7
    last_applied: int = 6


@dataclass(frozen=True)
class Counters:
    leader_changes: int = 2
    proposals_pending: int = 1
    journal_bytes: int = 4096
    snapshots: int = 2
    snapshot_seconds: float = 0.5


class Group:
    def status(self) -> Status:
        return Status(is_leader=False)

    def stats(self) -> Counters:
        return Counters()


@dataclass
class FakeNode:
    """Every source NodeCollector reads, as plain values."""

    md: Metadata
    groups: Any = None
    meta: Any = None
    coordinator: Any = None
    handoff: Any = None
    anti_entropy: Any = None
    reaper: Any = None
    transfers: Any = None
    raft_moves: Any = None
    sizes: Any = None
    asked: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        ns = _Namespace
        self.groups = ns(stats=lambda: {"l65536": (Status(), Counters())})
        self.meta = ns(group=ns(group=Group()), metadata=self.md)
        self.coordinator = ns(read_repairs=4, siblings_seen={1: 5, 2: 1})
        self.handoff = ns(pending=lambda: {"n2": 3}, delivered_to={"n2": 9, "n3": 1})
        self.anti_entropy = ns(
            totals=ns(exchanges=5, hashes=100, keys_differing=4, keys_repaired=3)
        )
        self.reaper = ns(purged=2)
        self.transfers = ns(
            progress={
                ("eventual", 3, 1): ns(state="copying"),
                ("eventual", 3, 2): ns(state="reported"),
            },
            bytes_moved=1234,
        )
        self.raft_moves = ns(status=lambda: {"running": 1})
        self.sizes = ns(by_uid=self._by_uid)

    def _by_uid(self, partitions: int) -> dict[int, Size]:
        self.asked.append(partitions)
        return {7: Size(10, 1000)}


class _Namespace:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def metadata() -> Metadata:
    return Metadata(
        epoch=2,
        partitions=8,
        members=(Member("n1", "h:1", "h:2"),),
        keyspaces=(
            KeyspaceConfig("carts", "eventual", 3, uid=7),
            KeyspaceConfig("orders", "linearizable", 3, uid=8),
        ),
    )


def samples(found: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in found[name].samples}


def test_the_collector_reads_a_node_with_bounded_labels() -> None:
    node = FakeNode(metadata())
    found = parse(NodeMetrics(node))  # type: ignore[arg-type]
    assert samples(found, "kv_raft_leader") == {(("group", "l65536"),): 1, (("group", "meta"),): 0}
    assert samples(found, "kv_raft_journal_bytes")[(("group", "meta"),)] == 4096
    snap = {s.name: s.value for s in found["kv_raft_snapshot_duration_seconds"].samples}
    assert snap["kv_raft_snapshot_duration_seconds_count"] == 2
    assert samples(found, "kv_hints_delivered")[(("target", "n2"),)] == 9
    assert samples(found, "kv_hints_pending") == {(("target", "n2"),): 3}
    assert samples(found, "kv_transfers_in_flight") == {
        (("mode", "eventual"),): 1,
        (("mode", "linearizable"),): 1,
    }
    assert samples(found, "kv_storage_bytes") == {
        (("keyspace", "carts"), ("mode", "eventual")): 1000,
        (("keyspace", "orders"), ("mode", "linearizable")): 0,
    }
    assert node.asked == [8]
    for family in found.values():
        for sample in family.samples:
            assert "key" not in sample.labels  # never a key in a label

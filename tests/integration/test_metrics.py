"""`GET /metrics` of a real node (issue 13 item 1, docs/metrics.md): after requests in both
modes the scrape parses as the Prometheus text format, holds every metric of the table
(kv/metrics.py `METRICS`, which docs/metrics.md mirrors) with its type, and the request
histograms count what was done, by route, mode and outcome (an error code); with auth on,
a scrape needs a read token.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kv.metrics import METRICS
from tests.integration.conftest import (
    POLL_INTERVAL_S,
    START_DEADLINE_S,
    Api,
    auth_node,
    key_path,
)

EVENTUAL_1 = {"consistency": "eventual", "replication": 1}
_BY_KIND = {m.name: m.kind for m in METRICS}


def scrape(api: Api, **kw: Any) -> dict[str, Any]:
    """Family name → family of the node's /metrics."""
    reply = api.get("/metrics", **kw)
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(reply.body.decode())}


def requests_of(families: dict[str, Any], route: str, mode: str, outcome: str) -> float:
    """The `_count` of the request histogram for these labels (0 if absent)."""
    want = {"route": route, "mode": mode, "outcome": outcome}
    return sum(
        s.value
        for s in families["kv_http_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels == want
    )


def do_requests(api: Api, lin: str, ev: str) -> None:
    for ks in (lin, ev):
        for i in range(3):
            assert api.put(key_path(ks, f"k{i}"), {"value": i}).status == 200
            assert api.get(key_path(ks, f"k{i}")).status == 200
        assert api.get(key_path(ks, "absent")).status == 404
    assert api.get(key_path("no_such_keyspace", "k")).status == 404


def test_every_documented_metric_is_scraped_and_requests_are_counted(api: Api, lin_ks: str) -> None:
    assert api.put("/v1/keyspaces/ev", EVENTUAL_1).status in (200, 201)
    do_requests(api, lin_ks, "ev")
    families = scrape(api)
    missing = [m.name for m in METRICS if m.family not in families]
    assert not missing, f"documented but not scraped: {missing}"
    types = {m.name: families[m.family].type for m in METRICS}
    wrong = {name: kind for name, kind in types.items() if kind != _BY_KIND[name]}
    assert not wrong, f"scraped with another type than documented: {wrong}"
    for mode in ("linearizable", "eventual"):
        assert requests_of(families, "key.put", mode, "ok") == 3
        assert requests_of(families, "key.get", mode, "ok") == 3
        assert requests_of(families, "key.get", mode, "not_found") == 1
    assert requests_of(families, "key.get", "none", "keyspace_not_found") == 1
    counted = [s for s in families["kv_http_requests"].samples if s.labels["route"] == "key.put"]
    assert sum(s.value for s in counted) == 6


def test_raft_groups_and_siblings_are_reported(api: Api, lin_ks: str) -> None:
    families = scrape(api)
    leaders = {s.labels["group"]: s.value for s in families["kv_raft_leader"].samples}
    assert "meta" in leaders and len(leaders) > 1  # the meta group and the data groups
    assert all(value == 1 for value in leaders.values())  # one node: it leads every group
    applied = families["kv_raft_applied_index"].samples
    assert all(s.value > 0 for s in applied)
    sibling_reads = [s for s in families["kv_read_siblings"].samples if s.name.endswith("_count")]
    assert sibling_reads and sibling_reads[0].value > 0


def test_storage_sizes_per_keyspace(api: Api, lin_ks: str) -> None:
    """The first scrape has the partitions counted in the background; a later one shows
    the keys written (a poll with a deadline)."""
    assert api.put("/v1/keyspaces/sized", EVENTUAL_1).status in (200, 201)
    for i in range(5):
        assert api.put(key_path("sized", f"k{i}"), {"value": "x" * 100}).status == 200
    end = time.monotonic() + START_DEADLINE_S
    while True:
        samples = scrape(api)["kv_storage_keys"].samples
        sized = [s.value for s in samples if s.labels == {"keyspace": "sized", "mode": "eventual"}]
        if sized == [5]:
            return
        assert time.monotonic() < end, samples
        time.sleep(POLL_INTERVAL_S)


def test_a_scrape_needs_a_read_token_when_auth_is_on(tmp_path: Path) -> None:
    with auth_node(tmp_path) as (api, admin):
        assert api.get("/metrics").status == 401
        families = scrape(api, headers={"Authorization": f"Bearer {admin}"})
        assert "kv_raft_leader" in families

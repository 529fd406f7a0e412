"""kvctl backup / restore without a cluster (kvctl/backup.py against a fake client), and
the import body's checks (kv/backup.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dynamo_mode.backup import _record
from kv import backup as wire
from kv.batching import chunks
from kv.errors import InvalidRequest, KeyspaceNotFound, NotReady, TooLarge
from kvctl import archive, backup
from kvctl.errors import DAMAGED, REFUSED, UNAVAILABLE, KvctlError
from raft_groups.backup import MIGRATE_BYTES, _weight
from raft_groups.commands import MAX_MIGRATE_ITEMS

CONFIG = {"consistency": "linearizable", "replication": 3}


class FakeCluster:
    """Keyspaces as {name: (config, {partition: records})}; import calls recorded."""

    def __init__(self, partitions: int = 3) -> None:
        self.partitions = partitions
        self.keyspaces: dict[str, tuple[dict[str, Any], dict[int, list[Any]]]] = {}
        self.imported: list[list[Any]] = []
        self.calls: list[str] = []
        self.fail_export_at: int | None = None
        self.unavailable = 0  # import calls to refuse with a 503 first

    def get_keyspace(self, name: str) -> Any:
        self.calls.append("get_keyspace")
        if name not in self.keyspaces:
            raise KeyspaceNotFound(name)
        return {"name": name, **self.keyspaces[name][0]}

    def create_keyspace(self, name: str, **config: Any) -> Any:
        self.calls.append("create_keyspace")
        self.keyspaces[name] = (config, {})
        return {"name": name, **config}

    def export_partition(self, ks: str, partition: int, **query: Any) -> Any:
        if partition == self.fail_export_at:
            raise NotReady("no", retry_after=0.1)
        config, data = self.keyspaces[ks]
        return {
            "keyspace": ks,
            "config": config,
            "partition": partition,
            "partitions": self.partitions,
            "applied_index": 10 + partition,
            "records": data.get(partition, []),
        }

    def import_records(self, ks: str, records: list[Any], **query: Any) -> Any:
        self.calls.append("import_records")
        if self.unavailable:
            self.unavailable -= 1
            raise NotReady("leaderless", retry_after=0.1)
        self.imported.append(records)
        return {"records": len(records), "created": len(records)}


def _records(n: int, prefix: str) -> list[Any]:
    return [[f"{prefix}{i}", {"i": i}, 1, None] for i in range(n)]


def _cluster() -> FakeCluster:
    cluster = FakeCluster()
    cluster.keyspaces["src"] = (CONFIG, {0: _records(2500, "a"), 2: _records(3, "c")})
    return cluster


def _noop(done: int, total: int, records: int) -> None:
    pass


def test_backup_then_restore_round_trips(tmp_path: Path) -> None:
    cluster, out = _cluster(), tmp_path / "src.kvb"
    seen: list[tuple[int, int, int]] = []
    summary = backup.backup(cluster, "src", out, lambda *a: seen.append(a), clock=lambda: 7.0)
    assert (summary.frames, summary.records) == (3 + 1 + 1, 2503)
    assert seen == [(1, 3, 2500), (2, 3, 2500), (3, 3, 2503)]
    assert summary.header == archive.Header("src", "linearizable", CONFIG, 3, 7000)
    assert [p.name for p in tmp_path.iterdir()] == ["src.kvb"]  # no partial file left
    with open(out, "rb") as f:
        frames = list(archive.frames(f))
    assert [f.applied_index for f in frames] == [10, 10, 10, 11, 12]
    backup.restore(cluster, out, "dst", _noop)
    assert cluster.keyspaces["dst"][0] == CONFIG
    restored = [r for batch in cluster.imported for r in batch]
    assert restored == _records(2500, "a") + _records(3, "c")
    assert max(len(b) for b in cluster.imported) <= backup.IMPORT_RECORDS


def test_a_failed_backup_leaves_no_file(tmp_path: Path) -> None:
    cluster, out = _cluster(), tmp_path / "src.kvb"
    cluster.fail_export_at = 2
    with pytest.raises(NotReady):
        backup.backup(cluster, "src", out, _noop)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_backup_keeps_the_previous_archive(tmp_path: Path) -> None:
    cluster, out = _cluster(), tmp_path / "src.kvb"
    backup.backup(cluster, "src", out, _noop)
    before = out.read_bytes()
    cluster.fail_export_at = 1
    with pytest.raises(NotReady):
        backup.backup(cluster, "src", out, _noop)
    assert out.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_an_output_that_cannot_be_written_is_a_refusal(tmp_path: Path) -> None:
    with pytest.raises(KvctlError, match="cannot write"):
        backup.backup(_cluster(), "src", tmp_path / "missing" / "src.kvb", _noop)


def test_a_damaged_archive_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    cluster, out = _cluster(), tmp_path / "src.kvb"
    backup.backup(cluster, "src", out, _noop)
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x40
    out.write_bytes(bytes(data))
    cluster.calls.clear()
    with pytest.raises(KvctlError) as refused:
        backup.restore(cluster, out, "dst", _noop)
    assert refused.value.code == DAMAGED and "nothing was restored" in refused.value.message
    assert cluster.calls == [] and "dst" not in cluster.keyspaces


def test_restore_into_an_existing_keyspace_is_refused(tmp_path: Path) -> None:
    cluster, out = _cluster(), tmp_path / "src.kvb"
    backup.backup(cluster, "src", out, _noop)
    with pytest.raises(KvctlError) as refused:
        backup.restore(cluster, out, "src", _noop)
    assert refused.value.code == REFUSED and "already exists" in refused.value.message
    assert cluster.imported == []
    backup.restore(cluster, out, "src", _noop, resume=True)  # same configuration: finish
    assert sum(len(b) for b in cluster.imported) == 2503


def test_an_unavailable_import_is_sent_again(tmp_path: Path) -> None:
    cluster, out = _cluster(), tmp_path / "src.kvb"
    backup.backup(cluster, "src", out, _noop)
    cluster.unavailable = 2
    backup.restore(cluster, out, "dst", _noop, sleep=lambda s: None)
    assert sum(len(b) for b in cluster.imported) == 2503


def test_a_restore_still_unavailable_says_how_to_finish_it(tmp_path: Path) -> None:
    cluster, out = _cluster(), tmp_path / "src.kvb"
    backup.backup(cluster, "src", out, _noop)
    cluster.unavailable = 10**6
    ticks = iter(range(10**6))  # a clock past RETRY_FOR_S after a few retries
    with pytest.raises(KvctlError) as stopped:
        backup.restore(cluster, out, "dst", _noop, clock=lambda: next(ticks) * 10.0,
                       sleep=lambda s: None)  # fmt: skip
    assert stopped.value.code == UNAVAILABLE and "--resume" in stopped.value.message
    assert "dst" in cluster.keyspaces  # created: a plain re-run is refused, --resume finishes
    cluster.unavailable = 0
    backup.restore(cluster, out, "dst", _noop, resume=True)
    assert sum(len(b) for b in cluster.imported) == 2503


def test_import_batches_bound_records_and_bytes() -> None:
    big = [[f"k{i}", "x" * 1_000_000, 1, None] for i in range(10)]
    sizes = [len(b) for b in backup.batches(big)]
    assert sum(sizes) == 10 and max(sizes) <= 4
    assert [len(b) for b in backup.batches(_records(2001, "k"))] == [1000, 1000, 1]


# ---------------------------------------------------------------------- kv/backup.py
def test_import_body_is_checked() -> None:
    assert wire.records_of({"records": [1]}) == [1]
    for body in (None, [], {"records": []}, {"records": "x"}, {"records": [1], "more": 1}):
        with pytest.raises(InvalidRequest):
            wire.records_of(body)
    with pytest.raises(InvalidRequest):
        wire.records_of({"records": [1] * (wire.MAX_IMPORT_RECORDS + 1)})


def test_linearizable_records_are_checked_as_a_put_is() -> None:
    good = wire.lin_records([["k", [1], 3, None], ["t", "v", 1, 1_800_000_000_000]])
    assert good[1] == wire.LinRecord("t", "v", 1, 1_800_000_000_000)
    bad: list[Any] = [["k", 1, 0, None], ["", 1, 1, None], [1, 1, 1, None], ["k", 1, 1, "x"]]
    bad += [["k", 1, 1], "k", ["k", 1 << 70, 1, None]]
    for record in bad:
        with pytest.raises(InvalidRequest, match="records"):
            wire.lin_records([record])
    with pytest.raises(TooLarge):
        wire.lin_records([["k" * 2000, 1, 1, None]])


def test_internode_messages_round_trip() -> None:
    records = (wire.LinRecord("k", {"a": 1}, 2, None),)
    req = wire.ImportRequest("ks", 5, 3, records, 2.0)
    assert wire.ImportRequest.from_wire(req.to_wire()) == req
    page = wire.ExportPage(9, records)
    assert wire.ExportPage.from_wire(page.to_wire()) == page
    exp = wire.ExportRequest("ks", 5, 3, 2.0)
    assert wire.ExportRequest.from_wire(exp.to_wire()) == exp


# ---------------------------------------------------------------------- the modes' checks
def test_eventual_records_are_checked_before_any_store() -> None:
    good = {"dot": ["n1", 1], "context": {}, "value": [1], "deleted": False}
    assert _record(0, ["k", [good]])[0] == "k"
    bad: list[Any] = [
        ["k", []],
        ["k", [{"dot": ["n1", 0], "context": {}, "value": 1, "deleted": False}]],
        ["k", [{**good, "expires_at": 1 << 60}]],
        ["k", [{**good, "ts": 1 << 64}]],
        ["k", [{**good, "extra": 1}]],
        ["", [good]],
        [1, [good]],
        ["k", good],
    ]
    for record in bad:
        with pytest.raises(InvalidRequest, match="records"):
            _record(3, record)


def _migrate_batches(records: list[wire.LinRecord], now_ms: int = 0) -> list[list[Any]]:
    return chunks(wire.migrate_items(records, now_ms), MAX_MIGRATE_ITEMS, MIGRATE_BYTES, _weight)


def test_linearizable_imports_become_bounded_migrate_batches() -> None:
    records = [wire.LinRecord(f"k{i}", "v", 1, None if i % 2 else 5) for i in range(2500)]
    found = _migrate_batches(records)
    assert [len(b) for b in found] == [1000, 1000, 500]
    assert found[0][0] == ("k0", "v", 5) and found[0][1] == ("k1", "v")
    big = [wire.LinRecord(f"k{i}", "x" * 1_000_000, 1, None) for i in range(9)]
    assert all(len(b) <= 4 for b in _migrate_batches(big))


def test_records_expired_on_the_importing_clock_are_left_out() -> None:
    records = [wire.LinRecord("gone", 1, 1, 1000), wire.LinRecord("due", 2, 1, 1001)]
    records.append(wire.LinRecord("kept", 3, 1, None))
    assert wire.migrate_items(records, 1000) == [("due", 2, 1001), ("kept", 3)]


def test_chunks_bound_count_and_weight_and_keep_order() -> None:
    assert chunks(range(5), 2, 100, lambda i: 1) == [[0, 1], [2, 3], [4]]
    assert chunks([5, 5, 5], 10, 9, lambda i: i) == [[5], [5], [5]]  # one over: its own
    assert chunks([], 2, 9, lambda i: 1) == []

"""A node's local replica of eventual keyspaces over the StorageEngine twin (MemoryEngine).

Storage layout (DESIGN.md §2: a keyspace is a key prefix inside a partition; the keyspace
uid keeps incarnations apart); dotted versions (Preguiça et al., "Dotted Version Vectors",
2010) so blind writes survive as siblings (Dynamo §4.4); storing is a CRDT merge, so
replicas converge whatever the order of deliveries (Dynamo §4.7 anti-entropy, §5 read repair).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dynamo_mode.replica import (
    PREFIX,
    DynamoReplica,
    KeyRef,
    decode_versions,
    encode_versions,
    local_actor,
)
from dynamo_mode.siblings import (
    MAX_SIBLING_BYTES,
    SiblingBytesExceeded,
    SiblingLimitExceeded,
    Version,
    join_context,
    make_version,
    reconcile,
)
from kv.memory import MemoryEngine
from kv.storage import WriteBatch

PROPS = settings(max_examples=60, deadline=None, print_blob=True)
REF = KeyRef(partition=5, uid=3, key="k")
NODES = ("A", "B", "C")


class CountingEngine(MemoryEngine):
    """MemoryEngine that counts write batches (to see that a no-op store writes nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, batch: WriteBatch, *, sync: bool = False) -> None:
        self.writes += 1
        super().write(batch, sync=sync)


def replica(node: str = "A") -> tuple[DynamoReplica, CountingEngine]:
    engine = CountingEngine()
    return DynamoReplica(engine, node), engine


# -- storage key layout ----------------------------------------------------------------


def test_storage_key_layout() -> None:
    ref = KeyRef(partition=0x0102, uid=0x03040506, key="clé")
    assert ref.storage_key() == b"e\x01\x02\x03\x04\x05\x06" + "clé".encode()
    assert KeyRef(0, 0, "").storage_key() == PREFIX + bytes(6)
    assert KeyRef(65535, 2**32 - 1, "x").storage_key() == b"e" + b"\xff" * 6 + b"x"


def test_partitions_sort_numerically() -> None:
    # Big-endian, so byte order is numeric order: 1 < 255 < 256.
    keys = [KeyRef(p, 0, "k").storage_key() for p in (256, 1, 255)]
    assert sorted(keys) == [KeyRef(p, 0, "k").storage_key() for p in (1, 255, 256)]


refs = st.builds(
    KeyRef,
    partition=st.sampled_from([0, 1, 255, 256, 65535]),
    uid=st.sampled_from([0, 1, 2, 256, 2**32 - 1]),
    key=st.text(alphabet="ab\x00\xff€", max_size=4),
)


@PROPS
@given(st.lists(refs, min_size=1, max_size=20, unique=True))
def test_storage_keys_order_by_partition_then_uid_then_key(ref_list: list[KeyRef]) -> None:
    by_key = sorted(ref_list, key=KeyRef.storage_key)
    by_fields = sorted(ref_list, key=lambda r: (r.partition, r.uid, r.key.encode()))
    assert by_key == by_fields  # so one partition, and one incarnation, is contiguous
    assert len({r.storage_key() for r in ref_list}) == len(ref_list)  # injective


@PROPS
@given(st.lists(refs, min_size=1, max_size=20, unique=True), refs)
def test_prefix_scans_return_one_partition_and_one_incarnation(
    ref_list: list[KeyRef], probe: KeyRef
) -> None:
    # What anti-entropy walks (DESIGN.md §4) and what a re-created keyspace must not see.
    engine = MemoryEngine()
    batch = WriteBatch()
    for ref in ref_list:
        batch.put(ref.storage_key(), json.dumps(ref.to_wire()).encode())
    engine.write(batch)
    partition = PREFIX + struct.pack(">H", probe.partition)
    incarnation = PREFIX + struct.pack(">HI", probe.partition, probe.uid)
    in_partition = [KeyRef.from_wire(json.loads(v)) for _, v in engine.iterate_prefix(partition)]
    in_uid = [KeyRef.from_wire(json.loads(v)) for _, v in engine.iterate_prefix(incarnation)]
    assert set(in_partition) == {r for r in ref_list if r.partition == probe.partition}
    assert set(in_uid) == {r for r in in_partition if r.uid == probe.uid}


def test_a_new_incarnation_does_not_see_the_old_one() -> None:
    rep, _ = replica()
    old, new = KeyRef(5, 3, "k"), KeyRef(5, 9, "k")
    rep.coordinate(old, {}, "old data", False, 10)
    assert rep.fetch(new) == ()
    assert [v.value for v in rep.fetch(old)] == ["old data"]


# -- KeyRef wire validation ----------------------------------------------------------------


@PROPS
@given(refs)
def test_keyref_wire_round_trip(ref: KeyRef) -> None:
    assert KeyRef.from_wire(json.loads(json.dumps(ref.to_wire()))) == ref


@pytest.mark.parametrize(
    "wire",
    [
        None,
        [5, 3, "k"],
        "ref",
        {},
        {"uid": 3, "key": "k"},
        {"partition": -1, "uid": 3, "key": "k"},
        {"partition": 65536, "uid": 3, "key": "k"},
        {"partition": "5", "uid": 3, "key": "k"},
        {"partition": 5.0, "uid": 3, "key": "k"},
        {"partition": 5, "uid": -1, "key": "k"},
        {"partition": 5, "uid": 2**32, "key": "k"},
        {"partition": 5, "uid": None, "key": "k"},
        {"partition": 5, "uid": 3},
        {"partition": 5, "uid": 3, "key": 7},
        {"partition": 5, "uid": 3, "key": b"k"},
    ],
)
def test_keyref_from_wire_rejects(wire: Any) -> None:
    with pytest.raises(ValueError):
        KeyRef.from_wire(wire)


@pytest.mark.parametrize(
    "wire",
    [{"partition": True, "uid": 3, "key": "k"}, {"partition": 5, "uid": False, "key": "k"}],
)
def test_keyref_from_wire_rejects_bools(wire: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        KeyRef.from_wire(wire)


# -- coordinate (DVV: the coordinator mints the dot) ---------------------------------------


def test_fetch_of_an_absent_key_is_empty() -> None:
    assert replica()[0].fetch(REF) == ()


def test_coordinate_mints_increasing_dots_and_keeps_blind_writes_as_siblings() -> None:
    # DVV paper: blind writes through one coordinator must not supersede each other.
    rep, _ = replica("A")
    dots = [rep.coordinate(REF, {}, f"v{i}", False, 10)[0].dot for i in range(3)]
    assert dots == [("A", 1), ("A", 2), ("A", 3)]
    assert [v.value for v in rep.fetch(REF)] == ["v0", "v1", "v2"]


def test_write_with_the_joined_context_supersedes_the_siblings() -> None:
    # Dynamo §4.4: the client reads every sibling and writes back with the context.
    rep, _ = replica("A")
    rep.coordinate(REF, {}, "x", False, 10)
    rep.coordinate(REF, {}, "y", False, 10)
    new, merged = rep.coordinate(REF, join_context(rep.fetch(REF)), "xy", False, 10)
    assert new.dot == ("A", 3) and merged == (new,)
    assert rep.fetch(REF) == (new,)


def test_coordinate_dot_exceeds_the_clients_context() -> None:
    rep, _ = replica("A")
    new, _ = rep.coordinate(REF, {"A": 7, "B": 2}, "v", False, 10)
    assert new.dot == ("A", 8)
    assert new.context_clock() == {"A": 7, "B": 2}


def test_delete_is_stored_as_a_tombstone() -> None:
    rep, _ = replica("A")
    rep.coordinate(REF, {}, "x", False, 10)
    tomb, merged = rep.coordinate(REF, join_context(rep.fetch(REF)), None, True, 10)
    assert tomb.deleted and merged == (tomb,) and rep.fetch(REF) == (tomb,)


def test_sibling_limit_writes_nothing() -> None:
    rep, engine = replica("A")
    rep.coordinate(REF, {}, "x", False, 2)
    rep.coordinate(REF, {}, "y", False, 2)
    before, writes = rep.fetch(REF), engine.writes
    with pytest.raises(SiblingLimitExceeded):
        rep.coordinate(REF, {}, "z", False, 2)
    assert rep.fetch(REF) == before and engine.writes == writes


# -- store: a CRDT merge ----------------------------------------------------------------


def test_store_writes_only_when_something_changed() -> None:
    rep, engine = replica("B")
    v = make_version(("A", 1), {}, "x")
    assert rep.store(REF, (v,)) == (v,) and engine.writes == 1
    assert rep.store(REF, (v,)) == (v,) and engine.writes == 1
    assert rep.store(REF, ()) == (v,) and engine.writes == 1
    newer = make_version(("A", 2), {"A": 1}, "y")
    assert rep.store(REF, (newer,)) == (newer,) and engine.writes == 2
    assert rep.store(REF, (v,)) == (newer,) and engine.writes == 2  # a stale copy is dropped


values = st.sampled_from(["x", "y", 1, None, [1, 2], {"a": "b"}])


@st.composite
def deliveries(draw: st.DrawFn) -> list[tuple[Version, ...]]:
    """Whole reconciled sets that replicas A, B, C produce and send to each other.

    Only whole sets travel (the causal-closure invariant of dynamo_mode/siblings.py): the
    coordinator's merged result, read-repair payloads and anti-entropy transfers.
    """
    reps = {n: DynamoReplica(MemoryEngine(), n) for n in NODES}
    sent: list[tuple[Version, ...]] = []
    for _ in range(draw(st.integers(1, 12))):
        node = draw(st.sampled_from(NODES))
        step = draw(st.sampled_from(["blind", "read-write", "stale-write", "sync"]))
        if step == "sync":
            payload = reps[node].fetch(REF)
            reps[draw(st.sampled_from(NODES))].store(REF, payload)
            sent.append(payload)
            continue
        context: dict[str, int] = {}
        if step == "read-write":
            context = join_context(reps[node].fetch(REF))
        elif step == "stale-write" and sent:
            context = join_context(draw(st.sampled_from(sent)))
        _, merged = reps[node].coordinate(REF, context, draw(values), draw(st.booleans()), 1000)
        sent.append(merged)
    return sent


def _store_all(sets: list[tuple[Version, ...]]) -> tuple[tuple[Version, ...], CountingEngine]:
    rep, engine = replica("Z")
    for versions in sets:
        rep.store(REF, versions)
    return rep.fetch(REF), engine


@PROPS
@given(deliveries(), st.data())
def test_store_in_any_order_converges(sets: list[tuple[Version, ...]], data: st.DataObject) -> None:
    # Oracle: reconcile everything ever sent at once.
    expected = reconcile(v for versions in sets for v in versions)
    event(f"{len(expected)} final version(s)")
    in_order, _ = _store_all(sets)
    shuffled, _ = _store_all(data.draw(st.permutations(sets), label="order"))
    assert in_order == shuffled == expected
    assert [v.to_wire() for v in in_order] == [v.to_wire() for v in expected]  # values too


@PROPS
@given(deliveries(), st.data())
def test_store_is_idempotent(sets: list[tuple[Version, ...]], data: st.DataObject) -> None:
    final, engine = _store_all(sets)
    rep = DynamoReplica(engine, "Z")
    writes = engine.writes
    again = data.draw(st.lists(st.sampled_from(sets), max_size=5), label="redelivered")
    for versions in again:
        assert rep.store(REF, versions) == final
    assert rep.store(REF, final) == final
    assert engine.writes == writes


# -- encoding --------------------------------------------------------------------------


@PROPS
@given(deliveries())
def test_encode_decode_round_trip(sets: list[tuple[Version, ...]]) -> None:
    for versions in sets:
        raw = encode_versions(versions)
        assert decode_versions(json.loads(raw)) == versions


def test_decode_versions_round_trips_a_tombstone_and_json_values() -> None:
    versions = (
        make_version(("A", 1), {}, {"nested": [1, None, "ü"]}),
        make_version(("B", 3), {"A": 1, "C": 2}, None, deleted=True),
    )
    assert decode_versions(json.loads(encode_versions(versions))) == versions


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {"dot": ["A", 1]},
        "[]",
        [{"dot": ["A", 1], "context": {}, "value": 1}],  # missing "deleted"
        [{"dot": ["A", 0], "context": {}, "value": 1, "deleted": False}],
        [{"dot": ["A", 1], "context": {"A": 1}, "value": 1, "deleted": False}],
        [{"dot": ["A", 1], "context": {}, "value": 1, "deleted": "no"}],
    ],
)
def test_decode_versions_rejects_malformed(raw: Any) -> None:
    with pytest.raises(ValueError):
        decode_versions(raw)


def test_a_fresh_store_gets_a_new_actor_and_keeps_it() -> None:
    engine = MemoryEngine()
    actor = local_actor(engine, "n1", 7)
    assert actor == "n1@7"
    assert local_actor(engine, "n1", 8) == "n1@7"  # restarts keep it: it is in the store
    wiped = MemoryEngine()
    assert local_actor(wiped, "n1", 9) == "n1@9"  # a wiped store never reuses the old one


def test_a_store_with_data_from_before_actors_keeps_the_node_id() -> None:
    engine = MemoryEngine()
    replica = DynamoReplica(engine, "n1")
    replica.coordinate(KeyRef(1, 1, "k"), {}, "v", False, 8)
    assert local_actor(engine, "n1", 5) == "n1"
    minted, _ = DynamoReplica(engine, "n1", actor="n1@5").coordinate(
        KeyRef(1, 1, "j"), {}, "v", False, 8
    )
    assert minted.dot == ("n1@5", 1)


def test_a_scan_batch_stops_at_its_byte_budget_and_resumes_after_it() -> None:
    """A transfer batch stays under the internode frame cap however large the values
    (dynamo_mode/replica_server.py SCAN_BATCH_BYTES); at least one key per batch."""
    rep, _ = replica()
    for key in "abcde":
        rep.coordinate(KeyRef(5, 3, key), {}, "x" * 1000, False, 10)
    first, done = rep.scan(5, 3, None, 100, max_bytes=2500)
    assert [ref.key for ref, _ in first] == ["a", "b", "c"] and not done
    rest, done = rep.scan(5, 3, "c", 100, max_bytes=2500)
    assert [ref.key for ref, _ in rest] == ["d", "e"] and done
    one, done = rep.scan(5, 3, None, 100, max_bytes=1)
    assert [ref.key for ref, _ in one] == ["a"] and not done


def test_sibling_bytes_limit_writes_nothing_and_a_merge_is_never_refused() -> None:
    """Only a mint is checked (dynamo_mode/siblings.py, "Sibling bytes policy")."""
    rep, engine = replica("A")
    big = "x" * (MAX_SIBLING_BYTES // 3)
    rep.coordinate(REF, {}, f"1{big}", False, 10)
    rep.coordinate(REF, {}, f"2{big}", False, 10)
    before, writes = rep.fetch(REF), engine.writes
    with pytest.raises(SiblingBytesExceeded):
        rep.coordinate(REF, {}, f"3{big}", False, 10)
    assert rep.fetch(REF) == before and engine.writes == writes
    # Another replica's versions are merged whatever the size of the result.
    other, _ = replica("B")
    other.coordinate(REF, {}, f"4{big}", False, 10)
    other.coordinate(REF, {}, f"5{big}", False, 10)
    merged = rep.store(REF, other.fetch(REF))
    assert len(merged) == 4 and len(encode_versions(merged)) > MAX_SIBLING_BYTES
    # A write that resolves them all with the context of a full read fits again.
    _, resolved = rep.coordinate(REF, join_context(merged), "resolved", False, 10)
    assert [v.value for v in resolved] == ["resolved"]

"""Key listing's pure parts: the page merge and cursor (kv/listing.py), an eventual
partition's replica merge (dynamo_mode/listing.py) and the scans of both modes' storage."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamo_mode.listing import partition_slice
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.scan_messages import ScanBatch
from dynamo_mode.siblings import make_version
from kv.errors import InvalidRequest
from kv.listing import MAX_LIMIT, Page, Slice, check_text, matches, merge, scan_range
from kv.memory import MemoryEngine
from raft_groups import state_machine as sm
from raft_groups.commands import Command, encode

KEYS = st.lists(st.text(min_size=1, max_size=4), unique=True, max_size=40)


def _slices(keys: list[str], parts: int, cut: int, prefix: str, after: str | None) -> list[Slice]:
    """Partition `keys` by hash, then each partition's slice as a scan of `cut` keys does."""
    out = []
    for p in range(parts):
        mine = sorted(k for k in keys if hash(k) % parts == p and matches(k, prefix, after))
        taken = mine[:cut]
        out.append(Slice(tuple(taken), taken[-1] if len(mine) >= cut and taken else None))
    return out


def _paginate(keys: list[str], parts: int, limit: int, prefix: str = "") -> list[str]:
    listed: list[str] = []
    after: str | None = None
    for _ in range(10_000):
        page = merge(_slices(keys, parts, limit, prefix, after), limit)
        assert len(page.keys) <= limit
        assert list(page.keys) == sorted(page.keys)
        listed.extend(page.keys)
        if page.next is None:
            return listed
        assert after is None or page.next > after  # progress
        after = page.next
    raise AssertionError("pagination did not end")


@given(KEYS, st.integers(1, 5), st.integers(1, 7), st.sampled_from(["", "a", "ab", "\xff"]))
def test_pagination_lists_every_matching_key_once_in_order(
    keys: list[str], parts: int, limit: int, prefix: str
) -> None:
    want = sorted(k for k in keys if k.startswith(prefix))
    assert _paginate(keys, parts, limit, prefix) == want


def test_a_full_page_continues_from_its_last_key() -> None:
    page = merge([Slice(("a", "c"), None), Slice(("b", "d"), None)], 3)
    assert page == Page(("a", "b", "c"), "c")


def test_a_page_stops_at_the_smallest_bound() -> None:
    # the second partition was scanned only up to "b": keys past it may be missing there
    page = merge([Slice(("a", "c", "e"), None), Slice(("b",), "b")], 10)
    assert page == Page(("a", "b"), "b")


def test_an_exhausted_listing_has_no_next() -> None:
    assert merge([Slice((), None), Slice(("x",), None)], 1) == Page(("x",), None)
    assert merge([], 5) == Page((), None)


def test_scan_range() -> None:
    assert scan_range("", None) == (b"", None)
    assert scan_range("ab", None) == (b"ab", b"ac")
    assert scan_range("ab", "a") == (b"ab", b"ac")
    assert scan_range("ab", "abc") == (b"abc\0", b"ac")
    assert scan_range("ab", "b") is None
    assert scan_range("a\U0010ffff", None) == (b"a\xf4\x8f\xbf\xbf", b"a\xf4\x8f\xbf\xc0")


def test_check_text_names_the_field() -> None:
    with pytest.raises(InvalidRequest, match="prefix"):
        check_text("prefix", "x" * 1025)
    with pytest.raises(InvalidRequest, match="after"):
        check_text("after", "\ud800")
    check_text("after", "é" * 512)


def test_partition_slice_hides_tombstones_merged_across_replicas() -> None:
    v1 = make_version(("A", 1), {}, None)
    gone = make_version(("B", 1), {"A": 1}, None, deleted=True)
    only_a = make_version(("A", 2), {}, None)
    a = ScanBatch((("k1", (v1,)), ("k2", (only_a,))), True)
    b = ScanBatch((("k1", (gone,)),), True)
    assert partition_slice([a, b], 0) == Slice(("k2",), None)
    assert partition_slice([a], 0) == Slice(("k1", "k2"), None)  # w=1: one replica has it


def test_partition_slice_is_complete_only_up_to_a_cut_replica() -> None:
    v = make_version(("A", 1), {}, None)
    full = ScanBatch((("a", (v,)), ("b", (v,)), ("c", (v,))), True)
    cut = ScanBatch((("a", (v,)),), False)
    assert partition_slice([full, cut], 0) == Slice(("a",), "a")


def test_replica_scan_with_a_prefix() -> None:
    replica = DynamoReplica(MemoryEngine(), "A")
    v = make_version(("A", 1), {}, 1)
    for key in ["a", "ab", "abc", "abd", "b", "ab\xff"]:
        replica.store(KeyRef(3, 9, key), (v,))
    replica.store(KeyRef(4, 9, "ab1"), (v,))  # another partition
    found, done = replica.scan(3, 9, "abc", 10, key_prefix="ab")
    assert [r.key for r, _ in found] == ["abd", "ab\xff"] and done
    found, done = replica.scan(3, 9, None, 2, key_prefix="ab")
    assert [r.key for r, _ in found] == ["ab", "abc"] and not done


def test_state_machine_keys() -> None:
    engine = MemoryEngine()
    keys = ["x", "xa", "xb", "y", "é"]
    for index, key in enumerate([*keys, "xz"], start=1):
        batch, _ = sm.apply(engine, 5, index, encode(Command("put", 7, key, 1)))
        engine.write(batch)
    batch, _ = sm.apply(engine, 5, 7, encode(Command("delete", 7, "xz")))
    engine.write(batch)
    batch, _ = sm.apply(engine, 5, 8, encode(Command("put", 8, "xc", 1)))  # other uid
    engine.write(batch)
    assert sm.keys(engine, 5, 7, "", None, 100) == ["x", "xa", "xb", "y", "é"]
    assert sm.keys(engine, 5, 7, "x", "x", 1) == ["xa"]
    assert sm.keys(engine, 5, 7, "x", "xb", 10) == []
    assert sm.keys(engine, 5, 7, "", "y", MAX_LIMIT) == ["é"]


def test_random_partitions_against_sorted(seed: int = random.randrange(1 << 30)) -> None:
    print("seed", seed)
    rng = random.Random(seed)
    keys = list(
        {"".join(rng.choice("ab\xe9") for _ in range(rng.randint(1, 5))) for _ in range(300)}
    )
    assert _paginate(keys, 8, 7) == sorted(keys)

"""The Raft partition state machine against a naive register oracle (STYLE.md rule 7).

The oracle is a dict of (partition, uid, key) -> (value, version) plus a dict of request
ids -> (first index, result), written straight from DESIGN.md §3 and Raft §8. Properties:

- any entry sequence through `apply` + `MemoryEngine.write` gives the oracle's results,
  data, applied indexes and live request ids;
- journal replay (DESIGN.md §3): re-applying every prefix after it was applied changes
  nothing and yields (empty batch, None); the rest of the journal then gives the same
  results and the same stored bytes as one pass;
- `decode(encode(c)) == c`, and `decode` raises nothing but ValueError on any bytes.

Failures print a `@reproduce_failure` blob (print_blob=True).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kv.memory import MemoryEngine
from raft_groups import state_machine as sm
from raft_groups.commands import (
    BARRIER,
    MAX_REQUEST_ID_CHARS,
    MAX_UID,
    Command,
    Op,
    decode,
    encode,
)

ALL_OPS: list[Op] = ["put", "delete", "barrier"]
PROPS = settings(max_examples=150, deadline=None, print_blob=True)

Result = dict[str, Any]
Step = tuple[int, int, bytes]  # (partition, index gap, raw entry)

# --- strategies ----------------------------------------------------------------------------

unicode = st.characters(codec="utf-8")  # no lone surrogates: keys become UTF-8 storage bytes
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def any_command(draw: st.DrawFn) -> Command:
    op = draw(st.sampled_from(ALL_OPS))
    if op == "barrier":
        return BARRIER
    return Command(
        op,
        draw(st.integers(1, MAX_UID)),
        draw(st.text(unicode, min_size=1)),
        draw(json_values) if op == "put" else None,
        draw(st.none() | st.integers(0, 2**64)),
        draw(st.text(unicode, max_size=MAX_REQUEST_ID_CHARS)),
    )


REQUEST_IDS = [f"r{n}" for n in range(8)]
ANY_ID = st.just("") | st.sampled_from(REQUEST_IDS)


@st.composite
def small_command(draw: st.DrawFn, request_ids: st.SearchStrategy[str] = ANY_ID) -> Command:
    # Few keys and versions, so CAS hits and misses; enough request ids that more than
    # EXPIRE_PER_APPLY of them can wait for the sweep.
    op = draw(st.sampled_from([*ALL_OPS, "put"]))
    if op == "barrier":
        return BARRIER
    return Command(
        op,
        draw(st.sampled_from([1, 2])),
        draw(st.sampled_from(["a", "b", "é"])),
        draw(st.integers(0, 9) | st.text(max_size=2)) if op == "put" else None,
        draw(st.none() | st.none() | st.integers(0, 3)),
        draw(request_ids),
    )


malformed = st.binary(max_size=12) | st.binary(max_size=12).map(lambda b: b"\x01" + b)
gaps = st.integers(1, 3) | st.sampled_from([sm.RETAIN_REQUESTS // 2, sm.RETAIN_REQUESTS])
entries = small_command().map(encode) | malformed
steps = st.lists(st.tuples(st.sampled_from([0, 1]), gaps, entries), max_size=25)


# --- the oracle ----------------------------------------------------------------------------


def what(cmd: Command) -> str:
    """A command without its request id, as JSON tells values apart (1, 1.0 and true are
    three values; key order in objects does not count)."""
    value = cmd.value if cmd.op == "put" else None
    return json.dumps([cmd.op, cmd.uid, cmd.key, value, cmd.if_version], sort_keys=True)


@dataclass
class Oracle:
    data: dict[tuple[int, int, str], tuple[Any, int]] = field(default_factory=dict)
    seen: dict[tuple[int, str], tuple[int, Result, str]] = field(default_factory=dict)
    applied: dict[int, int] = field(default_factory=dict)

    def apply(self, partition: int, index: int, raw: bytes) -> Result | None:
        if index <= self.applied.get(partition, 0):
            return None
        self.applied[partition] = index
        try:
            cmd = decode(raw)
        except ValueError:
            return {"ok": False, "code": "invalid_command"}
        rid = (partition, cmd.request_id)
        first = self.seen.get(rid)
        if cmd.request_id and first and index - first[0] < sm.RETAIN_REQUESTS:
            if first[2] != what(cmd):  # the id names another command
                return {"ok": False, "code": "request_id_conflict"}
            return first[1]
        result = self.execute(partition, cmd)
        if cmd.request_id:
            self.seen[rid] = (index, result, what(cmd))
        return result

    def execute(self, partition: int, cmd: Command) -> Result:
        if cmd.op == "barrier":
            return {"ok": True}
        key = (partition, cmd.uid, cmd.key)
        version = self.data[key][1] if key in self.data else 0
        if cmd.if_version is not None and cmd.if_version != version:
            return {"ok": False, "code": "condition_failed", "current_version": version}
        if cmd.op == "put":
            self.data[key] = (cmd.value, version + 1)
            return {"ok": True, "version": version + 1}
        existed = self.data.pop(key, None) is not None
        return {"ok": True, "version": 0, "existed": existed}

    def live_requests(self, partition: int) -> dict[bytes, int]:
        next_index = self.applied.get(partition, 0) + 1
        return {
            rid.encode(): first
            for (p, rid), (first, _, _) in self.seen.items()
            if p == partition and next_index - first < sm.RETAIN_REQUESTS
        }


# --- driving the real state machine --------------------------------------------------------


def indexed(steps: list[Step]) -> list[tuple[int, int, bytes]]:
    """(partition, log index, raw): per-partition indexes advancing by each step's gap."""
    last: dict[int, int] = {}
    out = []
    for partition, gap, raw in steps:
        last[partition] = last.get(partition, 0) + gap
        out.append((partition, last[partition], raw))
    return out


def run(engine: MemoryEngine, journal: list[tuple[int, int, bytes]]) -> list[Result | None]:
    results = []
    for partition, index, raw in journal:
        batch, result = sm.apply(engine, partition, index, raw)
        engine.write(batch)
        results.append(result)
    return results


def comparable(result: Result | None) -> Result | None:
    if result is None or result.get("code") not in ("invalid_command", "request_id_conflict"):
        return result
    assert isinstance(result["message"], str) and result["message"]
    return {k: v for k, v in result.items() if k != "message"}


def stored_data(engine: MemoryEngine, partition: int) -> dict[tuple[int, int, str], Any]:
    prefix = sm.group_prefix(partition)
    out = {}
    for raw_key, _ in engine.iterate(*sm.group_range(partition)):
        uid = int.from_bytes(raw_key[len(prefix) : len(prefix) + 4], "big")
        if uid:
            key = raw_key[len(prefix) + 4 :].decode()
            out[(partition, uid, key)] = sm.read(engine, partition, uid, key)
    return out


def dedupe_table(engine: MemoryEngine, partition: int) -> dict[bytes, int]:
    """request id -> first index, checking the rid/rix one-to-one invariant on the way."""
    area = sm.group_prefix(partition) + b"\0\0\0\0"
    by_index = {
        int.from_bytes(k[len(area) + 4 :], "big"): rid
        for k, rid in engine.iterate_prefix(area + b"rix/")
    }
    by_rid = {
        k[len(area) + 4 :]: json.loads(v)["index"] for k, v in engine.iterate_prefix(area + b"rid/")
    }
    assert sorted(by_index.items()) == sorted((i, rid) for rid, i in by_rid.items())
    return by_rid


# --- properties ----------------------------------------------------------------------------


@PROPS
@given(steps=steps)
def test_apply_agrees_with_the_register_oracle(steps: list[Step]) -> None:
    assert_agrees_with_oracle(indexed(steps))


@settings(PROPS, max_examples=80)
@given(
    first=st.lists(small_command(st.sampled_from(REQUEST_IDS)), min_size=4, max_size=12),
    gap=st.integers(sm.RETAIN_REQUESTS - 3, sm.RETAIN_REQUESTS + 3),
    retries=st.lists(small_command(st.sampled_from(REQUEST_IDS)), max_size=12),
)
def test_request_ids_across_the_retention_window(
    first: list[Command], gap: int, retries: list[Command]
) -> None:
    # A burst of requests, then a jump to the window's edge and more requests re-using the
    # same few ids: some still deduped, some expired, some waiting for the bounded sweep.
    journal = [(0, i, encode(c)) for i, c in enumerate(first, start=1)]
    after = len(first) + gap
    journal += [(0, after + i, encode(c)) for i, c in enumerate(retries)]
    assert_agrees_with_oracle(journal)


def assert_agrees_with_oracle(journal: list[tuple[int, int, bytes]]) -> None:
    engine, oracle = MemoryEngine(), Oracle()
    for partition, index, raw in journal:
        batch, result = sm.apply(engine, partition, index, raw)
        engine.write(batch)
        assert comparable(result) == oracle.apply(partition, index, raw)
    for partition in (0, 1):
        assert stored_data(engine, partition) == {
            k: v for k, v in oracle.data.items() if k[0] == partition
        }
        assert sm.applied_index(engine, partition) == oracle.applied.get(partition, 0)
        live = oracle.live_requests(partition)
        table = dedupe_table(engine, partition)
        assert table.items() >= live.items()  # expired ones may wait for the sweep


@PROPS
@given(steps=steps)
def test_replaying_every_prefix_changes_nothing(steps: list[Step]) -> None:
    journal = indexed(steps)
    once = MemoryEngine()
    expected = run(once, journal)
    for cut in range(len(journal) + 1):
        engine = MemoryEngine()
        assert run(engine, journal[:cut]) == expected[:cut]
        before = list(engine.iterate())
        for partition, index, raw in journal[:cut]:  # restart: the journal from the start
            batch, result = sm.apply(engine, partition, index, raw)
            assert (len(batch), result) == (0, None)
        assert list(engine.iterate()) == before
        assert run(engine, journal[cut:]) == expected[cut:]
        assert list(engine.iterate()) == list(once.iterate())


@PROPS
@given(cmd=any_command())
def test_encode_decode_round_trip(cmd: Command) -> None:
    raw = encode(cmd)
    assert raw[0] == 1
    assert decode(raw) == cmd


@PROPS
@given(raw=st.binary() | st.text().map(lambda t: b"\x01" + t.encode()))
def test_decode_raises_only_value_error(raw: bytes) -> None:
    try:
        decode(raw)
    except ValueError as exc:
        assert str(exc)


@PROPS
@given(cmd=any_command(), data=st.data())
def test_decode_of_a_damaged_encoding_is_a_command_or_value_error(
    cmd: Command, data: st.DataObject
) -> None:
    raw = bytearray(encode(cmd))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        assert isinstance(decode(bytes(raw[:cut])), Command)
    except ValueError as exc:
        assert str(exc)


@PROPS
@given(raw=malformed, index=st.integers(1, 2 * sm.RETAIN_REQUESTS))
def test_apply_of_a_malformed_entry_writes_only_the_applied_index(raw: bytes, index: int) -> None:
    batch, result = sm.apply(MemoryEngine(), 3, index, raw)
    assert result is not None and result["code"] == "invalid_command"
    assert batch.ops == ((sm.group_prefix(3) + b"\0\0\0\0applied", index.to_bytes(8, "big")),)

"""Key expiry (docs/ttl.md) against naive oracles (STYLE.md rule 7).

Linearizable (raft_groups/expiry.py through `state_machine.apply`): the oracle is a dict
key -> (value, version, expires_at) and a horizon that is the largest `now` any `expire`
carried, written from the docs: a key is absent iff its expiry is at or below the horizon;
absent means version 0. After every entry the state machine agrees with it, and its
expiry index holds exactly one entry per stored record with an expiry.

Eventual (dynamo_mode/expiry.py with the replica): replicas that receive random subsets
of random TTL writes, each expiring them on its own clock, converge to one version set
once they exchange (the tombstone of a version is a function of the version), never show
an expired version, and keep a marker for a key iff a stored live version expires.

Failures print a `@reproduce_failure` blob (print_blob=True).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_mode import expiry as dynamo_expiry
from dynamo_mode import siblings
from dynamo_mode.replica import DynamoReplica, KeyRef
from dynamo_mode.siblings import Version
from kv.memory import MemoryEngine
from raft_groups import expiry as raft_expiry
from raft_groups import state_machine as sm
from raft_groups.commands import Command, encode
from raft_groups.layout import bookkeeping_key, load_record

PROPS = settings(max_examples=150, deadline=None, print_blob=True)
UID = 3
KEYS = ["a", "b", "c"]
T0 = 1_000_000

# --- linearizable -------------------------------------------------------------------------

raft_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"),
            st.sampled_from(KEYS),
            st.none() | st.integers(1, 50),  # ttl_ms
            st.integers(0, 100),  # the leader's clock, after T0
            st.none() | st.integers(0, 3),  # if_version
        ),
        st.tuples(st.just("delete"), st.sampled_from(KEYS), st.none() | st.integers(0, 3)),
        st.tuples(st.just("expire"), st.integers(0, 150)),
    ),
    max_size=40,
)


def _command(step: tuple[Any, ...], n: int) -> Command:
    if step[0] == "put":
        _, key, ttl, now, cond = step
        stamp = {} if ttl is None else {"ttl_ms": ttl, "now": T0 + now}
        return Command("put", UID, key, n, if_version=cond, **stamp)
    if step[0] == "delete":
        return Command("delete", UID, step[1], if_version=step[2])
    return Command("expire", 0, "", now=T0 + step[1])


class Oracle:
    def __init__(self) -> None:
        self.horizon = 0
        self.data: dict[str, tuple[Any, int, int | None]] = {}

    def live(self, key: str) -> tuple[Any, int, int | None] | None:
        found = self.data.get(key)
        return (
            None if found is None or (found[2] is not None and found[2] <= self.horizon) else found
        )

    def apply(self, cmd: Command) -> None:
        if cmd.op == "expire":
            self.horizon = max(self.horizon, cmd.now)
            return
        found = self.live(cmd.key)
        version = found[1] if found else 0
        if cmd.if_version is not None and cmd.if_version != version:
            return
        if cmd.op == "put":
            expires_at = None if cmd.ttl_ms is None else cmd.now + cmd.ttl_ms  # not the code's
            self.data[cmd.key] = (cmd.value, version + 1, expires_at)
        else:
            self.data.pop(cmd.key, None)


@PROPS
@given(raft_steps)
def test_the_state_machine_expires_keys_as_the_horizon_oracle_says(steps: list[Any]) -> None:
    engine, oracle = MemoryEngine(), Oracle()
    for index, step in enumerate(steps, 1):
        cmd = _command(step, index)
        batch, _ = sm.apply(engine, 0, index, encode(cmd))
        engine.write(batch)
        oracle.apply(cmd)
        for key in KEYS:
            want = oracle.live(key)
            assert sm.read_record(engine, 0, UID, key) == (sm.Record(*want) if want else None)
        assert raft_expiry.horizon(engine, 0) == oracle.horizon
        stored = [r for r in _stored(engine) if r.expires_at is not None]
        prefix = bookkeeping_key(0, raft_expiry.INDEX)
        assert len(list(engine.iterate_prefix(prefix))) == len(stored)


def _stored(engine: MemoryEngine) -> list[sm.Record]:
    start = sm.group_prefix(0) + UID.to_bytes(4, "big")
    return [load_record(raw, key) for key, raw in engine.iterate_prefix(start)]


# --- eventual -----------------------------------------------------------------------------

REF = KeyRef(0, UID, "k")


@st.composite
def ttl_histories(draw: st.DrawFn) -> list[Version]:
    """Writes to one key by three actors, each superseding a random part of what came
    before (as clients with contexts do), some with an expiry."""
    out: list[Version] = []
    for n in range(draw(st.integers(1, 6))):
        actor = draw(st.sampled_from(["n1", "n2", "n3"]))
        seen = draw(st.lists(st.sampled_from(out), unique_by=lambda v: v.dot)) if out else []
        clock, dots = siblings.join_full(seen)
        counter = 1 + sum(1 for v in out if v.dot[0] == actor)
        expires = draw(st.none() | st.integers(T0, T0 + 100))
        out.append(siblings.make_version((actor, counter), clock, n, False, dots, T0, expires))
    return out


@PROPS
@given(ttl_histories(), st.data())
def test_replicas_expiring_on_their_own_clocks_converge(
    history: list[Version], data: st.DataObject
) -> None:
    replicas = [DynamoReplica(MemoryEngine(), f"n{i}", clock=lambda: 0.0) for i in range(3)]
    for rep in replicas:
        for version in history:  # each gets a random subset, in order (whole sets, merged)
            if data.draw(st.booleans()):
                rep.store(REF, (version,))
        at = T0 + data.draw(st.integers(0, 120))
        rep.expire(at, 10)  # what had expired by `at` is stored as a tombstone now
        assert not any(not v.deleted and dynamo_expiry.expired(v, at) for v in rep.fetch(REF))
        _markers_match(rep)
    for rep in replicas:  # anti-entropy: every replica gets every other's set
        for other in replicas:
            rep.store(REF, other.fetch(REF))
    for rep in replicas:
        rep.expire(T0 + 200, 10)  # everything has expired by now
    sets = [{v.dot: v for v in rep.fetch(REF)} for rep in replicas]
    assert sets[0] == sets[1] == sets[2]
    for rep in replicas:  # every version with an expiry is a tombstone now
        assert all(v.deleted or v.expires_at is None for v in rep.fetch(REF))
        _markers_match(rep)


def _markers_match(rep: DynamoReplica) -> None:
    """A marker for the key iff a stored live version expires, at the earliest expiry."""
    found = [k for k, _ in rep._engine.iterate_prefix(dynamo_expiry.MARKER_PREFIX)]
    first = dynamo_expiry.next_expiry(rep.fetch(REF))
    want = [] if first is None else [dynamo_expiry.marker(REF.storage_key(), first)]
    assert found == want
